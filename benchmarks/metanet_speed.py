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
- ``dense+compile+recompute``: compiled, the partitioner keeping a share of the activations.

Then the fastest variant within a third of the baseline's memory, and its speed-up against the
baseline timed first and alone as well (the old method): interleaved, the edge list's large
allocations seem to run slower after the other variants' steps, so that ratio is the stricter one.

Then DWSNet (hidden 16, depth 3, as benchmarked) and the operators that dominate its step.
Zoos are built on first use into ``--zoos`` (``--quick``: the ``tiny-`` spec). Last, one JSON line.
"""

from __future__ import annotations

import json

import torch
from timing import saved_bytes, timed, timed_rounds, training_step
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


def main() -> None:
    args = zoo_arguments(__doc__, "the tiny- zoo, 3 timings per variant instead of 7")
    repeats = 3 if args.quick else 7
    with open_zoo(built("tiny-mnist1d-mlp" if args.quick else "mnist1d-mlp", args.zoos)[0]) as zoo:
        flat = zoo.params([i % len(zoo) for i in range(BATCH)])  # a tiny zoo's members repeat
        layout = zoo.layout
    graphs = build_graphs(flat, [layout] * BATCH)
    print(f"GMN hidden 32, 4 layers; {BATCH} graphs of {graphs.num_nodes // BATCH} nodes, "
          f"{graphs.num_edges // BATCH:,} edges")  # fmt: skip
    print(f"{'variant':<26}{'members/s':>10}{'speed-up':>10}{'KiB/graph':>11}{'memory':>8}{'max |diff|':>12}")
    nets, outputs = {}, {}
    for name, options in VARIANTS.items():
        torch.manual_seed(0)
        nets[name] = GMN(graphs.x.shape[1], graphs.edge_attr.shape[1], hidden=32, layers=4, **options)
        with torch.no_grad():
            outputs[name] = nets[name](graphs)
        if name == "sparse":  # also timed first and alone, before any other variant has run
            alone = BATCH / timed(training_step(nets[name], graphs), repeats, warmup=True)
    seconds = timed_rounds({name: training_step(net, graphs) for name, net in nets.items()}, repeats)
    rows, out = {}, {}
    for name, net in nets.items():
        rate, size = BATCH / seconds[name], bytes_per_graph(net, graphs)
        rows[name] = (rate, size)
        base_rate, base_size = rows["sparse"]
        diff = (outputs[name] - outputs["sparse"]).abs().max().item()
        speed, memory = rate / base_rate, size / base_size
        print(f"{name:<26}{rate:>10.1f}{speed:>9.2f}x{size / 1024:>11.1f}{memory:>7.2f}x{diff:>12.2e}")
        key = name.replace("+", "_")
        out[f"gmn_{key}_members_per_s"], out[f"gmn_{key}_bytes_per_graph"] = round(rate, 1), round(size)
    fastest = max(rows, key=lambda k: rows[k][0])
    leanest = min(rows, key=lambda k: rows[k][1])
    out["gmn_members_per_s"], out["gmn_bytes_per_graph"] = round(rows[fastest][0], 1), round(rows[leanest][1])
    out["gmn_speedup"] = round(rows[fastest][0] / rows["sparse"][0], 2)
    out["gmn_memory_ratio"] = round(rows[leanest][1] / rows["sparse"][1], 3)
    print(f"fastest: {fastest} ({out['gmn_speedup']}x); leanest: {leanest} ({out['gmn_memory_ratio']}x memory)")
    lean = [k for k in rows if rows[k][1] <= rows["sparse"][1] / 3]  # issue 14's targets hold at once
    both = max(lean, key=lambda k: rows[k][0], default=None)  # a tiny --quick graph may have none
    out["gmn_lean_variant"] = both
    out["gmn_lean_speedup"] = both and round(rows[both][0] / rows["sparse"][0], 2)
    out["gmn_lean_memory_ratio"] = both and round(rows[both][1] / rows["sparse"][1], 3)
    print(f"fastest within 1/3 of the memory: {both} ({out['gmn_lean_speedup']}x, "
          f"{out['gmn_lean_memory_ratio']}x memory)")  # fmt: skip
    out["gmn_sparse_alone_members_per_s"] = round(alone, 1)
    out["gmn_lean_speedup_vs_alone"] = both and round(rows[both][0] / alone, 2)
    lean_vs_alone = f"; {both} is {out['gmn_lean_speedup_vs_alone']}x that" if both else ""
    print(f"sparse timed first and alone: {alone:.1f} members/s ({rows['sparse'][0]:.1f} interleaved){lean_vs_alone}")

    torch.manual_seed(0)
    dws = DWSNet(layout, hidden_channels=16, depth=3, out_features=1)
    space = WeightSpace.from_flat(flat, layout)
    out["dws_members_per_s"] = round(BATCH / timed(training_step(dws, space), repeats, warmup=True), 1)
    print(f"\nDWSNet hidden 16, depth 3: {out['dws_members_per_s']:.1f} members/s; where one step's time goes:")
    for op, share in top_ops(dws, space):
        print(f"  {op:<40}{share:>7.1%}")
    print(json.dumps(out))


if __name__ == "__main__":
    main()
