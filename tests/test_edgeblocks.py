"""The fused grid-block edge update: values from its definition, gradients (gradcheck, several
chunks), and the GMN layer it replaces (outputs and every parameter's gradient)."""

import copy

import pytest
import torch
import torch.nn.functional as F
from test_gmn import BUILDERS

from weightzoo.metanet import edgeblocks
from weightzoo.metanet.edgeblocks import BlockKernels, FusedEdgeBlock, FusedNorm
from weightzoo.metanet.gmn import GMN, EdgeUpdateConv
from weightzoo.paramgraph import graph_grids

G, D, S, C = 3, 4, 5, 6


def _block_inputs(seed=0, dtype=torch.float64):
    gen = torch.Generator().manual_seed(seed)

    def r(*shape):
        return torch.randn(*shape, generator=gen, dtype=dtype, requires_grad=True)

    inputs = (r(G, D, S, C), r(G, 1, S, C), r(G, D, 1, C), r(G, 1, S, C), r(G, D, 1, C))
    weights = (r(C, C), r(3 * C, C), r(C), r(C), r(C))
    return inputs, weights


def _by_definition(e, src, dst, fwd, bwd, w_self, w_edges, b_out, ln_w, ln_b, extremes):
    """The block as the module docstring's formulas, in plain autograd ops."""
    h = F.silu(e @ w_self.T + src + dst)
    w_fwd, w_bwd, w_out = w_edges.split(C)
    y = F.layer_norm(e + h @ w_out.T + b_out, (C,), ln_w, ln_b, 1e-5)
    out = [y]
    for m, dim in ((h @ w_fwd.T + fwd, 2), (h @ w_bwd.T + bwd, 1)):
        out += [m.sum(dim), (m * m).sum(dim)]
        out += [f(m, dim) for want, f in zip(extremes, (torch.amax, torch.amin)) if want]
    return out


@pytest.mark.parametrize("extremes", [(True, True), (True, False), (False, False)])
def test_block_values_and_gradients_match_the_definition_across_chunks(monkeypatch, extremes):
    monkeypatch.setattr(edgeblocks, "CHUNK_EDGES", 2 * D * S)  # chunks of 2 graphs, then 1
    inputs, weights = _block_inputs()
    got = FusedEdgeBlock.apply(*inputs, *weights, 1e-5, extremes, BlockKernels())
    want = _by_definition(*inputs, *weights, extremes)
    assert len(got) == len(want) == 1 + 2 * (2 + sum(extremes))
    for a, b in zip(got, want):
        torch.testing.assert_close(a, b, rtol=1e-12, atol=1e-12)
    probe = [torch.randn_like(t) for t in want]  # a loss touching every output
    grads = torch.autograd.grad(sum((a * p).sum() for a, p in zip(got, probe)), [*inputs, *weights])
    expected = torch.autograd.grad(sum((b * p).sum() for b, p in zip(want, probe)), [*inputs, *weights])
    for a, b in zip(grads, expected):
        torch.testing.assert_close(a, b, rtol=1e-10, atol=1e-10)


def test_block_passes_gradcheck():
    inputs, weights = _block_inputs(seed=1)

    def block(*tensors):
        return FusedEdgeBlock.apply(*tensors, 1e-5, (True, True), BlockKernels())

    assert torch.autograd.gradcheck(block, (*inputs, *weights), eps=1e-6, atol=1e-5)


def test_block_keeps_its_inputs_the_norm_statistics_and_the_extremes_for_backward(monkeypatch):
    """Per edge, backward gets the inputs and two numbers (the LayerNorm's mean and inverse
    deviation), nothing of the hidden activations, whatever the chunking."""
    monkeypatch.setattr(edgeblocks, "CHUNK_EDGES", 2 * D * S)
    inputs, weights = _block_inputs()
    saved: dict[int, int] = {}

    def pack(t):
        saved[t.untyped_storage().data_ptr()] = t.numel()
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        FusedEdgeBlock.apply(*inputs, *weights, 1e-5, (True, False), BlockKernels())
    given = sum(t.numel() for t in (*inputs, *weights))
    extremes = G * D * C + G * S * C  # the incoming and the outgoing max
    assert sum(saved.values()) == given + 2 * G * D * S + extremes


def test_block_chunks_follow_chunk_edges(monkeypatch):
    monkeypatch.setattr(edgeblocks, "CHUNK_EDGES", 45)
    assert edgeblocks._chunks(5, 20) == [slice(0, 2), slice(2, 4), slice(4, 5)]
    assert edgeblocks._chunks(2, 100) == [slice(0, 1), slice(1, 2)]  # at least one graph a chunk


@pytest.mark.parametrize("name", ["mlp", "cnn2d-gap", "residual"])
def test_fused_layer_equals_the_layer_with_its_residual_and_norm(monkeypatch, name):
    """``EdgeUpdateConv`` with ``FusedNorm`` returns ``norm(e + e')`` of the unfused layer, with the
    same gradients for every parameter and input, on graphs with grids and left-over edges."""
    monkeypatch.setattr(edgeblocks, "CHUNK_EDGES", 64)
    builder, flat = BUILDERS[name]
    graphs = builder.build(flat)
    grids = graph_grids(graphs)
    torch.manual_seed(0)
    conv = EdgeUpdateConv(8, aggregators=("mean", "max", "min", "sum", "std")).double()
    norm = torch.nn.LayerNorm(8).double()
    fused_conv, fused_norm = copy.deepcopy(conv), copy.deepcopy(norm)
    x = torch.randn(graphs.num_nodes, 8, dtype=torch.float64)
    parts = [p.requires_grad_() for p in grids.split(torch.randn(graphs.num_edges, 8, dtype=torch.float64))]
    dx, de = conv(x, graphs.edge_index, parts, grids)
    plain = [dx, *(norm(a + b) for a, b in zip(parts, de))]
    fused_parts = [p.detach().clone().requires_grad_() for p in parts]
    fdx, fde = fused_conv(x, graphs.edge_index, fused_parts, grids, FusedNorm(fused_norm, BlockKernels()))
    fused = [fdx, *fde]
    for a, b in zip(fused, plain):
        torch.testing.assert_close(a, b, rtol=1e-10, atol=1e-10)
    probe = [torch.randn_like(t) for t in plain]
    sum((t * p).sum() for t, p in zip(plain, probe)).backward()
    sum((t * p).sum() for t, p in zip(fused, probe)).backward()
    for a, b in [*zip(fused_conv.parameters(), conv.parameters()), *zip(fused_norm.parameters(), norm.parameters())]:
        torch.testing.assert_close(a.grad, b.grad, rtol=1e-9, atol=1e-10)
    for a, b in zip(fused_parts, parts):
        torch.testing.assert_close(a.grad, b.grad, rtol=1e-9, atol=1e-10)


def test_gmn_fuses_only_when_compiled_recomputing_and_without_edge_dropout():
    builder, _ = BUILDERS["mlp"]
    net = GMN(builder.node_dim, builder.edge_dim, hidden=8, layers=2, recompute=True, dropout=0.1)
    assert not net._fuses()  # not compiled
    net.__dict__["_kernels"] = BlockKernels()  # what compile_layers adds (without compiling here)
    net.eval()
    assert net._fuses()
    with torch.no_grad():
        assert not net._fuses()  # no backward to save memory for
    net.train()
    assert not net._fuses()  # edge dropout: the fused block has none, layers are checkpointed
    assert "_kernels" not in copy.deepcopy(net).__dict__
