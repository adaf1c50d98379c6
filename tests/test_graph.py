"""Parameter graphs: which value sits on which node and edge, batching, mixed batches, networkx."""

import pytest
import torch
from torch import nn

from weightzoo.errors import LayoutError, SpecError
from weightzoo.layout import ParamLayout
from weightzoo.paramgraph import EdgeType, GraphBuilder, NodeType, build_graphs, to_networkx
from weightzoo.zoo import archs

KEYS = ("x", "edge_index", "edge_attr", "node_type", "node_layer", "node_pos", "edge_type", "edge_layer", "edge_pos")


def _net(arch, batch=2, seed=0):
    module, layout, spec = archs.describe(arch)
    flat = torch.randn(batch, layout.size, generator=torch.Generator().manual_seed(seed))
    return module, layout, spec, flat


def _edges(graph, layer, kind):
    """(src, dst, edge position, features) of the edges of one layer and type."""
    keep = (graph.edge_layer == layer) & (graph.edge_type == kind)
    return graph.edge_index[0, keep], graph.edge_index[1, keep], graph.edge_pos[keep], graph.edge_attr[keep]


def _nodes(graph, layer):
    return (graph.node_layer == layer).nonzero().squeeze(1)


class TinyAttention(nn.Module):
    """Linear -> ReLU -> self-attention (2 heads) -> Linear."""

    def __init__(self, batch_first: bool = True) -> None:
        super().__init__()
        self.embed = nn.Linear(3, 4)
        self.act = nn.ReLU()
        self.attn = nn.MultiheadAttention(4, 2, batch_first=batch_first)
        self.head = nn.Linear(4, 2)

    def forward(self, x):
        h = self.act(self.embed(x))
        return self.head(self.attn(h, h, h, need_weights=False)[0])


def test_mlp_edges_carry_weights_and_nodes_carry_biases():
    _, layout, spec, flat = _net(archs.mlp(3, [4, 5], 2))
    builder = GraphBuilder.from_layout(layout, spec)
    assert (builder.num_nodes, builder.num_edges, builder.node_dim, builder.edge_dim) == (14, 42, 1, 1)
    g = builder.build(flat)[1]
    params = layout.unflatten(flat[1])
    assert g.node_type.tolist() == [NodeType.INPUT] * 3 + [NodeType.HIDDEN] * 9 + [NodeType.OUTPUT] * 2
    assert g.node_pos.tolist() == [1, 2, 3] + [0] * 9 + [1, 2]
    assert g.node_layer.tolist() == [0] * 3 + [1] * 4 + [2] * 5 + [3] * 2
    for layer in range(3):
        W, b = params[f"{2 * layer}.weight"], params[f"{2 * layer}.bias"]
        src_nodes, dst_nodes = _nodes(g, layer), _nodes(g, layer + 1)
        torch.testing.assert_close(g.x[dst_nodes, 0], b)
        src, dst, pos, attr = _edges(g, layer, EdgeType.LINEAR)
        assert len(src) == W.numel() and (pos == 0).all()
        i, j = dst - dst_nodes[0], src - src_nodes[0]
        torch.testing.assert_close(attr[:, 0], W[i, j])
    assert (g.x[:3] == 0).all()  # input neurons have no bias


@pytest.mark.parametrize("dim", [1, 2])
def test_conv_edges_carry_kernels(dim):
    _, layout, spec, flat = _net(archs.cnn(2, [3, 4], 5, dim=dim, kernel=3))
    g = GraphBuilder.from_layout(layout, spec).build(flat)[0]
    params = layout.unflatten(flat[0])
    assert g.num_nodes == 2 + 3 + 4 + 5 and g.edge_attr.shape == (2 * 3 + 3 * 4 + 4 * 5, 3**dim)
    W = params["0.weight"]
    src, dst, _, attr = _edges(g, 0, EdgeType.CONV)
    torch.testing.assert_close(attr, W[dst - 2, src].flatten(1))
    torch.testing.assert_close(g.x[_nodes(g, 1), 0], params["0.bias"])
    # global average pooling: the head's edges are plain, zero-padded to the kernel width
    head = [k for k in layout.names if k.endswith("weight")][-1]
    src, dst, _, attr = _edges(g, 2, EdgeType.LINEAR)
    torch.testing.assert_close(attr[:, 0], params[head][dst - 9, src - 5])
    assert (attr[:, 1:] == 0).all()


def test_conv_positions_mode_has_one_edge_per_kernel_entry():
    _, layout, spec, flat = _net(archs.cnn(2, [3], 4, kernel=3))
    builder = GraphBuilder.from_layout(layout, spec, conv_mode="positions")
    assert (builder.num_edges, builder.edge_dim) == (2 * 3 * 9 + 3 * 4, 1)
    g = builder.build(flat)[0]
    W = layout.unflatten(flat[0])["0.weight"].flatten(2)
    src, dst, pos, attr = _edges(g, 0, EdgeType.CONV)
    assert sorted(set(pos.tolist())) == list(range(1, 10))
    torch.testing.assert_close(attr[:, 0], W[dst - 2, src, pos - 1])
    assert (_edges(g, 1, EdgeType.LINEAR)[2] == 0).all()


def test_linear_after_flatten_reads_spatial_vectors():
    _, layout, spec, flat = _net(archs.cnn(2, [3], 4, kernel=3, head="flatten", flat_features=3 * 16))
    g = GraphBuilder.from_layout(layout, spec).build(flat)[0]
    W = layout.unflatten(flat[0])["3.weight"]  # [4, 3 * 16]
    src, dst, _, attr = _edges(g, 1, EdgeType.FLATTEN)
    assert len(src) == 3 * 4 and attr.shape[1] == 16
    torch.testing.assert_close(attr, W.reshape(4, 3, 16)[dst - 5, src - 2])


@pytest.mark.parametrize("norm, names", [("batchnorm", ["weight", "bias", "running_mean", "running_var"]),
                                         ("layernorm", ["weight", "bias"])])  # fmt: skip
def test_norm_parameters_are_node_features(norm, names):
    _, layout, spec, flat = _net(archs.mlp(3, [4, 5], 2, norm=norm))
    builder = GraphBuilder.from_layout(layout, spec)
    assert builder.node_dim == 1 + len(names)
    g = builder.build(flat)[0]
    params = layout.unflatten(flat[0])
    for layer, module in ((1, "1"), (2, "4")):
        nodes = _nodes(g, layer)
        for col, name in enumerate(names, start=1):
            torch.testing.assert_close(g.x[nodes, col], params[f"{module}.{name}"])
    assert (g.x[_nodes(g, 3), 1:] == 0).all()


def test_residual_blocks_get_identity_edges():
    _, layout, spec, flat = _net(archs.residual_mlp(3, 4, 2, 2))
    builder = GraphBuilder.from_layout(layout, spec)
    assert (builder.num_nodes, builder.num_edges) == (3 + 4 * 3 + 2, 12 + 16 * 2 + 8 + 4 * 2)
    g = builder.build(flat)[0]
    for layer in (1, 2):
        src, dst, _, attr = _edges(g, layer, EdgeType.RESIDUAL)
        assert (src - _nodes(g, layer)[0]).tolist() == [0, 1, 2, 3]
        assert (dst - _nodes(g, layer + 1)[0]).tolist() == [0, 1, 2, 3]
        assert (attr == 1).all()
    # without a spec the layout reads as a plain chain: no skip edges
    chain = GraphBuilder.from_layout(layout).build(flat)[0]
    assert not (chain.edge_type == EdgeType.RESIDUAL).any() and chain.num_edges == g.num_edges - 8


@pytest.mark.parametrize(
    "arch",
    [
        archs.mlp(3, [4, 5], 2, norm="batchnorm"),
        archs.cnn(2, [3, 4], 5, batchnorm=True, head="flatten", flat_features=4 * 16),
        archs.cnn1d(2, (3, 3), 2),
        archs.residual_mlp(3, 4, 2, 2, norm="layernorm"),
        archs.mlp_wd(3, 4, 3, 2, residual=True),
    ],
    ids=["mlp-bn", "cnn-flatten-bn", "cnn1d", "residual-ln", "mlp_wd-residual"],
)
def test_from_module_matches_from_layout(arch):
    module, layout, spec, _ = _net(arch)
    a, b = GraphBuilder.from_layout(layout, spec), GraphBuilder.from_module(module)
    for key in ("node_values", "edge_values", "edge_index", "node_type", "node_layer", "node_pos", "edge_type"):
        assert torch.equal(getattr(a, key), getattr(b, key)), key


@pytest.mark.parametrize("batch_first", [True, False])
def test_attention_is_split_into_query_key_value(batch_first):
    module = TinyAttention(batch_first)
    layout = ParamLayout.from_module(module)
    builder = GraphBuilder.from_module(module)
    flat = layout.flatten(module.state_dict()).unsqueeze(0)
    g = builder.build(flat)[0]
    types = g.node_type.tolist()
    assert [types.count(t) for t in NodeType] == [3, 4 + 4, 2, 4, 4, 4, 2]
    assert builder.num_edges == 12 + 3 * 16 + 3 * 4 + 4 + 16 + 8
    ip, ib = module.attn.in_proj_weight.detach(), module.attn.in_proj_bias.detach()
    embed = _nodes(g, 1)
    for r, (node_kind, edge_kind) in enumerate(
        [(NodeType.ATTN_Q, EdgeType.ATTN_Q), (NodeType.ATTN_K, EdgeType.ATTN_K), (NodeType.ATTN_V, EdgeType.ATTN_V)]
    ):
        nodes = (g.node_type == node_kind).nonzero().squeeze(1)
        torch.testing.assert_close(g.x[nodes, 0], ib[4 * r : 4 * r + 4])
        src, dst, _, attr = _edges(g, 1, edge_kind)
        torch.testing.assert_close(attr[:, 0], ip[4 * r + dst - nodes[0], src - embed[0]])
        heads = _edges(g, 1, EdgeType.ATTN_HEAD)
        mine = torch.isin(heads[0], nodes)
        assert (heads[1][mine] - heads[1].min()).tolist() == [0, 0, 1, 1]
    values = (g.node_type == NodeType.ATTN_V).nonzero().squeeze(1)
    src, dst, _, attr = _edges(g, 2, EdgeType.ATTN_O)
    out = _nodes(g, 3)
    torch.testing.assert_close(attr[:, 0], module.attn.out_proj.weight.detach()[dst - out[0], src - values[0]])
    assert g.node_pos[out].eq(0).all() and g.node_pos[_nodes(g, 4)].tolist() == [1, 2]


def test_batch_equals_members_built_one_by_one():
    _, layout, spec, flat = _net(archs.cnn(2, [3], 4, batchnorm=True), batch=4)
    builder = GraphBuilder.from_layout(layout, spec)
    padded = torch.cat([flat, torch.zeros(4, 7)], dim=1).double()  # zoo rows padded to P_max
    batch = builder.build(padded)
    assert batch.num_graphs == 4 and batch.x.dtype == torch.float64
    assert batch.batch.tolist() == sum(([i] * builder.num_nodes for i in range(4)), [])
    assert batch.ptr.tolist() == [i * builder.num_nodes for i in range(5)]
    for i, graph in enumerate(batch.to_data_list()):
        alone = builder.build(flat[i : i + 1].double())[0]
        for key in KEYS:
            assert torch.equal(graph[key], alone[key]), key


def test_mixed_batch_keeps_member_order():
    kinds = [
        archs.describe(archs.mlp(3, [4], 2))[1:],
        archs.describe(archs.mlp(3, [5, 6], 2, norm="batchnorm"))[1:],
        archs.describe(archs.residual_mlp(3, 4, 2, 2))[1:],
        archs.describe(archs.cnn(3, [2], 2, kernel=3))[1:],
    ]
    order = [2, 0, 1, 1, 3, 0, 2]
    layouts, specs = [kinds[k][0] for k in order], [kinds[k][1] for k in order]
    P = max(lay.size for lay in layouts)
    flat = torch.randn(len(order), P)
    for i, lay in enumerate(layouts):
        flat[i, lay.size :] = 0
    cache: dict = {}
    batch = build_graphs(flat, layouts, specs, cache=cache)
    assert batch.num_graphs == len(order) and (batch.x.shape[1], batch.edge_attr.shape[1]) == (5, 9)
    for i, k in enumerate(order):
        builder = GraphBuilder.from_layout(*kinds[k], node_dim=5, edge_dim=9)
        alone = builder.build(flat[i : i + 1])[0]
        for key in KEYS:
            assert torch.equal(batch[i][key], alone[key]), (i, key)
    again = build_graphs(flat, layouts, specs, node_dim=6, edge_dim=9, cache=cache)
    assert again.x.shape[1] == 6 and len(cache) == 3 * len(kinds)  # native, (5, 9), (6, 9)


def test_to_networkx():
    _, layout, spec, flat = _net(archs.residual_mlp(3, 4, 1, 2))
    batch = GraphBuilder.from_layout(layout, spec).build(flat)
    graph = to_networkx(batch, index=1)
    assert graph.number_of_nodes() == 3 + 4 + 4 + 2 and graph.number_of_edges() == 12 + 16 + 8 + 4
    W = layout.unflatten(flat[1])["0.weight"]
    assert graph.nodes[0]["type"] == NodeType.INPUT and graph.nodes[0]["pos"] == 1
    (edge,) = [d for _, d in graph.get_edge_data(2, 3 + 1).items()]
    assert edge["type"] == EdgeType.LINEAR and edge["weight"] == pytest.approx(float(W[1, 2]))
    skips = [d for d in graph.get_edge_data(3 + 1, 7 + 1).values() if d["type"] == EdgeType.RESIDUAL]
    assert len(skips) == 1 and skips[0]["weight"] == 1.0
    with pytest.raises(ValueError, match="pass index="):
        to_networkx(batch)


def test_unsupported_networks_raise_layout_error():
    with pytest.raises(LayoutError, match=r"module '1' \(LSTM\) is not supported"):
        GraphBuilder.from_module(nn.Sequential(nn.Linear(3, 4), nn.LSTM(4, 4)))
    with pytest.raises(LayoutError, match="1.weight: reads 2 inputs but the layer before it has 4"):
        GraphBuilder.from_module(nn.Sequential(nn.Conv2d(3, 4, 3), nn.Conv2d(4, 4, 3, groups=2)))
    with pytest.raises(LayoutError, match="1.weight: shape .* does not act on the 4 neurons"):
        GraphBuilder.from_module(nn.Sequential(nn.Conv1d(3, 4, 3), nn.LayerNorm([4, 6]), nn.Flatten()))
    attention_layout = ParamLayout.from_module(TinyAttention())
    with pytest.raises(LayoutError, match="attn.in_proj_weight: role 'other' is not a normalization"):
        GraphBuilder.from_layout(attention_layout)
    _, layout, spec, _ = _net(archs.mlp(3, [4], 2, norm="batchnorm"))
    with pytest.raises(LayoutError, match="node_dim=2 is too small: this network's graph needs node_dim >= 5"):
        GraphBuilder.from_layout(layout, spec, node_dim=2)
    with pytest.raises(SpecError, match="conv_mode 'pixels'"):
        GraphBuilder.from_layout(layout, spec, conv_mode="pixels")
    with pytest.raises(LayoutError, match=r"expected flat parameters \[B, >= 42\]"):
        GraphBuilder.from_layout(layout, spec).build(torch.zeros(2, 30))
