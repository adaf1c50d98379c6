"""ZooSpec parsing, validation messages and deterministic member draws."""

import pytest
import yaml

from weightzoo.errors import SpecError
from weightzoo.zoo.spec import load_spec, parse_spec, shipped_configs

BASE = {
    "name": "t",
    "task": "digits",
    "architecture": {"family": "mlp", "args": {"in_features": 64, "hidden": [8], "out_features": 10}},
    "members": 10,
    "epochs": 3,
    "checkpoint_epochs": [0, 3],
    "hparams": {"lr": {"loguniform": [1e-3, 1e-1]}, "optimizer": {"choice": ["sgd", "adam"]}, "dropout": 0.1},
    "grid": {"activation": ["relu", "tanh"]},
}


def spec_with(**changes):
    data = {**BASE, **changes}
    return {k: v for k, v in data.items() if v is not None}


def test_members_are_deterministic_and_independent_of_zoo_size():
    small, big = parse_spec(BASE), parse_spec(spec_with(members=50))
    assert [small.member_hparams(i) for i in range(10)] == [big.member_hparams(i) for i in range(10)]
    hp = small.member_hparams(3)
    assert 1e-3 <= hp["lr"] <= 1e-1 and hp["optimizer"] in ("sgd", "adam") and hp["dropout"] == 0.1
    assert [small.member_hparams(i)["activation"] for i in range(4)] == ["relu", "tanh", "relu", "tanh"]
    assert small.arch_hparams == ["activation"]
    assert small.member_architecture(small.member_hparams(1))["args"]["activation"] == "tanh"
    assert parse_spec(spec_with(seed=1)).member_hparams(3)["lr"] != hp["lr"]
    assert parse_spec(spec_with(seed=1)).fingerprint() != small.fingerprint()
    assert parse_spec(spec_with(description="x")).fingerprint() == small.fingerprint()


def test_shipped_configs_all_parse():
    names = shipped_configs()
    assert "mnist1d-mlp" in names and "tiny-mnist1d-mlp" in names
    for name in names:
        spec = load_spec(name)
        assert spec.members >= 1
    assert load_spec("mnist1d-mlp").members >= 2000


@pytest.mark.parametrize(
    "changes,needle",
    [
        ({"colour": 1}, "unknown field(s) ['colour']; valid fields"),
        ({"epochs": 0}, "field 'epochs' must be at least 1"),
        ({"epochs": "ten"}, "field 'epochs' must be an integer"),
        ({"checkpoint_epochs": [0, 5]}, "[5] outside the run"),
        ({"task": "imagenet"}, "unknown task 'imagenet'"),
        ({"architecture": {"family": "transformer"}}, "unknown family 'transformer'"),
        ({"architecture": {"family": "mlp", "args": {"widths": 3}}}, "do not fit family 'mlp'"),
        ({"hparams": {"lr": {"choice": []}}}, "choice needs a non-empty list"),
        ({"hparams": {"lr": {"uniform": [1.0, 0.1]}}}, "are empty"),
        ({"hparams": {"lr": {"gaussian": [0, 1]}}}, "must be one of"),
        ({"hparams": {"lr": [0.1, 0.2]}}, "write {choice: [...]}"),
        ({"hparams": {"colour": 1}}, "unknown hyperparameter 'colour'; valid:"),
        ({"grid": {"activation": ["relu", "swish"]}}, "unknown activation 'swish'"),
        ({"members": 0}, "field 'members' must be a positive integer"),
        ({"members": "all"}, "'all' needs a per-member task"),
        ({"name": None}, "field 'name' is required"),
    ],
)
def test_bad_specs_name_the_field(changes, needle):
    with pytest.raises(SpecError) as info:
        parse_spec(spec_with(**changes), source="zoo.yaml")
    message = str(info.value)
    assert message.startswith("zoo.yaml") and needle in message and "\n" not in message


def test_yaml_file_and_syntax_errors(tmp_path):
    path = tmp_path / "z.yaml"
    path.write_text(yaml.safe_dump(BASE))
    assert load_spec(path).name == "t"
    path.write_text("name: [unclosed\n")
    with pytest.raises(SpecError, match="not valid YAML at line"):
        load_spec(path)
    with pytest.raises(SpecError, match="no such spec file or shipped config"):
        load_spec("no-such-zoo")
