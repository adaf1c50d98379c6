"""Shared fixtures: small zoos written through the public API."""

import numpy as np
import pytest
import torch
from torch import nn

from weightzoo.zoo import archs
from weightzoo.zoo.store import ZooStore


def make_zoo(path, members=40, epochs=(0, 3), arch=None, chunk_members=8, seed=0):
    """A zoo of random members with a numeric, a string and a group hyperparameter and a metric."""
    arch = arch or archs.mlp(4, [6, 5], 3)
    _, layout, _ = archs.describe(arch)
    rng = np.random.default_rng(seed)
    params = rng.standard_normal((members, len(epochs), layout.size), dtype=np.float32)
    zoo = ZooStore.create(path, layout, architecture=arch, epochs=epochs, chunk_members=chunk_members)
    zoo.append(
        params,
        hparams={
            "lr": rng.uniform(0.001, 0.1, members),
            "label": np.array(["cat", "dog", "emu"])[np.arange(members) % 3],
            "image": np.arange(members) // 4,
        },
        metrics={"test_acc": rng.uniform(0, 1, (members, len(epochs)))},
    )
    zoo.close()
    return params


@pytest.fixture(params=[".zarr", ".h5"], ids=["zarr", "hdf5"])
def suffix(request):
    return request.param


def randomize_module(module: nn.Module, scale: float = 0.5) -> None:
    """Random parameters (and BatchNorm statistics) so that every symmetry is exercised."""
    g = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for t in module.state_dict().values():
            if torch.is_floating_point(t):
                t.copy_(torch.randn(t.shape, generator=g) * scale)
        for m in module.modules():
            if isinstance(m, nn.BatchNorm1d | nn.BatchNorm2d):
                m.running_var.uniform_(0.5, 2.0, generator=g)


@pytest.fixture(scope="session")
def mixed_zoo(tmp_path_factory):
    """The shipped tiny-mnist1d-mixed zoo (24 members of 16 architectures), built once per session."""
    from weightzoo.zoo.build import build_zoo

    path = tmp_path_factory.mktemp("mixed") / "mixed.zarr"
    build_zoo("tiny-mnist1d-mixed", path)
    return path
