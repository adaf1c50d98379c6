"""Diffusion weight generation (D2NWG) on conflicting tasks: generated members against the zoo and
simple baselines, fine-tuning from them, memorization, and p-diff mode.

    python benchmarks/generate.py [--quick] [--zoos DIR] [--diffusion-epochs 500] [--generator DIR] [--seed 0]
                                  [--zoo mnist1d-conflict-many|mnist1d-conflict-wide|mnist1d-conflict-ft|mnist1d-conflict]

``--generator DIR`` keeps the trained generator: the first run trains it and saves it (and its
training record, ``training.json``) there; later runs with the same zoo and options load it and
skip training, so sampling and evaluation can be compared without retraining. A saved generator
whose configuration differs from this run's is refused. ``--seed S`` seeds the generators' training
(batches, noise, initialization; default 0), for repeats of one configuration.

The zoo is ``mnist1d-conflict-many`` (the default: 200 tasks, 8 sets of 5 MNIST-1D classes each
mapped to the outputs in 25 drawn orders, 4 members a task, each fine-tuned from one base pretrained
on all of MNIST-1D: D2NWG's setting), ``mnist1d-conflict-wide`` (those 800 members over 400 tasks: 50 orders per class
set, 2 members a task), ``mnist1d-conflict-ft`` (fine-tuned likewise, 40 tasks: 5
orders per class set, 16 members a task) or ``mnist1d-conflict`` (those 40 tasks, members trained
from scratch); ``--quick``: their ``tiny-`` versions (``tiny-mnist1d-conflict-ft`` for the first).
The defaults (this zoo, 500 diffusion epochs, seed 0) are the configuration the README reports.
One task per class set is held out of generator training entirely (its members are used only to
compare with), so every held-out task's classes and its output order are each seen in training,
never together. Members of a fine-tuned zoo share the base's neuron order, so they are not aligned
for the generator.

Stages, all in one run:

1. train the dataset-conditioned generator on the held-in members (timed), sample 100 members (timed);
2. per task, 16 generated members (no training) and their test accuracy, against the zoo's median
   and best for the task, random init (the members' seeded initializations), the zoo's base
   (fine-tuned zoos), the mean of all training members (aligned, as the generator sees them), a
   random training member, the members of the most similar training task (the most classes
   mapped to the same outputs), and an oracle recombination told the task's class -> output map
   (each output's head row from training members with the same pair; see :func:`composed`);
   then, on every held-out task and up to 32 held-in ones (``Tasks.checked``), 16 *selected*
   members: the 16 of 64 draws with the lowest loss on the same conditioning set
   (``WeightGenerator.sample(candidates=64)``; still no gradient step, but the conditioning
   samples are read twice), reported beside the plain draws with their own targets;
3. held-out tasks: fine-tuning from generated weights (drawn and selected), random init, the zoo's
   base (fine-tuned zoos) and the training mean, with each task member's own training setup, for 40 epochs:
   epochs until the task's zoo median (``FINETUNE_EPOCHS``);
4. memorization (drawn and selected members): each generated member's distance to its nearest
   training member after weight matching, and their prediction agreement, beside two
   independently trained members of one task and a training member plus noise of the generated
   spread;
5. p-diff: an unconditional generator on the members of one task, generated vs original accuracy.

Last line: one JSON object.
"""

from __future__ import annotations

import functools
import json
import math
import sys
import time
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
import torch
from zoos import built, zoo_arguments

from weightzoo import open_zoo
from weightzoo.metanet.align import Aligner
from weightzoo.metanet.diffusion import (
    AutoencoderConfig,
    DiffusionConfig,
    EncoderConfig,
    FitOptions,
    GeneratorConfig,
    WeightGenerator,
    conditioning_set,
    task_key,
    train_generator,
)
from weightzoo.metanet.functional import Functional
from weightzoo.zoo.evaluate import hparams_data, stored_hparams, zoo_task
from weightzoo.zoo.train.config import member_config
from weightzoo.zoo.train.group import GroupTrainer
from weightzoo.zoo.train.init import init_params
from weightzoo.zoo.train.variants import member_variant

ZOOS = {"mnist1d-conflict": "tiny-mnist1d-conflict", "mnist1d-conflict-ft": "tiny-mnist1d-conflict-ft",
        "mnist1d-conflict-many": "tiny-mnist1d-conflict-ft", "mnist1d-conflict-wide": "tiny-mnist1d-conflict-ft"}  # each zoo and its --quick stand-in  # fmt: skip
PER_TASK = 16  # generated members per task
MEMO_PER_TASK = 2  # generated members per task checked for memorization
MEMO_HELDIN = 32  # held-in tasks checked for memorization at most (evenly spaced; all held-out ones are)
CANDIDATES = 4 * PER_TASK  # draws per task for the selected members: the PER_TASK of lowest conditioning loss
FINETUNE_EPOCHS = 40  # every fine-tuning start's budget: twice mnist1d-conflict's 20 epochs, so random init arrives


def config(quick: bool, fine_tuned: bool, diffusion_epochs: int, seed: int) -> GeneratorConfig:
    """The conditional generator (p-diff reuses its sizes with its own budget, see :func:`pdiff`).
    Members of a fine-tuned zoo share the base's neuron order (no alignment) and differ from each
    other by far less than their weights' spread (per-parameter standardization). The denoiser is
    256 wide and 4 deep: on mnist1d-conflict-many at 200 diffusion epochs, 128 x 3 ended at diffusion
    loss 0.23 with held-in members at 0.78 of the zoo median, 256 x 4 at 0.12 and 0.89 (held-out
    0.72 and 0.69)."""
    align, normalize = not fine_tuned, "parameter" if fine_tuned else "layer"
    if quick:
        return GeneratorConfig(
            align=align, normalize=normalize,
            chunk=32, autoencoder=AutoencoderConfig(d_model=32, latent_dim=32, depth=1),
            diffusion=DiffusionConfig(d_model=32, depth=1, prediction_type="sample"),
            encoder=EncoderConfig(d_model=32, depth=1, per_class=4),
            autoencoder_fit=FitOptions(epochs=20, batch_size=16, seed=seed),
            diffusion_fit=FitOptions(epochs=40, batch_size=16, seed=seed),
            steps=20,
        )  # fmt: skip
    return GeneratorConfig(
        align=align, normalize=normalize, chunk=64, autoencoder=AutoencoderConfig(d_model=128, latent_dim=64, depth=2),
        diffusion=DiffusionConfig(d_model=256, depth=4, prediction_type="sample"),
        encoder=EncoderConfig(d_model=64, depth=2, per_class=10),
        autoencoder_fit=FitOptions(epochs=100, batch_size=32, seed=seed),
        diffusion_fit=FitOptions(epochs=diffusion_epochs, batch_size=64, seed=seed),
        contrastive_epochs=100, steps=50,
    )  # fmt: skip


def pdiff_config(cfg: GeneratorConfig, quick: bool) -> GeneratorConfig:
    """Unconditional, on one task's 16 members: one batch an epoch, so epochs are steps."""
    steps = 40 if quick else 3000
    return replace(
        cfg, condition="none", autoencoder_fit=replace(cfg.autoencoder_fit, epochs=steps // 10, batch_size=16),
        diffusion_fit=replace(cfg.diffusion_fit, epochs=steps, batch_size=16),
    )  # fmt: skip


@dataclass
class Tasks:
    """The zoo's members by task; held-out tasks are one output order per class set."""

    keys: list[str]
    members: dict[str, list[int]]
    heldout: list[str]

    @classmethod
    def of(cls, zoo) -> Tasks:
        hps = stored_hparams(zoo, list(range(len(zoo))))
        members: dict[str, list[int]] = {}
        for i, hp in enumerate(hps):
            members.setdefault(task_key(hp), []).append(i)
        keys = sorted(members, key=lambda k: members[k][0])
        by_classes: dict[str, list[str]] = {}
        for k in keys:
            by_classes.setdefault(json.loads(k)["task.classes"], []).append(k)
        heldout = [group[j % len(group)] for j, group in enumerate(by_classes.values())]
        return cls(keys, members, heldout)

    @property
    def heldin(self) -> list[str]:
        return [k for k in self.keys if k not in self.heldout]

    def training_members(self) -> list[int]:
        return sorted(i for k in self.heldin for i in self.members[k])

    @functools.cached_property
    def checked(self) -> list[str]:
        """Every held-out task and at most MEMO_HELDIN evenly spaced held-in ones, in key order: the
        tasks of the memorization stage, of guided sampling and of the selected members."""
        heldin = set(self.heldin[:: math.ceil(len(self.heldin) / MEMO_HELDIN)])
        return [k for k in self.keys if k in self.heldout or k in heldin]


@functools.cache
def label_map(key: str) -> dict[int, int]:
    """A task's class -> output map (its classes through its label permutation)."""
    task = json.loads(key)
    classes = [int(c) for c in task["task.classes"].split(",")]
    perm = np.random.default_rng(int(task["task.label_perm"])).permutation(10) if task.get("task.label_perm") else None
    return {c: int(perm[c]) if perm is not None else c for c in classes}


def nearest_task(key: str, candidates: list[str]) -> str:
    """The candidate mapping the most of ``key``'s classes to the same outputs (then sharing most classes)."""
    mine = label_map(key)

    def score(other: str) -> tuple[int, int]:
        theirs = label_map(other)
        return sum(theirs.get(c) == o for c, o in mine.items()), len(set(theirs) & set(mine))

    return max(candidates, key=score)


def composed(zoo, key: str, train_flat: torch.Tensor, train_keys: list[str]) -> torch.Tensor:
    """An oracle recombination for task ``key``: each output's head row (weights and bias) is the
    mean of the training members that map the same class to that output, an output the task leaves
    unused comes from members that leave it unused too, and every other layer is the training mean.
    It is told the task's class -> output map, which a generator must read from samples: what
    recombining seen (class, output) pairs reaches, not an unconditioned baseline."""
    head = zoo.layout.names[-1].rsplit(".", 1)[0]
    weight, bias = zoo.layout[f"{head}.weight"], zoo.layout[f"{head}.bias"]
    outputs = bias.numel
    rows_w = train_flat[:, weight.offset : weight.stop].reshape(len(train_flat), outputs, -1)  # [N, O, H]
    rows_b = train_flat[:, bias.offset : bias.stop]  # [N, O]
    maps = [label_map(k) for k in train_keys]
    mine = {o: c for c, o in label_map(key).items()}
    flat = train_flat.mean(0).clone()
    head_w, head_b = flat[weight.offset : weight.stop].view(outputs, -1), flat[bias.offset : bias.stop]
    for o in range(outputs):
        c = mine.get(o)
        src = [i for i, m in enumerate(maps) if (m.get(c) == o if c is not None else o not in m.values())]
        if src:
            head_w[o], head_b[o] = rows_w[src, o].mean(0), rows_b[src, o].mean()
    return flat


def median_acc(zoo, flat: torch.Tensor, member: int) -> float:
    return float(np.median(zoo.evaluate(flat, member)["test_acc"]))


def generate(
    zoo, gen: WeightGenerator, members: list[int], n: int, seed: int, guidance: float | None = None,
    candidates: int | None = None,
) -> torch.Tensor:  # fmt: skip
    """``n`` members for the task of ``members``, conditioned on a set drawn from its training data
    (with ``candidates``: the ``n`` of that many draws with the lowest loss on that set)."""
    hp = stored_hparams(zoo, [members[0]])[0]
    cond = conditioning_set(zoo, hp, members[0], gen, seed)
    return gen.sample(n, cond, seed=seed, guidance=guidance, candidates=candidates)


def guided_ratios(zoo, gen: WeightGenerator, tasks: Tasks, guidance: float) -> dict[str, float]:
    """Median over the checked held-in / held-out tasks (``Tasks.checked``: guided sampling costs two
    denoiser passes a step) of generated / zoo median test accuracy at ``guidance``."""
    ratios: dict[str, list[float]] = {"held-in": [], "held-out": []}
    for i, key in enumerate(tasks.keys):
        if key not in tasks.checked:
            continue
        m = tasks.members[key]
        acc = zoo.evaluate(generate(zoo, gen, m, PER_TASK, seed=i, guidance=guidance), m[0])["test_acc"]
        split = "held-out" if key in tasks.heldout else "held-in"
        ratios[split].append(float(np.median(acc) / np.median(zoo.metric("test_acc", m))))
    return {k: float(np.median(v)) for k, v in ratios.items()}


def random_init(zoo, members: list[int]) -> torch.Tensor:
    """The members' seeded initializations ``[n, P]`` (as a from-scratch build would start them)."""
    arch = zoo.member_architecture(members[0])
    return torch.stack([init_params(arch, zoo.layout, member_config(h)) for h in stored_hparams(zoo, members)])


UNCONDITIONED = ("random_init", "base", "train_mean", "train_member")  # the baselines a generator must beat


def task_rows(zoo, tasks: Tasks, train_flat: torch.Tensor, train_keys: list[str], generated: dict) -> list[dict]:
    """Stage 2: one row per task (``baseline``: the best of its UNCONDITIONED figures)."""
    rng = np.random.default_rng(0)
    mean = train_flat.mean(0)
    random_members = train_flat[rng.choice(len(train_flat), size=min(PER_TASK, len(train_flat)), replace=False)]
    rows = []
    for key in tasks.keys:
        m = tasks.members[key]
        zoo_acc = zoo.metric("test_acc", m)
        gen_acc = zoo.evaluate(generated[key], m[0])["test_acc"]
        near = nearest_task(key, tasks.heldin if key in tasks.heldout else [k for k in tasks.heldin if k != key])
        rows.append({
            "task": key, "heldout": key in tasks.heldout,
            "gen_median": float(np.median(gen_acc)), "gen_q25": float(np.quantile(gen_acc, 0.25)),
            "gen_q75": float(np.quantile(gen_acc, 0.75)),
            "zoo_median": float(np.median(zoo_acc)), "zoo_best": float(zoo_acc.max()),
            "random_init": median_acc(zoo, random_init(zoo, m), m[0]),
            "base": median_acc(zoo, zoo.base_params(m[:1]), m[0]) if zoo.fine_tuned else float("nan"),
            "train_mean": median_acc(zoo, mean, m[0]), "train_member": median_acc(zoo, random_members, m[0]),
            "nearest_task": median_acc(zoo, zoo.params(tasks.members[near]), m[0]),
            "composed": median_acc(zoo, composed(zoo, key, train_flat, train_keys), m[0]),
        })  # fmt: skip
        rows[-1]["baseline"] = float(np.nanmax([rows[-1][k] for k in UNCONDITIONED]))
    return rows


def curves(zoo, members: list[int], init: torch.Tensor | None, epochs: int) -> np.ndarray:
    """Test accuracy ``[n, epochs + 1]`` of the members' own training setups started from ``init``."""
    task, hps = zoo_task(zoo), stored_hparams(zoo, members)
    arch = zoo.member_architecture(members[0])
    batch = int(zoo.attrs["spec"].get("batch_size", 128))
    trainer = GroupTrainer(
        arch, task.for_architecture(arch), [member_config(h) for h in hps], batch, "cpu",
        variants=[member_variant(h, task) for h in hps], init=init,
    )  # fmt: skip
    return trainer.train(epochs, list(range(epochs + 1))).metrics["test_acc"]


def epochs_to(curve: np.ndarray, target: float) -> np.ndarray:
    """First epoch at or above ``target`` per row; ``epochs + 1`` where never reached."""
    hit = curve >= target
    return np.where(hit.any(1), hit.argmax(1), curve.shape[1])


def finetune(
    zoo, tasks: Tasks, generated: dict[str, dict[str, torch.Tensor]], mean: torch.Tensor, epochs: int
) -> list[dict]:
    """Stage 3 on the held-out tasks; ``generated`` names each generated start (its members per task)."""
    rows = []
    for key in tasks.heldout:
        m = tasks.members[key]
        target = float(np.median(zoo.metric("test_acc", m)))
        starts = {name: members[key][: len(m)] for name, members in generated.items()}
        starts |= {"random": random_init(zoo, m)} | ({"base": zoo.base_params(m)} if zoo.fine_tuned else {})
        starts["train_mean"] = mean.expand(len(m), -1)
        row = {"task": key, "target": target}
        for name, init in starts.items():
            curve = curves(zoo, m, init, epochs)
            row[name] = epochs_to(curve, target).tolist()
            row[f"{name}_acc0"] = float(np.median(curve[:, 0]))
        rows.append(row)
    return rows


def agreement(fn: Functional, a: torch.Tensor, b: torch.Tensor, x: torch.Tensor) -> np.ndarray:
    """Fraction of inputs ``x`` on which each row of ``a`` predicts what the row of ``b`` does."""
    return (fn.outputs(a, x).argmax(-1) == fn.outputs(b, x).argmax(-1)).float().mean(1).numpy()


def memorization(
    zoo, tasks: Tasks, generated: dict[str, dict[str, torch.Tensor]], train_flat: torch.Tensor, train_keys
) -> dict:
    """Stage 4: for each named set of generated members (``generated["gen"]``, the plain draws, gives
    the noise's spread), the nearest training member after alignment (``<name>_dist``,
    ``<name>_agree``, ``<name>_same_task``); once, independent pairs and a member plus noise."""
    aligner = Aligner(zoo.layout, zoo.perm_spec, "weight")
    fn = Functional(zoo.member_architecture(0))
    out: dict[str, list] = {"pair_dist": [], "pair_agree": [], "noise_dist": [], "noise_agree": [], "heldout": []}
    for name in generated:
        out |= {f"{name}_dist": [], f"{name}_agree": [], f"{name}_same_task": []}
    gen = torch.Generator().manual_seed(0)
    for key in tasks.checked:
        m = tasks.members[key]
        x = hparams_data(zoo, stored_hparams(zoo, [m[0]])[0], zoo.member_architecture(m[0])).x_test
        out["heldout"] += [key in tasks.heldout] * MEMO_PER_TASK
        for name, members in generated.items():
            for g in members[key][:MEMO_PER_TASK]:
                aligned = aligner.align(g, train_flat)[0]
                dist = (aligned - g).norm(dim=1)
                j = int(dist.argmin())
                out[f"{name}_dist"].append(float(dist[j]))
                out[f"{name}_agree"].append(float(agreement(fn, g[None], aligned[j][None], x)[0]))
                out[f"{name}_same_task"].append(train_keys[j] == key)
        a, b = zoo.params(m[:2]).float()
        b = aligner.align(a, b)[0]
        out["pair_dist"].append(float((a - b).norm()))
        out["pair_agree"].append(float(agreement(fn, a[None], b[None], x)[0]))
        spread = generated["gen"][key].std(0)
        source = train_flat[train_keys.index(key)] if key in train_keys else a
        noisy = source + spread * torch.randn(source.shape, generator=gen)
        out["noise_dist"].append(float((noisy - source).norm()))
        out["noise_agree"].append(float(agreement(fn, noisy[None], source[None], x)[0]))
    return {k: np.asarray(v) for k, v in out.items()}


def pdiff(zoo, tasks: Tasks, cfg: GeneratorConfig) -> dict:
    """Stage 5: p-diff on the first held-in task's members."""
    key = tasks.heldin[0]
    m = tasks.members[key]
    trained = train_generator(zoo, members=m, config=cfg, progress=sys.stderr.isatty())
    flat = trained.generator.sample(PER_TASK, seed=0)
    gen_acc, orig = zoo.evaluate(flat, m[0])["test_acc"], zoo.metric("test_acc", m)
    aligner = Aligner(zoo.layout, zoo.perm_spec, "weight")
    members = zoo.params(m).float()
    nearest = [float((aligner.align(g, members)[0] - g).norm(dim=1).min()) for g in flat[:4]]
    a, b = members[:2]
    pair = float((aligner.align(a, b)[0] - a).norm())
    return {
        "task": key, "gen_median": float(np.median(gen_acc)), "orig_median": float(np.median(orig)),
        "gen_best": float(gen_acc.max()), "orig_best": float(orig.max()), "seconds": trained.seconds,
        "nn_distance_ratio": float(np.median(nearest) / pair),
    }  # fmt: skip


def selected_rows(zoo, tasks: Tasks, selected: dict, rows: list[dict]) -> list[dict]:
    """Stage 2's ``rows`` of the tasks in ``selected``, each with its selected members' median test
    accuracy (``sel_median``)."""
    by_task = {r["task"]: r for r in rows}
    return [by_task[k] | {"sel_median": median_acc(zoo, flat, tasks.members[k][0])} for k, flat in selected.items()]


def show_tasks(rows: list[dict]) -> None:
    cols = ["gen_median", "gen_q25", "gen_q75", "zoo_median", "zoo_best", "random_init", "base", "train_mean",
            "train_member", "nearest_task", "composed"]  # fmt: skip
    print(f"{'task':<46} {'split':<8}" + "".join(f"{c:>13}" for c in cols))
    for r in rows:
        t = json.loads(r["task"])
        name = f"classes {t['task.classes']} perm {t['task.label_perm']}"
        print(f"{name:<46} {'held-out' if r['heldout'] else 'held-in':<8}" + "".join(f"{r[c]:>13.4f}" for c in cols))


@dataclass(frozen=True)
class Record:
    """What the benchmark reports of the generator's training."""

    seconds: float
    autoencoder_loss: float
    diffusion_loss: float


def trained_generator(zoo, members: list[int], cfg: GeneratorConfig, folder) -> tuple[WeightGenerator, Record]:
    """The generator trained on ``members``: loaded from ``folder`` when one with this configuration
    and these members was saved there, else trained (and saved there when ``folder`` is given)."""
    record = None if folder is None else folder / "training.json"
    key = {"config": json.loads(json.dumps(cfg.to_dict())), "members": [int(m) for m in members]}
    if record is not None and record.exists():
        saved = json.loads(record.read_text())
        if {k: saved[k] for k in key} != key:
            raise SystemExit(f"{folder}: the saved generator was trained with another configuration or members")
        fields = ("seconds", "autoencoder_loss", "diffusion_loss")
        return WeightGenerator.load(folder), Record(*(saved[k] for k in fields))
    trained = train_generator(zoo, members=members, config=cfg, progress=sys.stderr.isatty())
    out = Record(trained.seconds, trained.autoencoder.loss[-1], trained.diffusion.loss[-1])
    if folder is not None:
        trained.generator.save(folder)
        record.write_text(json.dumps({**key, **out.__dict__}))
    return trained.generator, out


def main() -> None:
    args = zoo_arguments(
        __doc__, "the tiny zoo and small models (minutes)",
        zoo={"default": "mnist1d-conflict-many", "choices": list(ZOOS)},
        diffusion_epochs={"type": int, "default": 500, "help": "the conditional denoiser's epochs"},
        generator={"type": Path, "default": None, "help": "keep the trained generator here and reuse it"},
        seed={"type": int, "default": 0, "help": "the generators' training seed"},
    )  # fmt: skip
    torch.manual_seed(args.seed)
    path, _ = built(ZOOS[args.zoo] if args.quick else args.zoo, args.zoos)
    result: dict = {"zoo": args.zoo, "quick": args.quick, "torch": torch.__version__}
    result |= {"threads": torch.get_num_threads(), "diffusion_epochs": args.diffusion_epochs, "seed": args.seed}
    with open_zoo(path) as zoo:
        cfg = config(args.quick, zoo.fine_tuned, args.diffusion_epochs, args.seed)
        tasks = Tasks.of(zoo)
        train_members = tasks.training_members()
        gen, trained = trained_generator(zoo, train_members, cfg, args.generator)
        train_keys = [task_key(h) for h in stored_hparams(zoo, train_members)]
        train_flat = zoo.params(train_members).float()
        if cfg.align:
            train_flat = Aligner(zoo.layout, zoo.perm_spec, "weight").align(gen.base, train_flat)[0]
        start = time.perf_counter()
        generate(zoo, gen, tasks.members[tasks.keys[0]], 100, seed=99)
        sample_s = time.perf_counter() - start
        generated = {k: generate(zoo, gen, tasks.members[k], PER_TASK, seed=i) for i, k in enumerate(tasks.keys)}
        seeds = {k: i for i, k in enumerate(tasks.keys)}  # the same conditioning sets as `generated`
        selected = {k: generate(zoo, gen, tasks.members[k], PER_TASK, seeds[k], candidates=CANDIDATES)
                    for k in tasks.checked}  # fmt: skip
        guided = guided_ratios(zoo, gen, tasks, 2.0)
        with torch.no_grad():
            rec = gen.autoencoder.reconstruct(train_flat[:64])
        rec_acc = zoo.evaluate(rec, train_members[:64])["test_acc"] / zoo.metric("test_acc", train_members[:64])
        rows = task_rows(zoo, tasks, train_flat, train_keys, generated)
        print(f"generator: {len(train_members)} members of {len(tasks.heldin)} tasks; trained in "
              f"{trained.seconds:.0f} s (autoencoder loss {trained.autoencoder_loss:.4f}, diffusion loss "
              f"{trained.diffusion_loss:.4f}); 100 members sampled in {sample_s:.1f} s")  # fmt: skip
        print(f"autoencoder reconstruction: test accuracy / original, median {np.median(rec_acc):.3f}\n")
        show_tasks(rows)
        picked = selected_rows(zoo, tasks, selected, rows)
        epochs = FINETUNE_EPOCHS
        ft = finetune(zoo, tasks, {"generated": generated, "selected": selected}, train_flat.mean(0), epochs)
        memo = memorization(zoo, tasks, {"gen": generated, "sel": selected}, train_flat, train_keys)
        pd = pdiff(zoo, tasks, pdiff_config(cfg, args.quick))

    heldin = [r for r in rows if not r["heldout"]]
    heldout = [r for r in rows if r["heldout"]]
    ratio = lambda rs, a, b: float(np.median([r[a] / r[b] for r in rs]))  # noqa: E731
    print("\nsummary (medians over tasks)")
    for name, rs in (("held-in", heldin), ("held-out", heldout)):
        print(f"  {name:<9} generated/zoo median {ratio(rs, 'gen_median', 'zoo_median'):.3f}   "
              f"generated/nearest task {ratio(rs, 'gen_median', 'nearest_task'):.3f}")  # fmt: skip
    print(f"  held-out generated / best unconditioned baseline: {ratio(heldout, 'gen_median', 'baseline'):.3f}")
    print(f"  held-out composed (oracle recombination)/zoo median {ratio(heldout, 'composed', 'zoo_median'):.3f}")
    print(f"  with classifier-free guidance 2.0 (checked tasks): held-in {guided['held-in']:.3f}, "
          f"held-out {guided['held-out']:.3f}")  # fmt: skip
    sel_in, sel_out = [r for r in picked if not r["heldout"]], [r for r in picked if r["heldout"]]
    print(f"\nselected: the {PER_TASK} of {CANDIDATES} draws with the lowest loss on the conditioning set "
          f"(generated/zoo median, medians over tasks)")  # fmt: skip
    for name, rs in ((f"held-in ({len(sel_in)} tasks)", sel_in), (f"held-out ({len(sel_out)} tasks)", sel_out)):
        print(f"  {name:<22} drawn {ratio(rs, 'gen_median', 'zoo_median'):.3f}   "
              f"selected {ratio(rs, 'sel_median', 'zoo_median'):.3f}")  # fmt: skip
    print(f"  held-out selected / best unconditioned baseline: {ratio(sel_out, 'sel_median', 'baseline'):.3f}")

    print(f"\nfine-tuning on held-out tasks ({epochs} epochs; epochs to the task's zoo median, mean over members)")
    starts = [s for s in ("generated", "selected", "random", "base", "train_mean") if s in ft[0]]
    print(f"{'task':<46}{'target':>8}" + "".join(f"{s:>12}{s[:4] + ' acc0':>12}" for s in starts))
    for r in ft:
        t = json.loads(r["task"])
        print(f"{'classes ' + t['task.classes'] + ' perm ' + str(t['task.label_perm']):<46}{r['target']:>8.4f}"
              + "".join(f"{np.mean(r[s]):>12.2f}{r[s + '_acc0']:>12.4f}" for s in starts))  # fmt: skip
    ft_means = {s: float(np.mean([e for r in ft for e in r[s]])) for s in starts}
    never = {s: int(sum(e > epochs for r in ft for e in r[s])) for s in starts}
    print("  all: " + ", ".join(f"{s} {ft_means[s]:.2f} epochs ({never[s]} never)" for s in starts))

    print("\nmemorization (L2 after weight matching; agreement = share of test inputs predicted alike)")
    print(f"{'':<44}{'distance':>12}{'agreement':>12}")
    for name, d, a in (
        ("generated -> nearest training member", memo["gen_dist"], memo["gen_agree"]),
        ("  held-in tasks", memo["gen_dist"][~memo["heldout"]], memo["gen_agree"][~memo["heldout"]]),
        ("  held-out tasks", memo["gen_dist"][memo["heldout"]], memo["gen_agree"][memo["heldout"]]),
        ("selected -> nearest training member", memo["sel_dist"], memo["sel_agree"]),
        ("two independent members of one task", memo["pair_dist"], memo["pair_agree"]),
        ("training member + noise of generated spread", memo["noise_dist"], memo["noise_agree"]),
    ):
        print(f"{name:<44}{np.median(d):>12.3f}{np.median(a):>12.3f}")
    same = float(memo["gen_same_task"][~memo["heldout"]].mean()) if (~memo["heldout"]).any() else float("nan")
    print(f"  nearest training member is of the generated member's own task (held-in): {same:.2f}")
    print(f"\np-diff on {pd['task']}: generated median {pd['gen_median']:.4f} (best {pd['gen_best']:.4f}) vs "
          f"original median {pd['orig_median']:.4f} (best {pd['orig_best']:.4f}); nearest/pair distance "
          f"{pd['nn_distance_ratio']:.3f}; trained in {pd['seconds']:.0f} s")  # fmt: skip

    result |= {
        "heldin_ratio": ratio(heldin, "gen_median", "zoo_median"),
        "heldout_ratio": ratio(heldout, "gen_median", "zoo_median"),
        "heldout_vs_best_baseline": ratio(heldout, "gen_median", "baseline"),
        "heldout_vs_nearest_task": ratio(heldout, "gen_median", "nearest_task"),
        "heldout_composed_ratio": ratio(heldout, "composed", "zoo_median"),
        "heldin_ratio_guidance2": guided["held-in"],
        "heldout_ratio_guidance2": guided["held-out"],
        "finetune_epoch_ratio": ft_means["generated"] / ft_means["random"],
        "finetune_epoch_ratio_vs_base": ft_means["generated"] / ft_means["base"] if "base" in ft_means else None,
        "finetune_epochs": ft_means,
        "nn_distance_ratio": float(np.median(memo["gen_dist"]) / np.median(memo["pair_dist"])),
        "candidates": CANDIDATES,
        "heldin_ratio_checked": ratio(sel_in, "gen_median", "zoo_median"),
        "heldin_ratio_selected": ratio(sel_in, "sel_median", "zoo_median"),
        "heldout_ratio_selected": ratio(sel_out, "sel_median", "zoo_median"),
        "heldout_vs_best_baseline_selected": ratio(sel_out, "sel_median", "baseline"),
        "finetune_epoch_ratio_selected": ft_means["selected"] / ft_means["random"],
        "nn_distance_ratio_selected": float(np.median(memo["sel_dist"]) / np.median(memo["pair_dist"])),
        "nn_agreement_selected": float(np.median(memo["sel_agree"])),
        "nn_agreement": float(np.median(memo["gen_agree"])),
        "pair_agreement": float(np.median(memo["pair_agree"])),
        "nearest_same_task": same,
        "pdiff_generated_vs_original": pd["gen_median"] / pd["orig_median"],
        "pdiff_nn_distance_ratio": pd["nn_distance_ratio"],
        "reconstruction_acc_ratio": float(np.median(rec_acc)),
        "train_s": round(trained.seconds, 1),
        "sample_100_s": round(sample_s, 2),
    }
    result["targets"] = targets(result)
    result["targets_selected"] = targets(result, "_selected")  # held-in on the checked tasks only
    print(json.dumps(result))


def targets(r: dict, suffix: str = "") -> dict[str, bool]:
    """The issue's four targets on the figures ``<key><suffix>`` of ``r``."""
    return {
        "heldin_at_least_0.9": r[f"heldin_ratio{suffix}"] >= 0.9,
        "heldout_above_every_unconditioned_baseline": r[f"heldout_vs_best_baseline{suffix}"] > 1.0,
        "heldout_at_least_0.7": r[f"heldout_ratio{suffix}"] >= 0.7,
        "finetune_at_most_one_third": r[f"finetune_epoch_ratio{suffix}"] <= 1 / 3,
    }


if __name__ == "__main__":
    main()
