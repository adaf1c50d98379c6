"""DWS layers: invariance/equivariance to hidden-neuron permutations, not to input ones.

Symmetry checks run in float64 so that a 1e-5 absolute tolerance is meaningful.
"""

import pytest
import torch
from conftest import make_zoo

from weightzoo.datasets import WeightDataset
from weightzoo.errors import SpecError
from weightzoo.metanet.dws import DWSLayer, DWSNet, check_mlp_layout
from weightzoo.weightspace import WeightSpace
from weightzoo.zoo import archs

HIDDEN = [[5], [6, 4], [3, 7, 5]]
TOL = 1e-5


def _zoo(hidden, batch=3, seed=0):
    """Random raw weights (C = 1) of an MLP with the given hidden widths, its layout and spec."""
    _, layout, spec = archs.describe(archs.mlp(4, hidden, 2))
    g = torch.Generator().manual_seed(seed)
    ws = WeightSpace.from_flat(torch.randn(batch, layout.size, generator=g, dtype=torch.float64), layout)
    return ws, layout, spec


def _features(ws, channels, seed=1):
    """Lift raw weights to ``channels`` channels by a fixed random elementwise map."""
    g = torch.Generator().manual_seed(seed)
    a = torch.randn(channels, generator=g, dtype=torch.float64).view(1, -1, 1, 1)
    return WeightSpace(tuple(w * a + w**2 for w in ws.weights), tuple(b * a[..., 0] - b for b in ws.biases), ws.layout)


def _close(x, y):
    for a, b in zip(x.weights + x.biases, y.weights + y.biases):
        torch.testing.assert_close(a, b, atol=TOL, rtol=0)


@pytest.mark.parametrize("hidden", HIDDEN)
def test_layer_is_equivariant(hidden):
    ws, layout, spec = _zoo(hidden)
    x = _features(ws, 3)
    layer = DWSLayer(check_mlp_layout(layout), 3, 4).double()
    for seed in range(3):
        action = spec.random_action(torch.Generator().manual_seed(seed), sign=False, scale=None)
        moved = _permute(x, spec, action)
        out_of_moved = layer(moved)
        moved_out = _permute(layer(x), spec, action)
        _close(out_of_moved, moved_out)


def _permute(x, spec, action):
    """Apply ``action`` to a multi-channel WeightSpace, treating channels as a second batch dim."""
    names = [(w.name, b.name) for w, b in x.layout.dense_layers()]
    params = {n: t for (nw, nb), W, B in zip(names, x.weights, x.biases) for n, t in ((nw, W), (nb, B))}
    out = spec.apply(params, action, batch_dims=2)
    return WeightSpace(tuple(out[nw] for nw, _ in names), tuple(out[nb] for _, nb in names), x.layout)


@pytest.mark.parametrize("hidden", HIDDEN)
def test_invariant_head(hidden):
    ws, layout, spec = _zoo(hidden, batch=4)
    net = DWSNet(layout, hidden_channels=6, depth=2, out_features=3).double().eval()
    y = net(ws)
    assert y.shape == (4, 3)
    for seed in range(3):
        action = spec.random_action(torch.Generator().manual_seed(seed), batch=4, sign=False, scale=None)
        torch.testing.assert_close(net(ws.permute(spec, action)), y, atol=TOL, rtol=0)


@pytest.mark.parametrize("hidden", HIDDEN)
def test_equivariant_head(hidden):
    ws, layout, spec = _zoo(hidden)
    net = DWSNet(layout, hidden_channels=5, depth=2, out_features=2, pooling="equivariant", norm="layernorm").double()
    out = net(ws)
    assert out.channels == 2 and [w.shape for w in out.weights] == [(3, 2, *w.shape[2:]) for w in ws.weights]
    action = spec.random_action(torch.Generator().manual_seed(0), sign=False, scale=None)
    moved = _permute(out, spec, action)
    _close(net(ws.permute(spec, action)), moved)


@pytest.mark.parametrize("hidden", HIDDEN)
def test_not_invariant_to_input_permutation(hidden):
    ws, layout, _ = _zoo(hidden)
    net = DWSNet(layout, hidden_channels=6, depth=2).double()
    perm = torch.tensor([1, 0, 3, 2])
    shuffled = WeightSpace((ws.weights[0][..., perm], *ws.weights[1:]), ws.biases, layout)
    assert (net(shuffled) - net(ws)).abs().max() > 1e-3


def test_gradients_flow_with_batch_and_channels():
    ws, layout, _ = _zoo([6, 4], batch=5)
    net = DWSNet(layout, hidden_channels=4, depth=3, out_features=2, dropout=0.1, norm="layernorm", in_channels=3)
    x = _features(ws, 3).to(torch.float32)
    loss = net(x).pow(2).mean()
    loss.backward()
    grads = {n: p.grad for n, p in net.named_parameters()}
    assert all(g is not None for g in grads.values())
    assert any(g.abs().sum() > 0 for n, g in grads.items() if n.startswith("layers.0"))


def test_reset_parameters_and_repr():
    _, layout, _ = _zoo([5])
    net = DWSNet(layout, hidden_channels=4, depth=1)
    before = [p.clone() for p in net.parameters()]
    net.reset_parameters()
    assert any(not torch.equal(a, b) for a, b in zip(before, net.parameters()))
    assert repr(net.layers[0]) == "DWSLayer(1, 4, layers=[(5, 4), (2, 5)])"


def test_refuses_non_mlp_layouts():
    _, cnn_layout, _ = archs.describe(archs.cnn(1, [4], 2))
    with pytest.raises(SpecError, match="DWSNet takes MLP layouts; this zoo has Conv2d weights: use gmn or statnn"):
        DWSNet(cnn_layout)
    _, cnn1d_layout, _ = archs.describe(archs.cnn1d(1, [4, 4], 3))
    with pytest.raises(SpecError, match="this zoo has Conv1d weights: use gmn or statnn"):
        DWSNet(cnn1d_layout)
    _, norm_layout, _ = archs.describe(archs.mlp(3, [4], 2, norm="batchnorm"))
    with pytest.raises(SpecError, match="normalization"):
        DWSNet(norm_layout)
    _, res_layout, res_spec = archs.describe(archs.residual_mlp(3, 4, 2, 2))
    with pytest.raises(SpecError, match="residual"):
        DWSNet(res_layout, spec=res_spec)


def test_layer_rejects_mismatched_input():
    ws, layout, _ = _zoo([5])
    with pytest.raises(SpecError, match="DWSLayer expects C=2"):
        DWSLayer(check_mlp_layout(layout), 2, 3).double()(ws)


def test_trains_on_weight_dataset_batches(tmp_path):
    path = tmp_path / "zoo.zarr"
    make_zoo(path, members=16)
    ds = WeightDataset(path, target="test_acc")
    net = DWSNet(ds.zoo.layout, hidden_channels=4, depth=2)
    opt = torch.optim.Adam(net.parameters(), lr=1e-2)
    for ws, y in ds.loader(batch_size=8):
        loss = torch.nn.functional.mse_loss(net(ws).squeeze(-1), y.float())
        opt.zero_grad()
        loss.backward()
        opt.step()
    assert torch.isfinite(loss)
