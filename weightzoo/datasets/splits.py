"""Deterministic train/val/test splits of zoo members, optionally keeping groups together."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from ..errors import SpecError

SPLIT_NAMES = ("train", "val", "test")


def split_indices(
    n: int,
    fractions: Sequence[float] = (0.8, 0.1, 0.1),
    *,
    seed: int = 0,
    groups: Sequence | np.ndarray | None = None,
) -> dict[str, np.ndarray]:
    """Split ``range(n)`` into ``train``/``val``/``test`` index arrays (sorted).

    With ``groups`` (one key per member: source image, hyperparameter configuration, ...)
    all members sharing a key land in the same split; groups are shuffled by ``seed`` and
    assigned so each split's member count comes as close as possible to its fraction.
    """
    fr = np.asarray(fractions, dtype=np.float64)
    if fr.shape != (3,) or np.any(fr < 0) or not np.isclose(fr.sum(), 1.0):
        raise SpecError(f"split fractions must be three non-negative numbers summing to 1, got {list(fractions)}")
    rng = np.random.default_rng(seed)
    if groups is None:
        order = rng.permutation(n)
        cuts = np.round(np.cumsum(fr)[:2] * n).astype(int)
        parts = np.split(order, cuts)
    else:
        keys = np.asarray([str(g) for g in groups], dtype=object)
        if len(keys) != n:
            raise SpecError(f"split groups: expected {n} keys, got {len(keys)}")
        uniq, inverse, counts = np.unique(keys.astype(str), return_inverse=True, return_counts=True)
        shuffled = rng.permutation(len(uniq))
        group_split = np.empty(len(uniq), dtype=np.int64)
        group_split[shuffled] = _assign_groups(counts[shuffled], fr, n)
        parts = [np.flatnonzero(group_split[inverse] == s) for s in range(3)]
    return {name: np.sort(p) for name, p in zip(SPLIT_NAMES, parts)}


def _assign_groups(counts: np.ndarray, fractions: np.ndarray, n: int) -> np.ndarray:
    """Walk groups in order, filling train, then val, then test up to their target sizes."""
    targets = np.cumsum(fractions) * n
    out = np.empty(len(counts), dtype=np.int64)
    filled, split = 0, 0
    for i, c in enumerate(counts):
        # move on once this split is full, or when adding the group overshoots by more than half of it
        while split < 2 and filled + c / 2 > targets[split]:
            split += 1
        out[i] = split
        filled += c
    return out


def member_splits(zoo, fractions: Sequence[float], seed: int, group_by: str | Sequence[str] | None) -> dict:
    """``split_indices`` over a zoo's members, grouping by the values of ``group_by`` columns."""
    groups = None
    if group_by:
        cols = [group_by] if isinstance(group_by, str) else list(group_by)
        groups = group_keys([zoo.column(c) for c in cols])
    return split_indices(len(zoo), fractions, seed=seed, groups=groups)


def select_members(zoo, split: str | None, fractions: Sequence[float], seed: int, group_by) -> np.ndarray:
    """Member indices of ``split`` (None or ``"all"``: every member)."""
    if split is None or split == "all":
        return np.arange(len(zoo))
    if split not in SPLIT_NAMES:
        raise SpecError(f"split {split!r} is not one of {SPLIT_NAMES} (or None/'all' for all members)")
    return member_splits(zoo, fractions, seed, group_by)[split]


def group_keys(columns: Sequence[np.ndarray]) -> np.ndarray:
    """One string key per member from one or more hyperparameter columns."""
    return np.array(["|".join(str(v) for v in row) for row in zip(*columns)], dtype=object)
