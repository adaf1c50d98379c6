"""Which members a command works on: indices and ranges (``0,3,10-19``), ``all``, or the rows of
``zoo.table()`` that match a pandas query (``task == 'pair-0-1'``)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from ..errors import SpecError


def parse_members(text: str, count: int) -> list[int]:
    """``--members``: ``all``, or indices and ranges like ``0,3,10-19``, checked against ``count``."""
    if text.strip() == "all":
        return list(range(count))
    out: list[int] = []
    try:
        for part in text.split(","):
            lo, sep, hi = part.partition("-")
            out += list(range(int(lo), int(hi) + 1)) if sep else [int(lo)]
    except ValueError:
        raise SpecError(f"--members {text!r}: write all, or indices and ranges like 0,3,10-19") from None
    return _in_range(out, count, text)


def _in_range(indices: list[int], count: int, text: str) -> list[int]:
    bad = [i for i in indices if not 0 <= i < count]
    if bad:
        raise SpecError(f"--members {text!r}: member {bad[0]} is out of range; the zoo has {count} members")
    return indices


def select_members(zoo: Any, members: str | Sequence[int] | None = None, where: str | None = None) -> list[int]:
    """Members named by ``members`` (text as :func:`parse_members` reads it, or indices) or by the
    pandas query ``where`` over ``zoo.table()`` (hyperparameters and final metrics); one of the two."""
    if (members is None) == (where is None):
        raise SpecError(
            "name the members with --members (indices) or --where (a filter of the zoo's table), one of them"
        )
    if isinstance(members, str):
        return parse_members(members, len(zoo))
    if members is not None:
        return _in_range([int(i) for i in members], len(zoo), ",".join(map(str, members)))
    table = zoo.table()
    try:
        hits = table.query(where)
    except Exception as exc:  # noqa: BLE001 - pandas raises many kinds for a bad expression
        columns = ", ".join(map(str, table.columns))
        raise SpecError(
            f"--where {where!r}: not a filter of the zoo's table ({type(exc).__name__}: {exc}); columns: {columns}"
        ) from None
    if hits.empty:
        raise SpecError(f"--where {where!r}: no member of {zoo.path} matches")
    return [int(i) for i in hits.index]
