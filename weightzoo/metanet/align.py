"""Permutation alignment of networks of one layout (Ainsworth et al. 2023, "Git Re-Basin").

Weight matching is coordinate descent over the permutation groups of a
:class:`~weightzoo.symmetry.PermutationSpec`: each step solves one linear assignment
(``scipy.optimize.linear_sum_assignment``) for one group with the others fixed, in a seeded random
group order, until a whole pass improves nothing. Activation matching pairs neurons by the
correlation of their activations on data. Many models align to one reference in one batched call,
or to each other (MergeMany). Every result is a group action of the spec, applied with
``PermutationSpec.apply``: an aligned network computes exactly what it computed before.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np
import torch
from scipy.optimize import linear_sum_assignment
from torch import Tensor

from ..errors import MergeError, SpecError
from ..layout import ParamLayout
from ..symmetry import AxisRef, GroupAction, PermutationSpec, neuron_rows, permute_axis
from .functional import Functional

METHODS = ("weight", "activation")
_TOL = 1e-9  # relative improvement a step must make to count (float64 costs)


@dataclass
class Alignment:
    """A group action (permutations ``[n]`` or ``[B, n]`` per group) and how it was found."""

    action: GroupAction
    iterations: int
    converged: bool


# ----------------------------------------------------------------------------- checks


def check_spec(
    layout: ParamLayout, spec: PermutationSpec | None, expected: PermutationSpec | None = None
) -> PermutationSpec:
    """``spec`` if it fits ``layout`` (and covers every axis of ``expected``, the spec derived from
    the architecture); a one-line SpecError naming the parameter otherwise."""
    if spec is None or len(spec) == 0:
        raise SpecError("alignment needs a PermutationSpec with hidden neurons; this layout has none to permute")
    for g in spec.groups:
        for ref in g.axes:
            if ref.param not in layout:
                raise SpecError(f"permutation group {g.name!r} names parameter {ref.param!r}, which the layout lacks")
            shape = layout[ref.param].shape
            if ref.axis >= len(shape) or shape[ref.axis] != g.size * ref.inner:
                raise SpecError(
                    f"permutation group {g.name!r}: axis {ref.axis} of {ref.param!r} (shape {list(shape)}) does not "
                    f"hold {g.size} neurons x {ref.inner}"
                )
    if expected is not None:
        have = {(ref.param, ref.axis) for g in spec.groups for ref in g.axes}
        for g in expected.groups:
            for ref in g.axes:
                if (ref.param, ref.axis) not in have:
                    raise SpecError(
                        f"the PermutationSpec does not cover axis {ref.axis} of {ref.param!r} (its neurons are "
                        f"{g.name!r}); permuting without it changes the function. Derive the spec with "
                        "PermutationSpec.from_module"
                    )
    return spec


def check_method(method: str) -> str:
    if method not in METHODS:
        raise MergeError(f"alignment method {method!r} is not one of {', '.join(METHODS)}")
    return method


# ----------------------------------------------------------------------------- weight matching


def weight_matching(
    spec: PermutationSpec,
    reference: Mapping[str, Tensor],
    models: Mapping[str, Tensor],
    *,
    batched: bool = False,
    seed: int = 0,
    max_iter: int = 100,
    init: GroupAction | None = None,
) -> Alignment:
    """Permutations that bring ``models`` closest to ``reference`` in L2 (maximize the sum of
    inner products of matched weights), by coordinate descent over groups.

    ``models`` are named tensors, ``[B, *shape]`` when ``batched`` (then each gets its own
    permutations, found together); ``reference`` is unbatched or batched alike. ``init`` starts the
    descent (MergeMany continues from the last permutations).
    """
    b = {k: v if batched else v[None] for k, v in models.items()}
    first = next(iter(b))
    count = b[first].shape[0]
    ref_dims = int(reference[first].dim() == b[first].dim())  # a reference per model, or one for all
    ref = {k: v.to(torch.float64) for k, v in reference.items()}
    b = {k: v.to(torch.float64) for k, v in b.items()}
    by_param: dict[str, list[tuple[str, AxisRef]]] = {}
    for g in spec.groups:
        for r in g.axes:
            by_param.setdefault(r.param, []).append((g.name, r))
    perms = {g.name: torch.arange(g.size).expand(count, g.size).clone() for g in spec.groups}
    if init is not None:
        for name, p in init.perms.items():
            perms[name] = (p if p.dim() == 2 else p.expand(count, -1)).clone().cpu()
    rng = np.random.default_rng(seed)
    active = np.ones(count, dtype=bool)
    iterations = 0
    for iterations in range(1, max_iter + 1):  # noqa: B007 - reported after the loop
        improved = np.zeros(count, dtype=bool)
        for gi in rng.permutation(len(spec.groups)):
            g = spec.groups[gi]
            cost = _matching_cost(g.axes, ref, ref_dims, b, perms, by_param).cpu().numpy()
            for i in np.flatnonzero(active):
                _, col = linear_sum_assignment(cost[i], maximize=True)
                old = cost[i, np.arange(g.size), perms[g.name][i].numpy()].sum()
                new = cost[i, np.arange(g.size), col].sum()
                if new > old + _TOL * max(1.0, abs(old)):
                    perms[g.name][i] = torch.from_numpy(col)
                    improved[i] = True
        active &= improved
        if not active.any():
            break
    action = GroupAction({k: v if batched else v[0] for k, v in perms.items()})
    return Alignment(action, iterations, not active.any())


def _matching_cost(axes, ref, ref_dims, models, perms, by_param) -> Tensor:
    """``[B, n, n]``: sum over a group's axes of reference rows times the models' rows, each model
    tensor permuted along all its other grouped axes."""
    cost = None
    for axis in axes:
        a = neuron_rows(ref[axis.param], axis, ref_dims)
        t = models[axis.param]
        for name, other in by_param[axis.param]:
            if other != axis:
                t = permute_axis(t, other, perms[name].to(t.device), 1)
        term = a @ neuron_rows(t, axis, 1).transpose(-1, -2)
        cost = term if cost is None else cost + term
    return cost


# ----------------------------------------------------------------------------- activation matching


def activation_matching(
    reference: Mapping[str, Tensor], models: Mapping[str, Tensor], *, batched: bool = False
) -> GroupAction:
    """Per group, the permutation pairing each reference neuron with the model neuron whose
    activations correlate most (activations ``[S, n]``, or ``[B, S, n]`` when ``batched``)."""
    perms = {}
    for name, a in reference.items():
        m = models[name] if batched else models[name][None]
        corr = (_standardized(a)[None].transpose(1, 2) @ _standardized(m)) / a.shape[-2]
        corr = corr.cpu().numpy()
        p = torch.stack([torch.from_numpy(linear_sum_assignment(c, maximize=True)[1]) for c in corr])
        perms[name] = p if batched else p[0]
    return GroupAction(perms)


def _standardized(a: Tensor) -> Tensor:
    a = a.to(torch.float64)
    a = a - a.mean(-2, keepdim=True)
    return a / (a.std(-2, keepdim=True) + 1e-8)


# ----------------------------------------------------------------------------- flat vectors


def apply_flat(layout: ParamLayout, spec: PermutationSpec, flat: Tensor, action: GroupAction) -> Tensor:
    """``action`` applied to weights ``[P]`` or ``[B, P]`` (permutations ``[n]`` for all rows or
    ``[B, n]`` one per row)."""
    rows = flat[None] if flat.dim() == 1 else flat
    out = spec.apply(layout.unflatten(rows), action, batch_dims=1)
    moved = torch.cat([out[e.name].reshape(len(rows), -1) for e in layout], 1)
    return moved[0] if flat.dim() == 1 else moved


@dataclass
class Aligner:
    """Aligns weights of one layout: by weights, or by activations on ``data`` (needs ``functional``).

    Args:
        layout: the weights' layout.
        spec: their permutation groups (checked against the architecture's when ``functional`` is given).
        method: ``"weight"`` or ``"activation"``.
        functional: the architecture, to compute activations (and the spec to check against).
        data: inputs ``[S, ...]`` for activation matching (e.g. a member's training data).
        seed: seeds weight matching's group order.
        max_iter: passes over the groups at most.
    """

    layout: ParamLayout
    spec: PermutationSpec
    method: str = "weight"
    functional: Functional | None = None
    data: Tensor | None = None
    seed: int = 0
    max_iter: int = 100

    def __post_init__(self) -> None:
        check_method(self.method)
        check_spec(self.layout, self.spec, self.functional.spec if self.functional is not None else None)
        if self.method == "activation" and (self.functional is None or self.data is None):
            raise MergeError("activation matching needs the architecture and data (the members' task data)")

    def _activations(self, flat: Tensor) -> dict[str, Tensor]:
        return self.functional.activations(flat, self.data)

    def find(self, reference: Tensor, models: Tensor, init: GroupAction | None = None) -> Alignment:
        """Permutations ``[B, n]`` bringing each of ``models [B, P]`` to ``reference [P]``."""
        if self.method == "weight":
            ref, ms = self.layout.unflatten(reference), self.layout.unflatten(models)
            return weight_matching(self.spec, ref, ms, batched=True, seed=self.seed, max_iter=self.max_iter, init=init)
        acts = [self._activations(m) for m in models]
        stacked = {g: torch.stack([a[g] for a in acts]) for g in acts[0]}
        return Alignment(activation_matching(self._activations(reference), stacked, batched=True), 1, True)

    def align(self, reference: Tensor, models: Tensor) -> tuple[Tensor, Alignment]:
        """``models [B, P]`` (or ``[P]``) permuted to match ``reference [P]``, and the alignment."""
        rows = models[None] if models.dim() == 1 else models
        found = self.find(reference, rows)
        aligned = apply_flat(self.layout, self.spec, rows, found.action)
        return (aligned[0] if models.dim() == 1 else aligned), found

    def merge_many(self, models: Tensor) -> tuple[Tensor, Alignment]:
        """MergeMany (Ainsworth et al. 2023, Alg. 3): each of ``models [K, P]`` in turn, in a seeded
        random order, aligned to the mean of the others (as aligned so far), until a whole round
        changes no permutation. Returns the aligned models and their permutations ``[K, n]``."""
        k = len(models)
        if k < 2:
            raise MergeError(f"MergeMany aligns two or more models, got {k}")
        perms = {g.name: torch.arange(g.size).expand(k, g.size).clone() for g in self.spec.groups}
        acts = [self._activations(m) for m in models] if self.method == "activation" else None
        rng = np.random.default_rng(self.seed)
        aligned = models.clone()
        rounds = 0
        for rounds in range(1, self.max_iter + 1):  # noqa: B007 - reported after the loop
            changed = False
            for i in rng.permutation(k):
                others = [j for j in range(k) if j != i]
                mine = GroupAction({n: p[i] for n, p in perms.items()})
                if acts is None:
                    target = aligned[others].mean(0)
                    new = self.find(target, models[i][None], GroupAction({n: p[None] for n, p in mine.perms.items()}))
                    new_perms = {n: p[0] for n, p in new.action.perms.items()}
                else:
                    target = {g: torch.stack([acts[j][g][:, perms[g][j]] for j in others]).mean(0) for g in perms}
                    new_perms = activation_matching(target, acts[i]).perms
                if any(not torch.equal(new_perms[n], mine.perms[n]) for n in perms):
                    changed = True
                    for n in perms:
                        perms[n][i] = new_perms[n]
                    aligned[i] = apply_flat(self.layout, self.spec, models[i], GroupAction(new_perms))
            if not changed:
                break
        return aligned, Alignment(GroupAction(perms), rounds, not changed)
