"""Moving zoos between formats: Zarr <-> HDF5 conversion, and export to safetensors files.

``convert_zoo`` copies every stored array row by row in blocks of whole chunks, so a zoo of
any size converts in bounded memory and a half-built zoo stays resumable after conversion.
``export_zoo`` writes one ``member_<index>.safetensors`` per finished member for tools that
know nothing about zoos.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
from tqdm.auto import tqdm

from ..errors import StoreError
from .backends import Backend, backend_for
from .store import CHUNK_BYTES, ZooStore, open_zoo, staged_path

EXPORT_FILES = ("members.csv", "zoo.json")


def convert_zoo(
    src: str | os.PathLike, dst: str | os.PathLike, *, overwrite: bool = False, progress: bool = False
) -> Path:
    """Copy the zoo at ``src`` into a new store at ``dst`` (backend chosen by suffix), bit-exact.

    Every row of ``params``, ``done`` and each hyperparameter and metric column is copied, done
    or not, along with all attributes; a failure leaves ``dst`` as it was.
    """
    dst = Path(dst)
    backend_for(dst)  # refuse an unknown suffix before reading anything
    with open_zoo(src, "r") as zoo, staged_path(dst, overwrite) as tmp:
        target = _create_like(zoo, tmp)
        try:
            _copy_arrays(zoo, target, progress)
        finally:
            target.close()
    return dst


def export_zoo(
    path: str | os.PathLike,
    outdir: str | os.PathLike,
    *,
    epoch: int = -1,
    overwrite: bool = False,
    progress: bool = False,
) -> Path:
    """Write each done member's state_dict at ``epoch`` as ``member_<index:06d>.safetensors``,
    plus ``members.csv`` (the zoo's table) and ``zoo.json`` (its attributes) into ``outdir``."""
    outdir = Path(outdir)
    with open_zoo(path, "r") as zoo:
        epoch_number = zoo.epochs[zoo.epoch_index(epoch)]
        _check_outdir(outdir, overwrite)
        with _staged_dir(outdir) as tmp:
            _export_members(zoo, tmp, epoch, progress)
            zoo.table(epoch).to_csv(tmp / "members.csv")
            info = {**zoo.attrs, "export": {"epoch": epoch_number, "members": len(zoo)}}
            (tmp / "zoo.json").write_text(json.dumps(info, indent=2))
    return outdir


# ------------------------------------------------------------------------- convert


def _array_names(zoo: ZooStore) -> list[str]:
    """Every array of a zoo: params, done, then the hyperparameter and metric columns."""
    return ["params", "done", *(f"hparams/{k}" for k in zoo.hparam_names), *(f"metrics/{k}" for k in zoo.metric_names)]


def _create_like(zoo: ZooStore, path: Path) -> Backend:
    """An empty store at ``path`` with the attributes, shapes, chunking and columns of ``zoo``."""
    source = zoo.backend
    target = backend_for(path).create(path, source.attrs(), source.shape("params"), source.chunk_rows("params"))
    for name in _array_names(zoo)[2:]:
        rows, *tail = source.shape(name)
        target.create_column(name, _column_dtype(source, name), tuple(tail), rows)
    return target


def _column_dtype(backend: Backend, name: str) -> Any:
    """The dtype to create a copy of column ``name`` with (``str`` for text)."""
    dtype = backend.read(name, slice(0, 0)).dtype
    return str if dtype.kind == "O" else dtype


def _copy_arrays(zoo: ZooStore, target: Backend, progress: bool) -> None:
    """Copy every array of ``zoo`` into ``target``, block by block."""
    bar = tqdm(total=zoo.capacity, desc=f"convert {zoo.path.name}", unit="member", disable=not progress)
    with bar:
        for name in _array_names(zoo):
            for start, stop in _blocks(zoo.backend, name):
                target.write(name, slice(start, stop), _read_block(zoo, name, start, stop))
                if name == "params":
                    bar.update(stop - start)


def _blocks(backend: Backend, name: str) -> Iterator[tuple[int, int]]:
    """Row ranges of whole chunks of ``name``, about ``CHUNK_BYTES`` each, covering all rows."""
    rows, *tail = backend.shape(name)
    chunk = backend.chunk_rows(name)
    chunk_bytes = chunk * 8 * math.prod(tail)  # 8 bytes a value bounds every column dtype
    step = chunk * max(1, CHUNK_BYTES // chunk_bytes)
    for start in range(0, rows, step):
        yield start, min(start + step, rows)


def _read_block(zoo: ZooStore, name: str, start: int, stop: int) -> np.ndarray:
    """Rows ``start:stop`` of ``name``; a damaged or lost chunk is a StoreError, never copied."""
    _check_present(zoo, name, start, stop)
    return zoo.backend.read(name, slice(start, stop))  # a checksum failure raises StoreError


def _check_present(zoo: ZooStore, name: str, start: int, stop: int) -> None:
    """Raise if a chunk holding done members is missing (it would read as fill values)."""
    chunk = zoo.backend.chunk_rows(name)
    for i in range(start // chunk, -(-stop // chunk)):
        lo, hi = np.searchsorted(zoo.members, [i * chunk, (i + 1) * chunk])
        if hi > lo and not zoo.backend.chunk_present(name, i):
            raise StoreError(f"{zoo.path}: chunk {i} of {name} is missing; run verify() on it and repair the source")


# -------------------------------------------------------------------------- export


def _check_outdir(outdir: Path, overwrite: bool) -> None:
    """Refuse an output path that is a file, or a non-empty directory unless ``overwrite``."""
    if outdir.exists() and not outdir.is_dir():
        raise StoreError(f"{outdir}: exists and is not a directory; choose a directory to export to")
    if outdir.is_dir() and any(outdir.iterdir()) and not overwrite:
        raise StoreError(f"{outdir}: directory is not empty; choose an empty one or pass overwrite=True (--overwrite)")


@contextlib.contextmanager
def _staged_dir(outdir: Path) -> Iterator[Path]:
    """Yield a hidden directory beside ``outdir``; publish its files into ``outdir`` only if the
    block succeeds, so a failed export leaves ``outdir`` as it was."""
    full = outdir.resolve()
    tmp = full.parent / f".{full.name}.partial"
    if tmp.exists():
        shutil.rmtree(tmp)
    tmp.mkdir(parents=True)
    try:
        yield tmp
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    _publish(tmp, full)


def _publish(tmp: Path, outdir: Path) -> None:
    """Move a finished export into ``outdir``, replacing the files of an earlier export."""
    outdir.mkdir(parents=True, exist_ok=True)
    old = [*outdir.glob("member_*.safetensors"), *(outdir / f for f in EXPORT_FILES)]
    for file in old:
        file.unlink(missing_ok=True)
    for file in tmp.iterdir():
        os.replace(file, outdir / file.name)
    tmp.rmdir()


def _export_members(zoo: ZooStore, outdir: Path, epoch: int, progress: bool) -> None:
    """One safetensors file per done member, reading members in blocks of bounded size."""
    from safetensors.torch import save_file

    step = max(1, CHUNK_BYTES // max(1, 4 * zoo.layout.size))
    epoch_number = str(zoo.epochs[zoo.epoch_index(epoch)])
    bar = tqdm(total=len(zoo), desc=f"export {zoo.path.name}", unit="member", disable=not progress)
    with bar:
        for start in range(0, len(zoo), step):
            block = zoo.params(slice(start, start + step), epoch)
            for offset, flat in enumerate(block):
                index = start + offset
                tensors = {k: v.clone() for k, v in zoo.unflatten_member(index, flat).items()}
                meta = {"member": str(index), "row": str(zoo.members[index]), "epoch": epoch_number}
                save_file(tensors, outdir / f"member_{index:06d}.safetensors", metadata=meta)
            bar.update(len(block))
