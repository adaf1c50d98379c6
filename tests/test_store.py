"""ZooStore on both backends: round trips, indexing, refused input, integrity checks,
concurrent readers, pickling, and conversion/export between formats."""

from __future__ import annotations

import functools
import json
import os
import pickle
import re
import subprocess
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import h5py
import numpy as np
import pandas as pd
import pytest
import torch
from safetensors import safe_open
from safetensors.torch import load_file

from weightzoo._fs import lock_path
from weightzoo.errors import StoreError, WeightZooError
from weightzoo.zoo import archs, transfer
from weightzoo.zoo.opener import open_zoo
from weightzoo.zoo.store import ZooStore, zoostore
from weightzoo.zoo.transfer import convert_zoo, export_zoo

ARCH = archs.mlp(3, [5], 2)
LAYOUT = archs.describe(ARCH)[1]
EPOCHS = [0, 2, 4]
N = 7  # members, stored in chunks of CHUNK rows: 0..2, 3..5, 6
CHUNK = 3
OTHER = {".zarr": ".h5", ".h5": ".zarr"}


@dataclass
class Members:
    """What the tests write: params ``[N, E, P]``, hyperparameter and metric columns."""

    params: np.ndarray
    hparams: dict[str, np.ndarray]
    metrics: dict[str, np.ndarray]

    def take(self, rows: Any) -> tuple[np.ndarray, dict, dict]:
        """Arguments for ``ZooStore.append``/``write`` holding the members at ``rows``."""
        return (
            self.params[rows],
            {k: v[rows] for k, v in self.hparams.items()},
            {k: v[rows] for k, v in self.metrics.items()},
        )


def make_members(n: int = N, seed: int = 0) -> Members:
    """Random members with every column kind; one diverged run has a NaN metric."""
    rng = np.random.default_rng(seed)
    acc = rng.random((n, len(EPOCHS)), dtype=np.float32)
    acc[1, -1] = np.nan
    return Members(
        params=rng.standard_normal((n, len(EPOCHS), LAYOUT.size), dtype=np.float32),
        hparams={
            "lr": rng.random(n),
            "seed": np.arange(n),
            "optimizer": np.array(["adam", "sgd"] * n)[:n],
            "augment": np.zeros(n, dtype=bool),
        },  # only fill values, yet stored
        metrics={"test_acc": acc, "train_loss": rng.random((n, len(EPOCHS)), dtype=np.float32)},
    )


# ------------------------------------------------------------------------ fixtures


@pytest.fixture(scope="module", params=[".zarr", ".h5"], ids=["zarr", "h5"])
def suffix(request) -> str:
    return request.param


@pytest.fixture(scope="module")
def members() -> Members:
    return make_members()


def build_zoo(path: Path, members: Members) -> Path:
    """A closed zoo of ``N`` members, appended in two blocks."""
    with ZooStore.create(path, LAYOUT, architecture=ARCH, epochs=EPOCHS, chunk_members=CHUNK) as zoo:
        zoo.append(*members.take(slice(0, 4)))
        zoo.append(*members.take(slice(4, N)))
    return path


@pytest.fixture
def zoo_path(tmp_path: Path, suffix: str, members: Members) -> Path:
    """A fresh zoo that the test may change."""
    return build_zoo(tmp_path / f"zoo{suffix}", members)


@pytest.fixture(scope="module")
def zoo(tmp_path_factory, suffix: str, members: Members):
    """A zoo opened read-only, shared by the tests that only read."""
    path = build_zoo(tmp_path_factory.mktemp("shared") / f"zoo{suffix}", members)
    with open_zoo(path) as store:
        yield store


@pytest.fixture
def writer(zoo_path: Path):
    with ZooStore(zoo_path, "a") as store:
        yield store


def half_build(path: Path) -> None:
    """Reserve three more rows and write two of them without marking them done."""
    extra = make_members(2, seed=1)
    with ZooStore(path, "a") as zoo:
        zoo.reserve(N + 3)
        zoo.write([N + 1, N], *extra.take([1, 0]))


# ------------------------------------------------------------------------- helpers


def snapshot(path: Path) -> dict[str, Any]:
    """Everything stored at ``path``: attrs and every row of every array, as read raw."""
    with open_zoo(path) as zoo:
        arrays = {name: zoo.read_block(name, 0, zoo.capacity) for name in zoo.array_names()}
        return {"attrs": zoo.attrs, **arrays}


def assert_same(a: dict[str, Any], b: dict[str, Any]) -> None:
    """Bit-exact equality of two snapshots (NaNs included)."""
    assert a.keys() == b.keys()
    assert a["attrs"] == b["attrs"]
    for name in set(a) - {"attrs"}:
        x, y = a[name], b[name]
        assert x.dtype == y.dtype and x.shape == y.shape, name
        same = x.tolist() == y.tolist() if x.dtype == object else x.tobytes() == y.tobytes()
        assert same, name


def flip_byte(file: Path, offset: int) -> None:
    """Change one byte of ``file``; a one-byte change always breaks a fletcher32 or crc32c sum
    (flipping a whole zero word to 0xFFFF would fool fletcher32)."""
    with open(file, "r+b") as f:
        f.seek(offset)
        byte = f.read(1)[0]
        f.seek(offset)
        f.write(bytes([byte ^ 0x55]))


def params_chunk_file(path: Path, chunk: int) -> Path:
    """The file of one Zarr params chunk."""
    return path / "params" / "c" / str(chunk) / "0" / "0"


def corrupt_params_chunk(path: Path, chunk: int) -> None:
    """Change one byte of the first member's data in one params chunk on disk."""
    if path.suffix == ".zarr":
        flip_byte(params_chunk_file(path, chunk), 16)
        return
    with h5py.File(path, "r") as f:
        offset = f["params"].id.get_chunk_info_by_coord((chunk * CHUNK, 0, 0)).byte_offset
    flip_byte(path, offset + 16)


def position(epoch: int) -> int:
    """Where checkpoint ``epoch`` sits along the E axis (negative: counted from the end)."""
    return EPOCHS.index(epoch) if epoch >= 0 else epoch


def as_index(indices: Any) -> Any:
    """Numpy indexing that means the same as a ZooStore member selection."""
    return slice(None) if indices is None else indices


# ------------------------------------------------------------------- round trips


def test_reopen_read_only(zoo: ZooStore, members: Members):
    assert zoo.mode == "r" and len(zoo) == N and zoo.capacity == N
    assert zoo.epochs == EPOCHS and zoo.layout == LAYOUT and zoo.architecture == ARCH
    assert torch.equal(zoo.params(epoch=None), torch.from_numpy(members.params))
    assert zoo.hparam_names == sorted(members.hparams)
    for name, values in members.hparams.items():
        np.testing.assert_array_equal(zoo.column(name), values)
    for name, values in members.metrics.items():
        np.testing.assert_array_equal(zoo.metric(name, epoch=None), values)


@pytest.mark.parametrize(
    "indices",
    [None, 4, -1, [5, 0, 5, 2], [6, 1], np.array([3]), [], slice(1, 6, 2), slice(None, None, -1), slice(5, 2)],
    ids=["all", "int", "negative", "unsorted-dup", "gap", "array", "empty", "step", "reversed", "empty-slice"],
)
@pytest.mark.parametrize("epoch", [-1, 2, 0, -3, None])
def test_params_selection(zoo: ZooStore, members: Members, indices: Any, epoch: int | None):
    expected = members.params[as_index(indices)]
    if epoch is not None:
        expected = expected[..., position(epoch), :]
    got = zoo.params(indices, epoch)
    assert got.dtype == torch.float32 and got.is_contiguous()
    assert torch.equal(got, torch.from_numpy(np.ascontiguousarray(expected)))


@pytest.mark.parametrize("indices", [[5, 0, 5, 2], slice(1, 6, 2), None])
def test_columns_selection(zoo: ZooStore, members: Members, indices: Any):
    for name, values in members.hparams.items():
        np.testing.assert_array_equal(zoo.column(name, indices), values[as_index(indices)])
    expected = members.metrics["test_acc"][as_index(indices)]
    np.testing.assert_array_equal(zoo.metric("test_acc", indices, epoch=2), expected[..., 1])


@pytest.mark.parametrize("epoch", [-1, 0, 2])
def test_state_dict(zoo: ZooStore, members: Members, epoch: int):
    flat = members.params[:, position(epoch)]
    for i in [0, 3, N - 1]:
        state = zoo.state_dict(i, epoch)
        assert list(state) == LAYOUT.names
        for name, tensor in LAYOUT.unflatten(torch.from_numpy(flat[i])).items():
            assert torch.equal(state[name], tensor)


@pytest.mark.parametrize("epoch", [-1, 2])
def test_model_matches_loaded_module(zoo: ZooStore, epoch: int):
    x = torch.randn(4, 3, generator=torch.Generator().manual_seed(0))
    for i in [0, N - 1]:
        reference = archs.build_module(ARCH)
        reference.load_state_dict(zoo.state_dict(i, epoch))
        model = zoo.model(i, epoch)
        assert not model.training
        assert torch.equal(model(x), reference(x))


def test_model_uses_per_member_activation(tmp_path: Path, suffix: str):
    path = tmp_path / f"acts{suffix}"
    with ZooStore.create(path, LAYOUT, architecture=ARCH, arch_overrides=["activation"]) as zoo:
        zoo.append(torch.randn(2, LAYOUT.size), hparams={"activation": ["relu", "tanh"]})
        assert isinstance(zoo.model(0)[1], torch.nn.ReLU)
        assert isinstance(zoo.model(1)[1], torch.nn.Tanh)


def test_member_architectures_are_recorded_resolved(tmp_path: Path, suffix: str, monkeypatch: pytest.MonkeyPatch):
    """A zoo keeps each distinct member architecture as a layer list, so members rebuild the same
    even when the family that made them changes later."""
    path = tmp_path / f"acts{suffix}"
    acts = ["relu", "tanh", "relu"]
    with ZooStore.create(path, LAYOUT, architecture=ARCH, arch_overrides=["activation"]) as zoo:
        zoo.append(torch.randn(3, LAYOUT.size), hparams={"activation": acts})
        outputs = [zoo.model(i)(torch.ones(1, 3)) for i in range(3)]
    with open_zoo(path) as zoo:
        records = zoo.attrs["architectures"]
        assert [r["overrides"] for r in records] == [{"activation": "relu"}, {"activation": "tanh"}]
        assert records[1]["architecture"] == archs.with_overrides(ARCH, activation="tanh")
        assert zoo.attrs["format_version"] == 2
    original = archs.FAMILIES["mlp"]

    @functools.wraps(original)
    def changed(*args, **kwargs):  # a later weightzoo's mlp family: other hidden widths
        return original(*args, **{**kwargs, "hidden": [9]})

    monkeypatch.setitem(archs.FAMILIES, "mlp", changed)
    assert archs.with_overrides(ARCH, activation="tanh")["layers"][0]["out"] == 9  # today's family differs
    with open_zoo(path) as zoo:
        for i, act in enumerate(acts):
            model = zoo.model(i)
            assert model[0].out_features == 5 and type(model[1]).__name__ == {"relu": "ReLU", "tanh": "Tanh"}[act]
            assert torch.equal(model(torch.ones(1, 3)), outputs[i])


def test_format_1_zoos_still_open_and_rebuild_by_replay(tmp_path: Path, suffix: str):
    path = tmp_path / f"old{suffix}"
    with ZooStore.create(path, LAYOUT, architecture=ARCH, arch_overrides=["activation"]) as zoo:
        zoo.append(torch.randn(2, LAYOUT.size), hparams={"activation": ["tanh", "relu"]})
        attrs = {k: v for k, v in zoo.attrs.items() if k not in ("architectures", "numerics")}
        zoo.backend.set_attrs(attrs | {"format_version": 1})  # what weightzoo wrote before version 2
    with open_zoo(path) as zoo:
        assert zoo.attrs["format_version"] == 1 and "architectures" not in zoo.attrs
        assert isinstance(zoo.model(0)[1], torch.nn.Tanh) and isinstance(zoo.model(1)[1], torch.nn.ReLU)
        assert zoo.summary()["members_done"] == 2
    with open_zoo(path, "a") as zoo:  # appending to it records the architectures it adds
        zoo.append(torch.randn(1, LAYOUT.size), hparams={"activation": ["tanh"]})
        assert [r["overrides"] for r in zoo.attrs["architectures"]] == [{"activation": "tanh"}]


def test_a_store_opened_for_appending_holds_its_writer_lock(tmp_path: Path, suffix: str, members: Members):
    path = tmp_path / f"zoo{suffix}"
    script = (
        "import sys; from weightzoo.zoo.store import ZooStore\n"
        "from weightzoo.errors import StoreError\n"
        "try:\n    ZooStore(sys.argv[1], 'a')\nexcept StoreError as exc:\n    print(exc); sys.exit(2)\n"
    )
    with ZooStore.create(path, LAYOUT, epochs=EPOCHS):
        assert lock_path(path).read_text() == str(os.getpid())
        with open_zoo(path, "a") as again:  # the same process may open it again
            again.append(*members.take(slice(0, 2)))
        refused = subprocess.run([sys.executable, "-c", script, str(path)], capture_output=True, text=True)
        assert refused.returncode == 2 and f"(pid {os.getpid()}) is writing this store" in refused.stdout
        with open_zoo(path) as reader:  # readers need no lock
            assert len(reader) == 2
    assert not lock_path(path).exists()
    assert subprocess.run([sys.executable, "-c", script, str(path)]).returncode == 0


def test_chunk_presence_is_asked_through_the_zarr_store(tmp_path: Path, members: Members):
    """Arrays written with another chunk key encoding (``c.0.0.0``) are verified correctly."""
    import zarr

    path = tmp_path / "zoo.zarr"
    with ZooStore.create(path, LAYOUT, epochs=EPOCHS, chunk_members=CHUNK) as zoo:
        zoo.append(*members.take(slice(None)))
    group = zarr.open_group(str(path), mode="r+")
    values = group["params"][:]
    del group["params"]
    group.create_array(
        "params", shape=values.shape, chunks=(CHUNK, *values.shape[1:]), dtype="float32", fill_value=0.0,
        chunk_key_encoding={"name": "default", "separator": "."}, config={"write_empty_chunks": True},
    )[:] = values  # fmt: skip
    assert (path / "params" / "c.2.0.0").is_file()
    with open_zoo(path) as zoo:
        assert zoo.verify().ok and torch.equal(zoo.params(epoch=None), torch.from_numpy(values))
    (path / "params" / "c.2.0.0").unlink()
    with open_zoo(path) as zoo:
        report = zoo.verify()
    assert report.damaged_members == [6] and "chunk 2 of 'params' is missing" in report.problems[0]


@pytest.mark.parametrize("epoch", [-1, 0])
def test_table(zoo: ZooStore, members: Members, epoch: int):
    table = zoo.table(epoch)
    assert list(table.index) == list(range(N)) and table.index.name == "member"
    np.testing.assert_array_equal(table["row"], np.arange(N))
    for name, values in members.hparams.items():
        np.testing.assert_array_equal(table[name].to_numpy(), values)
    for name, values in members.metrics.items():
        np.testing.assert_array_equal(table[name].to_numpy(), values[:, position(epoch)])


def test_pickled_store_reads(zoo: ZooStore, members: Members):
    zoo.params([0])  # the original has an open handle, which must not travel
    copy = pickle.loads(pickle.dumps(zoo))
    assert len(copy) == N
    assert torch.equal(copy.params([6, 2]), torch.from_numpy(members.params[[6, 2], -1]))
    pd.testing.assert_frame_equal(copy.table(), zoo.table())
    copy.close()
    assert torch.equal(zoo.params(), copy.params())  # both still usable


# ------------------------------------------------------------------ refused input

READ_ONLY_WRITES = {
    "append": lambda z, m: z.append(*m.take(slice(0, 1))),
    "write": lambda z, m: z.write([0], m.params[:1]),
    "reserve": lambda z, m: z.reserve(N + 5),
    "mark_done": lambda z, m: z.mark_done([0]),
    "update_attrs": lambda z, m: z.update_attrs(source={"name": "x"}),
}


@pytest.mark.parametrize("op", list(READ_ONLY_WRITES))
def test_read_only_refuses_writes(zoo_path: Path, members: Members, op: str):
    before = snapshot(zoo_path)
    with open_zoo(zoo_path) as zoo, pytest.raises(StoreError, match="read-only"):
        READ_ONLY_WRITES[op](zoo, members)
    assert_same(before, snapshot(zoo_path))


def _append(params: Any, **columns: Any) -> Callable[[ZooStore, Members], Any]:
    """A call appending ``params`` (a function of the members) with the given columns."""
    return lambda z, m: z.append(params(m), **columns)


BAD_WRITES: dict[str, tuple[Callable[[ZooStore, Members], Any], str]] = {
    "params-shape": (_append(lambda m: m.params[:2, :, :-1]), "params"),
    "params-epochs": (_append(lambda m: m.params[:2, :2]), "params"),
    "params-text": (_append(lambda m: np.full((1, len(EPOCHS), LAYOUT.size), "x")), "params"),
    "hparam-length": (_append(lambda m: m.params[:2], hparams={"lr": [0.1]}), "'lr'"),
    "new-hparam-length": (_append(lambda m: m.params[:2], hparams={"width": [1, 2, 3]}), "'width'"),
    "string-into-int": (_append(lambda m: m.params[:1], hparams={"seed": ["oops"]}), "'seed'"),
    "string-into-float": (_append(lambda m: m.params[:1], hparams={"lr": ["oops"]}), "'lr'"),
    "number-into-string": (_append(lambda m: m.params[:1], hparams={"optimizer": [3]}), "'optimizer'"),
    "metric-shape": (_append(lambda m: m.params[:2], metrics={"test_acc": np.zeros((2, 2))}), "'test_acc'"),
    "metric-text": (_append(lambda m: m.params[:1], metrics={"test_acc": [["a"] * 3]}), "'test_acc'"),
    "column-name": (_append(lambda m: m.params[:1], hparams={"a/b": [1]}), "'a/b'"),
    "write-out-of-range": (lambda z, m: z.write([N], m.params[:1]), "reserve"),
    "write-repeated-row": (lambda z, m: z.write([2, 2], m.params[:2]), "repeat"),
}


@pytest.mark.parametrize("case", list(BAD_WRITES))
def test_bad_write_leaves_store_unchanged(writer: ZooStore, zoo_path: Path, members: Members, case: str):
    before = snapshot(zoo_path)
    call, field_name = BAD_WRITES[case]
    with pytest.raises(WeightZooError) as info:
        call(writer, members)
    message = str(info.value)
    assert str(zoo_path) in message and field_name in message and "\n" not in message
    assert writer.capacity == N and len(writer) == N
    writer.close()
    assert_same(before, snapshot(zoo_path))


BAD_READS: dict[str, Callable[[ZooStore], Any]] = {
    "unknown-epoch": lambda z: z.params(epoch=3),
    "epoch-too-old": lambda z: z.params(epoch=-4),
    "state-dict-epoch": lambda z: z.state_dict(0, epoch=1),
    "unknown-column": lambda z: z.column("width"),
    "unknown-metric": lambda z: z.metric("val_acc"),
}


@pytest.mark.parametrize("case", list(BAD_READS))
def test_bad_read_names_path(zoo: ZooStore, case: str):
    with pytest.raises(StoreError, match=re.escape(str(zoo.path))):
        BAD_READS[case](zoo)


def test_member_index_out_of_range(zoo: ZooStore):
    with pytest.raises(IndexError, match="7 members"):
        zoo.params([N])


def test_create_over_existing_refused(zoo_path: Path):
    before = snapshot(zoo_path)
    with pytest.raises(StoreError, match="already exists"):
        ZooStore.create(zoo_path, LAYOUT)
    assert_same(before, snapshot(zoo_path))


def _not_a_zoo(tmp_path: Path, suffix: str) -> Path:
    """A directory or file with the right suffix that is not a zoo."""
    path = tmp_path / f"notes{suffix}"
    if suffix == ".zarr":
        path.mkdir()
        (path / "readme.txt").write_text("hello")
    else:
        path.write_text("hello")
    return path


def _plain_container(tmp_path: Path, suffix: str) -> Path:
    """A valid Zarr group or HDF5 file without weightzoo attributes."""
    import zarr

    path = tmp_path / f"plain{suffix}"
    if suffix == ".zarr":
        zarr.open_group(str(path), mode="w")
    else:
        h5py.File(path, "w").close()
    return path


BAD_PATHS: dict[str, tuple[Callable[[Path, str], Path], str]] = {
    "missing": (lambda tmp, suffix: tmp / f"nothing{suffix}", "no such zoo"),
    "unknown-suffix": (lambda tmp, suffix: tmp / "zoo.npz", "unknown zoo suffix"),
    "not-a-zoo": (_not_a_zoo, "zoo"),
    "plain-container": (_plain_container, "not a weightzoo zoo"),
}


@pytest.mark.parametrize("case", list(BAD_PATHS))
def test_open_bad_path(tmp_path: Path, suffix: str, case: str):
    make, words = BAD_PATHS[case]
    path = make(tmp_path, suffix)
    with pytest.raises(StoreError, match=words) as info:
        open_zoo(path)
    assert str(path) in str(info.value) and "\n" not in str(info.value)


# ------------------------------------------------------------------------ verify


def test_verify_clean(zoo: ZooStore):
    report = zoo.verify()
    assert report.ok and report.checked_chunks > 0 and report.damaged_members == []


def test_verify_clean_on_new_and_half_built(tmp_path: Path, zoo_path: Path, suffix: str):
    empty = tmp_path / f"empty{suffix}"
    with ZooStore.create(empty, LAYOUT, capacity=5, chunk_members=CHUNK) as zoo:
        assert zoo.verify().ok
    half_build(zoo_path)
    with open_zoo(zoo_path) as zoo:
        assert len(zoo) == N and zoo.verify().ok


@pytest.mark.parametrize(
    "state,chunk,damaged", [("complete", 1, [3, 4, 5]), ("complete", 2, [6]), ("half-built", 2, [6])]
)
def test_verify_reports_corrupted_chunk(zoo_path: Path, state: str, chunk: int, damaged: list[int]):
    if state == "half-built":
        half_build(zoo_path)  # rows 7 and 8 share chunk 2 with member 6 but are not done
    corrupt_params_chunk(zoo_path, chunk)
    with open_zoo(zoo_path) as zoo:
        report = zoo.verify()
    assert not report.ok
    assert report.damaged_members == damaged and report.damaged_rows == damaged
    assert len(report.problems) == 1 and f"params rows {chunk * CHUNK}.." in report.problems[0]


def test_verify_reports_deleted_zarr_chunk(tmp_path: Path, members: Members):
    path = tmp_path / "zoo.zarr"
    with ZooStore.create(path, LAYOUT, epochs=EPOCHS, chunk_members=CHUNK) as zoo:
        zoo.append(*members.take(slice(None)))
    params_chunk_file(path, 2).unlink()
    with open_zoo(path) as zoo:
        report = zoo.verify()
    assert report.damaged_members == [6] and "missing" in report.problems[0]


# ------------------------------------------------------- concurrent reader (Zarr)


def test_reader_sees_only_done_members(tmp_path: Path, members: Members):
    path = tmp_path / "zoo.zarr"
    with ZooStore.create(path, LAYOUT, epochs=EPOCHS, chunk_members=CHUNK) as zoo:
        zoo.append(*members.take(slice(0, 4)))
    with open_zoo(path) as reader, ZooStore(path, "a") as writer:
        writer.reserve(N)
        writer.write(range(4, N), *members.take(slice(4, N)))
        reader.refresh()
        assert len(reader) == 4 and reader.capacity == N
        assert torch.equal(reader.params(epoch=None), torch.from_numpy(members.params[:4]))
        writer.mark_done(range(4, N))
        assert len(reader) == 4  # until it refreshes
        reader.refresh()
        assert len(reader) == N
        assert torch.equal(reader.params(epoch=None), torch.from_numpy(members.params))
        np.testing.assert_array_equal(reader.column("optimizer"), members.hparams["optimizer"])


# ------------------------------------------------------------ convert and export


@pytest.mark.parametrize("state", ["complete", "half-built"])
def test_convert_round_trip(tmp_path: Path, zoo_path: Path, suffix: str, state: str):
    if state == "half-built":
        half_build(zoo_path)
    there = convert_zoo(zoo_path, tmp_path / f"there{OTHER[suffix]}")
    back = convert_zoo(there, tmp_path / f"back{suffix}")
    original = snapshot(zoo_path)
    assert_same(original, snapshot(there))
    assert_same(original, snapshot(back))
    with open_zoo(back) as zoo:
        assert zoo.verify().ok and len(zoo) == N
        assert zoo.chunk_members == CHUNK


def test_convert_and_export_in_one_chunk_blocks(
    tmp_path: Path, zoo_path: Path, suffix: str, monkeypatch: pytest.MonkeyPatch
):
    monkeypatch.setattr(zoostore, "CHUNK_BYTES", 1)  # every converted block is one chunk
    monkeypatch.setattr(transfer, "CHUNK_BYTES", 1)  # every exported block is one member
    half_build(zoo_path)
    there = convert_zoo(zoo_path, tmp_path / f"there{OTHER[suffix]}", progress=True)
    assert_same(snapshot(zoo_path), snapshot(there))
    out = export_zoo(there, tmp_path / "export", progress=True)
    with open_zoo(zoo_path) as zoo:
        for i in range(N):
            state = load_file(out / f"member_{i:06d}.safetensors")
            assert all(torch.equal(state[k], v) for k, v in zoo.state_dict(i).items())


def test_convert_same_backend(tmp_path: Path, zoo_path: Path, suffix: str):
    copy = convert_zoo(zoo_path, tmp_path / f"copy{suffix}")
    assert_same(snapshot(zoo_path), snapshot(copy))


def test_convert_overwrite(tmp_path: Path, zoo_path: Path, suffix: str):
    target = tmp_path / f"target{OTHER[suffix]}"
    with ZooStore.create(target, LAYOUT, epochs=EPOCHS) as other:
        other.append(make_members(2, seed=3).params)
    convert_zoo(zoo_path, target, overwrite=True)
    assert_same(snapshot(zoo_path), snapshot(target))


CONVERT_ERRORS: dict[str, tuple[Callable[[Path, Path, str], tuple[Path, Path]], str]] = {
    "missing-src": (lambda tmp, src, s: (tmp / f"nothing{s}", tmp / f"out{OTHER[s]}"), "no such zoo"),
    "unknown-dst-suffix": (lambda tmp, src, s: (src, tmp / "out.npz"), "unknown zoo suffix"),
    "dst-exists": (lambda tmp, src, s: (src, src), "already exists"),
}


@pytest.mark.parametrize("case", list(CONVERT_ERRORS))
def test_convert_refuses_bad_input(tmp_path: Path, zoo_path: Path, suffix: str, case: str):
    make, words = CONVERT_ERRORS[case]
    src, dst = make(tmp_path, zoo_path, suffix)
    before = sorted(p.name for p in tmp_path.iterdir())
    with pytest.raises(StoreError, match=words) as info:
        convert_zoo(src, dst)
    assert "\n" not in str(info.value)
    assert sorted(p.name for p in tmp_path.iterdir()) == before


def test_convert_damaged_source_leaves_dst(tmp_path: Path, zoo_path: Path, suffix: str):
    target = tmp_path / f"target{OTHER[suffix]}"
    convert_zoo(zoo_path, target)
    before = snapshot(target)
    corrupt_params_chunk(zoo_path, 1)
    with pytest.raises(StoreError, match="cannot read 'params'.*zoo verify"):
        convert_zoo(zoo_path, target, overwrite=True)
    assert_same(before, snapshot(target))
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted([zoo_path.name, target.name])


@pytest.mark.parametrize("epoch", [-1, 2])
def test_export(tmp_path: Path, zoo: ZooStore, epoch: int):
    out = export_zoo(zoo.path, tmp_path / "export", epoch=epoch)
    files = sorted(out.glob("member_*.safetensors"))
    assert [f.name for f in files] == [f"member_{i:06d}.safetensors" for i in range(N)]
    for i, file in enumerate(files):
        state = load_file(file)
        expected = zoo.state_dict(i, epoch)
        assert state.keys() == expected.keys()
        assert all(torch.equal(state[k], expected[k]) for k in state)
        with safe_open(file, "pt") as f:
            meta = f.metadata()
        assert meta["member"] == str(i) and meta["epoch"] == str(EPOCHS[position(epoch)])
    table = pd.read_csv(out / "members.csv", index_col="member")
    pd.testing.assert_frame_equal(table, zoo.table(epoch), check_dtype=False, check_index_type=False)
    info = json.loads((out / "zoo.json").read_text())
    assert info["layout"] == LAYOUT.to_dict() and info["epochs"] == EPOCHS
    assert info["architecture"] == ARCH and info["permutation_spec"] == zoo.perm_spec.to_dict()


def test_export_only_done_members(tmp_path: Path, zoo_path: Path):
    half_build(zoo_path)
    out = export_zoo(zoo_path, tmp_path / "export")
    assert len(list(out.glob("member_*.safetensors"))) == N


def test_export_refuses_non_empty_dir(tmp_path: Path, zoo_path: Path):
    out = tmp_path / "export"
    out.mkdir()
    (out / "keep.txt").write_text("mine")
    with pytest.raises(StoreError, match="not empty"):
        export_zoo(zoo_path, out)
    assert [p.name for p in out.iterdir()] == ["keep.txt"]


def test_export_overwrite_replaces_earlier_export(tmp_path: Path, zoo_path: Path):
    out = tmp_path / "export"
    out.mkdir()
    (out / "member_000099.safetensors").write_bytes(b"stale")
    export_zoo(zoo_path, out, overwrite=True)
    assert len(list(out.glob("member_*.safetensors"))) == N
    assert not (out / "member_000099.safetensors").exists()
    assert not any(p.name.startswith(".") for p in tmp_path.iterdir())


def test_export_bad_epoch_writes_nothing(tmp_path: Path, zoo_path: Path):
    with pytest.raises(StoreError, match="no checkpoint at epoch 3"):
        export_zoo(zoo_path, tmp_path / "export", epoch=3)
    assert not (tmp_path / "export").exists()
