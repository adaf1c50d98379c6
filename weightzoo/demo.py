"""``weightzoo demo``: the main job on the built-in default, end to end, in about a minute.

Builds the default zoo (``mnist1d-mlp``: 2,048 MLPs on MNIST-1D over a grid of activation,
init and optimizer with random learning rate, weight decay, dropout and training fraction),
prints ``zoo info``, verifies every chunk's checksum, converts the zoo to HDF5 bit-exactly,
serves a train split through WeightDataset, and checks on the best member that a random
hidden-neuron permutation leaves its predictions unchanged. Re-running it resumes or skips
the build.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import torch

from .datasets import WeightDataset
from .zoo import archs
from .zoo.build import build_zoo
from .zoo.opener import open_zoo
from .zoo.spec import load_spec
from .zoo.store import format_summary
from .zoo.tasks import load_task
from .zoo.transfer import convert_zoo

DEFAULT_SPEC = "mnist1d-mlp"


def permutation_check(zoo, member: int) -> tuple[float, float]:
    """Test accuracy of ``member`` and how much a random symmetry changes its outputs."""
    spec = zoo.attrs["spec"]
    arch = zoo.member_architecture(member)
    task = load_task(spec["task"], **spec.get("task_options", {})).for_architecture(arch)
    model = zoo.model(member)
    perm_spec = zoo.member_perm_spec(member)
    action = perm_spec.random_action(torch.Generator().manual_seed(0))
    permuted = archs.build_module(arch).eval()
    permuted.load_state_dict(model.state_dict() | perm_spec.apply(model.state_dict(), action))
    with torch.no_grad():
        out = model(task.x_test)
        diff = (out - permuted(task.x_test)).abs().max().item()
    return (out.argmax(1) == task.y_test).float().mean().item(), diff


def run_demo(
    out: str | Path,
    spec: str = DEFAULT_SPEC,
    members: int | None = None,
    progress: bool = False,
    echo: Callable[[str], None] = print,
) -> None:
    out = Path(out)
    name = load_spec(spec).name + (f"-{members}" if members else "")
    zarr_path, h5_path = out / f"{name}.zarr", out / f"{name}.h5"

    report = build_zoo(spec, zarr_path, members=members, progress=progress)
    echo(
        f"build: {report.trained} members trained in {report.seconds:.1f} s "
        f"({report.members_per_s * 60:.0f} members/min), {report.already_done} already done\n"
    )
    zoo = open_zoo(zarr_path)
    echo(format_summary(zoo.summary()))

    check = zoo.verify()
    echo(f"\nverify: {'ok' if check.ok else 'DAMAGED'} ({check.checked_chunks} chunks checked)")

    convert_zoo(zarr_path, h5_path, overwrite=True)
    same = torch.equal(open_zoo(h5_path).params(epoch=None), zoo.params(epoch=None))
    echo(f"convert: {h5_path} ({'bit-exact' if same else 'MISMATCH'})")

    train = WeightDataset(h5_path, target="test_acc", split="train")
    batches = sum(1 for _ in train.loader(batch_size=256))
    shapes = [tuple(w.shape[2:]) for w in train[0][0].weights]
    echo(f"loader: {len(train)} train members in {batches} batches (WeightSpace layers {shapes})")

    table = zoo.table()
    best = int(table["test_acc"].idxmax())
    acc, diff = permutation_check(zoo, best)
    echo(f"best member {best}: test accuracy {acc:.3f}; "
         f"a random hidden-neuron permutation changes its outputs by {diff:.1e}")  # fmt: skip
    shown = ("activation", "init", "optimizer", "lr", "weight_decay", "dropout", "train_fraction", "test_acc")
    cols = [c for c in shown if c in table.columns]
    top = table.sort_values("test_acc", ascending=False)[cols].head(5)
    echo("\ntop 5 members by test accuracy:\n" + top.to_string())
