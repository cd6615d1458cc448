"""Leaderboard: within each group, min-max normalise each metric so that higher is better,
average over the metrics every ok row of the group has, and rank (1 = best).

- A lower-is-better metric (PPL, AMU, AL, AEC, loss) is inverted: ``(max - v) / (max - min)``;
  a higher-is-better one is ``(v - min) / (max - min)``. When all rows tie, each scores 1.
- A metric missing for some ok row of a group is left out of that group's score and listed
  with the rows that lack it; per-metric ranks are still given among the rows that have it.
- Ranks are competition ranks (ties share the best rank: 1, 1, 3). A group with one ok row
  ranks it 1 with score 1. Rows whose status is not ok are listed after, unranked.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd

from ..atomic import atomic_path, write_text
from .frame import group_keys, group_label, is_missing
from .specs import LOWER, StageSpec
from .tables import STATUS_TEXT, format_value


@dataclass
class Group:
    key: tuple[str, ...]
    label: str
    used: list[str]
    excluded: dict[str, str]  # metric -> why (e.g. "missing for xs/mla")
    rows: pd.DataFrame  # ok rows ranked, then the others
    note: str = ""


@dataclass
class Leaderboard:
    stage: str
    groups: list[Group] = field(default_factory=list)


def normalise(values: list[float], lower_is_better: bool) -> list[float]:
    """Min-max normalise so that 1 is best and 0 worst; all equal → all 1."""
    lo, hi = min(values), max(values)
    if hi == lo:
        return [1.0 for _ in values]
    if lower_is_better:
        return [(hi - v) / (hi - lo) for v in values]
    return [(v - lo) / (hi - lo) for v in values]


def competition_rank(scores: list[float | None], higher_is_better: bool = True) -> list[int | None]:
    """1 + the number of strictly better scores; None stays unranked."""
    vals = [None if s is None else round(float(s), 12) for s in scores]
    out: list[int | None] = []
    for s in vals:
        if s is None:
            out.append(None)
            continue
        better = sum(1 for o in vals if o is not None and (o > s if higher_is_better else o < s))
        out.append(1 + better)
    return out


def compute_leaderboard(df: pd.DataFrame, spec: StageSpec) -> Leaderboard:
    board = Leaderboard(spec.stage)
    if not len(df):
        return board
    df = df.copy()
    keys = group_keys(df, spec)
    for key in dict.fromkeys(keys):
        g = df[[k == key for k in keys]]
        ok = g[g["status"] == "ok"].copy()
        rest = g[g["status"] != "ok"].copy()
        used: list[str] = []
        excluded: dict[str, str] = {}
        for m in spec.leaderboard:
            lower = spec.column(m).better == LOWER
            present = [not is_missing(v) for v in ok[m]]
            have = [v for v, p in zip(ok[m], present) if p]
            ok[m + "__rank"] = competition_rank([float(v) if p else None for v, p in zip(ok[m], present)], not lower)
            ok[m + "__norm"] = None
            if have:
                norms = iter(normalise([float(v) for v in have], lower))
                ok[m + "__norm"] = [next(norms) if p else None for p in present]
            if len(ok) and all(present):
                used.append(m)
            elif len(ok):
                lacking = [c for c, p in zip(ok[spec.label_column], present) if not p]
                excluded[m] = "missing for all rows" if not have else "missing for " + ", ".join(map(str, lacking))
        note = ""
        if len(ok) == 1:
            ok["score"] = 1.0
            ok["rank"] = 1
            note = "one row in this group: rank 1, score 1"
        elif len(ok) and used:
            ok["score"] = [sum(float(r[m + "__norm"]) for m in used) / len(used) for _, r in ok.iterrows()]
            ok["rank"] = competition_rank(list(ok["score"]))
        else:
            ok["score"] = None
            ok["rank"] = None
            if len(ok):
                note = "no metric is present for every row, so the rows are not ranked"
        ok = ok.sort_values(["rank", spec.label_column], kind="stable", na_position="last") if len(ok) and used else ok
        for m in spec.leaderboard:
            rest[m + "__rank"] = None
            rest[m + "__norm"] = None
        rest["score"] = None
        rest["rank"] = None
        rows = pd.concat([ok, rest], ignore_index=True) if len(rest) else ok.reset_index(drop=True)
        for c in ["rank"] + [m + "__rank" for m in spec.leaderboard]:
            rows[c] = pd.array([None if is_missing(v) else int(v) for v in rows[c]], dtype="Int64")
        for c in ["score"] + [m + "__norm" for m in spec.leaderboard]:
            rows[c] = pd.array([None if is_missing(v) else float(v) for v in rows[c]], dtype="Float64")
        board.groups.append(Group(key, group_label(spec, key), used, excluded, rows, note))
    return board


def leaderboard_frame(board: Leaderboard, spec: StageSpec) -> pd.DataFrame:
    recs = []
    for g in board.groups:
        for _, r in g.rows.iterrows():
            rec: dict[str, object] = {"group": g.label}
            rec.update(dict(zip(spec.group_by, g.key)))
            rec.update({"rank": r["rank"], "score": r["score"], "cell": r["cell"], "status": r["status"]})
            for k in spec.row_keys:
                rec[k] = r.get(k)
            rec["metrics_used"] = ";".join(g.used)
            rec["metrics_excluded"] = ";".join(g.excluded)
            for m in spec.leaderboard:
                rec[m] = r.get(m)
                rec[m + "__norm"] = r.get(m + "__norm")
                rec[m + "__rank"] = r.get(m + "__rank")
            recs.append(rec)
    df = pd.DataFrame(recs)
    for c in ["rank"] + [m + "__rank" for m in spec.leaderboard]:
        if c in df.columns:
            df[c] = df[c].astype("Int64")
    return df


def render_markdown(board: Leaderboard, spec: StageSpec) -> str:
    headers = {m: spec.column(m).header for m in spec.leaderboard}
    lines = [
        f"**Leaderboard: {spec.title}**",
        "",
        (
            "Within each group every metric is min-max normalised so that 1 is best (lower-is-better "
            "metrics inverted); the score is the mean over the metrics present for every row of the "
            "group; rank 1 is best. Each metric cell shows the value and its rank within the group."
        ),
    ]
    if not board.groups:
        return "\n".join(lines + ["", "No runs were given for this stage.", ""])
    for g in board.groups:
        lines += ["", f"### {g.label}", ""]
        lines.append("Metrics used: " + (", ".join(headers[m] for m in g.used) or "none") + ".")
        if g.excluded:
            lines.append(
                "Excluded (not present for every row): "
                + "; ".join(f"{headers[m]} ({why})" for m, why in g.excluded.items())
                + "."
            )
        if g.note:
            lines.append(f"Note: {g.note}.")
        lines += ["", "| Rank | Run | Score | " + " | ".join(headers[m] for m in spec.leaderboard) + " |"]
        lines.append("|---:|---|---:|" + "---:|" * len(spec.leaderboard))
        for _, r in g.rows.iterrows():
            status = r["status"]
            rank = "–" if is_missing(r["rank"]) else str(int(r["rank"]))
            score = (
                STATUS_TEXT.get(status, status)
                if status != "ok"
                else ("–" if is_missing(r["score"]) else f"{float(r['score']):.3f}")
            )
            cells = []
            for m in spec.leaderboard:
                if status != "ok":
                    cells.append(STATUS_TEXT.get(status, status))
                elif is_missing(r[m]):
                    cells.append("n/a")
                else:
                    cells.append(f"{format_value(r[m], spec.column(m).fmt)} (#{int(r[m + '__rank'])})")
            lines.append(f"| {rank} | {r[spec.label_column]} | {score} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def write_leaderboard(df: pd.DataFrame, spec: StageSpec, out: Path) -> tuple[dict[str, str], Leaderboard]:
    """Write ``<out>/leaderboard/<stage>.{csv,md}``; return their paths relative to ``out``."""
    board = compute_leaderboard(df, spec)
    rel = {ext: f"leaderboard/{spec.stage}.{ext}" for ext in ("csv", "md")}
    with atomic_path(out / rel["csv"]) as tmp:
        leaderboard_frame(board, spec).to_csv(tmp, index=False)
    write_text(out / rel["md"], render_markdown(board, spec))
    return rel, board
