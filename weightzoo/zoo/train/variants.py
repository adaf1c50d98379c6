"""Per-member task variants: which samples, labels and inputs of its task a member trains on.

A spec varies the task per member like any hyperparameter, with the keys of :data:`VARIANT_KEYS`
under the prefix ``task.`` (``task.classes: 3``, ``task.label_perm: true``, ...). Each member's
resolved variant is stored in its hyperparameter columns, so its data can be rebuilt from the zoo.

Labels and heads: a member keeps its architecture's full head (a 2-class member of a 10-class
family still has 10 outputs). Its labels are the task's class ids, mapped through its label
permutation if it has one; a member with a class subset trains and is tested only on samples of
those classes (after the permutation, its labels are the permuted ids of those classes), with the
loss and the prediction (argmax) over all outputs.

Variants that change labels or samples (``classes``, ``label_perm``, ``train_samples``) differ
freely within a training group; those that change the inputs (``input_perm``, ``rotate``,
``flip``, ``noise``) are shared by a group, so the builder groups members by them.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, replace
from typing import Any

import numpy as np
import torch
from torch import Tensor

from ...errors import SpecError
from ..tasks import Task
from .config import MemberConfig
from .randomness import subset_size

PREFIX = "task."
VARIANT_KEYS = ("classes", "label_perm", "input_perm", "rotate", "flip", "noise", "train_samples")
INPUT_KEYS = ("input_perm", "rotate", "flip", "noise")
FLIPS = ("", "h", "v", "hv")
NOISE_SEED = 0  # the fixed noise field every member with the same ``noise`` level sees


def is_variant_key(name: str) -> bool:
    """Whether a hyperparameter name is a task variant (``task.<key>``)."""
    return name.startswith(PREFIX)


def _seed(name: str, value: Any) -> int:
    """A permutation seed: a non-negative integer (0 or false: no permutation)."""
    if isinstance(value, bool) or not isinstance(value, int | np.integer) or value < 0:
        raise SpecError(f"hparams: {PREFIX}{name} must be a permutation seed (an integer >= 0; 0: none), got {value!r}")
    return int(value)


def _classes(value: Any) -> tuple[int, ...] | None:
    """A class subset from a list or its stored text ``"0,3,7"``; None for all classes."""
    if value is None or value in ("", "all", "None"):
        return None
    items = value.split(",") if isinstance(value, str) else value
    try:
        classes = tuple(sorted({int(c) for c in items}))
    except (TypeError, ValueError):
        raise SpecError(f"hparams: {PREFIX}classes must be class ids like [0, 3] or \"0,3\", got {value!r}") from None
    if not classes or classes[0] < 0:
        raise SpecError(f"hparams: {PREFIX}classes must name classes >= 0, got {value!r}")
    return classes


@dataclass(frozen=True)
class TaskVariant:
    """One member's variant of its task; the defaults leave the task as it is.

    Args:
        classes: the classes it trains and is tested on (None: all).
        label_perm: seed of a permutation of the class ids its labels go through (0: none).
        input_perm: seed of a permutation of the input features, permuted-MNIST style (0: none).
        rotate: degrees an image task's images are turned counter-clockwise (bilinear, edges
            extended; multiples of 90 exactly).
        flip: ``"h"`` (left-right), ``"v"`` (up-down), ``"hv"`` or ``""``.
        noise: standard deviation of additive Gaussian input noise (in the task's standardized
            units), one fixed noise field per split, the same for every member of that level.
        train_samples: training samples it draws from its classes (None: ``train_fraction`` of them).
    """

    classes: tuple[int, ...] | None = None
    label_perm: int = 0
    input_perm: int = 0
    rotate: float = 0.0
    flip: str = ""
    noise: float = 0.0
    train_samples: int | None = None

    @classmethod
    def from_hparams(cls, hparams: Mapping[str, Any]) -> TaskVariant:
        """The variant in a member's hyperparameters (``task.*`` keys; the others are ignored)."""
        given = {k[len(PREFIX) :]: v for k, v in hparams.items() if is_variant_key(k)}
        unknown = sorted(set(given) - set(VARIANT_KEYS))
        if unknown:
            valid = ", ".join(PREFIX + k for k in VARIANT_KEYS)
            raise SpecError(f"hparams: unknown task variant {PREFIX}{unknown[0]}; valid: {valid}")
        flip = str(given.get("flip") or "")
        if flip not in FLIPS:
            raise SpecError(f"hparams: {PREFIX}flip must be one of {list(FLIPS)}, got {flip!r}")
        samples = given.get("train_samples")
        if samples is not None and (isinstance(samples, bool) or not float(samples).is_integer() or samples < 1):
            raise SpecError(f"hparams: {PREFIX}train_samples must be a positive integer, got {samples!r}")
        noise = float(given.get("noise") or 0.0)
        if not math.isfinite(noise) or noise < 0:
            raise SpecError(f"hparams: {PREFIX}noise must be a standard deviation >= 0, got {given.get('noise')!r}")
        return cls(
            classes=_classes(given.get("classes")),
            label_perm=_seed("label_perm", given.get("label_perm") or 0),
            input_perm=_seed("input_perm", given.get("input_perm") or 0),
            rotate=float(given.get("rotate") or 0.0),
            flip=flip,
            noise=noise,
            train_samples=None if samples is None else int(samples),
        )

    @property
    def input_key(self) -> tuple:
        """What a member's inputs depend on: members that train together share it."""
        return tuple(getattr(self, k) for k in INPUT_KEYS)

    @property
    def changes_labels(self) -> bool:
        return self.classes is not None or self.label_perm != 0

    # ------------------------------------------------------------------ checks
    def check(self, task: Task) -> None:
        """Raise SpecError if this variant does not fit ``task`` (one line saying why and what fits)."""
        where = f"task {task.name!r}"
        if self.changes_labels and task.kind != "classification":
            raise SpecError(f"hparams: {PREFIX}classes and {PREFIX}label_perm need a classification task, not {where}")
        if self.classes is not None and self.classes[-1] >= task.out_features:
            raise SpecError(
                f"hparams: {PREFIX}classes {list(self.classes)} names a class >= {task.out_features}; "
                f"{where} has classes 0..{task.out_features - 1}"
            )
        image = task.sample_shape is not None and len(task.sample_shape) == 3
        if (self.rotate or self.flip) and not image:
            raise SpecError(f"hparams: {PREFIX}rotate and {PREFIX}flip need an image task (C x H x W); {where} is not")
        if (self.input_perm or self.noise) and task.per_member:
            raise SpecError(f"hparams: {PREFIX}input_perm and {PREFIX}noise change inputs; {where} fits coordinates")
        if self.train_samples is not None:
            available = len(self.train_pool(task)) if self.classes is not None else len(task.x_train)
            if self.train_samples > available:
                raise SpecError(
                    f"hparams: {PREFIX}train_samples is {self.train_samples}, but only {available} training "
                    f"samples of {where} are in the member's classes"
                )

    # ------------------------------------------------------------------ data
    def inputs(self, task: Task) -> Task:
        """``task`` with this variant's input changes applied to both splits (the same for every member
        sharing :attr:`input_key`)."""
        if self.input_key == TaskVariant().input_key:
            return task
        x_train, x_test = task.x_train, task.x_test
        if self.rotate or self.flip:
            x_train, x_test = (_turn(x, task.sample_shape, self.rotate, self.flip) for x in (x_train, x_test))
        if self.input_perm:
            perm = torch.from_numpy(np.random.default_rng(self.input_perm).permutation(math.prod(x_train.shape[1:])))
            x_train, x_test = (x.reshape(len(x), -1)[:, perm].reshape(x.shape) for x in (x_train, x_test))
        if self.noise:
            gen = torch.Generator().manual_seed(NOISE_SEED)
            x_train, x_test = (x + self.noise * torch.randn(x.shape, generator=gen) for x in (x_train, x_test))
        return replace(task, x_train=x_train.contiguous(), x_test=x_test.contiguous())

    def label_map(self, num_classes: int) -> Tensor | None:
        """int64 ``[num_classes]``: the permuted id of each class (None: labels unchanged)."""
        if not self.label_perm:
            return None
        return torch.from_numpy(np.random.default_rng(self.label_perm).permutation(num_classes))

    def train_pool(self, task: Task) -> Tensor | None:
        """The training samples in this member's classes (ascending), None for all of them."""
        return _in_classes(task.y_train, self.classes)

    def test_pool(self, task: Task) -> Tensor | None:
        """The test samples in this member's classes (ascending), None for all of them."""
        return _in_classes(task.y_test, self.classes)

    def targets(self, task: Task, target: int) -> tuple[Tensor, Tensor]:
        """The member's targets over both whole splits: its row of per-member targets (``target``), or
        the task's labels through its permutation."""
        if task.per_member:
            return task.y_train[target], task.y_test[target]
        labels = self.label_map(task.out_features)
        return (task.y_train, task.y_test) if labels is None else (labels[task.y_train], labels[task.y_test])


def class_text(classes) -> str:
    """A class subset as a member's column stores it: ``"0,3,7"`` (sorted)."""
    return ",".join(map(str, sorted(int(c) for c in classes)))


def _in_classes(y: Tensor, classes: tuple[int, ...] | None) -> Tensor | None:
    if classes is None:
        return None
    return torch.isin(y, torch.tensor(classes)).nonzero().flatten()


def _turn(x: Tensor, sample_shape: tuple[int, ...], degrees: float, flip: str) -> Tensor:
    """Images ``x`` (any shape holding ``[n, *sample_shape]``) flipped, then turned ``degrees``
    counter-clockwise about their centre, in their own shape."""
    images = x.reshape(len(x), *sample_shape)
    if "h" in flip:
        images = images.flip(-1)
    if "v" in flip:
        images = images.flip(-2)
    quarter = degrees / 90
    if float(quarter).is_integer():
        images = torch.rot90(images, int(quarter) % 4, dims=(-2, -1))
    else:
        theta = math.radians(degrees)
        cos, sin = math.cos(theta), math.sin(theta)
        # affine_grid maps output to input coordinates (x right, y down): sampling at R(-theta) turns by theta
        matrix = torch.tensor([[cos, -sin, 0.0], [sin, cos, 0.0]], dtype=images.dtype).expand(len(images), 2, 3)
        grid = torch.nn.functional.affine_grid(matrix, list(images.shape), align_corners=False)
        images = torch.nn.functional.grid_sample(images, grid, padding_mode="border", align_corners=False)
    return images.reshape(x.shape)


def member_variant(hparams: Mapping[str, Any], task: Task) -> TaskVariant:
    """A member's variant, checked against its task."""
    variant = TaskVariant.from_hparams(hparams)
    variant.check(task)
    return variant


def member_samples(cfg: MemberConfig, variant: TaskVariant, task: Task) -> tuple[Tensor | None, int]:
    """The training samples a member draws from (its classes' pool; None: all of them) and how many:
    ``train_samples``, else ``train_fraction`` of the pool."""
    pool = variant.train_pool(task)
    available = len(task.x_train) if pool is None else len(pool)
    size = variant.train_samples if variant.train_samples is not None else subset_size(cfg.train_fraction, available)
    return pool, size


def shared_inputs(task: Task, variants: list[TaskVariant]) -> Task:
    """The task as every member of a group sees it; they must share their input variants."""
    keys = {v.input_key for v in variants}
    if len(keys) > 1:
        names = ", ".join(PREFIX + k for k in INPUT_KEYS)
        raise SpecError(f"members trained together must share their input variants ({names}); group them by those")
    return variants[0].inputs(task) if variants else task


def resolve(hparams: Mapping[str, Any], rng: np.random.Generator, num_classes: int) -> dict[str, Any]:
    """Draws a spec leaves to each member, made concrete with the member's generator: ``task.classes``
    given as a count ``k`` becomes ``k`` classes drawn without replacement (stored as ``"0,3,7"``), and
    ``task.label_perm`` / ``task.input_perm`` given as ``true`` become a drawn permutation seed."""
    out = dict(hparams)
    key = PREFIX + "classes"
    value = out.get(key)
    if isinstance(value, int | np.integer) and not isinstance(value, bool):
        if not 1 <= value <= num_classes:
            raise SpecError(f"hparams: {key} draws {value} classes, but the task has {num_classes}")
        out[key] = class_text(rng.choice(num_classes, size=int(value), replace=False).tolist())
    elif value is not None and not isinstance(value, str):
        out[key] = class_text(_classes(value) or ())
    for name in ("label_perm", "input_perm"):
        if out.get(PREFIX + name) is True:
            out[PREFIX + name] = int(rng.integers(1, 2**31 - 1))
        elif out.get(PREFIX + name) is False:
            out[PREFIX + name] = 0
    return out
