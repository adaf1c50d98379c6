"""Networks as parameter graphs: neurons/channels are nodes, parameters are edges.

Following "neural graphs" (Kofinas et al. 2024) and Graph Metanetworks (Lim et al. 2024), a
network becomes a directed graph whose automorphisms include the permutations of its hidden
neurons, so a message-passing network over it is invariant to them by construction.

Conventions (the same for every architecture, so mixed batches share embeddings):

* **Nodes**, in order: the input neurons/channels (``node_layer`` 0), then the outputs of every
  Linear/Conv layer in data-flow order (``node_layer`` k + 1 for the k-th). An attention layer adds
  query, key and value neurons and one node per head, then its output neurons. Input and output
  neurons get ``node_pos`` 1..n (they are not permutable); every hidden node gets 0.
* **Node features** ``x [N, node_dim]``: column 0 is the bias; the k-th normalization acting on a
  node set fills columns ``1 + 4k + (weight, bias, running_mean, running_var)``; attention's
  ``bias_k``/``bias_v`` fill column 1 of the key/value nodes; zeros elsewhere.
* **Edges** ``j -> i`` carry ``W[i, j]``, layer by layer in row-major order of ``W`` (a skip
  block's identity edges follow its last layer). A Conv edge carries its flattened kernel, a
  Linear reading a flattened ``C x S`` feature map carries the ``S`` weights of channel ``j``;
  with ``conv_mode="positions"`` these become one edge per position with ``edge_pos`` 1..K.
  Skip (residual), query-key pairing and head-membership edges carry the constant 1.
  ``edge_layer`` is the destination's ``node_layer`` minus one.

A :class:`GraphBuilder` precomputes, per architecture, where every feature is read from in the
flat parameter vector, so ``build`` turns ``[B, P]`` parameters into a PyG ``Batch`` by a gather.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from enum import IntEnum

import torch
from torch import Tensor, nn
from torch_geometric.data import Batch, Data
from torch_geometric.utils import cumsum

from .errors import LayoutError, SpecError
from .layout import ParamEntry, ParamLayout, module_kind
from .symmetry import PermutationSpec, module_symmetries

CONV_MODES = ("vector", "positions")
_NORM_SLOTS = {"weight": 0, "bias": 1, "running_mean": 2, "running_var": 3}
_NODE_KEYS = ("node_type", "node_layer", "node_pos")
_EDGE_KEYS = ("edge_type", "edge_layer", "edge_pos")
_SUPPORTED = (
    "graphs support Linear/Conv layers (groups=1), BatchNorm/LayerNorm over neurons or channels, "
    "skip blocks, Flatten or global pooling, and (from_module) self-attention"
)


class NodeType(IntEnum):
    """Kinds of nodes; the numbers are shared by every architecture."""

    INPUT = 0
    HIDDEN = 1
    OUTPUT = 2
    ATTN_Q = 3
    ATTN_K = 4
    ATTN_V = 5
    ATTN_HEAD = 6


class EdgeType(IntEnum):
    """Kinds of edges; the numbers are shared by every architecture."""

    LINEAR = 0
    CONV = 1
    FLATTEN = 2  # a Linear reading a flattened conv feature map
    RESIDUAL = 3
    ATTN_Q = 4
    ATTN_K = 5
    ATTN_V = 6
    ATTN_O = 7
    ATTN_QK = 8  # query neuron i -> key neuron i: they meet in the same dot product
    ATTN_HEAD = 9  # query/key/value neuron -> its head


# --------------------------------------------------------------------------- grids


@dataclass(frozen=True)
class EdgeGrid:
    """Edges of one graph that join every target ``dst_start + i`` to every source
    ``src_start + j``, in target-major order: edge ``edge_start + i * num_src + j``. All of them
    have one edge type, layer and position."""

    edge_start: int
    dst_start: int
    num_dst: int
    src_start: int
    num_src: int

    @property
    def num_edges(self) -> int:
        return self.num_dst * self.num_src

    @property
    def edges(self) -> slice:
        return slice(self.edge_start, self.edge_start + self.num_edges)

    @property
    def dst(self) -> slice:
        return slice(self.dst_start, self.dst_start + self.num_dst)

    @property
    def src(self) -> slice:
        return slice(self.src_start, self.src_start + self.num_src)


@dataclass(eq=False)
class GraphGrids:
    """The dense structure of a batch of ``num_graphs`` graphs of one architecture.

    Graph ``g`` holds nodes ``g * num_nodes ..`` and edges ``g * num_edges ..``, so an edge
    tensor ``[num_graphs * num_edges, C]`` splits into one ``[num_graphs, num_dst, num_src, C]``
    block per grid (a full bipartite layer, handled with broadcasts and reductions instead of
    gathers and scatters) and the remaining edges ``rest`` (positions within a graph).
    ``in_degree``/``out_degree [num_nodes]`` count every node's incoming/outgoing edges.
    """

    num_graphs: int
    num_nodes: int
    num_edges: int
    grids: tuple[EdgeGrid, ...]
    rest: Tensor
    in_degree: Tensor
    out_degree: Tensor

    @classmethod
    def of(cls, builder: GraphBuilder, num_graphs: int, device: torch.device | str) -> GraphGrids:
        """The grids of ``num_graphs`` graphs built by ``builder`` (on ``device``)."""
        t = builder.tensors(device)
        if "grid_rest" not in t:
            in_grid = torch.zeros(builder.num_edges, dtype=torch.bool, device=device)
            for grid in builder.grids:
                in_grid[grid.edges] = True
            t["grid_rest"] = (~in_grid).nonzero().squeeze(1)
            src, dst = t["edge_index"]
            for name, ends in (("in_degree", dst), ("out_degree", src)):
                t[name] = torch.bincount(ends, minlength=builder.num_nodes).float()
        degrees = t["in_degree"], t["out_degree"]
        return cls(num_graphs, builder.num_nodes, builder.num_edges, builder.grids, t["grid_rest"], *degrees)

    def matches(self, num_nodes: int, num_edges: int) -> bool:
        """Whether a batch of this many nodes and edges can have this structure."""
        return num_nodes == self.num_graphs * self.num_nodes and num_edges == self.num_edges * self.num_graphs

    @functools.cached_property
    def rest_ids(self) -> Tensor:
        """Batch-wide ids of the edges in no grid, graph by graph (computed once per batch)."""
        offsets = torch.arange(self.num_graphs, device=self.rest.device)[:, None] * self.num_edges
        return (offsets + self.rest).reshape(-1)

    @functools.cached_property
    def first_edges(self) -> Tensor:
        """The id of every grid's first edge (in graph 0)."""
        return torch.tensor([g.edge_start for g in self.grids], device=self.rest.device)

    def pool(self, parts: Sequence[Tensor]) -> list[Tensor]:
        """Mean and max ``[num_graphs, C]`` over each graph's edges, from :meth:`split` parts. The
        max's gradient goes to one edge per graph and channel (``Tensor.max`` with indices: on CPU
        about 2.5x faster in backward than ``amax``, which shares it among tied edges)."""
        *blocks, rest = parts
        rest = rest.reshape(self.num_graphs, -1, rest.shape[-1])
        total = sum(b.sum((1, 2)) for b in blocks) + rest.sum(1)
        highest = [b.flatten(1, 2).max(1).values for b in blocks] + ([rest.max(1).values] if rest.shape[1] else [])
        return [total / self.num_edges, torch.stack(highest).amax(0)]

    def split(self, edges: Tensor) -> list[Tensor]:
        """``[num_graphs * num_edges, C]`` -> one ``[num_graphs, num_dst, num_src, C]`` tensor
        per grid, then the other edges ``[num_graphs * len(rest), C]``."""
        per_graph = edges.reshape(self.num_graphs, self.num_edges, -1)
        blocks = [per_graph[:, g.edges].reshape(self.num_graphs, g.num_dst, g.num_src, -1) for g in self.grids]
        return [*blocks, per_graph[:, self.rest].reshape(-1, edges.shape[-1])]

    def merge(self, parts: Sequence[Tensor]) -> Tensor:
        """Inverse of :meth:`split`."""
        G, C = self.num_graphs, parts[0].shape[-1]
        out = parts[0].new_empty(G, self.num_edges, C)
        for g, block in zip(self.grids, parts):
            out[:, g.edges] = block.reshape(G, g.num_edges, C)
        out[:, self.rest] = parts[-1].reshape(G, -1, C)
        return out.reshape(G * self.num_edges, C)


def graph_grids(data: Data | Batch) -> GraphGrids | None:
    """The :class:`GraphGrids` a one-architecture :func:`build_graphs` batch carries, or None
    (graphs of several architectures, or a batch made some other way)."""
    grids = getattr(data, "_grids", None)
    if grids is None or not grids.matches(data.num_nodes, data.num_edges):
        return None
    return grids


# --------------------------------------------------------------------------- builder


@dataclass(eq=False)
class GraphBuilder:
    """The graph of one architecture as index tensors into its flat parameter vector.

    ``node_values [N, node_dim]`` and ``edge_values [E, edge_dim]`` hold positions in the flat
    vector extended by a zero (position ``P``, padding) and a one (``P + 1``, constant edges).
    ``grids`` lists the edge ranges that connect every pair of two node ranges (Linear/Conv
    layers), which a one-architecture batch exposes through :func:`graph_grids`.
    """

    layout: ParamLayout
    node_values: Tensor
    edge_values: Tensor
    edge_index: Tensor
    node_type: Tensor
    node_layer: Tensor
    node_pos: Tensor
    edge_type: Tensor
    edge_layer: Tensor
    edge_pos: Tensor
    grids: tuple[EdgeGrid, ...] = ()
    _on_device: dict[str, dict[str, Tensor]] = field(default_factory=dict, repr=False)

    @classmethod
    def from_layout(
        cls,
        layout: ParamLayout,
        spec: PermutationSpec | None = None,
        *,
        conv_mode: str = "vector",
        edge_dim: int | None = None,
        node_dim: int | None = None,
    ) -> GraphBuilder:
        """Graph of a stored architecture; ``spec`` reveals skip blocks (None: a plain chain)."""
        plan = _Plan(layout, conv_mode)
        _LayoutReader(plan, layout, spec).read()
        return plan.compile(node_dim, edge_dim)

    @classmethod
    def from_module(
        cls,
        module: nn.Module,
        *,
        conv_mode: str = "vector",
        edge_dim: int | None = None,
        node_dim: int | None = None,
    ) -> GraphBuilder:
        """Graph of a module whose leaves run in registration order (containers declaring
        ``weight_space_residual`` compute ``x + f(x)``); ``nn.MultiheadAttention`` is read as
        self-attention. Flat parameters follow ``ParamLayout.from_module(module)``."""
        layout = ParamLayout.from_module(module)
        plan = _Plan(layout, conv_mode)
        _ModuleReader(plan, layout).read(module)
        return plan.compile(node_dim, edge_dim)

    # -- sizes
    @property
    def num_nodes(self) -> int:
        return self.node_values.shape[0]

    @property
    def num_edges(self) -> int:
        return self.edge_values.shape[0]

    @property
    def node_dim(self) -> int:
        return self.node_values.shape[1]

    @property
    def edge_dim(self) -> int:
        return self.edge_values.shape[1]

    def padded(self, node_dim: int, edge_dim: int) -> GraphBuilder:
        """The same graph with features zero-padded to ``node_dim``/``edge_dim``."""
        for name, want, have in (("node_dim", node_dim, self.node_dim), ("edge_dim", edge_dim, self.edge_dim)):
            if want < have:
                raise LayoutError(f"{name}={want} is too small: this network's graph needs {name} >= {have}")
        zero = self.layout.size
        return GraphBuilder(
            self.layout,
            _pad(self.node_values, node_dim, zero),
            _pad(self.edge_values, edge_dim, zero),
            self.edge_index,
            *(getattr(self, k) for k in _NODE_KEYS + _EDGE_KEYS),
            self.grids,
        )

    # -- building
    def features(self, flat: Tensor) -> tuple[Tensor, Tensor]:
        """Node and edge features ``[B, N, node_dim]``, ``[B, E, edge_dim]`` of ``flat [B, >= P]``."""
        size = self.layout.size
        if flat.dim() != 2 or flat.shape[1] < size:
            raise LayoutError(f"graph builder: expected flat parameters [B, >= {size}], got {tuple(flat.shape)}")
        B = flat.shape[0]
        ext = torch.cat([flat[:, :size], flat.new_zeros(B, 1), flat.new_ones(B, 1)], dim=1)
        t = self.tensors(flat.device)
        x = ext[:, t["node_values"].reshape(-1)].reshape(B, self.num_nodes, self.node_dim)
        e = ext[:, t["edge_values"].reshape(-1)].reshape(B, self.num_edges, self.edge_dim)
        return x, e

    def build(self, flat: Tensor) -> Batch:
        """A PyG ``Batch`` of ``B`` graphs from flat parameters ``[B, P]`` (a longer, zero-padded
        tail is ignored). Features have ``flat``'s dtype and device."""
        x, e = self.features(flat)
        rows = torch.arange(flat.shape[0])
        return _assemble([(self, rows, x, e)], flat.shape[0])

    def tensors(self, device: torch.device | str) -> dict[str, Tensor]:
        """The index tensors on ``device`` (copied once per device)."""
        key = str(device)
        if key not in self._on_device:
            names = ("node_values", "edge_values", "edge_index", *_NODE_KEYS, *_EDGE_KEYS)
            self._on_device[key] = {k: getattr(self, k).to(device) for k in names}
        return self._on_device[key]

    def __repr__(self) -> str:
        return (
            f"{self.__class__.__name__}(nodes={self.num_nodes}, edges={self.num_edges}, "
            f"node_dim={self.node_dim}, edge_dim={self.edge_dim}, params={self.layout.size})"
        )


def build_graphs(
    flat: Tensor,
    layouts: Sequence[ParamLayout],
    specs: Sequence[PermutationSpec | None] | None = None,
    *,
    node_dim: int | None = None,
    edge_dim: int | None = None,
    cache: dict | None = None,
    conv_mode: str = "vector",
) -> Batch:
    """One ``Batch`` for members of different architectures: graph ``i`` is member ``i``.

    ``flat [B, P_max]`` holds zero-padded rows, ``layouts[i]``/``specs[i]`` describe member ``i``.
    Members are grouped by architecture and each group is built by one (cached) builder;
    features are padded to ``node_dim``/``edge_dim`` (default: the widest any member needs).
    """
    B = flat.shape[0]
    specs = [None] * B if specs is None else list(specs)
    if B == 0 or len(layouts) != B or len(specs) != B:
        raise LayoutError(f"build_graphs: {B} members (needs >= 1) with {len(layouts)} layouts and {len(specs)} specs")
    cache = {} if cache is None else cache
    member_group, kinds = _group_members(layouts, specs)
    if node_dim is None or edge_dim is None:
        native = feature_dims([k[0] for k in kinds], [k[1] for k in kinds], conv_mode=conv_mode, cache=cache)
        node_dim, edge_dim = node_dim or native[0], edge_dim or native[1]
    groups = torch.tensor(member_group)
    parts = []
    for g, kind in enumerate(kinds):
        b = _cached_builder(cache, *kind, conv_mode, (node_dim, edge_dim))
        rows = (groups == g).nonzero().squeeze(1)
        x, e = b.features(flat[rows.to(flat.device)])
        parts.append((b, rows, x, e))
    return _assemble(parts, B)


def feature_dims(
    layouts: Sequence[ParamLayout],
    specs: Sequence[PermutationSpec | None] | None = None,
    *,
    conv_mode: str = "vector",
    cache: dict | None = None,
) -> tuple[int, int]:
    """The widest node and edge features graphs of these architectures need (builders cached)."""
    cache = {} if cache is None else cache
    specs = [None] * len(layouts) if specs is None else specs
    native = [_cached_builder(cache, lay, spec, conv_mode, (None, None)) for lay, spec in zip(layouts, specs)]
    return max(b.node_dim for b in native), max(b.edge_dim for b in native)


def _cached_builder(cache: dict, layout, spec, conv_mode: str, dims: tuple) -> GraphBuilder:
    """The builder of one architecture at its own widths (``dims`` None) or padded to ``dims``."""
    key = (layout, spec, conv_mode, *dims)
    if key not in cache:
        native = (None, None)
        if dims == native:
            cache[key] = GraphBuilder.from_layout(layout, spec, conv_mode=conv_mode)
        else:
            cache[key] = _cached_builder(cache, layout, spec, conv_mode, native).padded(*dims)
    return cache[key]


def _group_members(
    layouts: Sequence[ParamLayout], specs: Sequence[PermutationSpec | None]
) -> tuple[list[int], list[tuple]]:
    """Architecture index of every member and the distinct ``(layout, spec)`` pairs; objects are
    compared by identity first, so shared layouts are hashed once, not once per member."""
    by_identity: dict[tuple[int, int], int] = {}
    by_value: dict[tuple, int] = {}
    member_group = []
    for lay, spec in zip(layouts, specs):
        ident = (id(lay), id(spec))
        if ident not in by_identity:
            by_identity[ident] = by_value.setdefault((lay, spec), len(by_value))
        member_group.append(by_identity[ident])
    return member_group, list(by_value)


def _assemble(parts: list[tuple[GraphBuilder, Tensor, Tensor, Tensor]], num_graphs: int) -> Batch:
    """Merge ``(builder, member rows, x, e)`` groups into one ``Batch`` in member order, with
    the slice/increment bookkeeping ``Batch.from_data_list`` would make, so ``batch[i]`` works."""
    device, dtype = parts[0][2].device, parts[0][2].dtype
    node_dim, edge_dim = parts[0][0].node_dim, parts[0][0].edge_dim
    nodes = torch.zeros(num_graphs, dtype=torch.long)
    edges = torch.zeros(num_graphs, dtype=torch.long)
    for b, rows, _, _ in parts:
        nodes[rows], edges[rows] = b.num_nodes, b.num_edges
    node_ptr, edge_ptr = cumsum(nodes), cumsum(edges)
    n_total, e_total = int(node_ptr[-1]), int(edge_ptr[-1])
    out = {
        "x": torch.empty(n_total, node_dim, dtype=dtype, device=device),
        "edge_attr": torch.empty(e_total, edge_dim, dtype=dtype, device=device),
        "edge_index": torch.empty(2, e_total, dtype=torch.long, device=device),
    }
    out.update({k: torch.empty(n_total, dtype=torch.long, device=device) for k in _NODE_KEYS})
    out.update({k: torch.empty(e_total, dtype=torch.long, device=device) for k in _EDGE_KEYS})
    node_start, edge_start = node_ptr[:-1].to(device), edge_ptr[:-1].to(device)
    for b, rows, x, e in parts:
        t, rows = b.tensors(device), rows.to(device)
        node_ids = (node_start[rows, None] + torch.arange(b.num_nodes, device=device)).reshape(-1)
        edge_ids = (edge_start[rows, None] + torch.arange(b.num_edges, device=device)).reshape(-1)
        out["x"][node_ids] = x.reshape(-1, node_dim)
        out["edge_attr"][edge_ids] = e.reshape(-1, edge_dim)
        out["edge_index"][:, edge_ids] = (t["edge_index"][:, None, :] + node_start[rows].view(1, -1, 1)).reshape(2, -1)
        for k in _NODE_KEYS:
            out[k][node_ids] = t[k].repeat(len(rows))
        for k in _EDGE_KEYS:
            out[k][edge_ids] = t[k].repeat(len(rows))
    batch = Batch(**out)
    batch.batch = torch.repeat_interleave(torch.arange(num_graphs, device=device), nodes.to(device))
    batch.ptr = node_ptr.to(device)
    no_inc = torch.zeros(num_graphs, dtype=torch.long)
    batch._num_graphs = num_graphs
    batch._slice_dict = {k: (node_ptr if k == "x" or k in _NODE_KEYS else edge_ptr) for k in out}
    batch._inc_dict = {k: node_ptr[:-1] if k == "edge_index" else no_inc for k in out}
    if len(parts) == 1 and parts[0][0].grids:
        batch._grids = GraphGrids.of(parts[0][0], num_graphs, device)
    return batch


# --------------------------------------------------------------------------- plan


def _pad(values: Tensor, width: int, zero: int) -> Tensor:
    """Widen ``[n, w]`` positions to ``[n, width]`` with the zero sentinel."""
    return nn.functional.pad(values, (0, width - values.shape[1]), value=zero)


@dataclass
class _NodeSet:
    """A contiguous range of nodes: the outputs of one layer (or the network inputs)."""

    start: int
    size: int
    type: NodeType
    layer: int
    spatial: bool = False  # channels of a conv feature map: a Linear may read them flattened
    fixed: bool = False  # input/output neurons: numbered by node_pos
    norms: int = 0  # normalization layers attached so far

    @property
    def ids(self) -> Tensor:
        return torch.arange(self.start, self.start + self.size)


class _Plan:
    """Collects node sets, features and edges as positions in the extended flat vector."""

    def __init__(self, layout: ParamLayout, conv_mode: str) -> None:
        if conv_mode not in CONV_MODES:
            raise SpecError(f"graph builder: conv_mode {conv_mode!r} is not one of {CONV_MODES}")
        self.layout, self.conv_mode = layout, conv_mode
        self.zero, self.one = layout.size, layout.size + 1
        self.node_sets: list[_NodeSet] = []
        self.features: list[tuple[Tensor, int, Tensor]] = []  # (node ids, column, positions)
        self.edges: list[dict[str, Tensor]] = []
        self.grids: list[EdgeGrid] = []
        self.used: set[str] = set()

    def nodes(self, size: int, type: NodeType, layer: int, *, spatial: bool = False, fixed: bool = False) -> _NodeSet:
        start = sum(s.size for s in self.node_sets)
        ns = _NodeSet(start, size, type, layer, spatial, fixed)
        self.node_sets.append(ns)
        return ns

    def mark_output(self, ns: _NodeSet) -> None:
        ns.type, ns.fixed = NodeType.OUTPUT, True

    def feature(self, ns: _NodeSet, column: int, entry: ParamEntry, start: int = 0) -> None:
        """Column ``column`` of ``ns`` reads ``entry``'s values ``start .. start + ns.size``."""
        self.features.append((ns.ids, column, entry.offset + start + torch.arange(ns.size)))
        self.used.add(entry.name)

    def edge_block(
        self,
        src: Tensor,
        dst: Tensor,
        values: Tensor,
        type: EdgeType,
        layer: int,
        pos: Tensor | None = None,
        grid: tuple[_NodeSet, _NodeSet] | None = None,
    ) -> None:
        """Edges ``src -> dst``; ``grid=(sources, targets)`` says they are every pair, target-major."""
        n = src.numel()
        if grid is not None and pos is not None:
            raise SpecError("graph builder: a grid's edges share one position; edges with positions are no grid")
        if grid is not None:
            edge_start = sum(blk["src"].numel() for blk in self.edges)
            self.grids.append(EdgeGrid(edge_start, grid[1].start, grid[1].size, grid[0].start, grid[0].size))
        self.edges.append(
            {
                "src": src,
                "dst": dst,
                "values": values.reshape(n, -1),
                "type": torch.full((n,), int(type)),
                "layer": torch.full((n,), layer),
                "pos": torch.zeros(n, dtype=torch.long) if pos is None else pos,
            }
        )

    def constant_edges(self, src: Tensor, dst: Tensor, type: EdgeType, layer: int) -> None:
        self.edge_block(src, dst, torch.full((src.numel(), 1), self.one), type, layer)

    def dense(
        self, w: ParamEntry, b: ParamEntry | None, src: _NodeSet, layer: int, kind: EdgeType | None = None
    ) -> _NodeSet:
        """Output nodes of a Linear/Conv layer reading ``src``, with one edge per (in, out) pair."""
        if len(w.shape) < 2:
            raise LayoutError(f"{w.name}: weight of shape {w.shape} is not a Linear/Conv weight; {_SUPPORTED}")
        out, fan_in = w.shape[0], w.shape[1]
        conv = len(w.shape) > 2
        inner = 1
        if not conv and src.spatial and fan_in != src.size and fan_in % src.size == 0:
            inner = fan_in // src.size  # Linear after Flatten: S weights per channel
        if fan_in != src.size * inner:
            raise LayoutError(
                f"{w.name}: reads {fan_in} inputs but the layer before it has {src.size} neurons/channels; {_SUPPORTED}"
            )
        if b is not None and b.shape != (out,):
            raise LayoutError(f"{b.name}: bias of shape {b.shape} does not match {out} outputs of {w.name}")
        k = inner * math.prod(w.shape[2:])
        dst = self.nodes(out, NodeType.HIDDEN, layer, spatial=conv)
        if kind is None:
            kind = EdgeType.CONV if conv else EdgeType.FLATTEN if inner > 1 else EdgeType.LINEAR
        i = torch.arange(out).repeat_interleave(src.size)
        j = torch.arange(src.size).repeat(out)
        base = w.offset + (i * src.size + j) * k  # W viewed as [out, in, k]
        if self.conv_mode == "positions" and k > 1:
            s = torch.arange(k)
            self.edge_block(
                (src.start + j).repeat_interleave(k),
                (dst.start + i).repeat_interleave(k),
                base[:, None] + s,
                kind,
                layer - 1,
                pos=(s + 1).repeat(out * src.size),
            )
        else:
            self.edge_block(
                src.start + j, dst.start + i, base[:, None] + torch.arange(k), kind, layer - 1, grid=(src, dst)
            )
        self.used.add(w.name)
        if b is not None:
            self.feature(dst, 0, b)
        return dst

    def norm(self, entries: Sequence[ParamEntry], ns: _NodeSet) -> None:
        """Parameters/statistics of one normalization layer become features of ``ns``."""
        for e in entries:
            slot = _NORM_SLOTS.get(e.name.rsplit(".", 1)[-1])
            if slot is None or (e.role == "other") != (slot >= 2):
                raise LayoutError(
                    f"{e.name}: role {e.role!r} is not a normalization weight/bias or running_mean/running_var; "
                    f"{_SUPPORTED}"
                )
            if e.shape != (ns.size,):
                raise LayoutError(
                    f"{e.name}: shape {e.shape} does not act on the {ns.size} neurons/channels before it "
                    f"(only per-neuron/per-channel normalization is supported); {_SUPPORTED}"
                )
            self.feature(ns, 1 + 4 * ns.norms + slot, e)
        ns.norms += 1

    def residual(self, src: _NodeSet, dst: _NodeSet, where: str) -> None:
        """Identity edges ``src j -> dst j`` of a skip block ``x + f(x)``."""
        if src.size != dst.size:
            raise LayoutError(f"{where}: skip block maps {src.size} features to {dst.size}; x + f(x) needs equal sizes")
        self.constant_edges(src.ids, dst.ids, EdgeType.RESIDUAL, dst.layer - 1)

    def attention(self, prefix: str, heads: int, src: _NodeSet, layer: int) -> _NodeSet:
        """Self-attention: query/key/value neurons read ``src``; outputs read the values."""
        w = self.layout[prefix + "in_proj_weight"]
        E = w.shape[1]
        if src.size != E or w.shape != (3 * E, E):
            raise LayoutError(f"{w.name}: attention over {E} features reads a layer of {src.size} neurons")
        qkv = [self.nodes(E, t, layer) for t in (NodeType.ATTN_Q, NodeType.ATTN_K, NodeType.ATTN_V)]
        head = self.nodes(heads, NodeType.ATTN_HEAD, layer)
        i, j = torch.arange(E).repeat_interleave(E), torch.arange(E).repeat(E)
        for r, (ns, kind) in enumerate(zip(qkv, (EdgeType.ATTN_Q, EdgeType.ATTN_K, EdgeType.ATTN_V))):
            self.edge_block(
                src.start + j, ns.start + i, w.offset + (r * E + i) * E + j, kind, layer - 1, grid=(src, ns)
            )
            if prefix + "in_proj_bias" in self.layout:
                self.feature(ns, 0, self.layout[prefix + "in_proj_bias"], start=r * E)
            self.constant_edges(ns.ids, head.start + torch.arange(E) // (E // heads), EdgeType.ATTN_HEAD, layer - 1)
        self.used.add(w.name)
        self.constant_edges(qkv[0].ids, qkv[1].ids, EdgeType.ATTN_QK, layer - 1)
        for name, ns in (("bias_k", qkv[1]), ("bias_v", qkv[2])):
            if prefix + name in self.layout:
                self.feature(ns, 1, self.layout[prefix + name])
        out_w, out_b = (prefix + "out_proj." + p for p in ("weight", "bias"))
        b = self.layout[out_b] if out_b in self.layout else None
        return self.dense(self.layout[out_w], b, qkv[2], layer + 1, kind=EdgeType.ATTN_O)

    def compile(self, node_dim: int | None, edge_dim: int | None) -> GraphBuilder:
        unused = [e.name for e in self.layout if e.name not in self.used]
        if unused:
            raise LayoutError(f"{unused[0]}: parameter has no place in the graph; {_SUPPORTED}")
        N = sum(s.size for s in self.node_sets)
        node_values = torch.full((N, 1 + max((c for _, c, _ in self.features), default=0)), self.zero)
        for ids, col, pos in self.features:
            node_values[ids, col] = pos
        width = max(blk["values"].shape[1] for blk in self.edges)
        edge_values = torch.cat([_pad(blk["values"], width, self.zero) for blk in self.edges])

        def per_node(fn) -> Tensor:
            return torch.cat([fn(s) for s in self.node_sets]).long()

        builder = GraphBuilder(
            self.layout,
            node_values,
            edge_values,
            torch.stack([torch.cat([blk["src"] for blk in self.edges]), torch.cat([blk["dst"] for blk in self.edges])]),
            per_node(lambda s: torch.full((s.size,), int(s.type))),
            per_node(lambda s: torch.full((s.size,), s.layer)),
            per_node(lambda s: torch.arange(1, s.size + 1) if s.fixed else torch.zeros(s.size)),
            *(torch.cat([blk[k] for blk in self.edges]).long() for k in ("type", "layer", "pos")),
            tuple(self.grids),
        )
        return builder.padded(node_dim or builder.node_dim, edge_dim or builder.edge_dim)


# --------------------------------------------------------------------------- readers


class _LayoutReader:
    """Reads a ParamLayout: Linear/Conv layers in order, each reading the previous one unless the
    PermutationSpec says it reads a residual stream (a group several layers write into)."""

    def __init__(self, plan: _Plan, layout: ParamLayout, spec: PermutationSpec | None) -> None:
        self.plan, self.layout, self.spec = plan, layout, spec
        self.dense = layout.dense_layers()
        if not self.dense:
            raise LayoutError(f"layout has no Linear/Conv weights (entries {layout.names[:3]}); {_SUPPORTED}")
        index = {w.name: k for k, (w, _) in enumerate(self.dense)}
        self.reads: dict[int, str] = {}  # layer -> group of its inputs
        self.writes: dict[int, str] = {}  # layer -> group of its outputs
        self.writers: dict[str, list[int]] = {}  # group -> layers writing its neurons, in order
        for g in spec.groups if spec is not None else ():
            for ref in g.axes:
                if ref.param not in layout:
                    raise LayoutError(f"permutation group {g.name!r} names {ref.param!r}, which the layout lacks")
                k = index.get(ref.param)
                if k is not None and ref.axis == 1:
                    self.reads[k] = g.name
                elif k is not None and ref.axis == 0:
                    self.writes[k] = g.name
                    self.writers.setdefault(g.name, []).append(k)

    def read(self) -> None:
        first = self.dense[0][0]
        inputs = self.plan.nodes(first.shape[1], NodeType.INPUT, 0, spatial=len(first.shape) > 2, fixed=True)
        sets: list[_NodeSet] = []
        for k, (w, b) in enumerate(self.dense):
            sets.append(self.plan.dense(w, b, inputs if k == 0 else self._source(k, w, sets), k + 1))
            writers = self.writers.get(self.writes.get(k, ""), [])
            if k in writers and writers.index(k) > 0:  # the last layer of a skip block
                self.plan.residual(sets[writers[writers.index(k) - 1]], sets[k], w.name)
        outputs = [len(sets) - 1] if self.spec is None else [k for k in range(len(sets)) if k not in self.writes]
        for k in outputs:
            self.plan.mark_output(sets[k])
        self._norms(inputs, sets)

    def _source(self, k: int, w: ParamEntry, sets: list[_NodeSet]) -> _NodeSet:
        if self.spec is None:
            return sets[k - 1]
        earlier = [p for p in self.writers.get(self.reads.get(k, ""), []) if p < k]
        if not earlier:
            raise LayoutError(
                f"{w.name}: its inputs are in no permutation group written by an earlier layer; "
                f"only chains and skip blocks over hidden layers can be read from a layout; {_SUPPORTED}"
            )
        return sets[max(earlier)]

    def _norms(self, inputs: _NodeSet, sets: list[_NodeSet]) -> None:
        """Norm parameters act on the outputs of the closest Linear/Conv layer before them."""
        current, k = inputs, 0
        modules: list[tuple[str, _NodeSet, list[ParamEntry]]] = []
        for e in self.layout:
            if e.role == "weight":
                current, k = sets[k], k + 1
            elif e.role in ("norm", "other"):
                module = e.name.rsplit(".", 1)[0]
                if not modules or modules[-1][0] != module or modules[-1][1] is not current:
                    modules.append((module, current, []))
                modules[-1][2].append(e)
        for _, ns, entries in modules:
            self.plan.norm(entries, ns)


class _ModuleReader:
    """Walks a module's leaves in registration order, like ``PermutationSpec.from_module``, and
    also reads ``nn.MultiheadAttention`` as self-attention."""

    def __init__(self, plan: _Plan, layout: ParamLayout) -> None:
        self.plan, self.layout = plan, layout
        self.inputs: _NodeSet | None = None
        self.current: _NodeSet | None = None
        self.layer = 0

    def read(self, module: nn.Module) -> None:
        self._visit("", module)
        if self.current is None:
            raise LayoutError(f"module {type(module).__name__} has no Linear/Conv/attention layers; {_SUPPORTED}")
        self.plan.mark_output(self.current)

    def _source(self, size: int, spatial: bool) -> _NodeSet:
        if self.current is None:
            self.inputs = self.current = self.plan.nodes(size, NodeType.INPUT, 0, spatial=spatial, fixed=True)
        return self.current

    def _visit(self, name: str, mod: nn.Module) -> None:
        prefix = f"{name}." if name else ""
        if isinstance(mod, nn.MultiheadAttention):
            if mod.in_proj_weight is None:
                raise LayoutError(
                    f"{name}: attention with kdim/vdim != embed_dim (separate q/k/v projections) is not supported"
                )
            src = self._source(mod.embed_dim, False)
            self.current = self.plan.attention(prefix, mod.num_heads, src, self.layer + 1)
            self.layer += 2
        elif getattr(mod, "weight_space_residual", False):
            stream = self.current
            self._children(name, mod)
            if stream is None:
                stream = self.inputs  # a skip around the network input
            if stream is not None and self.current is not stream:
                self.plan.residual(stream, self.current, name)
        elif next(mod.children(), None) is not None:
            self._children(name, mod)
        elif module_kind(mod) == "dense":
            w = self.layout[prefix + "weight"]
            b = self.layout[prefix + "bias"] if prefix + "bias" in self.layout else None
            src = self._source(w.shape[1], not isinstance(mod, nn.Linear))
            self.layer += 1
            self.current = self.plan.dense(w, b, src, self.layer)
        elif module_kind(mod) == "norm":
            entries = [e for e in self.layout if e.name.rsplit(".", 1)[0] == name]
            if entries:
                self.plan.norm(entries, self._source(entries[0].shape[0], False))
        elif module_symmetries(mod) is None:
            raise LayoutError(
                f"module {name!r} ({type(mod).__name__}) is not supported; {_SUPPORTED} "
                "(declare `weight_space_symmetries` on a custom activation)"
            )

    def _children(self, name: str, mod: nn.Module) -> None:
        for child_name, child in mod.named_children():
            self._visit(f"{name}.{child_name}" if name else child_name, child)


# --------------------------------------------------------------------------- networkx


def to_networkx(data: Data | Batch, index: int | None = None):
    """One graph as a ``networkx.MultiDiGraph`` (a DiGraph that keeps a skip edge and the weight
    edge between the same neurons apart). Pass ``index`` to pick a graph of a multi-graph Batch."""
    try:
        import networkx as nx
    except ImportError:  # pragma: no cover - networkx is a dependency
        raise ImportError("to_networkx needs networkx: pip install networkx") from None
    if isinstance(data, Batch):
        if index is None and data.num_graphs != 1:
            raise ValueError(f"to_networkx: the batch holds {data.num_graphs} graphs; pass index=")
        data = data.get_example(index or 0)
    graph = nx.MultiDiGraph()
    for n in range(data.num_nodes):
        graph.add_node(
            n,
            type=NodeType(int(data.node_type[n])),
            layer=int(data.node_layer[n]),
            pos=int(data.node_pos[n]),
            features=data.x[n].tolist(),
        )
    for k, (u, v) in enumerate(data.edge_index.t().tolist()):
        values = data.edge_attr[k].tolist()
        graph.add_edge(
            u,
            v,
            key=k,
            type=EdgeType(int(data.edge_type[k])),
            layer=int(data.edge_layer[k]),
            pos=int(data.edge_pos[k]),
            weight=values[0],
            features=values,
        )
    return graph
