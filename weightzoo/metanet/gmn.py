"""Graph metanetwork (GMN): message passing over parameter graphs (see :mod:`.graph`).

Following neural graphs (Kofinas et al. 2024) and Graph Metanetworks (Lim et al. 2024), every
layer updates each edge from its two endpoints and each node from PNA-style aggregations
(Corso et al. 2020) of its incoming and, separately, its outgoing edges, so information flows
both forward and backward through the network the graph describes. The model only sees node
and edge attributes, so it is invariant (pooled readout) or equivariant (node/edge readout) to
every relabelling of the graph's nodes that preserves them: the hidden-neuron permutations.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Sequence

import torch
from torch import Tensor, nn
from torch.utils.checkpoint import checkpoint
from torch_geometric.data import Batch, Data
from torch_geometric.nn import MessagePassing
from torch_geometric.utils import scatter

from ..errors import SpecError
from ..paramgraph import EdgeType, GraphGrids, NodeType, graph_grids
from .edgeblocks import BlockKernels, FusedNorm, fused_edge_block, message_stats, message_stats_grad

READOUTS = ("invariant", "node", "edge")


def _mlp(in_features: int, hidden: int, out_features: int, dropout: float = 0.0) -> nn.Sequential:
    return nn.Sequential(
        nn.Linear(in_features, hidden), nn.SiLU(), nn.Dropout(dropout), nn.Linear(hidden, out_features)
    )


AGGREGATORS = ("mean", "max", "min", "sum", "std")
_EXTREMES = ("max", "min")
_RECOMPILE_LIMIT = 64  # compiled layers share one code object: layers x batch sizes x grad modes


class _BlockStats(torch.autograd.Function):
    """:func:`~.edgeblocks.message_stats` over axis ``dim`` of the messages ``m = node_part +
    edge_part`` of a grid block, without keeping ``m`` for backward: the backward pass rebuilds it
    (:func:`~.edgeblocks.message_stats_grad`)."""

    @staticmethod
    def forward(ctx, node_part: Tensor, edge_part: Tensor, dim: int, extremes: tuple[bool, bool]):
        stats = message_stats(node_part + edge_part, dim, extremes)
        ctx.dim, ctx.extremes = dim, extremes
        ctx.save_for_backward(node_part, edge_part, *stats[2:])
        return tuple(stats)

    @staticmethod
    def backward(ctx, *grads):
        node_part, edge_part, *values = ctx.saved_tensors
        grad = message_stats_grad(node_part + edge_part, ctx.dim, ctx.extremes, values, grads)
        broadcast = [d for d in range(grad.dim()) if node_part.shape[d] == 1 and grad.shape[d] != 1]
        node_grad = grad.sum(broadcast, keepdim=True) if broadcast else grad  # sum over [] would sum everything
        return node_grad, grad, None, None


class _Pool:
    """Per-node message statistics of one direction, collected from grid blocks (already reduced
    over their edges) and from scattered edges, then combined by one scatter per statistic."""

    def __init__(self, aggregators: Sequence[str], num_graphs: int, num_nodes: int) -> None:
        self.extremes = [a for a in _EXTREMES if a in aggregators]
        self.wants = tuple(a in self.extremes for a in _EXTREMES)  # (max, min), as message_stats takes them
        self.num_graphs, self.num_nodes = num_graphs, num_nodes
        self.index: list[Tensor] = []
        self.parts: dict[str, list[Tensor]] = {k: [] for k in ("sum", "squares", *self.extremes)}

    def reduce(self, nodes: slice, node_part: Tensor, edge_part: Tensor, dim: int) -> None:
        """Messages ``node_part + edge_part`` (broadcast to a grid block ``[G, num_dst, num_src, C]``)
        to nodes ``nodes`` of every graph, reduced over the block's axis ``dim``."""
        self.add(nodes, _BlockStats.apply(node_part, edge_part, dim, self.wants))

    def add(self, nodes: slice, stats: Sequence[Tensor]) -> None:
        """Statistics ``[G, len(nodes), C]`` (sum, squares, then the extremes) of nodes ``nodes``."""
        G, C, device = self.num_graphs, stats[0].shape[-1], stats[0].device
        ids = torch.arange(nodes.start, nodes.stop, device=device)
        self.index.append((ids + self.num_nodes * torch.arange(G, device=device)[:, None]).reshape(-1))
        for k, v in zip(("sum", "squares", *self.extremes), stats):
            self.parts[k].append(v.reshape(-1, C))

    def scatter(self, index: Tensor, messages: Tensor) -> None:
        """Messages ``[E, C]`` to batch-wide node ids ``index``."""
        self.index.append(index)
        for k in self.parts:
            self.parts[k].append(messages.square() if k == "squares" else messages)

    def result(self, combine, degree: Tensor) -> Tensor:
        index, size = torch.cat(self.index), self.num_graphs * self.num_nodes
        stats = {k: scatter(torch.cat(v), index, 0, size, reduce="sum" if k in ("sum", "squares") else k)
                 for k, v in self.parts.items()}  # fmt: skip
        count = degree.repeat(self.num_graphs)[:, None]
        return combine(stats["sum"], stats["squares"], count, {a: stats[a] for a in self.extremes})


class EdgeUpdateConv(MessagePassing):
    """One round of message passing with edge features.

    ``e' = MLP([x_src, x_dst, e])``; node ``i`` then aggregates ``W_f [x_src, e']`` over its
    incoming edges and ``W_b [x_dst, e']`` over its outgoing ones with every aggregator, and
    ``x' = MLP([x, agg_in, agg_out])``. Returns ``(x', e')``.

    Linear maps of a concatenation are applied to each part, the node parts once per node
    before gathering them onto edges, and all moment aggregators share one scatter-sum: the
    per-edge work, which dominates on parameter graphs, is two ``[E, C] x [C, C]`` GEMMs.
    """

    def __init__(self, channels: int, aggregators: Sequence[str] = ("mean", "max", "sum", "std")) -> None:
        bad = [a for a in aggregators if a not in AGGREGATORS]
        if bad or not aggregators:
            raise SpecError(f"EdgeUpdateConv: bad aggregators {list(aggregators)}; choose from {list(AGGREGATORS)}")
        super().__init__(aggr=None)
        self.channels, self.aggregators = channels, tuple(aggregators)
        c = channels
        self.edge_nodes = nn.Linear(c, 2 * c, bias=False)  # edge MLP's first layer: source and target parts
        self.edge_self = nn.Linear(c, c)  # ... and the edge's own part
        self.edge_out = nn.Linear(c, c)
        self.message_nodes = nn.Linear(c, 2 * c, bias=False)  # forward / backward messages: node parts
        self.message_edges = nn.Linear(c, 2 * c)  # ... and edge parts
        self.node_mlp = _mlp((1 + 2 * len(self.aggregators)) * c, c, c)

    def reset_parameters(self) -> None:
        for m in self.modules():
            if isinstance(m, nn.Linear):
                m.reset_parameters()

    def forward(
        self,
        x: Tensor,
        edge_index: Tensor,
        edge_attr: Tensor | list[Tensor],
        grids: GraphGrids | None = None,
        fused: FusedNorm | None = None,
    ) -> tuple[Tensor, Tensor | list[Tensor]]:
        """With ``grids``, ``edge_attr`` (and the returned edges) are ``grids.split`` parts; with
        ``fused`` too, the returned edges are ``fused.norm(edge_attr + e')`` (the GMN's residual
        and norm), from :class:`~.edgeblocks.FusedEdgeBlock` on every grid block."""
        if grids is not None:
            return self._grid_forward(x, edge_index, edge_attr, grids, fused)
        c = self.channels
        src_part, dst_part = self.edge_nodes(x).split(c, dim=-1)
        edge_attr = self.edge_updater(edge_index, src_part=src_part, dst_part=dst_part, edge_attr=edge_attr)
        fwd_node, bwd_node = self.message_nodes(x).split(c, dim=-1)
        fwd_edge, bwd_edge = self.message_edges(edge_attr).split(c, dim=-1)
        incoming = self.propagate(edge_index, node_part=fwd_node, edge_part=fwd_edge)
        outgoing = self.propagate(edge_index.flip(0), node_part=bwd_node, edge_part=bwd_edge)
        return self.node_mlp(torch.cat([x, incoming, outgoing], dim=-1)), edge_attr

    def _grid_forward(
        self, x: Tensor, edge_index: Tensor, parts: list[Tensor], grids: GraphGrids, fused: FusedNorm | None
    ) -> tuple[Tensor, list[Tensor]]:
        """The same layer on grid blocks ``[G, num_dst, num_src, C]``: node parts are broadcast onto
        the block instead of gathered, and reduced over its source or target axis instead of
        scattered. Biases of the per-edge maps move onto the node parts they are added to, and
        ``message_edges(edge_out(h))`` is one GEMM from ``h``, so every GEMM over edges is bias-free
        except ``edge_out``'s."""
        c, G, N = self.channels, grids.num_graphs, grids.num_nodes
        src_part, dst_part = self.edge_nodes(x).split(c, dim=-1)
        fwd_node, bwd_node = self.message_nodes(x).split(c, dim=-1)
        w_messages = self.message_edges.weight @ self.edge_out.weight
        b_fwd, b_bwd = (self.message_edges.weight @ self.edge_out.bias + self.message_edges.bias).split(c)
        src_g, dst_g = src_part.view(G, N, c), (dst_part + self.edge_self.bias).view(G, N, c)
        fwd_g, bwd_g = (fwd_node + b_fwd).view(G, N, c), (bwd_node + b_bwd).view(G, N, c)
        incoming, outgoing = _Pool(self.aggregators, G, N), _Pool(self.aggregators, G, N)
        w_edges = None if fused is None else torch.cat([w_messages, self.edge_out.weight])
        updated = []
        for grid, e in zip(grids.grids, parts):
            src, dst = src_g[:, None, grid.src], dst_g[:, grid.dst, None]
            fwd, bwd = fwd_g[:, None, grid.src], bwd_g[:, grid.dst, None]
            if fused is None:
                pre = torch.addmm((src + dst).reshape(-1, c), e.reshape(-1, c), self.edge_self.weight.T)
                h = nn.functional.silu(pre).view(G, grid.num_dst, grid.num_src, c)
                fwd_edge, bwd_edge = (h @ w_messages.T).split(c, dim=-1)
                incoming.reduce(grid.dst, fwd, fwd_edge, dim=2)
                outgoing.reduce(grid.src, bwd, bwd_edge, dim=1)
                updated.append(self.edge_out(h))
                continue
            norm = fused.norm
            y, *stats = fused_edge_block(
                e, src, dst, fwd, bwd, self.edge_self.weight, w_edges, self.edge_out.bias,
                norm.weight, norm.bias, norm.eps, incoming.wants, fused.kernels,
            )  # fmt: skip
            incoming.add(grid.dst, stats[: len(stats) // 2])
            outgoing.add(grid.src, stats[len(stats) // 2 :])
            updated.append(y)
        index = edge_index[:, grids.rest_ids]
        e = self.edge_updater(index, src_part=src_part, dst_part=dst_part, edge_attr=parts[-1])
        fwd_edge, bwd_edge = self.message_edges(e).split(c, dim=-1)
        incoming.scatter(index[1], fwd_node[index[0]] + fwd_edge)
        outgoing.scatter(index[0], bwd_node[index[1]] + bwd_edge)
        updated.append(e if fused is None else fused.norm(parts[-1] + e))
        aggregated = [pool.result(self._combine, degree) for pool, degree in
                      ((incoming, grids.in_degree), (outgoing, grids.out_degree))]  # fmt: skip
        return self.node_mlp(torch.cat([x, *aggregated], dim=-1)), updated

    def edge_update(self, src_part_j: Tensor, dst_part_i: Tensor, edge_attr: Tensor) -> Tensor:
        return self.edge_out(nn.functional.silu(src_part_j + dst_part_i + self.edge_self(edge_attr)))

    def message(self, node_part_j: Tensor, edge_part: Tensor) -> Tensor:
        return node_part_j + edge_part

    def aggregate(
        self, inputs: Tensor, index: Tensor, ptr: Tensor | None = None, dim_size: int | None = None
    ) -> Tensor:
        """Every requested aggregator, concatenated; sums of 1, m and m^2 come from one scatter."""
        c = self.channels
        ones = inputs.new_ones(inputs.shape[0], 1)
        moments = scatter(torch.cat([inputs, inputs * inputs, ones], dim=-1), index, 0, dim_size, reduce="sum")
        extremes = {a: scatter(inputs, index, 0, dim_size, reduce=a) for a in _EXTREMES if a in self.aggregators}
        return self._combine(moments[:, :c], moments[:, c : 2 * c], moments[:, 2 * c :], extremes)

    def _combine(self, total: Tensor, squares: Tensor, count: Tensor, extremes: dict[str, Tensor]) -> Tensor:
        """The aggregators from per-node sums, sums of squares, message counts and extremes."""
        count = count.clamp(min=1)
        mean = total / count
        out = []
        for a in self.aggregators:
            if a == "sum":
                out.append(total)
            elif a == "mean":
                out.append(mean)
            elif a == "std":
                out.append(torch.sqrt((squares / count - mean * mean).clamp(min=0) + 1e-5))
            else:
                out.append(extremes[a])
        return torch.cat(out, dim=-1)

    def __repr__(self) -> str:
        return f"{self.__class__.__name__}({self.channels}, aggregators={list(self.aggregators)})"


class GMN(nn.Module):
    """Graph metanetwork over the batches :func:`~weightzoo.paramgraph.build_graphs` makes.

    Embeds node/edge features plus their type, layer and position, runs ``layers`` rounds of
    :class:`EdgeUpdateConv` with residual updates and LayerNorm, then reads out per graph
    (``"invariant"``: ``[num_graphs, out_features]`` from the mean and max of nodes and of edges
    and, since input and output neurons are not exchangeable, their sums with learned
    per-position weights, like DWSNet's per-position maps on fixed axes), per node (``"node"``:
    ``[num_nodes, out_features]``) or per edge (``"edge"``: ``[num_edges, out_features]``, from
    the edge and its endpoints).

    Batches of one architecture (see :func:`~weightzoo.paramgraph.graph_grids`) run on grid blocks
    unless ``dense=False``; other batches on the edge list; both compute the same function. With
    ``recompute`` each message-passing layer is run again in the backward pass instead of keeping
    its per-edge activations; ``compile`` puts each layer on grid blocks (message passing, residual
    and norms) through ``torch.compile``, and with ``recompute`` too, each grid block's per-edge
    work runs as one :class:`~.edgeblocks.FusedEdgeBlock` (compiled kernels, a few graphs at a
    time, recomputed chunk by chunk in backward) unless edge dropout is active in training.
    ``benchmarks/metanet_speed.py`` measures each path's speed and memory against the edge list
    (figures in the README).
    """

    def __init__(
        self,
        node_dim: int,
        edge_dim: int,
        hidden: int = 64,
        layers: int = 4,
        out_features: int = 1,
        readout: str = "invariant",
        aggregators: Sequence[str] = ("mean", "max", "sum", "std"),
        dropout: float = 0.0,
        max_layers: int = 64,
        max_pos: int = 1024,
        recompute: bool = False,
        dense: bool = True,
        compile: bool = False,
    ) -> None:
        super().__init__()
        if readout not in READOUTS:
            raise SpecError(f"GMN: readout {readout!r} is not one of {READOUTS}")
        if layers < 1 or hidden < 1:
            raise SpecError(f"GMN: layers and hidden must be >= 1, got layers={layers}, hidden={hidden}")
        self.node_dim, self.edge_dim, self.readout = node_dim, edge_dim, readout
        self.max_layers, self.max_pos = max_layers, max_pos
        self.recompute, self.dense = bool(recompute), bool(dense)
        self.node_in = nn.Linear(node_dim, hidden)
        self.edge_in = nn.Linear(edge_dim, hidden)
        self.node_embed = nn.ModuleDict(
            {
                "node_type": nn.Embedding(len(NodeType), hidden),
                "node_layer": nn.Embedding(max_layers, hidden),
                "node_pos": nn.Embedding(max_pos, hidden),
            }
        )
        self.edge_embed = nn.ModuleDict(
            {
                "edge_type": nn.Embedding(len(EdgeType), hidden),
                "edge_layer": nn.Embedding(max_layers, hidden),
                "edge_pos": nn.Embedding(max_pos, hidden),
            }
        )
        self.convs = nn.ModuleList(EdgeUpdateConv(hidden, aggregators) for _ in range(layers))
        self.node_norms = nn.ModuleList(nn.LayerNorm(hidden) for _ in range(layers))
        self.edge_norms = nn.ModuleList(nn.LayerNorm(hidden) for _ in range(layers))
        self.dropout = nn.Dropout(dropout)
        self.fixed_weight = nn.Embedding(max_pos, hidden, padding_idx=0)  # per-position readout of inputs/outputs
        head_in = {"invariant": 6 * hidden, "node": hidden, "edge": 3 * hidden}[readout]
        self.head = _mlp(head_in, hidden, out_features, dropout)
        if compile:
            self.compile_layers()

    def compile_layers(self) -> None:
        """Run every layer on grid blocks through ``torch.compile`` (one compilation per layer,
        batch size and architecture; on CPU it needs a C++ compiler), and with ``recompute`` their
        edge work through compiled :class:`~.edgeblocks.BlockKernels`. Copies and pickles run
        eagerly until compiled again."""
        torch._dynamo.config.recompile_limit = max(torch._dynamo.config.recompile_limit, _RECOMPILE_LIMIT)
        self.__dict__["_compiled_layer"] = torch.compile(self._layer, dynamic=False)
        self.__dict__["_kernels"] = BlockKernels.compiled()

    def __getstate__(self) -> dict:
        state = self.__dict__.copy()
        state.pop("_compiled_layer", None)
        state.pop("_kernels", None)
        return state

    def reset_parameters(self) -> None:
        """Re-initialize every layer."""
        for m in self.modules():
            if m is not self and hasattr(m, "reset_parameters"):
                m.reset_parameters()

    def forward(self, data: Data | Batch) -> Tensor:
        self._check(data)
        edge_index = data.edge_index
        x = self.node_in(data.x) + sum(emb(data[k]) for k, emb in self.node_embed.items())
        grids = graph_grids(data) if self.dense else None
        e = self._embed_edges(data, grids)
        layer = self._layer_runner(grids is not None)
        for i in range(len(self.convs)):
            x, e = layer(i, x, edge_index, e, grids)
        if self.readout == "node":
            return self.head(x)
        if self.readout == "edge":
            e = e if grids is None else grids.merge(e)
            return self.head(torch.cat([x[edge_index[0]], x[edge_index[1]], e], dim=-1))
        batch = data.batch if data.batch is not None else edge_index.new_zeros(x.shape[0])
        graphs = data.num_graphs if isinstance(data, Batch) else 1
        pooled = [scatter(x, batch, dim=0, dim_size=graphs, reduce=reduce) for reduce in ("mean", "max")]
        if grids is None:
            pooled += [scatter(e, batch[edge_index[0]], 0, dim_size=graphs, reduce=r) for r in ("mean", "max")]
        else:
            pooled += grids.pool(e)
        # input and output neurons are not exchangeable: sum them with per-position weights
        side = 2 * batch + (data.node_type == NodeType.OUTPUT).long()
        fixed = scatter(self.fixed_weight(data.node_pos) * x, side, dim=0, dim_size=2 * graphs, reduce="sum")
        return self.head(torch.cat([*pooled, fixed.reshape(graphs, -1)], dim=-1))

    def _layer_runner(self, on_grids: bool) -> Callable:
        """How this forward runs each layer: compiled (on grid blocks; with recompute, fusing the
        blocks' edge work, see :meth:`_fused_norm`), checkpointed (only each layer's inputs kept
        for backward) or plainly."""
        recompute = self.recompute and torch.is_grad_enabled()
        compiled = self.__dict__.get("_compiled_layer") if on_grids else None
        if compiled is not None and (not recompute or self._fuses()):
            return compiled
        if recompute:
            return functools.partial(checkpoint, self._layer, use_reentrant=False)
        return self._layer

    def _layer(
        self, i: int, x: Tensor, edge_index: Tensor, e: Tensor | list[Tensor], grids: GraphGrids | None
    ) -> tuple[Tensor, Tensor | list[Tensor]]:
        """Message-passing layer ``i`` with its residual updates and norms."""
        fused = self._fused_norm(i, grids)
        dx, de = self.convs[i](x, edge_index, e, grids, fused)
        x = self.node_norms[i](x + self.dropout(dx))
        if fused is not None:
            return x, de
        if grids is None:
            return x, self.edge_norms[i](e + self.dropout(de))
        return x, [self.edge_norms[i](a + self.dropout(b)) for a, b in zip(e, de)]

    def _fuses(self) -> bool:
        """Whether grid blocks run as :class:`~.edgeblocks.FusedEdgeBlock`: compiled, recomputing,
        taking gradients, and no edge dropout to apply (the fused block has none)."""
        active_dropout = self.training and self.dropout.p > 0
        return self.recompute and torch.is_grad_enabled() and "_kernels" in self.__dict__ and not active_dropout

    def _fused_norm(self, i: int, grids: GraphGrids | None) -> FusedNorm | None:
        """What layer ``i`` fuses its grid blocks with (its edge norm, the kernels), or None."""
        if grids is None or not self._fuses():
            return None
        return FusedNorm(self.edge_norms[i], self.__dict__["_kernels"])

    def _embed_edges(self, data: Data | Batch, grids: GraphGrids | None) -> Tensor | list[Tensor]:
        """Edge features plus their type, layer and position embeddings; with ``grids``, the
        ``grids.split`` parts (a grid's edges share all three, so they are looked up once)."""

        def embedding(ids: Tensor | None = None) -> Tensor:
            return sum(emb(data[k] if ids is None else data[k][ids]) for k, emb in self.edge_embed.items())

        if grids is None:
            return self.edge_in(data.edge_attr) + embedding()
        *blocks, rest = grids.split(data.edge_attr)
        shared = embedding(grids.first_edges)
        return [self.edge_in(f) + shared[i] for i, f in enumerate(blocks)] + [
            self.edge_in(rest) + embedding(grids.rest_ids)
        ]

    def _check(self, data: Data | Batch) -> None:
        """SpecError for graphs built with other feature widths or too deep/wide for the embeddings."""
        for what, got, want in (
            ("node", data.x.shape[-1], self.node_dim),
            ("edge", data.edge_attr.shape[-1], self.edge_dim),
        ):
            if got != want:
                raise SpecError(
                    f"GMN takes {what} features of width {want}, the graphs have {got}; "
                    f"build them with {what}_dim={want}"
                )
        keys = ("node_layer", "edge_layer", "node_pos", "edge_pos")
        highest = torch.stack([data[k].max() if data[k].numel() else data[k].new_zeros(()) for k in keys]).tolist()
        for key, top in zip(keys, highest):
            limit = self.max_layers if key.endswith("layer") else self.max_pos
            name = "max_layers" if key.endswith("layer") else "max_pos"
            if top >= limit:
                raise SpecError(
                    f"GMN: graphs have {key} up to {top}, but {name}={limit}; build the GMN with {name}>{top}"
                )

    def __repr__(self) -> str:
        return (
            f"{self.__class__.__name__}(node_dim={self.node_dim}, edge_dim={self.edge_dim}, "
            f"hidden={self.node_in.out_features}, layers={len(self.convs)}, readout={self.readout!r})"
        )
