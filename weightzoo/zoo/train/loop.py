"""The plain per-member reference loop (``nn.Module`` + ``torch.optim``) the group trainer is checked against."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ...errors import SpecError
from .. import archs
from ..tasks import Task
from .config import MemberConfig, check_batch_size, check_epochs, member_config
from .group import GroupResult
from .init import init_params
from .losses import predicted_class, psnr
from .network import compile_layers, shape_input
from .optim import make_optimizer
from .randomness import (
    dropout_factors_,
    dropout_threshold,
    epoch_order,
    hash32,
    seed_keys,
    step_keys,
    training_subsets,
)
from .variants import TaskVariant, member_samples, member_variant


class _MemberRun:
    """The plain per-member loop: ``archs.build_module`` + ``torch.optim``, same randomness and the
    same task variant semantics (its classes, labels and inputs)."""

    def __init__(
        self,
        arch: Mapping[str, Any],
        task: Task,
        cfg: MemberConfig,
        batch_size: int,
        variant: TaskVariant,
        init: Tensor | None = None,
    ) -> None:
        self.arch, self.cfg, self.batch_size = arch, cfg, int(batch_size)
        self.module, self.layout, _ = archs.describe(arch)
        self.layers = compile_layers(arch, self.module, self.layout)
        start = init_params(arch, self.layout, cfg) if init is None else init.float()
        self.module.load_state_dict(self.layout.unflatten(start))
        self.task = task = variant.inputs(task)
        if task.per_member and cfg.target >= task.num_targets:
            raise SpecError(f"hparams: target {cfg.target} out of range; task has {task.num_targets}")
        self.y_train, self.y_test = variant.targets(task, cfg.target)
        self.test_pool = variant.test_pool(task)
        self.key = seed_keys([cfg.seed])
        pool, self.size = member_samples(cfg, variant, task)
        self.subset = training_subsets(self.key, [self.size], len(task.x_train), [pool])[0]
        self.opt = make_optimizer(cfg, self.module.parameters())
        self.sites = sum(layer.site >= 0 for layer in self.layers)
        self.threshold = torch.tensor(dropout_threshold(cfg.dropout))
        self.scale = torch.tensor(1.0 / (1.0 - cfg.dropout))

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
        order = epoch_order(self.key, self.subset[None], [self.size], epoch, steps, self.batch_size)
        order = order[:, 0].reshape(-1)[: self.size]  # this member's samples, without the padding
        dkeys = step_keys(self.key, epoch, steps, self.sites)[0] if self.cfg.dropout > 0 and self.sites else None
        self.module.train()
        for s in range(steps):
            idx = order[s * self.batch_size : (s + 1) * self.batch_size]
            self.opt.zero_grad(set_to_none=True)
            out = self.forward(self.task.x_train[idx], None if dkeys is None else dkeys[s])
            self.loss(out, self.y_train[idx]).backward()
            self.opt.step()

    @torch.no_grad()
    def evaluate(self) -> dict[str, float]:
        self.module.eval()
        t, out = self.task, {}
        test = slice(None) if self.test_pool is None else self.test_pool
        splits = (
            ("train", t.x_train[self.subset], self.y_train[self.subset]),
            ("test", t.x_test[test], self.y_test[test]),
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
    init: Tensor | None = None,
) -> GroupResult:
    """Train one member with the plain loop (``nn.Module`` + ``torch.optim``); a GroupResult with G = 1.

    Same semantics and randomness as :func:`train_group` (task variants and a starting point
    ``init [P]`` included): the reference it is tested and benchmarked against.
    """
    check_batch_size(batch_size)
    points = check_epochs(epochs, checkpoint_epochs)
    variant = member_variant(hparams, task)
    run = _MemberRun(arch, task.for_architecture(arch), member_config(hparams), batch_size, variant, init)
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
