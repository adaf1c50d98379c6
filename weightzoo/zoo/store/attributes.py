"""What a new zoo records about itself (its ``weightzoo`` attributes) and how its params are chunked."""

from __future__ import annotations

import datetime as _dt
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

import numpy as np

from ..._version import __version__
from ...errors import SpecError
from ...layout import ParamLayout

if TYPE_CHECKING:
    from ...symmetry import PermutationSpec

FORMAT = "weightzoo"
FORMAT_VERSION = 2  # 2: resolved member architectures recorded ("architectures"); 1 is still read
CHUNK_BYTES = 4 << 20  # target size of one params chunk: zarr pays ~1 ms per chunk read


def new_attrs(
    layout: ParamLayout,
    epochs: list[int],
    *,
    architecture: Mapping[str, Any] | None,
    perm_spec: PermutationSpec | None,
    arch_overrides: Sequence[str],
    mixed_layouts: bool,
    spec: Mapping[str, Any] | None,
    source: Mapping[str, Any] | None,
) -> dict[str, Any]:
    """The attributes of a new, empty zoo (see :meth:`ZooStore.create` for the arguments)."""
    return {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "layout": layout.to_dict(),
        "permutation_spec": zoo_perm_spec(architecture, perm_spec, arch_overrides, mixed_layouts),
        "architecture": dict(architecture) if architecture is not None else None,
        "arch_overrides": list(arch_overrides),
        "architectures": [],
        "mixed_layouts": bool(mixed_layouts),
        "spec": dict(spec) if spec is not None else None,
        "epochs": epochs,
        "source": dict(source) if source is not None else None,
        "numerics": None,  # the numeric path of the first members trained into it (see zoo.build)
        "versions": versions(),
        "created": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
    }


def params_chunk(layout: ParamLayout, epochs: int, chunk_members: int | None, expected_members: int | None) -> int:
    """Members per params chunk: ``chunk_members``, else about ``CHUNK_BYTES`` (one unpadded chunk
    for a zoo ``expected_members`` says is smaller)."""
    if chunk_members:
        return int(chunk_members)
    chunk = int(np.clip(CHUNK_BYTES // max(1, epochs * layout.size * 4), 1, 65536))
    return min(chunk, max(1, int(expected_members))) if expected_members else chunk


def versions() -> dict[str, str]:
    """The software a zoo was written with."""
    import h5py
    import torch
    import zarr

    return {
        "weightzoo": __version__,
        "torch": torch.__version__,
        "zarr": zarr.__version__,
        "h5py": h5py.__version__,
        "numpy": np.__version__,
    }


def zoo_perm_spec(
    architecture: Mapping[str, Any] | None,
    perm_spec: PermutationSpec | None,
    arch_overrides: Sequence[str],
    mixed_layouts: bool,
) -> dict | None:
    """The zoo-wide PermutationSpec: given, else derived from the architecture; none for mixed
    zoos (see ``member_perm_spec``); only permutations when members differ in activation."""
    from ...symmetry import PermutationSpec
    from .. import archs

    if perm_spec is None and architecture is not None and not mixed_layouts:
        try:
            perm_spec = PermutationSpec.from_module(archs.build_module(architecture))
        except SpecError:
            return None  # architectures without a derivable spec still store fine
        if "activation" in arch_overrides:
            perm_spec = perm_spec.restricted_to(("permute",))  # only what every member allows
    return perm_spec.to_dict() if perm_spec is not None else None
