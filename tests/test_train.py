"""The vectorized group trainer against the plain per-member loop, and its semantics."""

import math

import numpy as np
import pytest
import torch

from weightzoo.errors import SpecError
from weightzoo.zoo import archs
from weightzoo.zoo.tasks import Task, load_task
from weightzoo.zoo.train import (
    HPARAM_DEFAULTS,
    INITS,
    OPTIMIZERS,
    DensePath,
    GroupTrainer,
    dropout_factors_,
    dropout_threshold,
    group_size_for,
    hash32,
    init_params,
    member_config,
    train_group,
    train_member,
)

DIGITS_MLP = archs.mlp(64, [16, 16], 10)
RUN = {"epochs": 2, "checkpoint_epochs": [0, 1, 2], "batch_size": 64}


@pytest.fixture(scope="module")
def digits():
    return load_task("digits")


def sine_task(targets: int = 3, n: int = 48) -> Task:
    """A per-member regression task: member with target k fits sin((k + 1) * x) on [-1, 1]."""
    x = torch.linspace(-1, 1, n).unsqueeze(1)
    y = torch.stack([0.5 * torch.sin((k + 1) * 3 * x) for k in range(targets)])
    return Task("sines", "regression", x[::2], y[:, ::2], x[1::2], y[:, 1::2], 1, per_member=True)


ONE_SAMPLE = 1 / 360  # digits' test split, the smallest here: a near-tie of two logits may flip on rounding


def assert_same(group, g: int, member, atol: float) -> None:
    """Member ``g`` of a group result equals a single-member result (accuracy up to one sample)."""
    np.testing.assert_allclose(group.params[g], member.params[0], atol=atol, rtol=0)
    for k, v in member.metrics.items():
        tol = max(atol, ONE_SAMPLE) if k.endswith("_acc") else atol
        np.testing.assert_allclose(group.metrics[k][g], v[0], atol=tol, rtol=1e-5)


MIXED = [
    {"seed": 1, "optimizer": "sgd", "lr": 0.05},
    {"seed": 2, "optimizer": "adam", "lr": 3e-3, "weight_decay": 1e-3, "dropout": 0.2, "train_fraction": 0.4},
    {"seed": 3, "optimizer": "sgd+momentum", "lr": 0.01, "weight_decay": 1e-4, "dropout": 0.1},
    {"seed": 4, "optimizer": "adamw", "lr": 2e-3, "weight_decay": 1e-2, "train_fraction": 0.7},
    {"seed": 5, "optimizer": "adam", "lr": 1e-3, "init": "default", "init_scale": 0.5},
]


@pytest.mark.parametrize("optimizer", ["sgd", "adam"])
@pytest.mark.parametrize("activation", ["relu", "tanh"])
@pytest.mark.parametrize("family", ["mlp", "cnn1d", "residual"])
def test_vectorized_matches_the_loop(digits, optimizer, activation, family):
    if family == "mlp":
        arch = archs.mlp(64, [16, 16], 10, activation=activation)
    elif family == "residual":  # skip blocks with LayerNorm: the autograd path
        arch = archs.mlp_wd(64, 16, 3, 10, activation=activation, norm="layernorm", residual=True)
    else:
        arch = archs.cnn(1, [4, 4], 10, dim=1, kernel=5, stride=2, activation=activation)
    lr = 0.05 if optimizer == "sgd" else 3e-3
    hps = [{"seed": s, "optimizer": optimizer, "lr": lr, "dropout": d} for s, d in ((0, 0.0), (1, 0.25))]
    group = train_group(arch, digits, hps, **RUN)
    for g, hp in enumerate(hps):
        assert_same(group, g, train_member(arch, digits, hp, **RUN), atol=1e-4)


def test_both_group_paths_match_the_loop(digits):
    """The hand-written dense path and the autograd path compute the same training."""
    cfgs = [member_config(h) for h in MIXED]
    fast, generic = (GroupTrainer(DIGITS_MLP, digits, cfgs, 64, "cpu", fast=f) for f in (True, False))
    assert isinstance(fast.path, DensePath) and not isinstance(generic.path, DensePath)
    a, b = fast.train(2, [2]), generic.train(2, [2])
    np.testing.assert_allclose(a.params, b.params, atol=3e-5, rtol=0)  # summation order, amplified by Adam
    assert_same(a, 1, train_member(DIGITS_MLP, digits, MIXED[1], epochs=2, checkpoint_epochs=[2], batch_size=64), 1e-4)


def test_a_member_does_not_depend_on_its_group(digits):
    group = train_group(DIGITS_MLP, digits, MIXED, **RUN)
    for g in (1, 4):
        alone = train_group(DIGITS_MLP, digits, [MIXED[g]], **RUN)
        assert_same(group, g, alone, atol=1e-5)


def test_training_is_deterministic(digits):
    a = train_group(DIGITS_MLP, digits, MIXED, **RUN)
    b = train_group(DIGITS_MLP, digits, MIXED, **RUN)
    assert np.array_equal(a.params, b.params)
    assert all(np.array_equal(a.metrics[k], b.metrics[k]) for k in a.metrics)


def test_shapes_checkpoints_and_layout_order(digits):
    run = {"epochs": 3, "checkpoint_epochs": [3, 0, 1], "batch_size": 100}
    result = train_group(DIGITS_MLP, digits, MIXED[:3], **run)
    module, layout, _ = archs.describe(DIGITS_MLP)
    assert result.params.shape == (3, 3, layout.size) and result.params.dtype == np.float32
    assert set(result.metrics) == set(digits.metric_names)
    assert all(v.shape == (3, 3) and v.dtype == np.float32 for v in result.metrics.values())
    cfg = member_config(MIXED[0])
    np.testing.assert_array_equal(result.params[0, 0], init_params(DIGITS_MLP, layout, cfg).numpy())
    # the stored parameters, loaded into the architecture's module, reproduce the recorded metric
    module.load_state_dict(layout.unflatten(torch.from_numpy(result.params[2, -1])))
    acc = (module.eval()(digits.x_test).argmax(1) == digits.y_test).float().mean().item()
    assert acc == pytest.approx(result.metrics["test_acc"][2, -1], abs=1e-6)
    with pytest.raises(SpecError, match="checkpoint_epochs"):
        train_group(DIGITS_MLP, digits, MIXED[:1], epochs=2, checkpoint_epochs=[3], batch_size=64)


def test_accuracy_improves_on_digits(digits):
    hps = [{"seed": s, "lr": 1e-2} for s in range(3)]
    result = train_group(DIGITS_MLP, digits, hps, epochs=5, checkpoint_epochs=[0, 5], batch_size=64)
    acc = result.metrics["test_acc"]
    assert (acc[:, 0] < 0.3).all() and (acc[:, 1] > 0.9).all()
    assert (result.metrics["train_loss"][:, 1] < result.metrics["train_loss"][:, 0]).all()


@pytest.mark.parametrize("optimizer", OPTIMIZERS)
def test_each_optimizer_trains(digits, optimizer):
    lr = 0.05 if optimizer.startswith("sgd") else 5e-3
    result = train_group(DIGITS_MLP, digits, [{"optimizer": optimizer, "lr": lr, "weight_decay": 1e-4}], **RUN)
    assert np.isfinite(result.params).all()
    assert not np.array_equal(result.params[0, 0], result.params[0, -1])
    assert result.metrics["train_loss"][0, -1] < 0.7 * result.metrics["train_loss"][0, 0]


@pytest.mark.parametrize("init", INITS)
def test_each_init(init):
    arch = archs.siren(2, [64, 64], 1) if init == "siren" else archs.mlp(64, [256], 10)
    _, layout, _ = archs.describe(arch)
    base = layout.unflatten(init_params(arch, layout, member_config({"init": init, "seed": 3})))
    scaled = layout.unflatten(init_params(arch, layout, member_config({"init": init, "seed": 3, "init_scale": 2.0})))
    w, fan_in = base["2.weight"], base["2.weight"].shape[1]
    expected_std = {
        "default": 1 / math.sqrt(3 * fan_in),
        "uniform": 1 / math.sqrt(fan_in),
        "normal": 1 / math.sqrt(fan_in),
        "kaiming_uniform": math.sqrt(2 / fan_in),
        "kaiming_normal": math.sqrt(2 / fan_in),
        "xavier": math.sqrt(2 / (fan_in + w.shape[0])),
        "siren": math.sqrt(2 / fan_in) / 30,
    }[init]
    assert w.std().item() == pytest.approx(expected_std, rel=0.05)
    assert torch.equal(scaled["2.weight"], 2 * w)
    assert (base["0.bias"] != 0).any() if init == "default" else (base["0.bias"] == 0).all()
    if init == "siren":
        assert base["0.weight"].abs().max() <= 1 / 2


def test_dropout_is_a_training_only_random_mask(digits):
    plain, dropped = ({"seed": 7, "lr": 3e-3, "dropout": p} for p in (0.0, 0.5))
    result = train_group(DIGITS_MLP, digits, [plain, dropped], **RUN)
    for k, v in result.metrics.items():  # same init, and evaluation never drops units
        assert v[0, 0] == v[1, 0], k
    assert not np.allclose(result.params[0, -1], result.params[1, -1])
    hashed = hash32(torch.arange(100_000, dtype=torch.int32) + 12345)
    for p in (0.1, 0.5):
        factors = dropout_factors_(hashed, torch.empty(100_000), torch.tensor(dropout_threshold(p)), torch.tensor(2.0))
        assert set(factors.unique().tolist()) == {0.0, 2.0}
        assert (factors == 0).float().mean().item() == pytest.approx(p, abs=0.01)


def test_hash_is_lowbias32():
    x = np.arange(-5000, 5000, 7, dtype=np.int64).astype(np.uint32)
    expected = x.copy()
    with np.errstate(over="ignore"):
        for shift, mult in ((16, 0x7FEB352D), (15, 0x846CA68B), (16, None)):
            expected ^= expected >> np.uint32(shift)
            if mult is not None:
                expected *= np.uint32(mult)
    got = hash32(torch.from_numpy(x.view(np.int32)))
    np.testing.assert_array_equal(got.numpy().view(np.uint32), expected)


def test_per_member_targets_regression():
    task = sine_task()
    arch = archs.mlp(1, [32, 32], 1, activation="tanh")
    hps = [{"seed": k, "target": k, "lr": 1e-2} for k in range(3)]
    run = {"epochs": 30, "checkpoint_epochs": [0, 30], "batch_size": 8}
    result = train_group(arch, task, hps, **run)
    assert set(result.metrics) == {"train_loss", "train_psnr", "test_loss", "test_psnr"}
    loss, psnr = result.metrics["test_loss"], result.metrics["test_psnr"]
    np.testing.assert_allclose(psnr, 10 * np.log10(1 / loss), rtol=1e-5)
    assert (loss[:, 1] < 0.5 * loss[:, 0]).all()
    assert_same(result, 2, train_member(arch, task, hps[2], **run), atol=1e-4)
    # a member fits its own row: its parameters evaluated on another target do worse
    module, layout, _ = archs.describe(arch)
    module.load_state_dict(layout.unflatten(torch.from_numpy(result.params[0, -1])))
    with torch.no_grad():
        own, other = (((module(task.x_test) - task.y_test[k]) ** 2).mean().item() for k in (0, 2))
    assert own < other
    with pytest.raises(SpecError, match="target 3 out of range"):
        train_group(arch, task, [{"target": 3}], **run)


def test_siren_trains_on_the_fast_path():
    task = sine_task(targets=2, n=64)
    arch = archs.siren(1, [16, 16], 1, w0=10.0)
    cfgs = [member_config({"init": "siren", "target": k, "lr": 1e-3, "seed": k}) for k in range(2)]
    trainer = GroupTrainer(arch, task, cfgs, 16, "cpu")
    assert isinstance(trainer.path, DensePath)
    result = trainer.train(20, [0, 20])
    assert (result.metrics["train_psnr"][:, 1] > result.metrics["train_psnr"][:, 0] + 5).all()
    hp = {"init": "siren", "target": 1, "lr": 1e-3, "seed": 1}
    assert_same(result, 1, train_member(arch, task, hp, epochs=20, checkpoint_epochs=[0, 20], batch_size=16), 1e-4)


def test_group_size_grows_with_the_budget(digits):
    sizes = [group_size_for(DIGITS_MLP, digits, 64, m << 20) for m in (1, 8, 64, 512, 4096)]
    assert sizes == sorted(sizes) and sizes[0] >= 1 and sizes[-1] > sizes[1]
    cnn = archs.cnn(1, [8, 8], 10, dim=1)
    assert group_size_for(cnn, digits, 64, 64 << 20) < group_size_for(cnn, digits, 64, 1 << 30)


@pytest.mark.parametrize(
    ("hparams", "message"),
    [
        ({"optimizer": "rmsprop"}, "unknown optimizer 'rmsprop'; valid: sgd, sgd+momentum, adam, adamw"),
        ({"init": "orthogonal"}, "unknown init 'orthogonal'; valid: default, uniform, normal"),
        ({"lr": -1.0}, "lr must be in"),
        ({"dropout": 1.0}, "dropout must be in"),
        ({"train_fraction": 0}, "train_fraction must be in"),
        ({"seed": "x"}, "seed must be an integer"),
    ],
)
def test_bad_hparams_are_one_line_spec_errors(digits, hparams, message):
    with pytest.raises(SpecError, match=message.replace("+", r"\+")) as info:
        train_group(DIGITS_MLP, digits, [hparams], **RUN)
    assert "\n" not in str(info.value)
    with pytest.raises(SpecError):
        train_member(DIGITS_MLP, digits, hparams, **RUN)


def test_defaults_and_extra_keys(digits):
    assert member_config({}) == member_config(HPARAM_DEFAULTS)
    assert member_config({"activation": "tanh", "width": 3}) == member_config({})  # architecture arguments
    with pytest.raises(SpecError, match="not supported by the vectorized trainer"):
        train_group(archs.mlp(64, [8], 10, norm="batchnorm"), digits, [{}], **RUN)
