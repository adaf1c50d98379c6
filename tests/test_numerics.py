"""The numeric path descriptor: what trained parameters depend on besides the spec, recorded per group."""

import json
import pickle

import pytest
import torch

from weightzoo.errors import StoreError
from weightzoo.zoo import archs
from weightzoo.zoo.tasks import load_task
from weightzoo.zoo.train import TRAINER_VERSION, NumericPath, fused, numeric_path, train_group


def test_the_descriptor_round_trips_through_json():
    path = NumericPath("cpu", "fused-avx2", "2.13.0+cpu", 3)
    data = json.loads(json.dumps(path.to_dict()))
    assert data == {"device": "cpu", "kernels": "fused-avx2", "torch": "2.13.0+cpu", "trainer": 3}
    assert NumericPath.from_dict(data) == path
    assert NumericPath.from_dict(data) != NumericPath("cpu", "fused-avx512", "2.13.0+cpu", 3)


def test_an_incomplete_descriptor_is_a_store_error():
    with pytest.raises(StoreError, match="missing kernels, trainer; it needs device, kernels, torch, trainer"):
        NumericPath.from_dict({"device": "cpu", "torch": "2.13.0"})


def test_cpu_path_names_the_kernels_and_their_isa():
    path = numeric_path("cpu")
    assert (path.device, path.torch, path.trainer) == ("cpu", torch.__version__, TRAINER_VERSION)
    assert path.kernels == (f"fused-{fused.isa()}" if fused.available() else "torch")
    with fused.disabled():
        assert numeric_path("cpu").kernels == "torch"
        assert numeric_path(torch.device("cpu")) == NumericPath("cpu", "torch", torch.__version__, TRAINER_VERSION)


def test_the_one_line_form_names_kernels_and_versions():
    text = str(numeric_path("cpu"))
    assert torch.__version__ in text and f"trainer {TRAINER_VERSION}" in text
    assert (f"fused kernels ({fused.isa()})" if fused.available() else "torch ops") in text
    example = NumericPath("cpu", "fused-avx512", "2.13.0+cpu", 1)
    assert str(example) == "cpu, fused kernels (avx512), torch 2.13.0+cpu, trainer 1"


def test_cuda_path_names_the_cuda_version(monkeypatch):
    monkeypatch.setattr(torch.version, "cuda", "12.4")
    path = numeric_path("cuda:0")
    assert (path.device, path.kernels) == ("cuda", "torch (cuda 12.4)")
    assert "torch ops (cuda 12.4)" in str(path)


@pytest.mark.parametrize("kernels", [True, False])
def test_a_trained_group_carries_the_path_that_trained_it(kernels):
    arch = archs.mlp(64, [8], 10)
    task = load_task("digits")
    run = {"epochs": 1, "checkpoint_epochs": [1], "batch_size": 128}
    if kernels:
        result = train_group(arch, task, [{"seed": 0}, {"seed": 1}], **run)
    else:
        with fused.disabled():
            result = train_group(arch, task, [{"seed": 0}, {"seed": 1}], **run)
    expected = numeric_path("cpu") if kernels else NumericPath("cpu", "torch", torch.__version__, TRAINER_VERSION)
    assert result.numerics == expected.to_dict()
    again = pickle.loads(pickle.dumps(result))  # Dask ships results between processes
    assert again.numerics == result.numerics and (again.params == result.params).all()
