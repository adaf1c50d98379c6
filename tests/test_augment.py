"""Weight-space augmentation (weightzoo.metanet.augment).

Exact transforms are checked by evaluating the networks (``Functional.outputs``) before and after on
random inputs, for every layer type the PermutationSpec covers; the tolerance is float32 rounding,
``rtol = 1e-5`` and ``atol = 1e-5 * max |output|`` (measured errors are below 1e-6 relative). Deliberately
wrong variants (a spec missing an axis, a SIREN shift without its sign) must change the outputs by far
more. Inexact transforms are checked against what they say they do: noise statistics, dropout and
pruning computed by hand, INR input moves by rendering ``f'(p) = f(A^-1 (p - t))``, MixUp by replaying
the generator's draws (renders of INRs with outputs ~0.4 agree within atol 1e-5). Then parsing and
binding errors, the CLI, per-architecture application on a zoo of ReLU and tanh members,
worker-independent loaders and the metanet trainer.
"""

from __future__ import annotations

import dataclasses
import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from conftest import LAYER_TYPE_NETS, randomize_module
from torch.testing import assert_close

from weightzoo.cli import main
from weightzoo.datasets.graphs import GraphDataset
from weightzoo.datasets.weights import WeightDataset
from weightzoo.errors import SpecError, WeightZooError
from weightzoo.metanet import augment
from weightzoo.metanet.augment import TRANSFORMS, Augmenter, AugmentError, Networks, parse
from weightzoo.metanet.functional import Functional
from weightzoo.metanet.train import TrainOptions, train_metanet
from weightzoo.weightspace import WeightSpace
from weightzoo.zoo import archs
from weightzoo.zoo.build import build_zoo
from weightzoo.zoo.opener import open_zoo

RTOL, ATOL = 1e-5, 1e-5  # float32; ATOL is relative to the largest output magnitude

# name -> (architecture with a ReLU-like activation where it has one, shape of one input sample)
NETS = LAYER_TYPE_NETS
RESIDUAL = ("residual-mlp", "residual-mlp-layernorm")  # one permutation group: the stream, permute only
PLAIN = [n for n in NETS if n != "siren"]


def _arch(name: str, activation: str | None = None) -> dict:
    arch = NETS[name][0]
    return arch if activation is None else archs.with_overrides(arch, activation=activation)


def _members(arch: dict, count: int, seed: int, scale: float | None = None) -> torch.Tensor:
    """``count`` random members ``[count, P]``: the first from ``randomize_module`` (random BatchNorm
    statistics), the others independent; running variances positive. SIRENs get small weights (sine
    nets amplify rounding by w0 per layer)."""
    f = Functional(arch)
    scale = scale if scale is not None else (0.5 / 30 if "sine" in str(arch) else 0.5)
    randomize_module(f.module, scale=scale)
    rows = [f.layout.flatten(f.module.state_dict())]
    g = torch.Generator().manual_seed(seed)
    for _ in range(count - 1):
        params = f.layout.unflatten(torch.randn(f.layout.size, generator=g) * scale)
        for k, t in params.items():
            if k.endswith("running_var"):
                t.uniform_(0.5, 2.0, generator=g)
        rows.append(torch.cat([params[e.name].reshape(-1) for e in f.layout]))
    return torch.stack(rows)


def _inputs(name: str, n: int = 32, seed: int = 7) -> torch.Tensor:
    shape = NETS[name][1]
    g = torch.Generator().manual_seed(seed)
    if name == "siren":
        return torch.rand(n, 2, generator=g) * 2 - 1
    return torch.randn(8 if name == "smallcnnzoo" else n, *shape, generator=g)


def _assert_same_function(f: Functional, a: torch.Tensor, b: torch.Tensor, x: torch.Tensor) -> None:
    out_a, out_b = f.outputs(a, x), f.outputs(b, x)
    assert_close(out_b, out_a, rtol=RTOL, atol=ATOL * out_a.abs().max().item())


def _max_rel_change(f: Functional, a: torch.Tensor, b: torch.Tensor, x: torch.Tensor) -> float:
    out_a, out_b = f.outputs(a, x), f.outputs(b, x)
    return ((out_b - out_a).abs().max() / out_a.abs().max()).item()


def _gen(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


# ----------------------------------------------------------------------------- exact symmetries

EXACT_CASES = (
    [(n, None, "perm") for n in NETS]
    + [(n, "tanh", "perm") for n in ("mlp", "cnn2d-gap-bn")]
    + [(n, "tanh", "sign") for n in PLAIN if n not in RESIDUAL]
    + [("siren", None, "sign")]
    + [(n, act, "scale") for n in PLAIN if n not in RESIDUAL for act in ("relu", "leaky_relu")]
    + [(n, "relu", "scale:3") for n in ("mlp-batchnorm", "cnn2d-flatten")]
    + [("siren", None, "siren-shift"), ("siren", None, "siren-shift:3")]
    + [("siren", None, "perm,sign,siren-shift"), ("mlp-layernorm", None, "perm,scale")]
    + [("smallcnnzoo", "tanh", "sign,perm")]
)


@pytest.mark.parametrize(("name", "activation", "spec"), EXACT_CASES, ids=lambda v: str(v))
def test_exact_transform_keeps_outputs_and_changes_weights(name, activation, spec):
    arch = _arch(name, activation)
    f = Functional(arch)
    pipeline = parse(spec)
    assert pipeline.exact
    base = _members(arch, 3, seed=1)
    flat = torch.cat([base[:1], base])  # rows 0 and 1 are the same member: their draws must differ
    out, y = pipeline.bind_architecture(arch).flat(flat, None, _gen(1))
    assert y is None and out.shape == flat.shape and out.dtype == torch.float32
    _assert_same_function(f, flat, out, _inputs(name))
    for i in range(len(flat)):
        assert not torch.equal(out[i], flat[i]), f"member {i} unchanged"
    assert not torch.equal(out[0], out[1]), "two copies of one member got the same transform"
    assert torch.equal(flat[0], flat[1])  # the input is not modified in place
    if spec == "perm":  # entries only move
        assert torch.equal(out.sort(1).values, flat.sort(1).values)
    if spec == "sign":  # entries only change sign
        assert torch.equal(out.abs(), flat.abs())
    if spec.startswith("scale"):  # positive scales s_out / s_in within [1/r^2, r^2]
        r = float(spec.partition(":")[2] or 2)
        nonzero = flat != 0
        ratio = out[nonzero] / flat[nonzero]
        assert ratio.min() >= 1 / r**2 * (1 - 1e-6) and ratio.max() <= r**2 * (1 + 1e-6)


def test_exact_transforms_on_weightspace_match_flat_path():
    arch = _arch("mlp-batchnorm", "tanh")
    _, layout, _ = archs.describe(arch)
    flat = _members(arch, 4, seed=2)
    aug = parse("perm,sign").bind_architecture(arch)
    ws = WeightSpace.from_flat(flat, layout)
    moved = aug(ws, _gen(5))
    assert isinstance(moved, WeightSpace)
    expected, _ = aug.flat(flat, None, _gen(5))
    assert torch.equal(moved.to_flat(), expected)
    y = torch.arange(4.0)
    moved, y_out = aug(ws, _gen(5), y)  # exact transforms pass the targets through
    assert torch.equal(moved.to_flat(), expected) and torch.equal(y_out, y)


def test_siren_shift_moves_biases_by_multiples_of_pi_over_w0_and_flips_next_layer():
    arch = _arch("siren")
    _, layout, spec = archs.describe(arch)
    flat = _members(arch, 4, seed=3)
    k_max = 2
    out, _ = parse(f"siren-shift:{k_max}").bind_architecture(arch).flat(flat, None, _gen(1))
    p, q = layout.unflatten(flat), layout.unflatten(out)
    assert torch.equal(q["0.weight"], p["0.weight"])  # the first layer reads inputs: never changed
    assert torch.equal(q["4.bias"], p["4.bias"])
    ks = {}
    for bias in ("0.bias", "2.bias"):
        k = (q[bias] - p[bias]) / (math.pi / 30)
        assert_close(k, k.round(), atol=1e-3, rtol=0)
        ks[bias] = k.round()
        assert ks[bias].abs().max() <= k_max and (ks[bias] % 2 == 1).any() and (ks[bias] % 2 == 0).any()
    # the layer reading a hidden layer gets the sign (-1)^k on the column of each shifted neuron
    assert torch.equal(q["2.weight"], p["2.weight"] * (1 - 2 * (ks["0.bias"] % 2))[:, None, :])
    assert torch.equal(q["4.weight"], p["4.weight"] * (1 - 2 * (ks["2.bias"] % 2))[:, None, :])
    assert len(spec.groups) == 2


# ----------------------------------------------------------------------------- wrong variants fail


def _drop_in_axis(spec):
    """The spec with the first group's consuming axis (the next layer's input) forgotten."""
    g = spec.groups[0]
    ref = g.in_axes[0]
    bad = dataclasses.replace(g, axes=tuple(a for a in g.axes if a != ref), in_axes=g.in_axes[1:])
    return dataclasses.replace(spec, groups=(bad, *spec.groups[1:]))


@pytest.mark.parametrize(("name", "activation", "spec"), [("mlp", None, "perm"), ("cnn2d-gap-bn", "tanh", "sign")])
def test_spec_missing_an_in_axis_changes_outputs(name, activation, spec):
    arch = _arch(name, activation)
    f = Functional(arch)
    flat = _members(arch, 4, seed=4)
    x = _inputs(name)
    good = parse(spec).bind_architecture(arch)
    bad = Augmenter(parse(spec), [Networks(f.layout, _drop_in_axis(f.spec), arch)])
    good_out, _ = good.flat(flat, None, _gen(0))
    bad_out, _ = bad.flat(flat, None, _gen(0))
    _assert_same_function(f, flat, good_out, x)
    assert _max_rel_change(f, flat, bad_out, x) > 1e-2


def test_siren_shift_without_the_sign_changes_outputs(monkeypatch):
    arch = _arch("siren")
    f = Functional(arch)
    flat = _members(arch, 4, seed=5)
    x = _inputs("siren")
    # by hand: shift neuron 3 of layer 0 by pi/w0 (k = 1); only with the next layer's column flipped is
    # the function kept
    shifted = f.layout.unflatten(flat.clone())
    shifted["0.bias"][:, 3] += math.pi / 30
    no_sign = torch.cat([shifted[e.name].reshape(4, -1) for e in f.layout], 1)
    assert _max_rel_change(f, flat, no_sign, x) > 1e-2
    shifted["2.weight"][:, :, 3] *= -1
    with_sign = torch.cat([shifted[e.name].reshape(4, -1) for e in f.layout], 1)
    _assert_same_function(f, flat, with_sign, x)
    # the transform with its sign step switched off
    monkeypatch.setattr(augment, "scale_axis", lambda t, ref, s, batch_dims: t)
    broken, _ = parse("siren-shift").bind_architecture(arch).flat(flat, None, _gen(0))
    assert _max_rel_change(f, flat, broken, x) > 1e-2


# ----------------------------------------------------------------------------- inexact transforms

BIG = archs.mlp(50, [500, 400], 100, norm="layernorm")  # tensors of 100 to 200,000 entries


def _big_members(scales=(1.0, 10.0)) -> torch.Tensor:
    _, layout, _ = archs.describe(BIG)
    g = _gen(11)
    return torch.stack([torch.randn(layout.size, generator=g) * s for s in scales])


def test_noise_std_is_sigma_times_each_tensors_std_per_member():
    _, layout, _ = archs.describe(BIG)
    flat = _big_members()  # member 1 is 10x member 0: its noise must be 10x too
    sigma = 0.2
    aug = parse(f"noise:{sigma}").bind_architecture(BIG)
    assert not aug.pipeline.exact
    out, _ = aug.flat(flat, None, _gen(0))
    before, after = layout.unflatten(flat), layout.unflatten(out)
    for name, t in before.items():
        for b in range(2):
            delta = (after[name][b] - t[b]).flatten()
            expected = sigma * t[b].flatten().std().item()
            assert abs(delta.mean().item()) < 0.2 * expected, name
            rel = 0.1 if delta.numel() >= 400 else 0.3  # the sample std of n draws is off by ~1/sqrt(2n)
            assert delta.std().item() == pytest.approx(expected, rel=rel), (name, b)
    again, _ = aug.flat(flat, None, _gen(0))
    other, _ = aug.flat(flat, None, _gen(1))
    assert torch.equal(again, out) and not torch.equal(other, out)


def test_dropout_zeroes_a_fraction_p_of_dense_entries_and_leaves_the_rest():
    _, layout, _ = archs.describe(BIG)
    flat = _big_members()
    p = 0.3
    out, _ = parse(f"dropout:{p}").bind_architecture(BIG).flat(flat, None, _gen(0))
    before, after = layout.unflatten(flat), layout.unflatten(out)
    assert (flat != 0).all()
    for e in layout:
        t, u = before[e.name], after[e.name]
        if e.role not in ("weight", "bias"):  # LayerNorm affine parameters
            assert torch.equal(u, t), e.name
            continue
        zeroed = u == 0
        assert torch.equal(u[~zeroed], t[~zeroed]), e.name  # survivors unchanged, not rescaled
        n = t[0].numel()
        for b in range(2):
            frac = zeroed[b].float().mean().item()
            assert abs(frac - p) < 4 * math.sqrt(p * (1 - p) / n), (e.name, b, frac)
    assert not torch.equal(out[0] == 0, out[1] == 0)  # each member its own mask


PRUNE_NET = archs.mlp(30, [40, 22], 10, norm="batchnorm")


def test_prune_zeroes_the_q_quantile_smallest_magnitudes_per_tensor_and_member():
    _, layout, _ = archs.describe(PRUNE_NET)
    q = 0.3
    flat = _members(PRUNE_NET, 3, seed=6)
    out, _ = parse(f"prune:{q}").bind_architecture(PRUNE_NET).flat(flat, None, _gen(0))
    before, after = layout.unflatten(flat), layout.unflatten(out)
    for e in layout:
        t, u = before[e.name], after[e.name]
        if e.role not in ("weight", "bias"):  # BatchNorm affine and running statistics untouched
            assert torch.equal(u, t), e.name
            continue
        n = t[0].numel()
        # tensors here have q (n - 1) not whole, so "below the quantile" and "at most it" agree
        assert q * (n - 1) != int(q * (n - 1)), e.name
        for b in range(3):
            mag = t[b].abs().flatten()
            cut = torch.quantile(mag, q)
            expected = torch.where(t[b].abs() < cut, torch.zeros(()), t[b])
            assert torch.equal(u[b], expected), (e.name, b)
            assert int((u[b] == 0).sum()) == math.ceil(q * (n - 1)), (e.name, b)
    # prune is deterministic: no random draw
    again, _ = parse(f"prune:{q}").bind_architecture(PRUNE_NET).flat(flat, None, _gen(99))
    assert torch.equal(again, out)


def test_prune_keeps_the_entry_at_the_quantile():
    arch = archs.mlp(3, [11], 2)  # 0.bias has 11 entries: q = 0.1 puts the quantile on the 2nd smallest
    _, layout, _ = archs.describe(arch)
    flat = _members(arch, 1, seed=0)
    out, _ = parse("prune:0.1").bind_architecture(arch).flat(flat, None, _gen(0))
    bias = layout.unflatten(out)["0.bias"][0]
    assert int((bias == 0).sum()) == 1  # the fraction 0.1 of 11 entries; the code zeroes 2


def test_noise_keeps_batchnorm_networks_valid():
    arch = archs.mlp(10, [32], 4, norm="batchnorm")
    f = Functional(arch)
    flat = _members(arch, 4, seed=1)
    params = f.layout.unflatten(flat)
    params["1.running_var"].copy_(torch.logspace(-3, 0.5, 32))  # channels of very different variance
    out, _ = parse("noise:0.1").bind_architecture(arch).flat(flat, None, _gen(0))
    assert (f.layout.unflatten(out)["1.running_var"] > 0).all()
    assert torch.isfinite(f.outputs(out, _inputs("mlp"))).all()


# ----------------------------------------------------------------------------- INR input moves


@pytest.fixture(scope="module")
def inr_zoo(tmp_path_factory):
    path = tmp_path_factory.mktemp("inr") / "inr.zarr"
    build_zoo("tiny-digits-inr", path)
    return path


def _grid(n: int = 15) -> torch.Tensor:
    """Points ``[n*n, 2]`` of a grid on [-1, 1]^2 symmetric exactly (x_i = -x_{n-1-i})."""
    xs = ((2 * torch.arange(n, dtype=torch.float64) - (n - 1)) / (n - 1)).float()
    assert torch.equal(xs, -xs.flip(0))
    return torch.cartesian_prod(xs, xs)  # row i * n + j is (xs[i], xs[j])


class _Rotate90(augment.Rotate):
    """Rotation by exactly +90 degrees, counter-clockwise."""

    def affine(self, b, generator):
        a = torch.tensor([[0.0, -1.0], [1.0, 0.0]])
        return a.expand(b, 2, 2), torch.zeros(b, 2)


def test_rotation_by_90_degrees_renders_the_rotated_image(inr_zoo):
    zoo = open_zoo(inr_zoo)
    f = Functional(zoo.architecture)
    flat = zoo.params([0, 3])
    n = 15
    nets = Networks(f.layout, f.spec, zoo.architecture)
    out = Augmenter(augment.Pipeline((_Rotate90(),)), [nets]).flat(flat, None, _gen(0))[0]
    before = f.outputs(flat, _grid(n))[..., 0].reshape(2, n, n).numpy()
    after = f.outputs(out, _grid(n))[..., 0].reshape(2, n, n).numpy()
    assert before.std() > 0.05  # a real image, not a constant
    for b in range(2):
        # f'(x, y) = f(R^-1 (x, y)) = f(y, -x): image[i, j] -> image[j, n-1-i], which is np.rot90
        np.testing.assert_allclose(after[b], np.rot90(before[b]), atol=1e-5, rtol=0)
        assert np.abs(after[b] - before[b]).max() > 0.1
    assert np.abs(np.rot90(after[0], -1) - before[0]).max() < 1e-5


@pytest.mark.parametrize("spec", ["translate:0.3", "rotate:90", "zoom:1.5", "rotate:30,translate:0.2"])
def test_input_move_draws_the_image_moved(inr_zoo, spec):
    """``f'(p) = f(A^-1 (p - t))`` for the A, t the transform drew (replayed from the same seed)."""
    zoo = open_zoo(inr_zoo)
    f = Functional(zoo.architecture)
    flat = zoo.params([0, 1, 2, 5])
    aug = parse(spec).bind(zoo)
    out, _ = aug.flat(flat, None, _gen(4))
    replay = _gen(4)
    a, t = torch.eye(2).expand(4, 2, 2), torch.zeros(4, 2)
    for transform in aug.pipeline.transforms:  # compose x -> A2 (A1 x + t1) + t2
        a2, t2 = transform.affine(4, replay)
        a, t = a2 @ a, (a2 @ t[..., None])[..., 0] + t2
    first_a, first_t = aug.pipeline.transforms[0].affine(4, _gen(4))
    name, arg = aug.pipeline.transforms[0].name, aug.pipeline.transforms[0].arg
    distinct = (first_a.reshape(4, 1, 4) - first_a.reshape(1, 4, 4)).abs().sum(-1) + (
        first_t[:, None] - first_t
    ).abs().sum(-1)
    assert (distinct + torch.eye(4) * 1e9).min() > 1e-4  # every member its own draw
    if name == "rotate":  # proper rotations by at most arg degrees
        assert_close(first_a @ first_a.transpose(1, 2), torch.eye(2).expand(4, 2, 2))
        assert_close(torch.linalg.det(first_a), torch.ones(4))
        assert torch.rad2deg(torch.atan2(first_a[:, 1, 0], first_a[:, 0, 0])).abs().max() <= arg
        assert torch.equal(first_t, torch.zeros(4, 2))
    if name == "translate":  # t ~ U[-a, a]^2
        assert torch.equal(first_a, torch.eye(2).expand(4, 2, 2)) and first_t.abs().max() <= arg
    if name == "zoom":  # s I with s in [1/r, r]
        s = first_a[:, 0, 0]
        assert torch.equal(first_a, s[:, None, None] * torch.eye(2)) and torch.equal(first_t, torch.zeros(4, 2))
        assert s.min() >= 1 / arg and s.max() <= arg
    points = torch.rand(200, 2, generator=_gen(1)) * 2 - 1
    moved = f.outputs(out, points)
    for b in range(4):
        back = ((points - t[b]) @ torch.linalg.inv(a[b]).T).contiguous()
        expected = f.outputs(flat[b], back)[0]
        assert_close(moved[b], expected, atol=1e-5, rtol=0)  # outputs ~0.4; measured errors < 1e-6
        assert (moved[b] - f.outputs(flat[b], points)[0]).abs().max() > 1e-2
    # only the first layer changes
    n0 = f.layout["0.bias"].stop
    assert torch.equal(out[:, n0:], flat[:, n0:]) and not torch.equal(out[:, :n0], flat[:, :n0])


def test_translate_on_a_biasless_inr_fails_at_bind():
    arch = archs.mlp(2, [8], 1, activation="sine", bias=False)
    parse("rotate").bind_architecture(arch)  # no translation: fine
    with pytest.raises(AugmentError, match="translate"):
        parse("translate").bind_architecture(arch)


# ----------------------------------------------------------------------------- mixup

MIX_ARCH = archs.mlp(10, [7, 6], 8)


def _replay_mixup(alpha: float, b: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    g = _gen(seed)
    partner = torch.randperm(b, generator=g)
    return partner, augment._beta(alpha, b, g)


def test_mixup_soft_labels_and_weights():
    b, classes = 6, 8
    flat = _members(MIX_ARCH, b, seed=8)
    y = torch.tensor([0, 1, 2, 3, 4, 5])
    aug = parse("mixup:0.5").bind_architecture(MIX_ARCH, "classification", classes)
    assert aug.mixes_targets and not aug.pipeline.exact
    out, soft = aug.flat(flat, y, _gen(3))
    partner, lam = _replay_mixup(0.5, b, 3)
    assert soft.shape == (b, classes) and soft.dtype == torch.float32
    assert_close(soft.sum(1), torch.ones(b))
    expected = lam[:, None] * F.one_hot(y, classes) + (1 - lam[:, None]) * F.one_hot(y[partner], classes)
    assert_close(soft, expected)
    assert_close(out, lam[:, None] * flat + (1 - lam[:, None]) * flat[partner])
    # recovered from the outputs alone: lambda is the own class's weight, the partner the other class
    for i in range(b):
        if partner[i] == i:
            assert soft[i, y[i]] == pytest.approx(1.0)
            assert_close(out[i], flat[i])  # its own partner: lam x + (1 - lam) x, up to rounding
            continue
        others = (soft[i] > 0) & (F.one_hot(y[i], classes) == 0)
        lam_i, j = soft[i, y[i]].item(), int(others.nonzero().item())  # label j is member j
        assert_close(out[i], lam_i * flat[i] + (1 - lam_i) * flat[j], rtol=1e-5, atol=1e-6)
    assert ((lam > 0) & (lam < 1)).all() and (partner != torch.arange(b)).any()
    # same generator, same draw; another generator, another
    again, soft_again = aug.flat(flat, y, _gen(3))
    assert torch.equal(again, out) and torch.equal(soft_again, soft)
    other, soft_other = aug.flat(flat, y, _gen(4))
    assert not torch.equal(other, out) and not torch.equal(soft_other, soft)


def test_mixup_hard_keeps_the_dominant_label():
    b = 8
    flat = _members(MIX_ARCH, b, seed=8)
    y = torch.arange(b) % 5
    out, hard = parse("mixup-hard:0.5").bind_architecture(MIX_ARCH, "classification", 5).flat(flat, y, _gen(2))
    partner, lam = _replay_mixup(0.5, b, 2)
    assert hard.dtype == torch.long and hard.shape == (b,)
    assert torch.equal(hard, torch.where(lam >= 0.5, y, y[partner]))
    assert (hard != y).any()  # some member's partner dominates
    assert_close(out, lam[:, None] * flat + (1 - lam[:, None]) * flat[partner])


def test_mixup_regression_targets_interpolate():
    b = 6
    flat = _members(MIX_ARCH, b, seed=8)
    y = torch.linspace(0.1, 0.9, b)
    out, y_mix = parse("mixup:0.4").bind_architecture(MIX_ARCH, "regression").flat(flat, y, _gen(6))
    partner, lam = _replay_mixup(0.4, b, 6)
    assert_close(y_mix, lam * y + (1 - lam) * y[partner])
    assert_close(out, lam[:, None] * flat + (1 - lam[:, None]) * flat[partner])
    assert not torch.equal(y_mix, y)


def test_mixup_follows_the_other_transforms():
    b = 4
    layout = archs.describe(MIX_ARCH)[1]
    flat = _members(MIX_ARCH, b, seed=9)
    y = torch.arange(4.0)
    aug = parse("perm,mixup").bind_architecture(MIX_ARCH, "regression")
    out, y_mix = aug.flat(flat, y, _gen(0))
    g = _gen(0)  # replay: the permutation draws first, then MixUp's partner and lambda
    permuted = aug.pipeline.transforms[0](layout.unflatten(flat), aug.nets[0], g)
    permuted = torch.cat([permuted[e.name].reshape(b, -1) for e in layout], 1)
    partner, lam = torch.randperm(b, generator=g), augment._beta(0.5, b, g)
    assert_close(out, lam[:, None] * permuted + (1 - lam[:, None]) * permuted[partner])
    assert_close(y_mix, lam * y + (1 - lam) * y[partner])


def _swap_seeds(count: int) -> list[int]:
    """Generator seeds whose MixUp of a batch of two pairs member 0 with member 1 (and 1 with 0)."""
    seeds = [s for s in range(200) if torch.equal(torch.randperm(2, generator=_gen(s)), torch.tensor([1, 0]))]
    return seeds[:count]


def test_mixup_aligned_undoes_the_partners_permutation():
    f = Functional(MIX_ARCH)
    member = _members(MIX_ARCH, 1, seed=10)
    copy = parse("perm").bind_architecture(MIX_ARCH).flat(member, None, _gen(1))[0]
    assert not torch.equal(copy, member)
    flat = torch.cat([member, copy])
    x = _inputs("mlp")
    plain = parse("mixup:1").bind_architecture(MIX_ARCH, "regression")
    aligned = parse("mixup-aligned:1").bind_architecture(MIX_ARCH, "regression")
    lams, plain_checked = [], 0
    for seed in _swap_seeds(6):
        _, lam = _replay_mixup(1.0, 2, seed)
        lams.append(lam[0].item())
        out, _ = aligned.flat(flat, torch.zeros(2), _gen(seed))
        _assert_same_function(f, flat[:1].expand(2, -1), out, x)  # both rows compute the member itself
        assert_close(out[0], member[0], rtol=1e-5, atol=1e-6)
        mixed, _ = plain.flat(flat, torch.zeros(2), _gen(seed))
        if 0.05 < lam[0] < 0.95:
            assert _max_rel_change(f, flat[:1], mixed[:1], x) > 1e-2
            plain_checked += 1
    assert plain_checked >= 3
    assert len(lams) == 6 and max(lams) - min(lams) > 0.3  # several lambdas


def test_mixup_perm_mixes_a_permuted_partner():
    f = Functional(MIX_ARCH)
    member = _members(MIX_ARCH, 1, seed=10)
    flat = member.expand(2, -1).clone()  # a member and its exact copy
    seed = next(s for s in _swap_seeds(20) if 0.2 < _replay_mixup(0.5, 2, s)[1][0] < 0.8)
    plain, y_plain = parse("mixup").bind_architecture(MIX_ARCH, "regression").flat(flat, torch.ones(2), _gen(seed))
    assert_close(plain, flat)  # mixing a network with itself gives itself
    permuted, y_perm = (
        parse("mixup-perm").bind_architecture(MIX_ARCH, "regression").flat(flat, torch.ones(2), _gen(seed))
    )
    assert_close(y_perm, torch.ones(2))
    assert_close(y_plain, torch.ones(2))
    assert _max_rel_change(f, flat[:1], permuted[:1], _inputs("mlp")) > 1e-2


# ----------------------------------------------------------------------------- parsing and binding


def test_parse_round_trip_and_defaults():
    p = parse(" perm , sign,noise:0.05 ,mixup-aligned:0.5")
    assert p.text == "perm,sign,noise:0.05,mixup-aligned:0.5"
    assert [type(t) for t in p.transforms] == [TRANSFORMS[n] for n in ("perm", "sign", "noise", "mixup-aligned")]
    assert not p.exact and parse("perm,sign,scale,siren-shift").exact
    assert p.to_dict() == {
        "spec": "perm,sign,noise:0.05,mixup-aligned:0.5",
        "transforms": [
            {"name": "perm", "arg": None, "exact": True},
            {"name": "sign", "arg": None, "exact": True},
            {"name": "noise", "arg": 0.05, "exact": False},
            {"name": "mixup-aligned", "arg": 0.5, "exact": False},
        ],
    }
    defaults = {t: parse(t).transforms[0].arg for t in TRANSFORMS}
    assert defaults == {
        "perm": None, "sign": None, "scale": 2.0, "siren-shift": 1.0, "noise": 0.1, "dropout": 0.1,
        "prune": 0.2, "translate": 0.1, "rotate": 15.0, "zoom": 1.2, "mixup": 0.5, "mixup-hard": 0.5,
        "mixup-perm": 0.5, "mixup-aligned": 0.5,
    }  # fmt: skip
    exact = {t for t, cls in TRANSFORMS.items() if cls.exact}
    assert exact == {"perm", "sign", "scale", "siren-shift"}
    assert parse(parse("scale:3,rotate:45").text).text == "scale:3,rotate:45"


@pytest.mark.parametrize(
    ("text", "named"),
    [
        ("", "''"),
        ("perm,,noise", "perm,,noise"),
        ("perm,", "perm,"),
        ("noise:abc", "noise:abc"),
        ("noise:", "noise:"),
        ("bogus", "bogus"),
        ("Perm", "Perm"),
        ("mixup:0.5,perm", "mixup:0.5,perm"),
        ("mixup,mixup-hard", "mixup,mixup-hard"),
        ("noise:-1", "noise:-1"),
        ("noise:0", "noise:0"),
        ("dropout:1.5", "dropout:1.5"),
        ("dropout:0", "dropout:0"),
        ("prune:1", "prune:1"),
        ("scale:0.5", "scale:0.5"),
        ("scale:1", "scale:1"),
        ("zoom:1", "zoom:1"),
        ("siren-shift:0", "siren-shift:0"),
        ("siren-shift:1.5", "siren-shift:1.5"),
        ("mixup:0", "mixup:0"),
        ("mixup-aligned:-2", "mixup-aligned:-2"),
        ("perm:3", "perm takes no argument"),
        ("sign:0", "sign takes no argument"),
        ("rotate:0", "rotate:0"),
        ("translate:-0.1", "translate:-0.1"),
    ],
)
def test_parse_rejects_malformed_strings(text, named):
    with pytest.raises(AugmentError) as info:
        parse(text)
    message = str(info.value)
    assert isinstance(info.value, SpecError) and isinstance(info.value, WeightZooError)
    assert "\n" not in message
    assert message.startswith("augmentation '") and named.strip("'") in message


@pytest.mark.parametrize("text", ["siren-shift:nan", "siren-shift:inf"])
def test_parse_rejects_non_finite_siren_shift(text):
    with pytest.raises(AugmentError, match="siren-shift"):
        parse(text)


@pytest.mark.parametrize(
    "text", ["noise:nan", "noise:inf", "scale:nan", "scale:inf", "zoom:nan", "zoom:inf", "rotate:nan",
             "translate:nan", "translate:inf", "mixup:nan", "mixup:inf"],
)  # fmt: skip
def test_parse_rejects_non_finite_arguments(text):
    with pytest.raises(AugmentError, match=text.partition(":")[0]):
        parse(text)


INR = archs.siren(2, [16, 16], 1, w0=30)
RELU_40 = archs.mlp(40, [16, 16], 10)


@pytest.mark.parametrize(
    ("text", "arch", "target_kind", "classes", "why"),
    [
        ("siren-shift", RELU_40, None, None, "SIREN"),
        ("rotate", RELU_40, None, None, "2-D INR"),
        ("translate", archs.cnn(2, [4], 3), None, None, "2-D INR"),
        ("sign", RELU_40, None, None, "odd activations"),
        ("scale", archs.with_overrides(RELU_40, activation="tanh"), None, None, "ReLU-like"),
        ("scale", archs.with_overrides(RELU_40, activation="gelu"), None, None, "ReLU-like"),
        ("sign", archs.residual_mlp(5, 6, 2, 3, activation="tanh"), None, None, "odd activations"),
        ("mixup", RELU_40, None, None, "target"),
        ("mixup-hard:0.3", INR, None, None, "target"),
        ("mixup", RELU_40, "classification", None, "number of classes"),
        ("perm,noise,mixup", RELU_40, None, None, "target"),
    ],
)
def test_bind_rejects_what_the_networks_cannot_take(text, arch, target_kind, classes, why):
    with pytest.raises(AugmentError) as info:
        parse(text).bind_architecture(arch, target_kind, classes)
    message = str(info.value)
    name = text.split(",")[-1].split(":")[0]  # the transform that cannot be taken
    assert "\n" not in message and f"augmentation '{name}" in message and why in message


def test_bind_without_permutation_spec():
    _, layout, spec = archs.describe(RELU_40)
    for text in ("perm", "sign", "scale", "mixup-perm", "mixup-aligned"):
        with pytest.raises(AugmentError, match=f"augmentation '{text}.*PermutationSpec"):
            Augmenter(parse(text), [Networks(layout, None, RELU_40, "regression")])
    # transforms that need no spec still bind
    aug = Augmenter(parse("noise,dropout,prune,mixup"), [Networks(layout, None, RELU_40, "regression")])
    flat = _members(RELU_40, 2, seed=0)
    out, y = aug.flat(flat, torch.zeros(2), _gen(0))
    assert out.shape == flat.shape and not torch.equal(out, flat) and y.shape == (2,)
    assert spec is not None


def test_cli_rejects_an_augmentation_the_zoo_cannot_take(mlp_zoo, tmp_path, capsys):
    rc = main(
        ["metanet", "train", "--zoo", str(mlp_zoo), "--task", "predict:test_acc", "--model", "mlp",
         "--out", str(tmp_path / "run"), "--epochs", "1", "--augment", "siren-shift", "--quiet"]
    )  # fmt: skip
    err = capsys.readouterr().err
    assert rc == 2
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: augmentation 'siren-shift")
    assert "SIREN" in lines[0]
    assert not (tmp_path / "run").exists()


def test_cli_rejects_a_non_finite_argument_in_one_line(mlp_zoo, tmp_path, capsys):
    rc = main(
        ["metanet", "train", "--zoo", str(mlp_zoo), "--task", "predict:test_acc", "--model", "mlp",
         "--out", str(tmp_path / "run"), "--epochs", "1", "--augment", "siren-shift:inf", "--quiet"]
    )  # fmt: skip
    assert rc == 2 and capsys.readouterr().err.startswith("error: augmentation 'siren-shift")


# ----------------------------------------------------------------------------- per-architecture zoo


@pytest.fixture(scope="module")
def mlp_zoo(tmp_path_factory):
    path = tmp_path_factory.mktemp("mlp") / "mlp.zarr"
    build_zoo("tiny-mnist1d-mlp", path)
    return path


def _activations(zoo) -> np.ndarray:
    return zoo.table()["activation"].to_numpy()


@pytest.mark.parametrize(("text", "changed"), [("sign", "tanh"), ("scale", "relu"), ("perm,sign,scale", None)])
def test_zoo_transform_applies_to_the_architectures_that_take_it(mlp_zoo, text, changed):
    zoo = open_zoo(mlp_zoo)
    acts = _activations(zoo)
    assert set(acts) == {"relu", "tanh"}
    aug = parse(text).bind(zoo)
    assert len(aug.nets) == 2
    members = np.arange(len(zoo))
    groups = aug.groups(members)
    for g in (0, 1):  # each group holds the members of one activation
        assert len(set(acts[groups == g])) == 1
    flat = zoo.params(members)
    out, _ = aug.flat(flat, None, _gen(0), groups)
    x = torch.randn(32, 40, generator=_gen(2))
    archs_of = zoo.member_architectures(list(members))
    for i in members:
        moved = not torch.equal(out[i], flat[i])
        assert moved == (changed is None or acts[i] == changed), (i, acts[i])
        if moved:
            _assert_same_function(Functional(archs_of[i]), flat[i : i + 1], out[i : i + 1], x)
    with pytest.raises(AugmentError, match="2 architectures"):
        aug(WeightSpace.from_flat(flat, zoo.layout), _gen(0))


def test_augmenter_generator_depends_on_seed_epoch_and_positions(mlp_zoo):
    aug = parse("perm").bind(open_zoo(mlp_zoo), seed=3)

    def draw(a, positions):
        return torch.rand(4, generator=a.generator(positions))

    first = draw(aug, [1, 2, 3])
    assert torch.equal(draw(aug, [1, 2, 3]), first)
    assert not torch.equal(draw(aug, [1, 2, 4]), first)
    assert not torch.equal(draw(parse("perm").bind(open_zoo(mlp_zoo), seed=4), [1, 2, 3]), first)
    aug.set_epoch(1)
    assert aug.epoch == 1 and not torch.equal(draw(aug, [1, 2, 3]), first)
    aug.set_epoch(0)
    assert torch.equal(draw(aug, [1, 2, 3]), first)


# ----------------------------------------------------------------------------- loaders


def _weight_batches(ds, workers: int, epoch: int):
    ds.set_epoch(epoch)
    return [(ws.to_flat(), y) for ws, y in ds.loader(batch_size=5, num_workers=workers, seed=3)]


def test_weight_dataset_batches_do_not_depend_on_workers(mlp_zoo):
    zoo = open_zoo(mlp_zoo)
    aug = parse("perm,sign,noise:0.05,mixup:0.5").bind(zoo, "regression", seed=1)
    ds = WeightDataset(mlp_zoo, target="test_acc", transform=aug)
    plain = WeightDataset(mlp_zoo, target="test_acc")
    serial, parallel = _weight_batches(ds, 0, 2), _weight_batches(ds, 2, 2)
    assert len(serial) == len(parallel) == 4
    for (w0, y0), (w1, y1) in zip(serial, parallel):
        assert torch.equal(w0, w1) and torch.equal(y0, y1)
    raw = _weight_batches(plain, 0, 2)
    assert all(not torch.equal(a[0], b[0]) for a, b in zip(serial, raw))
    # MixUp mixes the targets of every batch but the last, a single member (its own partner)
    assert [torch.equal(a[1], b[1]) for a, b in zip(serial, raw)] == [False, False, False, True]
    other_epoch = _weight_batches(ds, 0, 3)
    for (w0, _), (w1, _) in zip(serial, other_epoch):
        assert not torch.equal(w0, w1)
    assert all(torch.equal(a[0], b[0]) for a, b in zip(_weight_batches(ds, 0, 2), serial))


def test_graph_dataset_batches_do_not_depend_on_workers(mlp_zoo):
    aug = parse("perm,noise:0.05,mixup:0.5").bind(open_zoo(mlp_zoo), "regression", seed=1)
    ds = GraphDataset(mlp_zoo, target="test_acc", transform=aug)

    def batches(workers, epoch):
        ds.set_epoch(epoch)
        return [(b.x, b.edge_attr, b.y) for b in ds.loader(batch_size=6, num_workers=workers, seed=3)]

    serial, parallel = batches(0, 1), batches(2, 1)
    assert len(serial) == 3
    for a, b in zip(serial, parallel):
        assert all(torch.equal(u, v) for u, v in zip(a, b))
    other = batches(0, 2)
    assert all(not torch.equal(a[1], b[1]) for a, b in zip(serial, other))
    raw = [(b.x, b.edge_attr, b.y) for b in GraphDataset(mlp_zoo, target="test_acc").loader(6, seed=3)]
    assert all(not torch.equal(a[1], b[1]) and not torch.equal(a[2], b[2]) for a, b in zip(serial, raw))


# ----------------------------------------------------------------------------- training


def test_train_metanet_records_augmentation_and_is_reproducible(mlp_zoo):
    def run(augment_spec):
        options = TrainOptions(epochs=2, augment=augment_spec, seed=0)
        return train_metanet(mlp_zoo, "predict:test_acc", "deepsets", options=options)

    first, second, none = run("perm,noise:0.05"), run("perm,noise:0.05"), run(None)
    assert first.config["augment"] == parse("perm,noise:0.05").to_dict()
    assert first.config["augment"]["spec"] == "perm,noise:0.05"
    assert first.config["options"]["augment"] == "perm,noise:0.05"
    assert none.config["augment"] is None and none.config["options"]["augment"] is None
    losses = first.config["history"]["val_loss"]
    assert len(losses) == 2 and all(math.isfinite(v) for v in losses)
    assert second.config["history"]["val_loss"] == losses
    assert none.config["history"]["val_loss"] != losses


def test_train_metanet_classifies_with_mixup_soft_labels(inr_zoo):
    options = TrainOptions(epochs=2, augment="mixup:0.5", seed=0)
    run = train_metanet(inr_zoo, "classify:label", "mlp", options=options)
    assert run.config["augment"]["spec"] == "mixup:0.5"
    assert run.config["augment"]["transforms"] == [{"name": "mixup", "arg": 0.5, "exact": False}]
    assert run.config["options"]["augment"] == "mixup:0.5"
    assert run.config["task"]["kind"] == "classification"
    losses = run.config["history"]["val_loss"]
    assert len(losses) == 2 and all(math.isfinite(v) and v > 0 for v in losses)
    assert 0 <= run.config["scores"]["train"]["accuracy"] <= 1
