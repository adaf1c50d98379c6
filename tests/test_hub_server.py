"""The fake Hub (tests/hub_server.py) driven by the real huggingface_hub client: push, pull, errors, failures."""

import random
from pathlib import Path

import httpx2
import pytest
from hub_server import FakeHub, git_oid
from huggingface_hub import (
    CommitOperationAdd,
    HfApi,
    hf_hub_download,
    hf_hub_url,
    snapshot_download,
)
from huggingface_hub.errors import (
    EntryNotFoundError,
    HfHubHTTPError,
    RepositoryNotFoundError,
    RevisionNotFoundError,
)
from huggingface_hub.hf_api import RepoFile, RepoFolder

REPO = "zoo-org/zoo"


def make_folder(root: Path) -> dict[str, bytes]:
    """A small zoo-like folder: a README with metadata, nested members, binary and empty files."""
    rng = random.Random(0)
    files = {
        "README.md": b"---\nlicense: mit\n---\n# A zoo\n",
        "zoo.json": b'{"members": 2}',
        "empty.txt": b"",
        "members/0/params.bin": bytes(range(256)) * 4 + b"\x00\r\n\xff",
        "members/0/meta.yaml": b"lr: 0.1\n",
        "members/1/deep/er/weights.npy": rng.randbytes(5000),
    }
    for name, data in files.items():
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).write_bytes(data)
    return files


def read_folder(root: str | Path) -> dict[str, bytes]:
    """Every file under root except the client's .cache and the Hub's .gitattributes."""
    root = Path(root)
    found = {p.relative_to(root).as_posix(): p.read_bytes() for p in root.rglob("*") if p.is_file()}
    return {k: v for k, v in found.items() if not k.startswith(".cache/") and k != ".gitattributes"}


def test_create_repo_and_exist_ok(fake_hub: FakeHub) -> None:
    api = HfApi()
    url = api.create_repo(REPO, repo_type="dataset")
    assert (url, url.repo_id, url.repo_type) == (f"{fake_hub.endpoint}/datasets/{REPO}", REPO, "dataset")
    with pytest.raises(HfHubHTTPError) as err:
        api.create_repo(REPO, repo_type="dataset")
    assert err.value.response.status_code == 409
    assert api.create_repo(REPO, repo_type="dataset", exist_ok=True).repo_id == REPO
    assert api.list_repo_files(REPO, repo_type="dataset") == [".gitattributes"]
    assert len(fake_hub.commits("dataset", REPO)) == 1
    assert [c.title for c in api.list_repo_commits(REPO, repo_type="dataset")] == ["initial commit"]
    # A model repo (no URL prefix), created without a namespace: it lands in the token owner's one.
    assert api.create_repo("solo").repo_id == f"{fake_hub.user}/solo"
    assert api.model_info(f"{fake_hub.user}/solo").sha == fake_hub.commits("model", f"{fake_hub.user}/solo")[0]
    assert api.whoami()["name"] == fake_hub.user


def test_upload_folder_round_trip_and_unchanged_files(fake_hub: FakeHub, tmp_path: Path) -> None:
    api = HfApi()
    api.create_repo(REPO, repo_type="dataset")
    src = tmp_path / "src"
    files = make_folder(src)
    info = api.upload_folder(folder_path=src, repo_id=REPO, repo_type="dataset", commit_message="add zoo")
    commits = fake_hub.commits("dataset", REPO)
    assert len(commits) == 2 and info.oid == commits[0]
    assert info.commit_url == f"{fake_hub.endpoint}/datasets/{REPO}/commit/{info.oid}"
    assert sorted(fake_hub.uploaded) == sorted(files)
    assert ("POST", "/api/validate-yaml") in fake_hub.requests  # README.md metadata is validated first
    assert not [path for _, path in fake_hub.requests if "lfs" in path or "xet" in path]

    # Pulled bit-exact, to a local dir and to the cache; snapshot_download lists files with the tree endpoint.
    first = len(fake_hub.requests)
    assert read_folder(snapshot_download(REPO, repo_type="dataset", local_dir=tmp_path / "out")) == files
    assert any(f"/api/datasets/{REPO}/tree/{info.oid}" == path for _, path in fake_hub.requests[first:])
    cached = Path(snapshot_download(REPO, repo_type="dataset"))
    assert cached.is_relative_to(tmp_path / "hf_home" / "hub") and read_folder(cached) == files
    name = "members/0/params.bin"
    assert Path(hf_hub_download(REPO, name, repo_type="dataset")).read_bytes() == files[name]
    meta = api.get_hf_file_metadata(url=hf_hub_url(REPO, name, repo_type="dataset"))
    assert (meta.etag, meta.size, meta.commit_hash) == (git_oid(files[name]), len(files[name]), info.oid)

    # Same folder again: preupload reports every file unchanged, the client sends no commit at all.
    first = len(fake_hub.requests)
    again = api.upload_folder(folder_path=src, repo_id=REPO, repo_type="dataset")
    assert again.oid == info.oid and fake_hub.commits("dataset", REPO) == commits
    assert not [path for _, path in fake_hub.requests[first:] if "/commit/" in path]

    # One file changed: only that one is sent.
    (src / "zoo.json").write_bytes(b'{"members": 3}')
    api.upload_folder(folder_path=src, repo_id=REPO, repo_type="dataset")
    assert fake_hub.uploaded[len(files) :] == ["zoo.json"] and len(fake_hub.commits("dataset", REPO)) == 3


def test_branches(fake_hub: FakeHub, tmp_path: Path) -> None:
    api, branch = HfApi(), "runs/exp-1"
    api.create_repo(REPO, repo_type="dataset")
    api.upload_file(path_or_fileobj=b"v1", path_in_repo="data.txt", repo_id=REPO, repo_type="dataset")
    api.create_branch(REPO, branch=branch, repo_type="dataset")
    api.create_branch(REPO, branch=branch, repo_type="dataset", exist_ok=True)
    with pytest.raises(HfHubHTTPError) as err:
        api.create_branch(REPO, branch=branch, repo_type="dataset")
    assert err.value.response.status_code == 409
    for name, data in (("data.txt", b"v2"), ("only-on-branch.txt", b"new")):
        api.upload_file(path_or_fileobj=data, path_in_repo=name, repo_id=REPO, repo_type="dataset", revision=branch)

    main, on_branch = fake_hub.commits("dataset", REPO), fake_hub.commits("dataset", REPO, branch)
    assert len(main) == 2 and on_branch[2:] == main and len(on_branch) == 4
    assert {b.name for b in api.list_repo_refs(REPO, repo_type="dataset").branches} == {"main", branch}
    assert api.dataset_info(REPO, revision=branch).sha == on_branch[0]
    assert Path(hf_hub_download(REPO, "data.txt", repo_type="dataset", revision=branch)).read_bytes() == b"v2"
    assert Path(hf_hub_download(REPO, "data.txt", repo_type="dataset")).read_bytes() == b"v1"
    with pytest.raises(EntryNotFoundError):
        hf_hub_download(REPO, "only-on-branch.txt", repo_type="dataset")
    pulled = snapshot_download(REPO, repo_type="dataset", revision=branch, local_dir=tmp_path / "out")
    assert read_folder(pulled) == {"data.txt": b"v2", "only-on-branch.txt": b"new"}


def test_tree_paths_info_and_commits(fake_hub: FakeHub, tmp_path: Path) -> None:
    api = HfApi()
    api.create_repo(REPO, repo_type="dataset")
    files = make_folder(tmp_path / "src")
    api.upload_folder(folder_path=tmp_path / "src", repo_id=REPO, repo_type="dataset", commit_message="add zoo")
    initial, upload = fake_hub.commits("dataset", REPO)[::-1]

    entries = list(api.list_repo_tree(REPO, repo_type="dataset", recursive=True))
    listed = {e.path: e for e in entries if isinstance(e, RepoFile)}
    assert set(listed) == {*files, ".gitattributes"}
    assert all((listed[p].blob_id, listed[p].size) == (git_oid(d), len(d)) for p, d in files.items())
    folders = {e.path for e in entries if isinstance(e, RepoFolder)}
    assert folders == {"members", "members/0", "members/1", "members/1/deep", "members/1/deep/er"}
    top = {e.path for e in api.list_repo_tree(REPO, repo_type="dataset")}
    assert top == {".gitattributes", "README.md", "zoo.json", "empty.txt", "members"}
    assert {e.path for e in api.list_repo_tree(REPO, "members/0", repo_type="dataset")} == {
        "members/0/params.bin",
        "members/0/meta.yaml",
    }
    expanded = {e.path: e.last_commit.oid for e in api.list_repo_tree(REPO, repo_type="dataset", expand=True)}
    assert expanded[".gitattributes"] == initial and expanded["members"] == upload
    with pytest.raises(EntryNotFoundError):
        list(api.list_repo_tree(REPO, "no/such/folder", repo_type="dataset"))

    infos = api.get_paths_info(REPO, ["zoo.json", "members", "missing.txt"], repo_type="dataset")
    assert [(type(i), i.path) for i in infos] == [(RepoFile, "zoo.json"), (RepoFolder, "members")]
    history = api.list_repo_commits(REPO, repo_type="dataset")
    assert [(c.commit_id, c.title) for c in history] == [(upload, "add zoo"), (initial, "initial commit")]


def test_auth_and_not_found_errors(fake_hub: FakeHub) -> None:
    api = HfApi()
    api.create_repo(REPO, repo_type="dataset")
    upload = {"path_or_fileobj": b"x", "path_in_repo": "x.txt", "repo_id": REPO, "repo_type": "dataset"}

    # A wrong token gets 401 "Invalid credentials", on writes and reads alike.
    wrong = HfApi(token="hf_wrong")
    for call in (
        lambda: wrong.create_repo("zoo-org/other", repo_type="dataset"),
        lambda: wrong.upload_file(**upload),
        lambda: wrong.dataset_info(REPO),
    ):
        with pytest.raises(HfHubHTTPError) as err:
            call()
        assert err.value.response.status_code == 401 and not isinstance(err.value, RepositoryNotFoundError)
        assert "401" in str(err.value) and "Invalid credentials in Authorization header" in str(err.value)
    # No token on a write: 401 that the client reports as RepositoryNotFoundError, as with the real Hub.
    with pytest.raises(RepositoryNotFoundError) as err:
        api.upload_file(**upload, token=False)
    assert err.value.response.status_code == 401
    assert fake_hub.commits("dataset", REPO)[1:] == [] and fake_hub.uploaded == []

    with pytest.raises(RevisionNotFoundError):
        api.dataset_info(REPO, revision="no-such-branch")
    with pytest.raises(RevisionNotFoundError):
        hf_hub_download(REPO, ".gitattributes", repo_type="dataset", revision="no-such-branch")
    with pytest.raises(RevisionNotFoundError):
        api.upload_file(**upload, revision="no-such-branch")
    with pytest.raises(EntryNotFoundError):
        hf_hub_download(REPO, "missing.txt", repo_type="dataset")
    with pytest.raises(RepositoryNotFoundError) as err:
        api.dataset_info("zoo-org/missing")
    assert err.value.response.status_code == 404
    with pytest.raises(RepositoryNotFoundError):
        snapshot_download("zoo-org/missing", repo_type="dataset")
    with pytest.raises(RepositoryNotFoundError):
        api.model_info(REPO)  # right id, wrong type
    assert not api.repo_exists("zoo-org/missing", repo_type="dataset")
    assert api.file_exists(REPO, ".gitattributes", repo_type="dataset")
    assert not api.file_exists(REPO, "missing.txt", repo_type="dataset")


def test_private_repo_needs_the_token(fake_hub: FakeHub, tmp_path: Path) -> None:
    api = HfApi()
    api.create_repo(REPO, repo_type="dataset", private=True)
    api.upload_file(path_or_fileobj=b"secret", path_in_repo="s.txt", repo_id=REPO, repo_type="dataset")
    assert api.dataset_info(REPO).private is True
    for call in (
        lambda: api.dataset_info(REPO, token=False),
        lambda: hf_hub_download(REPO, "s.txt", repo_type="dataset", token=False),
        lambda: snapshot_download(REPO, repo_type="dataset", token=False, local_dir=tmp_path / "out"),
    ):
        with pytest.raises(RepositoryNotFoundError) as err:
            call()
        assert err.value.response.status_code == 401
    assert not api.repo_exists(REPO, repo_type="dataset", token=False)
    assert Path(hf_hub_download(REPO, "s.txt", repo_type="dataset")).read_bytes() == b"secret"
    api.create_repo("zoo-org/public", repo_type="dataset")
    assert api.dataset_info("zoo-org/public", token=False).private is False


def test_dropped_commits(fake_hub: FakeHub, tmp_path: Path) -> None:
    api = HfApi()
    api.create_repo(REPO, repo_type="dataset")
    files = make_folder(tmp_path / "src")
    before = fake_hub.commits("dataset", REPO)
    fake_hub.drop_next_commits()
    with pytest.raises(httpx2.RemoteProtocolError):
        api.upload_folder(folder_path=tmp_path / "src", repo_id=REPO, repo_type="dataset")
    assert fake_hub.commits("dataset", REPO) == before and fake_hub.uploaded == []
    assert fake_hub.requests[-1] == ("POST", f"/api/datasets/{REPO}/commit/main")
    api.upload_folder(folder_path=tmp_path / "src", repo_id=REPO, repo_type="dataset")
    assert len(fake_hub.commits("dataset", REPO)) == 2
    assert read_folder(snapshot_download(REPO, repo_type="dataset", local_dir=tmp_path / "out")) == files

    # A push of several commits that fails midway: the first lands, the second is dropped.
    fake_hub.drop_next_commits(1, after_files=1)
    api.upload_file(path_or_fileobj=b"a", path_in_repo="a.txt", repo_id=REPO, repo_type="dataset")
    with pytest.raises(httpx2.RemoteProtocolError):
        api.upload_file(path_or_fileobj=b"b", path_in_repo="b.txt", repo_id=REPO, repo_type="dataset")
    names = api.list_repo_files(REPO, repo_type="dataset")
    assert "a.txt" in names and "b.txt" not in names and len(fake_hub.commits("dataset", REPO)) == 3


def test_injected_failures_parent_commit_deletes_and_pull_requests(fake_hub: FakeHub) -> None:
    api = HfApi()
    api.create_repo(REPO, repo_type="dataset")
    upload = {"path_or_fileobj": b"x", "path_in_repo": "x.txt", "repo_id": REPO, "repo_type": "dataset"}
    fake_hub.fail("POST", r"/commit/", 403)
    with pytest.raises(HfHubHTTPError) as err:
        api.upload_file(**upload)
    assert err.value.response.status_code == 403 and "Injected failure" in str(err.value)
    first = api.upload_file(**upload)

    stale = fake_hub.commits("dataset", REPO)[1]
    with pytest.raises(HfHubHTTPError) as err:
        api.create_commit(
            REPO, [CommitOperationAdd("y.txt", b"y")], commit_message="y", repo_type="dataset", parent_commit=stale
        )
    assert err.value.response.status_code == 412
    ops = [CommitOperationAdd("y.txt", b"y")]
    api.create_commit(REPO, ops, commit_message="y", repo_type="dataset", parent_commit=first.oid[:7])

    api.delete_file("x.txt", REPO, repo_type="dataset")
    with pytest.raises(EntryNotFoundError):
        api.delete_file("x.txt", REPO, repo_type="dataset")
    assert api.list_repo_files(REPO, repo_type="dataset") == [".gitattributes", "y.txt"]

    main = fake_hub.commits("dataset", REPO)
    pr = api.upload_file(path_or_fileobj=b"z", path_in_repo="z.txt", repo_id=REPO, repo_type="dataset", create_pr=True)
    assert pr.pr_revision == "refs/pr/1" and pr.pr_num == 1 and fake_hub.commits("dataset", REPO) == main
    assert Path(hf_hub_download(REPO, "z.txt", repo_type="dataset", revision="refs/pr/1")).read_bytes() == b"z"


def test_corrupted_blob_is_served_as_is(fake_hub: FakeHub, tmp_path: Path) -> None:
    api = HfApi()
    api.create_repo(REPO, repo_type="dataset")
    api.upload_file(path_or_fileobj=b"0123456789", path_in_repo="w.bin", repo_id=REPO, repo_type="dataset")
    blob = fake_hub.blob_path("dataset", REPO, "w.bin")
    assert blob.read_bytes() == b"0123456789"
    # Same size, different bytes: hf_hub_download checks nothing but the size, so it returns them.
    blob.write_bytes(b"0123456780")
    assert Path(hf_hub_download(REPO, "w.bin", repo_type="dataset")).read_bytes() == b"0123456780"
    # Truncated: the size announced by HEAD no longer matches what GET sends.
    blob.write_bytes(b"01234")
    with pytest.raises(OSError, match="Consistency check failed"):
        hf_hub_download(REPO, "w.bin", repo_type="dataset", force_download=True)
    # A local_dir download of a file already in the cache copies the cached file: no GET at all.
    first = len(fake_hub.requests)
    assert Path(hf_hub_download(REPO, "w.bin", repo_type="dataset", local_dir=tmp_path / "out")).read_bytes() == (
        b"0123456780"
    )
    assert [method for method, _ in fake_hub.requests[first:]] == ["HEAD"]
