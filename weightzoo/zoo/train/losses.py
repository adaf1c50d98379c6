"""Losses and metrics of batched outputs: per-sample loss, predicted class, PSNR."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor


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
