"""Store benchmark: weightzoo's Zarr and HDF5 stores against one torch.save file per member.

The per-file baseline is how Model Zoos (Schürholt et al. 2022) ships its zoos: each member a
torch-saved state_dict, read with torch.load and flattened. Everything is measured in one run
on the same members; the page cache is warm for all three (each is read once before timing).

    python benchmarks/store.py [--quick] [--members N] [--out DIR]

Prints a table, then one JSON line with the speedups and disk ratios.
"""

from __future__ import annotations

import argparse
import json
import shutil
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from timing import timed  # benchmarks/timing.py (the script's folder is on sys.path)
from torch.utils.data import DataLoader, Dataset

from weightzoo import open_zoo
from weightzoo.datasets import WeightDataset
from weightzoo.layout import ParamLayout
from weightzoo.zoo import archs
from weightzoo.zoo.store import ZooStore

BATCH = 256
BLOCK = 1000  # members appended per write call, as a zoo builder would


class FileDataset(Dataset):
    """Baseline loader: one torch.load per member, flattened to the layout's vector."""

    def __init__(self, files: list[Path], layout: ParamLayout) -> None:
        self.files, self.layout = files, layout

    def __len__(self) -> int:
        return len(self.files)

    def __getitem__(self, i: int) -> torch.Tensor:
        return self.layout.flatten(torch.load(self.files[i], map_location="cpu", weights_only=True))


def write_store(path: Path, params: np.ndarray, hparams: dict, arch: dict, layout: ParamLayout) -> float:
    t = time.perf_counter()
    zoo = ZooStore.create(path, layout, architecture=arch)
    for s in range(0, len(params), BLOCK):
        zoo.append(params[s : s + BLOCK], hparams={k: v[s : s + BLOCK] for k, v in hparams.items()})
    zoo.close()
    return time.perf_counter() - t


def write_files(root: Path, params: np.ndarray, layout: ParamLayout) -> tuple[float, list[Path]]:
    root.mkdir(parents=True)
    files = [root / f"model_{i:06d}" / "checkpoints" for i in range(len(params))]
    t = time.perf_counter()
    for f, p in zip(files, params):
        f.parent.mkdir()
        torch.save({k: v.clone() for k, v in layout.unflatten(torch.from_numpy(p[0])).items()}, f)
    return time.perf_counter() - t, files


def store_epoch(path: Path, **kwargs) -> int:
    """Open the zoo and run one shuffled epoch, as a training script would."""
    n = 0
    for ws in WeightDataset(path, **kwargs).loader(BATCH, shuffle=True):
        n += len(ws)
    return n


def files_epoch(files: list[Path], layout: ParamLayout) -> int:
    n = 0
    for batch in DataLoader(FileDataset(files, layout), batch_size=BATCH, shuffle=True):
        n += len(batch)
    return n


def disk_bytes(path: Path) -> int:
    return path.stat().st_size if path.is_file() else sum(f.stat().st_size for f in path.rglob("*") if f.is_file())


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="fewer members and repeats (under a minute)")
    ap.add_argument("--members", type=int, default=None, help="members in the zoo (default 10,000; 4,000 with --quick)")
    ap.add_argument("--random", type=int, default=1000, help="members read in the random-access test")
    ap.add_argument("--out", type=Path, default=None, help="work directory (default: a temporary one)")
    args = ap.parse_args()
    members = args.members or (4000 if args.quick else 10_000)
    repeats = 1 if args.quick else 3

    arch = archs.mlp(40, [50, 16], 10)  # an MNIST-1D MLP: 3,036 parameters
    _, layout, _ = archs.describe(arch)
    rng = np.random.default_rng(0)
    params = rng.standard_normal((members, 1, layout.size), dtype=np.float32)
    hparams = {"lr": rng.uniform(1e-4, 1e-1, members), "seed": np.arange(members)}
    raw = params.nbytes

    work = args.out or Path(tempfile.mkdtemp(prefix="weightzoo-bench-"))
    if work.exists():
        shutil.rmtree(work)
    work.mkdir(parents=True)
    paths = {"zarr": work / "zoo.zarr", "hdf5": work / "zoo.h5"}
    try:
        write_s = {name: write_store(p, params, hparams, arch, layout) for name, p in paths.items()}
        write_s["files"], files = write_files(work / "files", params, layout)

        epoch_s = {name: timed(lambda p=p: store_epoch(p), repeats, warmup=True) for name, p in paths.items()}
        epoch_s["zarr (streaming)"] = timed(lambda: store_epoch(paths["zarr"], in_memory=False), repeats, warmup=True)
        epoch_s["files"] = timed(lambda: files_epoch(files, layout), repeats, warmup=True)

        pick = np.random.default_rng(1).choice(members, size=min(args.random, members), replace=False)
        random_s = {
            name: timed(lambda p=p: open_zoo(p).params(pick), repeats, warmup=True) for name, p in paths.items()
        }
        random_s["files"] = timed(
            lambda: [layout.flatten(torch.load(files[i], weights_only=True)) for i in pick], repeats, warmup=True
        )

        disk = {name: disk_bytes(p) for name, p in paths.items()}
        disk["files"] = disk_bytes(work / "files")
    finally:
        if args.out is None:
            shutil.rmtree(work, ignore_errors=True)

    mb = raw / 2**20
    print(
        f"{members:,} members x {layout.size:,} float32 parameters ({mb:.1f} MiB raw), batch {BATCH}, "
        f"median of {repeats}, torch {torch.__version__}, {torch.get_num_threads()} threads"
    )
    print(
        f"{'layout':<18}{'write s':>9}{'MiB/s':>9}{'epoch s':>9}{'vs files':>10}"
        f"{'rand s':>9}{'vs files':>10}{'disk/raw':>10}"
    )
    for name in ["zarr", "hdf5", "zarr (streaming)", "files"]:
        base = name.split(" ")[0]
        w = write_s[base]
        r = random_s.get(name)
        print(
            f"{name:<18}{w:>9.2f}{mb / w:>9.0f}{epoch_s[name]:>9.3f}{epoch_s['files'] / epoch_s[name]:>9.1f}x"
            + (f"{r:>9.3f}{random_s['files'] / r:>9.1f}x" if r is not None else f"{'':>19}")
            + f"{disk[base] / raw:>10.3f}"
        )
    result = {
        "members": members,
        "params_per_member": layout.size,
        "epoch_speedup_zarr_vs_files": round(epoch_s["files"] / epoch_s["zarr"], 2),
        "epoch_speedup_hdf5_vs_files": round(epoch_s["files"] / epoch_s["hdf5"], 2),
        "epoch_speedup_zarr_streaming_vs_files": round(epoch_s["files"] / epoch_s["zarr (streaming)"], 2),
        "random_speedup_zarr_vs_files": round(random_s["files"] / random_s["zarr"], 2),
        "random_speedup_hdf5_vs_files": round(random_s["files"] / random_s["hdf5"], 2),
        "write_members_per_s_zarr": round(members / write_s["zarr"]),
        "write_members_per_s_hdf5": round(members / write_s["hdf5"]),
        "write_members_per_s_files": round(members / write_s["files"]),
        "disk_ratio_zarr": round(disk["zarr"] / raw, 4),
        "disk_ratio_hdf5": round(disk["hdf5"] / raw, 4),
        "disk_ratio_files": round(disk["files"] / raw, 4),
    }
    print(json.dumps(result))


if __name__ == "__main__":
    main()
