"""Architectures as JSON-able layer lists, and the families zoos are made of.

An architecture is ``{"layers": [{"type": ..., ...}, ...]}``; ``build_module`` turns it into an
``nn.Sequential`` whose state_dict names (``"0.weight"``, ...) are the names every zoo stores.
The description is kept in each zoo so ``ZooStore.model(i)`` can rebuild its members.
"""

from __future__ import annotations

import copy
import functools
import inspect
import json
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import torch
from torch import nn

from ..errors import SpecError
from ..layout import ParamLayout, PermutationSpec


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
LAYER_TYPES = tuple(sorted(_BUILDERS))


def build_module(arch: Mapping[str, Any]) -> nn.Sequential:
    """Instantiate an architecture description as an ``nn.Sequential``."""
    layers = arch.get("layers") if isinstance(arch, Mapping) else None
    if not isinstance(layers, list) or not layers:
        raise SpecError("architecture: expected a mapping with a non-empty list 'layers'")
    modules = []
    for i, d in enumerate(layers):
        kind = d.get("type") if isinstance(d, Mapping) else None
        if kind not in _BUILDERS:
            raise SpecError(f"architecture: layers[{i}] has unknown type {kind!r}; valid: {list(LAYER_TYPES)}")
        try:
            modules.append(_BUILDERS[kind](d))
        except KeyError as exc:
            raise SpecError(f"architecture: layers[{i}] ({kind}) is missing field {exc.args[0]!r}") from None
    return nn.Sequential(*modules)


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
    for d in out["layers"]:
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
        if norm == "batchnorm":
            layers.append({"type": "batchnorm1d", "num": b})
        elif norm == "layernorm":
            layers.append({"type": "layernorm", "num": b})
        elif norm is not None:
            raise SpecError(f"architecture: norm {norm!r} is not one of None, 'batchnorm', 'layernorm'")
        layers.append({"type": "act", "name": activation})
        if dropout:
            layers.append({"type": "dropout", "p": dropout})
    layers.append({"type": "linear", "in": widths[-1], "out": out_features, "bias": bias})
    return {"family": "mlp", "layers": layers}


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


@family("smallcnnzoo")
def small_cnn_zoo(activation: str = "relu", in_channels: int = 1, num_classes: int = 10) -> dict:
    """The Small CNN Zoo network (Unterthiner et al. 2020): Keras Conv2D(16, 3x3, stride 2,
    'valid') x3, global average pooling, Dense(10); 4,970 parameters for one input channel."""
    arch = cnn(in_channels, [16, 16, 16], num_classes, kernel=3, stride=2, padding=0, activation=activation)
    return arch


@family("siren")
def siren(in_features: int = 2, hidden: Sequence[int] = (32, 32), out_features: int = 1, w0: float = 30.0) -> dict:
    """SIREN implicit neural representation (Sitzmann et al. 2020): sine activations, w0 = 30."""
    arch = mlp(in_features, hidden, out_features, activation="sine")
    for d in arch["layers"]:
        if d["type"] == "act":
            d["w0"] = w0
    return arch
