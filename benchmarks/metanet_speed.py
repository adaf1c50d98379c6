"""Training throughput and memory of the GMN's code paths (and of DWSNet), on one batch.

    python benchmarks/metanet_speed.py [--quick] [--zoos DIR]

On 64 members of ``mnist1d-mlp`` (MLPs 40-32-32-10; the graph has 114 nodes and 2,624 edges)
with the benchmark sizes of ``benchmarks/metanets.py`` (GMN hidden 32, 4 layers): members per
second of one training step (forward, backward, AdamW), bytes per graph (the graph's tensors
plus what autograd keeps for backward), and the largest output difference from the baseline,
for every GMN code path, all measured in this run. Steps are timed in interleaved rounds (one
step of every variant per round, medians), so the machine's drift over the run, which moves the
first variant timed by up to a quarter, falls on all of them alike:

- ``sparse``: gathers and scatters over the edge list (``GMN(dense=False)``, the baseline);
- ``dense``: Linear layers as grid blocks, broadcasts and reductions (the default);
- ``dense+recompute``: the same, each layer rerun in backward (``recompute=True``);
- ``dense+compile``: each layer through ``torch.compile`` (``compile=True``);
- ``dense+compile+recompute``: compiled, each grid block's edge work fused a few graphs at a
  time and recomputed chunk by chunk in backward (``weightzoo.metanet.edgeblocks``).

Then the fastest variant within a third of the baseline's memory, and its speed-up against the
baseline timed first and alone as well (the old method): interleaved, the edge list's large
allocations seem to run slower after the other variants' steps, so that ratio is the stricter one.

Then DWSNet (hidden 16, depth 3, as benchmarked) and the operators that dominate its step.
Zoos are built on first use into ``--zoos`` (``--quick``: the ``tiny-`` spec). Last, one JSON line.
"""

from __future__ import annotations

import json

import torch
from timing import saved_bytes, steady_allocator, timed, timed_rounds, training_step
from zoos import built, zoo_arguments

from weightzoo.metanet.dws import DWSNet
from weightzoo.metanet.gmn import GMN
from weightzoo.paramgraph import build_graphs
from weightzoo.weightspace import WeightSpace
from weightzoo.zoo.opener import open_zoo

BATCH = 64
VARIANTS = {
    "sparse": {"dense": False},
    "sparse+recompute": {"dense": False, "recompute": True},
    "dense": {},
    "dense+recompute": {"recompute": True},
    "dense+compile": {"compile": True},
    "dense+compile+recompute": {"compile": True, "recompute": True},
}


def bytes_per_graph(net: torch.nn.Module, graphs) -> float:
    """The graphs' tensors plus the tensors autograd saves for backward (by storage), per graph."""
    inputs = sum(v.numel() * v.element_size() for _, v in graphs if torch.is_tensor(v))
    size = saved_bytes(lambda: net(graphs).square().mean().backward())
    net.zero_grad()
    return (inputs + size) / BATCH


def top_ops(net: torch.nn.Module, inputs, count: int = 6) -> list[tuple[str, float]]:
    """The operators taking the most self CPU time in one training step, as fractions."""
    from torch.profiler import profile

    with profile() as prof:
        net(inputs).square().mean().backward()
    events = sorted(prof.key_averages(), key=lambda e: e.self_cpu_time_total, reverse=True)
    total = sum(e.self_cpu_time_total for e in events)
    return [(e.key, e.self_cpu_time_total / total) for e in events[:count]]


def report(title: str, rates: dict[str, float], alone: float, sizes: dict, diffs: dict, prefix: str) -> dict:
    """Print one table of members/s (against the edge list), memory and output differences, with
    the fastest variant, the fastest within a third of the memory, and the edge list timed alone;
    return their JSON entries (keys ``gmn_{prefix}...``)."""
    print(f"\n{title}")
    print(f"{'variant':<26}{'members/s':>10}{'speed-up':>10}{'KiB/graph':>11}{'memory':>8}{'max |diff|':>12}")
    out, base_rate, base_size = {}, rates["sparse"], sizes["sparse"]
    for name, rate in rates.items():
        print(f"{name:<26}{rate:>10.1f}{rate / base_rate:>9.2f}x{sizes[name] / 1024:>11.1f}"
              f"{sizes[name] / base_size:>7.2f}x{diffs[name]:>12.2e}")  # fmt: skip
        key = name.replace("+", "_")
        out[f"gmn_{prefix}{key}_members_per_s"] = round(rate, 1)
    fastest = max(rates, key=rates.get)
    out[f"gmn_{prefix}members_per_s"] = round(rates[fastest], 1)
    out[f"gmn_{prefix}speedup"] = round(rates[fastest] / base_rate, 2)
    lean = [k for k in rates if sizes[k] <= base_size / 3]  # issue 14's targets hold at once
    both = max(lean, key=rates.get, default=None)  # a tiny --quick graph may have none
    out[f"gmn_{prefix}lean_variant"] = both
    out[f"gmn_{prefix}lean_speedup"] = both and round(rates[both] / base_rate, 2)
    out[f"gmn_{prefix}sparse_alone_members_per_s"] = round(alone, 1)
    out[f"gmn_{prefix}lean_speedup_vs_alone"] = both and round(rates[both] / alone, 2)
    print(f"fastest: {fastest} ({out[f'gmn_{prefix}speedup']}x); fastest within 1/3 of the memory: {both} "
          f"({out[f'gmn_{prefix}lean_speedup']}x)")  # fmt: skip
    lean_vs_alone = f"; {both} is {out[f'gmn_{prefix}lean_speedup_vs_alone']}x that" if both else ""
    print(f"sparse timed alone: {alone:.1f} members/s ({base_rate:.1f} interleaved){lean_vs_alone}")
    return out


def members_per_s(steps: dict, repeats: int) -> dict[str, float]:
    return {name: BATCH / seconds for name, seconds in timed_rounds(steps, repeats).items()}


def main() -> None:
    args = zoo_arguments(__doc__, "the tiny- zoo, 3 timings per variant instead of 7")
    repeats = 3 if args.quick else 7
    with open_zoo(built("tiny-mnist1d-mlp" if args.quick else "mnist1d-mlp", args.zoos)[0]) as zoo:
        flat = zoo.params([i % len(zoo) for i in range(BATCH)])  # a tiny zoo's members repeat
        layout = zoo.layout
    graphs = build_graphs(flat, [layout] * BATCH)
    print(f"GMN hidden 32, 4 layers; {BATCH} graphs of {graphs.num_nodes // BATCH} nodes, "
          f"{graphs.num_edges // BATCH:,} edges")  # fmt: skip
    nets, outputs = {}, {}
    for name, options in VARIANTS.items():
        torch.manual_seed(0)
        nets[name] = GMN(graphs.x.shape[1], graphs.edge_attr.shape[1], hidden=32, layers=4, **options)
        with torch.no_grad():
            outputs[name] = nets[name](graphs)
        if name == "sparse":  # also timed first and alone, before any other variant has run
            alone = BATCH / timed(training_step(nets[name], graphs), repeats, warmup=True)
    steps = {name: training_step(net, graphs) for name, net in nets.items()}
    rates = members_per_s(steps, repeats)
    sizes = {name: bytes_per_graph(net, graphs) for name, net in nets.items()}
    diffs = {name: (outputs[name] - outputs["sparse"]).abs().max().item() for name in nets}
    out = report("default allocator", rates, alone, sizes, diffs, prefix="")
    out |= {f"gmn_{name.replace('+', '_')}_bytes_per_graph": round(size) for name, size in sizes.items()}
    out["gmn_bytes_per_graph"] = round(min(sizes.values()))
    out["gmn_memory_ratio"] = round(min(sizes.values()) / sizes["sparse"], 3)
    lean = out["gmn_lean_variant"]
    out["gmn_lean_memory_ratio"] = lean and round(sizes[lean] / sizes["sparse"], 3)

    torch.manual_seed(0)
    dws = DWSNet(layout, hidden_channels=16, depth=3, out_features=1)
    space = WeightSpace.from_flat(flat, layout)
    out["dws_members_per_s"] = round(BATCH / timed(training_step(dws, space), repeats, warmup=True), 1)
    print(f"\nDWSNet hidden 16, depth 3: {out['dws_members_per_s']:.1f} members/s; where one step's time goes:")
    for op, share in top_ops(dws, space):
        print(f"  {op:<40}{share:>7.1%}")

    if steady_allocator():  # last: it cannot be undone
        alone = BATCH / timed(steps["sparse"], repeats, warmup=True)
        out |= report("steady allocator (freed memory kept, see timing.steady_allocator)",
                      members_per_s(steps, repeats), alone, sizes, diffs, prefix="steady_")  # fmt: skip
    print(json.dumps(out))


if __name__ == "__main__":
    main()
