"""The zoo builder: determinism, resume after interruption (SIGKILL included), Dask, bad input."""

import errno
import signal
import subprocess
import sys
import time
from dataclasses import replace

import numpy as np
import pytest
import torch

from weightzoo import open_zoo
from weightzoo._fs import lock_path
from weightzoo.errors import SpecError, StoreError
from weightzoo.zoo import build
from weightzoo.zoo.build import ExecutorError, build_zoo, plan_groups
from weightzoo.zoo.spec import load_spec, parse_spec, shipped_configs
from weightzoo.zoo.store import ZooStore, format_summary
from weightzoo.zoo.train import fused
from weightzoo.zoo.train.numerics import TRAINER_VERSION, NumericPath, numeric_path

SLOWER = {  # a spec whose groups take a noticeable moment, so a kill lands mid-build
    "name": "resume-test",
    "task": "digits",
    "architecture": {"family": "mlp", "args": {"in_features": 64, "hidden": [32], "out_features": 10}},
    "members": 12,
    "epochs": 12,
    "checkpoint_epochs": [0, 6, 12],
    "batch_size": 32,
    "group_size": 2,
    "hparams": {"lr": {"loguniform": [1e-3, 1e-1]}, "optimizer": "adam", "dropout": {"choice": [0.0, 0.2]}},
    "grid": {"activation": ["relu", "tanh"]},
}


def same_zoo(a, b):
    za, zb = open_zoo(a), open_zoo(b)
    assert len(za) == len(zb) == za.capacity
    assert np.array_equal(za.members, zb.members)
    assert torch.equal(za.params(epoch=None), zb.params(epoch=None))
    ta, tb = za.table(), zb.table()
    assert ta.equals(tb)


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    """The uninterrupted build of SLOWER."""
    out = tmp_path_factory.mktemp("ref") / "ref.zarr"
    build_zoo(SLOWER, out)
    return out


def test_tiny_build_then_info(tmp_path):
    out = tmp_path / "z.zarr"
    report = build_zoo("tiny-mnist1d-mlp", out)
    assert report.trained == 16 and report.already_done == 0
    zoo = open_zoo(out)
    assert len(zoo) == 16 and zoo.epochs == [0, 1, 2]
    table = zoo.table()
    assert {"lr", "optimizer", "activation", "seed", "test_acc", "train_loss"} <= set(table.columns)
    assert table["test_acc"].max() > 0.2  # members learned something in two epochs
    assert zoo.model(0)(torch.zeros(3, 40)).shape == (3, 10)
    # re-running a finished build does nothing
    again = build_zoo("tiny-mnist1d-mlp", out)
    assert again.trained == 0 and again.already_done == 16


def test_same_spec_same_parameters_and_hdf5(tmp_path, reference):
    build_zoo(SLOWER, tmp_path / "again.h5")
    same_zoo(reference, tmp_path / "again.h5")


def test_groups_are_fixed_by_the_spec():
    spec = parse_spec(SLOWER)
    groups = plan_groups(spec)
    assert sorted(m for g in groups for m in g.members) == list(range(12))
    assert all(len({hp["activation"] for hp in g.hparams}) == 1 for g in groups)
    assert [g.members for g in plan_groups(spec)] == [g.members for g in groups]


def test_interrupted_build_resumes_to_the_same_zoo(tmp_path, reference):
    out = tmp_path / "z.zarr"
    calls = []

    def stop_after_two(group):
        calls.append(group)
        if len(calls) == 2:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        build_zoo(SLOWER, out, on_group=stop_after_two)
    assert len(open_zoo(out)) == 4
    report = build_zoo(SLOWER, out)
    assert report.already_done == 4 and report.trained == 8
    same_zoo(reference, out)


def test_sigkill_then_rerun_finishes_identically(tmp_path, reference):
    import yaml

    spec_file = tmp_path / "spec.yaml"
    spec_file.write_text(yaml.safe_dump(SLOWER))
    out = tmp_path / "z.zarr"
    cmd = [sys.executable, "-m", "weightzoo", "zoo", "build", str(spec_file), "--out", str(out), "--quiet"]
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    deadline = time.time() + 120
    while time.time() < deadline:  # kill once some but not all members are stored
        if out.exists():
            try:
                if 0 < len(open_zoo(out)) < 12:
                    break
            except Exception:  # the store is being created at this instant
                pass
        if proc.poll() is not None:
            pytest.fail(f"build ended before it could be killed: {proc.stderr.read().decode()}")
        time.sleep(0.02)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    partial = len(open_zoo(out))
    assert 0 < partial < 12
    rerun = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    assert rerun.returncode == 0, rerun.stderr
    same_zoo(reference, out)


def test_different_spec_is_refused_unless_overwrite(tmp_path):
    out = tmp_path / "z.zarr"
    build_zoo("tiny-mnist1d-mlp", out, members=4)
    with pytest.raises(StoreError, match="different spec.*--overwrite"):
        build_zoo("tiny-mnist1d-mlp", out)
    build_zoo("tiny-mnist1d-mlp", out, overwrite=True)
    assert len(open_zoo(out)) == 16


def test_full_disk_keeps_finished_members(tmp_path, monkeypatch):
    out = tmp_path / "z.zarr"
    real_write = ZooStore.write
    writes = []

    def write(self, *args, **kwargs):
        writes.append(1)
        if len(writes) == 3:
            raise OSError(errno.ENOSPC, "No space left on device")
        return real_write(self, *args, **kwargs)

    monkeypatch.setattr(ZooStore, "write", write)
    with pytest.raises(StoreError, match="disk full.*re-run the same command to resume"):
        build_zoo("tiny-mnist1d-mlp", out)
    assert len(open_zoo(out)) == 8
    monkeypatch.setattr(ZooStore, "write", real_write)
    assert build_zoo("tiny-mnist1d-mlp", out).trained == 8


def test_unreachable_scheduler_is_one_line(tmp_path):
    with pytest.raises(ExecutorError, match="cannot reach Dask scheduler"):
        build_zoo("tiny-mnist1d-mlp", tmp_path / "z.zarr", executor="dask", scheduler="tcp://127.0.0.1:9")
    assert len(open_zoo(tmp_path / "z.zarr")) == 0  # the store exists, empty, ready to resume


def test_dask_local_cluster_equals_local_build(tmp_path, reference):
    pytest.importorskip("distributed")
    out = tmp_path / "dask.zarr"
    report = build_zoo(SLOWER, out, executor="dask", workers=2)
    assert report.trained == 12
    same_zoo(reference, out)


def test_bad_executor_and_members(tmp_path):
    with pytest.raises(SpecError, match="unknown executor"):
        build_zoo("tiny-mnist1d-mlp", tmp_path / "z.zarr", executor="ray")
    with pytest.raises(SpecError, match="at least 1"):
        build_zoo(load_spec("tiny-mnist1d-mlp"), tmp_path / "z.zarr", members=0)


def test_cli_build_and_info(tmp_path, capsys):
    from weightzoo.cli import main

    out = tmp_path / "z"
    assert main(["zoo", "build", "tiny-mnist1d-mlp", "--out", str(out), "--backend", "hdf5", "--quiet"]) == 0
    assert "trained 16 members" in capsys.readouterr().out
    assert main(["zoo", "info", str(tmp_path / "z.h5")]) == 0
    assert "16 done / 16 total" in capsys.readouterr().out
    assert main(["zoo", "configs"]) == 0
    assert "tiny-mnist1d-mlp" in capsys.readouterr().out
    assert main(["zoo", "build", str(tmp_path / "nope.yaml"), "--out", str(out)]) == 2
    assert "no such spec file" in capsys.readouterr().err


def test_hdf5_build_resumes_from_its_zarr_staging_and_cleans_up(tmp_path, reference):
    out = tmp_path / "z.h5"
    calls = []

    def stop_after_one(group):
        calls.append(group)
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        build_zoo(SLOWER, out, on_group=stop_after_one)
    assert not out.exists() and (tmp_path / ".z.building.zarr").exists()  # no half-written HDF5 file
    report = build_zoo(SLOWER, out)
    assert report.already_done == 2 and report.path == out
    assert sorted(p.name for p in tmp_path.iterdir()) == ["z.h5"]
    same_zoo(reference, out)
    assert build_zoo(SLOWER, out).trained == 0


def test_width_and_depth_can_vary_per_member(tmp_path):
    spec = {
        "name": "mixed",
        "task": "digits",
        "architecture": {"family": "mlp_wd", "args": {"in_features": 64, "width": 8, "depth": 1, "out_features": 10}},
        "members": 6,
        "epochs": 2,
        "checkpoint_epochs": [0, 2],
        "batch_size": 64,
        "hparams": {"lr": 0.01, "optimizer": "adam"},
        "grid": {"width": [8, 16], "depth": [1, 2]},
    }
    out = tmp_path / "mixed.zarr"
    build_zoo(spec, out)
    zoo = open_zoo(out)
    assert zoo.mixed and zoo.perm_spec is None and len(zoo) == 6
    sizes = {zoo.member_layout(i).size for i in range(6)}
    assert len(sizes) == 4 and zoo.layout.size == max(sizes)
    x = torch.randn(5, 64)
    for i in range(4):
        hp = zoo.table().iloc[i]
        model = zoo.model(i)
        assert model[0].out_features == hp["width"]
        assert sum(1 for m in model if isinstance(m, torch.nn.Linear)) == hp["depth"] + 1
        padded = zoo.params(i)
        assert torch.all(padded[zoo.member_layout(i).size :] == 0)
        assert model(x).shape == (5, 10)
    # what was trained is what the member computes: its stored test accuracy is reproduced
    from weightzoo.zoo.tasks import load_task

    task = load_task("digits")
    acc = (zoo.model(3)(task.x_test).argmax(1) == task.y_test).float().mean().item()
    assert acc == pytest.approx(zoo.metric("test_acc", [3])[0], abs=1e-6)
    from weightzoo.datasets import WeightDataset

    with pytest.raises(SpecError, match="different layouts"):
        WeightDataset(out)


@pytest.mark.parametrize("name", [n for n in shipped_configs() if not n.startswith("tiny-")])
def test_every_shipped_spec_plans_groups_within_the_memory_budget(name):
    """Group sizes come from the memory model on the inputs as each architecture reads them
    (8x8 images for the 2-D CNN), for every member of the spec."""
    spec = load_spec(name)
    assert spec.group_size is None  # the memory model decides
    groups = plan_groups(spec)
    assert sorted(i for g in groups for i in g.members) == list(range(spec.members))


# --------------------------------------------------------------------------- numeric paths

OTHER_TORCH = NumericPath("cpu", "torch", "9.9.9", TRAINER_VERSION)


def interrupted_after_one_group(out):
    """``out`` with the first group of SLOWER stored, the build stopped there."""

    def stop(group):
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        build_zoo(SLOWER, out, on_group=stop)
    return open_zoo(out)


def test_the_numeric_path_is_recorded_and_a_resume_on_another_is_refused(tmp_path, monkeypatch, reference):
    out = tmp_path / "z.zarr"
    with interrupted_after_one_group(out) as zoo:
        assert zoo.numerics == numeric_path("cpu") and len(zoo) == 2
        assert "trained on" in format_summary(zoo.summary())
    monkeypatch.setattr(build, "numeric_path", lambda device: OTHER_TORCH)  # as if torch were upgraded
    with pytest.raises(StoreError, match=r"trained on \[cpu, .*torch 2.*\], this process trains on \[cpu, "
                       r"torch ops, torch 9\.9\.9, trainer 1\].*--allow-mixed-numerics"):  # fmt: skip
        build_zoo(SLOWER, out)
    assert len(open_zoo(out)) == 2  # nothing trained, nothing written
    monkeypatch.undo()
    build_zoo(SLOWER, out)  # the path it was built on resumes
    same_zoo(reference, out)


def test_a_worker_result_from_another_path_is_refused_unless_mixing_is_allowed(tmp_path, monkeypatch):
    real = build.train_planned
    calls = []

    def elsewhere(job, group, device="cpu"):  # the second group comes back from a differing worker
        result = real(job, group, device)
        calls.append(group)
        return replace(result, numerics=OTHER_TORCH.to_dict()) if len(calls) == 2 else result

    monkeypatch.setattr(build, "train_planned", elsewhere)
    out = tmp_path / "z.zarr"
    with pytest.raises(StoreError, match="this process trains on .*9.9.9"):
        build_zoo(SLOWER, out)
    assert len(open_zoo(out)) == 2  # the differing group was not written
    calls.clear()
    from weightzoo.cli import main

    assert main(["zoo", "build", "tiny-mnist1d-mlp", "--out", str(tmp_path / "t.zarr"), "-q",
                 "--allow-mixed-numerics"]) == 0  # fmt: skip
    with open_zoo(tmp_path / "t.zarr") as zoo:
        assert len(zoo) == 16
        assert [NumericPath.from_dict(p) for p in zoo.attrs["numerics_mixed"]] == [numeric_path("cpu"), OTHER_TORCH]


@pytest.mark.skipif(not fused.available(), reason="needs the fused kernels to differ from PyTorch ops")
def test_switching_the_kernels_off_is_another_numeric_path(tmp_path):
    out = tmp_path / "z.zarr"
    interrupted_after_one_group(out).close()
    with fused.disabled(), pytest.raises(StoreError, match=r"fused kernels .* torch ops"):
        build_zoo(SLOWER, out)
    with fused.disabled():
        report = build_zoo(SLOWER, out, allow_mixed_numerics=True)
    assert report.trained == 10
    with open_zoo(out) as zoo:
        assert {p["kernels"] for p in zoo.attrs["numerics_mixed"]} == {"torch", f"fused-{fused.isa()}"}


# --------------------------------------------------------------------------- one writer per store


def spec_command(tmp_path, out):
    import yaml

    spec_file = tmp_path / "spec.yaml"
    spec_file.write_text(yaml.safe_dump(SLOWER))
    return [sys.executable, "-m", "weightzoo", "zoo", "build", str(spec_file), "--out", str(out), "--quiet"]


def wait_for(condition, proc, timeout=120):
    deadline = time.time() + timeout
    while not condition():
        if proc.poll() is not None:
            pytest.fail(f"build ended too early: {proc.stderr.read().decode()}")
        if time.time() > deadline:
            pytest.fail("timed out")
        time.sleep(0.02)


WAITER = """
import pathlib, sys, time
import weightzoo.zoo.build  # imported before the signal, so the build starts the moment it comes
from weightzoo.cli import main
trigger = pathlib.Path(sys.argv[1])
trigger.with_suffix(".ready").touch()
while not trigger.exists():
    time.sleep(0.005)
sys.exit(main(sys.argv[2:]))
"""


def test_a_second_build_into_the_same_store_is_refused(tmp_path, reference):
    out = tmp_path / "z.zarr"
    cmd = spec_command(tmp_path, out)
    trigger = tmp_path / "go"
    second = subprocess.Popen([sys.executable, "-c", WAITER, str(trigger), *cmd[3:]], stderr=subprocess.PIPE)
    wait_for(trigger.with_suffix(".ready").exists, second)  # imported and waiting
    first = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    wait_for(lambda: lock_path(out).exists() and out.exists(), first)
    trigger.touch()  # the second build starts while the first is training
    assert second.wait(timeout=120) == 2  # refused while the first held the store: its pid is named
    assert second.stderr.read().decode().strip() == (
        f"error: {out}: another weightzoo process (pid {first.pid}) is writing this store; "
        "wait for it to finish, or stop it and run the command again"
    )
    assert first.wait(timeout=300) == 0
    assert not lock_path(out).exists()
    assert open_zoo(out).verify().ok
    same_zoo(reference, out)


def test_a_lock_left_by_a_killed_build_does_not_block_the_next(tmp_path, reference):
    out = tmp_path / "z.zarr"
    cmd = spec_command(tmp_path, out)
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    wait_for(lambda: out.exists() and lock_path(out).exists(), proc)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert lock_path(out).read_text() == str(proc.pid)  # left behind, held by no one
    rerun = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    assert rerun.returncode == 0, rerun.stderr
    same_zoo(reference, out)
