"""Training zoo members.

``train_member`` is the plain per-member loop (``nn.Module`` + ``torch.optim``): the reference
the vectorized group trainer is checked and benchmarked against.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from ..layout import ParamLayout
from .tasks import Task

OPTIMIZERS = ("sgd", "sgd+momentum", "adam", "adamw")


@dataclass
class MemberResult:
    """Flat parameters at each checkpoint ``[E, P]`` and metrics ``{name: [E]}``."""

    params: np.ndarray
    metrics: dict[str, np.ndarray]


def make_optimizer(name: str, params, lr: float, weight_decay: float) -> torch.optim.Optimizer:
    if name == "sgd":
        return torch.optim.SGD(params, lr=lr, weight_decay=weight_decay)
    if name == "sgd+momentum":
        return torch.optim.SGD(params, lr=lr, momentum=0.9, weight_decay=weight_decay)
    if name == "adam":
        return torch.optim.Adam(params, lr=lr, weight_decay=weight_decay)
    if name == "adamw":
        return torch.optim.AdamW(params, lr=lr, weight_decay=weight_decay)
    raise ValueError(f"unknown optimizer {name!r}; valid: {OPTIMIZERS}")


@torch.no_grad()
def evaluate(module: nn.Module, x: torch.Tensor, y: torch.Tensor) -> tuple[float, float]:
    """Mean cross-entropy and accuracy of a classifier."""
    was_training = module.training
    module.eval()
    logits = module(x)
    module.train(was_training)
    return nn.functional.cross_entropy(logits, y).item(), (logits.argmax(1) == y).float().mean().item()


def train_member(
    module: nn.Module,
    task: Task,
    *,
    seed: int,
    lr: float,
    optimizer: str = "adam",
    weight_decay: float = 0.0,
    batch_size: int = 64,
    checkpoint_epochs: Sequence[int] = (0, 1),
) -> MemberResult:
    """Train one classifier, recording parameters and train/test loss and accuracy at each
    checkpoint epoch (epoch 0 is the initialization). Deterministic given ``seed``."""
    layout = ParamLayout.from_module(module)
    gen = torch.Generator().manual_seed(seed)
    opt = make_optimizer(optimizer, module.parameters(), lr, weight_decay)
    checkpoints = set(checkpoint_epochs)
    params, metrics = [], {k: [] for k in ("train_loss", "train_acc", "test_loss", "test_acc")}

    def record() -> None:
        params.append(layout.flatten(module.state_dict()).numpy())
        for split, (x, y) in (("train", (task.x_train, task.y_train)), ("test", (task.x_test, task.y_test))):
            loss, acc = evaluate(module, x, y)
            metrics[f"{split}_loss"].append(loss)
            metrics[f"{split}_acc"].append(acc)

    if 0 in checkpoints:
        record()
    module.train()
    n = len(task.y_train)
    for epoch in range(1, max(checkpoint_epochs) + 1):
        for idx in torch.randperm(n, generator=gen).split(batch_size):
            opt.zero_grad(set_to_none=True)
            loss = nn.functional.cross_entropy(module(task.x_train[idx]), task.y_train[idx])
            loss.backward()
            opt.step()
        if epoch in checkpoints:
            record()
    return MemberResult(np.stack(params), {k: np.asarray(v, np.float32) for k, v in metrics.items()})
