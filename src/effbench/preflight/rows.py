"""One row of the preflight table: a check of one cell or reference, and how to fix it."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Iterable

OK, PROBLEM, SKIP = "ok", "PROBLEM", "skip"


@dataclass(frozen=True)
class Row:
    check: str  # environment, reference, memory, runtime, disk
    cell: str  # the cell, stage or reference the row is about
    status: str  # OK, PROBLEM, or SKIP (not checked, with the reason in detail)
    detail: str
    fix: str = ""  # the config key or path to change when status is PROBLEM

    @property
    def problem(self) -> bool:
        return self.status == PROBLEM


def ok(check: str, cell: str, detail: str) -> Row:
    return Row(check, cell, OK, detail)


def problem(check: str, cell: str, detail: str, fix: str) -> Row:
    return Row(check, cell, PROBLEM, detail, fix)


def skip(check: str, cell: str, reason: str) -> Row:
    return Row(check, cell, SKIP, reason)


def table(rows: Iterable[Row]) -> str:
    """The rows as one text table, in the order given. Nothing is cut: the columns are padded to
    their longest value (at most 48 characters; a longer cell pushes its own line's detail right)
    and the detail, the last column, is printed in full however long (the terminal wraps it)."""
    rows = list(rows)
    heads = ("check", "cell", "status", "detail")
    cw = [max([len(h)] + [len(getattr(r, h)) for r in rows]) for h in heads[:3]]
    cw = [min(c, 48) for c in cw]
    line = lambda vals: "  ".join(v.ljust(w) for v, w in zip(vals, cw)) + "  " + vals[3]  # noqa: E731
    out = [line(heads), line(tuple("-" * w for w in cw) + ("-" * 6,))]
    for r in rows:
        out.append(line((r.check, r.cell, r.status, r.detail)))
    return "\n".join(out)


def problems_text(rows: Iterable[Row]) -> str:
    """Every problem with its full detail and the key or path to fix."""
    bad = [r for r in rows if r.problem]
    return "\n".join(f"- [{r.check}] {r.cell}: {r.detail}\n    fix: {r.fix}" for r in bad)
