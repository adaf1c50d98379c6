"""Batched optimizers: torch.optim's updates for runs of members, and the reference loop's optimizer."""

from __future__ import annotations

import torch
from torch import Tensor

from . import fused
from .config import MemberConfig

MOMENTUM = 0.9
ADAM_BETAS = (0.9, 0.999)
ADAM_EPS = 1e-8
# The private torch ops the trainer calls (here and in dense.py) and the torch release that has them
# all: _fused_adam_ takes CPU tensors since 2.4 (pytorch#123074); _foreach_add_ and _softmax are older.
# pyproject's torch floor is this version (a test checks both).
PRIVATE_TORCH_OPS = ("_fused_adam_", "_foreach_add_", "_softmax")
TORCH_FLOOR = "2.4"


class _RunState:
    """Parameters and gradients of a run and its optimizer state: momentum buffers (sgd+momentum)
    or first and second moments (adam, adamw), zeroed like torch.optim's."""

    def __init__(self, kind: str, params: list[Tensor], grads: list[Tensor]):
        self.kind, self.params, self.grads = kind, params, grads
        if kind == "sgd+momentum":
            self.buf = [torch.zeros_like(p) for p in params]
        elif kind in ("adam", "adamw"):
            self.exp_avg = [torch.zeros_like(p) for p in params]
            self.exp_avg_sq = [torch.zeros_like(p) for p in params]


class ClassOptimizer(_RunState):
    """torch.optim's update for a run of members with one optimizer kind and one step count.

    ``params`` and ``grads`` are matching lists of tensors; ``lr`` and ``weight_decay`` hold each
    element's member value (float64, broadcasting against the matching tensor). Adam and AdamW call
    torch's fused kernel with ``lr = 1`` on a zeroed buffer and scale the result by the learning rates.
    """

    def __init__(
        self, kind: str, params: list[Tensor], grads: list[Tensor], lr: list[Tensor], weight_decay: list[Tensor]
    ):
        super().__init__(kind, params, grads)
        self.lr = [v.float() for v in lr]
        self.wd = [v.float() for v in weight_decay]
        self.shrink = [(1.0 - a * b).float() for a, b in zip(lr, weight_decay)]  # AdamW, in float64 first
        self.decay = any(bool((v != 0).any()) for v in weight_decay)
        if kind in ("adam", "adamw"):
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


class FusedOptimizer(_RunState):
    """The same updates as :class:`ClassOptimizer` in one pass per tensor (CPU kernels of
    ``fused.py``): ``params``/``grads`` are matching ``[rows, ...]`` tensors, one per layout entry,
    and ``lr``/``weight_decay`` hold one float32 value per row (member)."""

    def __init__(self, kind: str, params: list[Tensor], grads: list[Tensor], lr: Tensor, weight_decay: Tensor):
        super().__init__(kind, params, grads)
        self.lr, self.wd = lr.float().contiguous(), weight_decay.float().contiguous()
        self.t = 0

    def step(self) -> None:
        self.t += 1
        for i, (p, g) in enumerate(zip(self.params, self.grads)):
            if self.kind in ("adam", "adamw"):
                fused.adam_rows_(
                    p, g, self.exp_avg[i], self.exp_avg_sq[i], self.lr, self.wd, self.kind == "adamw",
                    ADAM_BETAS, ADAM_EPS, self.t,
                )  # fmt: skip
            else:
                buf = self.buf[i] if self.kind == "sgd+momentum" else None
                fused.sgd_rows_(p, g, buf, self.lr, self.wd, MOMENTUM)


def make_optimizer(cfg: MemberConfig, params) -> torch.optim.Optimizer:
    """The torch.optim optimizer of the reference loop."""
    if cfg.optimizer in ("sgd", "sgd+momentum"):
        momentum = MOMENTUM if cfg.optimizer == "sgd+momentum" else 0.0
        return torch.optim.SGD(params, lr=cfg.lr, momentum=momentum, weight_decay=cfg.weight_decay)
    cls = torch.optim.Adam if cfg.optimizer == "adam" else torch.optim.AdamW
    return cls(params, lr=cfg.lr, betas=ADAM_BETAS, eps=ADAM_EPS, weight_decay=cfg.weight_decay)
