"""A zoo's integrity: every chunk read back against its checksum, damage reported by member."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

from ...errors import StoreError

BASE = "base"  # the array of base rows of a fine-tuned zoo: every member depends on it
SHARED = ("done", BASE)  # arrays whose damage is reported whatever rows it hits


@dataclass
class VerifyReport:
    """What ``ZooStore.verify`` found: damaged member indices (public) and one line per problem."""

    checked_chunks: int = 0
    damaged_rows: list[int] = field(default_factory=list)
    damaged_members: list[int] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.problems


def verify(zoo: Any) -> VerifyReport:
    """Read every chunk of every array of ``zoo`` (a ZooStore), checking its checksum."""
    report = VerifyReport()
    done_rows = set(zoo.members.tolist())
    bad_rows: set[int] = set()
    for name in ["done", *(name for name in zoo.array_names() if name != "done")]:
        for start, stop, err in zoo.backend.read_chunks(name):
            report.checked_chunks += 1
            if err is None:
                continue
            hit = sorted(done_rows) if name == BASE else sorted(done_rows.intersection(range(start, stop)))
            if name in SHARED or hit:
                report.problems.append(f"{name} rows {start}..{stop - 1}: {err}")
                bad_rows.update(range(start, stop) if name == "done" else hit)
    report.damaged_rows = sorted(bad_rows)
    report.damaged_members = np.flatnonzero(np.isin(zoo.members, report.damaged_rows)).tolist()
    return report


def check_present(zoo: Any, name: str, start: int, stop: int) -> None:
    """Raise if a chunk of rows ``start:stop`` of ``name`` that holds done members (or any chunk of a
    shared array) is missing: it would read as fill values."""
    chunk = zoo.backend.chunk_rows(name)
    for i in range(start // chunk, -(-stop // chunk)):
        lo, hi = np.searchsorted(zoo.members, [i * chunk, (i + 1) * chunk])
        if (hi > lo or name in SHARED) and not zoo.backend.chunk_present(name, i):
            raise StoreError(f"{zoo.path}: chunk {i} of {name} is missing; run verify() on it and repair the source")
