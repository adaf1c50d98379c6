"""The fast path's activations: each applied in place and differentiated by hand."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .. import archs

_ATEN = torch.ops.aten


@dataclass(frozen=True)
class ActRule:
    """How the fast path applies an activation and multiplies a gradient by its derivative.

    ``forward(z, out)`` returns the activation (in place on ``z`` unless ``reads_input``, then into
    ``out``); ``backward(grad, saved)`` overwrites ``grad``, reading the input ``z`` if ``reads_input``
    else the output (it may overwrite ``saved``, which is not needed afterwards).
    """

    reads_input: bool
    forward: Callable[[Tensor, Tensor | None], Tensor]
    backward: Callable[[Tensor, Tensor], Tensor]
    name: str = ""  # relu, tanh, sigmoid and gelu have fused CPU kernels (see fused.py)


def act_rule(module: nn.Module) -> ActRule | None:
    """The fast-path rule of an activation module, or None if it has none."""
    if isinstance(module, nn.ReLU):
        return ActRule(
            False, lambda z, o: z.relu_(), lambda g, y: _ATEN.threshold_backward(g, y, 0.0, grad_input=g), "relu"
        )
    if isinstance(module, nn.Tanh):
        return ActRule(False, lambda z, o: z.tanh_(), lambda g, y: _ATEN.tanh_backward(g, y, grad_input=g), "tanh")
    if isinstance(module, nn.Sigmoid):
        return ActRule(
            False, lambda z, o: z.sigmoid_(), lambda g, y: _ATEN.sigmoid_backward(g, y, grad_input=g), "sigmoid"
        )
    if isinstance(module, nn.LeakyReLU):
        s = module.negative_slope
        return ActRule(
            False, lambda z, o: F.leaky_relu_(z, s), lambda g, y: _ATEN.leaky_relu_backward(g, y, s, True, grad_input=g)
        )
    if isinstance(module, nn.ELU):
        a = module.alpha
        return ActRule(
            False, lambda z, o: F.elu_(z, a), lambda g, y: _ATEN.elu_backward(g, a, 1, 1, True, y, grad_input=g)
        )
    if isinstance(module, nn.GELU):
        ap = module.approximate
        return ActRule(
            True,
            lambda z, o: _ATEN.gelu.out(z, approximate=ap, out=o),
            lambda g, z: _ATEN.gelu_backward(g, z, approximate=ap, grad_input=g),
            "gelu" if ap == "none" else "",  # the fused kernels compute the exact (erf) GELU only
        )
    if isinstance(module, nn.SiLU):
        return ActRule(
            True, lambda z, o: _ATEN.silu.out(z, out=o), lambda g, z: _ATEN.silu_backward(g, z, grad_input=g)
        )
    if isinstance(module, archs.Sine):
        w0 = module.w0
        return ActRule(
            True, lambda z, o: torch.mul(z, w0, out=o).sin_(), lambda g, z: g.mul_(z.mul_(w0).cos_()).mul_(w0)
        )
    if isinstance(module, nn.Identity):
        return ActRule(False, lambda z, o: z, lambda g, y: g)
    return None
