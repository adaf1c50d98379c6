"""Fine-tuned zoos: the trained weights members start from instead of a random init.

A spec's ``base`` names members of another zoo (a path or an ``hf://`` URL; one member for all, or
each member's own through the hyperparameter ``base.member``); its ``pretrain`` trains one base
first, with the spec's architecture, on a task of its own. Either way the base parameters are
resolved once, when the zoo is created, and stored with it (with their source and checksums), so
a resumed build starts every member from exactly the same weights.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from ..errors import SpecError, StoreError
from . import archs
from .opener import open_zoo
from .spec import BASE_MEMBER, ZooSpec
from .tasks import load_task


@dataclass
class Bases:
    """The base rows ``[K, P]`` members start from and where they came from (the zoo's ``base``
    attribute: ``members``, the base-zoo member of each row, None for a pretrained base; checksums)."""

    params: np.ndarray
    source: dict[str, Any]


def checksum(row: np.ndarray) -> str:
    """sha256 of one base row's float32 bytes (little-endian): what a zoo records of its base."""
    return hashlib.sha256(np.ascontiguousarray(row, dtype="<f4").tobytes()).hexdigest()


def resolve_bases(spec: ZooSpec, hparams: Sequence[Mapping[str, Any]], device: str = "cpu") -> Bases:
    """The bases of a fine-tuning spec: the base zoo's members the members name, or a pretrained one."""
    if spec.pretrain is not None:
        return _pretrained(spec, device)
    if spec.base is None:
        raise SpecError(f"spec {spec.name!r}: neither 'base' nor 'pretrain' is given; members start from an init")
    wanted = sorted({int(hp[BASE_MEMBER]) for hp in hparams}) if spec.base.member is None else [spec.base.member]
    return _from_zoo(spec, wanted)


def _from_zoo(spec: ZooSpec, wanted: list[int]) -> Bases:
    """Rows of the base zoo's members ``wanted``, checked against the members' architecture."""
    base = spec.base
    try:
        zoo = open_zoo(base.zoo)
    except StoreError as exc:
        raise StoreError(f"spec {spec.name!r}: base zoo {base.zoo}: {str(exc).split(': ', 1)[-1]}") from None
    with zoo:
        outside = [m for m in wanted if not 0 <= m < len(zoo)]
        if outside:
            raise SpecError(f"spec {spec.name!r}: base member {outside[0]} is not in {base.zoo} ({len(zoo)} members)")
        layout = archs.describe(spec.architecture)[1]
        for m in wanted:
            theirs = zoo.member_layout(m)
            if [(e.name, e.shape) for e in theirs] != [(e.name, e.shape) for e in layout]:
                raise SpecError(
                    f"spec {spec.name!r}: base member {m} of {base.zoo} has another architecture ({theirs.size} "
                    f"parameters in {len(theirs)} tensors; the members have {layout.size} in {len(layout)})"
                )
        rows = zoo.params(wanted, base.epoch).numpy()[:, : layout.size]  # a chunk that fails its checksum raises
        epoch = zoo.epochs[zoo.epoch_index(base.epoch)]
        source = {"zoo": base.zoo, "zoo_name": zoo.name, "members": wanted, "epoch": epoch}
    return Bases(rows, source | {"sha256": [checksum(r) for r in rows]})


def _pretrained(spec: ZooSpec, device: str) -> Bases:
    """One member of the spec's architecture trained on the pretrain task: the base of every member."""
    from .train import train_group

    pre = spec.pretrain
    task = load_task(pre.task, **pre.task_options)
    result = train_group(
        spec.architecture, task, [pre.hparams], epochs=pre.epochs, checkpoint_epochs=[pre.epochs],
        batch_size=pre.batch_size, device=device,
    )  # fmt: skip
    row = result.params[:, -1]
    metrics = {k: float(v[0, -1]) for k, v in result.metrics.items()}
    source = {"pretrain": {"task": pre.task, "task_options": pre.task_options, "epochs": pre.epochs,
                           "batch_size": pre.batch_size, "hparams": pre.hparams, "metrics": metrics}}  # fmt: skip
    return Bases(row, source | {"members": [None], "sha256": [checksum(row[0])], "numerics": result.numerics})

