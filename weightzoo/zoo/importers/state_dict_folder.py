"""Any folder of state_dicts of one architecture (``.safetensors`` / ``.pt`` / ``.pth``).

Members are the files in sorted path order; the architecture is inferred from the shapes when
it is a plain conv/linear chain (activation relu, stride 1 and no padding assumed).
"""

from __future__ import annotations

import functools
from pathlib import Path

from ...errors import ImportFormatError
from .plan import Candidate, ImportPlan
from .state_dicts import STATE_DICT_SUFFIXES, canonical, find_reference, infer_architecture, load_checkpoints


def plan(src: Path) -> ImportPlan:
    """Any folder of state_dicts of one architecture; members in sorted path order."""
    files = sorted(p for p in src.rglob("*") if p.suffix in STATE_DICT_SUFFIXES and p.is_file())
    if not files:
        raise ImportFormatError(f"{src}: no {'/'.join(STATE_DICT_SUFFIXES)} files found (searched recursively)")
    ref, _ = find_reference(files)
    layout, arch, names = canonical(ref, infer_architecture(ref.shapes, "relu"))
    candidates = [
        Candidate(
            p.relative_to(src).as_posix(),
            {"file": p.relative_to(src).as_posix()},
            {},
            functools.partial(load_checkpoints, [p], ref),
        )
        for p in files
    ]
    source = {"param_names": names, "architecture_inferred": arch is not None}
    if arch is not None:
        source["assumed"] = "activation relu, convolution stride 1 and no padding (a state_dict stores neither)"
    return ImportPlan(layout, arch, [0], candidates, source)
