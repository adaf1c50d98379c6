"""ParamLayout / PermutationSpec: derivation, JSON round trips and function-preserving actions."""

import pytest
import torch
from conftest import randomize_module
from torch import nn

from weightzoo.errors import LayoutError, SpecError
from weightzoo.layout import ParamLayout
from weightzoo.symmetry import GroupAction, PermutationSpec
from weightzoo.weightspace import WeightSpace
from weightzoo.zoo import archs

ACTS = ["relu", "tanh", "sine", "gelu", "sigmoid", "leaky_relu"]


def _nets():
    yield "mlp", archs.mlp(5, [7, 6], 3), (4, 5)
    yield "mlp-nobias", archs.mlp(5, [7, 6], 3, bias=False), (4, 5)
    yield "mlp-layernorm", archs.mlp(5, [7, 6], 3, norm="layernorm"), (4, 5)
    yield "mlp-batchnorm", archs.mlp(5, [7, 6], 3, norm="batchnorm"), (4, 5)
    yield "siren", archs.siren(2, [16, 16], 1), (8, 2)
    yield "cnn1d-gap", archs.cnn(2, [4, 5], 3, dim=1), (3, 2, 12)
    yield "cnn2d-gap-bn", archs.cnn(1, [4, 5], 3, batchnorm=True), (3, 1, 9, 9)
    yield "cnn2d-flatten", archs.cnn(1, [3, 4], 2, head="flatten", flat_features=4 * 5 * 5), (3, 1, 9, 9)
    yield "smallcnnzoo", archs.small_cnn_zoo(), (2, 1, 28, 28)
    seq = nn.Sequential(
        nn.Conv2d(1, 4, 3, bias=False),
        nn.ReLU(),
        nn.MaxPool2d(2),
        nn.Flatten(),
        nn.Linear(4 * 3 * 3, 6),
        nn.Tanh(),
        nn.Dropout(0.1),
        nn.Linear(6, 2),
    )
    yield "torch-sequential", seq, (3, 1, 8, 8)


@pytest.mark.parametrize("act", ACTS)
@pytest.mark.parametrize("name,arch,shape", list(_nets()), ids=[n for n, *_ in _nets()])
def test_group_actions_preserve_function(name, arch, shape, act):
    if isinstance(arch, nn.Module):
        module = arch
    else:  # SIREN fixes its activation (sine); every other family takes the parametrized one
        module = archs.build_module(arch if name == "siren" else archs.with_overrides(arch, activation=act))
    module.eval()
    # sine nets amplify rounding by w0 = 30 per layer: use SIREN-sized weights for them
    randomize_module(module, scale=0.5 / 30 if act == "sine" or name == "siren" else 0.5)
    layout = ParamLayout.from_module(module)
    spec = PermutationSpec.from_module(module)
    assert len(spec) >= 1
    x = torch.randn(*shape)
    ref = module(x)
    sd = {k: v.clone() for k, v in module.state_dict().items()}
    action = spec.random_action(torch.Generator().manual_seed(1))
    moved = spec.apply(sd, action)
    # the action really changed the parameters
    assert any(not torch.equal(moved[k], sd[k]) for k in layout.names)
    module.load_state_dict(moved)
    torch.testing.assert_close(module(x), ref, atol=1e-5, rtol=1e-4)


def test_symmetries_follow_activation():
    spec = PermutationSpec.from_module(archs.build_module(archs.mlp(3, [4, 4], 2, activation="relu")))
    assert all(g.symmetries == ("permute", "scale") for g in spec.groups)
    spec = PermutationSpec.from_module(archs.build_module(archs.siren(2, [8], 1)))
    assert spec.groups[0].symmetries == ("permute", "sign")
    spec = PermutationSpec.from_module(archs.build_module(archs.mlp(3, [4], 2, activation="gelu")))
    assert spec.groups[0].symmetries == ("permute",)


def test_sign_flip_breaks_relu_net():
    """Guards the symmetry bookkeeping: a sign flip is NOT a symmetry of a ReLU network."""
    module = archs.build_module(archs.mlp(3, [6], 2))
    spec = PermutationSpec.from_module(module)
    x = torch.randn(10, 3)
    ref = module(x)
    flip = GroupAction(scales={"layer0": -torch.ones(6)})
    module.load_state_dict(spec.apply(module.state_dict(), flip))
    assert not torch.allclose(module(x), ref, atol=1e-3)


def test_input_permutation_changes_function():
    module = archs.build_module(archs.mlp(4, [6], 2))
    x = torch.randn(10, 4)
    assert not torch.allclose(module(x), module(x[:, [1, 0, 2, 3]]), atol=1e-4)


@pytest.mark.parametrize("name,arch,shape", list(_nets())[:9], ids=[n for n, *_ in list(_nets())[:9]])
def test_json_round_trip(name, arch, shape):
    module = archs.build_module(arch)
    layout, spec = ParamLayout.from_module(module), PermutationSpec.from_module(module)
    assert ParamLayout.from_json(layout.to_json()) == layout
    assert PermutationSpec.from_json(spec.to_json()) == spec


def test_flatten_unflatten_and_weightspace_round_trip():
    module = archs.build_module(archs.cnn(1, [4, 5], 3, batchnorm=True))
    layout = ParamLayout.from_module(module)
    flat = layout.flatten(module.state_dict())
    assert flat.shape == (layout.size,) and flat.dtype == torch.float32
    back = layout.unflatten(flat)
    for k in layout.names:
        assert torch.equal(back[k], module.state_dict()[k])
    batch = torch.randn(4, layout.size)
    ws = WeightSpace.from_flat(batch, layout)
    assert ws.weights[0].shape == (4, 1, 4, 1, 3, 3) and ws.biases[0].shape == (4, 1, 4)
    assert torch.equal(ws.to_flat(), batch)
    both = WeightSpace.collate([ws, ws])
    assert len(both) == 8 and torch.equal(both.to_flat()[4:], batch)
    assert torch.equal(layout.flatten(ws.to_state_dicts()[2]), batch[2])


def test_weightspace_permute_batched_matches_per_member():
    module = archs.build_module(archs.mlp(3, [5, 4], 2, activation="tanh"))
    layout, spec = ParamLayout.from_module(module), PermutationSpec.from_module(module)
    flat = torch.randn(6, layout.size)
    action = spec.random_action(torch.Generator().manual_seed(3), batch=6)
    moved = WeightSpace.from_flat(flat, layout).permute(spec, action).to_flat()
    x = torch.randn(7, 3)
    for i in range(6):
        module.load_state_dict(layout.unflatten(flat[i]))
        ref = module(x)
        module.load_state_dict(layout.unflatten(moved[i]))
        torch.testing.assert_close(module(x), ref, atol=1e-5, rtol=1e-4)


def test_bad_state_dict_is_named():
    layout = ParamLayout.from_module(archs.build_module(archs.mlp(3, [4], 2)))
    sd = archs.build_module(archs.mlp(3, [5], 2)).state_dict()
    with pytest.raises(LayoutError, match=r"m\.pt: parameter '0.weight' has shape \(5, 3\)"):
        layout.flatten(sd, source="m.pt")
    with pytest.raises(LayoutError, match="missing parameter"):
        layout.flatten({}, source="m.pt")


def test_unsupported_module_is_refused():
    with pytest.raises(SpecError, match="GRU"):
        PermutationSpec.from_module(nn.Sequential(nn.Linear(2, 3), nn.GRU(3, 3)))
    with pytest.raises(SpecError, match="GraphBuilder.from_module"):  # not silently read as a Linear
        PermutationSpec.from_module(nn.Sequential(nn.Linear(2, 4), nn.MultiheadAttention(4, 2)))
    with pytest.raises(SpecError, match="unknown type"):
        archs.build_module({"layers": [{"type": "transformer"}]})


def test_family_overrides_rebuild_variants():
    base = archs.mlp(5, [7, 6], 3)
    wide = archs.with_overrides(base, hidden=[9], activation="tanh")
    _, layout, spec = archs.describe(wide)
    assert wide["family"] == "mlp" and wide["args"]["hidden"] == [9]
    assert layout["0.weight"].shape == (9, 5) and spec.groups[0].symmetries == ("permute", "sign")
    assert archs.with_overrides(archs.small_cnn_zoo(), activation="tanh")["args"]["activation"] == "tanh"
    with pytest.raises(SpecError, match="no argument"):
        archs.with_overrides(base, depth=3)
    custom = {"layers": base["layers"]}
    with pytest.raises(SpecError, match="only 'activation'"):
        archs.with_overrides(custom, hidden=[3])
