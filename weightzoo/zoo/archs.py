"""Architectures as JSON-able layer lists, and the families zoos are made of.

An architecture is ``{"layers": [{"type": ..., ...}, ...]}``; ``build_module`` turns it into an
``nn.Sequential`` whose state_dict names (``"0.weight"``, ...) are the names every zoo stores.
``{"type": "residual", "layers": [...]}`` is a skip block computing ``x + f(x)``.
The description is kept in each zoo so ``ZooStore.model(i)`` can rebuild its members.
"""

from __future__ import annotations

import copy
import functools
import inspect
import json
from collections.abc import Callable, Iterator, Mapping, Sequence
from typing import Any, NamedTuple

import torch
from torch import nn

from ..errors import SpecError
from ..layout import ParamLayout
from ..symmetry import PermutationSpec


class Sine(nn.Module):
    """``sin(w0 * x)``, the SIREN activation; odd, so sign flips are symmetries."""

    weight_space_symmetries = ("permute", "sign")

    def __init__(self, w0: float = 30.0) -> None:
        super().__init__()
        self.w0 = float(w0)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.sin(self.w0 * x)

    def extra_repr(self) -> str:
        return f"w0={self.w0}"


class Residual(nn.Sequential):
    """``x + f(x)`` with ``f`` the inner layers run in order: a skip connection.

    Declares ``weight_space_residual`` so :class:`~weightzoo.symmetry.PermutationSpec` puts every
    layer reading or writing the stream into one permutation group.
    """

    weight_space_residual = True

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + super().forward(x)


ACTIVATIONS: dict[str, Callable[..., nn.Module]] = {
    "relu": nn.ReLU,
    "leaky_relu": nn.LeakyReLU,
    "tanh": nn.Tanh,
    "sigmoid": nn.Sigmoid,
    "gelu": nn.GELU,
    "silu": nn.SiLU,
    "elu": nn.ELU,
    "sine": Sine,
    "identity": nn.Identity,
}
_ACT_NAMES = {cls: name for name, cls in ACTIVATIONS.items()}


def _linear(d):
    return nn.Linear(d["in"], d["out"], bias=d.get("bias", True))


def _conv(cls):
    def make(d):
        return cls(
            d["in"],
            d["out"],
            d["kernel"],
            stride=d.get("stride", 1),
            padding=d.get("padding", 0),
            bias=d.get("bias", True),
        )

    return make


def _activation(d):
    name = d["name"]
    if name not in ACTIVATIONS:
        raise SpecError(f"architecture: unknown activation {name!r}; valid: {sorted(ACTIVATIONS)}")
    return ACTIVATIONS[name](d["w0"]) if name == "sine" and "w0" in d else ACTIVATIONS[name]()


_BUILDERS: dict[str, Callable[[Mapping[str, Any]], nn.Module]] = {
    "linear": _linear,
    "conv1d": _conv(nn.Conv1d),
    "conv2d": _conv(nn.Conv2d),
    "batchnorm1d": lambda d: nn.BatchNorm1d(d["num"], affine=d.get("affine", True)),
    "batchnorm2d": lambda d: nn.BatchNorm2d(d["num"], affine=d.get("affine", True)),
    "layernorm": lambda d: nn.LayerNorm(d["num"], elementwise_affine=d.get("affine", True)),
    "act": _activation,
    "dropout": lambda d: nn.Dropout(d.get("p", 0.0)),
    "flatten": lambda d: nn.Flatten(),
    "gap1d": lambda d: nn.Sequential(nn.AdaptiveAvgPool1d(1), nn.Flatten()),
    "gap2d": lambda d: nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten()),
    "maxpool1d": lambda d: nn.MaxPool1d(d["kernel"], d.get("stride")),
    "maxpool2d": lambda d: nn.MaxPool2d(d["kernel"], d.get("stride")),
}
LAYER_TYPES = tuple(sorted([*_BUILDERS, "residual"]))


def build_module(arch: Mapping[str, Any]) -> nn.Sequential:
    """Instantiate an architecture description as an ``nn.Sequential``."""
    layers = arch.get("layers") if isinstance(arch, Mapping) else None
    if not isinstance(layers, list) or not layers:
        raise SpecError("architecture: expected a mapping with a non-empty list 'layers'")
    return nn.Sequential(*_build_layers(layers, "layers"))


def _build_layers(layers: Any, where: str) -> list[nn.Module]:
    if not isinstance(layers, list) or not layers:
        raise SpecError(f"architecture: {where} must be a non-empty list of layers")
    return [_build_layer(d, f"{where}[{i}]") for i, d in enumerate(layers)]


def _build_layer(d: Any, where: str) -> nn.Module:
    kind = d.get("type") if isinstance(d, Mapping) else None
    if kind == "residual":
        return Residual(*_build_layers(d.get("layers"), f"{where}.layers"))
    if kind not in _BUILDERS:
        raise SpecError(f"architecture: {where} has unknown type {kind!r}; valid: {list(LAYER_TYPES)}")
    try:
        return _BUILDERS[kind](d)
    except KeyError as exc:
        raise SpecError(f"architecture: {where} ({kind}) is missing field {exc.args[0]!r}") from None


def _walk(layers: Sequence[Mapping[str, Any]]) -> Iterator[Mapping[str, Any]]:
    """Every layer description in order, descending into residual blocks."""
    for d in layers:
        yield d
        if d.get("type") == "residual":
            yield from _walk(d["layers"])


_INPUT_RANKS = {"linear": 1, "conv1d": 2, "conv2d": 3}


def input_rank(arch: Mapping[str, Any]) -> int | None:
    """Dimensions of one input sample the network expects: 1 (features), 2 (channels x length)
    or 3 (channels x height x width); None if it flattens its input first or has no dense layer."""
    for d in _walk(arch["layers"]):
        if d["type"] == "flatten":
            return None
        if d["type"] in _INPUT_RANKS:
            return _INPUT_RANKS[d["type"]]
    return None


def with_overrides(arch: Mapping[str, Any], **overrides: Any) -> dict:
    """``arch`` with some of its family's arguments changed (per-member activation, width, ...).

    Architectures made by a registered family are rebuilt from their recorded ``args``; a
    hand-written layer list accepts only ``activation``, which replaces every activation layer.
    """
    if not overrides:
        return copy.deepcopy(dict(arch))
    maker = FAMILIES.get(arch.get("family"))
    if maker is not None and "args" in arch:
        unknown = sorted(set(overrides) - set(inspect.signature(maker).parameters))
        if unknown:
            valid = sorted(inspect.signature(maker).parameters)
            raise SpecError(f"architecture family {arch['family']!r} has no argument(s) {unknown}; valid: {valid}")
        return maker(**{**arch["args"], **overrides})
    if set(overrides) != {"activation"}:
        raise SpecError(
            f"architecture without a family: only 'activation' can vary per member, got {sorted(overrides)}"
        )
    out = copy.deepcopy(dict(arch))
    for d in _walk(out["layers"]):
        if d["type"] == "act":
            d["name"] = overrides["activation"]
    return out


def describe(arch: Mapping[str, Any]) -> tuple[nn.Sequential, ParamLayout, PermutationSpec]:
    """The module, ParamLayout and PermutationSpec of an architecture description."""
    module = build_module(arch)
    return module, ParamLayout.from_module(module), PermutationSpec.from_module(module)


# ------------------------------------------------------------------------- families

FAMILIES: dict[str, Callable[..., dict]] = {}


def family(name: str) -> Callable[[Callable[..., dict]], Callable[..., dict]]:
    """Register an architecture family; its descriptions record ``family`` and ``args`` so
    per-member variants can be rebuilt with :func:`with_overrides`."""

    def register(fn: Callable[..., dict]) -> Callable[..., dict]:
        @functools.wraps(fn)
        def make(*args: Any, **kwargs: Any) -> dict:
            bound = inspect.signature(fn).bind(*args, **kwargs)
            bound.apply_defaults()
            arch = fn(*args, **kwargs)
            arch["family"] = name
            arch["args"] = json.loads(json.dumps(dict(bound.arguments)))  # tuples -> lists
            return arch

        FAMILIES[name] = make
        return make

    return register


def _norm_layers(norm: str | None, num: int) -> list[dict]:
    """The normalization layer after a ``num``-wide linear layer: none, BatchNorm or LayerNorm."""
    if norm is None:
        return []
    if norm == "batchnorm":
        return [{"type": "batchnorm1d", "num": num}]
    if norm == "layernorm":
        return [{"type": "layernorm", "num": num}]
    raise SpecError(f"architecture: norm {norm!r} is not one of None, 'batchnorm', 'layernorm'")


@family("mlp")
def mlp(
    in_features: int,
    hidden: Sequence[int],
    out_features: int,
    *,
    activation: str = "relu",
    bias: bool = True,
    norm: str | None = None,
    dropout: float = 0.0,
) -> dict:
    """Fully connected network; ``norm`` is None, ``"batchnorm"`` or ``"layernorm"``."""
    layers: list[dict] = []
    widths = [in_features, *hidden]
    for a, b in zip(widths[:-1], widths[1:]):
        layers.append({"type": "linear", "in": a, "out": b, "bias": bias})
        layers += _norm_layers(norm, b)
        layers.append({"type": "act", "name": activation})
        if dropout:
            layers.append({"type": "dropout", "p": dropout})
    layers.append({"type": "linear", "in": widths[-1], "out": out_features, "bias": bias})
    return {"family": "mlp", "layers": layers}


@family("mlp_wd")
def mlp_wd(
    in_features: int,
    width: int,
    depth: int,
    out_features: int,
    *,
    activation: str = "relu",
    bias: bool = True,
    norm: str | None = None,
    dropout: float = 0.0,
    residual: bool = False,
) -> dict:
    """:func:`mlp` with ``depth`` hidden layers of ``width`` neurons, so both can vary per member;
    with ``residual=True`` hidden layers 2..depth are skip blocks ``x + act(norm(Linear(x)))``."""
    if not residual:
        return mlp(
            in_features, [width] * depth, out_features, activation=activation, bias=bias, norm=norm, dropout=dropout
        )
    if dropout or depth < 1:
        raise SpecError("architecture mlp_wd: residual=True needs depth >= 1 and no dropout")
    hidden = mlp(in_features, [width], out_features, activation=activation, bias=bias, norm=norm)["layers"][:-1]
    hidden += _skip_blocks(width, depth - 1, activation, norm, bias)
    hidden.append({"type": "linear", "in": width, "out": out_features, "bias": bias})
    return {"family": "mlp_wd", "layers": hidden}


def _skip_blocks(width: int, count: int, activation: str, norm: str | None, bias: bool) -> list[dict]:
    """``count`` skip blocks ``x + act(norm(Linear(width, width)(x)))``."""
    block = [{"type": "linear", "in": width, "out": width, "bias": bias}, *_norm_layers(norm, width)]
    block.append({"type": "act", "name": activation})
    return [{"type": "residual", "layers": copy.deepcopy(block)} for _ in range(count)]


@family("residual_mlp")
def residual_mlp(
    in_features: int,
    width: int,
    blocks: int,
    out_features: int,
    *,
    activation: str = "relu",
    norm: str | None = None,
    bias: bool = True,
) -> dict:
    """Linear(in, width), then ``blocks`` skip blocks ``x + act(norm(Linear(width, width)(x)))``,
    then Linear(width, out); the stream's neurons form one permutation group."""
    layers = [{"type": "linear", "in": in_features, "out": width, "bias": bias}]
    layers += _skip_blocks(width, blocks, activation, norm, bias)
    layers.append({"type": "linear", "in": width, "out": out_features, "bias": bias})
    return {"family": "residual_mlp", "layers": layers}


@family("cnn")
def cnn(
    in_channels: int,
    channels: Sequence[int],
    out_features: int,
    *,
    dim: int = 2,
    kernel: int = 3,
    stride: int = 1,
    padding: int = 0,
    activation: str = "relu",
    bias: bool = True,
    batchnorm: bool = False,
    head: str = "gap",
    flat_features: int | None = None,
) -> dict:
    """Conv stack then a dense head; ``head`` is ``"gap"`` (global average pooling) or
    ``"flatten"`` (needs ``flat_features`` = channels x remaining spatial size)."""
    if dim not in (1, 2):
        raise SpecError(f"architecture: cnn dim must be 1 or 2, got {dim}")
    layers: list[dict] = []
    widths = [in_channels, *channels]
    for a, b in zip(widths[:-1], widths[1:]):
        layers.append(
            {
                "type": f"conv{dim}d",
                "in": a,
                "out": b,
                "kernel": kernel,
                "stride": stride,
                "padding": padding,
                "bias": bias,
            }
        )
        if batchnorm:
            layers.append({"type": f"batchnorm{dim}d", "num": b})
        layers.append({"type": "act", "name": activation})
    if head == "gap":
        layers.append({"type": f"gap{dim}d"})
        fan_in = widths[-1]
    elif head == "flatten":
        if flat_features is None:
            raise SpecError("architecture: cnn head 'flatten' needs flat_features")
        layers.append({"type": "flatten"})
        fan_in = flat_features
    else:
        raise SpecError(f"architecture: cnn head {head!r} is not 'gap' or 'flatten'")
    layers.append({"type": "linear", "in": fan_in, "out": out_features, "bias": bias})
    return {"family": "cnn", "layers": layers}


@family("cnn1d")
def cnn1d(
    in_channels: int = 1,
    channels: Sequence[int] = (16, 16, 16),
    out_features: int = 10,
    *,
    kernel: int = 5,
    stride: int = 2,
    padding: int = 2,
    activation: str = "relu",
    batchnorm: bool = False,
) -> dict:
    """1-D CNN for sequences such as MNIST-1D: Conv1d(kernel 5, stride 2, padding 2) x3, global
    average pooling, Linear; 40 -> 20 -> 10 -> 5 positions, 2,858 parameters for MNIST-1D."""
    return cnn(
        in_channels,
        channels,
        out_features,
        dim=1,
        kernel=kernel,
        stride=stride,
        padding=padding,
        activation=activation,
        batchnorm=batchnorm,
    )


@family("smallcnnzoo")
def small_cnn_zoo(activation: str = "relu", in_channels: int = 1, num_classes: int = 10) -> dict:
    """The Small CNN Zoo network (Unterthiner et al. 2020): Keras Conv2D(16, 3x3, stride 2,
    'valid') x3, global average pooling, Dense(10); 4,970 parameters for one input channel."""
    arch = cnn(in_channels, [16, 16, 16], num_classes, kernel=3, stride=2, padding=0, activation=activation)
    return arch


class ModelZooCNN(NamedTuple):
    """One small CNN of the Model Zoos: its conv blocks ``(out channels, kernel, max-pool?)`` and
    the image size its first Linear layer assumes (def_net.py hard-codes the flat size)."""

    blocks: tuple[tuple[int, int, bool], ...]
    in_size: int


# The Model Zoos CNNs (Schürholt et al. 2022, def_net.py); flat sizes 3*3*4, 3*3*6 and 15*2*2.
MODELZOO_CNNS: dict[str, ModelZooCNN] = {
    "CNN": ModelZooCNN(((8, 5, True), (6, 5, True), (4, 2, False)), 28),
    "CNN2": ModelZooCNN(((6, 5, True), (9, 5, True), (6, 2, False)), 28),
    "CNN3": ModelZooCNN(((16, 3, True), (32, 3, True), (15, 3, True)), 32),
}


def _modelzoo_cnn_layers(
    variant: str, in_channels: int, num_classes: int, in_size: int, activation: str, dropout: float, where: str
) -> list[dict]:
    """The layers of a Model Zoos CNN: per block conv -> [MaxPool(2)] -> act [-> dropout, all but
    the last block], then Flatten, Linear(flat, 20) -> act [-> dropout], Linear(20, classes)."""
    blocks = MODELZOO_CNNS[variant].blocks
    layers: list[dict] = []
    channels, size = in_channels, in_size
    for i, (out, kernel, pool) in enumerate(blocks):
        layers.append({"type": "conv2d", "in": channels, "out": out, "kernel": kernel})
        size = size - kernel + 1
        if pool:
            layers.append({"type": "maxpool2d", "kernel": 2, "stride": 2})
            size //= 2
        layers.append({"type": "act", "name": activation})
        if dropout and i < len(blocks) - 1:
            layers.append({"type": "dropout", "p": dropout})
        channels = out
    if size < 1:
        smallest = 1  # walk back from one output pixel through the blocks
        for _, kernel, pool in reversed(blocks):
            smallest = smallest * (2 if pool else 1) + kernel - 1
        raise SpecError(
            f"architecture: {where} needs images of at least {smallest}x{smallest} pixels, got in_size={in_size}"
        )
    return [
        *layers,
        {"type": "flatten"},
        {"type": "linear", "in": channels * size * size, "out": 20},
        {"type": "act", "name": activation},
        *([{"type": "dropout", "p": dropout}] if dropout else []),
        {"type": "linear", "in": 20, "out": num_classes},
    ]


@family("modelzoo_cnn")
def modelzoo_cnn(
    variant: str = "CNN",
    in_channels: int = 1,
    num_classes: int = 10,
    *,
    in_size: int | None = None,
    activation: str = "tanh",
    dropout: float = 0.0,
) -> dict:
    """A Model Zoos CNN (Schürholt et al. 2022, def_net.py): ``variant`` ``"CNN"`` (= CNN-s) or
    ``"CNN2"`` for 28x28 inputs, ``"CNN3"`` for 32x32; ``in_size`` None means the size def_net.py
    assumes, the only one its published checkpoints fit."""
    if variant not in MODELZOO_CNNS:
        raise SpecError(f"architecture: modelzoo_cnn variant {variant!r} is not one of {list(MODELZOO_CNNS)}")
    size = MODELZOO_CNNS[variant].in_size if in_size is None else in_size
    layers = _modelzoo_cnn_layers(
        variant, in_channels, num_classes, size, activation, dropout, f"modelzoo_cnn {variant}"
    )
    return {"family": "modelzoo_cnn", "layers": layers}


@family("cnn_s")
def cnn_s(
    in_channels: int = 1,
    num_classes: int = 10,
    *,
    in_size: int = 28,
    activation: str = "tanh",
    dropout: float = 0.0,
) -> dict:
    """Model Zoos CNN-s, i.e. :func:`modelzoo_cnn` ``"CNN"``: [Conv(8, 5) -> MaxPool(2) -> act],
    [Conv(6, 5) -> MaxPool(2) -> act], [Conv(4, 2) -> act], Flatten, Linear(36, 20) -> act,
    Linear(20, 10) for 28x28 inputs (2,464 parameters with one channel); needs ``in_size`` >= 20,
    so not 8x8 digits."""
    layers = _modelzoo_cnn_layers("CNN", in_channels, num_classes, in_size, activation, dropout, "cnn_s")
    return {"family": "cnn_s", "layers": layers}


@family("siren")
def siren(in_features: int = 2, hidden: Sequence[int] = (32, 32), out_features: int = 1, w0: float = 30.0) -> dict:
    """SIREN implicit neural representation (Sitzmann et al. 2020): sine activations, w0 = 30."""
    arch = mlp(in_features, hidden, out_features, activation="sine")
    for d in arch["layers"]:
        if d["type"] == "act":
            d["w0"] = w0
    return arch


@family("inr_mlp")
def inr_mlp(
    in_features: int = 2, hidden: Sequence[int] = (32, 32), out_features: int = 1, activation: str = "relu"
) -> dict:
    """Plain-MLP implicit neural representation (coordinates -> values), the baseline to SIREN."""
    return mlp(in_features, hidden, out_features, activation=activation)
