"""Probe features: neuron values on fixed inputs, their symmetry, and training with them."""

from dataclasses import replace

import numpy as np
import pytest
import torch
from test_metanet_train import run, scaled_zoo

from weightzoo.errors import SpecError
from weightzoo.metanet.data import Normalizer, load_members
from weightzoo.metanet.models import build_metanet, graph_dims
from weightzoo.metanet.probes import ProbeFeatures, probe_input
from weightzoo.metanet.run import load_run
from weightzoo.weightspace import WeightSpace
from weightzoo.zoo import archs
from weightzoo.zoo.build import build_zoo
from weightzoo.zoo.opener import open_zoo

ARCH = archs.mlp(4, [6, 5], 3, activation="tanh")


@pytest.fixture(scope="module")
def zoo_path(tmp_path_factory):
    return scaled_zoo(tmp_path_factory.mktemp("probes") / "mlp.zarr", ARCH, members=48)


def _members(path):
    with open_zoo(path) as zoo:
        members = load_members(zoo, np.arange(len(zoo)))
        normalizer = Normalizer.fit(members)
        info = probe_input(zoo, members, 7, normalizer, seed=1)
    return members, normalizer, info


def test_probe_values_are_the_networks_own_activations(zoo_path):
    members, normalizer, info = _members(zoo_path)
    probe = ProbeFeatures(info)
    points = torch.tensor(info["points"])
    assert points.shape == (7, 4)
    values = probe.raw(normalizer.apply(members).flat, probe.which(members))
    assert [v.shape for v in values] == [(48, 7, 4), (48, 7, 6), (48, 7, 5), (48, 7, 3)]
    with open_zoo(zoo_path) as zoo:
        for i in (0, 17):
            net = zoo.model(i)  # Linear, Tanh, Linear, Tanh, Linear
            hidden1 = torch.tanh(net[0](points))
            torch.testing.assert_close(values[0][i], points)
            torch.testing.assert_close(values[1][i], hidden1, atol=1e-5, rtol=0)
            torch.testing.assert_close(values[3][i], net(points), atol=1e-5, rtol=0)


def test_fit_standardizes_each_layer(zoo_path):
    members, normalizer, info = _members(zoo_path)
    probe = ProbeFeatures(info)
    flat = normalizer.apply(members).flat
    which = probe.which(members)
    probe.fit(flat, which)
    for k, layer in enumerate(probe.layers(probe(flat, which))):
        if k:  # the inputs are the same for every member; the other layers' values vary
            assert abs(layer.mean().item()) < 1e-4 and layer.std().item() == pytest.approx(1.0, abs=1e-3)


@pytest.mark.parametrize("model", ["gmn", "dws"])
def test_models_with_probes_are_invariant_to_hidden_permutations(zoo_path, model):
    members, normalizer, info = _members(zoo_path)
    with open_zoo(zoo_path) as zoo:
        spec, layout = zoo.member_perm_spec(0), zoo.layout
    node_dim, edge_dim = graph_dims(members)
    info = {"layout": layout.to_dict(), "node_dim": node_dim, "edge_dim": edge_dim, "probe": info}
    args = {"gmn": {"hidden": 16, "layers": 2}, "dws": {"hidden_channels": 6, "depth": 2}}[model]
    net = build_metanet(model, {**args, "probes": 7}, info, 3).eval()
    batch = normalizer.apply(members).subset(torch.arange(6))
    net.fit_inputs(batch)
    out = net(batch)
    ws = WeightSpace.from_flat(batch.flat, layout)
    action = spec.random_action(torch.Generator().manual_seed(0), batch=6, sign=False, scale=None)
    moved = replace(batch, flat=ws.permute(spec, action).to_flat())
    torch.testing.assert_close(net(moved), out, atol=1e-4, rtol=0)
    # a wrong variant: probe values of the unpermuted members beside the permuted weights
    stale = net.probe.forward
    net.probe.forward = lambda flat, which: stale(batch.flat, which)
    try:
        assert (net(moved) - out).abs().max() > 1e-3
    finally:
        net.probe.forward = stale


def test_members_differing_in_activation_each_run_their_own(tmp_path):
    path = tmp_path / "mlp.zarr"
    build_zoo("tiny-mnist1d-mlp", path)  # a grid over relu and tanh
    with open_zoo(path) as zoo:
        members = load_members(zoo, np.arange(len(zoo)))
        normalizer = Normalizer.fit(members)
        info = probe_input(zoo, members, 5, normalizer)
        probe = ProbeFeatures(info)
        assert len(probe.keys) == 2
        values = probe.raw(normalizer.apply(members).flat, probe.which(members))
        points = torch.tensor(info["points"])
        activations = set()
        for i in range(len(zoo)):
            net = zoo.model(i)
            activations.add(type(net[1]).__name__)
            torch.testing.assert_close(values[-1][i], net(points), atol=1e-5, rtol=0)
            torch.testing.assert_close(values[1][i], net[1](net[0](points)), atol=1e-5, rtol=0)
        assert activations == {"ReLU", "Tanh"}
        other = replace(members, architectures=[{**members.architectures[0], "name": "unseen"}])
        with pytest.raises(SpecError, match="not built for"):
            probe.which(other, "other.zarr")


def test_train_with_probes_through_the_cli_and_reload(tmp_path, capsys):
    zoo = tmp_path / "inr.zarr"
    build_zoo("tiny-digits-inr", zoo)
    out = tmp_path / "run"
    code, _, err = run(capsys, "metanet", "train", "--zoo", zoo, "--task", "classify:label", "--model", "gmn",
                       "--arg", "hidden=16", "--arg", "layers=2", "--arg", "probes=12", "--epochs", "3",
                       "--out", out, "--quiet", "--augment", "perm,rotate:10")  # fmt: skip
    assert code == 0, err
    reloaded = load_run(out)
    assert reloaded.config["model_args"]["probes"] == 12
    assert len(reloaded.config["input"]["probe"]["points"]) == 12
    with open_zoo(zoo) as z:  # INR probes are pixel coordinates of the task
        coords = torch.as_tensor(z.task_data(0).x_train).reshape(-1, 2)
    points = torch.tensor(reloaded.config["input"]["probe"]["points"])
    assert all((coords == p).all(1).any() for p in points)
    members = reloaded.members(zoo, None)
    with torch.no_grad():
        first, second = reloaded.model(members), reloaded.model(members)
    torch.testing.assert_close(first, second)
    assert torch.isfinite(first).all()


def test_probes_reject_what_they_cannot_read(tmp_path, capsys):
    cnn = scaled_zoo(tmp_path / "cnn.zarr", archs.cnn(1, [2, 3], 2, dim=1), members=20)
    code, _, err = run(capsys, "metanet", "train", "--zoo", cnn, "--task", "predict:scale", "--model", "gmn",
                       "--arg", "probes=4", "--epochs", "1", "--quiet", "--out", tmp_path / "r")  # fmt: skip
    assert code == 2 and "probe features take MLPs" in err and "Conv1d" in err
    with pytest.raises(SpecError, match="probes=0"):
        with open_zoo(scaled_zoo(tmp_path / "m.zarr", ARCH, members=10)) as zoo:
            members = load_members(zoo, np.arange(10))
            probe_input(zoo, members, 0, Normalizer.fit(members))
    code, _, err = run(capsys, "metanet", "train", "--zoo", cnn, "--task", "predict:scale", "--model", "statnn",
                       "--arg", "probes=4", "--epochs", "1", "--quiet", "--out", tmp_path / "r")  # fmt: skip
    assert code == 2 and "probes" in err
