"""Does weight-space augmentation help metanetworks learn? The quality half of the augmentation
benchmark (``benchmarks/augment.py`` measures the throughput cost of each transform).

    python benchmarks/augment_quality.py [--quick] [--zoos DIR] [--seeds N] [--models M,..] [--fractions F,..]

Tasks (zoos built on first use into ``--zoos``; ``--quick``: the ``tiny-`` specs, 3 epochs):

- INR classification on ``mnist5k-inr`` (which of the 5,000 real MNIST digits a SIREN encodes;
  one SIREN per image, split 80/10/10 by image): mlp, statnn, dws and gmn, with all training
  INRs and with a seeded 10% of them (validation and test unchanged). dws and gmn read 64 probe
  features per neuron (``--arg probes=64``, after Kofinas et al. 2024); ``dws-weights`` and
  ``gmn-weights`` are the same models on the weights alone, with all data and no augmentation;
- accuracy prediction on ``mnist1d-mlp`` (Kendall tau, split 80/10/10 with seed 0): statnn, dws, gmn
  (dws and gmn with 64 probe features, here 64 MNIST-1D training inputs).

A reference beside the INR rows, not a metanetwork: ``pixels`` renders every INR on the 28x28 grid
and fits a logistic regression on the pixels (C chosen on validation), on the same splits. It shows
how much of the label the zoo's INRs hold, so a weak metanetwork is not mistaken for a weak zoo.

Every model gets the same budget: AdamW lr 1e-3, batch 64, ``EPOCHS`` epochs (2x as many with
10% of the data, so it takes 20% of the steps), best epoch on validation loss, patience 10. Each
is trained once without augmentation and once per entry of ``AUGMENTS``; the augmented figure is
the candidate with the best validation score. With ``--seeds N`` every run is repeated with
training seeds 0..N-1 (initialization, batch order and augmentation draws; the split stays
seed 0's): each figure is then the mean over seeds, with the per-seed values and, for every
augmented figure, the gain over no augmentation seed by seed, its mean and spread (JSON keys
``<key>_seeds``, ``<key>_aug_seeds``, ``<key>_aug_gain_mean``, ``<key>_aug_gain_std``). ``--models`` and ``--fractions``
run only some of the cells (e.g. ``--models gmn --fractions 0.1``). Results are appended as each run
finishes, to ``benchmarks/.augment_quality.jsonl``; a rerun reuses the runs recorded there with
the same model arguments (delete it to start afresh). The last line printed is one JSON object.
"""

from __future__ import annotations

import functools
import json
import time
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
import torch
from sklearn.linear_model import LogisticRegression
from zoos import built, zoo_arguments

from weightzoo import open_zoo
from weightzoo.metanet.data import SplitSpec
from weightzoo.metanet.functional import Functional
from weightzoo.metanet.train import TrainOptions, train_metanet
from weightzoo.zoo.tasks import pixel_grid

EPOCHS = {"mnist5k-inr": 20, "mnist1d-mlp": 20}
SUBSET_EPOCH_FACTOR = 2
AUGMENTS = {  # candidates per zoo, chosen on validation
    "mnist5k-inr": ["perm,sign,siren-shift", "perm,sign,siren-shift,rotate:15,translate:0.1,noise:0.02"],
    "mnist1d-mlp": ["perm,sign,scale", "perm,sign,scale,noise:0.02"],
}
RUNS = [  # (key prefix, zoo, task, models, fractions of the training split)
    ("inr", "mnist5k-inr", "classify:label", ["mlp", "statnn", "dws", "gmn", "dws-weights", "gmn-weights"], (1.0, 0.1)),
    ("tau", "mnist1d-mlp", "predict:test_acc", ["statnn", "dws", "gmn"], (1.0,)),
]
SIZES = {"gmn": {"hidden": 32, "layers": 4}, "dws": {"hidden_channels": 16, "depth": 3}}  # as benchmarks/metanets.py
PROBES = {"mnist5k-inr": 64, "mnist1d-mlp": 64}  # probe inputs per neuron for dws and gmn
REFERENCES = {"dws-weights", "gmn-weights"}  # dws/gmn without probes: all data, no augmentation only


def model_and_args(name: str, label: str) -> tuple[str, dict]:
    """``dws``/``gmn`` read probe features where the zoo allows them; ``*-weights`` never do."""
    model = label.removesuffix("-weights")
    args = dict(SIZES.get(model, {}))
    if model in ("dws", "gmn") and not label.endswith("-weights") and name in PROBES:
        args["probes"] = PROBES[name]
    return model, args


def headline(scores: dict[str, float]) -> float:
    return scores.get("kendall_tau", scores.get("accuracy", float("nan")))


def key(prefix: str, model: str, fraction: float) -> str:
    """The issue's names: ``inr_acc_dws``, ``inr10_acc_dws``, ``tau_gmn``, ``inr_acc_dws_weights``
    (with augmentation: the same plus ``_aug``)."""
    model = model.replace("-", "_")
    if prefix == "inr":
        return f"inr{'' if fraction == 1.0 else '10'}_acc_{model}"
    return f"tau_{model}"


def _run_key(row: dict) -> tuple:
    """What a recorded run is reused for: the same zoo, model and arguments, data, augmentation and
    training seed (rows recorded before seeds were an option are seed 0's)."""
    args = json.dumps(row.get("args"), sort_keys=True)
    return row["zoo"], row["model"], args, row["fraction"], row["augment"], row.get("seed", 0)


def record(path: Path, name: str, task: str, label: str, options: TrainOptions, split: SplitSpec, fraction: float):
    """Train one model once and describe the run."""
    start = time.perf_counter()
    model, args = model_and_args(name, label)
    run = train_metanet(path, task, model, options=options, split=split, model_args=args)
    scores, hist = run.config["scores"], run.config["history"]
    return {
        "zoo": name, "model": label, "args": args, "fraction": fraction, "augment": options.augment or "none",
        "seed": options.seed,
        "val": headline(scores["val"]), "test": headline(scores["test"]),
        "epochs": hist["epochs_run"], "best_epoch": hist["best_epoch"],
        "members_per_s": hist["members_per_s"], "seconds": time.perf_counter() - start,
        "val_loss": hist["val_loss"],
    }  # fmt: skip


@functools.cache
def _renders(path: Path, side: int) -> tuple[np.ndarray, np.ndarray]:
    """Every member's render ``[N, side * side]`` (in chunks of 500) and its label ``[N]``."""
    with open_zoo(path) as zoo:
        f, grid = Functional(zoo.architecture), pixel_grid(side, side)
        with torch.no_grad():
            chunks = [f.outputs(zoo.params(list(range(i, min(i + 500, len(zoo))))), grid)[..., 0]
                      for i in range(0, len(zoo), 500)]  # fmt: skip
        return torch.cat(chunks).numpy(), zoo.table()["label"].to_numpy()


def rendered_pixels(path: Path, split: SplitSpec, side: int = 28) -> dict[str, float | None]:
    """Validation and test accuracy of a logistic regression on the INRs' renders ``[side * side]``
    (None where the training split holds a single class, as a --quick zoo's 10% split can)."""
    pixels, labels = _renders(path, side)
    with open_zoo(path) as zoo:
        parts = split.indices(zoo)
    if len(np.unique(labels[parts["train"]])) < 2:
        return {"val": None, "test": None}
    fits = [LogisticRegression(C=c, max_iter=2000).fit(pixels[parts["train"]], labels[parts["train"]])
            for c in (0.01, 0.1, 1.0)]  # fmt: skip
    best = max(fits, key=lambda m: m.score(pixels[parts["val"]], labels[parts["val"]]))
    return {k: float(best.score(pixels[parts[k]], labels[parts[k]])) for k in ("val", "test")}


def _listed(text: str | None, cast=str) -> list | None:
    return None if text is None else [cast(v) for v in text.split(",")]


@dataclass
class Cell:
    """One model on one zoo and training fraction: its runs, recorded in ``out_file`` as they finish
    (``done``: the runs recorded before, reused) and collected in ``rows``."""

    zoo: str
    task: str
    path: Path
    model: str
    fraction: float
    options: TrainOptions
    split: SplitSpec
    done: dict
    out_file: Path
    rows: list

    def run(self, augment: str | None, seed: int) -> dict:
        args = json.dumps(model_and_args(self.zoo, self.model)[1], sort_keys=True)
        row = self.done.get((self.zoo, self.model, args, self.fraction, augment or "none", seed))
        if row is None:
            opts = replace(self.options, augment=augment, seed=seed)
            row = record(self.path, self.zoo, self.task, self.model, opts, self.split, self.fraction)
            with self.out_file.open("a") as f:
                f.write(json.dumps(row) + "\n")
        self.rows.append(row)
        print(
            f"{self.zoo:<12} {self.model:<11} {self.fraction:>4.0%} s{seed} {row['augment']:<58} "
            f"val {row['val']:.4f} test {row['test']:.4f} ({row['epochs']} epochs, "
            f"best {row['best_epoch']}, {row['seconds']:.0f} s)",
            flush=True,
        )
        return row


def cell_runs(
    run: Callable[[str | None, int], dict], augments: list[str], seeds: int
) -> list[tuple[dict, dict | None]]:
    """Per training seed: ``run`` without augmentation, and the run of ``augments`` with the best
    validation score (the first on a tie; None without candidates)."""
    per_seed = []
    for seed in range(seeds):
        plain = run(None, seed)
        augmented = [run(a, seed) for a in augments]
        per_seed.append((plain, max(augmented, key=lambda r: r["val"], default=None)))
    return per_seed


def summarize(results: dict, name: str, per_seed: list[tuple[dict, dict | None]]) -> None:
    """Enter one cell's runs ``(no augmentation, best augmented)`` per seed into ``results`` under
    key ``name`` (the mean over seeds; with several seeds also each seed's and the gains')."""
    plain = [r["test"] for r, _ in per_seed]
    results[name] = round(float(np.mean(plain)), 4)
    if len(per_seed) > 1:
        results[f"{name}_seeds"] = [round(v, 4) for v in plain]
    if per_seed[0][1] is None:
        return
    aug = [a["test"] for _, a in per_seed]
    results[f"{name}_aug"] = round(float(np.mean(aug)), 4)
    picks = [a["augment"] for _, a in per_seed]
    results[f"{name}_aug_pick"] = picks[0] if len(picks) == 1 else picks
    if len(per_seed) > 1:
        gains = np.subtract(aug, plain)
        results[f"{name}_aug_seeds"] = [round(v, 4) for v in aug]
        results[f"{name}_aug_gain_mean"] = round(float(gains.mean()), 4)
        results[f"{name}_aug_gain_std"] = round(float(gains.std(ddof=1)), 4)
        print(f"{name}: augmentation gain per seed {[round(float(g), 4) for g in gains]}, "
              f"mean {gains.mean():+.4f}, std {gains.std(ddof=1):.4f}")  # fmt: skip


def main() -> None:
    args = zoo_arguments(
        __doc__, "the tiny- zoos, 3 epochs",
        seeds={"type": int, "default": 1, "help": "training seeds per run (figures: their mean)"},
        models={"help": "only these models, comma-separated (default: all)"},
        fractions={"help": "only these training fractions, comma-separated (default: 1.0 and 0.1)"},
    )  # fmt: skip
    if args.seeds < 1:
        raise SystemExit(f"--seeds must be at least 1, got {args.seeds}")
    only_models, only_fractions = _listed(args.models), _listed(args.fractions, float)
    out_file = Path(__file__).with_name(".augment_quality.quick.jsonl" if args.quick else ".augment_quality.jsonl")
    done = {_run_key(r): r for r in map(json.loads, out_file.read_text().splitlines())} if out_file.exists() else {}
    results: dict = {}
    rows = []
    for prefix, name, task, models, fractions in RUNS:
        models = [m for m in models if only_models is None or m in only_models]
        fractions = [f for f in fractions if only_fractions is None or f in only_fractions]
        if not (models and fractions):
            continue
        path = built(f"tiny-{name}" if args.quick else name, args.zoos)[0]
        for fraction in fractions:
            epochs = 3 if args.quick else EPOCHS[name] * (1 if fraction == 1.0 else SUBSET_EPOCH_FACTOR)
            options = TrainOptions(epochs=epochs, batch_size=64, lr=1e-3, patience=10, seed=0)
            split = SplitSpec(seed=0, group_by=("target",) if prefix == "inr" else (), train_subset=fraction)
            if prefix == "inr":
                px = rendered_pixels(path, split)
                results[key(prefix, "pixels", fraction)] = None if px["test"] is None else round(px["test"], 4)
                print(f"{name:<12} {'pixels':<7} {fraction:>4.0%} {'(rendered INRs, logistic regression)':<58} "
                      f"val {px['val']} test {px['test']}", flush=True)  # fmt: skip
            for model in models:
                if model in REFERENCES and fraction != 1.0:
                    continue
                cell = Cell(name, task, path, model, fraction, options, split, done, out_file, rows)
                augments = [] if model in REFERENCES else AUGMENTS[name]
                summarize(results, key(prefix, model, fraction), cell_runs(cell.run, augments, args.seeds))
    print()
    print(f"{'zoo':<12} {'model':<11} {'data':>5} {'seed':>4} {'augment':<58} {'val':>7} {'test':>7} "
          f"{'epochs':>6} {'s':>6}")  # fmt: skip
    for r in rows:
        print(
            f"{r['zoo']:<12} {r['model']:<11} {r['fraction']:>5.0%} {r.get('seed', 0):>4} {r['augment']:<58} "
            f"{r['val']:>7.4f} {r['test']:>7.4f} {r['epochs']:>6} {r['seconds']:>6.0f}"
        )
    results["targets"] = targets(results)
    results.update(quick=args.quick, seeds=args.seeds, torch=torch.__version__, threads=torch.get_num_threads())
    print(json.dumps(results))


def targets(r: dict) -> dict[str, bool]:
    """The issue's targets, where all their figures were measured (``--models`` may leave some out)."""
    checks = {}
    for m in ("dws", "gmn"):
        checks |= {
            f"inr_acc_{m}_at_least_0.60": (f"inr_acc_{m}", None, 0.60),
            f"inr_acc_{m}_30_over_mlp": (f"inr_acc_{m}", "inr_acc_mlp", 0.30),
            f"inr_acc_{m}_15_over_statnn": (f"inr_acc_{m}", "inr_acc_statnn", 0.15),
            f"inr_aug_{m}_plus_3": (f"inr_acc_{m}_aug", f"inr_acc_{m}", 0.03),
            f"inr10_aug_{m}_plus_5": (f"inr10_acc_{m}_aug", f"inr10_acc_{m}", 0.05),
            f"tau_{m}_aug_beats_statnn_by_0.02": (f"tau_{m}_aug", "tau_statnn", 0.02),
        }
    return {
        name: r[figure] >= (0.0 if base is None else r[base]) + margin
        for name, (figure, base, margin) in checks.items()
        if figure in r and (base is None or base in r)
    }


if __name__ == "__main__":
    main()
