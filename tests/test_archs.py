"""Architecture families: they build, have the published sizes, and their symmetries keep the function."""

import pytest
import torch
from conftest import randomize_module
from torch import nn

from weightzoo.errors import SpecError
from weightzoo.symmetry import PermutationSpec
from weightzoo.zoo import archs

# family description, input shape, parameter count (float entries of the ParamLayout)
FAMILIES = {
    "mlp": (archs.mlp(40, [32, 16], 10), (5, 40), 40 * 32 + 32 + 32 * 16 + 16 + 16 * 10 + 10),
    "mlp_wd": (archs.mlp_wd(40, 32, 2, 10), (5, 40), 2698),
    "mlp_wd-residual": (archs.mlp_wd(4, 8, 3, 3, residual=True, norm="layernorm"), (5, 4), 56 + 2 * 88 + 27),
    "residual_mlp": (archs.residual_mlp(4, 8, 2, 3), (5, 4), 40 + 2 * 72 + 27),
    "residual_mlp-layernorm": (archs.residual_mlp(4, 8, 2, 3, norm="layernorm"), (5, 4), 40 + 2 * 88 + 27),
    "residual_mlp-batchnorm": (archs.residual_mlp(4, 8, 2, 3, norm="batchnorm"), (5, 4), 40 + 2 * 104 + 27),
    "cnn": (archs.cnn(1, [4, 5], 3), (2, 1, 9, 9), 40 + 185 + 18),
    "cnn1d": (archs.cnn1d(), (3, 1, 40), 16 * 5 + 16 + 2 * (16 * 16 * 5 + 16) + 170),
    "smallcnnzoo": (archs.small_cnn_zoo(), (2, 1, 28, 28), 4970),
    "cnn_s": (archs.cnn_s(), (2, 1, 28, 28), 208 + 1206 + 100 + 740 + 210),
    "cnn_s-rgb32": (archs.cnn_s(3, in_size=32, dropout=0.1), (2, 3, 32, 32), 608 + 1206 + 100 + 64 * 20 + 20 + 210),
    "modelzoo_cnn-CNN3": (archs.modelzoo_cnn("CNN3", 3), (2, 3, 32, 32), 448 + 4640 + 4335 + 1220 + 210),
    "siren": (archs.siren(), (7, 2), 2 * 32 + 32 + 32 * 32 + 32 + 33),
    "inr_mlp": (archs.inr_mlp(), (7, 2), 1185),
}
IDS = list(FAMILIES)


def _assert_actions_preserve(module: nn.Module, shape: tuple[int, ...], scale: float = 0.5, draws: int = 3) -> None:
    module.eval()
    randomize_module(module, scale)
    spec = PermutationSpec.from_module(module)
    x = torch.randn(*shape, generator=torch.Generator().manual_seed(1))
    ref = module(x)
    sd = {k: v.clone() for k, v in module.state_dict().items()}
    for seed in range(draws):
        moved = spec.apply(sd, spec.random_action(torch.Generator().manual_seed(seed)))
        assert any(not torch.equal(moved[k], sd[k]) for k in sd)
        module.load_state_dict(moved)
        torch.testing.assert_close(module(x), ref, atol=1e-5, rtol=1e-4)


@pytest.mark.parametrize("name", IDS)
def test_family_builds_with_expected_size(name):
    arch, shape, size = FAMILIES[name]
    module, layout, spec = archs.describe(arch)
    assert arch["family"] in archs.FAMILIES and name.startswith(arch["family"])
    assert layout.size == size
    assert module(torch.randn(*shape)).shape[0] == shape[0]
    assert len(spec) >= 1
    assert archs.build_module(archs.FAMILIES[arch["family"]](**arch["args"])).state_dict().keys() == (
        module.state_dict().keys()
    )


@pytest.mark.parametrize("name", IDS)
def test_family_symmetries_preserve_function(name):
    arch, shape, _ = FAMILIES[name]
    scale = 0.5 / 30 if name == "siren" else 0.5  # sine nets amplify rounding by w0 = 30 per layer
    _assert_actions_preserve(archs.build_module(arch), shape, scale)


@pytest.mark.parametrize("activation", ["relu", "tanh", "gelu", "leaky_relu"])
@pytest.mark.parametrize("norm", [None, "layernorm", "batchnorm"])
def test_residual_mlp_permutations_preserve_function(activation, norm):
    arch = archs.residual_mlp(5, 6, 3, 2, activation=activation, norm=norm)
    _assert_actions_preserve(archs.build_module(arch), (9, 5))


@pytest.mark.parametrize(
    "block",
    [
        [{"type": "linear", "in": 6, "out": 7}, {"type": "act", "name": "relu"}, {"type": "linear", "in": 7, "out": 6}],
        [{"type": "layernorm", "num": 6}, {"type": "linear", "in": 6, "out": 6}, {"type": "act", "name": "tanh"}],
        [{"type": "residual", "layers": [{"type": "linear", "in": 6, "out": 6}]}, {"type": "act", "name": "gelu"}],
    ],
    ids=["two-linear", "pre-norm", "nested"],
)
def test_hand_written_residual_blocks_preserve_function(block):
    arch = {
        "layers": [
            {"type": "linear", "in": 4, "out": 6},
            {"type": "residual", "layers": block},
            {"type": "act", "name": "relu"},
            {"type": "linear", "in": 6, "out": 3},
        ]
    }
    _assert_actions_preserve(archs.build_module(arch), (9, 4))


def test_residual_stream_is_one_permutation_group():
    module = archs.build_module(archs.residual_mlp(4, 8, 2, 3, norm="layernorm"))
    (stream,) = PermutationSpec.from_module(module).groups
    assert stream.size == 8 and stream.symmetries == ("permute",)
    axes = {(a.param, a.axis) for a in stream.axes}
    writers = {("0.weight", 0), ("0.bias", 0), ("1.0.weight", 0), ("1.0.bias", 0), ("2.0.weight", 0)}
    readers = {("1.0.weight", 1), ("2.0.weight", 1), ("3.weight", 1)}
    assert writers | readers | {("1.1.weight", 0), ("2.1.bias", 0)} <= axes
    assert {(a.param, a.axis) for a in stream.in_axes} == readers
    hidden = PermutationSpec.from_module(
        archs.build_module(
            {
                "layers": [
                    {"type": "linear", "in": 4, "out": 6},
                    {
                        "type": "residual",
                        "layers": [
                            {"type": "linear", "in": 6, "out": 7},
                            {"type": "act", "name": "relu"},
                            {"type": "linear", "in": 7, "out": 6},
                        ],
                    },
                    {"type": "linear", "in": 6, "out": 3},
                ]
            }
        )
    )
    inner, outer = hidden.groups
    assert inner.size == 7 and inner.symmetries == ("permute", "scale")  # hidden neurons inside the block
    assert outer.size == 6 and outer.symmetries == ("permute",)


def test_residual_around_the_input_leaves_it_unpermuted():
    arch = {
        "layers": [
            {
                "type": "residual",
                "layers": [
                    {"type": "linear", "in": 4, "out": 5},
                    {"type": "act", "name": "tanh"},
                    {"type": "linear", "in": 5, "out": 4},
                ],
            },
            {"type": "linear", "in": 4, "out": 3},
        ]
    }
    (group,) = PermutationSpec.from_module(archs.build_module(arch)).groups
    assert group.size == 5
    _assert_actions_preserve(archs.build_module(arch), (6, 4))


def test_residual_block_must_keep_the_size():
    arch = {
        "layers": [
            {"type": "linear", "in": 4, "out": 6},
            {"type": "residual", "layers": [{"type": "linear", "in": 6, "out": 5}]},
        ]
    }
    with pytest.raises(SpecError, match="residual block '1' maps 6 features to 5"):
        PermutationSpec.from_module(nn.Sequential(nn.Linear(4, 6), archs.Residual(nn.Linear(6, 5))))
    with pytest.raises(SpecError, match=r"layers\[1\]\.layers\[0\] has unknown type 'conv9d'"):
        archs.build_module({"layers": [arch["layers"][0], {"type": "residual", "layers": [{"type": "conv9d"}]}]})
    with pytest.raises(SpecError, match=r"layers\[0\]\.layers must be a non-empty list"):
        archs.build_module({"layers": [{"type": "residual", "layers": []}]})


def test_residual_computes_skip():
    block = archs.Residual(nn.Linear(3, 3))
    x = torch.randn(4, 3)
    torch.testing.assert_close(block(x), x + block[0](x))


def _conv(cin: int, cout: int, kernel: int) -> dict:
    return {"type": "conv2d", "in": cin, "out": cout, "kernel": kernel}


def _modelzoo_cnn(blocks, flat: int, act: str) -> list[dict]:
    """Conv blocks (conv, then max-pool if marked, then act), Flatten, Linear(flat, 20), act, Linear(20, 10)."""
    layers = []
    for cin, cout, kernel, pool in blocks:
        layers += [_conv(cin, cout, kernel), *([{"type": "maxpool2d", "kernel": 2, "stride": 2}] if pool else [])]
        layers.append({"type": "act", "name": act})
    return [
        *layers,
        {"type": "flatten"},
        {"type": "linear", "in": flat, "out": 20},
        {"type": "act", "name": act},
        {"type": "linear", "in": 20, "out": 10},
    ]


# What the Model Zoos importer stored for def_net.py's CNN, CNN2 and CNN3 before they moved to archs.
MODELZOO_CNN_LAYERS = {
    ("CNN", 1, "tanh"): _modelzoo_cnn([(1, 8, 5, True), (8, 6, 5, True), (6, 4, 2, False)], 36, "tanh"),
    ("CNN2", 1, "relu"): _modelzoo_cnn([(1, 6, 5, True), (6, 9, 5, True), (9, 6, 2, False)], 54, "relu"),
    ("CNN3", 3, "leaky_relu"): _modelzoo_cnn(
        [(3, 16, 3, True), (16, 32, 3, True), (32, 15, 3, True)], 60, "leaky_relu"
    ),
}


@pytest.mark.parametrize("key", list(MODELZOO_CNN_LAYERS), ids=[k[0] for k in MODELZOO_CNN_LAYERS])
def test_modelzoo_cnns_match_def_net(key):
    variant, channels, act = key
    arch = archs.modelzoo_cnn(variant, channels, activation=act)
    assert arch["layers"] == MODELZOO_CNN_LAYERS[key]
    assert arch["family"] == "modelzoo_cnn" and arch["args"]["variant"] == variant
    other = "relu" if act != "relu" else "tanh"
    assert archs.with_overrides(arch, activation=other) == archs.modelzoo_cnn(variant, channels, activation=other)
    with pytest.raises(SpecError, match="at least 22x22"):
        archs.modelzoo_cnn("CNN3", in_size=21)
    with pytest.raises(SpecError, match="variant 'CNN4'"):
        archs.modelzoo_cnn("CNN4")


def test_cnn_s_matches_model_zoos_definition():
    assert archs.cnn_s()["layers"] == MODELZOO_CNN_LAYERS["CNN", 1, "tanh"]
    assert archs.cnn_s()["layers"] == archs.modelzoo_cnn("CNN")["layers"]
    assert archs.cnn_s()["family"] == "cnn_s"
    wide = dict(in_size=32, activation="relu", dropout=0.1)
    assert archs.cnn_s(3, **wide)["layers"] == archs.modelzoo_cnn("CNN", 3, **wide)["layers"]
    kinds = [d["type"] for d in archs.cnn_s(dropout=0.2)["layers"]]
    assert kinds.count("dropout") == 3 and kinds[3] == "dropout"
    with pytest.raises(SpecError, match="at least 20x20"):
        archs.cnn_s(in_size=8)


def test_new_families_vary_per_member():
    deep = archs.with_overrides(archs.mlp_wd(10, 16, 2, 3), depth=4, width=8)
    assert archs.describe(deep)[1].size == 10 * 8 + 8 + 3 * (8 * 8 + 8) + 8 * 3 + 3
    tanh = archs.with_overrides(archs.residual_mlp(4, 8, 2, 3), activation="tanh")
    assert [d["layers"][-1]["name"] for d in tanh["layers"] if d["type"] == "residual"] == ["tanh", "tanh"]
    custom = {"layers": archs.residual_mlp(4, 8, 1, 3)["layers"]}
    assert archs.with_overrides(custom, activation="gelu")["layers"][1]["layers"][-1]["name"] == "gelu"
    with pytest.raises(SpecError, match="norm 'groupnorm'"):
        archs.residual_mlp(4, 8, 1, 3, norm="groupnorm")


def test_input_rank():
    assert archs.input_rank(archs.mlp(4, [3], 2)) == 1
    assert archs.input_rank(archs.residual_mlp(4, 8, 1, 2)) == 1
    assert archs.input_rank(archs.cnn1d()) == 2
    assert archs.input_rank(archs.cnn_s()) == 3
    assert archs.input_rank({"layers": [{"type": "flatten"}, {"type": "linear", "in": 4, "out": 2}]}) is None
    assert (
        archs.input_rank(
            {"layers": [{"type": "residual", "layers": [{"type": "conv1d", "in": 1, "out": 1, "kernel": 1}]}]}
        )
        == 2
    )
