"""The batched network (generic path): the architecture's layers, a training step's work
(:class:`Chunk`), n same-shaped members' forward pass under autograd (:class:`BatchedNet`) and the
gradient path built on it (:class:`AutogradPath`)."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ...errors import SpecError
from ...layout import ParamLayout
from .activations import ActRule, act_rule
from .losses import per_sample_loss
from .randomness import dropout_factors_, hash32

_DENSE = ("linear", "conv1d", "conv2d")
_SPATIAL = ("conv1d", "conv2d", "maxpool1d", "maxpool2d", "gap1d", "gap2d")
_SUPPORTED = (*_DENSE, *_SPATIAL, "act", "dropout", "flatten", "layernorm", "residual")
_IN_RESIDUAL = ("linear", "act", "layernorm")  # what a skip block on dense features may hold


@dataclass(frozen=True)
class Layer:
    """One entry of the architecture: its description, its module and its parameter names."""

    spec: Mapping[str, Any]
    module: nn.Module
    names: tuple[str, ...]
    site: int  # index among hidden activations (dropout sites), -1 if not one
    in_place: ActRule | None = None  # an activation that may overwrite its input (a fresh layer output)
    inner: tuple[Layer, ...] = ()  # the layers of a skip block (``x + inner(x)``)


def compile_layers(arch: Mapping[str, Any], module: nn.Sequential, layout: ParamLayout) -> list[Layer]:
    """Pair each architecture layer with its module, its layout names and its dropout site
    (activations inside skip blocks are not dropout sites)."""
    return _pair(arch["layers"], module, layout.names, "", sites=True)


def _pair(specs, modules: nn.Sequential, names: list[str], prefix: str, sites: bool) -> list[Layer]:
    last_dense = max((i for i, d in enumerate(specs) if d["type"] in (*_DENSE, "residual")), default=-1)
    layers, site = [], 0
    for i, (d, m) in enumerate(zip(specs, modules)):
        own = tuple(n for n in names if n.startswith(f"{prefix}{i}.") and n.count(".") == prefix.count(".") + 1)
        hidden = sites and d["type"] == "act" and i < last_dense
        fresh = i > 0 and specs[i - 1]["type"] in (*_DENSE, "layernorm")  # its input is a new tensor
        rule = act_rule(m) if d["type"] == "act" and fresh else None
        inner = tuple(_pair(d["layers"], m, names, f"{prefix}{i}.", sites=False)) if d["type"] == "residual" else ()
        in_place = None if rule is None or rule.reads_input else rule
        layers.append(Layer(d, m, own, site if hidden else -1, in_place, inner))
        site += hidden
    return layers


def check_supported(arch: Mapping[str, Any]) -> None:
    """Raise SpecError if the group trainer cannot train this architecture."""
    for i, d in enumerate(arch["layers"]):
        if d["type"] not in _SUPPORTED:
            raise SpecError(
                f"architecture: layers[{i}] type {d['type']!r} is not supported by the vectorized trainer; "
                f"supported: {', '.join(_SUPPORTED)}"
            )
        for j, inner in enumerate(d.get("layers", []) if d["type"] == "residual" else []):
            if inner["type"] not in _IN_RESIDUAL:
                raise SpecError(
                    f"architecture: layers[{i}].layers[{j}] type {inner['type']!r} cannot sit in a skip block "
                    f"for the vectorized trainer; supported there: {', '.join(_IN_RESIDUAL)}"
                )


def shape_input(arch: Mapping[str, Any], x: Tensor, batch_dims: int) -> Tensor:
    """Add a channel axis of 1 when a convolution comes first and the samples have none."""
    first = arch["layers"][0]["type"]
    if first in ("conv1d", "conv2d") and x.dim() - batch_dims == int(first[4]):
        return x.unsqueeze(batch_dims)
    return x


@dataclass(frozen=True)
class Dropout:
    """What a training step needs to drop out hidden units of some members."""

    keys: Tensor  # int32 [n, hidden layers]
    threshold: Tensor  # float32 [n]
    scale: Tensor  # float32 [n]


@dataclass
class Chunk:
    """One training step's work for members ``[start, stop)`` of the group."""

    params: dict[str, Tensor]  # [n, *shape] views
    grads: dict[str, Tensor]  # [n, *shape] views
    index: Tensor  # int64 [n, batch]: training samples
    label_index: Tensor  # int64 [n, batch]: rows of the flattened targets
    weights: Tensor | float  # [n, 1, batch] (sample weight / count) or 1 / batch
    drop: Dropout | None
    x_source: Tensor
    y_source: Tensor

    def leaves(self) -> dict[str, Tensor]:
        """Fresh views of the parameters, to become autograd leaves."""
        return {k: v.view(v.shape) for k, v in self.params.items()}


class BatchedNet:
    """Forward pass of n same-shaped members at once, differentiable by autograd.

    Activations are ``[n, features, batch]`` ("feature-major") around linear layers and
    ``[batch, n * channels, *spatial]`` around convolutions; the output is ``[n, out, batch]``.
    """

    def __init__(self, arch: Mapping[str, Any], module: nn.Sequential, layout: ParamLayout) -> None:
        check_supported(arch)
        self.arch = arch
        self.layers = compile_layers(arch, module, layout)
        self.sites = sum(layer.site >= 0 for layer in self.layers)
        self.first_dense = next(i for i, layer in enumerate(self.layers) if layer.spec["type"] in _DENSE)

    def __call__(
        self, params: Mapping[str, Tensor], x: Tensor, drop: Dropout | None = None, trace: list[Tensor] | None = None
    ) -> Tensor:
        """``x`` is ``[n, batch, *input]``; ``drop`` is None in eval mode. With a list ``trace``, each
        dense layer's neuron values (after its activation, if one follows) are appended to it."""
        n, b = x.shape[:2]
        x = shape_input(self.arch, x, 2)
        if self.arch["layers"][0]["type"] in _SPATIAL:
            h = x.transpose(0, 1).reshape(b, n * x.shape[2], *x.shape[3:])
            return self._run(h, True, 0, params, drop, trace)
        return self._run(x.reshape(n, b, -1).transpose(1, 2), False, 0, params, drop, trace)

    def shared(self, params: Mapping[str, Tensor], x: Tensor, trace: list[Tensor] | None = None) -> Tensor:
        """Eval-mode outputs ``[n, out, batch]`` for inputs ``[batch, *input]`` that every member sees:
        the first dense layer is one matmul (or ungrouped convolution) for the whole group.
        ``trace`` as in ``__call__``."""
        first = self.layers[self.first_dense]
        w = params[first.names[0]]
        if any(layer.spec["type"] != "flatten" for layer in self.layers[: self.first_dense]):
            return self(params, x.expand(w.shape[0], *x.shape), trace=trace)
        b = params[first.names[1]] if len(first.names) > 1 else None
        x = shape_input(self.arch, x, 1)
        if first.spec["type"] == "linear":
            h = torch.mm(w.reshape(-1, w.shape[-1]), x.reshape(len(x), -1).t()).view(*w.shape[:2], len(x))
            h, spatial = (h if b is None else h + b.unsqueeze(-1)), False
        else:
            h, spatial = _conv(first, x, w, b, groups=1), True
        if trace is not None:
            trace.append(h)
        return self._run(h, spatial, self.first_dense + 1, params, None, trace)

    def _run(
        self,
        h: Tensor,
        spatial: bool,
        start: int,
        params: Mapping[str, Tensor],
        drop: Dropout | None,
        trace: list[Tensor] | None = None,
    ) -> Tensor:
        """Layers ``start:`` on ``h`` (``[n, features, batch]``, or ``[batch, n * C, *S]`` if ``spatial``)."""
        n = params[self.layers[self.first_dense].names[0]].shape[0]
        h, spatial = self._apply(self.layers[start:], h, spatial, n, params, drop, trace)
        return _to_features(h, n) if spatial else h

    def _apply(
        self,
        layers,
        h: Tensor,
        spatial: bool,
        n: int,
        params: Mapping[str, Tensor],
        drop: Dropout | None,
        trace: list[Tensor] | None = None,
    ) -> tuple[Tensor, bool]:
        for layer in layers:
            kind = layer.spec["type"]
            if kind in _SPATIAL and not spatial:
                raise SpecError(f"architecture: {kind} after a dense feature vector is not supported")
            if kind == "flatten" or (kind == "linear" and spatial):
                h, spatial = _to_features(h, n), False
            if kind in _DENSE:
                h = _dense(layer, params, h, n)
            elif kind == "act" and layer.in_place is not None:
                h = layer.in_place.forward(h, None)
            elif kind in ("maxpool1d", "maxpool2d", "act"):
                h = layer.module(h)
            elif kind in ("gap1d", "gap2d"):
                h, spatial = _to_features(h.mean(dim=tuple(range(2, h.dim())), keepdim=True), n), False
            elif kind == "layernorm":
                h = _layer_norm(h, spatial, layer, params)
            elif kind == "residual":
                if spatial:
                    raise SpecError("architecture: skip blocks are supported on dense features only")
                h = h + self._apply(layer.inner, h, False, n, params, None)[0]
            if drop is not None and layer.site >= 0:
                h = h * _batched_dropout(h, spatial, drop, layer.site)
            if trace is not None and kind in _DENSE:
                trace.append(h)
            elif trace is not None and kind == "act" and trace:
                trace[-1] = h  # a neuron's value is taken after its activation
        return h, spatial


def _dense(layer: Layer, params: Mapping[str, Tensor], h: Tensor, n: int) -> Tensor:
    """A linear layer as a batched matmul, a convolution as a grouped convolution."""
    w = params[layer.names[0]]
    b = params[layer.names[1]] if len(layer.names) > 1 else None
    if layer.spec["type"] == "linear":
        return torch.bmm(w, h) if b is None else torch.baddbmm(b.unsqueeze(-1), w, h)
    return _conv(layer, h, w, b, groups=n)


def _conv(layer: Layer, h: Tensor, w: Tensor, b: Tensor | None, groups: int) -> Tensor:
    """The members' convolutions ``w`` (``[n, O, C, *k]``) on ``h``, their outputs side by side."""
    w, b = w.reshape(-1, *w.shape[2:]), None if b is None else b.reshape(-1)
    stride, padding = layer.spec.get("stride", 1), layer.spec.get("padding", 0)
    if layer.spec["type"] == "conv1d":
        return F.conv1d(h, w, b, stride, padding, 1, groups)
    if h.device.type == "cpu":  # oneDNN's grouped 2-D convolutions are faster channels-last (1.4x for training)
        h, w = h.contiguous(memory_format=torch.channels_last), w.contiguous(memory_format=torch.channels_last)
    return F.conv2d(h, w, b, stride, padding, 1, groups)


def _to_features(h: Tensor, n: int) -> Tensor:
    """``[batch, n * C, *spatial]`` -> ``[n, C * spatial, batch]``, flattened as ``nn.Flatten`` does."""
    return h.reshape(h.shape[0], n, -1).permute(1, 2, 0)


def _layer_norm(h: Tensor, spatial: bool, layer: Layer, params: Mapping[str, Tensor]) -> Tensor:
    """LayerNorm over the features of ``[n, features, batch]``, per-member affine."""
    if spatial:
        raise SpecError("architecture: layernorm is supported on dense features only (after linear layers)")
    mean = h.mean(1, keepdim=True)
    var = h.var(1, unbiased=False, keepdim=True)
    h = (h - mean) * torch.rsqrt(var + layer.module.eps)
    if layer.names:
        h = h * params[layer.names[0]].unsqueeze(-1) + params[layer.names[1]].unsqueeze(-1)
    return h


def _batched_dropout(h: Tensor, spatial: bool, drop: Dropout, site: int) -> Tensor:
    """Dropout factors for ``h``; element counters number each member's ``[batch, *features]`` row-major."""
    keys, thr, scale = drop.keys[:, site], drop.threshold, drop.scale
    if spatial:  # [B, n*C, *S] viewed as [B, n, C*S]
        b, n = h.shape[0], keys.shape[0]
        per = h[0].numel() // n
        counters = torch.arange(b * per, dtype=torch.int32, device=h.device).view(b, 1, per)
        view, shape = (1, n, 1), (b, n, per)
    else:
        n, f, b = h.shape
        counters = _feature_counters(f, b, h.device)
        view, shape = (n, 1, 1), h.shape
    hashed = hash32(counters + keys.view(view))
    factors = torch.empty(shape, device=h.device)
    return dropout_factors_(hashed, factors, thr.view(view), scale.view(view)).view(h.shape)


def _feature_counters(features: int, batch: int, device) -> Tensor:
    """int32 ``[features, batch]``: element (b, f) of a ``[batch, features]`` activation is ``b * features + f``."""
    return torch.arange(batch * features, dtype=torch.int32, device=device).view(batch, features).t()


class AutogradPath:
    """Gradients of any supported architecture through :class:`BatchedNet` and one autograd backward."""

    def __init__(self, net: BatchedNet, kind: str) -> None:
        self.net, self.kind = net, kind

    def gradients(self, c: Chunk) -> None:
        """Forward, weighted loss and one backward for the chunk; fills ``chunk.grads``."""
        leaves = {k: v.requires_grad_() for k, v in c.leaves().items()}
        n, batch = c.index.shape
        x = c.x_source.index_select(0, c.index.reshape(-1)).view(n, batch, *c.x_source.shape[1:])
        out = self.net(leaves, x, c.drop)
        labels = c.y_source[c.label_index]
        weights = c.weights if isinstance(c.weights, float) else c.weights.view(n, batch)
        loss = (per_sample_loss(out, labels, self.kind) * weights).sum()
        for name, g in zip(leaves, torch.autograd.grad(loss, list(leaves.values()))):
            c.grads[name].copy_(g)
