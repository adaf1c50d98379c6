"""Parameter initialization: one member's initial parameters, drawn in layout order from its seed."""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

import torch
from torch import Tensor

from ...layout import ParamLayout
from .config import MemberConfig


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
