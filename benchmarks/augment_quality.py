"""Does weight-space augmentation help metanetworks learn? The quality half of the augmentation
benchmark (``benchmarks/augment.py`` measures the throughput cost of each transform).

    python benchmarks/augment_quality.py [--quick] [--zoos DIR]

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
the candidate with the best validation score. Results are appended as each run
finishes, to ``benchmarks/.augment_quality.jsonl``; a rerun reuses the runs recorded there with
the same model arguments (delete it to start afresh). The last line printed is one JSON object.
"""

from __future__ import annotations

import functools
import json
import time
from dataclasses import replace
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


def key(prefix: str, model: str, fraction: float, aug: bool) -> str:
    """The issue's names: ``inr_acc_dws``, ``inr10_acc_dws_aug``, ``tau_gmn_aug``, ``inr_acc_dws_weights``."""
    model = model.replace("-", "_")
    if prefix == "inr":
        return f"inr{'' if fraction == 1.0 else '10'}_acc_{model}{'_aug' if aug else ''}"
    return f"tau_{model}{'_aug' if aug else ''}"


def _run_key(row: dict) -> tuple:
    """What a recorded run is reused for: the same zoo, model and arguments, data and augmentation."""
    return row["zoo"], row["model"], json.dumps(row.get("args"), sort_keys=True), row["fraction"], row["augment"]


def record(path: Path, name: str, task: str, label: str, options: TrainOptions, split: SplitSpec, fraction: float):
    """Train one model once and describe the run."""
    start = time.perf_counter()
    model, args = model_and_args(name, label)
    run = train_metanet(path, task, model, options=options, split=split, model_args=args)
    scores, hist = run.config["scores"], run.config["history"]
    return {
        "zoo": name, "model": label, "args": args, "fraction": fraction, "augment": options.augment or "none",
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


def main() -> None:
    args = zoo_arguments(__doc__, "the tiny- zoos, 3 epochs")
    out_file = Path(__file__).with_name(".augment_quality.quick.jsonl" if args.quick else ".augment_quality.jsonl")
    done = {_run_key(r): r for r in map(json.loads, out_file.read_text().splitlines())} if out_file.exists() else {}
    results: dict = {}
    rows = []
    for prefix, name, task, models, fractions in RUNS:
        path = built(f"tiny-{name}" if args.quick else name, args.zoos)[0]
        for fraction in fractions:
            epochs = 3 if args.quick else EPOCHS[name] * (1 if fraction == 1.0 else SUBSET_EPOCH_FACTOR)
            options = TrainOptions(epochs=epochs, batch_size=64, lr=1e-3, patience=10, seed=0)
            split = SplitSpec(seed=0, group_by=("target",) if prefix == "inr" else (), train_subset=fraction)
            if prefix == "inr":
                px = rendered_pixels(path, split)
                results[key(prefix, "pixels", fraction, False)] = None if px["test"] is None else round(px["test"], 4)
                print(f"{name:<12} {'pixels':<7} {fraction:>4.0%} {'(rendered INRs, logistic regression)':<58} "
                      f"val {px['val']} test {px['test']}", flush=True)  # fmt: skip
            for model in models:
                if model in REFERENCES and fraction != 1.0:
                    continue
                best = None
                for augment in [None, *([] if model in REFERENCES else AUGMENTS[name])]:
                    model_args = json.dumps(model_and_args(name, model)[1], sort_keys=True)
                    row = done.get((name, model, model_args, fraction, augment or "none"))
                    if row is None:
                        row = record(path, name, task, model, replace(options, augment=augment), split, fraction)
                        with out_file.open("a") as f:
                            f.write(json.dumps(row) + "\n")
                    rows.append(row)
                    print(
                        f"{name:<12} {model:<11} {fraction:>4.0%} {row['augment']:<58} val {row['val']:.4f} "
                        f"test {row['test']:.4f} ({row['epochs']} epochs, best {row['best_epoch']}, "
                        f"{row['seconds']:.0f} s)",
                        flush=True,
                    )
                    if augment is None:
                        results[key(prefix, model, fraction, False)] = round(row["test"], 4)
                    elif best is None or row["val"] > best["val"]:
                        best = row
                if best is not None:
                    results[key(prefix, model, fraction, True)] = round(best["test"], 4)
                    results[key(prefix, model, fraction, True) + "_pick"] = best["augment"]
    print()
    print(f"{'zoo':<12} {'model':<11} {'data':>5} {'augment':<58} {'val':>7} {'test':>7} {'epochs':>6} {'s':>6}")
    for r in rows:
        print(
            f"{r['zoo']:<12} {r['model']:<11} {r['fraction']:>5.0%} {r['augment']:<58} {r['val']:>7.4f} "
            f"{r['test']:>7.4f} {r['epochs']:>6} {r['seconds']:>6.0f}"
        )
    results["targets"] = targets(results)
    results.update(quick=args.quick, torch=torch.__version__, threads=torch.get_num_threads())
    print(json.dumps(results))


def targets(r: dict) -> dict[str, bool]:
    """The issue's targets, where their figures were measured."""
    t = {}
    for m in ("dws", "gmn"):
        if f"inr_acc_{m}" in r:
            t[f"inr_acc_{m}_at_least_0.60"] = r[f"inr_acc_{m}"] >= 0.60
            t[f"inr_acc_{m}_30_over_mlp"] = r[f"inr_acc_{m}"] >= r["inr_acc_mlp"] + 0.30
            t[f"inr_acc_{m}_15_over_statnn"] = r[f"inr_acc_{m}"] >= r["inr_acc_statnn"] + 0.15
            t[f"inr_aug_{m}_plus_3"] = r[f"inr_acc_{m}_aug"] >= r[f"inr_acc_{m}"] + 0.03
        if f"inr10_acc_{m}" in r:
            t[f"inr10_aug_{m}_plus_5"] = r[f"inr10_acc_{m}_aug"] >= r[f"inr10_acc_{m}"] + 0.05
        if f"tau_{m}_aug" in r:
            t[f"tau_{m}_aug_beats_statnn_by_0.02"] = r[f"tau_{m}_aug"] >= r["tau_statnn"] + 0.02
    return t


if __name__ == "__main__":
    main()
