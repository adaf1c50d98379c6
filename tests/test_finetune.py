"""Fine-tuned zoos: members start from a base (another zoo's members, or one pretrained in the spec),
the base and its source are stored, task vectors are params minus base, builds resume identically,
and bad bases are one line."""

import re

import numpy as np
import pytest
import torch

from weightzoo.cli import main
from weightzoo.errors import SpecError, StoreError
from weightzoo.zoo.build import build_zoo
from weightzoo.zoo.finetune import checksum
from weightzoo.zoo.opener import open_zoo
from weightzoo.zoo.spec import parse_spec
from weightzoo.zoo.transfer import convert_zoo

ARCH = {"family": "mlp", "args": {"in_features": 40, "hidden": [16, 16], "out_features": 10}}
PRETRAINED = {
    "name": "ft",
    "task": "mnist1d",
    "architecture": ARCH,
    "members": 6,
    "epochs": 2,
    "checkpoint_epochs": [0, 1, 2],
    "batch_size": 128,
    "group_size": 2,
    "hparams": {"optimizer": "adam", "lr": {"loguniform": [1e-4, 1e-2]}, "task.classes": 2},
    "pretrain": {"epochs": 3, "hparams": {"optimizer": "adam", "lr": 1e-2, "seed": 7}},
}


@pytest.fixture(scope="module")
def base_zoo(tmp_path_factory):
    path = tmp_path_factory.mktemp("base") / "base.zarr"
    build_zoo({**PRETRAINED, "name": "base", "members": 4, "hparams": {"optimizer": "adam", "lr": 3e-3}}
              | {"pretrain": None}, path)  # fmt: skip
    return path


@pytest.fixture(scope="module")
def pretrained(tmp_path_factory):
    path = tmp_path_factory.mktemp("ft") / "ft.zarr"
    build_zoo(PRETRAINED, path)
    return path


def test_members_start_from_the_pretrained_base(pretrained):
    with open_zoo(pretrained) as zoo:
        base = zoo.base_params()
        assert zoo.fine_tuned and base.shape == (zoo.layout.size,)
        assert torch.equal(zoo.params(epoch=0), base.expand(len(zoo), -1))  # the first checkpoint is the base
        assert torch.equal(zoo.task_vectors(epoch=2), zoo.params(epoch=2) - base)
        assert torch.equal(zoo.task_vectors([1, 4]), zoo.params([1, 4]) - base)
        assert not torch.equal(zoo.params(epoch=2)[0], zoo.params(epoch=2)[1])  # they did fine-tune
        source = zoo.attrs["base"]
        assert source["sha256"] == [checksum(base.numpy())] and source["members"] == [None]
        pre = source["pretrain"]
        assert pre["task"] == "mnist1d" and pre["epochs"] == 3 and pre["hparams"]["seed"] == 7
        assert pre["metrics"]["test_acc"] > 0.2  # the base learned something (chance: 0.1)
        assert zoo.verify().ok


def test_members_start_from_members_of_another_zoo(base_zoo, tmp_path):
    spec = {**PRETRAINED, "pretrain": None, "base": {"zoo": str(base_zoo), "epoch": 1}}
    spec["grid"] = {"base.member": [3, 1]}
    out = tmp_path / "from-zoo.h5"
    build_zoo(spec, out)
    with open_zoo(out) as zoo, open_zoo(base_zoo) as base:
        assert zoo.column("base.member").tolist() == [3, 1] * 3
        assert zoo.attrs["base"]["members"] == [1, 3] and zoo.attrs["base"]["epoch"] == 1
        expected = base.params(zoo.column("base.member"), epoch=1)
        assert torch.equal(zoo.params(epoch=0), expected) and torch.equal(zoo.base_params(np.arange(6)), expected)
        assert zoo.base_params().shape == (2, zoo.layout.size)  # the distinct bases
        assert zoo.attrs["base"]["sha256"] == [checksum(r) for r in base.params([1, 3], epoch=1).numpy()]


def test_a_resumed_fine_tune_build_equals_an_uninterrupted_one(pretrained, tmp_path):
    out = tmp_path / "resumed.zarr"

    def stop(group):
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        build_zoo(PRETRAINED, out, on_group=stop)
    assert len(open_zoo(out)) == 2
    assert build_zoo(PRETRAINED, out).trained == 4
    with open_zoo(out) as a, open_zoo(pretrained) as b:
        assert torch.equal(a.params(epoch=None), b.params(epoch=None)) and a.table().equals(b.table())
        assert torch.equal(a.base_params(), b.base_params())


def test_the_base_survives_conversion(pretrained, tmp_path):
    convert_zoo(pretrained, tmp_path / "copy.h5")
    with open_zoo(tmp_path / "copy.h5") as copy, open_zoo(pretrained) as zoo:
        assert torch.equal(copy.base_params(), zoo.base_params()) and copy.verify().ok


def test_a_zoo_without_a_base_says_so(base_zoo):
    with open_zoo(base_zoo) as zoo, pytest.raises(StoreError, match="not a fine-tuned zoo"):
        zoo.task_vectors()


@pytest.mark.parametrize(
    "change,match",
    [
        ({"base": {"zoo": "{tmp}/missing.zarr", "member": 0}}, "base zoo .*missing.zarr: no such zoo"),
        ({"base": {"zoo": "{base}", "member": 9}}, "base member 9 is not in .* \\(4 members\\)"),
        ({"base": {"zoo": "{base}", "member": 0}, "architecture": {**ARCH, "args": {**ARCH["args"], "hidden": [8]}}},
         "base member 0 of .* has another architecture"),
    ],
)
def test_bad_bases_are_one_line_and_write_nothing(base_zoo, tmp_path, capsys, change, match):
    import yaml

    spec = {**PRETRAINED, "pretrain": None, **change}
    where = {"tmp": tmp_path, "base": base_zoo}
    spec["base"] = {k: v.format(**where) if isinstance(v, str) else v for k, v in spec["base"].items()}
    (tmp_path / "spec.yaml").write_text(yaml.safe_dump(spec))
    assert main(["zoo", "build", str(tmp_path / "spec.yaml"), "--out", str(tmp_path / "out.zarr"), "-q"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and err.count("\n") == 1
    assert re.search(match, err), err
    assert not (tmp_path / "out.zarr").exists()


@pytest.mark.parametrize(
    "change,match",
    [
        ({"base": {"zoo": "z.zarr", "member": 0}}, "'base' both give the members' starting point"),
        ({"pretrain": None, "hparams": {"base.member": 1}}, "needs a 'base' zoo"),
        ({"pretrain": None, "base": {"zoo": "z.zarr"}}, "needs exactly one of base.member"),
        ({"pretrain": {"epochs": 1, "hparams": {"lr": [1, 2]}}}, "single values"),
        ({"pretrain": {"epochs": 1, "hparams": {"optimizer": "rmsprop"}}}, "unknown optimizer 'rmsprop'"),
    ],
)
def test_bad_fine_tuning_specs(change, match):
    with pytest.raises(SpecError, match=match):
        parse_spec({**PRETRAINED, **change})


def test_the_shipped_fine_tune_spec_builds(tmp_path):
    build_zoo("tiny-mnist1d-finetune", tmp_path / "ft.zarr")
    with open_zoo(tmp_path / "ft.zarr") as zoo:
        tasks = set(zip(zoo.column("task.classes").tolist(), zoo.column("task.label_perm").tolist()))
        assert len(zoo) == 8 and len(tasks) == 4
        assert torch.equal(zoo.params(epoch=0), zoo.base_params().expand(8, -1))
        assert zoo.summary()["base"].startswith("one base pretrained on mnist1d for 2 epochs")


def test_a_damaged_base_zoo_is_one_line(base_zoo, tmp_path, capsys):
    import shutil

    import yaml

    damaged = tmp_path / "damaged.zarr"
    shutil.copytree(base_zoo, damaged)
    chunk = next((damaged / "params" / "c").rglob("*"))
    while chunk.is_dir():
        chunk = next(chunk.iterdir())
    data = bytearray(chunk.read_bytes())
    data[40] ^= 0xFF  # one flipped byte: the chunk fails its checksum
    chunk.write_bytes(bytes(data))
    (tmp_path / "spec.yaml").write_text(yaml.safe_dump({**PRETRAINED, "pretrain": None,
                                                        "base": {"zoo": str(damaged), "member": 0}}))  # fmt: skip
    assert main(["zoo", "build", str(tmp_path / "spec.yaml"), "--out", str(tmp_path / "out.zarr"), "-q"]) == 2
    err = capsys.readouterr().err
    assert "cannot read 'params'" in err and "zoo verify" in err and err.count("\n") == 1
    assert not (tmp_path / "out.zarr").exists()
