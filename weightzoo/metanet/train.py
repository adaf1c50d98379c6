"""Training metanetworks on a zoo: ``train_metanet`` fits any model of
:data:`~weightzoo.metanet.models.MODEL_KINDS` on a task (``predict:<column>`` or
``classify:<column>``) with validation-based early stopping and returns a
:class:`~weightzoo.metanet.run.MetanetRun`, saved with ``out``.
"""

from __future__ import annotations

import copy
import math
import os
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field, replace
from typing import Any

import torch
from torch import Tensor
from torch.nn import functional as F

from .._fs import ensure_writable
from ..errors import SpecError
from ..zoo.opener import open_zoo
from ..zoo.store import ZooStore
from .augment import parse
from .data import MetanetTask, Normalizer, SplitSpec, ZooMembers, load_members
from .models import Metanet, build_metanet, model_kind
from .probes import probe_input
from .run import RUN_FORMAT, RUN_VERSION, MetanetRun, score_members


@dataclass
class TrainOptions:
    """Optimization budget and early stopping (validation loss, ``patience`` epochs)."""

    epochs: int = 100
    batch_size: int = 64
    lr: float = 1e-3
    weight_decay: float = 1e-5
    patience: int = 20
    seed: int = 0
    clip_grad: float = 10.0
    device: str = "cpu"
    augment: str | None = None  # weight-space augmentation of training batches, e.g. "perm,noise:0.05"


@dataclass
class History:
    """What happened during training (kept in ``config.json``)."""

    epochs_run: int = 0
    best_epoch: int = 0
    best_val_loss: float = math.inf
    seconds: float = 0.0
    members_per_s: float = 0.0  # training throughput, forward + backward
    val_loss: list[float] = field(default_factory=list)


def train_metanet(
    zoo: ZooStore | str | os.PathLike,
    task: str | MetanetTask,
    model: str,
    out: str | os.PathLike | None = None,
    *,
    model_args: dict[str, Any] | None = None,
    options: TrainOptions | None = None,
    split: SplitSpec | None = None,
    epoch: int = -1,
    progress: bool = False,
) -> MetanetRun:
    """Train a metanetwork of kind ``model`` on ``task`` and score it on val and test.

    The best epoch by validation loss is kept. With ``out`` the run is saved there.
    """
    if out is not None:
        ensure_writable(out)  # before the training it would be written after
    pipeline = parse(options.augment) if options is not None and options.augment else None  # fail early
    zoo = open_zoo(zoo)
    options, split, model_args = options or TrainOptions(), split or SplitSpec(), dict(model_args or {})
    kind = model_kind(model)
    task = (MetanetTask.parse(task, epoch) if isinstance(task, str) else task).with_classes(zoo)
    parts = split.indices(zoo)
    for name in ("train", "val"):
        if len(parts[name]) == 0:
            raise SpecError(f"{zoo.path}: the {name} split is empty ({len(zoo)} members); use a bigger zoo")
    raw = {name: load_members(zoo, idx, task, task.epoch) for name, idx in parts.items() if len(idx)}
    info = kind.describe(raw["train"], str(zoo.path))
    normalizer = Normalizer.fit(raw["train"])
    if "probes" in kind.defaults and model_args.get("probes"):  # models that take probe features
        info["probe"] = probe_input(zoo, raw["train"], int(model_args["probes"]), normalizer, split.seed)
    target = _target_stats(task, raw["train"].targets)

    augmenter = None
    if pipeline is not None:
        classes = task.out_features if task.kind == "classification" else None
        augmenter = pipeline.bind(zoo, task.kind, classes, seed=options.seed)
    torch.manual_seed(options.seed)
    net = build_metanet(model, model_args, info, task.out_features)
    data = {name: net.prepare(normalizer.apply(m)) for name, m in raw.items()}
    net.fit_inputs(data["train"])
    net.to(options.device)

    def augmented(pos: Tensor, epoch: int) -> ZooMembers:
        """A training batch drawn afresh: raw weights through the augmentation, then normalized."""
        batch = raw["train"].subset(pos)
        augmenter.set_epoch(epoch)
        generator = augmenter.generator(pos.tolist())
        flat, y = augmenter.flat(batch.flat, batch.targets, generator, augmenter.groups(batch.indices))
        return net.prepare(normalizer.apply(replace(batch, flat=flat, targets=y)))

    batches = None if augmenter is None else augmented
    history = _fit(net, task, target, data["train"], data["val"], options, progress, batches)

    config = {
        "format": RUN_FORMAT,
        "version": RUN_VERSION,
        "model": model,
        "model_args": {**kind.defaults, **model_args},
        "input": info,
        "task": task.to_dict(),
        "split": split.to_dict(),
        "normalization": normalizer.to_dict(),
        "target": target,
        "options": asdict(options),
        "history": asdict(history),
        "augment": None if augmenter is None else augmenter.pipeline.to_dict(),
        "zoo": {
            "path": str(zoo.path),
            "members": len(zoo),
            "name": zoo.name,
            "architecture": zoo.architecture,
        },
    }
    run = MetanetRun(net.eval(), config)
    config["scores"] = {name: score_members(run, m) for name, m in data.items()}
    if out is not None:
        run.save(out)
    return run


def _fit(
    net: Metanet,
    task: MetanetTask,
    target: dict[str, float],
    train: ZooMembers,
    val: ZooMembers,
    options: TrainOptions,
    progress: bool,
    batches: Callable[[Tensor, int], ZooMembers] | None = None,
) -> History:
    """Train with AdamW and keep the best validation epoch; ``batches(positions, epoch)`` makes each
    training batch (augmented) instead of taking it from ``train``."""
    from tqdm.auto import tqdm

    device = torch.device(options.device)
    opt = torch.optim.AdamW(net.parameters(), lr=options.lr, weight_decay=options.weight_decay)
    gen = torch.Generator().manual_seed(options.seed)
    history, best_state, seen, busy = History(), copy.deepcopy(net.state_dict()), 0, 0.0
    start = time.perf_counter()
    bar = tqdm(range(1, options.epochs + 1), desc=f"train {net.kind}", disable=not progress, unit="epoch")
    for epoch in bar:
        net.train()
        t0 = time.perf_counter()
        for pos in torch.randperm(len(train), generator=gen).split(options.batch_size):
            batch = (train.subset(pos) if batches is None else batches(pos, epoch)).to(device)
            loss = _loss(task, target, net(batch), batch.targets)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            if options.clip_grad:
                torch.nn.utils.clip_grad_norm_(net.parameters(), options.clip_grad)
            opt.step()
            seen += len(pos)
        busy += time.perf_counter() - t0
        val_loss = _evaluate_loss(net, task, target, val, options.batch_size, device)
        history.val_loss.append(val_loss)
        history.epochs_run = epoch
        if val_loss < history.best_val_loss:
            history.best_val_loss, history.best_epoch = val_loss, epoch
            best_state = copy.deepcopy(net.state_dict())
        bar.set_postfix(val_loss=f"{val_loss:.4f}", best=history.best_epoch)
        if epoch - history.best_epoch >= options.patience:
            break
    net.load_state_dict(best_state)
    history.seconds = time.perf_counter() - start
    history.members_per_s = seen / busy if busy > 0 else 0.0
    return history


def _loss(task: MetanetTask, target: dict[str, float], out: Tensor, y: Tensor) -> Tensor:
    if task.kind == "classification":
        return F.cross_entropy(out, y)
    return F.mse_loss(out[:, 0], (y - target["mean"]) / target["std"])


@torch.no_grad()
def _evaluate_loss(net, task, target, members: ZooMembers, batch_size: int, device) -> float:
    net.eval()
    total = 0.0
    for pos in torch.arange(len(members)).split(batch_size):
        batch = members.subset(pos).to(device)
        total += _loss(task, target, net(batch), batch.targets).item() * len(pos)
    return total / len(members)


def _target_stats(task: MetanetTask, y: Tensor) -> dict[str, float]:
    if task.kind == "classification":
        return {"mean": 0.0, "std": 1.0}
    std = float(y.std(unbiased=False))
    return {"mean": float(y.mean()), "std": std if std > 1e-8 else 1.0}


def check_device(device: str) -> str:
    """``device`` if torch can use it, else SpecError saying what is available."""
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise SpecError(f"--device {device}: no CUDA device is available here; use --device cpu")
    try:
        torch.device(device)
    except RuntimeError:
        raise SpecError(f"--device {device!r} is not a torch device (cpu, cuda, cuda:1, ...)") from None
    return device
