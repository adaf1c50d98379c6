"""Training hyperparameters: defaults, valid choices, one member's validated config, run checks."""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from ...errors import SpecError

HPARAM_DEFAULTS: dict[str, Any] = {
    "seed": 0,
    "optimizer": "adam",
    "lr": 1e-3,
    "weight_decay": 0.0,
    "dropout": 0.0,
    "init": "kaiming_uniform",
    "init_scale": 1.0,
    "train_fraction": 1.0,
    "target": 0,
}
BASE_MEMBER = "base.member"  # a fine-tuned member's base member (the zoo it starts from is the spec's)
INITS = ("default", "uniform", "normal", "kaiming_uniform", "kaiming_normal", "xavier", "siren")
OPTIMIZERS = ("sgd", "sgd+momentum", "adam", "adamw")


@dataclass(frozen=True)
class MemberConfig:
    """One member's validated training hyperparameters (see ``HPARAM_DEFAULTS``)."""

    seed: int
    optimizer: str
    lr: float
    weight_decay: float
    dropout: float
    init: str
    init_scale: float
    train_fraction: float
    target: int


def member_config(hparams: Mapping[str, Any]) -> MemberConfig:
    """Validate one member's hyperparameters; other keys (architecture arguments) are ignored."""
    hp = {**HPARAM_DEFAULTS, **{k: v for k, v in hparams.items() if k in HPARAM_DEFAULTS}}
    cfg = MemberConfig(
        seed=_as_number("seed", hp["seed"], int),
        optimizer=_as_choice("optimizer", hp["optimizer"], OPTIMIZERS),
        lr=_as_number("lr", hp["lr"], float, low=0.0, low_open=True),
        weight_decay=_as_number("weight_decay", hp["weight_decay"], float, low=0.0),
        dropout=_as_number("dropout", hp["dropout"], float, low=0.0, high=1.0),
        init=_as_choice("init", hp["init"], INITS),
        init_scale=_as_number("init_scale", hp["init_scale"], float, low=0.0, low_open=True),
        train_fraction=_as_number("train_fraction", hp["train_fraction"], float, low=0.0, low_open=True, high=1.0),
        target=_as_number("target", hp["target"], int, low=0),
    )
    if cfg.dropout >= 1.0:
        raise SpecError(f"hparams: dropout must be in [0, 1), got {cfg.dropout}")
    return cfg


def _as_choice(name: str, value: Any, valid: Sequence[str]) -> str:
    if str(value) not in valid:
        raise SpecError(f"hparams: unknown {name} {value!r}; valid: {', '.join(valid)}")
    return str(value)


def _as_number(
    name: str, value: Any, kind: type, *, low: float | None = None, high: float | None = None, low_open: bool = False
) -> Any:
    """``value`` as ``kind``, finite and within ``[low, high]`` (``(low, high]`` if ``low_open``)."""
    try:
        number = kind(value)
    except (TypeError, ValueError):
        raise SpecError(
            f"hparams: {name} must be {'an integer' if kind is int else 'a number'}, got {value!r}"
        ) from None
    if kind is int and number != value:
        raise SpecError(f"hparams: {name} must be an integer, got {value!r}")
    too_low = low is not None and (number <= low if low_open else number < low)
    if not math.isfinite(number) or too_low or (high is not None and number > high):
        bounds = f"{'(' if low_open else '['}{low}, {high if high is not None else 'inf'}]"
        raise SpecError(f"hparams: {name} must be in {bounds}, got {value!r}")
    return number


def check_epochs(epochs: int, checkpoint_epochs: Sequence[int]) -> list[int]:
    """The sorted distinct checkpoint epochs, each within ``[0, epochs]`` (at least one)."""
    points = sorted({int(e) for e in checkpoint_epochs})
    if not points or points[0] < 0 or points[-1] > epochs:
        raise SpecError(
            f"checkpoint_epochs must be a non-empty list within [0, {epochs}], got {list(checkpoint_epochs)}"
        )
    return points


def check_batch_size(batch_size: int) -> None:
    """Raise SpecError unless ``batch_size`` is a positive integer."""
    if int(batch_size) < 1:
        raise SpecError(f"batch_size must be a positive integer, got {batch_size!r}")
