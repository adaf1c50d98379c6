"""What the multi-task, fine-tuned and real-MNIST zoos hold, from their full builds.

    python benchmarks/zoos.py [--quick] [--zoos DIR]

Builds (on first use, into ``--zoos``, default ``benchmarks/.zoos``; the build time is kept beside
each zoo) and reports: ``mnist5k-inr`` PSNR quantiles and build time, ``mnist5k-smallcnn`` test
accuracy spread, ``mnist1d-finetune`` the base's and the fine-tunes' test accuracy on each of its
tasks (the base evaluated on each task with ``zoo.evaluate``), and ``mnist1d-tasks`` the number of
distinct tasks and the spread of test accuracy per task. ``--quick`` uses the ``tiny-`` specs.
Last, one JSON line of the figures.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np

from weightzoo.zoo.build import build_zoo
from weightzoo.zoo.opener import open_zoo

SPECS = ("mnist5k-inr", "mnist5k-smallcnn", "mnist1d-finetune", "mnist1d-tasks")
QUANTILES = (0.0, 0.25, 0.5, 0.75, 1.0)


def zoo_arguments(doc: str, quick: str, **extra: dict) -> argparse.Namespace:
    """The command line every zoo benchmark takes: ``--quick`` (what it shortens) and ``--zoos DIR``,
    plus ``extra`` options (``name=add_argument keywords``)."""
    parser = argparse.ArgumentParser(description=doc.strip().splitlines()[0])
    parser.add_argument("--quick", action="store_true", help=quick)
    parser.add_argument("--zoos", type=Path, default=Path(__file__).with_name(".zoos"), help="where zoos are kept")
    for name, kwargs in extra.items():
        parser.add_argument(f"--{name.replace('_', '-')}", **kwargs)
    return parser.parse_args()


def built(name: str, folder: Path, spec: dict | None = None) -> tuple[Path, float | None]:
    """The zoo of spec ``spec`` (default: the shipped spec ``name``) as ``folder/name.zarr``, built now
    if missing, and its recorded build seconds."""
    path, record = folder / f"{name}.zarr", folder / f"{name}.build.json"
    if not (path.exists() and record.exists()):
        start = time.perf_counter()
        folder.mkdir(parents=True, exist_ok=True)
        report = build_zoo(spec or name, path, progress=True)
        record.write_text(json.dumps({"seconds": time.perf_counter() - start, "members": report.members}))
    return path, json.loads(record.read_text())["seconds"]


def quantiles(values: np.ndarray) -> list[float]:
    return [round(float(v), 4) for v in np.quantile(values, QUANTILES)]


def inr_report(path: Path, seconds: float) -> dict:
    with open_zoo(path) as zoo:
        psnr = zoo.metric("test_psnr")
        print(f"{zoo.name}: {len(zoo):,} SIRENs built in {seconds:.0f} s ({len(zoo) / seconds * 60:.0f} members/min)")
        print(f"  PSNR (dB) min / q25 / median / q75 / max: {' / '.join(f'{q:.1f}' for q in quantiles(psnr))}")
        return {"inr_members": len(zoo), "inr_build_s": round(seconds, 1), "inr_psnr_quantiles": quantiles(psnr)}


def cnn_report(path: Path, seconds: float) -> dict:
    with open_zoo(path) as zoo:
        acc = zoo.metric("test_acc")
        print(f"{zoo.name}: {len(zoo):,} CNNs built in {seconds:.0f} s")
        print(f"  test accuracy min / q25 / median / q75 / max: {' / '.join(f'{q:.3f}' for q in quantiles(acc))}")
        return {"cnn_build_s": round(seconds, 1), "cnn_acc_quantiles": quantiles(acc)}


def task_column(zoo) -> np.ndarray:
    """Each member's task as one label: its variant columns joined."""
    names = [k for k in zoo.hparam_names if k.startswith("task.")]
    columns = [zoo.column(k).astype(str) for k in names]
    return np.array(["  ".join(f"{n[5:]}={v}" for n, v in zip(names, vals)) for vals in zip(*columns)])


def finetune_report(path: Path, seconds: float) -> dict:
    with open_zoo(path) as zoo:
        tasks, acc = task_column(zoo), zoo.metric("test_acc")
        first = {t: int(np.flatnonzero(tasks == t)[0]) for t in dict.fromkeys(tasks)}
        base = zoo.evaluate(zoo.base_params(), list(first.values()))["test_acc"]  # the base on each task
        pre = zoo.attrs["base"]["pretrain"]["metrics"]["test_acc"]
        print(f"{zoo.name}: base pretrained on all of MNIST-1D (test accuracy {pre:.3f}); {len(zoo)} fine-tunes "
              f"in {seconds:.0f} s")  # fmt: skip
        print(f"  {'task':<40}{'base':>8}{'fine-tuned median':>19}{'max':>8}{'members':>9}")
        rows = {}
        for task, b in zip(first, base):
            mine = acc[tasks == task]
            print(f"  {task:<40}{b:>8.3f}{np.median(mine):>19.3f}{mine.max():>8.3f}{len(mine):>9}")
            rows[task] = {"base": round(float(b), 4), "median": round(float(np.median(mine)), 4)}
        return {"finetune_base_acc": round(pre, 4), "finetune_tasks": rows}


def tasks_report(path: Path, seconds: float) -> dict:
    with open_zoo(path) as zoo:
        tasks, acc = task_column(zoo), zoo.metric("test_acc")
        distinct = sorted(set(tasks))
        medians = np.array([np.median(acc[tasks == t]) for t in distinct])
        spread = np.array([np.ptp(acc[tasks == t]) for t in distinct])
        counts = np.array([np.sum(tasks == t) for t in distinct])
        each = f"{counts.min()}-{counts.max()} members each, median {np.median(counts):.0f}"
        print(f"{zoo.name}: {len(zoo):,} members on {len(distinct)} distinct tasks ({each}), built in {seconds:.0f} s")
        print(f"  per-task median test accuracy  min / q25 / median / q75 / max: "
              f"{' / '.join(f'{q:.3f}' for q in quantiles(medians))}")  # fmt: skip
        print(f"  per-task accuracy range (max - min) min / median / max: "
              f"{spread.min():.3f} / {np.median(spread):.3f} / {spread.max():.3f}")  # fmt: skip
        return {"tasks_distinct": len(distinct), "tasks_median_acc_quantiles": quantiles(medians),
                "tasks_range_median": round(float(np.median(spread)), 4)}  # fmt: skip


def main() -> None:
    args = zoo_arguments(__doc__, "the tiny- specs (seconds)")
    args.zoos.mkdir(parents=True, exist_ok=True)
    reports = (inr_report, cnn_report, finetune_report, tasks_report)
    result: dict = {}
    for name, report in zip(SPECS, reports):
        path, seconds = built(f"tiny-{name}" if args.quick else name, args.zoos)
        result |= report(path, seconds)
        print()
    print(json.dumps(result))


if __name__ == "__main__":
    main()
