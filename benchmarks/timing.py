"""Timing and memory helpers shared by the benchmark scripts (run as ``python benchmarks/NAME.py``)."""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable


def timed(fn: Callable[[], object], repeats: int, *, warmup: bool = False) -> float:
    """Median wall time of ``repeats`` calls, after one untimed call if ``warmup``."""
    return timed_rounds({None: fn}, repeats, warmup=warmup)[None]


def timed_rounds(fns: dict, repeats: int, *, warmup: bool = True) -> dict:
    """Median wall time of each of ``fns`` (a dict of callables), timed in ``repeats`` interleaved
    rounds (one call of each per round, after one untimed call of each if ``warmup``), so drift in
    the machine's speed over the run (warm-up, other load) falls on every entry alike instead of on
    whichever runs first."""
    if warmup:
        for fn in fns.values():
            fn()
    times: dict = {name: [] for name in fns}
    for _ in range(repeats):
        for name, fn in fns.items():
            t = time.perf_counter()
            fn()
            times[name].append(time.perf_counter() - t)
    return {name: statistics.median(ts) for name, ts in times.items()}


def saved_bytes(fn: Callable[[], object]) -> int:
    """Bytes of the tensors autograd keeps for backward while ``fn`` runs (counted by storage)."""
    import torch

    seen: dict[int, int] = {}

    def pack(t: torch.Tensor) -> torch.Tensor:
        seen[t.untyped_storage().data_ptr()] = t.untyped_storage().nbytes()
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        fn()
    return sum(seen.values())


def training_step(net, inputs) -> Callable[[], None]:
    """One step of forward + backward + AdamW of ``net`` on ``inputs`` (loss: mean squared output),
    as a callable to time."""
    import torch

    opt = torch.optim.AdamW(net.parameters(), lr=1e-3)

    def step() -> None:
        loss = net(inputs).square().mean()
        opt.zero_grad()
        loss.backward()
        opt.step()

    return step


def steady_allocator() -> bool:
    """Make glibc's malloc keep freed memory in the process (no mmap per large block, no trimming),
    so a large tensor reuses pages instead of faulting fresh zeroed ones in on every allocation.
    By default blocks above the dynamic mmap threshold (at most 32 MiB) are mapped and unmapped on
    each use, and what the threshold is depends on the process's history. Returns False where the
    C library is not glibc (nothing changes)."""
    import ctypes
    import ctypes.util

    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        mallopt = libc.mallopt
    except (OSError, AttributeError):
        return False
    m_trim_threshold, m_mmap_max = -1, -4  # glibc's malloc.h
    return bool(mallopt(m_mmap_max, 0)) and bool(mallopt(m_trim_threshold, 2**31 - 1))
