"""Full-size shipped zoos are real populations (slow: run with `make test-slow`)."""

import numpy as np
import pytest

from weightzoo import build_zoo, open_zoo

pytestmark = pytest.mark.slow


def test_mnist1d_mlp_spreads_from_bad_to_good(tmp_path):
    out = tmp_path / "mnist1d-mlp.zarr"
    build_zoo("mnist1d-mlp", out)
    acc = open_zoo(out).metric("test_acc")
    assert len(acc) >= 2000
    assert np.quantile(acc, 0.05) < 0.15  # chance level is 0.10: bad configurations exist
    assert acc.max() > 0.58  # the best approach what MLPs reach on MNIST-1D (~0.6-0.68)
    assert np.quantile(acc, 0.75) - np.quantile(acc, 0.25) > 0.1


def test_digits_inr_fits_every_image(tmp_path):
    out = tmp_path / "digits-inr.zarr"
    build_zoo("digits-inr", out)
    zoo = open_zoo(out)
    assert len(zoo) == 1797 and sorted(set(zoo.column("label").tolist())) == list(range(10))
    assert np.median(zoo.metric("test_psnr")) > 30


def test_mnist5k_inr_fits_the_real_digits(tmp_path):
    out = tmp_path / "mnist5k-inr.zarr"
    build_zoo("mnist5k-inr", out)
    zoo = open_zoo(out)
    assert len(zoo) == 5000 and np.bincount(zoo.column("label")).tolist() == [500] * 10
    assert np.median(zoo.metric("test_psnr")) > 35


def test_mnist1d_finetune_members_improve_on_their_tasks(tmp_path):
    out = tmp_path / "ft.zarr"
    build_zoo("mnist1d-finetune", out)
    zoo = open_zoo(out)
    tasks = [f"{c}|{p}" for c, p in zip(zoo.column("task.classes"), zoo.column("task.label_perm"))]
    assert len(set(tasks)) == 8
    base = zoo.evaluate(zoo.base_params(), np.arange(len(zoo)))["test_acc"]
    assert np.median(zoo.metric("test_acc") - base) > 0.05  # fine-tuning moves members to their tasks


def test_mnist1d_tasks_spans_hundreds_of_tasks(tmp_path):
    out = tmp_path / "tasks.zarr"
    build_zoo("mnist1d-tasks", out)
    assert len(set(open_zoo(out).column("task.classes").tolist())) > 200
