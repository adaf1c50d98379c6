"""Held-out data for choosing among merged models: a member's test set split in two, a
validation half that picks hyperparameters and soup ingredients and a test half that reports them.

The builder trains each member on its training subset and scores it on the whole test set, so
the test set is the only data no member of the task has seen; splitting it by a fixed seed keeps
the choice (validation) apart from the reported number (test).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
from torch import Tensor

Split = tuple[Tensor, Tensor, str]  # inputs, targets, task kind


@dataclass(frozen=True)
class Heldout:
    validation: Split
    test: Split


def holdout(zoo: Any, member: int, *, fraction: float = 0.5, seed: int = 0) -> Heldout:
    """Member ``member``'s test set split into ``fraction`` validation and the rest test."""
    data = zoo.task_data(member)
    order = np.random.default_rng(seed).permutation(len(data.x_test))
    cut = int(round(fraction * len(order)))
    val, test = order[:cut], order[cut:]
    return Heldout(
        (data.x_test[val], data.y_test[val], data.kind),
        (data.x_test[test], data.y_test[test], data.kind),
    )
