"""Baselines: flat MLP, weight statistics (StatNN, gradient-boosted trees) and DeepSets."""

import numpy as np
import pytest
import torch
from torch import nn

from weightzoo.layout import ParamLayout
from weightzoo.metanet.baselines import (
    STATISTICS,
    DeepSets,
    FlatMLP,
    StatNN,
    fit_statnn_gbt,
    predict_gbt,
    statistic_names,
    weight_statistics,
)
from weightzoo.symmetry import PermutationSpec
from weightzoo.weightspace import WeightSpace


def _mlp() -> nn.Module:
    return nn.Sequential(nn.Linear(4, 8), nn.ReLU(), nn.Linear(8, 6), nn.Tanh(), nn.Linear(6, 3))


def _cnn() -> nn.Module:
    return nn.Sequential(
        nn.Conv1d(2, 4, 3), nn.ReLU(), nn.Conv1d(4, 5, 3), nn.ReLU(), nn.Flatten(), nn.Linear(5 * 4, 3)
    )


def _batch(module: nn.Module, members: int = 16, seed: int = 0) -> tuple[ParamLayout, PermutationSpec, WeightSpace]:
    layout, spec = ParamLayout.from_module(module), PermutationSpec.from_module(module)
    g = torch.Generator().manual_seed(seed)
    return layout, spec, WeightSpace.from_flat(torch.randn(members, layout.size, generator=g), layout)


def test_statistics_match_numpy():
    layout, _, ws = _batch(_mlp(), members=5)
    feats = weight_statistics(ws, layout)
    names = statistic_names(layout)
    assert feats.shape == (5, 7 * 6) and len(names) == feats.shape[1]
    flat = ws.to_flat().numpy().astype(np.float64)
    expected = []
    for e in layout:
        t = flat[:, e.offset : e.stop]
        q = np.quantile(t, [0, 0.25, 0.5, 0.75, 1], axis=1).T
        expected.append(np.column_stack([t.mean(1), t.var(1), q]))
    np.testing.assert_allclose(feats.numpy(), np.concatenate(expected, axis=1), rtol=1e-5, atol=1e-6)
    assert names[: len(STATISTICS)] == [f"0.weight/{s}" for s in STATISTICS]
    torch.testing.assert_close(weight_statistics(ws.to_flat(), layout), feats)
    torch.testing.assert_close(weight_statistics(ws.to_flat()[0], layout), feats[:1])


def test_statistics_skip_norm_entries():
    module = nn.Sequential(nn.Linear(3, 4), nn.BatchNorm1d(4), nn.ReLU(), nn.Linear(4, 2))
    layout = ParamLayout.from_module(module)
    feats = weight_statistics(torch.randn(2, layout.size), layout)
    assert feats.shape == (2, 7 * 4)


@pytest.mark.parametrize("make", [_mlp, _cnn], ids=["mlp", "cnn"])
def test_shapes_and_repr(make):
    layout, _, ws = _batch(make(), members=7)
    for model in (FlatMLP(layout, hidden=(16,), out_features=2), StatNN(layout, (16,), 2), DeepSets(layout, 16, 2)):
        assert model(ws).shape == (7, 2)
        assert model(ws.to_flat()).shape == (7, 2)
        assert model.__class__.__name__ in repr(model)
        model.reset_parameters()
    assert DeepSets(layout, 16).elements(ws).shape[:2] == (7, sum(w.shape[0] for w, _ in layout.dense_layers()))


@pytest.mark.parametrize("make", [_mlp, _cnn], ids=["mlp", "cnn"])
@pytest.mark.parametrize("pool", ["mean", "sum"])
def test_deepsets_invariant_flatmlp_not(make, pool):
    torch.manual_seed(0)
    layout, spec, ws = _batch(make(), members=6)
    action = spec.random_action(torch.Generator().manual_seed(1), sign=False, scale=None)
    permuted = ws.permute(spec, action)
    assert not torch.equal(permuted.to_flat(), ws.to_flat())
    deepsets = DeepSets(layout, 32, 2, pool=pool)
    torch.testing.assert_close(deepsets(permuted), deepsets(ws), atol=1e-5, rtol=1e-5)
    flat_mlp = FlatMLP(layout, (32,), 2)
    assert (flat_mlp(permuted) - flat_mlp(ws)).abs().max() > 1e-3


def _norm_data(members: int = 400, seed: int = 0):
    """Members whose target is a simple function of the per-layer weight norms."""
    module = _mlp()
    layout = ParamLayout.from_module(module)
    g = torch.Generator().manual_seed(seed)
    scales = torch.rand(members, len(layout), generator=g) * 1.5 + 0.25
    flat = torch.cat(
        [torch.randn(members, e.numel, generator=g) * scales[:, i : i + 1] for i, e in enumerate(layout)], dim=1
    )
    ws = WeightSpace.from_flat(flat, layout)
    norms = torch.stack([w.flatten(1).norm(dim=1) for w in ws.weights], dim=1)
    target = norms[:, 0] - 0.5 * norms[:, 1] + 0.25 * norms[:, 2]
    return layout, ws, flat, target


def test_gbt_fits_norm_target():
    layout, ws, _, target = _norm_data()
    feats = weight_statistics(ws, layout)
    model = fit_statnn_gbt(feats[:300], target[:300], seed=0)
    pred = predict_gbt(model, feats[300:])
    y = target[300:].numpy()
    r2 = 1 - ((pred - y) ** 2).sum() / ((y - y.mean()) ** 2).sum()
    assert r2 > 0.8
    labels = (target > target.median()).long()
    clf = fit_statnn_gbt(feats[:300], labels[:300], task="classification")
    assert (predict_gbt(clf, feats[300:]) == labels[300:].numpy()).mean() > 0.7
    with pytest.raises(ValueError, match="task"):
        fit_statnn_gbt(feats, target, task="ranking")


@pytest.mark.parametrize("kind", ["statnn", "flat", "deepsets"])
def test_training_loss_decreases(kind):
    torch.manual_seed(0)
    layout, ws, flat, target = _norm_data(members=256)
    if kind == "statnn":
        model = StatNN(layout, (64, 64))
        model.fit_normalization(weight_statistics(ws, layout))
    elif kind == "flat":
        model = FlatMLP(layout, (64, 64))
    else:
        model = DeepSets(layout, 32)
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    y = target.unsqueeze(1)
    losses = []
    for _ in range(50):
        loss = nn.functional.mse_loss(model(flat), y)
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert losses[-1] < (0.8 if kind == "deepsets" else 0.5) * losses[0]


def test_statnn_normalization_buffers():
    layout, _, ws = _batch(_mlp(), members=32)
    model = StatNN(layout, (8,))
    feats = weight_statistics(ws, layout)
    model.fit_normalization(feats)
    z = model.features(ws)
    torch.testing.assert_close(z.mean(0), torch.zeros(z.shape[1]), atol=1e-5, rtol=0)
    assert "feature_mean" in model.state_dict() and "feature_std" in model.state_dict()
    model.reset_parameters()
    assert torch.all(model.feature_std == 1)
