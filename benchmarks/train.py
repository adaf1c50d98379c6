"""Training benchmark: the vectorized group trainer against a plain per-member PyTorch loop.

256 MNIST-1D MLPs (40-32-32-10 as in the shipped mnist1d-mlp config, ReLU, Adam, batch 128;
per-member seed, learning rate, weight decay and init scale) are trained for the same number of
epochs (so the same steps; 20 as in the config), one checkpoint at the end, by
``train_group`` (one batched computation) and by ``train_member`` (``nn.Module`` + ``torch.optim``,
one member after another). The loop is timed on a subset of the members and extrapolated per
member: it trains members independently, so its time is linear in their number. The machine's
float32 matmul rate (2048 x 2048) is measured in the same run; ``sgemm_fraction`` is the
trainer's model FLOP rate over it. Model FLOPs per sample: 6 x the multiply-adds of the linear
layers (forward 2, backward 4; biases, activations, loss and optimizer not counted); the time is
the whole ``train_group`` call (setup and the final evaluation included). The group is timed with
the fused CPU kernels (the default; with AVX-512 or AVX2 one kernel runs each member's whole step) and
again with PyTorch ops only (``WEIGHTZOO_FUSED=0``).

A second set of members with dropout (0.1 / 0.3 alternating) is reported too.

    python benchmarks/train.py [--quick]

Prints a table, then one JSON line.
"""

from __future__ import annotations

import argparse
import json
from collections.abc import Sequence

import numpy as np
import torch
from timing import timed  # benchmarks/timing.py (the script's folder is on sys.path)

from weightzoo.zoo import archs
from weightzoo.zoo.tasks import load_task
from weightzoo.zoo.train import fused, train_group, train_member

MEMBERS = 256
BATCH = 128
WIDTHS = [32, 32]  # the shipped mnist1d-mlp config's hidden widths


def sgemm_gflops(repeats: int = 10) -> float:
    """float32 2048 x 2048 matmul rate of this machine, GFLOP/s (best of ``repeats``)."""
    a, b = torch.randn(2048, 2048), torch.randn(2048, 2048)
    for _ in range(3):
        a @ b
    best = min(timed(lambda: a @ b, 1) for _ in range(repeats))
    return 2 * 2048**3 / best / 1e9


def members(count: int, dropout: Sequence[float] = (0.0,), seed: int = 0) -> list[dict]:
    """Hyperparameters drawn like one (activation, optimizer) cell of the shipped mnist1d-mlp spec."""
    rng = np.random.default_rng(seed)
    return [
        {
            "seed": i,
            "optimizer": "adam",
            "lr": float(np.exp(rng.uniform(np.log(1e-4), np.log(1e-2)))),
            "weight_decay": float(rng.choice([0.0, 1e-4, 1e-3, 1e-2])),
            "init_scale": float(np.exp(rng.uniform(np.log(0.5), np.log(2.0)))),
            "dropout": dropout[i % len(dropout)],
        }
        for i in range(count)
    ]


def model_flops(arch: dict, samples: int) -> float:
    """6 x multiply-adds of the linear layers per sample."""
    macs = sum(d["in"] * d["out"] for d in arch["layers"] if d["type"] == "linear")
    return 6.0 * macs * samples


def measure(arch: dict, task, hps: list[dict], epochs: int, loop_members: int, repeats: int) -> dict:
    """Seconds for the group (median of ``repeats``; also without the fused kernels) and per loop
    member; all run ``epochs`` epochs."""
    run = {"epochs": epochs, "checkpoint_epochs": [epochs], "batch_size": BATCH}
    group_s = timed(lambda: train_group(arch, task, hps, **run), repeats)
    with fused.disabled():
        plain_s = timed(lambda: train_group(arch, task, hps, **run), repeats)
    loop = hps[:: max(1, len(hps) // loop_members)][:loop_members]
    loop_s = timed(lambda: [train_member(arch, task, hp, **run) for hp in loop], 1) / len(loop)
    flops = model_flops(arch, len(task.x_train) * epochs * len(hps))
    return {
        "group_s": group_s,
        "unfused_s": plain_s,
        "loop_member_s": loop_s,
        "loop_members": len(loop),
        "gflops": flops / group_s / 1e9,
        "unfused_gflops": flops / plain_s / 1e9,
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="fewer loop members and repeats (under a minute)")
    args = ap.parse_args()
    epochs, loop_members, repeats = (20, 8, 2) if args.quick else (20, 64, 3)

    task = load_task("mnist1d")
    arch = archs.mlp(40, WIDTHS, 10)
    warm = {"epochs": 1, "checkpoint_epochs": [1], "batch_size": BATCH}  # first calls pay one-time setup
    train_group(arch, task, members(8), **warm)
    train_member(arch, task, members(1, (0.1,))[0], **warm)
    sgemm = sgemm_gflops()
    plain = measure(arch, task, members(MEMBERS), epochs, loop_members, repeats)
    dropped = measure(arch, task, members(MEMBERS, (0.1, 0.3)), epochs, loop_members // 2, repeats)
    sgemm = max(sgemm, sgemm_gflops())  # again after training: the better of two

    steps = -(-len(task.x_train) // BATCH) * epochs
    kernels = "whole step (register tiles)" if fused.mlp_step_vectorized() else "elementwise"
    print(
        f"{MEMBERS} mnist1d MLPs 40-{'-'.join(map(str, WIDTHS))}-10, ReLU, Adam, batch {BATCH}, {epochs} epochs "
        f"({steps} steps), torch {torch.__version__}, {torch.get_num_threads()} threads; "
        f"loop timed on {plain['loop_members']} members and extrapolated per member; fused kernels: "
        f"{kernels if fused.available() else 'none'}"
    )
    print(f"{'members':<34}{'group s':>9}{'loop s':>9}{'speedup':>9}{'GFLOP/s':>9}{'of sgemm':>10}{'members/min':>13}")
    for name, m in (("no dropout", plain), ("dropout 0.1/0.3", dropped)):
        loop_s = m["loop_member_s"] * MEMBERS
        for label, seconds, gflops in (
            (name, m["group_s"], m["gflops"]),
            (f"{name}, PyTorch ops only", m["unfused_s"], m["unfused_gflops"]),
        ):
            print(
                f"{label:<34}{seconds:>9.2f}{loop_s:>9.1f}{loop_s / seconds:>8.1f}x{gflops:>9.1f}"
                f"{gflops / sgemm:>10.3f}{MEMBERS / seconds * 60:>13,.0f}"
            )
    print(f"float32 2048x2048 matmul: {sgemm:.1f} GFLOP/s")
    result = {
        "speedup_vs_loop": round(plain["loop_member_s"] * MEMBERS / plain["group_s"], 2),
        "gflops": round(plain["gflops"], 2),
        "sgemm_gflops": round(sgemm, 2),
        "sgemm_fraction": round(plain["gflops"] / sgemm, 4),
        "members_per_min": round(MEMBERS / plain["group_s"] * 60, 1),
        "epochs": epochs,
        "dropout_speedup_vs_loop": round(dropped["loop_member_s"] * MEMBERS / dropped["group_s"], 2),
        "dropout_sgemm_fraction": round(dropped["gflops"] / sgemm, 4),
        "unfused_sgemm_fraction": round(plain["unfused_gflops"] / sgemm, 4),
        "fused_kernels": fused.available(),
        "whole_step_kernel": fused.mlp_step_vectorized(),
    }
    print(json.dumps(result))


if __name__ == "__main__":
    main()
