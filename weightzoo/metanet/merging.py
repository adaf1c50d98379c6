"""Merging models end to end: the models (zoo members or files), optional permutation alignment,
a merge method of :mod:`weightzoo.metanet.merge` or a soup, BatchNorm statistics recomputed,
the merged network evaluated on each source member's task, and sweeps over a parameter grid
written as a small zoo. ``weightzoo merge`` is one call of :func:`merge_models` (or :func:`sweep`).

Alignment before merging: with a base (task-vector methods, model stock), every model is permuted
to match the base; without one, two models align the second to the first and more use MergeMany,
so models that share no base can be merged too.
"""

from __future__ import annotations

import itertools
import json
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor

from ..errors import MergeError
from .align import Aligner, check_method
from .functional import Functional
from .heldout import holdout
from .interpolate import higher_is_better
from .merge import METHODS, check_params, merge
from .plots import plot_sweep
from .sources import ModelSet

SOUPS = ("uniform_soup", "greedy_soup")


def method_names() -> list[str]:
    return [*METHODS, *SOUPS]


@dataclass
class MergeResult:
    """A merged network ``[P]`` and how it was made; ``metrics`` per source member when evaluated."""

    flat: Tensor
    method: str
    params: dict[str, Any]
    align: str | None
    sources: list[str]
    metrics: dict[str, np.ndarray] = field(default_factory=dict)  # {metric: [members]}
    members: list[int] = field(default_factory=list)
    chosen: list[int] | None = None  # greedy soup: the ingredients kept (positions in sources)

    def metadata(self) -> dict[str, str]:
        """What a saved merge records (safetensors metadata is strings)."""
        info = {"method": self.method, "params": self.params, "align": self.align, "sources": self.sources}
        if self.chosen is not None:
            info["chosen"] = self.chosen
        return {"weightzoo_merge": json.dumps(info, default=_plain)}

    def to_dict(self) -> dict:
        out = json.loads(self.metadata()["weightzoo_merge"])
        if self.metrics:
            out["members"] = self.members
            out["metrics"] = {k: [float(x) for x in v] for k, v in self.metrics.items()}
        return out


def _plain(value: Any) -> Any:
    return value.tolist() if hasattr(value, "tolist") else str(value)


def task_inputs(models: ModelSet, members: Sequence[int] = ()) -> Tensor | None:
    """Training inputs of the first source (or evaluation) member's task, for activation matching
    and BatchNorm statistics; None when the models come with no built zoo."""
    zoo = models.zoo
    idx = list(members) or models.members
    if zoo is None or not idx or not (zoo.attrs.get("spec") or {}).get("task"):
        return None
    return zoo.task_data(idx[0]).x_train


def align_models(models: ModelSet, method: str, *, seed: int = 0, data: Tensor | None = None) -> Tensor:
    """The models ``[K, P]`` permuted to one another (to the base if there is one, else MergeMany)."""
    check_method(method)
    if models.spec is None or models.architecture is None:
        raise MergeError(
            f"{models.names[0]}: alignment needs the architecture (its permutation groups); merge zoo members, "
            "pass --zoo for files of a zoo's architecture, or merge without --align"
        )
    if method == "activation" and data is None:
        raise MergeError(
            "--align activation needs task data: merge members of a built zoo, or files with --zoo and --members"
        )
    aligner = Aligner(models.layout, models.spec, method, Functional(models.architecture), data, seed=seed)
    if models.base is not None:
        return aligner.align(models.base, models.flat)[0]
    if len(models) == 2:
        return torch.stack([models.flat[0], aligner.align(models.flat[0], models.flat[1])[0]])
    return aligner.merge_many(models.flat)[0]


def merge_models(
    models: ModelSet,
    method: str,
    *,
    align: str | None = None,
    seed: int = 0,
    evaluate: bool = False,
    eval_members: Sequence[int] = (),
    **params: Any,
) -> MergeResult:
    """Merge ``models`` with ``method`` (a merge method or ``uniform_soup`` / ``greedy_soup``) and
    its parameters; ``evaluate`` scores the result on each source member's task (or on
    ``eval_members`` of the models' zoo)."""
    known = method_names()
    if method not in known:
        raise MergeError(f"merge method {method!r} is not one of {', '.join(known)}")
    if method in METHODS and "seed" in METHODS[method].params:
        params = {"seed": seed, **params}  # one --seed for DARE's drops and the alignment
    filled = _check(method, params, models)
    members = list(eval_members) or models.members
    net = None if models.architecture is None else Functional(models.architecture)
    batchnorm = net is not None and net.has_batchnorm
    data = task_inputs(models, members) if align == "activation" or batchnorm else None  # only when needed
    flat = models.flat if align is None else align_models(models, align, seed=seed, data=data)
    chosen = None
    if method == "uniform_soup":
        merged = flat.mean(0)
    elif method == "greedy_soup":
        merged, chosen = greedy_soup(flat, _heldout_score(models, members))
    else:
        merged = merge(method, flat, base=models.base, layout=models.layout, **filled)
    if batchnorm and data is not None:  # merged BatchNorm networks need statistics of their own
        merged = net.recompute_batchnorm(merged, data)[0].cpu()
    result = MergeResult(merged, method, filled, align, list(models.names), chosen=chosen)
    if evaluate:
        result.members, result.metrics = _evaluate(models, merged, members)
    return result


def _check(method: str, params: Mapping[str, Any], models: ModelSet) -> dict[str, Any]:
    if method in SOUPS:
        if params:
            raise MergeError(f"merge method {method!r} takes no parameters, got {', '.join(params)}")
        if len(models) < 2:
            raise MergeError(f"merge method {method!r} needs two or more models, got {len(models)}")
        return {}
    if models.no_base and METHODS[method].needs_base:
        raise MergeError(f"merge method {method!r}: {models.no_base}")
    return check_params(method, params, len(models), models.base is not None)


def _evaluate(models: ModelSet, merged: Tensor, members: Sequence[int]) -> tuple[list[int], dict[str, np.ndarray]]:
    if models.zoo is None or not members:
        raise MergeError("--eval needs tasks: merge members of a built zoo, or files with --zoo PATH --members LIST")
    row = np.zeros((1, models.zoo.layout.size), dtype=np.float32)  # padded where a mixed zoo's members differ
    row[0, : merged.numel()] = merged.numpy()
    return list(members), models.zoo.evaluate(row, list(members))


def _heldout_score(models: ModelSet, members: Sequence[int]) -> Callable[[Tensor], np.ndarray]:
    """Mean held-out accuracy (or PSNR) of weights ``[B, P]`` over the source members' tasks."""
    if models.zoo is None or not members or models.architecture is None:
        raise MergeError("greedy_soup ranks ingredients on held-out data: merge members of a built zoo")
    net = Functional(models.architecture)
    splits = [holdout(models.zoo, i).validation for i in sorted(set(members))]

    def score(flat: Tensor) -> np.ndarray:
        values = [net.scores(flat, x, y, kind) for x, y, kind in splits]
        key = "acc" if "acc" in values[0] else "psnr"
        return np.mean([v[key].numpy() for v in values], axis=0)

    return score


def greedy_soup(flat: Tensor, score: Callable[[Tensor], np.ndarray]) -> tuple[Tensor, list[int]]:
    """Greedy soup (Wortsman et al. 2022, Alg. 1): ingredients ``[K, P]`` sorted by held-out score,
    each added to the running average only if the average's held-out score improves (strictly; the
    paper keeps ties). Returns the soup and the positions of the ingredients kept."""
    order = np.argsort(-score(flat), kind="stable")
    chosen = [int(order[0])]
    best = float(score(flat[order[0]][None])[0])
    for i in order[1:]:
        candidate = flat[[*chosen, int(i)]].mean(0)
        value = float(score(candidate[None])[0])
        if value > best:
            chosen.append(int(i))
            best = value
    return flat[chosen].mean(0), chosen


# ----------------------------------------------------------------------------- sweeps


def parse_grid(items: Sequence[str]) -> dict[str, list[float]]:
    """``["density=0.1,0.2", "lambda=0.5,1"]`` -> ``{"density": [0.1, 0.2], "lambda": [0.5, 1.0]}``."""
    grid: dict[str, list[float]] = {}
    for item in items:
        name, sep, values = item.partition("=")
        try:
            grid[name.strip()] = [float(v) for v in values.split(",")]
        except ValueError:
            sep = ""
        if not sep or not name.strip():
            raise MergeError(f"--sweep {item!r}: write NAME=V1,V2,... (e.g. density=0.1,0.2,0.5)")
    if not grid:
        raise MergeError("--sweep: give at least one NAME=V1,V2,... grid")
    return grid


def sweep(
    models: ModelSet,
    method: str,
    grid: Mapping[str, Sequence[float]],
    out: str | Path,
    *,
    align: str | None = None,
    seed: int = 0,
    eval_members: Sequence[int] = (),
    plot: str | Path | None = None,
    **params: Any,
) -> list[dict[str, Any]]:
    """Every setting of ``grid`` (other parameters fixed by ``params``) merged and evaluated on the
    source members' tasks; written to ``out`` as a zoo (one member per setting, the setting in its
    hyperparameter columns, the mean metrics over tasks as its metrics) and plotted."""
    from ..zoo.store import ZooStore, staged_store

    names = list(grid)
    settings = [dict(zip(names, values)) for values in itertools.product(*grid.values())]
    for s in settings:  # every setting is checked before any merging
        _check(method, {**params, **s}, models)
    if align is not None:
        data = task_inputs(models, eval_members)
        models = replace(models, flat=align_models(models, align, seed=seed, data=data))
    rows, metrics = [], []
    for s in settings:
        result = merge_models(models, method, seed=seed, evaluate=True, eval_members=eval_members, **params, **s)
        rows.append(result.flat)
        metrics.append({k: float(np.mean(v)) for k, v in result.metrics.items()})
    table = [{**s, **m} for s, m in zip(settings, metrics)]
    source = {"merge": {"method": method, "params": params, "grid": {k: list(v) for k, v in grid.items()},
                        "align": align, "sources": models.names}}  # fmt: skip
    with staged_store(out, overwrite=True) as tmp:
        zoo = ZooStore.create(
            tmp, models.layout, architecture=models.architecture, epochs=[0], source=source, lock=False
        )
        zoo.append(
            torch.stack(rows)[:, None].numpy(),
            hparams={k: np.array([s[k] for s in settings]) for k in names},
            metrics={k: np.array([[m[k]] for m in metrics], dtype=np.float32) for k in metrics[0]},
        )
        zoo.close()
    if plot is not None:
        y = [k for k in metrics[0] if k.startswith("test_") and higher_is_better(k)]
        plot_sweep(table, names[0], y, plot, title=f"{method} sweep over {names[0]}", others=names[1:])
    return table
