"""Any weights of a member's architecture, evaluated on that member's task, and the member's data.

A built zoo holds everything a member's task needs: the spec (task name and options) and the
member's hyperparameter columns (its seed, which fixes its training subset, its per-member
target and its task variant). :func:`evaluate` rebuilds the task of each given member and computes
the metrics the builder records (loss and accuracy or PSNR, on the member's training subset and
its test set) for weights no one trained there (merged, aligned, augmented, generated), batched
through the trainer's own evaluation. :func:`task_data` gives a member's data itself.

The functions take an open :class:`~weightzoo.zoo.store.ZooStore`; ``zoo.evaluate(...)`` and
``zoo.task_data(i)`` call them.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch import Tensor

from ..errors import LayoutError, StoreError
from .tasks import Task, load_task
from .train.config import member_config
from .train.group import GroupTrainer
from .train.randomness import seed_keys, training_subsets
from .train.variants import TaskVariant, member_samples, member_variant

EVAL_BATCH = 256  # members evaluated together (one trainer's worth of memory)


@dataclass(frozen=True)
class MemberData:
    """One member's data as it trained and was tested: its training subset and its test set, after
    its task variant (inputs shaped as its architecture reads them; targets for per-member tasks)."""

    x_train: Tensor
    y_train: Tensor
    x_test: Tensor
    y_test: Tensor
    kind: str  # "classification" (class ids) or "regression"


def zoo_task(zoo: Any) -> Task:
    """The task a built zoo's members trained on; a StoreError for zoos without a build spec."""
    spec = zoo.attrs.get("spec")
    if not spec or "task" not in spec:
        raise StoreError(
            f"{zoo.path}: the zoo has no build spec (imported?), so its members' task is unknown; "
            "evaluate weights on a zoo made by `weightzoo zoo build`"
        )
    return load_task(spec["task"], **(spec.get("task_options") or {}))


def stored_hparams(zoo: Any, indices: Sequence[int]) -> list[dict[str, Any]]:
    """Each member's hyperparameters as plain Python values, every column read once."""
    columns = {k: zoo.column(k, indices) for k in zoo.hparam_names}
    return [{k: _scalar(v[row]) for k, v in columns.items()} for row in range(len(indices))]


def task_data(zoo: Any, i: int) -> MemberData:
    """Member ``i``'s training subset and test set, as its variant of the task has them."""
    return hparams_data(zoo, stored_hparams(zoo, [int(i)])[0], zoo.member_architecture(int(i)))


def hparams_data(zoo: Any, hparams: dict[str, Any], architecture: dict) -> MemberData:
    """The data a member of ``zoo``'s task with ``hparams`` (its seed, training fraction and task
    variant, stored or not) and ``architecture`` trains and is tested on."""
    task = zoo_task(zoo)
    variant = member_variant(hparams, task)
    task = variant.inputs(task.for_architecture(architecture))
    cfg = member_config(hparams)
    pool, size = member_samples(cfg, variant, task)
    subset = training_subsets(seed_keys([cfg.seed]), [size], len(task.x_train), [pool])[0, :size]
    test = variant.test_pool(task)
    test = slice(None) if test is None else test
    y_train, y_test = variant.targets(task, cfg.target)
    return MemberData(task.x_train[subset], y_train[subset], task.x_test[test], y_test[test], task.kind)


def evaluate(
    zoo: Any, params: Any, members: int | Sequence[int], *, device: str | torch.device = "cpu"
) -> dict[str, np.ndarray]:
    """The builder's metrics ``{name: float32 [B]}`` of weights ``params [B, P]`` (the zoo's flat
    layout) each on the task of its member in ``members``: one index for all rows, or one set of
    weights (``[P]`` or ``[1, P]``) for all members.

    Members of one architecture and input variant are evaluated together, like a training group.
    Evaluating a stored member's own parameters gives back its stored metrics.
    """
    flat = torch.as_tensor(np.asarray(params, dtype=np.float32))
    flat = flat[None] if flat.ndim == 1 else flat
    if flat.ndim != 2 or flat.shape[1] != zoo.layout.size:
        raise LayoutError(
            f"{zoo.path}: weights to evaluate must have shape [B, {zoo.layout.size}] (the zoo's layout), "
            f"got {list(flat.shape)}"
        )
    idx = np.full(len(flat), int(members), dtype=np.int64) if np.ndim(members) == 0 else np.asarray(members)
    if len(flat) == 1 and len(idx) > 1:
        flat = flat.expand(len(idx), -1)  # one set of weights on every member's task
    if idx.shape != (len(flat),):
        raise LayoutError(f"{zoo.path}: {len(flat)} weight rows need {len(flat)} member indices, got {idx.shape[0]}")
    zoo.rows(idx)  # one-line IndexError for members out of range
    task, hparams = zoo_task(zoo), stored_hparams(zoo, idx)
    batch = int((zoo.attrs.get("spec") or {}).get("batch_size", 128))
    out: dict[str, np.ndarray] = {}
    for rows, arch in _groups(zoo, idx, hparams):
        size = zoo.member_layout(int(idx[rows[0]])).size  # a mixed zoo's rows are padded
        for start in range(0, len(rows), EVAL_BATCH):
            part = rows[start : start + EVAL_BATCH]
            hps = [hparams[r] for r in part]
            trainer = GroupTrainer(
                arch, task.for_architecture(arch), [member_config(h) for h in hps], batch, device,
                variants=[member_variant(h, task) for h in hps], init=flat[part, :size],
            )  # fmt: skip
            for name, values in trainer.evaluate().items():
                out.setdefault(name, np.full(len(flat), np.nan, dtype=np.float32))[part] = values
    return out


def _groups(zoo: Any, idx: np.ndarray, hparams: list[dict]) -> list[tuple[np.ndarray, dict]]:
    """Row positions of the weights sharing one architecture and input variant, with the architecture."""
    groups: dict[tuple, list[int]] = {}
    archs: dict[tuple, dict] = {}
    for row, (arch, hp) in enumerate(zip(zoo.member_architectures(idx), hparams)):
        key = (json.dumps(arch, sort_keys=True), TaskVariant.from_hparams(hp).input_key)
        groups.setdefault(key, []).append(row)
        archs[key] = arch
    return [(np.asarray(rows), archs[key]) for key, rows in groups.items()]


def _scalar(value: Any) -> Any:
    return value.item() if isinstance(value, np.generic) else value
