"""What zoo members are trained on: datasets that need no download.

A :class:`Task` holds tensors shared by every member. For ``per_member`` tasks (implicit neural
representations, sine regression) the targets differ per member: ``y_train``/``y_test`` are
``[K, n, out]`` and a member's ``target`` hyperparameter picks row ``k``.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from functools import cache

import numpy as np
import torch

from ..errors import SpecError


@dataclass(frozen=True)
class Task:
    """Inputs and targets with a fixed train/test split.

    ``kind`` is ``"classification"`` (``y`` int64 ``[n]``, metrics loss/acc) or
    ``"regression"`` (``y`` float32 ``[n, out]`` or ``[K, n, out]``, metrics loss/psnr).
    """

    name: str
    kind: str
    x_train: torch.Tensor
    y_train: torch.Tensor
    x_test: torch.Tensor
    y_test: torch.Tensor
    out_features: int
    per_member: bool = False
    target_labels: torch.Tensor | None = None  # [K]: a class per target row (e.g. the digit an INR draws)

    @property
    def input_shape(self) -> tuple[int, ...]:
        return tuple(self.x_train.shape[1:])

    @property
    def num_targets(self) -> int:
        """How many distinct per-member targets there are (1 for shared targets)."""
        return self.y_train.shape[0] if self.per_member else 1

    @property
    def metric_names(self) -> tuple[str, ...]:
        if self.kind == "classification":
            return ("train_loss", "train_acc", "test_loss", "test_acc")
        return ("train_loss", "train_psnr", "test_loss", "test_psnr")


def _split_standardized(name: str, x: np.ndarray, y: np.ndarray, x_test: np.ndarray, y_test: np.ndarray) -> Task:
    mean, std = x.mean(0), x.std(0) + 1e-6  # statistics of the training inputs only

    def as_x(a: np.ndarray) -> torch.Tensor:
        return torch.from_numpy(((a - mean) / std).astype(np.float32))

    return Task(
        name,
        "classification",
        as_x(x),
        torch.from_numpy(y.astype(np.int64)),
        as_x(x_test),
        torch.from_numpy(y_test.astype(np.int64)),
        int(y.max()) + 1,
    )


def _digits() -> Task:
    """scikit-learn's bundled 8x8 digits (1,797 images), flattened; a fixed 80/20 split."""
    from sklearn.datasets import load_digits

    data = load_digits()
    order = np.random.default_rng(0).permutation(len(data.target))
    cut = int(0.8 * len(order))
    x, y = data.data[order], data.target[order]
    return _split_standardized("digits", x[:cut], y[:cut], x[cut:], y[cut:])


def _mnist1d() -> Task:
    """MNIST-1D (Greydanus 2020) generated offline by its package: 4,000 train / 1,000 test."""
    from mnist1d.data import get_dataset_args, make_dataset

    d = make_dataset(get_dataset_args())
    return _split_standardized("mnist1d", d["x"], d["y"], d["x_test"], d["y_test"])


TASKS: dict[str, Callable[[], Task]] = {"digits": _digits, "mnist1d": _mnist1d}


@cache
def load_task(name: str) -> Task:
    """The task called ``name`` (cached per process)."""
    if name not in TASKS:
        raise SpecError(f"unknown task {name!r}; valid: {sorted(TASKS)}")
    return TASKS[name]()
