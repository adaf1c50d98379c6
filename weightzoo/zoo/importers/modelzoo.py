"""Model Zoos (Schürholt et al. 2022): one Ray Tune trial folder per model, with ``params.json``,
``result.json`` (one JSON line per epoch) and ``checkpoint_<epoch>/checkpoints`` state_dicts.

A trial whose ``model::type`` is a def_net.py CNN is stored as ``archs.modelzoo_cnn``, so each
member's activation rebuilds through ``archs.with_overrides``; other networks are inferred from
their shapes, or kept under their source names.
"""

from __future__ import annotations

import collections
import functools
import json
import re
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from ...errors import ImportFormatError
from .. import archs
from .plan import Candidate, ImportPlan, Skip, ordered_union, read_json
from .state_dicts import activation_name, canonical, find_reference, infer_architecture, load_checkpoints

_CHECKPOINT_DIR = re.compile(r"^checkpoint_(\d+)$")
# Ray Tune bookkeeping in result.json that is not a metric of the model.
_TUNE_KEYS = {
    "training_iteration",
    "epoch",
    "timesteps_total",
    "episodes_total",
    "time_this_iter_s",
    "time_total_s",
    "timestamp",
    "pid",
    "time_since_restore",
    "timesteps_since_restore",
    "iterations_since_restore",
    "done",
    "episodes_this_iter",
    "timesteps_this_iter",
    "warmup_time",
}
_NLIN_KEYS = ("model.nlin", "nlin", "model.activation", "activation")


@dataclass
class _Trial:
    """One Model Zoos trial folder: its checkpoint files by epoch, hyperparameters and results."""

    path: Path
    checkpoints: dict[int, Path]
    hparams: dict[str, Any]
    results: dict[int, dict[str, float]]


def plan(src: Path) -> ImportPlan:
    """Model Zoos: one folder per trained model; every model needs every epoch's checkpoint."""
    trials, skipped = _read_trials(src)
    # epochs most trials have: crashed trials lack some and are skipped; a stray extra epoch
    # in a few trials is ignored rather than disqualifying all the others
    counts = collections.Counter(e for t in trials for e in t.checkpoints)
    epochs = sorted(e for e, c in counts.items() if 2 * c >= len(trials))
    complete = []
    for t in trials:
        missing = [e for e in epochs if e not in t.checkpoints]
        if missing:
            skipped.append(f"{t.path.name}: missing checkpoints at epochs {missing}")
        else:
            complete.append(t)
    if not complete:
        raise ImportFormatError(f"{src}: no model folder has checkpoints at every epoch {epochs}")
    ref, _ = find_reference([t.checkpoints[epochs[0]] for t in complete])
    ref_trial = next(t for t in complete if str(t.checkpoints[epochs[0]]) == ref.path)
    activation = activation_name(_nlin(ref_trial.hparams)) or "relu"
    layout, arch, names = canonical(
        ref, _cnn_template(ref_trial.hparams, activation), infer_architecture(ref.shapes, activation)
    )
    candidates = []
    for t in complete:
        hparams = {**t.hparams, "dir": t.path.name}
        if arch is not None:
            act = activation_name(_nlin(t.hparams) or "relu")
            if act is None:
                skipped.append(f"{t.path.name}: activation {_nlin(t.hparams)!r} has no weightzoo equivalent")
                continue
            hparams["activation"] = act
        metrics = {
            k: np.array([t.results.get(e, {}).get(k, np.nan) for e in epochs], dtype=np.float32)
            for k in ordered_union(t.results.values())
        }
        load = functools.partial(load_checkpoints, [t.checkpoints[e] for e in epochs], ref)
        candidates.append(Candidate(t.path.name, hparams, metrics, load))
    source = {"param_names": names, "architecture_inferred": arch is not None}
    overrides = ("activation",) if arch is not None else ()
    return ImportPlan(layout, arch, epochs, candidates, source, skipped, arch_overrides=overrides)


def _read_trials(src: Path) -> tuple[list[_Trial], list[str]]:
    """Every subfolder with ``params.json`` or checkpoints, in sorted order; broken ones skipped."""
    trials, skipped = [], []
    for path in sorted(p for p in src.iterdir() if p.is_dir()):
        checkpoints = _trial_checkpoints(path)
        if not checkpoints and not (path / "params.json").is_file():
            continue  # not a trial folder
        try:
            hparams = _flatten_hparams(read_json(path / "params.json"))
        except Skip as exc:
            skipped.append(f"{path.name}: params.json {exc}")
            continue
        if not checkpoints:
            skipped.append(f"{path.name}: no checkpoint_<epoch>/checkpoints files")
            continue
        trials.append(_Trial(path, checkpoints, hparams, _read_results(path / "result.json")))
    if not trials and not skipped:
        raise ImportFormatError(
            f"{src}: no model folders (with params.json and checkpoint_<epoch>/checkpoints); "
            "point to the folder holding the NN_tune_trainable_* directories"
        )
    if not trials:
        raise ImportFormatError(f"{src}: no usable model folder; first problem: {skipped[0]}")
    return trials, skipped


def _trial_checkpoints(path: Path) -> dict[int, Path]:
    """``{epoch: checkpoint file}`` from ``checkpoint_<n>`` or zero-padded ``checkpoint_00000n``."""
    found = {}
    for sub in path.iterdir():
        match = _CHECKPOINT_DIR.match(sub.name)
        if match and (sub / "checkpoints").is_file():
            found[int(match.group(1))] = sub / "checkpoints"
    return dict(sorted(found.items()))


def _read_results(path: Path) -> dict[int, dict[str, float]]:
    """``result.json`` (one JSON object per line) as ``{epoch: {metric: value}}``; missing -> {}."""
    if not path.is_file():
        return {}
    results: dict[int, dict[str, float]] = {}
    for i, line in enumerate(path.read_text().splitlines()):
        try:
            row = json.loads(line)
        except ValueError:
            continue  # a half-written last line of a crashed trial
        if not isinstance(row, dict):
            continue
        epoch = int(row.get("training_iteration", row.get("epoch", i)))
        results[epoch] = {
            k: float(v)
            for k, v in row.items()
            if k not in _TUNE_KEYS and isinstance(v, int | float) and not isinstance(v, bool)
        }
    return results


def _nlin(hparams: Mapping[str, Any]) -> Any:
    """The activation named in a trial's flattened ``params.json`` (``model::nlin``), or None."""
    return next((hparams[k] for k in _NLIN_KEYS if k in hparams), None)


def _cnn_template(hparams: Mapping[str, Any], activation: str) -> dict | None:
    """``archs.modelzoo_cnn`` for a trial whose ``model::type`` is a def_net.py CNN, else None."""
    variant = str(hparams.get("model.type", ""))
    if variant not in archs.MODELZOO_CNNS:
        return None
    return archs.modelzoo_cnn(variant, int(hparams.get("model.channels_in", 1)), activation=activation)


def _column_name(key: str) -> str:
    """A hyperparameter key as a store column name (``model::nlin`` -> ``model.nlin``)."""
    return re.sub(r"[^0-9A-Za-z_.=+-]+", ".", key).strip(".") or "_"


def _flatten_hparams(data: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    """Scalar entries of a nested mapping under dotted column names; lists become JSON text."""
    out: dict[str, Any] = {}
    for key, value in data.items():
        name = _column_name(f"{prefix}{key}")
        if isinstance(value, Mapping):
            out.update(_flatten_hparams(value, f"{name}."))
        elif isinstance(value, bool | int | float | str):
            out[name] = value
        elif isinstance(value, list | tuple):
            out[name] = json.dumps(value, default=str)
        elif value is not None:
            out[name] = str(value)
    return out
