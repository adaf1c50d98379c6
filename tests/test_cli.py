"""The weightzoo command: outputs, exit codes and one-line errors."""

import json
import subprocess
import sys

import pytest
import torch
from conftest import make_zoo

from weightzoo import open_zoo
from weightzoo.cli import main
from weightzoo.zoo import archs


def run(capsys, *argv):
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


@pytest.fixture
def zoo_path(tmp_path, suffix):
    path = tmp_path / f"zoo{suffix}"
    make_zoo(path)
    return path


def test_info_text_and_json(zoo_path, capsys):
    code, out, _ = run(capsys, "zoo", "info", str(zoo_path))
    assert code == 0
    assert "40 done / 40 total" in out and "epochs [0, 3]" in out and "test_acc" in out
    code, out, _ = run(capsys, "zoo", "info", str(zoo_path), "--json")
    info = json.loads(out)
    assert info["members_done"] == 40 and info["params_per_member"] == open_zoo(zoo_path).layout.size


def test_verify_clean_then_damaged(tmp_path, capsys):
    path = tmp_path / "zoo.zarr"
    make_zoo(path, chunk_members=8)
    code, out, _ = run(capsys, "zoo", "verify", str(path))
    assert code == 0 and "ok" in out
    chunk = path / "params" / "c" / "1" / "0" / "0"
    data = bytearray(chunk.read_bytes())
    data[10] ^= 0xFF
    chunk.write_bytes(bytes(data))
    code, out, err = run(capsys, "zoo", "verify", str(path))
    assert code == 1
    assert "8 damaged members: [8, 9, 10, 11, 12, 13, 14, 15]" in out
    # reading the damaged chunk elsewhere is a one-line error pointing at verify
    code, _, err = run(capsys, "zoo", "export", str(path), str(tmp_path / "exported"))
    assert code == 2 and "zoo verify" in err and err.count("\n") == 1
    assert not (tmp_path / "exported").exists()


def test_convert_and_export(zoo_path, tmp_path, capsys):
    other = tmp_path / ("copy.h5" if zoo_path.suffix == ".zarr" else "copy.zarr")
    code, _, _ = run(capsys, "zoo", "convert", str(zoo_path), str(other))
    assert code == 0
    assert torch.equal(open_zoo(other).params(epoch=None), open_zoo(zoo_path).params(epoch=None))
    code, _, _ = run(capsys, "zoo", "export", str(zoo_path), str(tmp_path / "exported"))
    assert code == 0
    assert len(list((tmp_path / "exported").glob("*.safetensors"))) == 40


def test_import_state_dicts_through_cli(tmp_path, capsys):
    src = tmp_path / "sds"
    src.mkdir()
    arch = archs.mlp(3, [4], 2)
    for i in range(3):
        torch.manual_seed(i)
        torch.save(archs.build_module(arch).state_dict(), src / f"m{i}.pt")
    code, out, _ = run(capsys, "zoo", "import", "--format", "state-dicts", str(src), str(tmp_path / "z.zarr"))
    assert code == 0 and "imported 3 members" in out
    assert len(open_zoo(tmp_path / "z.zarr")) == 3


@pytest.mark.parametrize(
    "argv,needle",
    [
        (["zoo", "info", "{tmp}/missing.zarr"], "no such zoo"),
        (["zoo", "info", "{tmp}/plain"], "unknown zoo suffix"),
        (["zoo", "info", "{tmp}/empty.zarr"], "not a"),
        (["zoo", "import", "--format", "tarball", "{tmp}", "{tmp}/o.zarr"], "tarball"),
    ],
)
def test_bad_input_is_one_line_exit_2(tmp_path, capsys, argv, needle):
    (tmp_path / "plain").mkdir()
    (tmp_path / "empty.zarr").mkdir()
    code, out, err = run(capsys, *[a.format(tmp=tmp_path) for a in argv])
    assert code == 2
    assert err.startswith("error: ") and needle in err and err.count("\n") == 1
    assert "Traceback" not in err


def test_python_dash_m_entry_point(zoo_path):
    proc = subprocess.run(
        [sys.executable, "-m", "weightzoo", "zoo", "info", str(zoo_path / "nope")], capture_output=True, text=True
    )
    assert proc.returncode == 2 and proc.stderr.startswith("error: ") and "Traceback" not in proc.stderr


def test_demo_runs_a_real_job(tmp_path, capsys):
    code, out, _ = run(capsys, "demo", "--out", str(tmp_path / "demo"), "--members", "8", "--quiet")
    assert code == 0
    assert "8 done / 8 total" in out and "verify: ok" in out and "bit-exact" in out
    zoo = open_zoo(tmp_path / "demo" / "mnist1d-mlp-8.zarr")
    table = zoo.table()
    assert len(table) == 8 and table["test_acc"].max() > 0.2  # members really trained (chance is 0.1)
    diff = float(out.split("changes its outputs by ")[1].split()[0])
    assert diff < 1e-4
    code, out, _ = run(capsys, "demo", "--out", str(tmp_path / "demo"), "--members", "8", "--quiet")
    assert code == 0 and "build: 0 members trained" in out and "8 already done" in out


# --------------------------------------------------------------------------- outputs that cannot be written

WRITERS = {
    "zoo build": ["zoo", "build", "tiny-mnist1d-mlp", "--out", "{out}.zarr", "-q"],
    "zoo import": ["zoo", "import", "--format", "state-dicts", "{state_dicts}", "{out}.zarr", "-q"],
    "zoo convert": ["zoo", "convert", "{zoo}", "{out}.h5", "-q"],
    "zoo export": ["zoo", "export", "{zoo}", "{out}", "-q"],
    "zoo pull": ["zoo", "pull", "lab/zoo", "--out", "{out}", "-q"],
    "metanet train": ["metanet", "train", "--zoo", "{zoo}", "--task", "predict:lr", "--model", "mlp", "--out", "{out}"],
    "metanet import": ["metanet", "import", "{run}", "--zoo", "{zoo}", "--out", "{out}.csv"],
    "demo": ["demo", "--out", "{out}", "--members", "2", "-q"],
}


@pytest.fixture(scope="module")
def sources(tmp_path_factory):
    """What the writing commands read: a zoo, a folder of state dicts and a trained metanet run."""
    from weightzoo.metanet.train import TrainOptions, train_metanet

    root = tmp_path_factory.mktemp("sources")
    make_zoo(root / "zoo.zarr")
    (root / "sds").mkdir()
    torch.save(archs.build_module(archs.mlp(3, [4], 2)).state_dict(), root / "sds" / "m.pt")
    train_metanet(root / "zoo.zarr", "predict:lr", "mlp", root / "run", options=TrainOptions(epochs=1))
    return {"zoo": root / "zoo.zarr", "state_dicts": root / "sds", "run": root / "run"}


@pytest.mark.parametrize("where", ["virtual-fs", "file-as-folder"])
@pytest.mark.parametrize("command", list(WRITERS))
def test_an_unwritable_output_is_one_line(tmp_path, capsys, sources, command, where):
    (tmp_path / "a-file").write_text("not a folder")
    out = "/proc/weightzoo-out/o" if where == "virtual-fs" else str(tmp_path / "a-file" / "o")
    argv = [a.format(out=out, **{k: str(v) for k, v in sources.items()}) for a in WRITERS[command]]
    code, _, err = run(capsys, *argv)
    assert code == 2 and err.startswith(f"error: {out}") and err.count("\n") == 1, err
    reason = "No such file or directory" if where == "virtual-fs" else "a file stands where a folder must be"
    assert "cannot write here" in err and reason in err
    assert (tmp_path / "a-file").read_text() == "not a folder"
