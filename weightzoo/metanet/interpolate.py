"""Weights along the straight line between two networks, and the barrier of a metric on it.

The barrier is the largest excess of the metric over the straight line between its endpoint
values (Frankle et al. 2020, "Linear Mode Connectivity and the Lottery Ticket Hypothesis";
Entezari et al. 2022, Def. 1; the definition Git Re-Basin reports):
``max_λ [L(θ(λ)) - ((1 - λ) L(θ_a) + λ L(θ_b))]`` for a loss, with θ(λ) = (1 - λ) θ_a + λ θ_b, and
the same with the sign turned for a score (accuracy, PSNR), so a barrier is never negative and is 0
when the path is no worse than its ends.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np
import torch
from torch import Tensor

from ..errors import MergeError

STEPS = 11  # default λ grid: 0, 0.1, ..., 1


def lambda_grid(steps: int = STEPS) -> np.ndarray:
    """``steps`` evenly spaced λ from 0 to 1 (both ends included)."""
    if steps < 2:
        raise MergeError(f"interpolation needs at least 2 points (both ends), got steps={steps}")
    return np.linspace(0.0, 1.0, steps)


def lerp_path(a: Tensor, b: Tensor, lambdas: Sequence[float]) -> Tensor:
    """Weights ``[L, P]``: ``(1 - λ) a + λ b`` for each λ."""
    lam = torch.as_tensor(np.asarray(lambdas), dtype=a.dtype, device=a.device)[:, None]
    return (1 - lam) * a[None] + lam * b[None]


def higher_is_better(metric: str) -> bool:
    """Scores (``*_acc``, ``*_psnr``) rise with quality; losses fall."""
    return metric.endswith(("acc", "psnr"))


def barrier(values: Sequence[float], lambdas: Sequence[float], *, higher_better: bool = False) -> float:
    """The largest excess of ``values`` over the line between its endpoints (turned for scores)."""
    v, lam = np.asarray(values, dtype=np.float64), np.asarray(lambdas, dtype=np.float64)
    line = (1 - lam) * v[0] + lam * v[-1]
    excess = line - v if higher_better else v - line
    return float(max(excess.max(), 0.0))


@dataclass
class Curve:
    """Metrics ``{name: [L]}`` along the path at ``lambdas``, and each metric's barrier."""

    lambdas: np.ndarray
    metrics: dict[str, np.ndarray]
    barriers: dict[str, float] = field(default_factory=dict)

    def __post_init__(self) -> None:
        for name, values in self.metrics.items():
            self.barriers[name] = barrier(values, self.lambdas, higher_better=higher_is_better(name))

    def to_dict(self) -> dict:
        return {
            "lambdas": [float(x) for x in self.lambdas],
            "metrics": {k: [float(x) for x in v] for k, v in self.metrics.items()},
            "barriers": dict(self.barriers),
        }


def interpolation_curve(
    a: Tensor,
    b: Tensor,
    evaluate: Callable[[Tensor], Mapping[str, np.ndarray]],
    lambdas: Sequence[float] | None = None,
    *,
    prepare: Callable[[Tensor], Tensor] | None = None,
) -> Curve:
    """Evaluate the path from ``a`` to ``b``: ``evaluate([L, P]) -> {metric: [L]}``; ``prepare``
    runs on the path's weights first (e.g. recompute BatchNorm statistics on data)."""
    lambdas = lambda_grid() if lambdas is None else np.asarray(lambdas, dtype=np.float64)
    path = lerp_path(a, b, lambdas)
    if prepare is not None:
        path = prepare(path)
    return Curve(lambdas, {k: np.asarray(v, dtype=np.float64) for k, v in evaluate(path).items()})
