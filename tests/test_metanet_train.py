"""Metanet training end to end: every model through the CLI, runs that reload, bad input."""

import json

import numpy as np
import pytest
import torch
from conftest import tamper

from weightzoo.cli import main
from weightzoo.errors import SpecError
from weightzoo.metanet.data import MetanetTask, Normalizer, SplitSpec, load_members
from weightzoo.metanet.run import load_run
from weightzoo.metanet.train import TrainOptions, train_metanet
from weightzoo.zoo import archs
from weightzoo.zoo.opener import open_zoo
from weightzoo.zoo.store import ZooStore

MODELS = ["mlp", "statnn", "deepsets", "dws", "gmn"]
FAST = ["--epochs", "25", "--patience", "25", "--batch-size", "32", "--quiet"]
SMALL = {  # sizes that keep the suite quick; the defaults are the benchmark's
    "gmn": ["--arg", "hidden=16", "--arg", "layers=2"],
    "dws": ["--arg", "hidden_channels=8", "--arg", "depth=2"],
    "deepsets": ["--arg", "hidden=32"],
}


def run(capsys, *argv):
    code = main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return code, out, err


def scaled_zoo(path, arch, members=240, seed=0):
    """Members whose weights are N(0, s^2) with s ~ U(0.2, 2): ``scale`` is learnable from the
    weights and invariant to hidden permutations; ``size`` names its tercile as a class."""
    _, layout, _ = archs.describe(arch)
    rng = np.random.default_rng(seed)
    s = rng.uniform(0.2, 2.0, members).astype(np.float32)
    params = rng.standard_normal((members, 1, layout.size)).astype(np.float32) * s[:, None, None]
    zoo = ZooStore.create(path, layout, architecture=arch, epochs=[1])
    size = np.array(["small", "medium", "large"])[np.digitize(s, [0.8, 1.4])]
    zoo.append(params, hparams={"size": size, "lr": s * 0.01}, metrics={"scale": s[:, None]})
    zoo.close()
    return path


@pytest.fixture(scope="module")
def mlp_zoo(tmp_path_factory):
    return scaled_zoo(tmp_path_factory.mktemp("zoo") / "mlp.zarr", archs.mlp(4, [6, 5], 3))


@pytest.fixture(scope="module")
def cnn_zoo(tmp_path_factory):
    return scaled_zoo(tmp_path_factory.mktemp("zoo") / "cnn.zarr", archs.cnn(1, [2, 3], 2, dim=1), members=40)


@pytest.mark.parametrize("model", MODELS)
def test_each_model_trains_saves_and_evaluates_through_the_cli(mlp_zoo, tmp_path, capsys, model):
    out = tmp_path / model
    code, text, err = run(capsys, "metanet", "train", "--zoo", mlp_zoo, "--task", "predict:scale", "--model", model,
                          "--out", out, *FAST, *SMALL.get(model, []))  # fmt: skip
    assert code == 0, err
    assert "test" in text and "kendall_tau" in text
    assert sorted(p.name for p in out.iterdir()) == ["config.json", "model.safetensors"]
    config = json.loads((out / "config.json").read_text())
    assert config["model"] == model and config["task"]["column"] == "scale"
    assert 1 <= config["history"]["best_epoch"] <= config["history"]["epochs_run"] <= 25
    code, text, err = run(capsys, "metanet", "eval", out, "--zoo", mlp_zoo, "--json")
    assert code == 0, err
    scores = json.loads(text)
    assert scores["members"] == 24
    assert scores["kendall_tau"] == pytest.approx(config["scores"]["test"]["kendall_tau"], abs=1e-6)
    assert scores["kendall_tau"] > 0.5, scores  # the weight scale is easy to read off the weights


def test_classification_and_python_api(mlp_zoo, tmp_path):
    args = {"hidden_channels": 8, "depth": 2}
    run_ = train_metanet(
        mlp_zoo, "classify:size", "dws", tmp_path / "r", options=TrainOptions(epochs=30), model_args=args
    )
    assert run_.task.classes == ("large", "medium", "small")
    assert run_.config["scores"]["test"]["accuracy"] > 0.6  # chance is about 1/3
    again = load_run(tmp_path / "r")
    labels = again.predict(mlp_zoo, split="test")
    assert labels.shape == (24,) and set(labels) <= {"large", "medium", "small"}
    assert list(labels) == list(run_.predict(mlp_zoo, split="test"))


def test_training_is_deterministic(mlp_zoo):
    args = {"hidden": 16, "layers": 2}
    a, b = (
        train_metanet(mlp_zoo, "predict:scale", "gmn", options=TrainOptions(epochs=1, batch_size=128), model_args=args)
        for _ in range(2)
    )
    for (k, x), y in zip(a.model.state_dict().items(), b.model.state_dict().values()):
        assert torch.equal(x, y), k


def test_normalizer_scales_whole_tensors(mlp_zoo):
    zoo = open_zoo(mlp_zoo)
    members = load_members(zoo, np.arange(len(zoo)), MetanetTask.parse("predict:scale"))
    normed = Normalizer.fit(members).apply(members)
    for e in zoo.layout:
        part = normed.flat[:, e.offset : e.stop]
        assert abs(part.mean().item()) < 1e-4 and part.std(unbiased=False).item() == pytest.approx(1, abs=1e-3)


@pytest.mark.parametrize("model", ["statnn", "gmn"])
def test_mixed_architectures(mixed_zoo, tmp_path, capsys, model):
    out = tmp_path / model
    code, text, err = run(capsys, "metanet", "train", "--zoo", mixed_zoo, "--task", "predict:test_acc",
                          "--model", model, "--out", out, "--epochs", "2", "--quiet")  # fmt: skip
    assert code == 0, err
    code, text, err = run(capsys, "metanet", "eval", out, "--zoo", mixed_zoo, "--split", "all", "--json")
    assert code == 0, err
    assert json.loads(text)["members"] == 24


@pytest.mark.parametrize(
    "case, needle",
    [
        ("dws-on-cnn", "DWSNet takes MLP layouts"),
        ("missing-column", "no column 'accuracy'"),
        ("string-regression", "use classify:size"),
        ("bad-task", "write predict:<metric>"),
        ("unknown-model", "--model 'transformer' is unknown"),
        ("mlp-on-mixed", "mlp reads one layout (use gmn or statnn)"),
        ("other-layout", "differs from the one mlp was built for"),
        ("missing-weights", "model.safetensors: missing"),
        ("tampered-weights", "checksum differs"),
        ("bad-arg", "--arg 'hidden': write key=value"),
        ("no-cuda", "no CUDA device"),
    ],
)
def test_bad_input_is_one_line_exit_2(case, needle, mlp_zoo, cnn_zoo, mixed_zoo, tmp_path, capsys):
    train = ["metanet", "train", "--zoo", mlp_zoo, "--task", "predict:scale", "--model", "mlp", "--epochs", "1", "-q"]
    out = tmp_path / "run"
    argv = {
        "dws-on-cnn": ["metanet", "train", "--zoo", cnn_zoo, "--task", "predict:scale", "--model", "dws"],
        "missing-column": ["metanet", "train", "--zoo", mlp_zoo, "--task", "predict:accuracy", "--model", "mlp"],
        "string-regression": ["metanet", "train", "--zoo", mlp_zoo, "--task", "predict:size", "--model", "mlp"],
        "bad-task": ["metanet", "train", "--zoo", mlp_zoo, "--task", "scale", "--model", "mlp"],
        "unknown-model": ["metanet", "train", "--zoo", mlp_zoo, "--task", "predict:scale", "--model", "transformer"],
        "mlp-on-mixed": ["metanet", "train", "--zoo", mixed_zoo, "--task", "predict:test_acc", "--model", "mlp"],
        "bad-arg": [*train, "--arg", "hidden"],
        "no-cuda": [*train, "--device", "cuda"],
    }.get(case)
    if argv is not None:
        argv = [*argv, "--out", out]
        if case == "no-cuda" and torch.cuda.is_available():
            pytest.skip("a CUDA device is present")
    else:
        assert run(capsys, *train, "--out", out)[0] == 0
        if case == "other-layout":
            argv = ["metanet", "eval", out, "--zoo", cnn_zoo]
        elif case == "missing-weights":
            (out / "model.safetensors").unlink()
            argv = ["metanet", "eval", out, "--zoo", mlp_zoo]
        else:
            tamper(out / "model.safetensors")
            argv = ["metanet", "eval", out, "--zoo", mlp_zoo]
    code, _, err = run(capsys, *argv)
    assert code == 2
    assert needle in err and err.startswith("error: ") and err.count("\n") == 1, err


def test_train_subset_keeps_validation_and_test_members(mlp_zoo):
    zoo = open_zoo(mlp_zoo)
    full, tenth = SplitSpec(seed=3).indices(zoo), SplitSpec(seed=3, train_subset=0.1).indices(zoo)
    assert np.array_equal(full["val"], tenth["val"]) and np.array_equal(full["test"], tenth["test"])
    assert len(tenth["train"]) == round(0.1 * len(full["train"])) and set(tenth["train"]) < set(full["train"])
    assert np.array_equal(SplitSpec(seed=3, train_subset=0.1).select(zoo, "train"), tenth["train"])
    spec = SplitSpec(seed=3, train_subset=0.1)
    assert SplitSpec.from_dict(spec.to_dict()) == spec and "train_subset" not in SplitSpec().to_dict()
    run = train_metanet(mlp_zoo, "predict:scale", "mlp", options=TrainOptions(epochs=1), split=spec)
    assert run.config["split"]["train_subset"] == 0.1
    with pytest.raises(SpecError, match=r"train_subset=0 must be in \(0, 1\]"):
        SplitSpec(train_subset=0)
