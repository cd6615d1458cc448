"""Tables a reader can work with: a stage table (as the aggregation wrote its Markdown) rendered
with its columns grouped (a header row of groups), the long columns (percentiles, sources, tests,
fidelity details) marked ``long`` so the page's script hides them behind a toggle, each row's
raw number from the CSV as ``data-v`` (sorting by the figure, not by its text) and an id per row
(the headline's findings link to the rows behind them). The sorting, filtering and toggling are
the page's own inline script (:mod:`.script`); without it the table is still a plain table.

The notes under a table (n/a reasons, marks, repeats) go into a collapsed ``<details>``: they are
long, and the marks are explained once in the glossary."""

from __future__ import annotations

import html
import re
from pathlib import Path

import pandas as pd

from ..aggregate.specs import StageSpec
from .findings import row_anchor
from .markdown import Resolver, inline, split_row

_RULE = re.compile(r"^\|?\s*:?-{3,}:?\s*(\|\s*:?-{3,}:?\s*)*\|?\s*$")
# Column groups, by record column (the order of first appearance sets the group's colour band).
GROUPS = {
    "Quality": ("ppl", "accuracy", "train_loss", "val_loss", "accuracy_drop", "quality_vs_baseline", "quality_p",
                "quality_test", "perf_tasks"),
    "Memory": ("amu_gb", "disk_bytes"),
    "Speed": ("al_s_per_iter", "al_s_per_request", "it_tokens_per_s", "it_cv", "tt_tokens_per_param_s",
              "st_samples_per_param_s", "pcu_frac", "mfu_frac", "seconds"),
    "Energy": ("aec_w", "energy_j_per_token", "energy_j_per_sample", "prefill_energy_j_per_token",
               "decode_energy_j_per_token"),
    "Load": ("load_mode", "request_rate_rps", "arrivals", "slo_ttft_ms", "slo_tpot_ms"),
    "Goodput": ("request_throughput_rps", "goodput_rps", "goodput_frac"),
    "Compression": ("mcr_nominal", "mcr_disk", "weight_bits", "quant_method"),
    "Fidelity": ("fid_ppl", "fid_kl_mean", "fid_kl_p99", "fid_top1_agreement", "fid_verdict"),
    "Setup": ("params_total", "params_trainable", "params_trainable_frac", "seq_length", "engine", "concurrency",
              "prompt_len", "output_len", "load_point", "precision_set", "kv_cache_dtype"),
}
GROUP_OF = {c: g for g, cols in GROUPS.items() for c in cols}
# Behind the "all columns" toggle: percentiles, the tests' details, fidelity beyond its verdict,
# sizes that do not change a comparison, and other descriptive columns.
LONG = {"quality_p", "quality_test", "perf_tasks", "fid_ppl", "fid_kl_mean", "fid_kl_p99", "fid_top1_agreement",
        "params_trainable", "params_trainable_frac", "seq_length", "prompt_len", "output_len", "it_cv", "mfu_frac",
        "mcr_disk", "seconds", "concurrency", "engine"}
_PERCENTILE = re.compile(r"_s_p\d+$")


def is_long(column: str) -> bool:
    return column in LONG or bool(_PERCENTILE.search(column))


def group_of(column: str) -> str:
    if column.startswith(("ttft", "tpot", "itl", "e2e", "queue_s", "prefill_s", "decode_s")):
        return "Latency"
    return GROUP_OF.get(column, "Other")


def split_notes(md: str) -> tuple[list[str], list[str], list[str]]:
    """(lines before the first pipe table, the table's lines, the lines after it)."""
    lines = md.splitlines()
    for i, line in enumerate(lines):
        if line.strip().startswith("|") and i + 1 < len(lines) and _RULE.match(lines[i + 1].strip()):
            j = i + 2
            while j < len(lines) and lines[j].strip().startswith("|"):
                j += 1
            return lines[:i], lines[i:j], lines[j:]
    return lines, [], []


def _raw_values(csv: Path | None, n: int) -> pd.DataFrame | None:
    """The CSV's rows, when they line up with the Markdown's (same count: the same frame wrote both)."""
    if csv is None or not csv.is_file():
        return None
    df = pd.read_csv(csv, dtype=str, keep_default_na=False)
    return df if len(df) == n else None


def spec_table(lines: list[str], spec: StageSpec, csv: Path | None, stem: str, table_id: str, r: Resolver,
               docs: dict[str, str] | None = None) -> str:
    """A stage table's Markdown lines as a grouped, sortable table (see the module doc); ``docs``:
    each column's definition, its header's tooltip."""
    docs = docs or {}
    header, body = split_row(lines[0]), [split_row(x) for x in lines[2:]]
    by_header = dict(zip((*spec.key_headers, *(c.header for c in spec.columns)),
                         (*spec.row_keys, *(c.column for c in spec.columns))))
    cols = [by_header.get(h, "") for h in header]
    keys = set(spec.row_keys)
    raw = _raw_values(csv, len(body))
    groups = ["Cell" if c in keys else group_of(c) for c in cols]
    longs = [c not in keys and is_long(c) for c in cols]

    def cls(i: int) -> str:
        return ' class="long"' if longs[i] else ""

    # The group row: one cell per run of equal groups; a run mixing long and short columns spans
    # the short ones only when the long ones are hidden, so each column carries its group's name too.
    band, i = [], 0
    while i < len(groups):
        j = i
        while j < len(groups) and groups[j] == groups[i] and longs[j] == longs[i]:
            j += 1
        band.append(f'<th colspan="{j - i}" class="grp{" long" if longs[i] else ""}">{html.escape(groups[i])}</th>')
        i = j
    heads = "".join(f'<th data-col="{html.escape(c)}" data-group="{html.escape(g)}"{cls(k)}'
                    f' title="{html.escape(docs.get(c, ""))}">{html.escape(h)}</th>'
                    for k, (h, c, g) in enumerate(zip(header, cols, groups)))
    rows = []
    for n, cells in enumerate(body):
        rid = ""
        if raw is not None and "cell" in raw.columns:
            rid = f' id="{row_anchor(stem, raw["cell"].iloc[n])}"'
        tds = []
        for k, text in enumerate(cells):
            v = raw[cols[k]].iloc[n] if raw is not None and cols[k] in raw.columns else ""
            dv = f' data-v="{html.escape(v)}"' if v and _is_number(v) else ""
            tds.append(f"<td{dv}{cls(k)}>{inline(text, r)}</td>")
        rows.append(f"<tr{rid}>{''.join(tds)}</tr>")
    return (f'<div class="scroll"><table class="dt" id="{table_id}"><thead><tr class="groups">{"".join(band)}</tr>'
            f"<tr>{heads}</tr></thead><tbody>{''.join(rows)}</tbody></table></div>")


def _is_number(v: str) -> bool:
    try:
        float(v)
        return True
    except ValueError:
        return False
