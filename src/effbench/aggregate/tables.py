"""A stage's table in the paper's layout, as CSV (raw numbers), Markdown and LaTeX.

A missing value prints as ``n/a`` with a numbered note giving the reason from the
figure's ``__missing`` column (one note per distinct reason). A row whose status is
``oom`` prints ``OOM`` in every metric column (``failed`` prints ``failed``); the
descriptive columns (Params, Context) still show what the record has. The CSV keeps the
raw numbers (empty when missing) beside the status, and each printed figure's 95 % interval
(``X__ci_low`` / ``X__ci_high``) where the record has one.

A figure with a recorded 95 % interval prints as ``value ± half-width`` (docs/noise.md). An
energy figure measured over a window of fewer than 20 energy-counter updates
(``energy_window_short``) carries a numbered note saying so. A table with an energy column notes
what the energy counter covered (the rows' ``energy_scope``, a sentence each) and flags rows of
different scopes (:mod:`.scopes`); the CSV keeps each row's ``energy_scope``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd

from ..atomic import atomic_path, write_text
from .frame import is_missing
from .scopes import scope_notes
from .specs import ENERGY_COLUMNS, ColumnSpec, StageSpec

NOT_RECORDED = "not recorded in the run's record"
SHORT_MARK = "E"  # the note mark of an energy figure from a short window
SHARED_MARK = "S"  # the note mark of a cell measured while other effbench jobs, or other processes, ran on its host
FALLBACK_MARK = "F"  # the note mark of a serving cell another engine than the configured one served
SHORT_ENERGY_WINDOW = (f"[{SHORT_MARK}] energy measured over a window of fewer than 20 energy-counter updates "
                       "(under ~1.7 s on NVML): coarse")
STATUS_TEXT = {"oom": "OOM", "failed": "failed"}


def format_value(v: Any, fmt: str) -> str:
    """Format one number by a spec format (see :mod:`.specs`); missing values give ''."""
    if is_missing(v):
        return ""
    if fmt == "str":
        return str(v)
    x = float(v)
    if fmt == "int":
        return f"{round(x)}"
    if fmt == "params":
        for scale, suffix in ((1e12, "T"), (1e9, "B"), (1e6, "M"), (1e3, "K")):
            if abs(x) >= scale:
                return f"{x / scale:.3g}{suffix}"
        return f"{round(x)}"
    if fmt == "bytes_gb":
        return _sig(x / 1e9, 3)
    kind, n = fmt.rstrip("0123456789"), int(fmt[len(fmt.rstrip("0123456789")) :])
    if kind == "f":
        return f"{x:.{n}f}"
    if kind == "sci":
        return f"{x:.{max(n - 1, 0)}e}"
    if kind == "sig":
        return _sig(x, n)
    raise ValueError(f"unknown format {fmt!r}")


def format_with_interval(v: Any, low: Any, high: Any, fmt: str) -> str:
    """``value ± half-width`` (half-width to 2 significant digits) when an interval is given."""
    text = format_value(v, fmt)
    if not text or is_missing(low) or is_missing(high) or fmt in ("str", "int", "params"):
        return text
    half = (float(high) - float(low)) / 2
    return f"{text} ± {half:.1e}" if fmt.startswith("sci") else f"{text} ± {_sig(half, 2)}"


def _sig(x: float, n: int) -> str:
    """n significant digits in fixed notation (scientific below 1e-3); no digits dropped left of the point."""
    if x == 0 or not math.isfinite(x):
        return f"{x:g}" if x else "0"
    x = float(f"{x:.{n - 1}e}")  # round first, so 9.9996 → 10.00 has the right magnitude
    mag = math.floor(math.log10(abs(x)))
    if mag < -3:
        return f"{x:.{n - 1}e}"
    return f"{x:.{max(n - 1 - mag, 0)}f}"


@dataclass
class Table:
    """A rendered-to-text table: headers, cell strings, and the notes they refer to."""

    stage: str
    title: str
    headers: list[str]
    rows: list[list[str]]  # cells without note markers
    marks: list[list[int | str | None]]  # note number per cell, or SHORT_MARK (None: no note)
    notes: list[str] = field(default_factory=list)  # note i+1 text (why a cell is n/a)
    status_notes: list[str] = field(default_factory=list)  # "OOM: cell — detail"
    other_notes: list[str] = field(default_factory=list)  # repeats etc.


def build_table(df: pd.DataFrame, spec: StageSpec) -> Table:
    headers = list(spec.key_headers) + [c.header for c in spec.columns]
    reasons: dict[str, int] = {}
    rows: list[list[str]] = []
    marks: list[list[int | str | None]] = []
    status_notes: list[str] = []
    other: list[str] = list(spec.notes)
    for _, r in df.iterrows():
        status = r["status"]
        cells = ["" if is_missing(r.get(k)) else str(r[k]) for k in spec.row_keys]
        mk: list[int | str | None] = [None] * len(cells)
        for c in spec.columns:
            text, mark = _cell(r, c, status, df, reasons)
            cells.append(text)
            mk.append(mark)
        shared = shared_reasons(r)
        if cells and shared:
            mk[0] = SHARED_MARK
            other.append(f"[{SHARED_MARK}] {r['cell']}: " + "; ".join(shared) + " (its timed figures are not comparable)")
        fallback = r.get("engine_fallback")
        if cells and not is_missing(fallback):
            mk[0] = FALLBACK_MARK
            other.append(f"[{FALLBACK_MARK}] {r['cell']}: served by {r.get('engine')}, not the configured engine: "
                         f"{fallback} (its latencies are not comparable with other engines' rows)")
        rows.append(cells)
        marks.append(mk)
        if status != "ok":
            detail = "" if is_missing(r.get("status_detail")) else f": {r['status_detail']}"
            status_notes.append(f"{STATUS_TEXT.get(status, status)} — {r['cell']}{detail}")
        n_runs, n_ok = int(r.get("n_runs", 1)), int(r.get("n_ok", 1 if status == "ok" else 0))
        if n_runs > 1:
            what = f"median of {n_ok} ok runs" if n_ok > 1 else ("1 ok run used" if n_ok == 1 else "latest run shown")
            other.append(f"{r['cell']}: {n_runs} runs ({what})")
    if any(SHORT_MARK in mk for mk in marks):
        other.append(SHORT_ENERGY_WINDOW)
    other += scope_notes(df[df["status"] == "ok"] if len(df) else df, energy_columns(spec))
    return Table(
        stage=spec.stage,
        title=spec.title,
        headers=headers,
        rows=rows,
        marks=marks,
        notes=list(reasons),
        status_notes=status_notes,
        other_notes=other,
    )


def energy_columns(spec: StageSpec) -> list[str]:
    """The spec's printed columns read from the energy counter."""
    return [c.column for c in spec.columns if c.column in ENERGY_COLUMNS]


def shared_reasons(r: Any) -> list[str]:
    """Why a record row is marked [S] (none: it is not): another effbench job overlapped its run
    (``alone`` false), or processes the job registry cannot see used more than
    ``measure.foreign_cpu_max_cores`` of its host's CPU during its measured window
    (``foreign_load``, effbench.isolation)."""
    out = []
    alone = r.get("alone")
    if not is_missing(alone) and not bool(alone):
        out.append(f"not measured alone; overlapping jobs: {r.get('concurrent_jobs_json')}")
    foreign = r.get("foreign_load")
    if not is_missing(foreign) and bool(foreign):
        s, frac, cpus = r.get("foreign_cpu_s"), r.get("foreign_cpu_frac"), r.get("host_cpus")
        text = "foreign load: other processes on its host"
        if not is_missing(s):
            text += f" used {s:.3g} CPU-s during its measured window"
        if not is_missing(frac):
            text += f" ({frac:.0%} of its CPUs" + (f", {frac * cpus:.2f} of {int(cpus)} cores on average)"
                                                    if not is_missing(cpus) else ")")
        out.append(text)
    return out


def _cell(
    r: pd.Series, c: ColumnSpec, status: str, df: pd.DataFrame, reasons: dict[str, int]
) -> tuple[str, int | str | None]:
    v = r.get(c.column)
    if status != "ok" and c.metric:
        return STATUS_TEXT.get(status, status), None
    if not is_missing(v):
        text = format_with_interval(v, r.get(c.column + "__ci_low"), r.get(c.column + "__ci_high"), c.fmt)
        short = r.get("energy_window_short")
        if c.column in ENERGY_COLUMNS and not is_missing(short) and bool(short):
            return text, SHORT_MARK
        return text, None
    if status != "ok":
        return "–", None
    reason_col = c.column + "__missing"
    reason = r.get(reason_col) if reason_col in df.columns else None
    reason = NOT_RECORDED if is_missing(reason) else str(reason)
    if reason not in reasons:
        reasons[reason] = len(reasons) + 1
    return "n/a", reasons[reason]


# --- renderers ---------------------------------------------------------------------------


def _md_escape(s: str) -> str:
    return s.replace("|", "\\|")


def render_markdown(t: Table) -> str:
    lines = [f"**{t.title}** ({len(t.rows)} rows)", ""]
    if not t.rows:
        return "\n".join(lines + ["No runs were given for this stage.", ""])
    lines.append("| " + " | ".join(_md_escape(h) for h in t.headers) + " |")
    lines.append("|" + "|".join("---:" if _numeric_col(t, i) else "---" for i in range(len(t.headers))) + "|")
    for row, mk in zip(t.rows, t.marks):
        cells = [_md_escape(c) + (f" [{m}]" if m else "") for c, m in zip(row, mk)]
        lines.append("| " + " | ".join(cells) + " |")
    lines += _notes_block(t, lambda s: s)
    return "\n".join(lines) + "\n"


def _numeric_col(t: Table, i: int) -> bool:
    vals = [row[i] for row in t.rows if row[i] not in ("", "n/a", "OOM", "failed", "–")]
    return bool(vals) and all(_looks_numeric(v) for v in vals)


def _looks_numeric(s: str) -> bool:
    try:
        float(s.split(" ± ")[0].rstrip("KMBT"))
        return True
    except ValueError:
        return False


def _notes_block(t: Table, esc) -> list[str]:  # type: ignore[no-untyped-def]
    out: list[str] = []
    if t.notes or t.status_notes or t.other_notes:
        out += ["", "Notes:", ""]
        out += [f"- [{i}] n/a: {esc(n)}" for i, n in enumerate(t.notes, 1)]
        out += [f"- {esc(n)}" for n in t.status_notes + t.other_notes]
    return out


_TEX = {
    "\\": r"\textbackslash{}",
    "&": r"\&",
    "%": r"\%",
    "$": r"\$",
    "#": r"\#",
    "_": r"\_",
    "{": r"\{",
    "}": r"\}",
    "~": r"\textasciitilde{}",
    "^": r"\textasciicircum{}",
    "<": r"\textless{}",
    ">": r"\textgreater{}",
    "–": "--",
    "—": "---",
}


def tex_escape(s: str) -> str:
    return "".join(_TEX.get(ch, ch) for ch in s)


def render_latex(t: Table) -> str:
    """A booktabs ``table`` environment (needs ``\\usepackage{booktabs}``)."""
    align = "".join("r" if _numeric_col(t, i) else "l" for i in range(len(t.headers)))
    lines = [
        "% Generated by effbench.aggregate; needs \\usepackage{booktabs}.",
        "\\begin{table}[t]",
        "\\centering",
        f"\\caption{{{tex_escape(t.title)}}}",
        f"\\label{{tab:{t.stage}}}",
        f"\\begin{{tabular}}{{{align}}}",
        "\\toprule",
        " & ".join(tex_escape(h) for h in t.headers) + " \\\\",
        "\\midrule",
    ]
    for row, mk in zip(t.rows, t.marks):
        cells = [tex_escape(c) + (f"\\textsuperscript{{{m}}}" if m else "") for c, m in zip(row, mk)]
        lines.append(" & ".join(cells) + " \\\\")
    if not t.rows:
        lines.append(f"\\multicolumn{{{len(t.headers)}}}{{l}}{{No runs.}} \\\\")
    lines += ["\\bottomrule", "\\end{tabular}"]
    notes = [f"\\textsuperscript{{{i}}}n/a: {tex_escape(n)}" for i, n in enumerate(t.notes, 1)]
    notes += [tex_escape(n) for n in t.status_notes + t.other_notes]
    if notes:
        lines += ["", "\\par\\smallskip\\footnotesize", " \\\\\n".join(notes)]
    lines.append("\\end{table}")
    return "\n".join(lines) + "\n"


def csv_frame(df: pd.DataFrame, spec: StageSpec) -> pd.DataFrame:
    """Raw numbers (empty when missing), the status and why, and how many runs a row holds."""
    cols = list(spec.row_keys) + ["cell", "status", "status_detail", "n_runs"] + [c.column for c in spec.columns]
    cols += [c.column + s for c in spec.columns for s in ("__ci_low", "__ci_high") if c.column + s in df.columns]
    cols += ["energy_window_short"] if "energy_window_short" in df.columns else []
    cols += ["energy_scope"] if energy_columns(spec) and "energy_scope" in df.columns else []
    out = pd.DataFrame({c: df[c] if c in df.columns else pd.Series([None] * len(df), dtype=object) for c in cols})
    return out


def write_tables(df: pd.DataFrame, spec: StageSpec, out: Path) -> dict[str, str]:
    """Write ``<out>/tables/<stage>.{csv,md,tex}``; return their paths relative to ``out``."""
    t = build_table(df, spec)
    rel = {ext: f"tables/{spec.file_stem}.{ext}" for ext in ("csv", "md", "tex")}
    with atomic_path(out / rel["csv"]) as tmp:
        csv_frame(df, spec).to_csv(tmp, index=False)
    write_text(out / rel["md"], render_markdown(t))
    write_text(out / rel["tex"], render_latex(t))
    return rel
