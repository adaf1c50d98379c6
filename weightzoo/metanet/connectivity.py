"""Linear mode connectivity of two zoo members: loss and accuracy along the straight line between
them on their task, as they are (naive) and after weight or activation matching.

This is what ``weightzoo align ZOO A B`` runs. Both ends are evaluated on member A's task (its
training subset and test set, through :func:`weightzoo.zoo.evaluate.evaluate`); activation
matching uses A's training inputs.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

from ..errors import MergeError
from .align import METHODS, Aligner, Alignment, check_method
from .functional import Functional
from .interpolate import Curve, interpolation_curve

CURVES = ("naive", *METHODS)


@dataclass
class ConnectivityReport:
    """The curves of one pair of members, keyed ``naive``, ``weight``, ``activation``."""

    zoo: str
    a: int
    b: int
    epoch: int
    curves: dict[str, Curve]
    alignment: dict[str, dict[str, Any]] = field(default_factory=dict)

    def barriers(self) -> dict[str, dict[str, float]]:
        return {name: dict(c.barriers) for name, c in self.curves.items()}

    def to_dict(self) -> dict:
        return {
            "zoo": self.zoo,
            "members": [self.a, self.b],
            "epoch": self.epoch,
            "barrier_definition": "max over lambda of metric minus the line between its endpoint values "
            "(turned for scores); Frankle et al. 2020, Entezari et al. 2022",
            "curves": {name: c.to_dict() for name, c in self.curves.items()},
            "alignment": self.alignment,
        }

    def format(self) -> str:
        """The barrier table as text: one row per curve, one column per metric."""
        metrics = list(next(iter(self.curves.values())).barriers)
        lines = [
            f"{self.zoo}: members {self.a} and {self.b}, barriers along {len(self.curves['naive'].lambdas)} points"
        ]
        lines.append(f"{'':<12}" + "".join(f"{m:>12}" for m in metrics))
        for name, curve in self.curves.items():
            lines.append(f"{name:<12}" + "".join(f"{curve.barriers[m]:>12.4f}" for m in metrics))
        return "\n".join(lines)


def member_pair(zoo: Any, a: int, b: int, epoch: int = -1) -> tuple[torch.Tensor, torch.Tensor, Functional]:
    """The two members' weights and their (shared) architecture; a MergeError if they differ."""
    for i in (a, b):
        if not 0 <= i < len(zoo):
            raise MergeError(f"{zoo.path}: member {i} is out of range; the zoo has {len(zoo)} members")
    arch_a, arch_b = zoo.member_architectures([a, b])
    if arch_a != arch_b:
        raise MergeError(
            f"{zoo.path}: members {a} and {b} have different architectures; align members of one architecture"
        )
    if zoo.perm_spec is None or len(zoo.perm_spec) == 0:
        raise MergeError(f"{zoo.path}: the zoo's layout has no permutation groups, so there is nothing to align")
    size = zoo.member_layout(a).size
    flat = zoo.params([a, b], epoch=epoch)[:, :size]
    return flat[0], flat[1], Functional(arch_a)


def member_connectivity(
    zoo: Any,
    a: int,
    b: int,
    *,
    methods: Sequence[str] = METHODS,
    lambdas: Sequence[float] | None = None,
    epoch: int = -1,
    seed: int = 0,
    device: str = "cpu",
) -> ConnectivityReport:
    """Curves from member ``a`` to member ``b`` (naive, then each alignment method of ``methods``)."""
    for m in methods:
        check_method(m)
    wa, wb, net = member_pair(zoo, a, b, epoch)
    x = zoo.task_data(a).x_train if "activation" in methods or net.has_batchnorm else None  # A's training inputs
    prepare = (lambda path: net.recompute_batchnorm(path, x).cpu()) if net.has_batchnorm else None

    def evaluate(path: torch.Tensor) -> dict[str, np.ndarray]:
        return zoo.evaluate(path, a, device=device)

    curves = {"naive": interpolation_curve(wa, wb, evaluate, lambdas, prepare=prepare)}
    alignment: dict[str, dict[str, Any]] = {}
    for method in methods:
        aligner = Aligner(net.layout, net.spec, method, net, x, seed=seed)
        start = time.perf_counter()
        moved, found = aligner.align(wa, wb)
        alignment[method] = _alignment_info(found, time.perf_counter() - start)
        curves[method] = interpolation_curve(wa, moved, evaluate, lambdas, prepare=prepare)
    return ConnectivityReport(str(zoo.path), a, b, zoo.epochs[zoo.epoch_index(epoch)], curves, alignment)


def _alignment_info(found: Alignment, seconds: float) -> dict[str, Any]:
    return {"iterations": found.iterations, "converged": found.converged, "seconds": round(seconds, 4)}
