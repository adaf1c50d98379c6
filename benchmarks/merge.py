"""Permutation alignment and model merging on zoo members, measured.

    python benchmarks/merge.py [--quick] [--zoos DIR]

1. Barriers vs width: independently trained 3-hidden-layer MLPs of one spec (seeds differ) on
   ``mnist5k`` and MNIST-1D; for pairs of members, the test/train loss and accuracy barriers of the
   naive, weight-matched and activation-matched straight lines (``member_connectivity``), mean and
   spread; plus the width-512 ``mnist5k`` pairs trained without weight decay (an ablation).
2. Merging 2, 3, 5, 8 independently trained members: plain average vs MergeMany-aligned average.
3. Multi-task merging on ``mnist1d-finetune``: per task the fine-tune with the best validation
   accuracy, merged by every method; each method's hyperparameters chosen on the validation half of
   every task's test set, reported on the other half, as accuracy and normalized accuracy (merged /
   the task's own fine-tune), beside the base, the fine-tunes and their plain average; for all 8
   tasks (two label orders conflict) and for the 4 that share one label order.
4. Soups and Ratatouille on ``mnist1d-finetune`` (+ ``mnist1d-ratatouille``): per task the best
   single member, the uniform soup, the greedy soup and the ratatouille.
5. Speed: weight matching of two 3x512 MLPs, aligning every member of ``mnist1d-mlp`` to one
   reference (batched), and the cost of each merge method.

Zoos are built on first use into ``--zoos`` (default ``benchmarks/.zoos``). ``--quick`` uses fewer
pairs, widths and epochs and the ``tiny-`` fine-tuning specs, but always the width-512 ``mnist5k``
pair. Last, one JSON line of the figures.
"""

from __future__ import annotations

import itertools
import json
import time
from pathlib import Path

import numpy as np
import torch
from timing import timed
from zoos import built, zoo_arguments

from weightzoo.metanet.align import Aligner
from weightzoo.metanet.connectivity import member_connectivity, member_pair
from weightzoo.metanet.functional import Functional
from weightzoo.metanet.heldout import holdout
from weightzoo.metanet.merge import METHODS, merge
from weightzoo.metanet.merging import greedy_soup
from weightzoo.zoo.opener import open_zoo

RECIPE = {"optimizer": "adam", "lr": 1e-3, "weight_decay": 1e-3, "init": "kaiming_uniform"}  # torch Adam: L2
INPUTS = {"mnist5k": 784, "mnist1d": 40}
METRICS = ("test_loss", "train_loss", "test_acc", "train_acc")
GRIDS: dict[str, dict[str, list]] = {
    "linear": {},
    "task_arithmetic": {"lambda": [0.3, 0.5, 0.7, 1.0]},
    "ties": {"density": [0.1, 0.2, 0.5], "lambda": [0.5, 1.0, 1.5]},
    "dare_linear": {"density": [0.1, 0.3, 0.5], "lambda": [0.5, 1.0]},
    "dare_ties": {"density": [0.1, 0.3, 0.5], "lambda": [0.5, 1.0]},
    "della": {"density": [0.3, 0.5, 0.7], "epsilon": [0.1, 0.2], "lambda": [0.5, 1.0]},
    "della_linear": {"density": [0.3, 0.5, 0.7], "epsilon": [0.1, 0.2], "lambda": [0.5, 1.0]},
    "breadcrumbs": {"density": [0.8, 0.9], "gamma": [0.01, 0.05], "lambda": [0.5, 1.0]},
    "breadcrumbs_ties": {"density": [0.8, 0.9], "gamma": [0.01, 0.05], "lambda": [0.5, 1.0]},
    "model_stock": {},
}


def mlp_spec(task: str, width: int, members: int, epochs: int, weight_decay: float) -> dict:
    """Independently trained MLPs (3 hidden layers of ``width``), one seed per member."""
    return {
        "name": f"merge-{task}-w{width}",
        "task": task,
        "architecture": {
            "family": "mlp",
            "args": {"in_features": INPUTS[task], "hidden": [width] * 3, "out_features": 10},
        },
        "members": members,
        "epochs": epochs,
        "checkpoint_epochs": [epochs],
        "batch_size": 128,
        "grid": {"seed": list(range(1, members + 1))},
        "hparams": {**RECIPE, "weight_decay": weight_decay},
    }


def mlp_zoo(
    folder: Path, task: str, width: int, members: int, epochs: int, weight_decay: float = RECIPE["weight_decay"]
) -> Path:
    tag = f"{task}-w{width}-n{members}-e{epochs}" + ("" if weight_decay else "-nowd")
    return built(f"merge-{tag}", folder, mlp_spec(task, width, members, epochs, weight_decay))[0]


def mean_sd(values) -> str:
    v = np.asarray(values, dtype=np.float64)
    return f"{v.mean():.4f} ± {v.std():.4f}"


# ----------------------------------------------------------------------------- 1. barriers


def barriers(path: Path, pairs: int) -> dict[str, dict[str, list[float]]]:
    """``{curve: {metric: [barrier per pair]}}`` for member pairs (0, 1), (2, 3), ..."""
    out: dict[str, dict[str, list[float]]] = {}
    with open_zoo(path) as zoo:
        for p in range(pairs):
            report = member_connectivity(zoo, 2 * p, 2 * p + 1)
            for curve, values in report.barriers().items():
                for metric in METRICS:
                    out.setdefault(curve, {}).setdefault(metric, []).append(values[metric])
    return out


def barrier_section(folder: Path, quick: bool, figures: dict) -> None:
    widths = {
        "mnist5k": [32, 512] if quick else [32, 64, 128, 256, 512],
        "mnist1d": [32] if quick else [32, 64, 128, 256, 512],
    }
    pairs, epochs = (2, 40) if quick else (5, 40)
    print(f"\n== 1. barriers vs width: {pairs} pairs per width, Adam lr 1e-3, L2 weight decay 1e-3, {epochs} epochs ==")
    print(f"{'task':<9}{'width':>6}{'curve':>12}" + "".join(f"{m:>22}" for m in METRICS))
    runs = [(task, w, RECIPE["weight_decay"]) for task in widths for w in widths[task]]
    runs.append(("mnist5k", 512, 0.0))  # ablation: no weight decay
    for task, width, wd in runs:
        found = barriers(mlp_zoo(folder, task, width, 2 * pairs, epochs, wd), pairs)
        label = f"{width}" + ("" if wd else "*")
        for curve, values in found.items():
            print(f"{task:<9}{label:>6}{curve:>12}" + "".join(f"{mean_sd(values[m]):>22}" for m in METRICS))
        naive = np.mean(found["naive"]["test_loss"])
        ratios = {curve: float(np.mean(found[curve]["test_loss"]) / naive) for curve in ("weight", "activation")}
        for short, curve in (("wm", "weight"), ("am", "activation")):
            figures[f"barrier_ratio_{short}_w{width}_{task}" + ("" if wd else "_nowd")] = round(ratios[curve], 4)
        shown = ", ".join(f"{c} {r:.3f}" for c, r in ratios.items())
        print(f"{'':<15}test-loss barrier / naive: {shown}")
    print("  (* trained without weight decay: the ablation)")


# ----------------------------------------------------------------------------- 2. merging many


def merge_many_section(folder: Path, quick: bool, figures: dict) -> None:
    task, width = ("mnist1d", 128) if quick else ("mnist5k", 512)
    path = mlp_zoo(folder, task, width, 8 if quick else 10, 40)
    print(f"\n== 2. merging k independently trained {task} MLPs (3 x {width}): test accuracy on the task ==")
    print(f"{'k':>3}{'members (mean)':>16}{'plain average':>15}{'MergeMany':>11}{'seconds':>9}")
    with open_zoo(path) as zoo:
        wa, _, net = member_pair(zoo, 0, 1)
        flat = zoo.params(list(range(8)))
        aligner = Aligner(net.layout, net.spec, "weight", net)
        for k in (2, 3, 5, 8):
            start = time.perf_counter()
            aligned, _ = aligner.merge_many(flat[:k])
            seconds = time.perf_counter() - start
            plain = zoo.evaluate(flat[:k].mean(0), 0)["test_acc"][0]
            matched = zoo.evaluate(aligned.mean(0), 0)["test_acc"][0]
            own = zoo.metric("test_acc", list(range(k))).mean()
            print(f"{k:>3}{own:>16.4f}{plain:>15.4f}{matched:>11.4f}{seconds:>9.2f}")
            figures[f"merge_many_acc_k{k}"] = round(float(matched), 4)
            figures[f"plain_average_acc_k{k}"] = round(float(plain), 4)


# ----------------------------------------------------------------------------- 3. multi-task merging


class Tasks:
    """The tasks of a fine-tuned zoo: members per task, held-out halves, scoring of weights."""

    def __init__(self, zoo) -> None:
        self.zoo = zoo
        table = zoo.table()
        keys = table["task.classes"].astype(str) + "|" + table["task.label_perm"].astype(str)
        self.names = list(dict.fromkeys(keys))
        self.members = {t: [int(i) for i in table.index[keys == t]] for t in self.names}
        self.net = Functional(zoo.member_architecture(0))
        self.splits = {t: holdout(zoo, self.members[t][0]) for t in self.names}

    def score(self, flat: torch.Tensor, task: str, split: str) -> np.ndarray:
        x, y, kind = getattr(self.splits[task], split)
        return self.net.scores(flat, x, y, kind)["acc"].numpy()

    def best_member(self, task: str) -> int:
        """The fine-tune of ``task`` with the best validation accuracy."""
        ms = self.members[task]
        return ms[int(np.argmax(self.score(self.zoo.params(ms), task, "validation")))]


def settings(grid: dict[str, list]) -> list[dict]:
    return [dict(zip(grid, values)) for values in itertools.product(*grid.values())]


def multitask(tasks: Tasks, names: list[str], label: str, figures: dict, key_suffix: str) -> None:
    zoo = tasks.zoo
    chosen = [tasks.best_member(t) for t in names]
    models, base = zoo.params(chosen), zoo.base_params(chosen)[0]
    own = np.array([tasks.score(models[i][None], t, "test")[0] for i, t in enumerate(names)])

    def test_scores(flat: torch.Tensor) -> np.ndarray:
        return np.array([tasks.score(flat[None], t, "test")[0] for t in names])

    def val_mean(flat: torch.Tensor) -> float:
        return float(np.mean([tasks.score(flat[None], t, "validation")[0] for t in names]))

    rows = [("base", {}, test_scores(base)), ("fine-tunes (own task)", {}, own)]
    for method, grid in GRIDS.items():
        best = max(settings(grid), key=lambda s: val_mean(merge(method, models, base=base, layout=zoo.layout, **s)))
        rows.append((method, best, test_scores(merge(method, models, base=base, layout=zoo.layout, **best))))
    print(f"\n== 3. multi-task merging, {label}: test accuracy per task (hyperparameters chosen on validation) ==")
    print(f"{'':<24}" + "".join(f"{t:>15}" for t in names) + f"{'mean':>8}{'norm':>7}  setting")
    for name, setting, accs in rows:
        norm = float(np.mean(accs / own))
        print(
            f"{name:<24}" + "".join(f"{a:>15.4f}" for a in accs) + f"{accs.mean():>8.4f}{norm:>7.3f}  {setting or ''}"
        )
        if name in METHODS:
            figures[f"merge_norm_acc_{name}{key_suffix}"] = round(norm, 4)
    figures[f"merge_norm_acc_base{key_suffix}"] = round(float(np.mean(rows[0][2] / own)), 4)


def multitask_section(folder: Path, quick: bool, figures: dict) -> Path:
    name = "tiny-mnist1d-finetune" if quick else "mnist1d-finetune"
    path, _ = built(name, folder)
    with open_zoo(path) as zoo:
        tasks = Tasks(zoo)
        multitask(tasks, tasks.names, f"{name}, all {len(tasks.names)} tasks", figures, "")
        plain = [t for t in tasks.names if t.endswith("|0")]
        multitask(tasks, plain, f"{name}, the {len(plain)} tasks of label order 0", figures, "_one_order")
    return path


# ----------------------------------------------------------------------------- 4. soups and ratatouille


def ratatouille_spec(quick: bool, base: Path) -> dict:
    import yaml

    from weightzoo.zoo.spec import CONFIG_DIR

    name = "tiny-mnist1d-ratatouille" if quick else "mnist1d-ratatouille"
    spec = yaml.safe_load((CONFIG_DIR / f"{name}.yaml").read_text())
    spec["base"]["zoo"] = str(base)
    return spec


def soup_section(folder: Path, finetune: Path, quick: bool, figures: dict) -> None:
    name = "tiny-mnist1d-ratatouille" if quick else "mnist1d-ratatouille"
    rat_path, _ = built(name, folder, ratatouille_spec(quick, finetune))
    print(f"\n== 4. soups and ratatouille per task ({finetune.name}, {rat_path.name}): test accuracy ==")
    print(f"{'task':<16}{'best single':>12}{'uniform soup':>14}{'greedy soup':>13}{'kept':>6}{'ratatouille':>13}")
    with open_zoo(finetune) as zoo, open_zoo(rat_path) as rat:
        tasks = Tasks(zoo)
        rtable = rat.table()
        rkeys = rtable["task.classes"].astype(str) + "|" + rtable["task.label_perm"].astype(str)
        base_task = {i: t for t in tasks.names for i in tasks.members[t]}
        sums = np.zeros(4)
        for t in tasks.names:
            flat = zoo.params(tasks.members[t])
            single = tasks.score(zoo.params([tasks.best_member(t)]), t, "test")[0]
            uniform = tasks.score(flat.mean(0)[None], t, "test")[0]
            soup, kept = greedy_soup(flat, lambda w, t=t: tasks.score(w, t, "validation"))
            greedy = tasks.score(soup[None], t, "test")[0]
            mine = [int(i) for i in rtable.index[rkeys == t] if base_task[int(rtable.loc[i, "base.member"])] != t]
            ratatouille = tasks.score(rat.params(mine).mean(0)[None], t, "test")[0]
            sums += [single, uniform, greedy, ratatouille]
            print(f"{t:<16}{single:>12.4f}{uniform:>14.4f}{greedy:>13.4f}{len(kept):>6}{ratatouille:>13.4f}")
        means = sums / len(tasks.names)
        print(f"{'mean':<16}{means[0]:>12.4f}{means[1]:>14.4f}{means[2]:>13.4f}{'':>6}{means[3]:>13.4f}")
        for key, value in zip(("best_single", "uniform_soup", "greedy_soup", "ratatouille"), means):
            figures[f"soup_acc_{key}"] = round(float(value), 4)


# ----------------------------------------------------------------------------- 5. speed


def speed_section(folder: Path, quick: bool, figures: dict) -> None:
    print("\n== 5. speed ==")
    with open_zoo(mlp_zoo(folder, "mnist5k", 512, 4 if quick else 10, 40)) as zoo:
        wa, wb, net = member_pair(zoo, 0, 1)
        aligner = Aligner(net.layout, net.spec, "weight", net)
        seconds = timed(lambda: aligner.align(wa, wb), 3)
        print(f"weight matching, two 3x512 MLPs ({net.layout.size:,} parameters): {seconds:.3f} s")
        figures["wm_seconds_w512"] = round(seconds, 4)
        models = zoo.params(list(range(min(len(zoo), 8))))
        print(
            f"merge cost, {len(models)} models of {net.layout.size:,} parameters (default parameters, base = model 0):"
        )
        for method in METHODS:
            group = models[:2] if method == "slerp" else models[1:]
            ms = timed(lambda m=method, g=group: merge(m, g, base=models[0], layout=net.layout), 3) * 1e3
            print(f"  {method:<18}{ms:>9.1f} ms")
            figures[f"merge_ms_{method}"] = round(ms, 2)
    name = "tiny-mnist1d-mlp" if quick else "mnist1d-mlp"
    with open_zoo(built(name, folder)[0]) as zoo:
        ref, _, net = member_pair(zoo, 0, 1)
        aligner = Aligner(net.layout, net.spec, "weight", net)
        start, batch = time.perf_counter(), 256
        for lo in range(0, len(zoo), batch):
            aligner.align(ref, zoo.params(list(range(lo, min(lo + batch, len(zoo))))))
        rate = len(zoo) / (time.perf_counter() - start)
        what = f"aligning all {len(zoo):,} members of {name} to member 0 (weight matching, batches of {batch})"
        print(f"{what}: {rate:,.0f} members/s")
        figures["align_members_per_s"] = round(rate, 1)


def main() -> None:
    args = zoo_arguments(__doc__, "fewer pairs, widths and epochs; tiny fine-tuning zoos")
    figures: dict = {"quick": args.quick}
    start = time.perf_counter()
    barrier_section(args.zoos, args.quick, figures)
    merge_many_section(args.zoos, args.quick, figures)
    finetune = multitask_section(args.zoos, args.quick, figures)
    soup_section(args.zoos, finetune, args.quick, figures)
    speed_section(args.zoos, args.quick, figures)
    figures["seconds"] = round(time.perf_counter() - start, 1)
    print(json.dumps(figures))


if __name__ == "__main__":
    main()
