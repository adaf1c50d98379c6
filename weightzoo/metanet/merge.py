"""Model merging as pure tensor functions: linear, task arithmetic, TIES, DARE, Model Breadcrumbs,
SLERP and Model Stock on flat parameter vectors ``[K, P]``, applied per tensor of a ParamLayout.

Method and parameter names, defaults and semantics follow mergekit, so a mergekit recipe carries
over; where a paper's own code differs, the difference is an option and each method's
``convention`` says which one is the default.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from numbers import Integral, Real
from typing import Any

import torch
from torch import Tensor

from ..errors import MergeError
from ..layout import ParamLayout

__all__ = [
    "METHODS",
    "MergeMethod",
    "breadcrumbs_mask",
    "check_params",
    "dare_drop",
    "disjoint_mean",
    "elect_sign",
    "keep_count",
    "magnitude_mask",
    "mean_pairwise_cosine",
    "merge",
    "method_table",
    "model_stock_ratio",
    "random_mask",
    "rescale_masked",
    "slerp",
    "trim_magnitude",
]

DOT_THRESHOLD = 0.9995  # mergekit's slerp: |cos| above this counts as colinear (linear interpolation)
RESCALES = ("l1", "density", "none")
CONSENSUS = ("sum", "count")
GRANULARITIES = ("tensor", "row")
_EPS = 1e-7  # mergekit's floor on a norm before L1 rescaling


@dataclass(frozen=True)
class MergeMethod:
    """A merge method: mergekit's name, its parameters with defaults, and what it needs."""

    name: str
    params: dict[str, object]
    needs_base: bool
    models: tuple[int, int | None]
    convention: str
    source: str


@dataclass(frozen=True)
class _Args:
    """What a per-tensor merge function receives besides the tensors."""

    params: dict[str, Any]
    weights: Tensor  # [K]
    generator: torch.Generator | None


# ----------------------------------------------------------------------------- building blocks
#
# Task vectors are stacked along the first axis: ``taus`` is ``[K, *shape]``, one tensor of K models.


def keep_count(fraction: float, n: int, *, at_least: int = 1) -> int:
    """How many of ``n`` entries a ``fraction`` is: the nearest integer (halves round up, where
    mergekit floors), at least ``at_least`` and at most ``n``."""
    return min(n, max(at_least, math.floor(fraction * n + 0.5)))


def _per_model(x: Tensor) -> Tensor:
    return x.reshape(x.shape[0], -1)


def _rows(x: Tensor, by_row: bool) -> Tensor:
    """``[K, *shape]`` as ``[K, R, n]``: one row per output neuron (first axis of a tensor with two
    or more axes) when ``by_row``, else the whole tensor as one row."""
    if by_row and x.dim() >= 3:
        return x.reshape(x.shape[0], x.shape[1], -1)
    return x.reshape(x.shape[0], 1, -1)


def _expand(weights: Tensor | None, like: Tensor) -> Tensor:
    """Weights ``[K]`` (ones if None) shaped to broadcast against ``[K, *shape]``."""
    if weights is None:
        weights = torch.ones(like.shape[0], dtype=like.dtype, device=like.device)
    return weights.to(like).reshape(-1, *([1] * (like.dim() - 1)))


def _rank_band(scores: Tensor, start: int, stop: int) -> Tensor:
    """Boolean mask of the entries ranked ``start .. stop - 1`` by descending score along the last
    axis; ``torch.topk`` breaks ties, so exactly ``stop - start`` entries per row are kept."""
    idx = scores.topk(stop, dim=-1, sorted=True).indices[..., start:]
    return torch.zeros_like(scores, dtype=torch.bool).scatter_(-1, idx, True)


def magnitude_mask(taus: Tensor, density: float) -> Tensor:
    """Per model, keep the ``keep_count(density, numel)`` largest-magnitude entries of the tensor."""
    flat = _per_model(taus)
    k = keep_count(density, flat.shape[1])
    if k >= flat.shape[1]:
        return torch.ones_like(taus, dtype=torch.bool)
    return _rank_band(flat.abs(), 0, k).view_as(taus)


def trim_magnitude(taus: Tensor, density: float) -> Tensor:
    """TIES's trim step: each task vector with all but its top ``density`` fraction zeroed."""
    return taus * magnitude_mask(taus, density)


def breadcrumbs_mask(taus: Tensor, density: float, gamma: float, granularity: str = "tensor") -> Tensor:
    """Model Breadcrumbs' mask: drop the largest ``gamma`` fraction by magnitude (outliers), keep the
    next ``density`` fraction, drop the rest; ranked within each tensor or each row (output neuron).
    The outliers shrink when both fractions do not fit after rounding (as mergekit)."""
    rows = _rows(taus, granularity == "row")
    n = rows.shape[-1]
    k = keep_count(density, n)
    top = min(keep_count(gamma, n, at_least=0), n - k)
    if top == 0 and k == n:
        return torch.ones_like(taus, dtype=torch.bool)
    return _rank_band(rows.abs(), top, top + k).view_as(taus)


def random_mask(taus: Tensor, density: float, generator: torch.Generator | None = None) -> Tensor:
    """DARE's drop: each entry kept independently with probability ``density`` (p = 1 - density)."""
    return torch.rand(taus.shape, generator=generator, device=taus.device) < density


def rescale_masked(taus: Tensor, mask: Tensor, rescale: str, density: float | Tensor) -> Tensor:
    """``taus * mask`` rescaled: ``"l1"`` restores each model's L1 norm over the tensor (mergekit's
    ``rescale: true``), ``"density"`` divides each survivor by its keep probability (``density``, a
    number or one per entry: the DARE paper's 1 / (1 - p), DELLA's 1 / p_i), ``"none"`` leaves the
    survivors as they are."""
    masked = taus * mask
    if rescale == "density":
        return masked / density
    if rescale == "l1":
        before, after = _per_model(taus).abs().sum(1), _per_model(masked).abs().sum(1)
        ok = (before > _EPS) & (after > _EPS)
        scale = torch.where(ok, before / after.clamp_min(_EPS), torch.ones_like(before))
        return masked * _expand(scale, masked)
    return masked


def della_probabilities(taus: Tensor, density: float, epsilon: float) -> Tensor:
    """DELLA's keep probabilities ``[K, *shape]``: within each row (output neuron; a 1-D tensor is
    one row), linear in the entry's magnitude rank from ``density - epsilon`` (smallest) to
    ``density + epsilon`` (largest), so the probabilities average ``density``."""
    rows = _rows(taus, True) if taus.dim() >= 3 else taus.reshape(taus.shape[0], 1, -1)
    n = rows.shape[-1]
    ranks = rows.abs().argsort(-1).argsort(-1).to(taus.dtype)  # 0 for the smallest magnitude
    spread = ranks / (n - 1) if n > 1 else torch.full_like(ranks, 0.5)
    return ((density - epsilon) + 2 * epsilon * spread).view_as(taus)


def dare_drop(taus: Tensor, density: float, generator: torch.Generator | None = None, rescale: str = "l1") -> Tensor:
    """DARE's drop and rescale of task vectors ``[K, *shape]`` (see :func:`rescale_masked`)."""
    return rescale_masked(taus, random_mask(taus, density, generator), rescale, density)


def elect_sign(taus: Tensor, weights: Tensor | None = None, method: str = "sum") -> Tensor:
    """TIES's sign election per entry, ``[*shape]`` of +-1: the sign of the weighted sum of the
    task vectors (``"sum"``) or of the sum of their signs (``"count"``); 0 elects +1 (as mergekit)."""
    weighted = _expand(weights, taus) * taus
    total = weighted.sum(0) if method == "sum" else weighted.sign().sum(0)
    return torch.where(total >= 0, 1.0, -1.0).to(taus)


def disjoint_mean(
    taus: Tensor, weights: Tensor | None = None, sign: Tensor | None = None, *, normalize: bool = True
) -> Tensor:
    """TIES's disjoint merge: per entry, the weighted mean of the task vectors whose (weighted)
    entry has the elected ``sign``, 0 where none does; the weighted sum with ``normalize=False``."""
    w = _expand(weights, taus)
    if sign is None:
        sign = elect_sign(taus, weights)
    weighted = w * taus
    agree = weighted.sign() == sign
    total = (weighted * agree).sum(0)
    if not normalize:
        return total
    count = (w * agree).sum(0)
    return total / torch.where(count == 0, torch.ones_like(count), count)


def slerp(t: float, a: Tensor, b: Tensor, dot_threshold: float = DOT_THRESHOLD, eps: float = 1e-8) -> Tensor:
    """Spherical interpolation from ``a`` (t=0) to ``b`` (t=1), each tensor taken as one vector:
    the angle is that of the normalized tensors, the unnormalized ones are combined, and when
    ``|cos| > dot_threshold`` (nearly colinear) it is linear interpolation."""
    na, nb = a.norm(), b.norm()
    unit_a = a / torch.where(na > eps, na, torch.ones_like(na))
    unit_b = b / torch.where(nb > eps, nb, torch.ones_like(nb))
    dot = (unit_a * unit_b).sum().clamp(-1, 1)
    theta = torch.arccos(dot)
    sin = torch.sin(theta).clamp_min(eps)
    spherical = (torch.sin((1 - t) * theta) / sin) * a + (torch.sin(t * theta) / sin) * b
    linear = (1 - t) * a + t * b
    return torch.where(dot.abs() > dot_threshold, linear, spherical)


def mean_pairwise_cosine(rows: Tensor) -> Tensor:
    """``[K, R, n] -> [R]``: per row, the mean cosine similarity over the K(K-1)/2 pairs of models
    (norm products floored at 1e-6 and cosines clamped to [-1, 1], as mergekit)."""
    k = rows.shape[0]
    norms = rows.norm(dim=-1).T  # [R, K]
    dots = torch.einsum("irn,jrn->rij", rows, rows)
    cos = (dots / (norms[:, :, None] * norms[:, None, :]).clamp_min(1e-6)).clamp(-1, 1)
    i, j = torch.triu_indices(k, k, 1, device=rows.device)
    return cos[:, i, j].mean(-1)


def _stock_ratio(rows: Tensor) -> Tensor:
    k = rows.shape[0]
    cos = mean_pairwise_cosine(rows)
    return k * cos / (1 + (k - 1) * cos)


def model_stock_ratio(taus: Tensor, filter_wise: bool = False) -> Tensor:
    """Model Stock's interpolation ratio t = K cos / (1 + (K - 1) cos) of task vectors
    ``[K, *shape]`` (K >= 2): a scalar, or one per row (output neuron) with ``filter_wise``."""
    t = _stock_ratio(_rows(taus, filter_wise))
    return t if filter_wise and taus.dim() >= 3 else t.reshape(())


# ----------------------------------------------------------------------------- per-tensor methods
#
# Each takes ``models [K, *shape]``, ``base [*shape]`` (or None) and the checked arguments.

Sparsifier = Callable[[Tensor, _Args], Tensor | tuple[Tensor, Tensor]]  # -> keep mask (and keep probabilities)


def _magnitude(taus: Tensor, a: _Args) -> Tensor:
    return magnitude_mask(taus, a.params["density"])


def _random(taus: Tensor, a: _Args) -> Tensor:
    return random_mask(taus, a.params["density"], a.generator)


def _della(taus: Tensor, a: _Args) -> tuple[Tensor, Tensor]:
    p = a.params
    probs = della_probabilities(taus, p["density"], p["epsilon"])
    return torch.rand(taus.shape, generator=a.generator, device=taus.device) < probs, probs


def _outliers(taus: Tensor, a: _Args) -> Tensor:
    p = a.params
    return breadcrumbs_mask(taus, p["density"], p["gamma"], p["granularity"])


def _weighted_sum(x: Tensor, weights: Tensor, normalize: bool) -> Tensor:
    total = (_expand(weights, x) * x).sum(0)
    return total / weights.sum() if normalize else total


def _generalized_task_arithmetic(
    models: Tensor, base: Tensor, a: _Args, sparsify: Sparsifier | None = None, consensus: bool = False
) -> Tensor:
    """mergekit's generalized task arithmetic: sparsify the task vectors, optionally elect signs,
    combine (weighted), and add ``lambda`` times the result to the base."""
    p = a.params
    taus = models - base
    if sparsify is not None:
        kept = sparsify(taus, a)
        mask, probability = kept if isinstance(kept, tuple) else (kept, p["density"])
        taus = rescale_masked(taus, mask, p["rescale"], probability)
    if consensus:
        sign = elect_sign(taus, a.weights, p["consensus_method"])
        merged = disjoint_mean(taus, a.weights, sign, normalize=p["normalize"])
    else:
        merged = _weighted_sum(taus, a.weights, p["normalize"])
    return base + p["lambda"] * merged


def _gta(sparsify: Sparsifier | None = None, consensus: bool = False) -> Callable[[Tensor, Tensor, _Args], Tensor]:
    """One method of the generalized task arithmetic family: its sparsifier and whether signs are elected."""
    return functools.partial(_generalized_task_arithmetic, sparsify=sparsify, consensus=consensus)


def _linear(models: Tensor, base: Tensor | None, a: _Args) -> Tensor:
    return _weighted_sum(models, a.weights, a.params["normalize"])


def _slerp(models: Tensor, base: Tensor | None, a: _Args) -> Tensor:
    return slerp(a.params["t"], models[0], models[1])


def _model_stock(models: Tensor, base: Tensor, a: _Args) -> Tensor:
    by_row = a.params["filter_wise"]
    rows, base_rows = _rows(models, by_row), _rows(base[None], by_row)[0]
    t = _stock_ratio(rows - base_rows)[:, None]
    return (t * rows.mean(0) + (1 - t) * base_rows).reshape(base.shape)


# ----------------------------------------------------------------------------- registry

_GTA = {"weight": 1.0, "density": 1.0, "lambda": 1.0}
_DELLA = {"weight": 1.0, "density": 0.7, "epsilon": 0.15, "lambda": 1.0, "normalize": False, "rescale": "l1", "seed": 0}
_BREADCRUMBS = {"weight": 1.0, "density": 0.99, "gamma": 0.01, "lambda": 1.0, "normalize": False, "rescale": "none"}
_TIES_PAPER = (
    "the TIES paper's code trims over the whole flattened model (layout=None here), elects from unweighted task "
    "vectors and breaks a zero sum with the global majority sign"
)

_REGISTRY: list[tuple[MergeMethod, Callable[[Tensor, Tensor | None, _Args], Tensor]]] = [
    (
        MergeMethod(
            "linear",
            {"weight": 1.0, "normalize": True},
            False,
            (1, None),
            "Weighted average sum_i w_i theta_i / sum_i w_i per tensor (the weighted sum with normalize=False), "
            "as mergekit's linear; a base is not used.",
            "Wortsman et al. 2022 (Model Soups); mergekit merge_methods/linear.py",
        ),
        _linear,
    ),
    (
        MergeMethod(
            "task_arithmetic",
            {"weight": 1.0, "lambda": 1.0, "normalize": False},
            True,
            (1, None),
            "base + lambda * sum_i w_i (theta_i - base), divided by sum_i w_i only with normalize=True "
            "(mergekit's default for task_arithmetic is normalize=False).",
            "Ilharco et al. 2023 (Editing Models with Task Arithmetic); mergekit generalized_task_arithmetic.py",
        ),
        _gta(),
    ),
    (
        MergeMethod(
            "ties",
            {**_GTA, "normalize": True, "rescale": "none", "consensus_method": "sum"},
            True,
            (1, None),
            "Per tensor each task vector keeps its round(density * numel) largest-magnitude entries (at least 1; "
            "mergekit floors), signs are elected from the weighted trimmed vectors ('sum', or 'count' of signs) "
            f"and agreeing entries averaged with weights, then base + lambda * merged; {_TIES_PAPER}.",
            "Yadav et al. 2023 (TIES-Merging); mergekit generalized_task_arithmetic.py, sparsify.py",
        ),
        _gta(_magnitude, consensus=True),
    ),
    (
        MergeMethod(
            "dare_linear",
            {**_GTA, "normalize": False, "rescale": "l1", "seed": 0},
            True,
            (1, None),
            "Each task-vector entry survives with probability density (torch.Generator seeded with seed), survivors "
            "rescaled to keep each task vector's L1 norm per tensor (rescale='l1', mergekit's default) or by "
            "1/density (rescale='density', the DARE paper's 1/(1-p)) or not ('none'), then task arithmetic.",
            "Yu et al. 2024 (Language Models are Super Mario, DARE); mergekit generalized_task_arithmetic.py, "
            "sparsify.py",
        ),
        _gta(_random),
    ),
    (
        MergeMethod(
            "dare_ties",
            {**_GTA, "normalize": False, "rescale": "l1", "consensus_method": "sum", "seed": 0},
            True,
            (1, None),
            "DARE's seeded drop and rescale (rescale='l1' by default as mergekit, 'density' for the paper's 1/(1-p)) "
            "then the TIES sign election; agreeing entries are summed (mergekit's normalize=False) or averaged.",
            "Yu et al. 2024 (DARE) with Yadav et al. 2023 (TIES); mergekit generalized_task_arithmetic.py",
        ),
        _gta(_random, consensus=True),
    ),
    (
        MergeMethod(
            "della",
            {**_DELLA, "consensus_method": "sum"},
            True,
            (1, None),
            "DARE with magnitude-ranked drops: within each row (output neuron) an entry survives with a probability "
            "linear in its magnitude rank from density - epsilon to density + epsilon, survivors rescaled (rescale="
            "'l1' as mergekit's default, or 'density': by 1/p_i as the DELLA paper), then the TIES sign election.",
            "Deep et al. 2024 (DELLA-Merging); mergekit generalized_task_arithmetic.py, sparsify.py",
        ),
        _gta(_della, consensus=True),
    ),
    (
        MergeMethod(
            "della_linear",
            dict(_DELLA),
            True,
            (1, None),
            "DELLA's magnitude-ranked drops and rescale (see della), then task arithmetic without sign election.",
            "Deep et al. 2024 (DELLA-Merging); mergekit generalized_task_arithmetic.py",
        ),
        _gta(_della),
    ),
    (
        MergeMethod(
            "breadcrumbs",
            {**_BREADCRUMBS, "granularity": "tensor"},
            True,
            (1, None),
            "Per task vector the largest gamma fraction by magnitude and all below the next density fraction are "
            "zeroed, then task arithmetic, ranked per tensor as mergekit (granularity='tensor', the default) or per "
            "row (output neuron) as the paper's code ('row'); density defaults to 0.99 = 1 - gamma since mergekit's "
            "density=1.0 keeps everything and ignores gamma.",
            "Davari & Belilovsky 2024 (Model Breadcrumbs); mergekit generalized_task_arithmetic.py, sparsify.py",
        ),
        _gta(_outliers),
    ),
    (
        MergeMethod(
            "breadcrumbs_ties",
            {**_BREADCRUMBS, "consensus_method": "sum", "granularity": "tensor"},
            True,
            (1, None),
            "Breadcrumbs masks (per tensor by default as mergekit, per row as the paper's code) then the TIES sign "
            "election; agreeing entries are summed (mergekit's normalize=False) or averaged.",
            "Davari & Belilovsky 2024 (Model Breadcrumbs) with Yadav et al. 2023 (TIES); mergekit "
            "generalized_task_arithmetic.py",
        ),
        _gta(_outliers, consensus=True),
    ),
    (
        MergeMethod(
            "slerp",
            {"t": 0.5},
            False,
            (2, 2),
            "Spherical interpolation per tensor from model 0 (t=0) to model 1 (t=1) at the angle of the normalized "
            "tensors, combining the unnormalized ones, linear when |cos| > 0.9995 (as mergekit, whose t=0 end is the "
            "base model).",
            "Shoemake 1985 (slerp); mergekit merge_methods/slerp.py",
        ),
        _slerp,
    ),
    (
        MergeMethod(
            "model_stock",
            {"filter_wise": False},
            True,
            (2, None),
            "Per tensor (per row with filter_wise=True) t = K cos / (1 + (K-1) cos) with cos the mean pairwise cosine "
            "of the task vectors, result t * mean_i theta_i + (1 - t) * base; the mean over pairs is mergekit's "
            "choice, and filter_wise rows are output neurons (first axis) where mergekit uses the last axis.",
            "Jang et al. 2024 (Model Stock); mergekit merge_methods/model_stock.py",
        ),
        _model_stock,
    ),
]

METHODS: dict[str, MergeMethod] = {m.name: m for m, _ in _REGISTRY}
_TENSOR_FNS = {m.name: fn for m, fn in _REGISTRY}


# ----------------------------------------------------------------------------- checks


def _fail(method: str, message: str) -> MergeError:
    return MergeError(f"merge method {method!r}: {message}")


def _number(method: str, name: str, value: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, Real) or not math.isfinite(value):
        raise _fail(method, f"{name} must be a finite number, got {value!r}")
    return float(value)


def _in_range(method: str, name: str, value: Any, interval: str, ok: Callable[[float], bool]) -> float:
    x = _number(method, name, value)
    if not ok(x):
        raise _fail(method, f"{name} must be in {interval}, got {value!r}")
    return x


def _flag(method: str, name: str, value: Any) -> bool:
    if not isinstance(value, bool):
        raise _fail(method, f"{name} must be True or False, got {value!r}")
    return value


def _choice(method: str, name: str, value: Any, choices: Sequence[str]) -> str:
    if value not in choices:
        raise _fail(method, f"{name} must be one of {', '.join(choices)}, got {value!r}")
    return value


def _rescale(method: str, name: str, value: Any) -> str:
    if isinstance(value, bool):  # mergekit's rescale: true / false
        return "l1" if value else "none"
    return _choice(method, name, value, RESCALES)


def _seed(method: str, name: str, value: Any) -> int:
    whole = isinstance(value, Integral) or (isinstance(value, Real) and float(value).is_integer())
    if isinstance(value, bool) or not whole:
        raise _fail(method, f"{name} must be an integer, got {value!r}")
    return int(value)


def _weight(method: str, value: Any, n_models: int) -> float | list[float]:
    if hasattr(value, "tolist"):  # a tensor or numpy array
        value = value.tolist()
    if isinstance(value, Sequence) and not isinstance(value, str):
        if len(value) != n_models:
            raise _fail(
                method, f"weight has {len(value)} values for {n_models} models; give one per model or one float"
            )
        return [_number(method, "weight", w) for w in value]
    return _number(method, "weight", value)


_CHECKS: dict[str, Callable[[str, str, Any], Any]] = {
    "density": lambda m, n, v: _in_range(m, n, v, "(0, 1]", lambda x: 0 < x <= 1),
    "gamma": lambda m, n, v: _in_range(m, n, v, "[0, 1)", lambda x: 0 <= x < 1),
    "epsilon": lambda m, n, v: _in_range(m, n, v, "[0, 1)", lambda x: 0 <= x < 1),
    "t": lambda m, n, v: _in_range(m, n, v, "[0, 1]", lambda x: 0 <= x <= 1),
    "lambda": _number,
    "normalize": _flag,
    "filter_wise": _flag,
    "rescale": _rescale,
    "consensus_method": lambda m, n, v: _choice(m, n, v, CONSENSUS),
    "granularity": lambda m, n, v: _choice(m, n, v, GRANULARITIES),
    "seed": _seed,
}


def check_params(method: str, params: Mapping[str, Any], n_models: int, has_base: bool) -> dict[str, Any]:
    """Validate and fill defaults; returns the full parameter dict (used by the CLI before any work).

    ``lambda_`` is accepted for ``lambda`` (a Python keyword); mergekit's boolean ``rescale`` maps to
    ``"l1"`` (true) and ``"none"`` (false). Raises a one-line MergeError naming the parameter.
    """
    if method not in METHODS:
        raise MergeError(f"unknown merge method {method!r}; use one of: {', '.join(METHODS)}")
    spec = METHODS[method]
    params = dict(params)
    if "lambda_" in params:
        if "lambda" in params:
            raise _fail(method, "both lambda and lambda_ given; pass lambda once")
        params["lambda"] = params.pop("lambda_")
    unknown = sorted(set(params) - set(spec.params))
    if unknown:
        raise _fail(method, f"unknown parameter {unknown[0]!r}; valid parameters are {', '.join(spec.params)}")

    lo, hi = spec.models
    if method == "slerp" and n_models != 2:
        raise MergeError(f"slerp merges exactly two models, got {n_models}; use linear or ties for more")
    if n_models < lo:
        raise _fail(method, f"needs at least {lo} models, got {n_models}")
    if hi is not None and n_models > hi:
        raise _fail(method, f"merges at most {hi} models, got {n_models}")
    if spec.needs_base and not has_base:
        raise _fail(method, "needs a base model (task vectors are theta_i - base); pass base=")

    out = {**spec.params, **params}
    for name, value in out.items():
        out[name] = _weight(method, value, n_models) if name == "weight" else _CHECKS[name](method, name, value)
    if "gamma" in out and out["gamma"] + out["density"] > 1 + 1e-9:
        raise _fail(
            method,
            f"gamma + density must be at most 1 (outliers dropped plus entries kept), got gamma={out['gamma']} and "
            f"density={out['density']}; lower one of them",
        )
    if "epsilon" in out and not (out["density"] - out["epsilon"] > 0 and out["density"] + out["epsilon"] <= 1):
        raise _fail(
            method,
            f"density - epsilon must be > 0 and density + epsilon at most 1 (the keep probabilities), got "
            f"density={out['density']} and epsilon={out['epsilon']}; lower epsilon",
        )
    if out.get("normalize") and "weight" in out:
        total = sum(out["weight"]) if isinstance(out["weight"], list) else out["weight"] * n_models
        if abs(total) < 1e-8:
            raise _fail(
                method, "weight values sum to 0, which normalize=True divides by; change them or set normalize=False"
            )
    return out


def _check_tensors(models: Any, base: Tensor | None, layout: ParamLayout | None) -> Tensor | None:
    if not isinstance(models, Tensor) or models.dim() != 2:
        shape = tuple(models.shape) if isinstance(models, Tensor) else type(models).__name__
        raise MergeError(
            f"merge: models must be a 2-D tensor [K, P] of flat parameter vectors, got {shape}; torch.stack them"
        )
    if not models.is_floating_point():
        raise MergeError(f"merge: models must be floating point, got {models.dtype}; convert with .float()")
    size = models.shape[1]
    if layout is not None and layout.size != size:
        raise MergeError(
            f"merge: the layout describes {layout.size} parameters but models have P={size}; use the models' layout"
        )
    if base is None:
        return None
    if not isinstance(base, Tensor) or tuple(base.shape) != (size,):
        shape = tuple(base.shape) if isinstance(base, Tensor) else type(base).__name__
        raise MergeError(f"merge: base must be a flat vector [P] with P={size} like the models, got {shape}")
    return base.to(device=models.device, dtype=models.dtype)


# ----------------------------------------------------------------------------- entry points


def merge(
    method: str,
    models: Tensor,
    *,
    base: Tensor | None = None,
    layout: ParamLayout | None = None,
    **params: Any,
) -> Tensor:
    """Merge ``models [K, P]`` (one layout) into one flat vector ``[P]`` on the models' device.

    Every method works per tensor of ``layout`` (the whole vector is one tensor when it is None).
    ``base [P]`` is required by methods with ``needs_base`` and ignored by linear and slerp.
    ``params`` are the method's (see :data:`METHODS`); pass ``lambda`` as ``lambda_=`` or
    ``**{"lambda": x}``.
    """
    base = _check_tensors(models, base, layout)
    p = check_params(method, params, models.shape[0], base is not None)
    weights = torch.as_tensor(p.get("weight", 1.0), dtype=models.dtype, device=models.device)
    generator = None
    if "seed" in p:
        generator = torch.Generator(device=models.device).manual_seed(p["seed"])
    args = _Args(p, weights.expand(models.shape[0]), generator)
    fn = _TENSOR_FNS[method]
    if layout is None:
        return fn(models, base, args)
    k, parts = models.shape[0], []
    for e in layout.entries:
        if e.numel == 0:
            continue
        m = models[:, e.offset : e.stop].reshape(k, *e.shape)
        b = None if base is None else base[e.offset : e.stop].reshape(e.shape)
        parts.append(fn(m, b, args).reshape(-1))
    return torch.cat(parts) if parts else models.new_zeros(0)


def method_table() -> list[dict[str, str]]:
    """One row per method (method, parameters with defaults, convention, source): the README's table."""
    return [
        {
            "method": m.name,
            "parameters": ", ".join(f"{k}={v}" for k, v in m.params.items()),
            "convention": m.convention,
            "source": m.source,
        }
        for m in METHODS.values()
    ]
