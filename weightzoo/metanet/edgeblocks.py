"""A GMN layer's per-edge work on one grid block, fused and chunked, recomputed in backward.

On a grid block ``[G, num_dst, num_src, C]`` an :class:`~weightzoo.metanet.gmn.EdgeUpdateConv`
layer with its residual and edge LayerNorm is, per edge,

    pre = e W_self^T + src + dst          h = silu(pre)
    m = h W_msg^T  (forward and backward message parts, 2C)
    y = LayerNorm(e + h W_out^T + b_out)

plus the sums, sums of squares and extremes of ``m`` (with the node parts added) over the
block's source axis (incoming) and target axis (outgoing). Every one of these tensors is as
large as the block, and on CPU running them over a whole batch at once is bound by memory
traffic (a ``[64 * 1280, 32] x [32, 32]`` GEMM runs at about half the rate of an ``[8192, 32]``
one here). :class:`FusedEdgeBlock` runs them a few graphs at a time, so a chunk's intermediates stay
in cache, keeps nothing for backward but its inputs, the extremes and the LayerNorm's mean and
inverse deviation per edge (8 bytes an edge, which spares backward a pass to recompute them), and
in backward recomputes a chunk and takes its gradients at once, again in cache. ``kernels`` may be
compiled (``torch.compile``); the chunk size is :data:`CHUNK_EDGES` edges.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch
from torch import Tensor
from torch.autograd.function import once_differentiable
from torch.nn import functional as F

CHUNK_EDGES = 8192  # edges per chunk: a [CHUNK_EDGES, 32] float tensor is 1 MiB, an L2 cache


def block_forward(
    e: Tensor, src: Tensor, dst: Tensor, fwd: Tensor, bwd: Tensor, w_self: Tensor, w_edges: Tensor,
    b_out: Tensor, ln_w: Tensor, ln_b: Tensor, eps: float, extremes: tuple[bool, bool],
) -> tuple[Tensor, ...]:  # fmt: skip
    """One chunk: the updated edges ``y``, the LayerNorm's mean and inverse deviation ``[..., 1]``,
    then incoming and outgoing statistics (sum, sum of squares, and max / min where ``extremes``
    asks), each direction's in that order."""
    _, h, fwd_m, bwd_m, x = _edge_terms(e, src, dst, fwd, bwd, w_self, w_edges, b_out)
    variance, mean = torch.var_mean(x, dim=-1, keepdim=True, correction=0)
    rstd = torch.rsqrt(variance + eps)
    y = (x - mean) * rstd * ln_w + ln_b
    return y, mean, rstd, *message_stats(fwd_m, 2, extremes), *message_stats(bwd_m, 1, extremes)


def block_backward(
    e: Tensor, src: Tensor, dst: Tensor, fwd: Tensor, bwd: Tensor, w_self: Tensor, w_edges: Tensor,
    b_out: Tensor, ln_w: Tensor, ln_b: Tensor, mean: Tensor, rstd: Tensor, extremes: tuple[bool, bool],
    fwd_extremes: list[Tensor], bwd_extremes: list[Tensor], dy: Tensor, fwd_grads: list[Tensor],
    bwd_grads: list[Tensor],
) -> tuple[Tensor, ...]:  # fmt: skip
    """One chunk's forward again (but the LayerNorm's saved ``mean`` and ``rstd``), then the
    gradients of its inputs (``e, src, dst, fwd, bwd``, shaped like them) and of the weights
    (``w_self, w_edges, b_out, ln_w, ln_b``, this chunk's share) from the gradients of its outputs."""
    pre, h, fwd_m, bwd_m, x = _edge_terms(e, src, dst, fwd, bwd, w_self, w_edges, b_out)
    x_hat = (x - mean) * rstd
    g = dy * ln_w
    dx = rstd * (g - g.mean(-1, keepdim=True) - x_hat * (g * x_hat).mean(-1, keepdim=True))
    d_fwd = message_stats_grad(fwd_m, 2, extremes, fwd_extremes, fwd_grads)
    d_bwd = message_stats_grad(bwd_m, 1, extremes, bwd_extremes, bwd_grads)
    d_edges = torch.cat([d_fwd, d_bwd, dx], dim=-1)
    sig = torch.sigmoid(pre)
    d_pre = torch.matmul(d_edges, w_edges) * sig * (1 + pre * (1 - sig))
    de = dx + torch.matmul(d_pre, w_self)
    return (
        de, d_pre.sum(1, keepdim=True), d_pre.sum(2, keepdim=True), d_fwd.sum(1, keepdim=True),
        d_bwd.sum(2, keepdim=True), _rows(d_pre).T @ _rows(e), _rows(d_edges).T @ _rows(h),
        _rows(dx).sum(0), _rows(dy * x_hat).sum(0), _rows(dy).sum(0),
    )  # fmt: skip


def block_forward_into(y: Tensor, mean: Tensor, rstd: Tensor, *args) -> tuple[Tensor, ...]:
    """:func:`block_forward` (``args``) with its first three results written into ``y, mean, rstd``
    (this chunk's slices of the block's outputs, so no chunk results are concatenated: compiled,
    the kernel writes them in place); returns the statistics."""
    results = block_forward(*args)
    for out, value in zip((y, mean, rstd), results):
        out.copy_(value)
    return results[3:]


def block_backward_into(de: Tensor, *args) -> tuple[Tensor, ...]:
    """:func:`block_backward` (``args``) with the gradient of ``e`` written into ``de`` (as
    :func:`block_forward_into` does); returns the other gradients."""
    grad_e, *rest = block_backward(*args)
    de.copy_(grad_e)
    return tuple(rest)


def _edge_terms(
    e: Tensor, src: Tensor, dst: Tensor, fwd: Tensor, bwd: Tensor, w_self: Tensor, w_edges: Tensor, b_out: Tensor
) -> tuple[Tensor, ...]:
    """``pre``, ``h``, the forward and backward messages and the LayerNorm's input ``e + h W_out^T
    + b_out``: one GEMM from ``e``, one from ``h`` (``w_edges`` stacks ``W_msg`` and ``W_out``)."""
    c = e.shape[-1]
    pre = torch.matmul(e, w_self.T) + (src + dst)
    h = F.silu(pre)
    fwd_edge, bwd_edge, out = torch.matmul(h, w_edges.T).split(c, dim=-1)
    return pre, h, fwd_edge + fwd, bwd_edge + bwd, e + out + b_out


def _rows(t: Tensor) -> Tensor:
    return t.reshape(-1, t.shape[-1])


def message_stats(m: Tensor, dim: int, extremes: tuple[bool, bool]) -> list[Tensor]:
    """Sum and sum of squares of messages ``m`` over axis ``dim``, then their max and / or min
    where ``extremes`` (max, min) asks: what every aggregator is combined from."""
    stats = [m.sum(dim), m.square().sum(dim)]
    return stats + [fn(m, dim) for want, fn in zip(extremes, (torch.amax, torch.amin)) if want]


def message_stats_grad(
    m: Tensor, dim: int, extremes: tuple[bool, bool], values: Sequence[Tensor], grads: Sequence[Tensor]
) -> Tensor:
    """``dL/dm`` from the gradients of :func:`message_stats` ``(m, dim, extremes)`` and its extremes
    ``values``. Ties of a max / min all receive its gradient; where ``m`` is at the extreme comes
    from float arithmetic, as boolean masks are several times slower on CPU."""
    g_sum, g_squares, *g_extremes = (g.unsqueeze(dim) for g in grads)
    grad = torch.addcmul(g_sum, m, 2 * g_squares)
    signs = [s for s, want in zip((1, -1), extremes) if want]
    for sign, v, g in zip(signs, values, g_extremes):
        at_extreme = (m - v.unsqueeze(dim)).mul_(sign).sign_().add_(1)  # 1 where m equals the max/min, else 0
        grad = grad.addcmul_(at_extreme, g)
    return grad


@dataclass(frozen=True)
class BlockKernels:
    """The per-chunk functions :class:`FusedEdgeBlock` runs (plain or compiled)."""

    forward: Callable[..., tuple[Tensor, ...]] = block_forward_into
    backward: Callable[..., tuple[Tensor, ...]] = block_backward_into

    @classmethod
    def compiled(cls) -> BlockKernels:
        return cls(torch.compile(block_forward_into, dynamic=False), torch.compile(block_backward_into, dynamic=False))


def _chunks(num_graphs: int, edges_per_graph: int) -> list[slice]:
    step = max(1, CHUNK_EDGES // max(edges_per_graph, 1))
    return [slice(i, min(i + step, num_graphs)) for i in range(0, num_graphs, step)]


@dataclass(frozen=True)
class _Saved:
    """What :class:`FusedEdgeBlock` keeps for backward, by name: the block's five inputs, the five
    weights, the LayerNorm's ``mean`` and ``rstd``, and each direction's extremes (max / min)."""

    inputs: tuple[Tensor, ...]
    weights: tuple[Tensor, ...]
    mean: Tensor
    rstd: Tensor
    fwd_extremes: tuple[Tensor, ...]
    bwd_extremes: tuple[Tensor, ...]

    def flat(self) -> tuple[Tensor, ...]:
        """For ``ctx.save_for_backward``."""
        return *self.inputs, *self.weights, self.mean, self.rstd, *self.fwd_extremes, *self.bwd_extremes

    @classmethod
    def unflat(cls, saved: Sequence[Tensor], extremes: tuple[bool, bool]) -> _Saved:
        """Inverse of :meth:`flat`; each direction keeps the extremes ``extremes`` (max, min) asks for."""
        rest = iter(saved)

        def take(count: int) -> tuple[Tensor, ...]:
            return tuple(next(rest) for _ in range(count))

        per_direction = sum(extremes)
        return cls(take(5), take(5), next(rest), next(rest), take(per_direction), take(per_direction))


class FusedEdgeBlock(torch.autograd.Function):
    """``(y, *incoming stats, *outgoing stats)`` of one grid block (see the module docstring),
    computed chunk by chunk; backward recomputes each chunk. Inputs: edges ``e [G, D, S, C]``,
    node parts ``src, fwd [G, 1, S, C]`` and ``dst, bwd [G, D, 1, C]``, the weights, the
    LayerNorm's ``eps``, which extremes (max, min) to return, and the :class:`BlockKernels`."""

    @staticmethod
    def forward(ctx, e, src, dst, fwd, bwd, w_self, w_edges, b_out, ln_w, ln_b, eps, extremes, kernels):
        inputs = (e, src, dst, fwd, bwd)
        weights = (w_self, w_edges, b_out, ln_w, ln_b)
        parts = _chunks(e.shape[0], e.shape[1] * e.shape[2])
        y, mean, rstd = e.new_empty(e.shape), e.new_empty(e.shape[:-1] + (1,)), e.new_empty(e.shape[:-1] + (1,))
        results = [kernels.forward(y[p], mean[p], rstd[p], *(t[p] for t in inputs), *weights, eps, extremes)
                   for p in parts]  # fmt: skip
        stats = [torch.cat(column) for column in zip(*results)]
        ctx.extremes, ctx.kernels, ctx.parts = extremes, kernels, parts
        k = len(stats) // 2  # per direction: sum, squares, then the extremes
        ctx.save_for_backward(*_Saved(inputs, weights, mean, rstd, tuple(stats[2:k]), tuple(stats[k + 2 :])).flat())
        return y, *stats

    @staticmethod
    @once_differentiable
    def backward(ctx, dy, *stat_grads):
        saved = _Saved.unflat(ctx.saved_tensors, ctx.extremes)
        per_direction = len(stat_grads) // 2
        fwd_grads, bwd_grads = stat_grads[:per_direction], stat_grads[per_direction:]
        de, grads = dy.new_empty(dy.shape), []
        for p in ctx.parts:
            grads.append(ctx.kernels.backward(
                de[p], *(t[p] for t in saved.inputs), *saved.weights, saved.mean[p], saved.rstd[p], ctx.extremes,
                [v[p] for v in saved.fwd_extremes], [v[p] for v in saved.bwd_extremes], dy[p],
                [g[p] for g in fwd_grads], [g[p] for g in bwd_grads],
            ))  # fmt: skip
        columns = list(zip(*grads))
        node_grads = [torch.cat(col) for col in columns[:4]]
        weight_grads = [torch.stack(col).sum(0) for col in columns[4:]]
        return (de, *node_grads, *weight_grads, None, None, None)


@dataclass(frozen=True)
class FusedNorm:
    """What :class:`FusedEdgeBlock` takes from the GMN beside the layer: the edge LayerNorm that
    follows the residual, and the kernels."""

    norm: torch.nn.LayerNorm
    kernels: BlockKernels


@torch._dynamo.disable
def fused_edge_block(*args) -> tuple[Tensor, ...]:
    """:class:`FusedEdgeBlock` (its arguments), outside any ``torch.compile`` graph around it: the
    chunk loop runs eagerly and calls the (possibly compiled) kernels."""
    return FusedEdgeBlock.apply(*args)
