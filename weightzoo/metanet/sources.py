"""The models a merge reads: zoo members (by index or a table filter) or state-dict files of one
architecture, as flat vectors ``[K, P]`` with their layout, architecture and base.

Every check a user can fail happens here, before any work: members of different architectures,
members with different bases, a base file that is not the members' base, files that do not match
each other or the zoo. Each is one line naming the member or file.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from ..errors import LayoutError, MergeError
from ..layout import ParamLayout
from ..symmetry import PermutationSpec
from ..zoo import archs
from ..zoo.finetune import checksum
from ..zoo.importers.plan import Skip
from ..zoo.importers.state_dicts import STATE_DICT_SUFFIXES, Reference, canonical, infer_architecture, read_state_dict


@dataclass
class ModelSet:
    """K networks of one layout, and what is known of them."""

    flat: Tensor  # float32 [K, P]
    layout: ParamLayout
    names: list[str]  # "member 3" or a file path, for messages and reports
    architecture: dict | None = None
    spec: PermutationSpec | None = None
    base: Tensor | None = None  # [P] the shared base, when known
    zoo: Any = None  # the zoo the models come from or are checked against
    members: list[int] = field(default_factory=list)  # their zoo indices (zoo sources)
    no_base: str | None = None  # why the models have no shared base, when they were fine-tuned

    def __len__(self) -> int:
        return len(self.flat)


def from_zoo(zoo: Any, members: Sequence[int], *, epoch: int = -1, base: str | Path | None = None) -> ModelSet:
    """Members of one architecture; their base is the zoo's (one base for all) or the file ``base``."""
    members = [int(i) for i in members]
    architectures = zoo.member_architectures(members)
    for i, arch in zip(members, architectures):
        if arch != architectures[0]:
            raise MergeError(
                f"{zoo.path}: members {members[0]} and {i} have different architectures; "
                "merge members of one architecture"
            )
    layout = zoo.member_layout(members[0])
    flat = zoo.params(members, epoch=epoch)[:, : layout.size]
    spec = zoo.member_perm_spec(members[0])
    stored, problem = _zoo_base(zoo, members)
    given = None if base is None else read_flat(base, layout, against=str(zoo.path))
    if given is not None and stored is not None and not torch.equal(given, stored):
        raise MergeError(
            f"{base}: not the base of these members (sha256 {checksum(given.numpy())[:12]}, the zoo records "
            f"{checksum(stored.numpy())[:12]}); pass the zoo's own base or none"
        )
    names = [f"member {i}" for i in members]
    base_row = given if given is not None else stored
    return ModelSet(
        flat, layout, names, architectures[0], spec, base_row, zoo, members, problem if base_row is None else None
    )


def _zoo_base(zoo: Any, members: list[int]) -> tuple[Tensor | None, str | None]:
    """The one base the members share (None for a zoo that is not fine-tuned), or why there is none."""
    if not zoo.fine_tuned:
        return None, None
    rows = zoo.base_params(members)[:, : zoo.member_layout(members[0]).size]
    for i, row in zip(members, rows):
        if not torch.equal(row, rows[0]):
            return None, (
                f"{zoo.path}: members {members[0]} and {i} were fine-tuned from different bases; task vectors "
                "need one base (merge members of one base, or use linear, a soup or slerp)"
            )
    return rows[0], None


def read_flat(path: str | Path, layout: ParamLayout, *, against: str) -> Tensor:
    """One state-dict file in ``layout``'s order; a one-line error if it does not fit."""
    return _flat_of(Path(path), _read(Path(path)), layout, {n: n for n in layout.names}, against)


def _read(path: Path) -> dict[str, Tensor]:
    if path.suffix not in STATE_DICT_SUFFIXES:
        raise MergeError(f"{path}: weights are read from {'/'.join(STATE_DICT_SUFFIXES)} state_dict files")
    if not path.is_file():
        raise MergeError(f"{path}: no such file")
    try:
        return read_state_dict(path)
    except Skip as exc:
        raise MergeError(f"{path}: {exc}") from None


def from_files(
    paths: Sequence[str | Path], *, zoo: Any = None, members: Sequence[int] = (), base: str | Path | None = None
) -> ModelSet:
    """State-dict files of one architecture: the zoo's (checked against its layout; that of its
    member ``members[0]`` when given, for zoos whose members differ in activation) when ``zoo`` is
    given, else the first file's (its architecture inferred when it is a plain conv/linear chain)."""
    paths = [Path(p) for p in paths]
    if not paths:
        raise MergeError("no state-dict files to merge")
    first = _read(paths[0])
    if zoo is not None:
        if zoo.mixed:
            raise MergeError(f"{zoo.path}: a mixed zoo has no single layout to check files against")
        layout, arch, spec, against = zoo.layout, zoo.attrs.get("architecture"), zoo.perm_spec, str(zoo.path)
        if members:
            arch, spec = zoo.member_architecture(members[0]), zoo.member_perm_spec(members[0])
        rename = {n: n for n in layout.names}
    else:
        ref = Reference.of(paths[0], first)
        layout, arch, rename = canonical(ref, infer_architecture(ref.shapes, "relu"))
        spec = None if arch is None else archs.describe(arch)[2]
        against = str(paths[0])
    rows = [_flat_of(paths[0], first, layout, rename, against)]
    rows += [_flat_of(p, _read(p), layout, rename, against) for p in paths[1:]]
    base_row = None if base is None else _flat_of(Path(base), _read(Path(base)), layout, rename, against)
    return ModelSet(torch.stack(rows), layout, [str(p) for p in paths], arch, spec, base_row, zoo)


def _flat_of(path: Path, sd: dict[str, Tensor], layout: ParamLayout, rename: dict[str, str], against: str) -> Tensor:
    """A file's tensors, stored under ``rename``'s source names, as one vector in layout order."""
    named = {}
    for name, source in rename.items():
        if source not in sd:
            raise MergeError(f"{path}: missing parameter {source!r}; it does not match {against}")
        named[name] = sd[source]
    extra = sorted(set(sd) - set(rename.values()))
    if extra:
        raise MergeError(f"{path}: unexpected parameter {extra[0]!r}; it does not match {against}")
    try:
        return layout.flatten(named, source=str(path))
    except LayoutError as exc:
        raise MergeError(f"{exc}; it does not match {against}") from None


def write_safetensors(path: str | Path, layout: ParamLayout, flat: Tensor, metadata: dict[str, str]) -> Path:
    """A merged network as one safetensors file (state-dict names, ``metadata`` strings), staged."""
    from safetensors.torch import save_file

    from .._fs import ensure_writable, staged

    path = ensure_writable(path)
    if path.suffix != ".safetensors":
        raise MergeError(
            f"{path}: merged weights are written as .safetensors (never a pickle); name the output *.safetensors"
        )
    tensors = {k: v.contiguous().clone() for k, v in layout.unflatten(flat.detach().cpu().float()).items()}
    with staged(path, overwrite=True) as tmp:
        save_file(tensors, str(tmp), metadata=metadata)
    return path
