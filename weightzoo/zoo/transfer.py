"""Moving zoos between formats: Zarr <-> HDF5 conversion, and export to safetensors files.

``convert_zoo`` copies every stored array row by row in blocks of whole chunks, so a zoo of
any size converts in bounded memory and a half-built zoo stays resumable after conversion.
``export_zoo`` writes one ``member_<index>.safetensors`` per finished member for tools that
know nothing about zoos. Both take a local store path or an open :class:`ZooStore` (open an
``hf://`` zoo with :func:`weightzoo.open_zoo` first).
"""

from __future__ import annotations

import json
import os
from pathlib import Path

from tqdm.auto import tqdm

from .._fs import ensure_writable, staged
from ..errors import StoreError
from .backends import backend_for
from .store import CHUNK_BYTES, ZooStore, opened, staged_store

EXPORT_FILES = ("members.csv", "zoo.json")


def convert_zoo(
    src: ZooStore | str | os.PathLike, dst: str | os.PathLike, *, overwrite: bool = False, progress: bool = False
) -> Path:
    """Copy the zoo ``src`` into a new store at ``dst`` (backend chosen by suffix), bit-exact.

    Every row of ``params``, ``done`` and each hyperparameter and metric column is copied, done
    or not, along with all attributes; a failure leaves ``dst`` as it was.
    """
    dst = Path(dst)
    backend_for(dst)  # refuse an unknown suffix before reading anything
    with opened(src, ZooStore) as zoo, staged_store(dst, overwrite) as tmp:
        with ZooStore.create_like(zoo, tmp, lock=False) as target:
            bar = tqdm(total=zoo.capacity, desc=f"convert {zoo.path.name}", unit="member", disable=not progress)
            with bar:
                for name in zoo.array_names():
                    for start, stop in zoo.blocks(name):
                        target.write_block(name, start, zoo.read_block(name, start, stop))
                        if name == "params":
                            bar.update(stop - start)
    return dst


def export_zoo(
    path: ZooStore | str | os.PathLike,
    outdir: str | os.PathLike,
    *,
    epoch: int = -1,
    overwrite: bool = False,
    progress: bool = False,
) -> Path:
    """Write each done member's state_dict at ``epoch`` as ``member_<index:06d>.safetensors``,
    plus ``members.csv`` (the zoo's table) and ``zoo.json`` (its attributes) into ``outdir``.
    Other files already in ``outdir`` are kept; an earlier export's files are replaced."""
    outdir = Path(outdir)
    with opened(path, ZooStore) as zoo:
        epoch_number = zoo.epochs[zoo.epoch_index(epoch)]
        _check_outdir(outdir, overwrite)
        ensure_writable(outdir)
        with staged(outdir, overwrite=True, merge=_previous_export) as tmp:
            _export_members(zoo, tmp, epoch, progress)
            zoo.table(epoch).to_csv(tmp / "members.csv")
            info = {**zoo.attrs, "export": {"epoch": epoch_number, "members": len(zoo)}}
            (tmp / "zoo.json").write_text(json.dumps(info, indent=2))
    return outdir


def _check_outdir(outdir: Path, overwrite: bool) -> None:
    """Refuse an output path that is a file, or a non-empty directory unless ``overwrite``."""
    if outdir.exists() and not outdir.is_dir():
        raise StoreError(f"{outdir}: exists and is not a directory; choose a directory to export to")
    if outdir.is_dir() and any(outdir.iterdir()) and not overwrite:
        raise StoreError(f"{outdir}: directory is not empty; choose an empty one or pass overwrite=True (--overwrite)")


def _previous_export(outdir: Path) -> list[Path]:
    """The files of an earlier export in ``outdir``: replaced, everything else kept."""
    return [*outdir.glob("member_*.safetensors"), *(outdir / f for f in EXPORT_FILES)]


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
