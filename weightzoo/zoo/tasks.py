"""What zoo members are trained on: datasets that need no download."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from functools import cache

import numpy as np
import torch

from ..errors import SpecError


@dataclass(frozen=True)
class Task:
    """A supervised task as float32 inputs and integer labels, with a fixed train/test split."""

    name: str
    x_train: torch.Tensor
    y_train: torch.Tensor
    x_test: torch.Tensor
    y_test: torch.Tensor
    num_classes: int

    @property
    def input_shape(self) -> tuple[int, ...]:
        return tuple(self.x_train.shape[1:])


def _split_standardized(name: str, x: np.ndarray, y: np.ndarray, x_test: np.ndarray, y_test: np.ndarray) -> Task:
    mean, std = x.mean(0), x.std(0) + 1e-6  # statistics of the training inputs only
    as_x = lambda a: torch.from_numpy(((a - mean) / std).astype(np.float32))  # noqa: E731
    return Task(
        name,
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
