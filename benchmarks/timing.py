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
