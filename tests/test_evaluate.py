"""Evaluating any weights on a member's task: stored members give back their stored metrics, other
weights are evaluated where the member was, the member's data itself, and one-line errors."""

import json

import numpy as np
import pytest
import torch
from conftest import make_zoo

import weightzoo
from weightzoo.cli import main
from weightzoo.errors import LayoutError, StoreError
from weightzoo.zoo.build import build_zoo
from weightzoo.zoo.opener import open_zoo
from weightzoo.zoo.tasks import load_task


@pytest.fixture(scope="module")
def mlp_zoo(tmp_path_factory):
    path = tmp_path_factory.mktemp("eval") / "mlp.zarr"
    build_zoo("tiny-mnist1d-mlp", path)
    return path


@pytest.mark.parametrize("spec", ["tiny-mnist1d-mlp", "tiny-digits-smallcnn", "tiny-digits-inr"])
def test_stored_members_give_back_their_stored_metrics(tmp_path, suffix, spec):
    path = tmp_path / f"z{suffix}"
    build_zoo(spec, path)
    with open_zoo(path) as zoo:
        members = np.arange(len(zoo))
        for epoch in zoo.epochs:
            metrics = zoo.evaluate(zoo.params(epoch=epoch), members)
            assert set(metrics) == set(zoo.metric_names)
            for name, values in metrics.items():
                np.testing.assert_allclose(values, zoo.metric(name, epoch=epoch), rtol=1e-6, atol=1e-7)


def test_a_mixed_zoo_is_evaluated_member_by_architecture(mixed_zoo):
    with open_zoo(mixed_zoo) as zoo:
        order = np.random.default_rng(0).permutation(len(zoo))  # architectures interleaved
        metrics = weightzoo.evaluate(zoo, zoo.params(order), order)
        for name, values in metrics.items():
            np.testing.assert_allclose(values, zoo.metric(name, order), rtol=1e-6, atol=1e-7)


def test_other_weights_are_evaluated_on_each_members_task(mlp_zoo):
    with open_zoo(mlp_zoo) as zoo:
        mean = zoo.params().mean(0)  # weights no one trained: the average member
        metrics = zoo.evaluate(mean, [0, 1, 2])
        task = load_task("mnist1d")
        for i in range(3):
            model = zoo.model(i)
            model.load_state_dict(zoo.member_layout(i).unflatten(mean))
            with torch.no_grad():
                acc = (model(task.x_test).argmax(1) == task.y_test).float().mean().item()
            assert metrics["test_acc"][i] == pytest.approx(acc, abs=1e-6)


def test_task_data_is_the_members_subset_and_targets(tmp_path):
    build_zoo("tiny-digits-inr", tmp_path / "inr.zarr")
    with open_zoo(tmp_path / "inr.zarr") as zoo:
        target = int(zoo.column("target", [5])[0])
        data = zoo.task_data(5)
        task = load_task("digits-inr", count=4)
        assert data.kind == "regression" and torch.equal(data.y_test, task.y_test[target])
        assert torch.equal(data.x_train, task.x_train)  # the whole grid: train_fraction 1


def test_bad_weights_and_zoos_without_a_task_are_one_line(mlp_zoo, tmp_path):
    with open_zoo(mlp_zoo) as zoo:
        with pytest.raises(LayoutError, match=r"must have shape \[B, 1098\] \(the zoo's layout\), got \[2, 7\]"):
            zoo.evaluate(torch.zeros(2, 7), [0, 1])
        with pytest.raises(LayoutError, match="2 weight rows need 2 member indices, got 3"):
            zoo.evaluate(zoo.params([0, 1]), [0, 1, 2])
        with pytest.raises(IndexError, match="out of range"):
            zoo.evaluate(zoo.params([0]), [99])
    make_zoo(tmp_path / "made.zarr")
    with open_zoo(tmp_path / "made.zarr") as zoo, pytest.raises(StoreError, match="has no build spec"):
        zoo.task_data(0)


def test_zoo_eval_command(mlp_zoo, tmp_path, capsys):
    assert main(["zoo", "eval", str(mlp_zoo), "--members", "0,2-3", "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    with open_zoo(mlp_zoo) as zoo:
        assert report["members"] == [0, 2, 3]
        np.testing.assert_allclose(report["metrics"]["test_acc"], zoo.metric("test_acc", [0, 2, 3]), atol=1e-7)
    assert main(["zoo", "export", str(mlp_zoo), str(tmp_path / "x"), "-q"]) == 0
    capsys.readouterr()
    weights = str(tmp_path / "x" / "member_000000.safetensors")
    assert main(["zoo", "eval", str(mlp_zoo), "--members", "0", "--weights", weights]) == 0
    out = capsys.readouterr().out.splitlines()
    assert out[0].split() == ["member", "train_loss", "train_acc", "test_loss", "test_acc"] and out[1].split()[0] == "0"
    for argv, needle in (
        (["--members", "0-99"], "member 16 is out of range; the zoo has 16 members"),
        (["--members", "x"], "write all, or indices and ranges"),
        (["--weights", str(tmp_path / "nope.safetensors")], "no such file"),
        (["--weights", str(mlp_zoo / "zarr.json")], "state_dict files"),
    ):
        assert main(["zoo", "eval", str(mlp_zoo), *argv]) == 2
        err = capsys.readouterr().err
        assert err.startswith("error: ") and needle in err and err.count("\n") == 1
