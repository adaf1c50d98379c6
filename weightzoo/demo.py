"""``weightzoo demo``: a real end-to-end job on a built-in default, in well under a minute.

Trains a small population of MLPs on scikit-learn's digits with varied optimizer, learning
rate, weight decay, activation and seed; stores it (Zarr), verifies checksums, converts it to
HDF5 bit-exactly, serves a train split through WeightDataset, and checks on the best member
that a random hidden-neuron permutation leaves its predictions unchanged.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch
from tqdm import tqdm

from .datasets import WeightDataset
from .zoo import archs
from .zoo.store import ZooStore, format_summary, open_zoo
from .zoo.tasks import load_task
from .zoo.train import OPTIMIZERS, train_member
from .zoo.transfer import convert_zoo

EPOCHS = [0, 1, 2, 4, 8]
BLOCK = 8  # members appended per write


def draw_hparams(members: int, seed: int = 0) -> dict[str, np.ndarray]:
    """A Model-Zoos-like random search, deterministic in ``seed``."""
    rng = np.random.default_rng(seed)
    return {
        "optimizer": rng.choice(OPTIMIZERS, members),
        "lr": np.exp(rng.uniform(np.log(1e-4), np.log(0.3), members)),
        "weight_decay": rng.choice([0.0, 1e-4, 1e-3], members),
        "activation": rng.choice(["relu", "tanh"], members),
        "seed": np.arange(members, dtype=np.int64) + 1000 * seed,
    }


def build_demo_zoo(path: Path, members: int, progress: bool) -> ZooStore:
    """Train ``members`` digits MLPs one by one and append them to a new store at ``path``."""
    task = load_task("digits")
    arch = archs.mlp(64, [32], 10)
    _, layout, _ = archs.describe(arch)
    hp = draw_hparams(members)
    zoo = ZooStore.create(
        path,
        layout,
        architecture=arch,
        epochs=EPOCHS,
        arch_overrides=["activation"],
        spec={"name": "demo-digits-mlp", "task": "digits", "members": members},
        expected_members=members,
        overwrite=True,
    )
    bar = tqdm(total=members, desc="training", unit="member", disable=not progress)
    for start in range(0, members, BLOCK):
        block = range(start, min(start + BLOCK, members))
        results = []
        for i in block:
            member_arch = archs.with_overrides(arch, activation=str(hp["activation"][i]))
            training = {k: hp[k][i].item() for k in ("seed", "lr", "optimizer", "weight_decay")}
            results.append(
                train_member(member_arch, task, training, epochs=EPOCHS[-1], checkpoint_epochs=EPOCHS, batch_size=64)
            )
            bar.update()
        zoo.append(
            np.concatenate([r.params for r in results]),
            hparams={k: v[block.start : block.stop] for k, v in hp.items()},
            metrics={k: np.concatenate([r.metrics[k] for r in results]) for k in results[0].metrics},
        )
    bar.close()
    return zoo


def run_demo(out: str | Path, members: int = 48, progress: bool = False, echo: Callable[[str], None] = print) -> None:
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    zarr_path, h5_path = out / "digits-mlp.zarr", out / "digits-mlp.h5"

    zoo = build_demo_zoo(zarr_path, members, progress)
    echo(format_summary(zoo.summary()))

    report = zoo.verify()
    echo(f"\nverify: {'ok' if report.ok else 'DAMAGED'} ({report.checked_chunks} chunks checked)")

    convert_zoo(zarr_path, h5_path, overwrite=True)
    same = torch.equal(open_zoo(h5_path).params(epoch=None), zoo.params(epoch=None))
    echo(f"convert: {h5_path} ({'bit-exact' if same else 'MISMATCH'})")

    train = WeightDataset(h5_path, target="test_acc", split="train")
    batches = [(len(ws), float(y.mean())) for ws, y in train.loader(batch_size=16)]
    echo(
        f"loader: {sum(n for n, _ in batches)} train members in {len(batches)} batches "
        f"(WeightSpace layers {[tuple(w.shape[2:]) for w in train[0][0].weights]})"
    )

    table = zoo.table()
    best = int(table["test_acc"].idxmax())
    model = zoo.model(best)
    spec = zoo.member_perm_spec(best)
    task = load_task("digits")
    moved = model.state_dict() | spec.apply(model.state_dict(), spec.random_action(torch.Generator().manual_seed(0)))
    permuted = archs.build_module(zoo.member_architecture(best)).eval()
    permuted.load_state_dict(moved)
    with torch.no_grad():
        diff = (model(task.x_test) - permuted(task.x_test)).abs().max().item()
        acc = (model(task.x_test).argmax(1) == task.y_test).float().mean().item()
    echo(f"best member {best}: test accuracy {acc:.3f}; hidden-neuron permutation changes outputs by {diff:.2e}")
    cols = ["optimizer", "lr", "weight_decay", "activation", "train_acc", "test_acc"]
    echo(
        "\ntop 5 members by test accuracy:\n" + table.sort_values("test_acc", ascending=False)[cols].head(5).to_string()
    )
