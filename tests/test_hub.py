"""Zoos and metanets on the Hub, end to end through the CLI against a local Hub-compatible server
(``tests/hub_server.py``) with the real huggingface_hub client."""

import hashlib
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from conftest import make_zoo

import weightzoo
from weightzoo.cli import main
from weightzoo.zoo.hub import manifest as hub_manifest
from weightzoo.zoo.hub import push as hub_push
from weightzoo.zoo.opener import open_zoo
from weightzoo.zoo.store import ZooStore

REPO = "lab/zoo"


def cli(capsys, *argv):
    code = main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return code, out, err


def tree_digest(path: Path) -> dict[str, str]:
    """sha256 of every file of a store (a directory or one file), by relative path."""
    files = [path] if path.is_file() else sorted(p for p in path.rglob("*") if p.is_file())
    return {str(p.relative_to(path.parent)): hashlib.sha256(p.read_bytes()).hexdigest() for p in files}


def assert_same_zoo(a: Path, b: Path) -> None:
    with open_zoo(a) as x, open_zoo(b) as y:
        assert len(x) == len(y)
        np.testing.assert_array_equal(x.params(epoch=None), y.params(epoch=None))
        for name in x.hparam_names:
            np.testing.assert_array_equal(x.column(name), y.column(name))
        for name in x.metric_names:
            np.testing.assert_array_equal(x.metric(name, epoch=None), y.metric(name, epoch=None))
        assert y.verify().ok


def store_uploads(hub, name: str) -> list[str]:
    return [p for p in hub.uploaded if p.split("/")[0] == name]


@pytest.mark.parametrize("suffix", [".zarr", ".h5"], ids=["zarr", "hdf5"])
def test_push_then_pull_is_bit_exact_with_a_card_and_a_manifest(fake_hub, tmp_path, capsys, suffix):
    src = tmp_path / f"zoo{suffix}"
    make_zoo(src, members=40)
    code, out, err = cli(capsys, "zoo", "push", src, REPO)
    assert code == 0, err
    assert "pushed" in out

    code, out, err = cli(capsys, "zoo", "pull", REPO, "--out", tmp_path / "pulled")
    assert code == 0, err
    pulled = tmp_path / "pulled" / src.name
    assert tree_digest(pulled) == tree_digest(src)  # every file byte for byte
    assert_same_zoo(src, pulled)
    assert sorted(os.listdir(tmp_path / "pulled")) == [src.name]  # no staging folder left behind

    card = fake_hub.blob_path("dataset", REPO, "README.md").read_text()
    meta = yaml.safe_load(card.split("---")[1])
    assert {"weight-space-learning", "model-zoo"} <= set(meta["tags"])
    assert meta["size_categories"] == ["n<1K"] and meta["license"] and meta["pretty_name"]
    assert "40 trained networks" in card and "| `0.weight` | [6, 4] | weight | 0 |" in card
    assert f'open_zoo("hf://datasets/{REPO}")' in card and "test_acc" in card
    assert "## Architecture" in card and "| 0 | linear | in=4, out=6, bias=True |" in card
    manifest = json.loads(fake_hub.blob_path("dataset", REPO, "weightzoo.json").read_text())
    assert manifest["store"] == src.name and set(manifest["files"]) == set(tree_digest(src))


def test_open_zoo_reads_an_hf_url_from_the_cache(fake_hub, tmp_path, capsys):
    src = tmp_path / "zoo.zarr"
    make_zoo(src)
    weightzoo.push_zoo(src, REPO)
    with weightzoo.open_zoo(f"hf://datasets/{REPO}") as zoo:
        assert Path(os.environ["HF_HUB_CACHE"]) in zoo.path.parents
        np.testing.assert_array_equal(zoo.params(), open_zoo(src).params())
    code, out, _ = cli(capsys, "zoo", "info", f"hf://datasets/{REPO}")
    assert code == 0 and "40 done" in out
    code, out, _ = cli(capsys, "zoo", "verify", f"hf://datasets/{REPO}")
    assert code == 0 and "ok" in out
    assert cli(capsys, "zoo", "convert", f"hf://datasets/{REPO}", tmp_path / "copy.h5")[0] == 0
    assert_same_zoo(src, tmp_path / "copy.h5")
    code, out, err = cli(capsys, "metanet", "train", "--zoo", f"hf://datasets/{REPO}", "--task", "predict:lr",
                         "--model", "statnn", "--epochs", "1", "--out", tmp_path / "run", "--quiet")  # fmt: skip
    assert code == 0 and "kendall_tau" in out, err
    with pytest.raises(weightzoo.StoreError, match="read-only"):
        weightzoo.open_zoo(f"hf://datasets/{REPO}", mode="a")
    with pytest.raises(weightzoo.HubError, match="dataset repos"):
        weightzoo.open_zoo(f"hf://{REPO}")


def test_second_push_of_an_unchanged_zoo_makes_no_commit(fake_hub, tmp_path, capsys):
    src = tmp_path / "zoo.zarr"
    make_zoo(src)
    assert cli(capsys, "zoo", "push", src, REPO)[0] == 0
    commits = fake_hub.commits("dataset", REPO)
    sent = len(fake_hub.uploaded)
    code, out, _ = cli(capsys, "zoo", "push", src, REPO)
    assert code == 0 and "up to date" in out
    assert fake_hub.commits("dataset", REPO) == commits and len(fake_hub.uploaded) == sent


def test_interrupted_push_resumes_with_only_the_missing_files(fake_hub, tmp_path, capsys, monkeypatch):
    monkeypatch.setattr(hub_push, "COMMIT_MAX_FILES", 4)  # several commits for a small zoo
    src = tmp_path / "zoo.zarr"
    make_zoo(src, members=40, chunk_members=4)
    total = len(ZooStore(src).files())
    fake_hub.drop_next_commits(count=1, after_files=2)  # two commits land, the third is cut off
    code, _, err = cli(capsys, "zoo", "push", src, REPO)
    assert code == 2 and err.startswith("error: push lab/zoo") and "run the same command again" in err
    assert len(err.strip().splitlines()) == 1
    landed = set(store_uploads(fake_hub, src.name))
    assert 0 < len(landed) < total

    fake_hub.uploaded.clear()
    assert cli(capsys, "zoo", "push", src, REPO)[0] == 0
    resent = store_uploads(fake_hub, src.name)
    assert len(resent) == total - len(landed) and not landed & set(resent)
    weightzoo.pull_zoo(REPO, out=tmp_path / "pulled")
    assert tree_digest(tmp_path / "pulled" / src.name) == tree_digest(src)


def test_a_zoo_with_a_crowded_folder_is_pushed_sharded(fake_hub, tmp_path, monkeypatch):
    monkeypatch.setattr(hub_push, "MAX_FILES_PER_FOLDER", 3)
    src = tmp_path / "zoo.zarr"
    make_zoo(src, members=40, chunk_members=2)  # 20 params chunks in one folder
    assert len(os.listdir(src / "params" / "c")) == 20
    weightzoo.push_zoo(src, REPO)
    chunks = {p.split("/")[3] for p in fake_hub.uploaded if p.startswith("zoo.zarr/params/c/")}
    assert 1 < len(chunks) <= 3
    pulled = weightzoo.pull_zoo(REPO, out=tmp_path / "pulled")
    assert_same_zoo(src, pulled)


def test_push_to_a_branch_and_pull_that_revision(fake_hub, tmp_path, capsys):
    src = tmp_path / "zoo.h5"
    make_zoo(src)
    assert cli(capsys, "zoo", "push", src, REPO, "--revision", "v1", "--message", "first zoo")[0] == 0
    code, _, err = cli(capsys, "zoo", "pull", REPO, "--out", tmp_path / "main")
    assert code == 2 and "not a weightzoo zoo" in err  # main has only the repo's initial commit
    assert cli(capsys, "zoo", "pull", REPO, "--revision", "v1", "--out", tmp_path / "v1")[0] == 0
    assert_same_zoo(src, tmp_path / "v1" / "zoo.h5")
    code, _, err = cli(capsys, "zoo", "pull", REPO, "--revision", "nope", "--out", tmp_path / "x")
    assert code == 2 and "revision 'nope' not found" in err
    assert not (tmp_path / "x" / "zoo.h5").exists()


def test_token_errors_are_one_line(fake_hub, tmp_path, capsys, monkeypatch):
    src = tmp_path / "zoo.zarr"
    make_zoo(src)
    monkeypatch.setenv("HF_TOKEN", "hf_wrong")
    code, _, err = cli(capsys, "zoo", "push", src, REPO)
    assert code == 2 and "rejected the token (401)" in err and "HF_TOKEN" in err
    assert len(err.strip().splitlines()) == 1
    monkeypatch.delenv("HF_TOKEN")
    code, _, err = cli(capsys, "zoo", "push", src, REPO)
    assert code == 2 and "no Hugging Face token" in err
    from huggingface_hub import constants

    token_file = Path(constants.HF_TOKEN_PATH)
    token_file.parent.mkdir(parents=True, exist_ok=True)
    token_file.write_text(fake_hub.token)  # where `hf auth login` stores it
    assert cli(capsys, "zoo", "push", src, REPO)[0] == 0


def test_pull_refuses_missing_repos_and_repos_that_are_not_zoos(fake_hub, tmp_path, capsys):
    from huggingface_hub import HfApi

    code, _, err = cli(capsys, "zoo", "pull", "lab/missing", "--out", tmp_path / "out")
    assert code == 2 and "repository not found" in err
    api = HfApi()
    api.create_repo("lab/notes", repo_type="dataset")
    (tmp_path / "notes.txt").write_text("hello")
    api.upload_file(path_or_fileobj=tmp_path / "notes.txt", path_in_repo="notes.txt", repo_id="lab/notes",
                    repo_type="dataset")  # fmt: skip
    code, _, err = cli(capsys, "zoo", "pull", "lab/notes", "--out", tmp_path / "out")
    assert code == 2 and "not a weightzoo zoo" in err
    assert os.listdir(tmp_path / "out") == []


def test_a_download_that_fails_its_checksum_leaves_nothing(fake_hub, tmp_path, capsys):
    src = tmp_path / "zoo.zarr"
    make_zoo(src)
    weightzoo.push_zoo(src, REPO)
    blob = fake_hub.blob_path("dataset", REPO, "zoo.zarr/params/c/0/0/0")
    data = bytearray(blob.read_bytes())
    data[100] ^= 0xFF
    blob.write_bytes(bytes(data))
    code, _, err = cli(capsys, "zoo", "pull", REPO, "--out", tmp_path / "out")
    assert code == 2 and "zoo.zarr/params/c/0/0/0 fails its checksum" in err
    assert os.listdir(tmp_path / "out") == []


@pytest.mark.parametrize(
    "status, message", [(503, "answered 503"), (403, "refused access with this token (403)"), (400, "answered 400")]
)
def test_server_errors_are_one_line(fake_hub, tmp_path, capsys, status, message):
    src = tmp_path / "zoo.zarr"
    make_zoo(src)
    fake_hub.fail("POST", r"/commit/", status, times=20)
    code, _, err = cli(capsys, "zoo", "push", src, REPO)
    assert code == 2 and message in err and len(err.strip().splitlines()) == 1
    assert not store_uploads(fake_hub, src.name)


def test_offline_mode_uses_the_cache_and_explains_what_is_missing(fake_hub, tmp_path):
    src = tmp_path / "zoo.zarr"
    make_zoo(src)
    weightzoo.push_zoo(src, REPO)
    weightzoo.pull_zoo(REPO)  # now in the cache
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}  # read by huggingface_hub at import, as for a user

    def offline(*argv):
        return subprocess.run([sys.executable, "-m", "weightzoo", *argv], env=env, capture_output=True, text=True)

    done = offline("zoo", "info", f"hf://datasets/{REPO}")
    assert done.returncode == 0, done.stderr
    assert "40 done" in done.stdout
    done = offline("zoo", "pull", "lab/other")
    assert done.returncode == 2 and "HF_HUB_OFFLINE=1" in done.stderr and "not in the Hugging Face cache" in done.stderr


def test_metanet_push_then_import_gives_the_same_predictions(fake_hub, tmp_path, capsys):
    import pandas as pd

    from weightzoo.metanet import MetanetRun, TrainOptions, load_run, train_metanet

    zoo = tmp_path / "zoo.zarr"
    make_zoo(zoo, members=40)
    train_metanet(zoo, "predict:lr", "mlp", tmp_path / "run", options=TrainOptions(epochs=2, batch_size=8))
    expected = load_run(tmp_path / "run").predict(zoo, split="all")

    code, out, err = cli(capsys, "metanet", "push", tmp_path / "run", "lab/net")
    assert code == 0 and "pushed" in out, err
    card = fake_hub.blob_path("model", "lab/net", "README.md").read_text()
    assert "library_name: weightzoo" in card and "weight-space-learning" in card
    assert "kendall_tau" in card and 'MetanetRun.from_pretrained("lab/net")' in card and "`zoo`" in card
    config = json.loads(fake_hub.blob_path("model", "lab/net", "config.json").read_text())
    assert config["input"]["layout"] and config["task"]["column"] == "lr" and config["zoo"]["architecture"]

    code, out, err = cli(capsys, "metanet", "import", "lab/net", "--zoo", zoo, "--out", tmp_path / "pred.csv")
    assert code == 0, err
    table = pd.read_csv(tmp_path / "pred.csv")
    assert list(table.columns) == ["member", "prediction", "lr"] and len(table) == 40
    np.testing.assert_allclose(table["prediction"], expected, rtol=1e-6)
    np.testing.assert_allclose(table["lr"], open_zoo(zoo).column("lr"), rtol=1e-12)

    run = MetanetRun.from_pretrained("lab/net")
    np.testing.assert_array_equal(run.predict(zoo, split="all"), expected)
    run.save_pretrained(tmp_path / "copy")
    assert sorted(os.listdir(tmp_path / "copy")) == ["README.md", "config.json", "model.safetensors"]
    np.testing.assert_array_equal(MetanetRun.from_pretrained(tmp_path / "copy").predict(zoo, split="all"), expected)

    code, out, _ = cli(capsys, "metanet", "push", tmp_path / "run", "lab/net")
    assert code == 0 and "up to date" in out
    assert cli(capsys, "metanet", "push", tmp_path / "run", "lab/net", "--revision", "v2")[0] == 0
    code, _, err = cli(capsys, "metanet", "import", "lab/net", "--revision", "v2", "--zoo", zoo,
                       "--out", tmp_path / "v2.csv")  # fmt: skip
    assert code == 0, err
    np.testing.assert_allclose(pd.read_csv(tmp_path / "v2.csv")["prediction"], expected, rtol=1e-6)


def test_metanet_import_bad_input(fake_hub, tmp_path, capsys):
    zoo = tmp_path / "zoo.zarr"
    make_zoo(zoo)
    code, _, err = cli(capsys, "metanet", "import", "lab/none", "--zoo", zoo, "--out", tmp_path / "p.csv")
    assert code == 2 and "repository not found" in err
    code, _, err = cli(capsys, "metanet", "import", "lab/none", "--zoo", zoo, "--out", tmp_path / "p.txt")
    assert code == 2 and "CSV" in err
    code, _, err = cli(capsys, "metanet", "push", tmp_path / "no-run", "lab/net")
    assert code == 2 and "missing" in err


def test_a_private_zoo_needs_the_token_to_pull(fake_hub, tmp_path, capsys, monkeypatch):
    src = tmp_path / "zoo.zarr"
    make_zoo(src)
    assert cli(capsys, "zoo", "push", src, REPO, "--private")[0] == 0
    monkeypatch.delenv("HF_TOKEN")
    code, _, err = cli(capsys, "zoo", "pull", REPO, "--out", tmp_path / "anon")
    assert code == 2 and "repository not found" in err and "HF_TOKEN" in err
    monkeypatch.setenv("HF_TOKEN", fake_hub.token)
    assert cli(capsys, "zoo", "pull", REPO, "--out", tmp_path / "mine")[0] == 0
    assert tree_digest(tmp_path / "mine" / src.name) == tree_digest(src)


def test_a_cached_zoo_is_hashed_once_and_a_changed_size_is_caught(fake_hub, tmp_path, monkeypatch):
    src = tmp_path / "zoo.zarr"
    make_zoo(src)
    weightzoo.push_zoo(src, REPO)
    store = weightzoo.pull_zoo(REPO)
    calls = []
    real = hub_manifest.digest
    monkeypatch.setattr(hub_manifest, "digest", lambda path: calls.append(path) or real(path))
    assert weightzoo.pull_zoo(REPO) == store and calls == []  # the verified snapshot is reused as is
    blob = (store / "params" / "c" / "0" / "0" / "0").resolve()  # the cache's blob behind the symlink
    blob.write_bytes(blob.read_bytes() + b"x")
    with pytest.raises(weightzoo.HubError, match="fails its checksum"):
        weightzoo.pull_zoo(REPO)


def test_a_zoo_on_the_hub_is_a_base_to_fine_tune_from(fake_hub, tmp_path):
    from weightzoo.zoo.build import build_zoo

    base = tmp_path / "base.zarr"
    build_zoo("tiny-mnist1d-mlp", base, members=2)
    weightzoo.push_zoo(base, REPO)
    spec = {"name": "ft", "task": "mnist1d", "members": 2, "epochs": 1, "checkpoint_epochs": [0, 1],
            "architecture": {"family": "mlp", "args": {"in_features": 40, "hidden": [16, 16], "out_features": 10}},
            "base": {"zoo": f"hf://datasets/{REPO}", "member": 1}, "hparams": {"lr": 1e-3}}  # fmt: skip
    build_zoo(spec, tmp_path / "ft.zarr")
    with open_zoo(tmp_path / "ft.zarr") as zoo, open_zoo(base) as source:
        assert torch.equal(zoo.params(epoch=0)[0], source.params(1))
        assert zoo.attrs["base"]["zoo"] == f"hf://datasets/{REPO}" and zoo.attrs["base"]["members"] == [1]
