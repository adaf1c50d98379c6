"""Generated members as a zoo: weights drawn for a task, evaluated on it, written as a ZooStore.

A task is named as a variant of the training zoo's task (``classes=0,3,5 label_perm=2``, the
``task.*`` hyperparameters without their prefix) or as the task of a zoo member
(``like_member``). The generated store carries the zoo's spec and each generated member the
hyperparameters of a member of that task, so ``weightzoo.zoo.evaluate`` (and every other tool)
reads it like any built zoo; its metrics are computed that way before it is published.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor

from ..._fs import ensure_writable
from ...errors import SpecError, StoreError
from ...zoo.evaluate import hparams_data, stored_hparams, zoo_task
from ...zoo.opener import open_zoo
from ...zoo.store import ZooStore, opened, staged_store
from ...zoo.train.variants import PREFIX, VARIANT_KEYS, TaskVariant, class_text, member_variant
from .dataset import TaskSamples
from .generator import WeightGenerator, member_aligner, task_key, task_labels


@dataclass(frozen=True)
class GeneratedMembers:
    """What :func:`generate_members` wrote: the store, the task and the members' metrics."""

    path: Path
    task: str
    params: Tensor
    metrics: dict[str, np.ndarray]


def parse_task(text: str) -> dict[str, Any]:
    """``"classes=0,3,5 label_perm=2"`` (pairs separated by spaces or ``;``) -> ``task.*`` hparams."""
    out: dict[str, Any] = {}
    for item in text.replace(";", " ").split():
        key, sep, value = item.partition("=")
        if not sep or not value:
            raise SpecError(f"--task {text!r}: write KEY=VALUE pairs like 'classes=0,3,5 label_perm=2'")
        if key not in VARIANT_KEYS:
            raise SpecError(f"--task {text!r}: unknown key {key!r}; valid: {', '.join(VARIANT_KEYS)}")
        out[PREFIX + key] = value if key in ("classes", "flip") else _number(value)
    if not out:
        raise SpecError("--task: name the task, e.g. 'classes=0,3,5 label_perm=2'")
    variant = TaskVariant.from_hparams(out)  # canonical values, checked
    for key in out:
        name = key[len(PREFIX) :]
        value = getattr(variant, name)
        out[key] = class_text(value) if name == "classes" else value
    return out


def _number(text: str) -> int | float | str:
    """``"2"`` -> 2, ``"0.5"`` -> 0.5; other text unchanged (the variant check names it)."""
    for kind in (int, float):
        try:
            return kind(text)
        except ValueError:
            pass
    return text


def _template(zoo: ZooStore, generator: WeightGenerator, task: str | None, like_member: int | None) -> tuple[dict, int]:
    """The hyperparameters the generated members get and the zoo member whose architecture and
    (for ``like_member``) weights they share."""
    if (task is None) == (like_member is None):
        raise SpecError("generate sample: give exactly one of --task VARIANT or --like-member I")
    if like_member is not None:
        if not 0 <= like_member < len(zoo):
            raise SpecError(f"--like-member {like_member}: the zoo {zoo.path} has members 0..{len(zoo) - 1}")
        return stored_hparams(zoo, [like_member])[0], like_member
    wanted = parse_task(task)
    source = int(generator.meta["members"][0]) if generator.meta.get("members") else 0
    hp = {k: v for k, v in stored_hparams(zoo, [source])[0].items() if not k.startswith(PREFIX)}
    hp.update(wanted)
    member_variant(hp, zoo_task(zoo))  # a variant the task cannot take is refused here
    return hp, source


def conditioning_set(
    zoo: ZooStore, hparams: dict[str, Any], member: int, generator: WeightGenerator, seed: int
) -> tuple[Tensor, Tensor]:
    """``per_class`` labeled training samples of each class of the task ``hparams`` names."""
    data = hparams_data(zoo, hparams, zoo.member_architecture(member))
    labels = task_labels(data)
    generator.check_labels(labels, f"task {task_key(hparams)}")
    samples = TaskSamples.from_data(data.x_train, data.y_train, labels, f"task {task_key(hparams)}")
    return samples.draw(generator.config.encoder.per_class, torch.Generator().manual_seed(int(seed)))


def check_zoo(zoo: ZooStore, generator: WeightGenerator) -> None:
    """Refuse a zoo whose layout is not the generator's."""
    if zoo.mixed or zoo.layout.to_dict() != generator.layout.to_dict():
        raise SpecError(
            f"{zoo.path}: its layout differs from the generator's (trained on {generator.meta.get('zoo')!r}); "
            "sample with --zoo set to a zoo of that architecture"
        )


def generate_members(
    generator: WeightGenerator,
    out: str | os.PathLike,
    *,
    zoo: ZooStore | str | os.PathLike | None = None,
    task: str | None = None,
    like_member: int | None = None,
    n: int = 16,
    seed: int = 0,
    conditioning: tuple[Tensor, Tensor] | None = None,
    candidates: int | None = None,
    overwrite: bool = False,
    device: str = "cpu",
) -> GeneratedMembers:
    """Generate ``n`` members for a task (``task`` text or ``like_member``) of ``zoo`` (default the
    generator's training zoo), evaluate them on it and write them to ``out`` as a zoo. The
    conditioning set is drawn from the task's training data unless ``conditioning`` gives one; with
    ``candidates``, the ``n`` of that many draws that fit it best are kept (see
    :meth:`~.generator.WeightGenerator.sample`)."""
    if n < 1:
        raise SpecError(f"--n must be >= 1, got {n}")
    generator.check_candidates(n, candidates)
    if Path(out).exists() and not overwrite:
        raise StoreError(f"{out}: already exists; choose another path or pass overwrite=True (--overwrite)")
    ensure_writable(out)
    with opened(zoo if zoo is not None else generator.meta["zoo_path"], open_zoo) as z:
        check_zoo(z, generator)
        hp, member = _template(z, generator, task, like_member)
        cond = None
        if generator.conditional:
            cond = conditioning if conditioning is not None else conditioning_set(z, hp, member, generator, seed)
        base = None
        if generator.partial and like_member is not None:
            base = z.params([like_member]).float()[0]
            if generator.config.align:
                base = member_aligner(z.layout, z.perm_spec, z.path).align(generator.base.cpu(), base)[0]
        generator = generator.to(device)
        flat = generator.sample(n, cond, base=base, seed=seed, candidates=candidates).cpu()
        source = {
            "generated": {
                "generator_zoo": generator.meta.get("zoo"), "task": task_key(hp), "like_member": like_member,
                "seed": seed, "n": n, "candidates": candidates, "condition": generator.config.condition,
                "layers": list(generator.config.layers) if generator.partial else None,
            }
        }  # fmt: skip
        columns = {k: [v] * n for k, v in hp.items()} | {"sample": list(range(n))}
        metrics = write_members(z, flat, columns, source, out, overwrite)
    return GeneratedMembers(Path(out), task_key(hp), flat, metrics)


def write_members(
    zoo: ZooStore,
    flat: Tensor,
    hparams: dict[str, list],
    source: dict[str, Any],
    out: str | os.PathLike,
    overwrite: bool = False,
) -> dict[str, np.ndarray]:
    """Write weights ``flat [n, P]`` of ``zoo``'s architecture as a new zoo at ``out`` (staged,
    published whole), with their metrics on their tasks computed by ``zoo.evaluate``."""
    params = flat[:, None].numpy()
    with staged_store(out, overwrite=overwrite) as tmp:
        store = ZooStore.create(
            tmp, zoo.layout, architecture=zoo.architecture, arch_overrides=zoo.attrs.get("arch_overrides") or (),
            epochs=[0], spec=zoo.attrs.get("spec"), source=source, expected_members=len(flat), lock=False,
        )  # fmt: skip
        try:
            rows = store.append(params, hparams=hparams)
            metrics = store.evaluate(flat, list(range(len(flat))))
            store.write(rows, params, metrics={k: v[:, None] for k, v in metrics.items()})
        finally:
            store.close()
    return metrics
