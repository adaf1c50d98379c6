"""The vectorized group trainer: G members of one architecture trained in one batched computation."""

from __future__ import annotations

import bisect
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np
import torch
from torch import Tensor

from ...errors import SpecError
from .. import archs
from ..tasks import Task
from . import fused
from .config import MemberConfig, check_batch_size, check_epochs, member_config
from .dense import DensePath, dense_blocks
from .init import init_params
from .losses import per_sample_loss, predicted_class, psnr
from .memory import EVAL_BYTES, EVAL_CHUNK, chunk_members, feature_sizes
from .network import AutogradPath, BatchedNet, Chunk, Dropout
from .numerics import numeric_path
from .optim import ClassOptimizer, FusedOptimizer
from .randomness import dropout_threshold, epoch_order, seed_keys, step_keys, training_subsets
from .variants import TaskVariant, member_samples, member_variant, shared_inputs


@dataclass
class GroupResult:
    """Parameters at each checkpoint ``[G, E, P]`` (layout order) and metrics ``{name: [G, E]}``; ``numerics``
    is the :class:`~.numerics.NumericPath` (as ``to_dict()``) of the process that trained them (empty where
    no trainer recorded one)."""

    params: np.ndarray
    metrics: dict[str, np.ndarray]
    numerics: dict = field(default_factory=dict)


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
    """The task's tensors on the training device: targets as rows (one block per per-member target or
    label permutation) with each member's block offset, and each member's test samples."""

    kind: str
    x_train: Tensor  # [n, *input]
    y_train: Tensor  # [n], [maps * n] or [K * n, out]
    x_test: Tensor
    y_test: Tensor
    train_offset: Tensor  # int64 [G]: block * n_train (0 for members reading the task's own targets)
    test_offset: Tensor
    member_labels: bool  # whether any member reads a block of its own
    test_rows: Tensor  # int64 [G, k]: each member's test samples (one row expanded when all share the set)
    test_sizes: Tensor  # int64 [G]
    peak: float  # PSNR peak: the task's target range

    @classmethod
    def build(cls, task: Task, cfgs: Sequence[MemberConfig], variants: Sequence[TaskVariant], device) -> _TaskData:
        if task.per_member:
            bad = [c.target for c in cfgs if c.target >= task.num_targets]
            if bad:
                raise SpecError(f"hparams: target {bad[0]} out of range; task {task.name!r} has {task.num_targets}")
            blocks = torch.tensor([c.target for c in cfgs])
            y_train, y_test = (y.reshape(-1, *y.shape[2:]) for y in (task.y_train, task.y_test))
        else:
            blocks, y_train, y_test = _label_blocks(task, variants)
        if task.kind == "classification":
            y_train, y_test = y_train.long(), y_test.long()  # class indices
        test_rows, test_sizes = _member_rows([v.test_pool(task) for v in variants], len(task.x_test), device)
        blocks = blocks.to(device)
        return cls(
            task.kind, task.x_train.to(device), y_train.to(device), task.x_test.to(device), y_test.to(device),
            blocks * len(task.x_train), blocks * len(task.x_test), bool(blocks.any()), test_rows, test_sizes,
            task.value_range,
        )  # fmt: skip


def _label_blocks(task: Task, variants: Sequence[TaskVariant]) -> tuple[Tensor, Tensor, Tensor]:
    """Each member's block of labels (0: the task's own) and the labels of every block: the task's,
    then one block per distinct label permutation of the group."""
    maps: dict[int, Tensor] = {}
    for v in variants:
        if v.label_perm and v.label_perm not in maps:
            maps[v.label_perm] = v.label_map(task.out_features)
    block_of = {seed: i + 1 for i, seed in enumerate(maps)}
    blocks = torch.tensor([block_of.get(v.label_perm, 0) for v in variants])
    y_train = torch.cat([task.y_train, *(m[task.y_train] for m in maps.values())])
    y_test = torch.cat([task.y_test, *(m[task.y_test] for m in maps.values())])
    return blocks, y_train, y_test


def _member_rows(pools: Sequence[Tensor | None], n: int, device) -> tuple[Tensor, Tensor]:
    """int64 ``[G, k]`` rows of each member's samples (its pool, or all ``n``), padded with 0, and their
    counts, on ``device``; one row expanded to all members (stride 0, the evaluation's shared-input
    case) when none has a pool of its own."""
    if all(p is None for p in pools):
        rows = torch.arange(n, device=device).expand(len(pools), n)
        return rows, torch.full((len(pools),), n, device=device)
    sizes = torch.tensor([n if p is None else len(p) for p in pools])
    rows = torch.zeros(len(pools), int(sizes.max()), dtype=torch.int64)
    for row, pool, size in zip(rows, pools, sizes.tolist()):
        row[:size] = torch.arange(n) if pool is None else pool
    return rows.to(device), sizes.to(device)


class GroupTrainer:
    """Trains G members of one architecture together; see :mod:`weightzoo.zoo.train` for semantics.

    Members are kept sorted by training-subset size (then optimizer), so at every step the members
    that still have samples are a suffix of the group and each run of equal size and optimizer
    shares one step count and one fused optimizer call.
    """

    def __init__(
        self,
        arch,
        task: Task,
        cfgs: Sequence[MemberConfig],
        batch_size: int,
        device,
        fast: bool = True,
        *,
        variants: Sequence[TaskVariant] | None = None,
        init: Tensor | None = None,
    ):
        self.device, self.batch_size = torch.device(device), int(batch_size)
        module, self.layout, _ = archs.describe(arch)
        variants = list(variants) if variants is not None else [TaskVariant()] * len(cfgs)
        task = shared_inputs(task, variants)
        n = len(task.x_train)
        pools, sizes = zip(*(member_samples(c, v, task) for c, v in zip(cfgs, variants)))
        order = sorted(range(len(cfgs)), key=lambda i: (sizes[i], cfgs[i].optimizer))
        self.order = torch.tensor(order)
        self.cfgs = [cfgs[i] for i in order]
        self.sizes = [sizes[i] for i in order]
        self.size_t = torch.tensor(self.sizes, device=self.device)
        self.data = _TaskData.build(task, self.cfgs, [variants[i] for i in order], self.device)
        self.keys = seed_keys([c.seed for c in self.cfgs], self.device)
        self.subsets = training_subsets(self.keys, self.sizes, n, [pools[i] for i in order])
        self.params, self.grads = self._init_state(arch, None if init is None else init[self.order])
        self._view_cache: dict[tuple[int, int], tuple[dict[str, Tensor], dict[str, Tensor]]] = {}
        self.runs = _runs(self.cfgs, self.sizes)
        self.optimizers = [self._optimizer(r) for r in self.runs]
        self.net = BatchedNet(arch, module, self.layout)
        self.dropout = self._dropout_constants()
        self._choose_path(arch, task, fast)
        self.numerics = numeric_path(self.device)  # as the paths were chosen, kernels or not

    def _choose_path(self, arch, task: Task, fast: bool) -> None:
        """The hand-written dense path when the architecture allows (and ``fast``), else autograd;
        chunk sizes for training and evaluation."""
        blocks = dense_blocks(arch, self.net.layers) if fast else None
        feats, n = feature_sizes(arch, task), len(task.x_train)
        self.chunk = min(len(self.cfgs), chunk_members(blocks is not None, self.batch_size, feats))
        self.eval_chunk = max(1, EVAL_BYTES // (4 * min(EVAL_CHUNK, n) * max(feats)))
        self.x_train = self.data.x_train.reshape(n, -1) if blocks else self.data.x_train
        if blocks is None:
            self.path: DensePath | AutogradPath = AutogradPath(self.net, task.kind)
        else:
            drop = self.dropout is not None
            self.path = DensePath(blocks, task.kind, self.chunk, self.batch_size, feats[0], drop, self.device)

    def _init_state(self, arch, init: Tensor | None) -> tuple[dict[str, Tensor], dict[str, Tensor]]:
        """Parameters ``{name: [G, *shape]}`` (``init [G, P]`` in trainer order, else each member's seeded
        init) and gradient buffers like them, each a contiguous block of one flat storage (layer by
        layer), so an optimizer over the whole group is one tensor."""
        if init is None:
            init = torch.stack([init_params(arch, self.layout, c) for c in self.cfgs])
        elif tuple(init.shape) != (len(self.cfgs), self.layout.size):
            expected = (len(self.cfgs), self.layout.size)
            raise SpecError(f"initial parameters must have shape {expected}, got {tuple(init.shape)}")
        flat = init.to(self.device, torch.float32)
        g = len(self.cfgs)
        self.storage = torch.empty(g * self.layout.size, device=self.device)
        self.grad_storage = torch.zeros_like(self.storage)
        params, grads = {}, {}
        for e in self.layout:
            params[e.name] = self.storage[g * e.offset : g * e.stop].view(g, *e.shape)
            params[e.name].copy_(flat[:, e.offset : e.stop].view(g, *e.shape))
            grads[e.name] = self.grad_storage[g * e.offset : g * e.stop].view(g, *e.shape)
        return params, grads

    def _optimizer(self, run: _Run) -> ClassOptimizer | FusedOptimizer:
        """The optimizer of a run: fused CPU kernels per layout entry when available, else PyTorch ops
        over the flat storage if the run is the whole group, or over row ranges."""
        rows = slice(run.start, run.stop)
        values = {k: torch.tensor([getattr(c, k) for c in self.cfgs[rows]], dtype=torch.float64, device=self.device)
                  for k in ("lr", "weight_decay")}  # fmt: skip
        if self.device.type == "cpu" and fused.available():
            params = [self.params[e.name][rows] for e in self.layout]
            grads = [self.grads[e.name][rows] for e in self.layout]
            return FusedOptimizer(run.optimizer, params, grads, values["lr"], values["weight_decay"])
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
        points = check_epochs(epochs, checkpoint_epochs)
        params, metrics = [], []
        for epoch in range(epochs + 1):
            if epoch > 0:
                self.epoch(epoch)
            if epoch in points:
                params.append(self.flat_params())
                metrics.append(self.evaluate())
        names = metrics[0].keys()
        stacked = {k: np.stack([m[k] for m in metrics], 1) for k in names}
        return GroupResult(np.stack(params, 1), stacked, self.numerics.to_dict())

    def steps_per_epoch(self) -> int:
        """Steps of the member with the largest training subset (the others sit out the last ones)."""
        return -(-max(self.sizes) // self.batch_size)

    def epoch(self, epoch: int) -> None:
        """One pass of every member over its training subset."""
        steps, bs = self.steps_per_epoch(), self.batch_size
        order = epoch_order(self.keys, self.subsets, self.sizes, epoch, steps, bs)
        dkeys = None if self.dropout is None else step_keys(self.keys, epoch, steps, self.net.sites)
        for s in range(steps):
            self.step(order[s], s, None if dkeys is None else dkeys[:, s])

    def step(self, index: Tensor, s: int, dkeys: Tensor | None) -> None:
        """One optimizer step of every member that has samples left in this epoch."""
        bs = self.batch_size
        first = bisect.bisect_right(self.sizes, s * bs)
        for start in range(first, len(self.sizes), self.chunk):
            self.path.gradients(self._chunk(index, s, dkeys, start, min(start + self.chunk, len(self.sizes))))
        for run, opt in zip(self.runs, self.optimizers):
            if run.size > s * bs:
                opt.step()

    def _chunk(self, index: Tensor, s: int, dkeys: Tensor | None, start: int, stop: int) -> Chunk:
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
            drop = Dropout(dkeys[rows], self.dropout[0][rows], self.dropout[1][rows])
        params, grads = self._views(start, stop)
        return Chunk(
            params,
            grads,
            idx,
            idx + self.data.train_offset[rows, None] if self.data.member_labels else idx,
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
        d = self.data
        out = {}
        for split, x, y, rows, sizes, offset in (
            ("train", d.x_train, d.y_train, self.subsets, self.size_t, d.train_offset),
            ("test", d.x_test, d.y_test, d.test_rows, d.test_sizes, d.test_offset),
        ):
            loss, score = self._eval_split(x, y, rows, sizes, offset)
            out[f"{split}_loss"] = loss
            out[f"{split}_{'acc' if d.kind == 'classification' else 'psnr'}"] = score
        return {k: _to_caller(v, self.order) for k, v in out.items()}

    def _eval_split(self, x: Tensor, y: Tensor, rows: Tensor, sizes: Tensor, offset: Tensor) -> tuple[Tensor, Tensor]:
        """Mean loss and accuracy (or PSNR) ``[G]`` over samples ``rows[g, :sizes[g]]`` of ``x``."""
        if isinstance(self.path, DensePath) and self.path.whole_step:  # the fused kernel's forward pass
            loss, hits = self.path.evaluate(self.params, x, rows, sizes, y, offset)
            return loss / sizes, hits / sizes
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
    init: Tensor | None = None,
) -> GroupResult:
    """Train members that share ``arch`` together in one batched computation.

    Each member follows its own ``hparams`` (missing keys take ``HPARAM_DEFAULTS``; ``task.*`` keys
    are its task variant, see :mod:`.variants`; other keys, such as architecture arguments, are
    ignored). Members start from ``init [G, P]`` when given (fine-tuning), else from their seeded
    init. Returns parameters ``[G, E, P]`` in the layout order of ``archs.describe(arch)`` and
    metrics ``{task.metric_names: [G, E]}`` at each of ``checkpoint_epochs`` (0 = the start), in the
    order of ``hparams``.
    """
    if not hparams:
        raise SpecError("train_group: empty group (no hparams)")
    check_batch_size(batch_size)
    cfgs = [member_config(h) for h in hparams]
    variants = [member_variant(h, task) for h in hparams]
    task = task.for_architecture(arch)  # inputs shaped as the first layer reads them
    trainer = GroupTrainer(arch, task, cfgs, batch_size, device, variants=variants, init=init)
    return trainer.train(epochs, checkpoint_epochs)
