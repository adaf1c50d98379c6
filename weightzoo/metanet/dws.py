"""DWS layers (Navon et al. 2023, "Equivariant Architectures for Learning in Deep Weight Spaces").

A :class:`DWSLayer` maps MLP weights with ``C_in`` feature channels to ``C_out`` channels and
commutes with every permutation of hidden neurons. Input neurons of the first layer and output
neurons of the last layer are not permutable: the layer gives them individual, per-position
parameters. :class:`DWSNet` stacks layers and ends in an invariant or an equivariant head.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from torch import Tensor, nn
from torch.nn import functional as F

from ..errors import SpecError
from ..layout import ParamLayout
from ..symmetry import PermutationSpec
from ..weightspace import WeightSpace

_NORMS = (None, "layernorm")


def check_mlp_layout(layout: ParamLayout, spec: PermutationSpec | None = None) -> list[tuple[int, int]]:
    """``(out, in)`` per Linear layer, or SpecError naming why ``layout`` is not a plain MLP."""
    hint = ": use gmn or statnn"
    other = [e.name for e in layout if e.role not in ("weight", "bias")]
    if other:
        raise SpecError(f"DWSNet takes MLP layouts; this zoo has normalization/other tensors ({other[0]!r}){hint}")
    shapes = [w.shape for w, _ in layout.dense_layers()]
    if not shapes:
        raise SpecError("DWSNet takes MLP layouts; this layout has no Linear weights")
    for shape in shapes:
        if len(shape) != 2:
            raise SpecError(f"DWSNet takes MLP layouts; this zoo has Conv{len(shape) - 2}d weights{hint}")
    for k in range(1, len(shapes)):
        if shapes[k][1] != shapes[k - 1][0]:
            raise SpecError(
                f"DWSNet takes MLP layouts; layer {k} reads {shapes[k][1]} inputs but layer {k - 1} "
                f"has {shapes[k - 1][0]} outputs (not a chain of Linear layers){hint}"
            )
    if spec is not None:
        dense = layout.dense_layers()
        for g in spec.groups:
            touched = {layout[ref.param].layer for ref in g.out_axes}
            if len(touched) != 1 or len(g.in_axes) != 1 or len(g.axes) > 3:
                raise SpecError(
                    f"DWSNet takes MLP layouts; permutation group {g.name!r} spans several layers "
                    f"(residual connections){hint}"
                )
        if len(spec.groups) != len(dense) - 1:
            raise SpecError(f"DWSNet takes MLP layouts; expected {len(dense) - 1} hidden groups, got {len(spec)}")
    return [(int(s[0]), int(s[1])) for s in shapes]


def _mix(x: Tensor, w: Tensor) -> Tensor:
    """Channel mixing ``[B, F, a, b] x [F, Co, pa, pb] -> [B, Co, ., .]``; size 1 broadcasts.

    An axis of size 1 in ``w`` means one matrix shared by all positions; an axis of size 1 in
    ``x`` means a pooled quantity. Positions become batch dimensions of one ``matmul``.
    """
    if w.shape[2] == w.shape[3] == 1:  # one matrix for every position: a single GEMM
        return (x.movedim(1, -1) @ w[:, :, 0, 0]).movedim(-1, 1)
    out = torch.matmul(x.permute(2, 3, 0, 1), w.permute(2, 3, 0, 1))  # [a, b, B, Co]
    return out.permute(2, 3, 0, 1)


class DWSLayer(nn.Module):
    """Linear layer between MLP weight spaces, equivariant to hidden-neuron permutations.

    With ``W_l: [B, C, n_{l+1}, n_l]`` and ``b_l: [B, C, n_{l+1}]``, the output ``W'_l`` sums
    learned channel mixings of: (1) ``W_l`` itself; (2) a row term built from ``b_l``, the row
    means of ``W_l`` and the column means of ``W_{l+1}``, broadcast along columns; (3) a column
    term built from ``b_{l-1}``, the column means of ``W_l`` and the row means of ``W_{l-1}``,
    broadcast along rows; (4) a global term from the mean of every ``W_k`` and ``b_k``; and a
    learned bias. ``b'_l`` sums the row term (2) and the global term (4) and a bias. These are
    the pool-and-broadcast blocks of the characterization for permutable axes (weight->weight,
    weight->bias, bias->weight, bias->bias). Along the fixed axes (inputs of layer 0, outputs of
    the last layer) every term's mixing matrix is per position, and fixed axes are pooled by
    a mean; the full characterization also allows maps that mix different fixed positions
    (e.g. a dense map over all input neurons), which are left out to keep the parameter count
    linear in the input and output widths.
    """

    def __init__(self, layout_shapes: Sequence[tuple[int, int]], in_channels: int, out_channels: int) -> None:
        super().__init__()
        self.shapes = [(int(o), int(i)) for o, i in layout_shapes]
        self.in_channels, self.out_channels = in_channels, out_channels
        L = len(self.shapes)
        for k in range(1, L):
            if self.shapes[k][1] != self.shapes[k - 1][0]:
                raise SpecError(f"DWSLayer: layer {k} has {self.shapes[k][1]} inputs, expected {self.shapes[k - 1][0]}")
        sizes = [self.shapes[0][1]] + [o for o, _ in self.shapes]
        # positions: n_k for a fixed neuron axis (k = 0 or L), 1 for a permutable one
        pos = [sizes[k] if k in (0, L) else 1 for k in range(L + 1)]
        ci, co, g = in_channels, out_channels, 2 * L * in_channels
        self.w_own, self.w_row, self.w_col, self.w_glob, self.b_row, self.b_glob = (
            nn.ParameterList() for _ in range(6)
        )
        self.w_bias, self.b_bias = nn.ParameterList(), nn.ParameterList()
        for k in range(L):
            r, c = pos[k + 1], pos[k]
            f_row = ci * (3 if k + 1 < L else 2)
            f_col = ci * (3 if k > 0 else 1)
            self.w_own.append(nn.Parameter(torch.empty(ci, co, r, c)))
            self.w_row.append(nn.Parameter(torch.empty(f_row, co, r, c)))
            self.w_col.append(nn.Parameter(torch.empty(f_col, co, r, c)))
            self.w_glob.append(nn.Parameter(torch.empty(g, co, r, c)))
            self.w_bias.append(nn.Parameter(torch.empty(co, r, c)))
            self.b_row.append(nn.Parameter(torch.empty(f_row, co, r, 1)))
            self.b_glob.append(nn.Parameter(torch.empty(g, co, r, 1)))
            self.b_bias.append(nn.Parameter(torch.empty(co, r, 1)))
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """Uniform init scaled by each output's total fan-in, like ``nn.Linear``."""
        for k in range(len(self.shapes)):
            fan_w = sum(p.shape[0] for p in (self.w_own[k], self.w_row[k], self.w_col[k], self.w_glob[k]))
            fan_b = self.b_row[k].shape[0] + self.b_glob[k].shape[0]
            for params, fan in (
                ((self.w_own[k], self.w_row[k], self.w_col[k], self.w_glob[k], self.w_bias[k]), fan_w),
                ((self.b_row[k], self.b_glob[k], self.b_bias[k]), fan_b),
            ):
                for p in params:
                    nn.init.uniform_(p, -1 / math.sqrt(fan), 1 / math.sqrt(fan))

    def forward(self, x: WeightSpace) -> WeightSpace:
        """Map a WeightSpace with ``in_channels`` channels to one with ``out_channels``."""
        Ws = list(x.weights)
        bs = [b.unsqueeze(-1) for b in x.biases]  # [B, C, n, 1]
        L = len(Ws)
        if [tuple(w.shape[2:]) for w in Ws] != self.shapes or x.channels != self.in_channels:
            got = [tuple(w.shape[2:]) for w in Ws]
            raise SpecError(f"DWSLayer expects C={self.in_channels}, layers {self.shapes}; got C={x.channels}, {got}")
        rmean = [w.mean(3, keepdim=True) for w in Ws]  # [B, C, n_{l+1}, 1]
        cmean = [w.mean(2, keepdim=True) for w in Ws]  # [B, C, 1, n_l]
        glob = torch.cat([t.mean((2, 3)) for t in Ws + bs], 1)[..., None, None]  # [B, 2LC, 1, 1]
        new_w, new_b = [], []
        for k in range(L):
            row = [bs[k], rmean[k]] + ([cmean[k + 1].transpose(2, 3)] if k + 1 < L else [])
            col = [cmean[k]] + ([bs[k - 1].transpose(2, 3), rmean[k - 1].transpose(2, 3)] if k > 0 else [])
            row_t, col_t = torch.cat(row, 1), torch.cat(col, 1)
            w = _mix(Ws[k], self.w_own[k]) + _mix(row_t, self.w_row[k]) + _mix(col_t, self.w_col[k])
            w = w + _mix(glob, self.w_glob[k]) + self.w_bias[k]
            b = _mix(row_t, self.b_row[k]) + _mix(glob, self.b_glob[k]) + self.b_bias[k]
            new_w.append(w.expand(-1, -1, *Ws[k].shape[2:]))
            new_b.append(b.expand(-1, -1, Ws[k].shape[2], 1)[..., 0])
        return WeightSpace(tuple(new_w), tuple(new_b), x.layout)

    def __repr__(self) -> str:
        return f"{self.__class__.__name__}({self.in_channels}, {self.out_channels}, layers={self.shapes})"


class ChannelLayerNorm(nn.Module):
    """LayerNorm over the feature channels of every entry: elementwise, so equivariant."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.norm = nn.LayerNorm(channels)

    def reset_parameters(self) -> None:
        self.norm.reset_parameters()

    def forward(self, x: WeightSpace) -> WeightSpace:
        return x.map(lambda t: self.norm(t.movedim(1, -1)).movedim(-1, 1))

    def __repr__(self) -> str:
        return f"{self.__class__.__name__}({self.norm.normalized_shape[0]})"


class InvariantPool(nn.Module):
    """Mean over hidden-neuron axes per layer; fixed axes (inputs, outputs) stay as features."""

    def __init__(self, layout_shapes: Sequence[tuple[int, int]], channels: int) -> None:
        super().__init__()
        self.shapes = [tuple(s) for s in layout_shapes]
        L = len(self.shapes)
        n_in, n_out = self.shapes[0][1], self.shapes[-1][0]
        if L == 1:
            self.out_features = channels * (n_in * n_out + n_out)
        else:
            self.out_features = channels * (n_in + 1 + 2 * (L - 2) + 2 * n_out)

    def forward(self, x: WeightSpace) -> Tensor:
        L, parts = len(x.weights), []
        for k, (w, b) in enumerate(zip(x.weights, x.biases)):
            dims = [d for d, fixed in ((2, k == L - 1), (3, k == 0)) if not fixed]
            parts.append((w.mean(dims) if dims else w).flatten(1))
            parts.append((b if k == L - 1 else b.mean(2)).flatten(1))
        return torch.cat(parts, 1)

    def __repr__(self) -> str:
        return f"{self.__class__.__name__}(out_features={self.out_features})"


class DWSNet(nn.Module):
    """DWS layers with ReLU, then an invariant head (pool + MLP) or an equivariant DWS head.

    ``pooling="invariant"`` returns ``[B, out_features]``; ``pooling="equivariant"`` returns a
    WeightSpace with ``out_features`` channels. ``norm`` is None or ``"layernorm"`` (over channels).
    Pass ``spec`` to also reject residual layouts, which a ParamLayout alone cannot reveal.
    """

    def __init__(
        self,
        layout: ParamLayout,
        hidden_channels: int = 16,
        depth: int = 3,
        out_features: int = 1,
        pooling: str = "invariant",
        dropout: float = 0.0,
        norm: str | None = None,
        *,
        in_channels: int = 1,
        head_hidden: int = 128,
        spec: PermutationSpec | None = None,
    ) -> None:
        super().__init__()
        if pooling not in ("invariant", "equivariant"):
            raise SpecError(f"DWSNet: pooling {pooling!r} is not 'invariant' or 'equivariant'")
        if norm not in _NORMS:
            raise SpecError(f"DWSNet: norm {norm!r} is not one of {_NORMS}")
        if depth < 1:
            raise SpecError(f"DWSNet: depth must be >= 1, got {depth}")
        self.layout, self.pooling = layout, pooling
        self.shapes = check_mlp_layout(layout, spec)
        chans = [in_channels] + [hidden_channels] * depth
        self.layers = nn.ModuleList(DWSLayer(self.shapes, a, b) for a, b in zip(chans[:-1], chans[1:]))
        self.norms = nn.ModuleList(ChannelLayerNorm(c) if norm else nn.Identity() for c in chans[1:])
        self.dropout = nn.Dropout(dropout)
        if pooling == "invariant":
            self.pool = InvariantPool(self.shapes, hidden_channels)
            self.head: nn.Module = nn.Sequential(
                nn.Linear(self.pool.out_features, head_hidden),
                nn.ReLU(),
                nn.Dropout(dropout),
                nn.Linear(head_hidden, out_features),
            )
        else:
            self.head = DWSLayer(self.shapes, hidden_channels, out_features)

    def reset_parameters(self) -> None:
        """Re-initialize every layer."""
        for m in self.modules():
            if m is not self and hasattr(m, "reset_parameters"):
                m.reset_parameters()

    def forward(self, x: WeightSpace) -> Tensor | WeightSpace:
        for layer, norm in zip(self.layers, self.norms):
            x = norm(layer(x)).map(lambda t: self.dropout(F.relu(t)))
        if self.pooling == "invariant":
            return self.head(self.pool(x))
        return self.head(x)

    def __repr__(self) -> str:
        c = self.layers[-1].out_channels
        return f"{self.__class__.__name__}(layers={self.shapes}, hidden={c}, depth={len(self.layers)}, {self.pooling})"
