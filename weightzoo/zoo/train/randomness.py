"""Counter-based randomness: seed keys, integer hashing, training subsets, epoch order, dropout masks.

Every random choice of a member is drawn from its own seed, never from the other members of its group."""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
import torch
from torch import Tensor

from . import fused

_SUBSET, _ORDER, _DROPOUT = 1, 2, 3  # independent streams derived from a member's seed
_MULT1 = 0x7FEB352D
_MULT2 = 0x846CA68B - (1 << 32)  # the same bits as a signed int32


def hash32_(x: Tensor, scratch: Tensor) -> Tensor:
    """Chris Wellons' ``lowbias32`` integer hash of int32 ``x``, in place (two's-complement
    wrap-around); ``scratch`` is an int32 tensor of the same shape."""
    for shift, mask, mult in ((16, 0xFFFF, _MULT1), (15, 0x1FFFF, _MULT2), (16, 0xFFFF, None)):
        x.bitwise_xor_(torch.bitwise_right_shift(x, shift, out=scratch).bitwise_and_(mask))
        if mult is not None:
            x.mul_(mult)
    return x


def hash32(x: Tensor) -> Tensor:
    """``lowbias32`` of int32 ``x``, as a new tensor."""
    x = x.contiguous().clone()
    return hash32_(x, torch.empty_like(x))


def _int32(value: int) -> int:
    """The low 32 bits of ``value`` as a signed int32."""
    value &= 0xFFFFFFFF
    return value - (1 << 32) if value >= 1 << 31 else value


def seed_keys(seeds: Sequence[int], device: torch.device | str = "cpu") -> Tensor:
    """int32 ``[G]``: each member's 64-bit seed hashed into a 32-bit key."""
    lo = torch.tensor([_int32(s) for s in seeds], dtype=torch.int32, device=device)
    hi = torch.tensor([_int32(s >> 32) for s in seeds], dtype=torch.int32, device=device)
    return hash32(hash32(lo) + hi)


def mix(keys: Tensor, *values: int) -> Tensor:
    """Fold integers into int32 keys, one hash per value: a new independent stream per tuple."""
    for v in values:
        keys = hash32(keys + _int32(v))
    return keys


def permutation(key: int, size: int) -> Tensor:
    """``torch.randperm(size)`` drawn by a Generator seeded with ``key`` (CPU, int64)."""
    return torch.randperm(size, generator=torch.Generator().manual_seed(key & 0xFFFFFFFF))


def dropout_threshold(p: float) -> float:
    """The float32 threshold a member's hashed counters must exceed to keep a unit: hashes are
    uniform over int32, so ``P(kept) = 1 - p`` (up to float32 rounding); ``-inf`` for ``p = 0``."""
    return -math.inf if p == 0 else float(np.float32(round(p * 2**32) - 2**31))


def dropout_factors_(hashed: Tensor, out: Tensor, threshold: Tensor, scale: Tensor) -> Tensor:
    """Inverted-dropout factors into ``out``: ``scale`` where ``float32(hashed) > threshold``, else 0.

    ``hashed`` and the threshold are integer-valued floats, so their difference is 0 or at least 1
    in size and the clamp yields exactly 0 or ``scale``; ``threshold`` and ``scale`` broadcast.
    """
    out.copy_(hashed)
    return out.sub_(threshold).mul_(scale).clamp_(min=torch.zeros_like(scale), max=scale)


def step_keys(keys: Tensor, epoch: int, steps: int, layers: int) -> Tensor:
    """int32 ``[G, steps, layers]``: the dropout key of every (step, hidden layer) of an epoch."""
    epoch_keys = mix(keys, _DROPOUT, epoch)
    s = torch.arange(steps, dtype=torch.int32, device=keys.device)
    l_ = torch.arange(layers, dtype=torch.int32, device=keys.device)
    return hash32(hash32(epoch_keys[:, None] + s)[:, :, None] + l_)


# ------------------------------------------------------------------ data: subsets and order


def subset_size(fraction: float, n: int) -> int:
    """Samples in a member's training subset: ``fraction * n`` rounded, at least 1."""
    return max(1, min(n, round(fraction * n)))


def training_subsets(
    keys: Tensor, sizes: Sequence[int], n: int, pools: Sequence[Tensor | None] | None = None
) -> Tensor:
    """int64 ``[G, max(sizes)]``: each member's training indices, ascending, padded with 0: a random
    subset of its pool (the ascending indices of the samples it may use, e.g. those of its classes;
    None: all of ``range(n)``) unless it is all of it."""
    pools = list(pools) if pools is not None else [None] * len(sizes)
    if min(sizes) == n and all(p is None for p in pools):
        return torch.arange(n, device=keys.device).expand(len(sizes), n)
    rows = torch.zeros(len(sizes), max(sizes), dtype=torch.int64)
    for row, key, size, pool in zip(rows, mix(keys, _SUBSET).tolist(), sizes, pools):
        chosen = permutation(key, n if pool is None else len(pool))[:size].sort().values
        row[:size] = chosen if pool is None else pool[chosen]
    return rows.to(keys.device)


def epoch_order(keys: Tensor, subsets: Tensor, sizes: Sequence[int], epoch: int, steps: int, batch: int) -> Tensor:
    """int64 ``[steps, G, batch]``: each member's training indices for ``epoch`` in a fresh random
    order, cut into ``steps`` batches (each step's ``[G, batch]`` one contiguous block), padded with
    index 0 after the member's last sample.

    The order sorts a member's positions ``p < size`` by ``hash32(epoch key + p)`` (ties by ``p``) and
    maps them through its subset: a uniformly random permutation that depends only on the member's
    seed, the epoch and its subset, computed for the whole group at once (one C call on CPU, a
    batched sort elsewhere) instead of one ``randperm`` per member.
    """
    epoch_keys = mix(keys, _ORDER, epoch)
    sizes_t = torch.tensor(sizes, device=keys.device)
    full = subsets.stride(0) == 0  # every member trains on the whole set: positions are samples
    if keys.device.type == "cpu" and fused.available():
        return fused.epoch_order(epoch_keys, sizes_t, None if full else subsets, steps, batch)
    pos = torch.arange(steps * batch, device=keys.device, dtype=torch.int32)
    hashed = hash32(epoch_keys[:, None] + pos)
    outside = pos >= sizes_t[:, None]
    composite = (hashed.long() << 32 | pos).masked_fill_(outside, torch.iinfo(torch.int64).max)
    order = composite.sort(1).values & 0xFFFFFFFF  # positions in order, then the padding
    order.masked_fill_(outside, 0)  # sorted: the first `size` entries are the member's
    if not full:
        order = subsets.gather(1, order).masked_fill_(outside, 0)
    return order.view(len(sizes), steps, batch).transpose(0, 1).contiguous()
