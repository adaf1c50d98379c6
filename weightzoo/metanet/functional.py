"""Flat weights of one architecture as functions: outputs, loss and accuracy on given data, the
hidden activations of each permutation group, and BatchNorm statistics recomputed on data.

Alignment, interpolation and merging produce weights no one trained; these calls run them on any
data (a member's task data, a validation split) through the architecture's own ``nn.Module``, so
every layer type the project builds is covered, BatchNorm included.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch
from torch import Tensor, nn
from torch.func import functional_call

from ..errors import LayoutError
from ..zoo import archs
from ..zoo.train.losses import per_sample_loss, predicted_class, psnr
from ..zoo.train.network import shape_input

CHUNK = 2048  # samples per forward pass
_BATCHNORM = (nn.BatchNorm1d, nn.BatchNorm2d, nn.BatchNorm3d)


class Functional:
    """An architecture (a JSON layer list) whose weights are given per call as flat vectors."""

    def __init__(self, arch: Mapping[str, Any], device: str | torch.device = "cpu") -> None:
        self.arch = dict(arch)
        self.device = torch.device(device)
        module, self.layout, self.spec = archs.describe(arch)
        self.module = module.to(self.device).eval()

    @property
    def has_batchnorm(self) -> bool:
        return any(isinstance(m, _BATCHNORM) for m in self.module.modules())

    def _rows(self, flat: Tensor) -> Tensor:
        flat = torch.as_tensor(flat, dtype=torch.float32)
        flat = flat[None] if flat.dim() == 1 else flat
        if flat.dim() != 2 or flat.shape[1] != self.layout.size:
            raise LayoutError(f"weights must have shape [B, {self.layout.size}] (the layout), got {list(flat.shape)}")
        return flat.to(self.device)

    def _inputs(self, x: Tensor) -> Tensor:
        return shape_input(self.arch, torch.as_tensor(x).to(self.device, torch.float32), 1)

    @torch.no_grad()
    def outputs(self, flat: Tensor, x: Tensor) -> Tensor:
        """Eval-mode outputs ``[B, S, out]`` of weights ``[B, P]`` (or ``[P]``) on inputs ``[S, ...]``."""
        rows, x = self._rows(flat), self._inputs(x)
        out = []
        for w in rows:
            params = self.layout.unflatten(w)
            out.append(
                torch.cat([functional_call(self.module, params, (x[s : s + CHUNK],)) for s in range(0, len(x), CHUNK)])
            )
        return torch.stack(out)

    def scores(self, flat: Tensor, x: Tensor, y: Tensor, kind: str) -> dict[str, Tensor]:
        """Mean ``loss`` and ``acc`` (classification) or ``psnr`` (regression) ``[B]`` on ``(x, y)``,
        with the builder's loss (cross-entropy, or mean squared error per output)."""
        out = self.outputs(flat, x).transpose(1, 2)  # [B, out, S], the trainer's convention
        y = torch.as_tensor(y).to(self.device)
        y = y.long() if kind == "classification" else y.float().reshape(len(y), -1)
        labels = y.expand(len(out), *y.shape)
        loss = per_sample_loss(out, labels, kind).double().mean(1)
        if kind == "classification":
            score = (predicted_class(out) == labels).double().mean(1)
            return {"loss": loss.float().cpu(), "acc": score.float().cpu()}
        return {"loss": loss.float().cpu(), "psnr": psnr(loss).float().cpu()}

    @torch.no_grad()
    def activations(self, flat: Tensor, x: Tensor) -> dict[str, Tensor]:
        """Per permutation group, the pre-activations of its neurons ``[samples, size]`` on ``x``: the
        outputs of the modules that produce the group (several for a residual stream, stacked along
        samples), spatial positions of a feature map counted as samples."""
        params = self.layout.unflatten(self._rows(flat)[0])
        x = self._inputs(x)
        producers = {g.name: [ref.param.rpartition(".")[0] for ref in g.out_axes] for g in self.spec.groups}
        modules = dict(self.module.named_modules())
        seen: dict[str, list[Tensor]] = {}
        hooks = [
            modules[name].register_forward_hook(lambda m, i, out, name=name: seen.setdefault(name, []).append(out))
            for name in {n for names in producers.values() for n in names}
        ]
        try:
            for s in range(0, len(x), CHUNK):
                functional_call(self.module, params, (x[s : s + CHUNK],))
        finally:
            for h in hooks:
                h.remove()
        return {
            group: torch.cat([_neuron_last(out) for name in names for out in seen[name]])
            for group, names in producers.items()
        }

    @torch.no_grad()
    def recompute_batchnorm(self, flat: Tensor, x: Tensor) -> Tensor:
        """Weights ``[B, P]`` with every BatchNorm's running mean and (unbiased) variance set to the
        exact statistics of its inputs over all of ``x`` in eval mode, layer by layer in data-flow
        order (so each layer sees its predecessors' recomputed statistics), the rest unchanged.
        Interpolated or merged BatchNorm networks need this: their stored statistics belong to
        neither endpoint (Jordan et al. 2023, "REPAIR"; Ainsworth et al. 2023)."""
        rows = self._rows(flat).clone()
        bns = [(name, m) for name, m in self.module.named_modules() if isinstance(m, _BATCHNORM)]
        if not bns:
            return rows
        x = self._inputs(x)
        for b in range(len(rows)):
            params = self.layout.unflatten(rows[b])
            for name, bn in bns:
                total = _Moments()
                hook = bn.register_forward_pre_hook(lambda m, inputs, total=total: total.add(inputs[0]))
                try:
                    for s in range(0, len(x), CHUNK):
                        functional_call(self.module, params, (x[s : s + CHUNK],))
                finally:
                    hook.remove()
                params[f"{name}.running_mean"].copy_(total.mean())
                params[f"{name}.running_var"].copy_(total.var())
        return rows


class _Moments:
    """Per-channel count, sum and sum of squares of ``[S, C, *spatial]`` tensors, in float64."""

    def __init__(self) -> None:
        self.n, self.s, self.ss = 0, 0.0, 0.0

    def add(self, t: Tensor) -> None:
        v = _neuron_last(t).double()
        self.n += v.shape[0]
        self.s = self.s + v.sum(0)
        self.ss = self.ss + v.square().sum(0)

    def mean(self) -> Tensor:
        return (self.s / self.n).float()

    def var(self) -> Tensor:
        mean = self.s / self.n
        return ((self.ss - self.n * mean.square()) / max(self.n - 1, 1)).clamp_min(0).float()


def _neuron_last(out: Tensor) -> Tensor:
    """``[S, C, *spatial]`` (or ``[S, C]``) -> ``[S * spatial, C]``."""
    return out.movedim(1, -1).reshape(-1, out.shape[1]) if out.dim() > 2 else out
