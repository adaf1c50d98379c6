"""Training zoo members: the vectorized group trainer and the plain per-member reference loop.

``train_group`` trains G members that share an architecture in one batched computation:

* parameters, gradients and optimizer state of the whole group are each one flat tensor (layer
  by layer, ``[G, *shape]`` per layer), so an optimizer step is one fused ``torch._fused_adam_``
  call (or a few SGD ops) with per-member learning rate and weight decay;
* linear + activation stacks (MLPs, SIRENs) take a hand-written path (:class:`DensePath`):
  batched matmuls (``bmm``) and one pass per elementwise step into buffers reused every step,
  gradients written straight into the group's gradient tensor;
* anything else (convolutions as grouped convolutions on ``[batch, G * channels, *spatial]``,
  pooling, LayerNorm) runs :class:`BatchedNet` under autograd, one backward per chunk of members;
* members are kept sorted by training-subset size, so members that still have samples in a step
  are a suffix of the group and nothing is computed for the others.

The same code runs on CUDA (``device="cuda"``). ``train_member`` is the plain loop
(``nn.Module`` + ``torch.optim``) the trainer is checked and benchmarked against. Both draw
every random choice the same way, so they follow the same trajectory up to float rounding:

* init: a ``torch.Generator`` seeded with the member's ``seed`` draws the weights in layout order;
* training subset and per-epoch data order: ``torch.randperm`` with a Generator seeded by a hash of
  (seed, stream, epoch);
* dropout masks: a counter-based integer hash of (seed, epoch, step, layer, element) evaluated as
  tensor ops, so a whole group's masks come from one call per layer.

A member's randomness never depends on the other members of its group.

Semantics shared by both trainers:

* an epoch is one pass over the member's training subset (``train_fraction`` of the training set,
  rounded, at least one sample, chosen by ``seed``) in a fresh random order, in batches of
  ``batch_size``; the last partial batch is used (the group trainer pads it and masks the padding);
* loss: mean cross-entropy (classification) or mean squared error (regression) over the batch;
* dropout with probability ``dropout`` follows every hidden activation, in training only; dropout
  layers inside the architecture are ignored; a unit is kept when its 32-bit hash (as float32)
  exceeds a threshold, so ``p`` is exact up to float32 rounding (about 1e-7);
* metrics at each checkpoint epoch (0 is the initialization), in eval mode, over the member's
  training subset and the whole test set: loss and accuracy, or loss (MSE) and PSNR with peak 1.0,
  ``10 * log10(1 / mse)`` (targets are expected in a range of width about 1).

Inits (``fan_in``/``fan_out`` include the kernel size; biases start at zero except for
``default``, norm layers at weight 1 / bias 0; ``init_scale`` multiplies the dense weights):

========================  ====================================================================
``default``               torch's own: weights and biases U(-1/sqrt(fan_in), 1/sqrt(fan_in))
``uniform`` / ``normal``  variance 1/fan_in (LeCun): U(+-sqrt(3/fan_in)) / N(0, 1/fan_in)
``kaiming_uniform``       He, gain sqrt(2): U(+-sqrt(6/fan_in)); ``kaiming_normal`` N(0, 2/fan_in)
``xavier``                Glorot uniform: U(+-sqrt(6/(fan_in + fan_out)))
``siren``                 first layer U(+-1/fan_in), later ones U(+-sqrt(6/fan_in)/w0)
========================  ====================================================================
"""

from __future__ import annotations

import bisect
import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, replace
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..errors import SpecError
from ..layout import ParamLayout
from . import archs
from .tasks import Task

HPARAM_DEFAULTS: dict[str, Any] = {
    "seed": 0,
    "optimizer": "adam",
    "lr": 1e-3,
    "weight_decay": 0.0,
    "dropout": 0.0,
    "init": "kaiming_uniform",
    "init_scale": 1.0,
    "train_fraction": 1.0,
    "target": 0,
}
INITS = ("default", "uniform", "normal", "kaiming_uniform", "kaiming_normal", "xavier", "siren")
OPTIMIZERS = ("sgd", "sgd+momentum", "adam", "adamw")
MOMENTUM = 0.9
ADAM_BETAS = (0.9, 0.999)
ADAM_EPS = 1e-8
EVAL_CHUNK = 1024  # samples per member evaluated at once at checkpoints
EVAL_BYTES = 2 << 20  # the widest activation of one evaluation chunk: small tensors, no page faults

_DENSE = ("linear", "conv1d", "conv2d")
_SPATIAL = ("conv1d", "conv2d", "maxpool1d", "maxpool2d", "gap1d", "gap2d")
_SUPPORTED = (*_DENSE, *_SPATIAL, "act", "dropout", "flatten", "layernorm")


# ------------------------------------------------------------------ hyperparameters


@dataclass(frozen=True)
class MemberConfig:
    """One member's validated training hyperparameters (see ``HPARAM_DEFAULTS``)."""

    seed: int
    optimizer: str
    lr: float
    weight_decay: float
    dropout: float
    init: str
    init_scale: float
    train_fraction: float
    target: int


def member_config(hparams: Mapping[str, Any]) -> MemberConfig:
    """Validate one member's hyperparameters; other keys (architecture arguments) are ignored."""
    hp = {**HPARAM_DEFAULTS, **{k: v for k, v in hparams.items() if k in HPARAM_DEFAULTS}}
    cfg = MemberConfig(
        seed=_as_number("seed", hp["seed"], int),
        optimizer=_as_choice("optimizer", hp["optimizer"], OPTIMIZERS),
        lr=_as_number("lr", hp["lr"], float, low=0.0, low_open=True),
        weight_decay=_as_number("weight_decay", hp["weight_decay"], float, low=0.0),
        dropout=_as_number("dropout", hp["dropout"], float, low=0.0, high=1.0),
        init=_as_choice("init", hp["init"], INITS),
        init_scale=_as_number("init_scale", hp["init_scale"], float, low=0.0, low_open=True),
        train_fraction=_as_number("train_fraction", hp["train_fraction"], float, low=0.0, low_open=True, high=1.0),
        target=_as_number("target", hp["target"], int, low=0),
    )
    if cfg.dropout >= 1.0:
        raise SpecError(f"hparams: dropout must be in [0, 1), got {cfg.dropout}")
    return cfg


def _as_choice(name: str, value: Any, valid: Sequence[str]) -> str:
    if str(value) not in valid:
        raise SpecError(f"hparams: unknown {name} {value!r}; valid: {', '.join(valid)}")
    return str(value)


def _as_number(
    name: str, value: Any, kind: type, *, low: float | None = None, high: float | None = None, low_open: bool = False
) -> Any:
    """``value`` as ``kind``, finite and within ``[low, high]`` (``(low, high]`` if ``low_open``)."""
    try:
        number = kind(value)
    except (TypeError, ValueError):
        raise SpecError(
            f"hparams: {name} must be {'an integer' if kind is int else 'a number'}, got {value!r}"
        ) from None
    if kind is int and number != value:
        raise SpecError(f"hparams: {name} must be an integer, got {value!r}")
    too_low = low is not None and (number <= low if low_open else number < low)
    if not math.isfinite(number) or too_low or (high is not None and number > high):
        bounds = f"{'(' if low_open else '['}{low}, {high if high is not None else 'inf'}]"
        raise SpecError(f"hparams: {name} must be in {bounds}, got {value!r}")
    return number


# ------------------------------------------------------------------ counter-based randomness

_SUBSET, _ORDER, _DROPOUT = 1, 2, 3  # independent streams derived from a member's seed
_MULT1 = 0x7FEB352D
_MULT2 = 0x846CA68B - (1 << 32)  # the same bits as a signed int32


def hash32_(x: Tensor, scratch: Tensor) -> Tensor:
    """Chris Wellons' ``lowbias32`` integer hash of int32 ``x``, in place (two's-complement
    wrap-around); ``scratch`` is an int32 tensor of the same shape."""
    for shift, mask, mult in ((16, 0xFFFF, _MULT1), (15, 0x1FFFF, _MULT2), (16, 0xFFFF, None)):
        x.bitwise_xor_(torch.bitwise_right_shift(x, shift, out=scratch).bitwise_and_(mask))
        if mult is not None:
            x.mul_(mult)
    return x


def hash32(x: Tensor) -> Tensor:
    """``lowbias32`` of int32 ``x``, as a new tensor."""
    x = x.contiguous().clone()
    return hash32_(x, torch.empty_like(x))


def _int32(value: int) -> int:
    """The low 32 bits of ``value`` as a signed int32."""
    value &= 0xFFFFFFFF
    return value - (1 << 32) if value >= 1 << 31 else value


def seed_keys(seeds: Sequence[int], device: torch.device | str = "cpu") -> Tensor:
    """int32 ``[G]``: each member's 64-bit seed hashed into a 32-bit key."""
    lo = torch.tensor([_int32(s) for s in seeds], dtype=torch.int32, device=device)
    hi = torch.tensor([_int32(s >> 32) for s in seeds], dtype=torch.int32, device=device)
    return hash32(hash32(lo) + hi)


def mix(keys: Tensor, *values: int) -> Tensor:
    """Fold integers into int32 keys, one hash per value: a new independent stream per tuple."""
    for v in values:
        keys = hash32(keys + _int32(v))
    return keys


def permutation(key: int, size: int) -> Tensor:
    """``torch.randperm(size)`` drawn by a Generator seeded with ``key`` (CPU, int64)."""
    return torch.randperm(size, generator=torch.Generator().manual_seed(key & 0xFFFFFFFF))


def dropout_threshold(p: float) -> float:
    """The float32 threshold a member's hashed counters must exceed to keep a unit: hashes are
    uniform over int32, so ``P(kept) = 1 - p`` (up to float32 rounding); ``-inf`` for ``p = 0``."""
    return -math.inf if p == 0 else float(np.float32(round(p * 2**32) - 2**31))


def dropout_factors_(hashed: Tensor, out: Tensor, threshold: Tensor, scale: Tensor) -> Tensor:
    """Inverted-dropout factors into ``out``: ``scale`` where ``float32(hashed) > threshold``, else 0.

    ``hashed`` and the threshold are integer-valued floats, so their difference is 0 or at least 1
    in size and the clamp yields exactly 0 or ``scale``; ``threshold`` and ``scale`` broadcast.
    """
    out.copy_(hashed)
    return out.sub_(threshold).mul_(scale).clamp_(min=torch.zeros_like(scale), max=scale)


def step_keys(keys: Tensor, epoch: int, steps: int, layers: int) -> Tensor:
    """int32 ``[G, steps, layers]``: the dropout key of every (step, hidden layer) of an epoch."""
    epoch_keys = mix(keys, _DROPOUT, epoch)
    s = torch.arange(steps, dtype=torch.int32, device=keys.device)
    l_ = torch.arange(layers, dtype=torch.int32, device=keys.device)
    return hash32(hash32(epoch_keys[:, None] + s)[:, :, None] + l_)


# ------------------------------------------------------------------ data: subsets and order


def subset_size(fraction: float, n: int) -> int:
    """Samples in a member's training subset: ``fraction * n`` rounded, at least 1."""
    return max(1, min(n, round(fraction * n)))


def training_subsets(keys: Tensor, sizes: Sequence[int], n: int) -> Tensor:
    """int64 ``[G, max(sizes)]``: each member's training indices (a random subset of ``range(n)``
    unless it is all of it), ascending, padded with 0."""
    if min(sizes) == n:
        return torch.arange(n, device=keys.device).expand(len(sizes), n)
    rows = torch.zeros(len(sizes), max(sizes), dtype=torch.int64)
    for row, key, size in zip(rows, mix(keys, _SUBSET).tolist(), sizes):
        row[:size] = permutation(key, n)[:size].sort().values
    return rows.to(keys.device)


def epoch_order(keys: Tensor, subsets: Tensor, sizes: Sequence[int], epoch: int, length: int) -> Tensor:
    """int64 ``[G, length]``: each member's training indices for ``epoch`` in a fresh random order,
    followed by padding (index 0) up to ``length``. One small call per member and epoch: a sort of
    hashed keys for the whole group is several times slower on CPU."""
    rows = torch.zeros(len(sizes), length, dtype=torch.int64)
    full = subsets.stride(0) == 0  # every member trains on the whole set: the order is the permutation
    source = subsets[0].cpu() if full else subsets.cpu()
    for g, (key, size) in enumerate(zip(mix(keys, _ORDER, epoch).tolist(), sizes)):
        perm = permutation(key, size)
        rows[g, :size] = perm if full else source[g][perm]
    return rows.to(keys.device)


# ------------------------------------------------------------------ initialization


def _fans(shape: tuple[int, ...]) -> tuple[int, int]:
    receptive = math.prod(shape[2:])
    return shape[1] * receptive, shape[0] * receptive


def _draw_weight(shape: tuple[int, ...], init: str, first: bool, w0: float, gen: torch.Generator) -> Tensor:
    """One dense layer's initial weight (before ``init_scale``)."""
    fan_in, fan_out = _fans(shape)
    w = torch.empty(shape)
    if init in ("normal", "kaiming_normal"):
        return w.normal_(0.0, math.sqrt((1.0 if init == "normal" else 2.0) / fan_in), generator=gen)
    bound = {
        "default": 1.0 / math.sqrt(fan_in),
        "uniform": math.sqrt(3.0 / fan_in),
        "kaiming_uniform": math.sqrt(6.0 / fan_in),
        "xavier": math.sqrt(6.0 / (fan_in + fan_out)),
        "siren": 1.0 / fan_in if first else math.sqrt(6.0 / fan_in) / w0,
    }[init]
    return w.uniform_(-bound, bound, generator=gen)


def _draw_bias(shape: tuple[int, ...], fan_in: int, init: str, gen: torch.Generator) -> Tensor:
    if init != "default":
        return torch.zeros(shape)
    bound = 1.0 / math.sqrt(fan_in)
    return torch.empty(shape).uniform_(-bound, bound, generator=gen)


def _sine_w0(arch: Mapping[str, Any]) -> float:
    return next((float(d.get("w0", 30.0)) for d in arch["layers"] if d.get("name") == "sine"), 30.0)


def init_params(arch: Mapping[str, Any], layout: ParamLayout, cfg: MemberConfig) -> Tensor:
    """float32 ``[P]``: the member's initial parameters, drawn in layout order from its seed."""
    gen = torch.Generator().manual_seed(cfg.seed)
    w0 = _sine_w0(arch)
    fan_in = {w.layer: _fans(w.shape)[0] for w, _ in layout.dense_layers()}
    parts = []
    for e in layout:
        if e.role == "weight":
            t = _draw_weight(e.shape, cfg.init, e.layer == 0, w0, gen) * cfg.init_scale
        elif e.role == "bias":
            t = _draw_bias(e.shape, fan_in[e.layer], cfg.init, gen)
        else:  # norm affine, running statistics: weight and running_var 1, the rest 0
            t = torch.full(e.shape, 1.0 if e.name.endswith(("weight", "running_var")) else 0.0)
        parts.append(t.reshape(-1))
    return torch.cat(parts)


# ------------------------------------------------------------------ the batched network (generic path)


@dataclass(frozen=True)
class _Layer:
    """One entry of the architecture: its description, its module and its parameter names."""

    spec: Mapping[str, Any]
    module: nn.Module
    names: tuple[str, ...]
    site: int  # index among hidden activations (dropout sites), -1 if not one
    in_place: _ActRule | None = None  # an activation that may overwrite its input (a fresh layer output)


def _compile(arch: Mapping[str, Any], module: nn.Sequential, layout: ParamLayout) -> list[_Layer]:
    """Pair each architecture layer with its module, its layout names and its dropout site."""
    specs = arch["layers"]
    last_dense = max((i for i, d in enumerate(specs) if d["type"] in _DENSE), default=-1)
    layers, site = [], 0
    for i, (d, m) in enumerate(zip(specs, module)):
        names = tuple(n for n in layout.names if n.split(".", 1)[0] == str(i))
        hidden = d["type"] == "act" and i < last_dense
        fresh = i > 0 and specs[i - 1]["type"] in (*_DENSE, "layernorm")  # its input is a new tensor
        rule = _act_rule(m) if d["type"] == "act" and fresh else None
        layers.append(_Layer(d, m, names, site if hidden else -1, None if rule is None or rule.reads_input else rule))
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


def shape_input(arch: Mapping[str, Any], x: Tensor, batch_dims: int) -> Tensor:
    """Add a channel axis of 1 when a convolution comes first and the samples have none."""
    first = arch["layers"][0]["type"]
    if first in ("conv1d", "conv2d") and x.dim() - batch_dims == int(first[4]):
        return x.unsqueeze(batch_dims)
    return x


@dataclass(frozen=True)
class _Dropout:
    """What a training step needs to drop out hidden units of some members."""

    keys: Tensor  # int32 [n, hidden layers]
    threshold: Tensor  # float32 [n]
    scale: Tensor  # float32 [n]


class BatchedNet:
    """Forward pass of n same-shaped members at once, differentiable by autograd.

    Activations are ``[n, features, batch]`` ("feature-major") around linear layers and
    ``[batch, n * channels, *spatial]`` around convolutions; the output is ``[n, out, batch]``.
    """

    def __init__(self, arch: Mapping[str, Any], module: nn.Sequential, layout: ParamLayout) -> None:
        check_supported(arch)
        self.arch = arch
        self.layers = _compile(arch, module, layout)
        self.sites = sum(layer.site >= 0 for layer in self.layers)
        self.first_dense = next(i for i, layer in enumerate(self.layers) if layer.spec["type"] in _DENSE)

    def __call__(self, params: Mapping[str, Tensor], x: Tensor, drop: _Dropout | None = None) -> Tensor:
        """``x`` is ``[n, batch, *input]``; ``drop`` is None in eval mode."""
        n, b = x.shape[:2]
        x = shape_input(self.arch, x, 2)
        if self.arch["layers"][0]["type"] in _SPATIAL:
            return self._run(x.transpose(0, 1).reshape(b, n * x.shape[2], *x.shape[3:]), True, 0, params, drop)
        return self._run(x.reshape(n, b, -1).transpose(1, 2), False, 0, params, drop)

    def shared(self, params: Mapping[str, Tensor], x: Tensor) -> Tensor:
        """Eval-mode outputs ``[n, out, batch]`` for inputs ``[batch, *input]`` that every member sees:
        the first dense layer is one matmul (or ungrouped convolution) for the whole group."""
        first = self.layers[self.first_dense]
        w = params[first.names[0]]
        if any(layer.spec["type"] != "flatten" for layer in self.layers[: self.first_dense]):
            return self(params, x.expand(w.shape[0], *x.shape))
        b = params[first.names[1]] if len(first.names) > 1 else None
        x = shape_input(self.arch, x, 1)
        if first.spec["type"] == "linear":
            h = torch.matmul(w, x.reshape(len(x), -1).t())
            return self._run(h if b is None else h + b.unsqueeze(-1), False, self.first_dense + 1, params, None)
        h = _conv(first, x, w, b, groups=1)
        return self._run(h, True, self.first_dense + 1, params, None)

    def _run(self, h: Tensor, spatial: bool, start: int, params: Mapping[str, Tensor], drop: _Dropout | None) -> Tensor:
        """Layers ``start:`` on ``h`` (``[n, features, batch]``, or ``[batch, n * C, *S]`` if ``spatial``)."""
        n = params[self.layers[self.first_dense].names[0]].shape[0]
        for layer in self.layers[start:]:
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
            if drop is not None and layer.site >= 0:
                h = h * _batched_dropout(h, spatial, drop, layer.site)
        return _to_features(h, n) if spatial else h


def _dense(layer: _Layer, params: Mapping[str, Tensor], h: Tensor, n: int) -> Tensor:
    """A linear layer as a batched matmul, a convolution as a grouped convolution."""
    w = params[layer.names[0]]
    b = params[layer.names[1]] if len(layer.names) > 1 else None
    if layer.spec["type"] == "linear":
        return torch.bmm(w, h) if b is None else torch.baddbmm(b.unsqueeze(-1), w, h)
    return _conv(layer, h, w, b, groups=n)


def _conv(layer: _Layer, h: Tensor, w: Tensor, b: Tensor | None, groups: int) -> Tensor:
    """The members' convolutions ``w`` (``[n, O, C, *k]``) on ``h``, their outputs side by side."""
    conv = F.conv1d if layer.spec["type"] == "conv1d" else F.conv2d
    return conv(
        h,
        w.reshape(-1, *w.shape[2:]),
        None if b is None else b.reshape(-1),
        stride=layer.spec.get("stride", 1),
        padding=layer.spec.get("padding", 0),
        groups=groups,
    )


def _to_features(h: Tensor, n: int) -> Tensor:
    """``[batch, n * C, *spatial]`` -> ``[n, C * spatial, batch]``, flattened as ``nn.Flatten`` does."""
    return h.reshape(h.shape[0], n, -1).permute(1, 2, 0)


def _layer_norm(h: Tensor, spatial: bool, layer: _Layer, params: Mapping[str, Tensor]) -> Tensor:
    """LayerNorm over the features of ``[n, features, batch]``, per-member affine."""
    if spatial:
        raise SpecError("architecture: layernorm is supported on dense features only (after linear layers)")
    mean = h.mean(1, keepdim=True)
    var = h.var(1, unbiased=False, keepdim=True)
    h = (h - mean) * torch.rsqrt(var + layer.module.eps)
    if layer.names:
        h = h * params[layer.names[0]].unsqueeze(-1) + params[layer.names[1]].unsqueeze(-1)
    return h


def _batched_dropout(h: Tensor, spatial: bool, drop: _Dropout, site: int) -> Tensor:
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


# ------------------------------------------------------------------ the fast path: dense stacks by hand

_ATEN = torch.ops.aten


@dataclass(frozen=True)
class _ActRule:
    """How the fast path applies an activation and multiplies a gradient by its derivative.

    ``forward(z, out)`` returns the activation (in place on ``z`` unless ``reads_input``, then into
    ``out``); ``backward(grad, saved)`` overwrites ``grad``, reading the input ``z`` if ``reads_input``
    else the output (it may overwrite ``saved``, which is not needed afterwards).
    """

    reads_input: bool
    forward: Callable[[Tensor, Tensor | None], Tensor]
    backward: Callable[[Tensor, Tensor], Tensor]


def _act_rule(module: nn.Module) -> _ActRule | None:
    """The fast-path rule of an activation module, or None if it has none."""
    if isinstance(module, nn.ReLU):
        return _ActRule(False, lambda z, o: z.relu_(), lambda g, y: _ATEN.threshold_backward(g, y, 0.0, grad_input=g))
    if isinstance(module, nn.Tanh):
        return _ActRule(False, lambda z, o: z.tanh_(), lambda g, y: _ATEN.tanh_backward(g, y, grad_input=g))
    if isinstance(module, nn.Sigmoid):
        return _ActRule(False, lambda z, o: z.sigmoid_(), lambda g, y: _ATEN.sigmoid_backward(g, y, grad_input=g))
    if isinstance(module, nn.LeakyReLU):
        s = module.negative_slope
        return _ActRule(
            False, lambda z, o: F.leaky_relu_(z, s), lambda g, y: _ATEN.leaky_relu_backward(g, y, s, True, grad_input=g)
        )
    if isinstance(module, nn.ELU):
        a = module.alpha
        return _ActRule(
            False, lambda z, o: F.elu_(z, a), lambda g, y: _ATEN.elu_backward(g, a, 1, 1, True, y, grad_input=g)
        )
    if isinstance(module, nn.GELU):
        ap = module.approximate
        return _ActRule(
            True,
            lambda z, o: _ATEN.gelu.out(z, approximate=ap, out=o),
            lambda g, z: _ATEN.gelu_backward(g, z, approximate=ap, grad_input=g),
        )
    if isinstance(module, nn.SiLU):
        return _ActRule(
            True, lambda z, o: _ATEN.silu.out(z, out=o), lambda g, z: _ATEN.silu_backward(g, z, grad_input=g)
        )
    if isinstance(module, archs.Sine):
        w0 = module.w0
        return _ActRule(
            True, lambda z, o: torch.mul(z, w0, out=o).sin_(), lambda g, z: g.mul_(z.mul_(w0).cos_()).mul_(w0)
        )
    if isinstance(module, nn.Identity):
        return _ActRule(False, lambda z, o: z, lambda g, y: g)
    return None


@dataclass(frozen=True)
class _Block:
    """A linear layer and the activation after it (the unit of the fast path)."""

    weight: str
    bias: str | None
    fan_in: int
    fan_out: int
    act: _ActRule | None
    site: int  # dropout site, -1 if none


def dense_blocks(arch: Mapping[str, Any], layers: list[_Layer]) -> list[_Block] | None:
    """The architecture as linear+activation blocks, or None if the fast path cannot run it
    (convolutions, norms, a leading non-flatten layer, two activations in a row, an output activation)."""
    blocks: list[_Block] = []
    for i, layer in enumerate(layers):
        kind = layer.spec["type"]
        if kind == "linear":
            blocks.append(
                _Block(
                    layer.names[0],
                    layer.names[1] if len(layer.names) > 1 else None,
                    layer.spec["in"],
                    layer.spec["out"],
                    None,
                    -1,
                )
            )
        elif kind == "act" and blocks and blocks[-1].act is None and layer.site >= 0:
            rule = _act_rule(layer.module)
            if rule is None:
                return None
            blocks[-1] = replace(blocks[-1], act=rule, site=layer.site)
        elif not (kind == "dropout" or (kind == "flatten" and i == 0)):
            return None
    if not blocks or any(b.act is None for b in blocks[:-1]):
        return None  # two linear layers in a row: the generic path
    return blocks


class _Buffers:
    """Reusable tensors for one chunk of members, so training steps allocate (almost) nothing.

    Hidden activations are batch-major ``[n, batch, features]``; the logits ``[n, out, batch]``.
    """

    def __init__(self, blocks: list[_Block], chunk: int, batch: int, in_features: int, dropout: bool, device):
        def empty(*shape: int, dtype=torch.float32) -> Tensor:
            return torch.empty(shape, dtype=dtype, device=device)

        hidden, last = blocks[:-1], blocks[-1]
        widest = max(max(b.fan_in, b.fan_out) for b in blocks)
        self.x = empty(chunk * batch, in_features)
        self.z = [empty(chunk, batch, b.fan_out) for b in hidden] + [empty(chunk, last.fan_out, batch)]
        self.y = [empty(chunk, batch, b.fan_out) if b.act.reads_input else None for b in hidden]
        self.a = [empty(chunk, batch, b.fan_out) if dropout else None for b in hidden]
        self.f = [empty(chunk, batch, b.fan_out) if dropout else None for b in hidden]
        self.ints = (empty(chunk * widest * batch, dtype=torch.int32), empty(chunk * widest * batch, dtype=torch.int32))
        self.grad = (empty(chunk * widest * batch), empty(chunk * widest * batch))
        self.probs = empty(chunk, last.fan_out, batch)
        self.minus_one = torch.full((chunk, 1, batch), -1.0, device=device)
        self.counters = [
            torch.arange(batch * b.fan_out, dtype=torch.int32, device=device).view(batch, -1) for b in hidden
        ]

    @staticmethod
    def view(flat: Tensor, *shape: int) -> Tensor:
        return flat[: math.prod(shape)].view(shape)


class DensePath:
    """Gradients of linear+activation stacks, written by hand: batched matmuls into reused buffers,
    one pass per elementwise step, gradients straight into the group's buffers.

    Hidden activations are batch-major (``[n, batch, features]``: the input gathers straight into
    it and the matmuls need no transposed activations); the last layer writes feature-major logits
    ``[n, out, batch]``, whose softmax over the class axis is fast.
    """

    def __init__(
        self, blocks: list[_Block], kind: str, chunk: int, batch: int, in_features: int, dropout: bool, device
    ):
        self.blocks, self.kind = blocks, kind
        self.buf = _Buffers(blocks, chunk, batch, in_features, dropout, device)

    def gradients(self, chunk: _Chunk) -> None:
        """Forward, loss gradient and backward of one chunk; fills ``chunk.grads``."""
        inputs = self._forward(chunk)
        grad = self._loss_gradient(chunk, inputs.pop())
        self._backward(chunk, inputs, grad)

    def _forward(self, c: _Chunk) -> list[Tensor]:
        """The input of every block (``[n, batch, features]``) and the logits (``[n, out, batch]``)."""
        n, batch = c.index.shape
        h = torch.index_select(c.x_source, 0, c.index.reshape(-1), out=self.buf.x[: n * batch]).view(n, batch, -1)
        outs = [h]
        for k, blk in enumerate(self.blocks[:-1]):
            z = torch.bmm(h, c.params[blk.weight].transpose(1, 2), out=self.buf.z[k][:n])
            if blk.bias is not None:
                z.add_(c.params[blk.bias].unsqueeze(1))
            h = blk.act.forward(z, _rows(self.buf.y[k], n))
            if c.drop is not None:
                h = torch.mul(h, self._factors(c, k), out=self.buf.a[k][:n])
            outs.append(h)
        last = self.blocks[-1]
        z = torch.bmm(c.params[last.weight], h.transpose(1, 2), out=self.buf.z[-1][:n])
        outs.append(z if last.bias is None else z.add_(c.params[last.bias].unsqueeze(-1)))
        return outs

    def _factors(self, c: _Chunk, k: int) -> Tensor:
        """This step's dropout factors of hidden block ``k``, ``[n, batch, features]``."""
        n, batch = c.index.shape
        shape = (n, batch, self.blocks[k].fan_out)
        key = c.drop.keys[:, self.blocks[k].site].view(n, 1, 1)
        hashed = torch.add(self.buf.counters[k], key, out=_Buffers.view(self.buf.ints[0], *shape))
        hash32_(hashed, _Buffers.view(self.buf.ints[1], *shape))
        t, s = c.drop.threshold.view(n, 1, 1), c.drop.scale.view(n, 1, 1)
        return dropout_factors_(hashed, self.buf.f[k][:n], t, s)

    def _loss_gradient(self, c: _Chunk, out: Tensor) -> Tensor:
        """d(sum of member losses)/d(outputs), ``[n, out, batch]``."""
        n, batch = c.index.shape
        if self.kind == "classification":
            labels = torch.index_select(c.y_source, 0, c.label_index.reshape(-1)).view(n, 1, batch)
            grad = torch._softmax(out, 1, False, out=self.buf.probs[:n])
            grad.scatter_add_(1, labels, self.buf.minus_one[:n])
            return grad.mul_(c.weights)
        targets = torch.index_select(c.y_source, 0, c.label_index.reshape(-1)).view(n, batch, -1)
        return out.sub_(targets.transpose(1, 2)).mul_(c.weights * (2.0 / out.shape[1]))

    def _backward(self, c: _Chunk, inputs: list[Tensor], grad: Tensor) -> None:
        """From the logits' gradient (feature-major) down; hidden gradients are batch-major."""
        n, batch = c.index.shape
        last = len(self.blocks) - 1
        for k in range(last, -1, -1):
            blk = self.blocks[k]
            if k < last:
                if c.drop is not None:
                    grad.mul_(self.buf.f[k][:n])
                grad = blk.act.backward(grad, self.buf.z[k][:n])  # input, or output of an in-place activation
            feature_major = grad if k == last else grad.transpose(1, 2)
            torch.bmm(feature_major, inputs[k], out=c.grads[blk.weight])
            if blk.bias is not None:
                torch.sum(feature_major, -1, out=c.grads[blk.bias])
            if k > 0:
                out = _Buffers.view(self.buf.grad[k % 2], n, batch, blk.fan_in)
                grad = torch.bmm(feature_major.transpose(1, 2), c.params[blk.weight], out=out)


def _rows(buffer: Tensor | None, n: int) -> Tensor | None:
    """The first ``n`` rows of a chunk buffer, if there is one."""
    return None if buffer is None else buffer[:n]


class AutogradPath:
    """Gradients of any supported architecture through :class:`BatchedNet` and one autograd backward."""

    def __init__(self, net: BatchedNet, kind: str) -> None:
        self.net, self.kind = net, kind

    def gradients(self, c: _Chunk) -> None:
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


@dataclass
class _Chunk:
    """One training step's work for members ``[start, stop)`` of the group."""

    params: dict[str, Tensor]  # [n, *shape] views
    grads: dict[str, Tensor]  # [n, *shape] views
    index: Tensor  # int64 [n, batch]: training samples
    label_index: Tensor  # int64 [n, batch]: rows of the flattened targets
    weights: Tensor | float  # [n, 1, batch] (sample weight / count) or 1 / batch
    drop: _Dropout | None
    x_source: Tensor
    y_source: Tensor

    def leaves(self) -> dict[str, Tensor]:
        """Fresh views of the parameters, to become autograd leaves."""
        return {k: v.view(v.shape) for k, v in self.params.items()}


# ------------------------------------------------------------------ losses and metrics


def per_sample_loss(out: Tensor, y: Tensor, kind: str) -> Tensor:
    """``[n, batch]`` losses of outputs ``[n, out, batch]`` against targets ``[n, batch(, out)]``."""
    if kind == "classification":
        return F.cross_entropy(out, y, reduction="none")
    return (out - y.transpose(1, 2)).square().mean(1)


def predicted_class(out: Tensor, dim: int = 1) -> Tensor:
    """``out.argmax(dim)`` (the first maximum) through ``amax``, which is far faster on CPU along a
    non-innermost axis; rows with NaN predict ``out.shape[dim]``, which matches no label."""
    classes = out.shape[dim]
    rank = torch.arange(classes, 0, -1, device=out.device, dtype=out.dtype)
    rank = rank.view(-1, *([1] * (out.dim() - dim - 1)))
    return classes - ((out == out.amax(dim, keepdim=True)) * rank).amax(dim).long()


def psnr(mse: Tensor, peak: float = 1.0) -> Tensor:
    """PSNR in dB; ``peak`` is the task's target range (``Task.value_range``, 1.0 for images)."""
    return 10.0 * torch.log10(peak**2 / mse)


# ------------------------------------------------------------------ batched optimizers


class ClassOptimizer:
    """torch.optim's update for a run of members with one optimizer kind and one step count.

    ``params`` and ``grads`` are matching lists of tensors; ``lr`` and ``weight_decay`` hold each
    element's member value (float64, broadcasting against the matching tensor). Adam and AdamW call
    torch's fused kernel with ``lr = 1`` on a zeroed buffer and scale the result by the learning rates.
    """

    def __init__(
        self, kind: str, params: list[Tensor], grads: list[Tensor], lr: list[Tensor], weight_decay: list[Tensor]
    ):
        self.kind, self.params, self.grads = kind, params, grads
        self.lr = [v.float() for v in lr]
        self.wd = [v.float() for v in weight_decay]
        self.shrink = [(1.0 - a * b).float() for a, b in zip(lr, weight_decay)]  # AdamW, in float64 first
        self.decay = any(bool((v != 0).any()) for v in weight_decay)
        if kind == "sgd+momentum":
            self.buf = [torch.zeros_like(p) for p in params]
        elif kind in ("adam", "adamw"):
            self.exp_avg = [torch.zeros_like(p) for p in params]
            self.exp_avg_sq = [torch.zeros_like(p) for p in params]
            self.update = [torch.zeros_like(p) for p in params]
            self.steps = [torch.zeros((), device=p.device) for p in params]

    def step(self) -> None:
        if self.kind in ("sgd", "sgd+momentum"):
            self._sgd()
        else:
            self._adam()

    def _sgd(self) -> None:
        for i, (p, g) in enumerate(zip(self.params, self.grads)):
            if self.decay:
                g.addcmul_(p, self.wd[i])
            if self.kind == "sgd+momentum":
                g = self.buf[i].mul_(MOMENTUM).add_(g)
            p.addcmul_(g, self.lr[i], value=-1.0)

    def _adam(self) -> None:
        for i, (p, g) in enumerate(zip(self.params, self.grads)):
            if self.decay and self.kind == "adam":
                g.addcmul_(p, self.wd[i])
            elif self.decay:
                p.mul_(self.shrink[i])
            self.update[i].zero_()
        torch._foreach_add_(self.steps, 1.0)  # the fused kernel reads the new step count, as torch.optim does
        torch._fused_adam_(
            self.update, self.grads, self.exp_avg, self.exp_avg_sq, [], self.steps,
            lr=1.0, beta1=ADAM_BETAS[0], beta2=ADAM_BETAS[1], weight_decay=0.0, eps=ADAM_EPS,
            amsgrad=False, maximize=False,
        )  # fmt: skip
        for p, u, lr in zip(self.params, self.update, self.lr):
            p.addcmul_(u, lr)


def make_optimizer(cfg: MemberConfig, params) -> torch.optim.Optimizer:
    """The torch.optim optimizer of the reference loop."""
    if cfg.optimizer in ("sgd", "sgd+momentum"):
        momentum = MOMENTUM if cfg.optimizer == "sgd+momentum" else 0.0
        return torch.optim.SGD(params, lr=cfg.lr, momentum=momentum, weight_decay=cfg.weight_decay)
    cls = torch.optim.Adam if cfg.optimizer == "adam" else torch.optim.AdamW
    return cls(params, lr=cfg.lr, betas=ADAM_BETAS, eps=ADAM_EPS, weight_decay=cfg.weight_decay)


# ------------------------------------------------------------------ the group trainer


@dataclass
class GroupResult:
    """Parameters at each checkpoint ``[G, E, P]`` (layout order) and metrics ``{name: [G, E]}``."""

    params: np.ndarray
    metrics: dict[str, np.ndarray]


def _check_epochs(epochs: int, checkpoint_epochs: Sequence[int]) -> list[int]:
    points = sorted({int(e) for e in checkpoint_epochs})
    if not points or points[0] < 0 or points[-1] > epochs:
        raise SpecError(
            f"checkpoint_epochs must be a non-empty list within [0, {epochs}], got {list(checkpoint_epochs)}"
        )
    return points


def _check_batch_size(batch_size: int) -> None:
    if int(batch_size) < 1:
        raise SpecError(f"batch_size must be a positive integer, got {batch_size!r}")


@dataclass(frozen=True)
class _Run:
    """Consecutive members (in the trainer's order) with the same subset size and optimizer."""

    start: int
    stop: int
    size: int
    optimizer: str


def _runs(cfgs: Sequence[MemberConfig], sizes: Sequence[int]) -> list[_Run]:
    runs: list[_Run] = []
    for i, (c, s) in enumerate(zip(cfgs, sizes)):
        if runs and (runs[-1].size, runs[-1].optimizer) == (s, c.optimizer):
            runs[-1] = replace(runs[-1], stop=i + 1)
        else:
            runs.append(_Run(i, i + 1, s, c.optimizer))
    return runs


@dataclass(frozen=True)
class _TaskData:
    """The task's tensors on the training device, targets flattened to rows, each member's target offset."""

    kind: str
    x_train: Tensor  # [n, *input]
    y_train: Tensor  # [n] or [K * n, out]
    x_test: Tensor
    y_test: Tensor
    train_offset: Tensor  # int64 [G]: target * n_train (0 for shared targets)
    test_offset: Tensor
    peak: float  # PSNR peak: the task's target range

    @classmethod
    def build(cls, task: Task, cfgs: Sequence[MemberConfig], device) -> _TaskData:
        targets = torch.tensor([c.target for c in cfgs], device=device)
        if task.per_member:
            bad = [c.target for c in cfgs if c.target >= task.num_targets]
            if bad:
                raise SpecError(f"hparams: target {bad[0]} out of range; task {task.name!r} has {task.num_targets}")
        else:
            targets = torch.zeros_like(targets)

        def rows(y: Tensor) -> Tensor:
            return y.reshape(-1, *y.shape[2:]).to(device) if task.per_member else y.to(device)

        x_train, x_test = task.x_train.to(device), task.x_test.to(device)
        return cls(
            task.kind, x_train, rows(task.y_train), x_test, rows(task.y_test),
            targets * len(x_train), targets * len(x_test), task.value_range,
        )  # fmt: skip


class GroupTrainer:
    """Trains G members of one architecture together; see the module docstring for semantics.

    Members are kept sorted by training-subset size (then optimizer), so at every step the members
    that still have samples are a suffix of the group and each run of equal size and optimizer
    shares one step count and one fused optimizer call.
    """

    def __init__(self, arch, task: Task, cfgs: Sequence[MemberConfig], batch_size: int, device, fast: bool = True):
        self.device, self.batch_size = torch.device(device), int(batch_size)
        module, self.layout, _ = archs.describe(arch)
        n = len(task.x_train)
        order = sorted(range(len(cfgs)), key=lambda i: (subset_size(cfgs[i].train_fraction, n), cfgs[i].optimizer))
        self.order = torch.tensor(order)
        self.cfgs = [cfgs[i] for i in order]
        self.sizes = [subset_size(c.train_fraction, n) for c in self.cfgs]
        self.size_t = torch.tensor(self.sizes, device=self.device)
        self.data = _TaskData.build(task, self.cfgs, self.device)
        self.per_member = task.per_member
        self.keys = seed_keys([c.seed for c in self.cfgs], self.device)
        self.subsets = training_subsets(self.keys, self.sizes, n)
        self.params, self.grads = self._init_state(arch)
        self._view_cache: dict[tuple[int, int], tuple[dict[str, Tensor], dict[str, Tensor]]] = {}
        self.runs = _runs(self.cfgs, self.sizes)
        self.optimizers = [self._optimizer(r) for r in self.runs]
        self.net = BatchedNet(arch, module, self.layout)
        self.dropout = self._dropout_constants()
        self._choose_path(arch, task, fast)

    def _choose_path(self, arch, task: Task, fast: bool) -> None:
        """The hand-written dense path when the architecture allows (and ``fast``), else autograd;
        chunk sizes for training and evaluation."""
        blocks = dense_blocks(arch, self.net.layers) if fast else None
        feats, n = _feature_sizes(arch, task), len(task.x_train)
        self.chunk = min(len(self.cfgs), chunk_members(blocks is not None, self.batch_size, feats))
        self.eval_chunk = max(1, EVAL_BYTES // (4 * min(EVAL_CHUNK, n) * max(feats)))
        self.x_train = self.data.x_train.reshape(n, -1) if blocks else self.data.x_train
        if blocks is None:
            self.path: DensePath | AutogradPath = AutogradPath(self.net, task.kind)
        else:
            drop = self.dropout is not None
            self.path = DensePath(blocks, task.kind, self.chunk, self.batch_size, feats[0], drop, self.device)

    def _init_state(self, arch) -> tuple[dict[str, Tensor], dict[str, Tensor]]:
        """Parameters ``{name: [G, *shape]}`` and gradient buffers like them, each a contiguous block of
        one flat storage (layer by layer), so an optimizer over the whole group is one tensor."""
        flat = torch.stack([init_params(arch, self.layout, c) for c in self.cfgs]).to(self.device)
        g = len(self.cfgs)
        self.storage = torch.empty(g * self.layout.size, device=self.device)
        self.grad_storage = torch.zeros_like(self.storage)
        params, grads = {}, {}
        for e in self.layout:
            params[e.name] = self.storage[g * e.offset : g * e.stop].view(g, *e.shape)
            params[e.name].copy_(flat[:, e.offset : e.stop].view(g, *e.shape))
            grads[e.name] = self.grad_storage[g * e.offset : g * e.stop].view(g, *e.shape)
        return params, grads

    def _optimizer(self, run: _Run) -> ClassOptimizer:
        """The optimizer of a run: over the flat storage if it is the whole group, else over row ranges."""
        rows = slice(run.start, run.stop)
        values = {k: torch.tensor([getattr(c, k) for c in self.cfgs[rows]], dtype=torch.float64, device=self.device)
                  for k in ("lr", "weight_decay")}  # fmt: skip
        if run.stop - run.start == len(self.cfgs):
            sizes = [e.numel for e in self.layout]
            coef = {k: [torch.cat([v.repeat_interleave(n) for n in sizes])] for k, v in values.items()}
            return ClassOptimizer(run.optimizer, [self.storage], [self.grad_storage], coef["lr"], coef["weight_decay"])
        params = [self.params[e.name][rows] for e in self.layout]
        coef = {k: [v.view(-1, *([1] * (p.dim() - 1))) for p in params] for k, v in values.items()}
        grads = [self.grads[e.name][rows] for e in self.layout]
        return ClassOptimizer(run.optimizer, params, grads, coef["lr"], coef["weight_decay"])

    def _dropout_constants(self) -> tuple[Tensor, Tensor] | None:
        """Per-member float32 thresholds and scales, or None when no member drops out."""
        if self.net.sites == 0 or all(c.dropout == 0 for c in self.cfgs):
            return None
        thr = torch.tensor([dropout_threshold(c.dropout) for c in self.cfgs], device=self.device)
        scale = torch.tensor([1.0 / (1.0 - c.dropout) for c in self.cfgs], device=self.device)
        return thr, scale

    def flat_params(self) -> np.ndarray:
        """float32 ``[G, P]`` in layout order and in the caller's member order."""
        flat = torch.cat([self.params[e.name].reshape(len(self.cfgs), -1) for e in self.layout], 1).cpu()
        out = torch.empty_like(flat)
        out[self.order] = flat
        return out.numpy()

    def train(self, epochs: int, checkpoint_epochs: Sequence[int]) -> GroupResult:
        """Train ``epochs`` epochs, recording parameters and metrics at ``checkpoint_epochs``."""
        points = _check_epochs(epochs, checkpoint_epochs)
        params, metrics = [], []
        for epoch in range(epochs + 1):
            if epoch > 0:
                self.epoch(epoch)
            if epoch in points:
                params.append(self.flat_params())
                metrics.append(self.evaluate())
        names = metrics[0].keys()
        return GroupResult(np.stack(params, 1), {k: np.stack([m[k] for m in metrics], 1) for k in names})

    def steps_per_epoch(self) -> int:
        """Steps of the member with the largest training subset (the others sit out the last ones)."""
        return -(-max(self.sizes) // self.batch_size)

    def epoch(self, epoch: int) -> None:
        """One pass of every member over its training subset."""
        steps, bs = self.steps_per_epoch(), self.batch_size
        order = epoch_order(self.keys, self.subsets, self.sizes, epoch, steps * bs)
        dkeys = None if self.dropout is None else step_keys(self.keys, epoch, steps, self.net.sites)
        for s in range(steps):
            self.step(order[:, s * bs : (s + 1) * bs], s, None if dkeys is None else dkeys[:, s])

    def step(self, index: Tensor, s: int, dkeys: Tensor | None) -> None:
        """One optimizer step of every member that has samples left in this epoch."""
        bs = self.batch_size
        first = bisect.bisect_right(self.sizes, s * bs)
        for start in range(first, len(self.sizes), self.chunk):
            self.path.gradients(self._chunk(index, s, dkeys, start, min(start + self.chunk, len(self.sizes))))
        for run, opt in zip(self.runs, self.optimizers):
            if run.size > s * bs:
                opt.step()

    def _chunk(self, index: Tensor, s: int, dkeys: Tensor | None, start: int, stop: int) -> _Chunk:
        """Step ``s``'s work for members ``[start, stop)``: samples, loss weights, dropout keys, views."""
        rows = slice(start, stop)
        bs = self.batch_size
        idx = index[rows]
        if self.sizes[start] >= (s + 1) * bs:
            weights: Tensor | float = 1.0 / bs
        else:
            counts = (self.size_t[rows] - s * bs).clamp(max=bs)
            valid = torch.arange(bs, device=self.device) < counts[:, None]
            weights = (valid / counts[:, None]).unsqueeze(1)
        drop = None
        if dkeys is not None:
            drop = _Dropout(dkeys[rows], self.dropout[0][rows], self.dropout[1][rows])
        params, grads = self._views(start, stop)
        return _Chunk(
            params,
            grads,
            idx,
            idx + self.data.train_offset[rows, None] if self.per_member else idx,
            weights,
            drop,
            self.x_train,
            self.data.y_train,
        )

    def _views(self, start: int, stop: int) -> tuple[dict[str, Tensor], dict[str, Tensor]]:
        """Parameter and gradient views ``{name: [stop - start, *shape]}`` of a chunk of members (cached)."""
        key = (start, stop)
        if key not in self._view_cache:
            params = {k: v[start:stop] for k, v in self.params.items()}
            self._view_cache[key] = params, {k: v[start:stop] for k, v in self.grads.items()}
        return self._view_cache[key]

    @torch.no_grad()
    def evaluate(self) -> dict[str, np.ndarray]:
        """Metrics ``{name: [G]}`` over each member's training subset and the test set, in caller order."""
        d, g = self.data, len(self.cfgs)
        n_test = len(d.x_test)
        test_rows = torch.arange(n_test, device=self.device).expand(g, n_test)
        test_sizes = torch.full_like(self.size_t, n_test)
        out = {}
        for split, x, y, rows, sizes, offset in (
            ("train", d.x_train, d.y_train, self.subsets, self.size_t, d.train_offset),
            ("test", d.x_test, d.y_test, test_rows, test_sizes, d.test_offset),
        ):
            loss, score = self._eval_split(x, y, rows, sizes, offset)
            out[f"{split}_loss"] = loss
            out[f"{split}_{'acc' if d.kind == 'classification' else 'psnr'}"] = score
        return {k: _to_caller(v, self.order) for k, v in out.items()}

    def _eval_split(self, x: Tensor, y: Tensor, rows: Tensor, sizes: Tensor, offset: Tensor) -> tuple[Tensor, Tensor]:
        """Mean loss and accuracy (or PSNR) ``[G]`` over samples ``rows[g, :sizes[g]]`` of ``x``."""
        total_loss = torch.zeros(len(sizes), device=self.device, dtype=torch.float64)
        total_hits = torch.zeros_like(total_loss)
        shared = rows.stride(0) == 0  # every member sees the same samples
        for start in range(0, len(sizes), self.eval_chunk):
            m = slice(start, start + self.eval_chunk)
            params = {k: v[m] for k, v in self.params.items()}
            for c0 in range(0, rows.shape[1], EVAL_CHUNK):
                idx = rows[m, c0 : c0 + EVAL_CHUNK]
                if shared:
                    out = self.net.shared(params, x[idx[0]])
                else:
                    out = self.net(params, x.index_select(0, idx.reshape(-1)).view(*idx.shape, *x.shape[1:]))
                labels = y[idx + offset[m, None]]
                weights = (torch.arange(c0, c0 + idx.shape[1], device=self.device) < sizes[m, None]).double()
                total_loss[m] += (per_sample_loss(out, labels, self.data.kind).double() * weights).sum(1)
                if self.data.kind == "classification":
                    total_hits[m] += ((predicted_class(out) == labels).double() * weights).sum(1)
        loss = total_loss / sizes  # float64 sums: the result does not depend on the padding
        return loss, (total_hits / sizes if self.data.kind == "classification" else psnr(loss, self.data.peak))


def _to_caller(values: Tensor, order: Tensor) -> np.ndarray:
    """float32 numpy values in the caller's member order (``values[i]`` belongs to member ``order[i]``)."""
    out = torch.empty(len(order), dtype=torch.float32)
    out[order] = values.float().cpu()
    return out.numpy()


def train_group(
    arch: dict,
    task: Task,
    hparams: Sequence[Mapping[str, Any]],
    *,
    epochs: int,
    checkpoint_epochs: Sequence[int],
    batch_size: int,
    device: str | torch.device = "cpu",
) -> GroupResult:
    """Train members that share ``arch`` together in one batched computation.

    Each member follows its own ``hparams`` (missing keys take ``HPARAM_DEFAULTS``; other keys,
    such as architecture arguments, are ignored). Returns parameters ``[G, E, P]`` in the layout
    order of ``archs.describe(arch)`` and metrics ``{task.metric_names: [G, E]}`` at each of
    ``checkpoint_epochs`` (0 = initialization), in the order of ``hparams``.
    """
    if not hparams:
        raise SpecError("train_group: empty group (no hparams)")
    _check_batch_size(batch_size)
    cfgs = [member_config(h) for h in hparams]
    task = task.for_architecture(arch)  # inputs shaped as the first layer reads them
    return GroupTrainer(arch, task, cfgs, batch_size, device).train(epochs, checkpoint_epochs)


# ------------------------------------------------------------------ the reference loop


class _MemberRun:
    """The plain per-member loop: ``archs.build_module`` + ``torch.optim``, same randomness."""

    def __init__(self, arch: Mapping[str, Any], task: Task, cfg: MemberConfig, batch_size: int) -> None:
        self.arch, self.cfg, self.batch_size = arch, cfg, int(batch_size)
        self.module, self.layout, _ = archs.describe(arch)
        self.layers = _compile(arch, self.module, self.layout)
        self.module.load_state_dict(self.layout.unflatten(init_params(arch, self.layout, cfg)))
        self.task = task
        self.key = seed_keys([cfg.seed])
        n = len(task.x_train)
        self.size = subset_size(cfg.train_fraction, n)
        self.subset = training_subsets(self.key, [self.size], n)[0]
        self.opt = make_optimizer(cfg, self.module.parameters())
        self.sites = sum(layer.site >= 0 for layer in self.layers)
        self.threshold = torch.tensor(dropout_threshold(cfg.dropout))
        self.scale = torch.tensor(1.0 / (1.0 - cfg.dropout))

    def targets(self, y: Tensor) -> Tensor:
        """This member's row of per-member targets (all of them for shared targets)."""
        if self.task.per_member:
            if self.cfg.target >= self.task.num_targets:
                raise SpecError(f"hparams: target {self.cfg.target} out of range; task has {self.task.num_targets}")
            return y[self.cfg.target]
        return y

    def forward(self, x: Tensor, keys: Tensor | None = None) -> Tensor:
        """The module's layers one by one, with this member's dropout after hidden activations."""
        h = shape_input(self.arch, x, 1)
        for layer in self.layers:
            if isinstance(layer.module, nn.Dropout):
                continue
            h = layer.module(h)
            if keys is not None and layer.site >= 0:
                counters = torch.arange(h.numel(), dtype=torch.int32).view(h.shape)
                hashed = hash32(counters + keys[layer.site])
                h = h * dropout_factors_(hashed, torch.empty(h.shape), self.threshold, self.scale)
        return h

    def loss(self, out: Tensor, y: Tensor) -> Tensor:
        if self.task.kind == "classification":
            return F.cross_entropy(out, y)
        return F.mse_loss(out, y)

    def epoch(self, epoch: int) -> None:
        steps = -(-self.size // self.batch_size)
        order = epoch_order(self.key, self.subset[None], [self.size], epoch, self.size)[0]
        dkeys = step_keys(self.key, epoch, steps, self.sites)[0] if self.cfg.dropout > 0 and self.sites else None
        y_train = self.targets(self.task.y_train)
        self.module.train()
        for s in range(steps):
            idx = order[s * self.batch_size : (s + 1) * self.batch_size]
            self.opt.zero_grad(set_to_none=True)
            out = self.forward(self.task.x_train[idx], None if dkeys is None else dkeys[s])
            self.loss(out, y_train[idx]).backward()
            self.opt.step()

    @torch.no_grad()
    def evaluate(self) -> dict[str, float]:
        self.module.eval()
        t, out = self.task, {}
        splits = (
            ("train", t.x_train[self.subset], self.targets(t.y_train)[self.subset]),
            ("test", t.x_test, self.targets(t.y_test)),
        )
        for split, x, y in splits:
            pred = self.forward(x)
            loss = self.loss(pred, y)
            out[f"{split}_loss"] = loss.item()
            if t.kind == "classification":
                out[f"{split}_acc"] = (predicted_class(pred) == y).float().mean().item()
            else:
                out[f"{split}_psnr"] = psnr(loss, t.value_range).item()
        return out


def train_member(
    arch: dict,
    task: Task,
    hparams: Mapping[str, Any],
    *,
    epochs: int,
    checkpoint_epochs: Sequence[int],
    batch_size: int,
) -> GroupResult:
    """Train one member with the plain loop (``nn.Module`` + ``torch.optim``); a GroupResult with G = 1.

    Same semantics and randomness as :func:`train_group`: the reference it is tested and
    benchmarked against.
    """
    _check_batch_size(batch_size)
    points = _check_epochs(epochs, checkpoint_epochs)
    run = _MemberRun(arch, task.for_architecture(arch), member_config(hparams), batch_size)
    params, metrics = [], []
    for epoch in range(epochs + 1):
        if epoch > 0:
            run.epoch(epoch)
        if epoch in points:
            params.append(run.layout.flatten(run.module.state_dict()).numpy())
            metrics.append(run.evaluate())
    return GroupResult(
        np.stack(params)[None], {k: np.array([[m[k] for m in metrics]], dtype=np.float32) for k in metrics[0]}
    )


# ------------------------------------------------------------------ memory planning

FAST_CHUNK_BYTES = 16 << 20  # the fast path's widest activation per chunk: reused buffers, so big is fine
AUTOGRAD_CHUNK_BYTES = 64 << 20  # the generic path's activations per chunk


def _feature_sizes(arch: Mapping[str, Any], task: Task) -> list[int]:
    """Per-sample numel of the input and of every layer's output."""
    module = archs.build_module(arch).eval()
    h = shape_input(arch, task.x_train[:1], 1)
    sizes = [h.numel()]
    with torch.no_grad():
        for m in module:
            h = m(h)
            sizes.append(h.numel())
    return sizes


def chunk_members(fast: bool, batch_size: int, feature_sizes: Sequence[int]) -> int:
    """Members whose training step runs at once: activations sized for the cache (fast path) or a budget."""
    if fast:
        return max(1, FAST_CHUNK_BYTES // (4 * batch_size * max(feature_sizes)))
    return max(1, AUTOGRAD_CHUNK_BYTES // (4 * 3 * batch_size * sum(feature_sizes)))


@dataclass(frozen=True)
class MemoryModel:
    """Estimated device memory of a training group: per-member state, per-member activations of a
    training chunk (at most ``chunk`` members at once) and fixed costs (task data, evaluation)."""

    state: int
    activations: int
    chunk: int
    fixed: int

    def group_bytes(self, members: int) -> int:
        return members * self.state + min(members, self.chunk) * self.activations + self.fixed

    def largest_group(self, memory_bytes: int) -> int:
        """The largest group that fits ``memory_bytes`` (at least 1)."""
        within_chunk = (memory_bytes - self.fixed) // (self.state + self.activations)
        if within_chunk <= self.chunk:
            return max(1, within_chunk)
        return self.chunk + (memory_bytes - self.group_bytes(self.chunk)) // self.state


def memory_model(arch: Mapping[str, Any], task: Task, batch_size: int) -> MemoryModel:
    """The memory model of training ``arch`` on ``task`` with ``batch_size`` (see :class:`MemoryModel`)."""
    module, layout, _ = archs.describe(arch)
    fast = dense_blocks(arch, _compile(arch, module, layout)) is not None
    feats = _feature_sizes(arch, task)
    per_sample = sum(feats)
    # parameters, gradients, two moments, the update, per-element learning rate, weight decay, decay factor
    state = 4 * 8 * layout.size
    activations = 4 * batch_size * per_sample * (8 if fast else 3)  # buffers (fast) or saved tensors and grads
    eval_members = max(1, EVAL_BYTES // (4 * EVAL_CHUNK * max(feats)))
    evaluate = 4 * 3 * eval_members * min(EVAL_CHUNK, len(task.x_train)) * per_sample
    data = 4 * (task.x_train.numel() + task.x_test.numel() + task.y_train.numel() + task.y_test.numel())
    return MemoryModel(state, activations, chunk_members(fast, batch_size, feats), evaluate + data)


def group_size_for(arch: dict, task: Task, batch_size: int, memory_bytes: int) -> int:
    """The largest group (at least 1) whose parameters, gradients, optimizer state and activations
    fit in ``memory_bytes``; activations are per chunk of members, so mostly the state grows with G."""
    return memory_model(arch, task, int(batch_size)).largest_group(int(memory_bytes))
