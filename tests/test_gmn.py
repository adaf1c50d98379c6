"""GMN: invariant/equivariant to hidden-neuron permutations of the input network, not to input
ones; mixed batches; bad input. Symmetry checks run in float64 so a 1e-5 tolerance is meaningful.
"""

import copy

import pytest
import torch
from test_graph import TinyAttention
from torch_geometric.utils import scatter

from weightzoo.errors import SpecError
from weightzoo.layout import ParamLayout
from weightzoo.metanet.gmn import GMN, EdgeUpdateConv
from weightzoo.paramgraph import GraphBuilder, build_graphs, graph_grids
from weightzoo.zoo import archs

TOL = 1e-5
ARCHS = {
    "mlp": (archs.mlp(3, [5, 4], 2), "vector"),
    "cnn2d-gap": (archs.cnn(2, [3, 4], 2, kernel=3), "vector"),
    "cnn2d-flatten": (archs.cnn(2, [3], 2, kernel=3, head="flatten", flat_features=3 * 16), "vector"),
    "cnn2d-positions": (archs.cnn(2, [3, 3], 2, kernel=2, batchnorm=True), "positions"),
    "cnn1d": (archs.cnn1d(2, (3, 3), 2), "vector"),
    "mlp-batchnorm": (archs.mlp(3, [5, 4], 2, norm="batchnorm"), "vector"),
    "mlp-layernorm": (archs.mlp(3, [5, 4], 2, norm="layernorm"), "vector"),
    "residual": (archs.residual_mlp(3, 4, 2, 2, norm="layernorm"), "vector"),
}


def _setup(name, batch=2, seed=0):
    """Builder, layout, spec and random float64 parameters of one architecture."""
    arch, conv_mode = ARCHS[name]
    _, layout, spec = archs.describe(arch)
    flat = torch.randn(batch, layout.size, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)
    return GraphBuilder.from_layout(layout, spec, conv_mode=conv_mode), layout, spec, flat


def _spec_move(layout, spec, seed):
    """A random hidden-neuron permutation from ``spec``, acting on flat parameters ``[B, P]``."""
    action = spec.random_action(torch.Generator().manual_seed(seed), sign=False, scale=None)

    def move(flat):
        moved = spec.apply(layout.unflatten(flat), action, batch_dims=1)
        return torch.cat([moved[e.name].reshape(flat.shape[0], -1) for e in layout], dim=1)

    return move


def _attention_move(layout):
    """Permute the embedding neurons, query/key rows jointly within heads, value rows with
    out_proj columns within heads, and out_proj rows with the head's columns."""
    pe, pqk, pv, po = (torch.tensor(p) for p in ([2, 0, 3, 1], [1, 0, 3, 2], [0, 1, 3, 2], [3, 1, 0, 2]))
    rows = torch.cat([pqk, 4 + pqk, 8 + pv])

    def move(flat):
        p = dict(layout.unflatten(flat))
        p["embed.weight"], p["embed.bias"] = p["embed.weight"][:, pe], p["embed.bias"][:, pe]
        p["attn.in_proj_weight"] = p["attn.in_proj_weight"][:, rows][:, :, pe]
        p["attn.in_proj_bias"] = p["attn.in_proj_bias"][:, rows]
        p["attn.out_proj.weight"] = p["attn.out_proj.weight"][:, po][:, :, pv]
        p["attn.out_proj.bias"] = p["attn.out_proj.bias"][:, po]
        p["head.weight"] = p["head.weight"][:, :, po]
        return torch.cat([p[e.name].reshape(flat.shape[0], -1) for e in layout], dim=1)

    return move


def _correspondence(builder, move):
    """Node and edge maps: node ``n`` (edge ``k``) of a moved network's graph is node
    ``nodes[n]`` (edge ``edges[k]``) of the original's. Found by tagging every parameter with
    a distinct number and matching biases; the graphs must then agree everywhere."""
    tags = torch.arange(1, builder.layout.size + 1, dtype=torch.float64).unsqueeze(0)
    g0, g1 = builder.build(tags), builder.build(move(tags))
    where = {float(t): n for n, t in enumerate(g0.x[:, 0]) if t > 0}
    nodes = torch.tensor([where[float(t)] if t > 0 else n for n, t in enumerate(g1.x[:, 0])])
    key = torch.stack([g0.edge_index[0], g0.edge_index[1], g0.edge_type, g0.edge_pos]).t().tolist()
    find = {tuple(k): i for i, k in enumerate(key)}
    moved = torch.stack([nodes[g1.edge_index[0]], nodes[g1.edge_index[1]], g1.edge_type, g1.edge_pos]).t().tolist()
    edges = torch.tensor([find[tuple(k)] for k in moved])
    torch.testing.assert_close(g1.x, g0.x[nodes], atol=0, rtol=0)
    torch.testing.assert_close(g1.edge_attr, g0.edge_attr[edges], atol=0, rtol=0)
    return nodes, edges


def _gmn(builder, readout="invariant", seed=0):
    torch.manual_seed(seed)
    return GMN(builder.node_dim, builder.edge_dim, hidden=16, layers=2, out_features=3, readout=readout).double()


def _check_symmetry(builder, flat, move):
    """Invariant readout unchanged; node and edge readouts permuted like the graph."""
    nodes, edges = _correspondence(builder, move)
    moved = move(flat)
    readouts = (("invariant", None, 1), ("node", nodes, builder.num_nodes), ("edge", edges, builder.num_edges))
    for readout, perm, size in readouts:
        net = _gmn(builder, readout).eval()
        out, out_moved = net(builder.build(flat)), net(builder.build(moved))
        if perm is not None:  # batch-wide index: graph b's item n moves to b * size + perm[n]
            full = (torch.arange(flat.shape[0])[:, None] * size + perm).reshape(-1)
            out = out[full]
        torch.testing.assert_close(out_moved, out, atol=TOL, rtol=0)


@pytest.mark.parametrize("name", list(ARCHS))
def test_invariant_and_equivariant_to_hidden_permutations(name):
    builder, layout, spec, flat = _setup(name)
    for seed in range(2):
        _check_symmetry(builder, flat, _spec_move(layout, spec, seed))


def _input_move(layout):
    """Rotate the input neurons/channels: columns of the first weight."""
    first = layout.dense_layers()[0][0]

    def move(flat):
        p = dict(layout.unflatten(flat))
        p[first.name] = p[first.name][:, :, [*range(1, first.shape[1]), 0]]
        return torch.cat([p[e.name].reshape(flat.shape[0], -1) for e in layout], dim=1)

    return move


def _check_input_sensitivity(builder, layout, flat):
    """Rotating input neurons changes the invariant output, and node outputs are not merely
    rotated along (input nodes are told apart by their position)."""
    moved = _input_move(layout)(flat)
    net = _gmn(builder).eval()
    assert (net(builder.build(moved)) - net(builder.build(flat))).abs().max() > 1e-3
    n_in = layout.dense_layers()[0][0].shape[1]
    rotated = torch.arange(builder.num_nodes)
    rotated[:n_in] = rotated[:n_in].roll(-1)
    full = (torch.arange(flat.shape[0])[:, None] * builder.num_nodes + rotated).reshape(-1)
    net = _gmn(builder, "node").eval()
    assert (net(builder.build(moved)) - net(builder.build(flat))[full]).abs().max() > 1e-2


@pytest.mark.parametrize("name", list(ARCHS))
def test_not_invariant_to_input_permutation(name):
    builder, layout, _, flat = _setup(name)
    _check_input_sensitivity(builder, layout, flat)


def test_attention_symmetries():
    module = TinyAttention().double().eval()
    layout = ParamLayout.from_module(module)
    builder = GraphBuilder.from_module(module)
    flat = torch.stack([layout.flatten(module.state_dict()).double(), torch.randn(layout.size, dtype=torch.float64)])
    move = _attention_move(layout)
    # the hand-made permutation is a symmetry of the attention network itself
    other = copy.deepcopy(module)
    other.load_state_dict(layout.unflatten(move(flat[:1])[0]))
    x = torch.randn(2, 5, 3, dtype=torch.float64)
    torch.testing.assert_close(other(x), module(x), atol=1e-10, rtol=0)
    _check_symmetry(builder, flat, move)
    _check_input_sensitivity(builder, layout, flat)


def test_mixed_batch_equals_members_alone():
    names = ["mlp", "residual", "cnn2d-gap", "mlp-batchnorm", "mlp"]
    setups = [_setup(n, batch=1, seed=i) for i, n in enumerate(names)]
    P = max(layout.size for _, layout, _, _ in setups)
    flat = torch.zeros(len(names), P, dtype=torch.float64)
    for i, (_, layout, _, f) in enumerate(setups):
        flat[i, : layout.size] = f[0]
    batch = build_graphs(flat, [s[1] for s in setups], [s[2] for s in setups])
    node_dim, edge_dim = batch.x.shape[1], batch.edge_attr.shape[1]
    for readout in ("invariant", "node"):
        torch.manual_seed(0)
        net = GMN(node_dim, edge_dim, hidden=16, layers=2, readout=readout).double().eval()
        together = net(batch)
        alone = [net(b.padded(node_dim, edge_dim).build(f)) for b, _, _, f in setups]
        torch.testing.assert_close(together, torch.cat(alone), atol=1e-10, rtol=0)


def test_gradients_reset_and_repr():
    builder, _, _, flat = _setup("cnn2d-gap", batch=3)
    net = GMN(builder.node_dim, builder.edge_dim, hidden=8, layers=2, dropout=0.1)
    net(builder.build(flat.float())).pow(2).mean().backward()
    assert all(p.grad is not None for p in net.parameters())
    assert net.convs[0].message_nodes.weight.grad[8:].abs().sum() > 0  # backward messages are used
    before = [p.clone() for p in net.parameters()]
    net.reset_parameters()
    assert any(not torch.equal(a, b) for a, b in zip(before, net.parameters()))
    assert repr(net.convs[0]) == "EdgeUpdateConv(8, aggregators=['mean', 'max', 'sum', 'std'])"
    assert "readout='invariant'" in repr(net)


def test_bad_input_raises_spec_error():
    builder, _, _, flat = _setup("mlp-batchnorm")
    graphs = builder.build(flat.float())
    with pytest.raises(SpecError, match="GMN takes node features of width 3, the graphs have 5; build them with"):
        GMN(3, builder.edge_dim)(graphs)
    with pytest.raises(SpecError, match="GMN takes edge features of width 2"):
        GMN(builder.node_dim, 2)(graphs)
    with pytest.raises(SpecError, match="node_layer up to 3, but max_layers=3"):
        GMN(builder.node_dim, builder.edge_dim, max_layers=3)(graphs)
    with pytest.raises(SpecError, match="readout 'graph'"):
        GMN(1, 1, readout="graph")
    with pytest.raises(SpecError, match="bad aggregators"):
        EdgeUpdateConv(4, aggregators=("mean", "nope"))


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_runs_on_cuda():
    layouts = [_setup(n)[1] for n in ("mlp", "cnn2d-gap")]
    specs = [_setup(n)[2] for n in ("mlp", "cnn2d-gap")]
    flat = torch.randn(2, max(lay.size for lay in layouts), device="cuda")
    batch = build_graphs(flat, layouts, specs)
    net = GMN(batch.x.shape[1], batch.edge_attr.shape[1], hidden=8, layers=2).cuda()
    out = net(batch)
    assert out.device.type == "cuda" and out.shape == (2, 1)
    torch.testing.assert_close(out[1:], net(build_graphs(flat[1:], layouts[1:], specs[1:], node_dim=1, edge_dim=9)))


def _saved_bytes(net, graphs) -> int:
    """Bytes of the tensors autograd keeps for backward (by storage)."""
    seen: dict[int, int] = {}

    def pack(t):
        seen[t.untyped_storage().data_ptr()] = t.untyped_storage().nbytes()
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        net(graphs).pow(2).sum().backward()
    return sum(seen.values())


def test_recompute_gives_the_same_outputs_and_gradients_with_less_memory():
    builder, _, _, flat = _setup("mlp", batch=8)
    graphs = builder.build(flat.float())
    torch.manual_seed(0)
    plain = GMN(builder.node_dim, builder.edge_dim, hidden=16, layers=3)
    lean = copy.deepcopy(plain)
    lean.recompute = True
    out_plain, out_lean = plain(graphs), lean(graphs)
    torch.testing.assert_close(out_lean, out_plain, rtol=0, atol=0)
    out_plain.pow(2).sum().backward()
    out_lean.pow(2).sum().backward()
    for a, b in zip(plain.parameters(), lean.parameters()):
        torch.testing.assert_close(b.grad, a.grad, rtol=1e-6, atol=1e-7)
    plain.zero_grad()
    lean.zero_grad()
    assert _saved_bytes(lean, graphs) < 0.5 * _saved_bytes(plain, graphs)


def _builders():
    """Every test architecture's builder (and the attention module's), with float64 parameters."""
    out = {name: (_setup(name, batch=3)[0], _setup(name, batch=3)[3]) for name in ARCHS}
    module = TinyAttention().double()
    layout = ParamLayout.from_module(module)
    out["attention"] = (GraphBuilder.from_module(module), torch.randn(3, layout.size, dtype=torch.float64))
    return out


BUILDERS = _builders()


@pytest.mark.parametrize("name", list(BUILDERS))
@pytest.mark.parametrize("readout", ["invariant", "node", "edge"])
def test_dense_grid_path_equals_the_sparse_path(name, readout):
    """Grid blocks (broadcasts and reductions) give the outputs and gradients of gathers and scatters,
    also with min among the aggregators and with edges outside every grid (skip, head, positions)."""
    builder, flat = BUILDERS[name]
    graphs = builder.build(flat)
    assert graph_grids(graphs) is not None
    torch.manual_seed(0)
    aggregators = ("mean", "max", "min", "sum", "std")
    dense = GMN(builder.node_dim, builder.edge_dim, hidden=8, layers=2, out_features=2, readout=readout,
                aggregators=aggregators).double()  # fmt: skip
    sparse = copy.deepcopy(dense)
    sparse.dense = False
    out_dense, out_sparse = dense(graphs), sparse(graphs)
    torch.testing.assert_close(out_dense, out_sparse, atol=1e-10, rtol=1e-9)
    weights = torch.randn_like(out_dense)
    (out_dense * weights).sum().backward()
    (out_sparse * weights).sum().backward()
    for a, b in zip(dense.parameters(), sparse.parameters()):
        torch.testing.assert_close(a.grad, b.grad, atol=1e-9, rtol=1e-7)


def test_graph_grids_describe_full_layers_and_round_trip():
    builder, flat = BUILDERS["residual"]
    graphs = builder.build(flat)
    grids = graph_grids(graphs)
    assert grids.num_graphs == 3 and grids.rest.numel() > 0  # the skip edges are in no grid
    src, dst = builder.edge_index
    for g in grids.grids:  # target-major: edge start + i * num_src + j runs src_start + j -> dst_start + i
        i = torch.arange(g.num_dst).repeat_interleave(g.num_src)
        j = torch.arange(g.num_src).repeat(g.num_dst)
        assert torch.equal(src[g.edges], g.src_start + j) and torch.equal(dst[g.edges], g.dst_start + i)
    assert torch.equal(grids.in_degree, torch.bincount(dst, minlength=builder.num_nodes).float())
    edges = torch.randn(graphs.num_edges, 4, dtype=torch.float64)
    parts = grids.split(edges)
    assert torch.equal(grids.merge(parts), edges)
    edge_batch = graphs.batch[graphs.edge_index[0]]
    mean, top = grids.pool(parts)
    torch.testing.assert_close(mean, scatter(edges, edge_batch, 0, reduce="mean"))
    assert torch.equal(top, scatter(edges, edge_batch, 0, reduce="max"))


def test_batches_without_grids_take_the_sparse_path():
    setups = [_setup(n, batch=1) for n in ("mlp", "cnn2d-gap")]
    flat = torch.zeros(2, max(s[1].size for s in setups), dtype=torch.float64)
    for i, (_, layout, _, f) in enumerate(setups):
        flat[i, : layout.size] = f[0]
    mixed = build_graphs(flat, [s[1] for s in setups], [s[2] for s in setups])
    assert graph_grids(mixed) is None
    alone = setups[0][0].build(setups[0][3])
    assert graph_grids(alone) is not None
    assert graph_grids(alone.index_select([0])) is None  # a batch made some other way carries none


@pytest.mark.slow
@pytest.mark.parametrize("recompute", [False, True])
def test_compiled_grid_path_equals_eager(recompute):
    """Compiled layers give the eager outputs and gradients; with recompute, through fused edge
    blocks (compiled kernels), keeping less for backward."""
    builder, flat = BUILDERS["mlp"]
    graphs = builder.build(flat.float())
    torch.manual_seed(0)
    eager = GMN(builder.node_dim, builder.edge_dim, hidden=8, layers=2)
    compiled = copy.deepcopy(eager)
    compiled.compile_layers()
    compiled.recompute = recompute
    torch.testing.assert_close(compiled(graphs), eager(graphs), atol=1e-5, rtol=1e-5)
    compiled(graphs).sum().backward()
    eager(graphs).sum().backward()
    for a, b in zip(compiled.parameters(), eager.parameters()):
        torch.testing.assert_close(a.grad, b.grad, atol=1e-4, rtol=1e-4)
    assert compiled._fuses() == recompute
    assert not {"_compiled_layer", "_kernels"} & set(copy.deepcopy(compiled).__dict__)  # copies run eagerly
    if recompute:  # on wider layers and a larger batch, where per-edge activations dominate
        _, layout, spec = archs.describe(archs.mlp(8, [24, 24], 4))
        builder = GraphBuilder.from_layout(layout, spec, conv_mode="vector")
        graphs = builder.build(torch.randn(16, layout.size))
        plain = GMN(builder.node_dim, builder.edge_dim, hidden=16, layers=3)
        lean = copy.deepcopy(plain)
        plain.compile_layers()
        lean.compile_layers()
        lean.recompute = True
        assert _saved_bytes(lean, graphs) < 0.5 * _saved_bytes(plain, graphs)
