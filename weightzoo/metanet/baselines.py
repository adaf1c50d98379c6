"""Baselines of weight-space learning: a flat MLP, weight statistics (StatNN) and DeepSets.

``FlatMLP`` reads the flat parameter vector and ignores every symmetry. ``StatNN`` and the
gradient-boosted trees of ``fit_statnn_gbt`` read per-tensor statistics of the weights
(Unterthiner et al. 2020, "Predicting Neural Network Accuracy from Weights"). ``DeepSets``
treats the neurons of a network as a set, so it is invariant to hidden-neuron permutations.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
from torch import Tensor, nn

from ..errors import SpecError
from ..layout import ParamLayout
from ..weightspace import WeightSpace

STATISTICS = ("mean", "var", "q0", "q25", "q50", "q75", "q100")
_QUANTILES = (0.0, 0.25, 0.5, 0.75, 1.0)


def _as_flat(x: WeightSpace | Tensor) -> Tensor:
    """``[B, P]`` flat parameters from a WeightSpace or a flat tensor (``[P]`` means B = 1)."""
    flat = x.to_flat() if isinstance(x, WeightSpace) else x
    return flat.unsqueeze(0) if flat.dim() == 1 else flat


def _mlp(in_features: int, hidden: Sequence[int], out_features: int, dropout: float = 0.0) -> nn.Sequential:
    """Linear -> ReLU (-> Dropout) blocks, then a Linear head."""
    layers: list[nn.Module] = []
    for h in hidden:
        layers += [nn.Linear(in_features, h), nn.ReLU()]
        if dropout > 0:
            layers.append(nn.Dropout(dropout))
        in_features = h
    layers.append(nn.Linear(in_features, out_features))
    return nn.Sequential(*layers)


def _reset(module: nn.Module) -> None:
    """Re-initialize every Linear/Embedding inside ``module``."""
    for m in module.modules():
        if isinstance(m, nn.Linear | nn.Embedding):
            m.reset_parameters()


# --------------------------------------------------------------------------- FlatMLP


class FlatMLP(nn.Module):
    """MLP on the flat parameter vector: the symmetry-blind baseline."""

    def __init__(
        self, layout: ParamLayout, hidden: Sequence[int] = (256, 256), out_features: int = 1, dropout: float = 0.0
    ) -> None:
        super().__init__()
        self.layout = layout
        self.in_features = layout.size
        self.hidden = tuple(hidden)
        self.out_features = out_features
        self.dropout = dropout
        self.mlp = _mlp(layout.size, self.hidden, out_features, dropout)

    def reset_parameters(self) -> None:
        """Re-initialize all weights."""
        _reset(self.mlp)

    def forward(self, x: WeightSpace | Tensor) -> Tensor:
        """``[B, out_features]`` from a WeightSpace or ``[B, P]`` flat parameters."""
        return self.mlp(_as_flat(x))

    def __repr__(self) -> str:
        return f"{self.__class__.__name__}({self.in_features}, {self.out_features}, hidden={list(self.hidden)})"


# --------------------------------------------------------------------------- statistics


def statistic_names(layout: ParamLayout) -> list[str]:
    """Names of the columns of ``weight_statistics``: ``"<param>/<statistic>"``."""
    return [f"{e.name}/{s}" for e in layout if e.role in ("weight", "bias") for s in STATISTICS]


def weight_statistics(x: WeightSpace | Tensor, layout: ParamLayout) -> Tensor:
    """StatNN features ``[B, 7 * T]``: mean, variance and the 0/25/50/75/100 % quantiles of each
    weight and bias tensor (T of them), in layout order (Unterthiner et al. 2020).

    Variance is the population variance (ddof = 0); quantiles interpolate linearly, as numpy.
    """
    flat = _as_flat(x)
    if flat.shape[-1] != layout.size:
        raise ValueError(f"weight_statistics: got {flat.shape[-1]} parameters, layout has {layout.size}")
    q = torch.tensor(_QUANTILES, dtype=flat.dtype, device=flat.device)
    feats = []
    for e in layout:
        if e.role not in ("weight", "bias"):
            continue
        t = flat[:, e.offset : e.stop]
        n = t.shape[1]
        s = t.sort(dim=1).values
        pos = q * (n - 1)
        lo = pos.floor().long()
        hi = pos.ceil().long()
        frac = pos - lo.to(flat.dtype)
        quant = s[:, lo] + (s[:, hi] - s[:, lo]) * frac
        feats += [t.mean(dim=1, keepdim=True), t.var(dim=1, unbiased=False, keepdim=True), quant]
    if not feats:
        return flat.new_zeros(flat.shape[0], 0)
    return torch.cat(feats, dim=1)


def statistic_slots(layouts: Sequence[ParamLayout]) -> list[str]:
    """Weight and bias slots (``ParamLayout.slot``) of one or more layouts, in first-seen order."""
    slots: dict[str, None] = {}
    for layout in layouts:
        slots.update((layout.slot(e), None) for e in layout if e.role in ("weight", "bias"))
    return list(slots)


def slot_statistics(flat: Tensor, layouts: Sequence[ParamLayout], layout_ids: Tensor, slots: Sequence[str]) -> Tensor:
    """StatNN features ``[B, 7 * S]`` of members with different layouts, aligned by slot.

    Member ``i`` has layout ``layouts[layout_ids[i]]`` (its row may be zero-padded); a slot its
    layout lacks (a deeper net's middle layer) gets zeros.
    """
    column = {name: k for k, name in enumerate(slots)}
    width = len(STATISTICS)
    out = flat.new_zeros(flat.shape[0], width * len(slots))
    for lid, layout in enumerate(layouts):
        rows = (layout_ids == lid).nonzero().flatten()
        if len(rows) == 0:
            continue
        feats = weight_statistics(flat[rows, : layout.size], layout)
        cols = [column[layout.slot(e)] for e in layout if e.role in ("weight", "bias")]
        idx = torch.tensor(cols, device=flat.device)[:, None] * width + torch.arange(width, device=flat.device)
        out[rows[:, None], idx.flatten()[None, :]] = feats
    return out


class StatNN(nn.Module):
    """MLP on standardized weight statistics; call ``fit_normalization`` on training features.

    Given several layouts (a zoo mixing depths and widths) the statistics are aligned by slot.
    """

    def __init__(
        self,
        layout: ParamLayout | Sequence[ParamLayout],
        hidden: Sequence[int] = (256, 256),
        out_features: int = 1,
        *,
        slots: Sequence[str] | None = None,
    ) -> None:
        super().__init__()
        self.layouts = [layout] if isinstance(layout, ParamLayout) else list(layout)
        self.slots = list(slots) if slots is not None else statistic_slots(self.layouts)
        self.in_features = len(self.slots) * len(STATISTICS)
        self.hidden = tuple(hidden)
        self.out_features = out_features
        self.register_buffer("feature_mean", torch.zeros(self.in_features))
        self.register_buffer("feature_std", torch.ones(self.in_features))
        self.mlp = _mlp(self.in_features, self.hidden, out_features)

    @property
    def layout(self) -> ParamLayout:
        return self.layouts[0]

    def reset_parameters(self) -> None:
        """Re-initialize the MLP and forget the normalization."""
        _reset(self.mlp)
        self.feature_mean.zero_()
        self.feature_std.fill_(1.0)

    @torch.no_grad()
    def fit_normalization(self, features: Tensor) -> StatNN:
        """Set the feature mean/std from ``[N, F]`` training statistics (constant columns get std 1)."""
        features = features.to(self.feature_mean)
        std = features.std(dim=0, unbiased=False)
        self.feature_mean.copy_(features.mean(dim=0))
        self.feature_std.copy_(torch.where(std > 1e-8, std, torch.ones_like(std)))
        return self

    def statistics(
        self, x: WeightSpace | Tensor, layouts: Sequence[ParamLayout] | None = None, layout_ids: Tensor | None = None
    ) -> Tensor:
        """Raw statistics ``[B, F]``. Members have layout ``layouts[layout_ids[i]]`` (default:
        this model's first layout); every slot they use must be one the model knows."""
        flat = _as_flat(x)
        layouts = self.layouts if layouts is None else list(layouts)
        if layout_ids is None:
            layout_ids = torch.zeros(flat.shape[0], dtype=torch.long, device=flat.device)
        unknown = set(statistic_slots(layouts)) - set(self.slots)
        if unknown:
            raise SpecError(
                f"StatNN: these networks have layers the model was not trained on ({sorted(unknown)[:3]}); "
                "use a zoo of the architectures it was trained on"
            )
        return slot_statistics(flat, layouts, layout_ids, self.slots)

    def features(self, x: WeightSpace | Tensor, layouts=None, layout_ids: Tensor | None = None) -> Tensor:
        """Standardized statistics ``[B, F]``."""
        return (self.statistics(x, layouts, layout_ids) - self.feature_mean) / self.feature_std

    def forward(self, x: WeightSpace | Tensor, layouts=None, layout_ids: Tensor | None = None) -> Tensor:
        """``[B, out_features]`` from a WeightSpace or ``[B, P]`` flat parameters."""
        return self.head(self.statistics(x, layouts, layout_ids))

    def head(self, statistics: Tensor) -> Tensor:
        """``[B, out_features]`` from raw statistics (computed once, e.g. for a whole training set)."""
        return self.mlp((statistics - self.feature_mean) / self.feature_std)

    def __repr__(self) -> str:
        return f"{self.__class__.__name__}({self.in_features}, {self.out_features}, hidden={list(self.hidden)})"


def fit_statnn_gbt(
    features: Tensor | np.ndarray, targets: Tensor | np.ndarray, task: str = "regression", seed: int = 0
):
    """Fit scikit-learn's HistGradientBoosting{Regressor,Classifier} on weight statistics."""
    from sklearn.ensemble import HistGradientBoostingClassifier, HistGradientBoostingRegressor

    X = _numpy(features)
    y = _numpy(targets).reshape(len(X), -1)
    if task == "regression":
        if y.shape[1] != 1:
            raise ValueError("fit_statnn_gbt: regression needs one target per member")
        model = HistGradientBoostingRegressor(random_state=seed)
    elif task == "classification":
        model = HistGradientBoostingClassifier(random_state=seed)
    else:
        raise ValueError(f"fit_statnn_gbt: task must be 'regression' or 'classification', not {task!r}")
    return model.fit(X, y[:, 0])


def predict_gbt(model, features: Tensor | np.ndarray) -> np.ndarray:
    """Predictions ``[N]`` (values or class labels) of a model from ``fit_statnn_gbt``."""
    return model.predict(_numpy(features))


def _numpy(x: Tensor | np.ndarray) -> np.ndarray:
    return x.detach().cpu().numpy() if isinstance(x, Tensor) else np.asarray(x)


# --------------------------------------------------------------------------- DeepSets


class DeepSets(nn.Module):
    """DeepSets over neurons: each neuron of each Linear/Conv layer is a set element.

    An element's features are its incoming weights (zero-padded to the widest fan-in), its
    bias and a learned embedding of its layer; ``phi`` maps each element, the set is pooled
    (``"mean"`` or ``"sum"``) and ``rho`` maps the pooled vector. Incoming weights of layers
    after the first come from hidden neurons, so they are sorted: the features (and hence
    the output) do not depend on the order of the hidden neurons of any layer.
    """

    def __init__(
        self,
        layout: ParamLayout,
        hidden: int = 64,
        out_features: int = 1,
        *,
        in_channels: int = 1,
        pool: str = "mean",
        layer_embedding: int = 8,
    ) -> None:
        super().__init__()
        if pool not in ("mean", "sum"):
            raise ValueError(f"DeepSets: pool must be 'mean' or 'sum', not {pool!r}")
        self.layout = layout
        self.fan_ins = [int(np.prod(w.shape[1:])) for w, _ in layout.dense_layers()]
        if not self.fan_ins:
            raise ValueError("DeepSets: the layout has no Linear/Conv layers")
        self.max_fan_in = max(self.fan_ins)
        self.in_channels = in_channels
        self.hidden = hidden
        self.out_features = out_features
        self.pool = pool
        self.embedding = nn.Embedding(len(self.fan_ins), layer_embedding)
        element = in_channels * (self.max_fan_in + 1) + layer_embedding
        self.phi = _mlp(element, (hidden, hidden), hidden)
        self.rho = _mlp(hidden, (hidden,), out_features)

    def reset_parameters(self) -> None:
        """Re-initialize all weights."""
        _reset(self)

    def elements(self, ws: WeightSpace) -> Tensor:
        """Element features ``[B, N, F]`` for the N neurons of all layers."""
        parts = []
        for i, (W, b) in enumerate(zip(ws.weights, ws.biases)):
            B, C, out = W.shape[:3]
            w = W.reshape(B, C, out, -1).transpose(1, 2)  # [B, out, C, fan_in]
            if i > 0:
                w = w.sort(dim=-1).values
            w = nn.functional.pad(w, (0, self.max_fan_in - w.shape[-1]))
            feat = torch.cat([w, b.transpose(1, 2).unsqueeze(-1)], dim=-1).reshape(B, out, -1)
            emb = self.embedding.weight[i].expand(B, out, -1)
            parts.append(torch.cat([feat, emb], dim=-1))
        return torch.cat(parts, dim=1)

    def forward(self, x: WeightSpace | Tensor) -> Tensor:
        """``[B, out_features]`` from a WeightSpace or ``[B, P]`` flat parameters."""
        ws = x if isinstance(x, WeightSpace) else WeightSpace.from_flat(x, self.layout)
        h = self.phi(self.elements(ws))
        h = h.mean(dim=1) if self.pool == "mean" else h.sum(dim=1)
        return self.rho(h)

    def __repr__(self) -> str:
        return (
            f"{self.__class__.__name__}(layers={len(self.fan_ins)}, {self.out_features}, "
            f"hidden={self.hidden}, pool={self.pool})"
        )
