"""The throughput cost of each weight-space augmentation, against a metanet training step.

    python benchmarks/augment.py [--quick] [--zoos DIR]

For ``mnist1d-mlp`` (MLPs 40-32-32-10, ReLU and tanh members) and ``mnist5k-inr`` (SIRENs 2-32-32-1):
members per second through each transform alone (batches of 64, as the metanet trainer draws them,
generator per batch as the loaders make it), beside the members per second of one DWSNet training
step (forward + backward, hidden 32, depth 4) on the same batches, measured in the same run; the
last column is the step's slowdown if the transform runs before every batch. Zoos are built on
first use into ``--zoos`` (``--quick``: the ``tiny-`` specs). Last, one JSON line.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch
from timing import timed, training_step
from zoos import built, zoo_arguments

from weightzoo.metanet.augment import AugmentError, parse
from weightzoo.metanet.dws import DWSNet
from weightzoo.weightspace import WeightSpace
from weightzoo.zoo.opener import open_zoo

BATCH = 64
TRANSFORMS = {
    "mnist1d-mlp": ["perm", "sign", "scale", "noise:0.1", "dropout:0.1", "prune:0.2", "mixup:0.5", "mixup-perm:0.5",
                    "mixup-aligned:0.5"],
    "mnist5k-inr": ["perm", "sign", "siren-shift", "noise:0.1", "translate:0.1", "rotate:15", "zoom:1.2",
                    "mixup:0.5", "mixup-aligned:0.5"],
}  # fmt: skip


def dws_step_rate(flat: torch.Tensor, layout) -> float:
    """Members/s of one DWSNet forward + backward + AdamW step on batches of ``BATCH``."""
    torch.manual_seed(0)
    net = DWSNet(layout, hidden_channels=32, depth=4, out_features=1)
    return BATCH / timed(training_step(net, WeightSpace.from_flat(flat[:BATCH], layout)), 5, warmup=True)


def report(name: str, path: Path, figures: dict, quick: bool) -> None:
    with open_zoo(path) as zoo:
        n = min(len(zoo), 1024)
        flat, y = zoo.params(list(range(n))), torch.from_numpy(zoo.metric("test_loss", list(range(n))))
        members = torch.arange(n)
        step = dws_step_rate(flat, zoo.layout)
        print(f"\n{name}: {n} members, {zoo.layout.size:,} parameters; DWSNet training step {step:,.0f} members/s")
        print(f"{'transform':<20}{'exact':>6}{'members/s':>12}{'step slowdown':>15}")
        for spec in TRANSFORMS[name]:
            try:
                aug = parse(spec).bind(zoo, "regression")
            except AugmentError as exc:
                print(f"{spec:<20}  not applicable: {exc}")
                continue
            batches = list(members.split(BATCH))

            def run(aug=aug, batches=batches) -> None:
                for pos in batches:
                    aug.flat(flat[pos], y[pos], aug.generator(pos.tolist()), aug.groups(pos.numpy()))

            seconds = timed(run, 1 if quick else 3, warmup=True)
            rate = n / seconds
            slowdown = 1 + step / rate
            exact = "yes" if aug.pipeline.exact else "no"
            print(f"{spec:<20}{exact:>6}{rate:>12,.0f}{slowdown:>14.2f}x")
            figures[f"augment_members_per_s_{name}_{spec.split(':')[0]}"] = round(rate, 1)
        figures[f"dws_step_members_per_s_{name}"] = round(step, 1)


def main() -> None:
    args = zoo_arguments(__doc__, "the tiny- zoos, one timing each")
    figures: dict = {"quick": args.quick}
    for name in TRANSFORMS:
        spec = f"tiny-{name}" if args.quick else name
        report(name, built(spec, args.zoos)[0], figures, args.quick)
    print(json.dumps(figures))


if __name__ == "__main__":
    main()
