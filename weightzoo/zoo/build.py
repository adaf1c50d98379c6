"""The zoo builder: plan -> skip members already done -> train groups -> write -> mark done.

Members are planned into fixed groups (same architecture and optimizer, in member order) that
depend only on the spec, so a resumed build trains exactly the groups an uninterrupted one
would and stores identical parameters. A group's members are written, then marked done in
one write; killing the process at any moment loses at most the groups in flight.
"""

from __future__ import annotations

import errno
import functools
import json
import os
import time
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from tqdm import tqdm

from .._fs import remove, writer_lock
from ..errors import SpecError, StoreError, WeightZooError
from . import archs
from .backends import ZarrBackend, backend_for
from .finetune import resolve_bases
from .spec import ZooSpec, load_spec
from .store import ZooStore, staged_store
from .store.bases import row_index
from .tasks import load_task
from .train.config import BASE_MEMBER
from .train.numerics import NumericPath, numeric_path
from .train.variants import TaskVariant
from .transfer import convert_zoo

DEFAULT_MEMORY = 2 << 30  # bytes a training group may use
MAX_GROUP = 256


class ExecutorError(WeightZooError):
    """A Dask scheduler cannot be reached or a worker failed."""


@dataclass(frozen=True)
class GroupPlan:
    """Members trained together: one architecture, one optimizer, fixed composition."""

    members: tuple[int, ...]
    architecture: dict
    hparams: tuple[dict, ...]


@dataclass
class BuildReport:
    path: Path
    members: int
    trained: int
    already_done: int
    seconds: float

    @property
    def members_per_s(self) -> float:
        return self.trained / self.seconds if self.seconds > 0 else 0.0


# -------------------------------------------------------------------- planning


def plan_groups(spec: ZooSpec, memory_bytes: int = DEFAULT_MEMORY) -> list[GroupPlan]:
    """Split the members into training groups (one architecture, optimizer and input variant each);
    deterministic in the spec (and the budget)."""
    from .train import group_size_for

    task = spec.load_task()
    by_key: dict[str, list[int]] = {}
    hparams = [spec.member_hparams(i) for i in range(spec.members)]
    arch_of: dict[str, dict] = {}
    for i, hp in enumerate(hparams):
        arch = spec.member_architecture(hp)
        inputs = TaskVariant.from_hparams(hp).input_key  # members sharing inputs train together
        key = json.dumps([arch, hp.get("optimizer"), inputs], sort_keys=True)
        arch_of[key] = arch
        by_key.setdefault(key, []).append(i)
    groups = []
    for key in sorted(by_key, key=lambda k: by_key[k][0]):
        arch = arch_of[key]
        size = spec.group_size or min(MAX_GROUP, max(1, group_size_for(arch, task, spec.batch_size, memory_bytes)))
        members = by_key[key]
        for s in range(0, len(members), size):
            chunk = tuple(members[s : s + size])
            groups.append(GroupPlan(chunk, arch, tuple(hparams[i] for i in chunk)))
    return groups


def train_planned(job: dict, group: GroupPlan, device: str = "cpu"):
    """Train one planned group (runs in this process or on a Dask worker); ``job`` is
    :func:`_job` of the spec and the zoo: plain data, cheap to ship to workers."""
    from .train import train_group

    task = load_task(job["task"], **job["task_options"])
    init = None
    if job["base_rows"] is not None:  # fine-tuning: each member starts from its base
        members = job["base_members"]
        rows = row_index(members, [hp.get(BASE_MEMBER) for hp in group.hparams])
        init = torch.from_numpy(job["base_rows"][rows])
    return train_group(
        group.architecture,
        task,
        group.hparams,
        epochs=job["epochs"],
        checkpoint_epochs=job["checkpoint_epochs"],
        batch_size=job["batch_size"],
        device=device,
        init=init,
    )


# -------------------------------------------------------------------- executors


def run_local(spec: ZooSpec, groups: list[GroupPlan], device: str, zoo: ZooStore) -> Iterator[tuple[GroupPlan, Any]]:
    """Train groups one after another in this process."""
    job = _job(spec, zoo)
    for g in groups:
        yield g, train_planned(job, g, device)


def run_dask(
    spec: ZooSpec, groups: list[GroupPlan], zoo: ZooStore, *, scheduler: str | None, workers: int | None
) -> Iterator[tuple[GroupPlan, Any]]:
    """Train groups on Dask workers; results come back here, where the one writer stores them."""
    try:
        from distributed import Client, LocalCluster, as_completed
    except ImportError:
        raise SpecError("--executor dask needs the distributed extra: pip install 'weightzoo[distributed]'") from None
    cluster = None
    try:
        if scheduler:
            client = Client(scheduler, timeout="5s")
        else:
            cluster = LocalCluster(n_workers=workers or 2, threads_per_worker=1, processes=True, dashboard_address=None)
            client = Client(cluster)
    except (OSError, TimeoutError) as exc:
        raise ExecutorError(
            f"cannot reach Dask scheduler {scheduler!r} ({exc}); check the address and that it runs"
        ) from None
    try:
        job = _job(spec, zoo)
        futures = {client.submit(train_planned, job, g, pure=False): g for g in groups}
        for fut in as_completed(futures):
            yield futures[fut], fut.result()
    finally:
        client.close()
        if cluster is not None:
            cluster.close()


def _job(spec: ZooSpec, zoo: ZooStore) -> dict:
    """What a worker needs to train any group of ``spec`` into ``zoo``: the training budget and, for a
    fine-tuned zoo, the stored base rows (read from the zoo, so a resumed build starts from them too)."""
    return {
        "task": spec.task,
        "task_options": dict(spec.task_options),
        "epochs": spec.epochs,
        "checkpoint_epochs": list(spec.checkpoint_epochs),
        "batch_size": spec.batch_size,
        "base_rows": np.atleast_2d(zoo.base_params().numpy()) if zoo.fine_tuned else None,
        "base_members": zoo.attrs["base"]["members"] if zoo.fine_tuned else None,
    }


# -------------------------------------------------------------------- the build


def _open_or_create(spec: ZooSpec, out: Path, overwrite: bool, device: str) -> ZooStore:
    """Open the store of this spec for appending, creating it (atomically, with the base weights of
    a fine-tuning spec) if needed."""
    if out.exists() and not overwrite:
        zoo = ZooStore(out, "a")
        try:
            _check_same_spec(zoo, spec)
        except StoreError:
            zoo.close()
            raise
        return zoo
    hparams = [spec.member_hparams(i) for i in range(spec.members)]
    archs_seen = {json.dumps(spec.member_architecture(hp), sort_keys=True) for hp in hparams}
    layouts = sorted({archs.describe(json.loads(a))[1] for a in archs_seen}, key=lambda lay: lay.size)
    if spec.fine_tuned and len(layouts) > 1:
        raise SpecError(f"spec {spec.name!r}: fine-tuned members must share one layout; they have {len(layouts)}")
    task = spec.load_task()
    bases = resolve_bases(spec, hparams, device) if spec.fine_tuned else None  # before anything is written
    with staged_store(out, overwrite=True) as tmp:
        store = ZooStore.create(
            tmp,
            layouts[-1],  # the largest: every member's flat vector fits in its rows
            lock=False,
            architecture=spec.architecture,
            epochs=spec.checkpoint_epochs,
            spec=spec.to_dict() | {"fingerprint": spec.fingerprint()},
            arch_overrides=spec.arch_hparams,
            source={"builder": "weightzoo zoo build", "task": spec.task, "metrics": list(task.metric_names)},
            capacity=spec.members,
            expected_members=spec.members,
            mixed_layouts=len(layouts) > 1,
        )
        with store:
            if bases is not None:
                store.set_base(bases.params, bases.source)
    return ZooStore(out, "a")


def _check_same_spec(zoo: ZooStore, spec: ZooSpec) -> None:
    """Refuse to continue a store that was built from another spec."""
    stored = zoo.attrs.get("spec") or {}
    if stored.get("fingerprint") != spec.fingerprint():
        raise StoreError(
            f"{zoo.path}: holds a zoo of a different spec ({stored.get('name')!r}, fingerprint "
            f"{stored.get('fingerprint')}); use another --out or pass --overwrite to replace it"
        )


def _columns(group: GroupPlan, positions: list[int], task) -> dict[str, list]:
    """Hyperparameter columns of a group's members, plus what their target is (label, ...)."""
    names = sorted({k for hp in group.hparams for k in hp})
    columns = {k: [group.hparams[p].get(k) for p in positions] for k in names}
    if task.per_member:
        targets = torch.as_tensor(columns["target"])
        if task.target_labels is not None:
            columns["label"] = task.target_labels[targets].tolist()
        for name, values in (task.target_info or {}).items():
            columns[name] = torch.as_tensor(values)[targets].tolist()
    return columns


def build_zoo(
    spec: str | Path | Mapping | ZooSpec,
    out: str | Path,
    *,
    members: int | None = None,
    overwrite: bool = False,
    executor: str = "local",
    workers: int | None = None,
    scheduler: str | None = None,
    device: str = "cpu",
    memory_bytes: int = DEFAULT_MEMORY,
    progress: bool = False,
    allow_mixed_numerics: bool = False,
    on_group: Callable[[GroupPlan], None] | None = None,
) -> BuildReport:
    """Build (or finish building) the zoo of ``spec`` at ``out`` and return what was done.

    Re-running the same command after an interruption trains only what is missing; a
    finished zoo is left untouched. ``executor`` is ``"local"`` or ``"dask"``. An HDF5 file
    is not safe against a kill mid-write, so HDF5 zoos are built in a hidden Zarr store beside
    ``out`` (where an interrupted build resumes) and converted, bit-exactly, when complete.
    The build holds ``out``'s writer lock, so a second build into the same path is refused.
    Members trained on another numeric path than the zoo's first ones (a resume on another
    machine or torch, a Dask worker that differs) are refused unless ``allow_mixed_numerics``.
    """
    if executor not in ("local", "dask"):
        raise SpecError(f"unknown executor {executor!r}; valid: local, dask")
    out = Path(out)
    with writer_lock(out):  # first: a second build is refused at once, not after loading its task
        spec = spec if isinstance(spec, ZooSpec) else load_spec(spec)
        if members is not None:
            spec = spec.with_members(members)
        backend = backend_for(out)
        run = functools.partial(
            _build_into, spec, overwrite=overwrite, executor=executor, workers=workers, scheduler=scheduler,
            device=device, memory_bytes=memory_bytes, progress=progress, on_group=on_group,
            allow_mixed=allow_mixed_numerics,
        )  # fmt: skip
        return run(out) if backend is ZarrBackend else _build_hdf5(spec, out, overwrite, run)


def _build_hdf5(spec: ZooSpec, out: Path, overwrite: bool, run: Callable[[Path], BuildReport]) -> BuildReport:
    """Build in a hidden Zarr store beside ``out`` (resumable), then convert it into ``out``."""
    if out.exists() and not overwrite:
        with ZooStore(out) as finished:
            _check_same_spec(finished, spec)
            if len(finished) == finished.capacity:
                return BuildReport(out, spec.members, 0, len(finished), 0.0)
    work = out.with_name(f".{out.stem}.building.zarr")
    report = run(work)
    convert_zoo(work, out, overwrite=True)
    remove(work)
    report.path = out
    return report


def _build_into(
    spec: ZooSpec,
    out: Path,
    *,
    overwrite: bool,
    executor: str,
    workers: int | None,
    scheduler: str | None,
    device: str,
    memory_bytes: int,
    progress: bool,
    on_group: Callable[[GroupPlan], None] | None,
    allow_mixed: bool,
) -> BuildReport:
    """The build loop proper, into a store that survives being killed (Zarr)."""
    start = time.perf_counter()
    zoo = _open_or_create(spec, out, overwrite, device)
    try:
        if executor == "local" and zoo.numerics is not None:
            _check_numerics(zoo, numeric_path(device), allow_mixed)  # before any training
        task = spec.load_task()
        done = set(zoo.members.tolist())
        todo = [g for g in plan_groups(spec, memory_bytes) if not done.issuperset(g.members)]
        remaining = sum(1 for g in todo for m in g.members if m not in done)
        bar = tqdm(total=spec.members, initial=len(done), unit="member", desc=spec.name, disable=not progress)
        results: Iterable = (
            run_local(spec, todo, device, zoo)
            if executor == "local"
            else run_dask(spec, todo, zoo, scheduler=scheduler, workers=workers)
        )
        for group, result in results:
            positions = [p for p, m in enumerate(group.members) if m not in done]
            rows = [group.members[p] for p in positions]
            _check_numerics(zoo, NumericPath.from_dict(result.numerics), allow_mixed)
            _store_group(zoo, rows, group, positions, result, task)
            bar.update(len(rows))
            if on_group is not None:
                on_group(group)
        bar.close()
        return BuildReport(out, spec.members, remaining, len(done), time.perf_counter() - start)
    finally:
        zoo.close()


def _check_numerics(zoo: ZooStore, path: NumericPath, allow_mixed: bool) -> None:
    """Refuse members trained on another numeric path than the zoo's (the same spec would give
    other parameters) unless ``allow_mixed``; then every contributing path is listed in
    ``numerics_mixed``. The first members a zoo gets record its path."""
    own = zoo.numerics
    if own is None:
        zoo.update_attrs(numerics=path.to_dict())
    elif own != path and not allow_mixed:
        raise StoreError(
            f"{zoo.path}: its members were trained on [{own}], this process trains on [{path}]; the same spec "
            "would give other parameters. Resume where it was built, or pass --allow-mixed-numerics"
        )
    elif own != path:
        mixed = list(zoo.attrs.get("numerics_mixed") or [own.to_dict()])
        if path.to_dict() not in mixed:
            zoo.update_attrs(numerics_mixed=[*mixed, path.to_dict()])


def _store_group(
    zoo: ZooStore, rows: list[int], group: GroupPlan, positions: list[int], result: Any, task: Any
) -> None:
    """Write a trained group's members, then mark them done (the resume marker, last)."""
    try:
        params = np.asarray(result.params)[positions]
        pad = zoo.layout.size - params.shape[-1]  # members smaller than the zoo's largest (mixed zoos)
        zoo.write(
            rows,
            np.pad(params, ((0, 0), (0, 0), (0, pad))) if pad else params,
            hparams=_columns(group, positions, task),
            metrics={k: np.asarray(v)[positions] for k, v in result.metrics.items()},
        )
        zoo.mark_done(rows)
    except OSError as exc:
        if exc.errno == errno.ENOSPC:
            raise StoreError(
                f"{zoo.path}: disk full while writing members {rows[0]}..{rows[-1]}; free space and re-run "
                f"the same command to resume ({len(zoo)} members are safely stored)"
            ) from None
        reason = os.strerror(exc.errno or 0)
        raise StoreError(f"{zoo.path}: cannot write members ({reason}); re-run to resume") from None
