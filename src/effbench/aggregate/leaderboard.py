"""Leaderboard: within each group, min-max normalise each metric so that higher is better,
average over the metrics every ok row of the group has, and rank (1 = best).

- A lower-is-better metric (PPL, AMU, AL, AEC, loss) is inverted: ``(max - v) / (max - min)``;
  a higher-is-better one is ``(v - min) / (max - min)``. When all rows tie, each scores 1.
- A metric missing for some ok row of a group is left out of that group's score and listed
  with the rows that lack it; per-metric ranks are still given among the rows that have it.
- Ranks are competition ranks (ties share the best rank: 1, 1, 3). A group with one ok row
  ranks it 1 with score 1. Rows whose status is not ok are listed after, unranked.

Noise (docs/noise.md). Where records carry 95 % intervals (``X__ci_low`` / ``X__ci_high``):

- A metric whose spread across the group (max − min) is no larger than its noise (the
  median interval half-width over the rows that have one) is left out of the score, and the
  group says so ("amu_gb — spread 0.05 within noise ±0.08"). A metric no row has an interval
  for has unknown noise: it is scored, and the group says its noise is unknown.
- A row's score interval is its score ± the root-sum-square of its metrics' normalised
  half-widths over the number of metrics (metrics taken as independent; unknown noise = 0).
- Tied ranks (:func:`tied_ranks`): sorted best first, the first row leads a tie group; each
  following row whose interval overlaps the leader's shares the leader's rank; the first that
  does not overlap leads the next group, with rank 1 + the number of rows ahead of it.
  Without intervals this is the plain competition rank.
- The quality metric's difference from the group's best is marked "not significant" when it
  is within 2 combined standard errors (:func:`effbench.measure.spread.significant`).

Energy scope (:mod:`.scopes`): an energy metric (AEC) whose rows in a group were counted over
different hardware (``energy_scope``: gpu, module, ...) is neither scored nor ranked in that group;
it is listed as excluded with the scopes, and each of its cells shows its own scope.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import math
import statistics

import pandas as pd

from ..atomic import atomic_path, write_text
from ..measure import spread
from .frame import group_keys, group_label, is_missing
from .scopes import MIXED_MARK, scopes_of
from .specs import ENERGY_COLUMNS, LOWER, StageSpec
from .tables import STATUS_TEXT, format_with_interval

Bounds = tuple[float, float] | None  # a 95 % interval, or None when the noise is unknown


@dataclass
class Group:
    key: tuple[str, ...]
    label: str
    used: list[str]
    excluded: dict[str, str]  # metric -> why (e.g. "missing for xs/mla")
    rows: pd.DataFrame  # ok rows ranked, then the others
    note: str = ""
    within_noise: dict[str, str] = field(default_factory=dict)  # metric -> "spread … within noise …"
    noise_unknown: list[str] = field(default_factory=list)  # scored metrics without any interval


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


def tied_ranks(values: list[float | None], bounds: list[Bounds], higher_is_better: bool = True) -> list[int | None]:
    """Competition ranks where rows whose intervals overlap the tie group's leader share its rank.

    Rows are taken best first; a row without an interval is the point [v, v]. None stays unranked.
    """
    order = sorted((i for i, v in enumerate(values) if v is not None),
                   key=lambda i: -values[i] if higher_is_better else values[i])  # type: ignore[operator]
    out: list[int | None] = [None] * len(values)
    leader: tuple[float, float] | None = None
    rank = 0
    for pos, i in enumerate(order):
        v = float(values[i])  # type: ignore[arg-type]
        lo, hi = bounds[i] or (v, v)
        if leader is None or round(lo, 12) > round(leader[1], 12) or round(hi, 12) < round(leader[0], 12):
            leader, rank = (lo, hi), pos + 1
        out[i] = rank
    return out


def _bounds(ok: pd.DataFrame, m: str) -> list[Bounds]:
    """Each row's recorded interval for metric m (None where absent, or in older records)."""
    lo_col, hi_col = m + "__ci_low", m + "__ci_high"
    if lo_col not in ok.columns or hi_col not in ok.columns:
        return [None] * len(ok)
    return [None if is_missing(a) or is_missing(b) else (float(a), float(b)) for a, b in zip(ok[lo_col], ok[hi_col])]


def noise_check(values: list[float], bounds: list[Bounds]) -> tuple[bool | None, float, float | None]:
    """(spread within noise?, spread, noise half-width). None: no row has an interval."""
    spread_ = max(values) - min(values)
    halves = [(b[1] - b[0]) / 2 for b in bounds if b is not None]
    if not halves:
        return None, spread_, None
    noise = statistics.median(halves)
    return spread_ <= noise and noise > 0, spread_, noise


def _fmt(x: float) -> str:
    return f"{x:.2g}"


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
        within_noise: dict[str, str] = {}
        noise_unknown: list[str] = []
        norm_half: dict[str, list[float]] = {}  # metric -> each row's normalised half-width
        for m in spec.leaderboard:
            lower = spec.column(m).better == LOWER
            scopes = scopes_of(ok, [m]) if m in ENERGY_COLUMNS else []
            if len(scopes) > 1:  # counted over different hardware: never compared (module doc)
                ok[m + "__rank"] = None
                ok[m + "__norm"] = None
                excluded[m] = f"{MIXED_MARK} ({', '.join(scopes)}): not comparable joule for joule"
                continue
            present = [not is_missing(v) for v in ok[m]]
            have = [float(v) for v, p in zip(ok[m], present) if p]
            bounds = _bounds(ok, m)
            ok[m + "__rank"] = tied_ranks([float(v) if p else None for v, p in zip(ok[m], present)], bounds, not lower)
            ok[m + "__norm"] = None
            if have:
                norms = iter(normalise(have, lower))
                ok[m + "__norm"] = [next(norms) if p else None for p in present]
            if len(ok) and all(present):
                within, sp, noise = noise_check(have, bounds) if len(ok) > 1 else (False, 0.0, None)
                if within:
                    within_noise[m] = f"spread {_fmt(sp)} within noise ±{_fmt(noise)}"  # type: ignore[arg-type]
                    continue
                if noise is None and len(ok) > 1:
                    noise_unknown.append(m)
                scale = max(have) - min(have)
                norm_half[m] = [0.0 if b is None or scale == 0 else (b[1] - b[0]) / 2 / scale for b in bounds]
                used.append(m)
            elif len(ok):
                lacking = [c for c, p in zip(ok[spec.label_column], present) if not p]
                excluded[m] = "missing for all rows" if not have else "missing for " + ", ".join(map(str, lacking))
        note = ""
        ok["score_half_width"] = None
        if len(ok) == 1:
            ok["score"] = 1.0
            ok["rank"] = 1
            note = "one row in this group: rank 1, score 1"
        elif len(ok) and used:
            ok["score"] = [sum(float(r[m + "__norm"]) for m in used) / len(used) for _, r in ok.iterrows()]
            halves = [math.sqrt(sum(norm_half[m][i] ** 2 for m in used)) / len(used) for i in range(len(ok))]
            ok["score_half_width"] = halves
            ok["rank"] = tied_ranks(
                list(ok["score"]), [(s - h, s + h) if h else None for s, h in zip(ok["score"], halves)])
        elif len(ok) and within_noise and not excluded:
            ok["score"] = None
            ok["rank"] = 1
            note = "every metric's spread is within its noise: the rows tie"
        else:
            ok["score"] = None
            ok["rank"] = None
            if len(ok):
                note = "no metric is present for every row, so the rows are not ranked"
        ok["quality_vs_best"] = _quality_vs_best(ok, spec)
        ok = ok.sort_values(["rank", "score", spec.label_column], ascending=[True, False, True], kind="stable",
                            na_position="last") if len(ok) and used else ok
        for m in spec.leaderboard:
            rest[m + "__rank"] = None
            rest[m + "__norm"] = None
        for c in ("score", "rank", "score_half_width", "quality_vs_best"):
            rest[c] = None
        rows = pd.concat([ok, rest], ignore_index=True) if len(rest) else ok.reset_index(drop=True)
        for c in ["rank"] + [m + "__rank" for m in spec.leaderboard]:
            rows[c] = pd.array([None if is_missing(v) else int(v) for v in rows[c]], dtype="Int64")
        for c in ["score", "score_half_width"] + [m + "__norm" for m in spec.leaderboard]:
            rows[c] = pd.array([None if is_missing(v) else float(v) for v in rows[c]], dtype="Float64")
        board.groups.append(Group(key, group_label(spec, key), used, excluded, rows, note, within_noise, noise_unknown))
    return board


def _quality_vs_best(ok: pd.DataFrame, spec: StageSpec) -> list[str | None]:
    """Per row: whether its quality differs from the group's best by more than 2 combined SEs
    ("significant" / "not significant"); None for the best row, or when an SE is unknown."""
    q = spec.quality
    if q not in ok.columns or not len(ok):
        return [None] * len(ok)
    vals = [None if is_missing(v) else float(v) for v in ok[q]]
    if all(v is None for v in vals):
        return [None] * len(ok)
    pick = min if spec.quality_lower_is_better else max
    best = vals.index(pick(v for v in vals if v is not None))
    ses = _standard_errors(ok, q)
    out: list[str | None] = []
    for i, v in enumerate(vals):
        if i == best or v is None or ses[i] is None or ses[best] is None:
            out.append(None)
        else:
            out.append(spread.difference_label(v, ses[i], vals[best], ses[best]))  # type: ignore[arg-type]
    return out


def _standard_errors(ok: pd.DataFrame, m: str) -> list[float | None]:
    """SEs backed out of each row's recorded interval (see spread.se_from_interval)."""
    out: list[float | None] = []
    for b, n, method, v in zip(_bounds(ok, m), ok.get(m + "__ci_n", [None] * len(ok)),
                               ok.get(m + "__ci_method", [None] * len(ok)), ok[m]):
        if b is None:
            out.append(None)
            continue
        nn = 0 if is_missing(n) else int(n)
        iv = spread.Interval(b[0], b[1], nn, "" if is_missing(method) else str(method))
        # the value: an interval cut at 0 keeps its uncut SE (its longer side)
        out.append(spread.se_from_interval(iv, None if is_missing(v) else float(v)))
    return out


def leaderboard_frame(board: Leaderboard, spec: StageSpec) -> pd.DataFrame:
    recs = []
    for g in board.groups:
        for _, r in g.rows.iterrows():
            rec: dict[str, object] = {"group": g.label}
            rec.update(dict(zip(spec.group_by, g.key)))
            rec.update({"rank": r["rank"], "score": r["score"], "score_half_width": r.get("score_half_width"),
                        "cell": r["cell"], "status": r["status"]})
            for k in spec.row_keys:
                rec[k] = r.get(k)
            rec["metrics_used"] = ";".join(g.used)
            rec["metrics_excluded"] = ";".join(g.excluded)
            rec["metrics_within_noise"] = ";".join(g.within_noise)
            rec["metrics_noise_unknown"] = ";".join(g.noise_unknown)
            rec["quality_vs_best"] = r.get("quality_vs_best")
            for m in spec.leaderboard:
                rec[m] = r.get(m)
                rec[m + "__ci_low"] = r.get(m + "__ci_low")
                rec[m + "__ci_high"] = r.get(m + "__ci_high")
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
            "group; rank 1 is best. Each metric cell shows the value (± its 95 % interval's half-width "
            "where measured) and its rank within the group. Rows whose intervals overlap the leader of "
            "their tie group share its rank; a metric whose spread across the group is within its noise "
            "is left out of the score (docs/noise.md)."
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
        if g.within_noise:
            lines.append(
                "Left out (spread within noise): "
                + "; ".join(f"{headers[m]} — {why}" for m, why in g.within_noise.items()) + ".")
        if g.noise_unknown:
            lines.append("Noise unknown (no intervals recorded), ranked as if exact: "
                         + ", ".join(headers[m] for m in g.noise_unknown) + ".")
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
                else ("–" if is_missing(r["score"]) else f"{float(r['score']):.3f}"
                      + ("" if is_missing(r.get("score_half_width")) or not r["score_half_width"]
                         else f" ± {float(r['score_half_width']):.3f}"))
            )
            cells = []
            for m in spec.leaderboard:
                if status != "ok":
                    cells.append(STATUS_TEXT.get(status, status))
                elif is_missing(r[m]):
                    cells.append("n/a")
                else:
                    ns = " n.s." if m == spec.quality and r.get("quality_vs_best") == "not significant" else ""
                    text = format_with_interval(r[m], r.get(m + "__ci_low"), r.get(m + "__ci_high"), spec.column(m).fmt)
                    if is_missing(r.get(m + "__rank")):  # not ranked: energy of another scope than its group's
                        scope = r.get("energy_scope")
                        cells.append(f"{text} (not ranked; scope {'unknown' if is_missing(scope) else scope})")
                    else:
                        cells.append(f"{text} (#{int(r[m + '__rank'])}){ns}")
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
