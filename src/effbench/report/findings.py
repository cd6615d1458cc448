"""The run's findings against the paper's headline claims (EfficientLLM, arXiv 2505.13840).

Pure: each claim is judged from the aggregated stage tables (``tables/<stem>.csv`` as pandas
frames, keyed by stem: ``pretrain``, ``finetune``, ``inference``), the same numbers the report
shows. Every comparison respects the noise: two figures differ only when their 95 % intervals
(``<col>__ci_low`` / ``<col>__ci_high``) do not overlap; overlapping intervals, or a figure without
an interval (its noise is unknown), is a tie, never a rank. A claim is

- ``agrees``: every comparison it rests on goes its way, beyond the noise;
- ``disagrees``: at least one goes against it, beyond the noise;
- ``not distinguishable here``: measured, but the differences are inside the intervals;
- ``not measurable here``: the cells it needs were not measured ok.

Energy is compared only between rows whose energy counters covered the same hardware (the
tables' ``energy_scope``); a comparison across scopes is left out and its evidence says so.

See docs/report.md for the rules of each claim.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import pandas as pd

from ..aggregate.scopes import distinct_scopes
from ..aggregate.tables import format_value
from ..measure.energy_scope import mixed_scope_flag
from .markdown import slug

AGREES, DISAGREES, TIE, NOT_MEASURABLE = "agrees", "disagrees", "not distinguishable here", "not measurable here"
LARGE_PARAMS = 14e9  # the paper's "large": RSLoRA is its rule beyond 14B (decision.paper_rules.RSLORA_ABOVE)
PAPER_DROP = 0.05  # the upper end of the paper's "3-5 % accuracy drop"
PAPER_CUT = 3.9  # the paper's "up to 3.9x"


def row_anchor(stem: str, cell: str) -> str:
    """The page id of a table row (the report gives every stage-table row one)."""
    return f"row-{slug(stem)}-{slug(cell)}"


@dataclass(frozen=True)
class Est:
    """A figure with its 95 % interval (``low``/``high`` None: no interval recorded)."""

    value: float
    low: float | None = None
    high: float | None = None

    @property
    def has_interval(self) -> bool:
        return self.low is not None and self.high is not None

    def text(self, fmt: str = "sig3") -> str:
        if not self.has_interval:
            return format_value(self.value, fmt) + " (no interval)"
        return f"{format_value(self.value, fmt)} [{format_value(self.low, fmt)}, {format_value(self.high, fmt)}]"


def compare(a: Est, b: Est) -> int:
    """-1 when a is below b beyond the noise, +1 above, 0 when not distinguishable (the intervals
    overlap, or either has none: without an interval the noise is unknown, so no rank)."""
    if not (a.has_interval and b.has_interval):
        return 0
    if a.high < b.low:  # type: ignore[operator]
        return -1
    if a.low > b.high:  # type: ignore[operator]
        return 1
    return 0


def ratio(num: Est, den: Est) -> Est:
    """num / den with the interval of the quotient of the two intervals (conservative: the
    extremes of each; none when either has no interval or the denominator's reaches 0)."""
    v = num.value / den.value
    if not (num.has_interval and den.has_interval) or den.low <= 0:  # type: ignore[operator]
        return Est(v)
    return Est(v, num.low / den.high, num.high / den.low)  # type: ignore[operator]


@dataclass
class Finding:
    claim: str  # the paper's claim, as the report states it
    verdict: str  # AGREES | DISAGREES | TIE | NOT_MEASURABLE
    summary: str  # one line: the evidence that decided it
    evidence: list[str] = field(default_factory=list)  # one line per comparison, with intervals
    rows: list[tuple[str, str]] = field(default_factory=list)  # (table stem, cell) of the rows behind it
    rule: str = ""  # how the verdict is decided


def est(r: Mapping[str, Any], col: str) -> Est | None:
    """The row's figure with its interval, None when missing or not finite."""
    v = _num(r.get(col))
    if v is None:
        return None
    return Est(v, _num(r.get(col + "__ci_low")), _num(r.get(col + "__ci_high")))


def _num(v: Any) -> float | None:
    try:
        x = float(v)
    except (TypeError, ValueError):
        return None
    return x if math.isfinite(x) else None


def _ok(df: pd.DataFrame | None) -> pd.DataFrame:
    if df is None or not len(df):
        return pd.DataFrame()
    return df[df["status"] == "ok"] if "status" in df.columns else df


def _combine(parts: list[str]) -> str:
    """A claim over several groups: any disagreement wins; agrees only if none is a tie."""
    if not parts:
        return NOT_MEASURABLE
    if DISAGREES in parts:
        return DISAGREES
    return AGREES if all(p == AGREES for p in parts) else TIE if all(p == TIE for p in parts) else AGREES


def _summary(verdict: str, parts: list[tuple[str, str]], what: str) -> str:
    """``parts``: (group, verdict). Says in how many groups the claim held."""
    n = len(parts)
    counts = {v: sum(1 for _, p in parts if p == v) for v in (AGREES, DISAGREES, TIE)}
    said = ", ".join(f"{k} in {c} of {n} {what}" for k, c in counts.items() if c)
    return said or f"no {what} measured"


# --- the claims ------------------------------------------------------------------------------


def _pretrain_groups(df: pd.DataFrame, target: str, cols: tuple[str, ...]
                     ) -> list[tuple[str, pd.Series, list[pd.Series]]]:
    """Per size: the target technique's row and the other techniques' rows, each with every col."""
    ok = _ok(df)
    out = []
    if not len(ok) or "technique" not in ok.columns:
        return out
    for size, g in ok.groupby("size", sort=False):
        have = [r for _, r in g.iterrows() if all(est(r, c) is not None for c in cols)]
        mine = [r for r in have if r["technique"] == target]
        others = [r for r in have if r["technique"] != target]
        if mine and others:
            out.append((str(size), mine[0], others))
    return out


def _best_of(claim: str, rule: str, df: pd.DataFrame | None, target: str, col: str, sign: int,
             unit: str) -> Finding:
    """``target`` is the most extreme on ``col`` in every size (sign -1: lowest, +1: highest)."""
    groups = _pretrain_groups(_ok(df), target, (col,))
    if not groups:
        return Finding(claim, NOT_MEASURABLE, f"needs {target} and another technique measured ok with {col} "
                                              "in one pretraining size", rule=rule)
    parts, evidence, rows = [], [], []
    for size, me, others in groups:
        m = est(me, col)
        cmp = {str(o["technique"]): compare(m, est(o, col)) for o in others}  # type: ignore[arg-type]
        if any(c == -sign for c in cmp.values()):
            v = DISAGREES
        elif all(c == sign for c in cmp.values()):
            v = AGREES
        else:
            v = TIE
        parts.append((size, v))
        evidence.append(f"{size}: {target} {unit} {_text(me, col)} vs "
                        + ", ".join(f"{o['technique']} {_text(o, col)}" for o in others) + f" → {v}")
        rows += [("pretrain", str(me["cell"]))] + [("pretrain", str(o["cell"])) for o in others]
    verdict = _combine([p for _, p in parts])
    return Finding(claim, verdict, _summary(verdict, parts, "sizes"), evidence, rows, rule)


def mla_lowest_perplexity(pretrain: pd.DataFrame | None) -> Finding:
    return _best_of("MLA has the lowest perplexity", "per size, MLA's validation PPL below every other "
                    "technique's beyond the 95 % intervals", pretrain, "mla", "ppl", -1, "PPL")


def moe_costs_memory(pretrain: pd.DataFrame | None) -> Finding:
    return _best_of("MoE costs memory", "per size, MoE's AMU above every other technique's beyond the 95 % "
                    "intervals; another technique using more, beyond them, disagrees", pretrain, "moe", "amu_gb",
                    +1, "AMU (GB)")


def mqa_memory_latency(pretrain: pd.DataFrame | None) -> Finding:
    claim = "MQA has the best memory–latency trade-off"
    rule = ("per size, on AMU and AL (s/iter): MQA agrees when it is better than every other technique on one "
            "and not worse on the other, beyond the 95 % intervals; disagrees when another is so against MQA; "
            "otherwise (trade-offs or overlaps) not distinguishable")
    groups = _pretrain_groups(_ok(pretrain), "mqa", ("amu_gb", "al_s_per_iter"))
    if not groups:
        return Finding(claim, NOT_MEASURABLE, "needs mqa and another technique measured ok with AMU and AL in "
                                              "one pretraining size", rule=rule)
    parts, evidence, rows = [], [], []
    for size, me, others in groups:
        beats, beaten = [], []
        for o in others:
            c = [compare(est(me, k), est(o, k)) for k in ("amu_gb", "al_s_per_iter")]  # type: ignore[arg-type]
            if -1 in c and 1 not in c:
                beats.append(str(o["technique"]))
            if 1 in c and -1 not in c:
                beaten.append(str(o["technique"]))
        v = DISAGREES if beaten else AGREES if len(beats) == len(others) else TIE
        parts.append((size, v))
        line = ", ".join(f"{o['technique']} {_mem_lat(o)}" for o in others)
        evidence.append(f"{size}: mqa {_mem_lat(me)} vs {line} → {v}"
                        + (f" (better on both or one with a tie: {', '.join(beaten)})" if beaten else ""))
        rows += [("pretrain", str(me["cell"]))] + [("pretrain", str(o["cell"])) for o in others]
    verdict = _combine([p for _, p in parts])
    return Finding(claim, verdict, _summary(verdict, parts, "sizes"), evidence, rows, rule)


def _mem_lat(r: pd.Series) -> str:
    return f"{_text(r, 'amu_gb')} GB / {_text(r, 'al_s_per_iter')} s"


def _text(r: Mapping[str, Any], col: str) -> str:
    e = est(r, col)
    return "n/a" if e is None else e.text()


def energy_scope_flag(*rows: Mapping[str, Any]) -> tuple[str | None, list[str]]:
    """(the mixed-scope warning, or None; the rows' distinct energy scopes): two rows' joules are
    compared only when one kind of counter (``energy_scope``) measured both."""
    scopes = distinct_scopes(r.get("energy_scope") for r in rows)
    return mixed_scope_flag(scopes), scopes


def _baseline_row(g: pd.DataFrame) -> pd.Series | None:
    if "quality_vs_baseline" in g.columns:
        b = g[g["quality_vs_baseline"] == "baseline"]
        if len(b):
            return b.iloc[0]
    for p in ("bf16", "fp16"):
        b = g[g["precision"] == p]
        if len(b):
            return b.iloc[0]
    return None


def int4_cuts(inference: pd.DataFrame | None) -> Finding:
    claim = f"int4 cuts memory/energy by up to {PAPER_CUT}× at a 3–5 % accuracy drop"
    rule = ("per model, int4 against its baseline precision at the table's load point: the AMU and energy "
            "(J/token) ratios baseline/int4 and the accuracy drop, each with its 95 % interval. Agrees when a "
            "ratio is above 1 beyond its interval, none is below 1, and the drop is not beyond 5 % (its interval "
            "reaches 5 % or less); disagrees when the drop is beyond 5 % or a ratio below 1, beyond the intervals")
    ok = _ok(inference)
    parts, evidence, rows = [], [], []
    if len(ok) and {"model", "precision"} <= set(ok.columns):
        for model, g in ok.groupby("model", sort=False):
            base, four = _baseline_row(g), g[g["precision"] == "int4"]
            if base is None or not len(four) or base["precision"] == "int4":
                continue
            q = four.iloc[0]
            cuts = {}
            scope_said = ""
            for col, name in (("amu_gb", "memory"), ("energy_j_per_token", "energy")):
                b, i = est(base, col), est(q, col)
                if b is None or i is None or i.value <= 0:
                    continue
                if name == "energy":  # joules compare only when one kind of counter measured both
                    flag, scopes = energy_scope_flag(base, q)
                    if flag:
                        scope_said = f"; energy not compared: {flag}"
                        continue
                    scope_said = f"; energy scope {scopes[0]}" if scopes else "; energy scope not recorded"
                cuts[name] = ratio(b, i)
            drop = est(q, "accuracy_drop")
            if not cuts:
                continue
            one = Est(1.0, 1.0, 1.0)
            up = [n for n, r in cuts.items() if compare(r, one) == 1]
            down = [n for n, r in cuts.items() if compare(r, one) == -1]
            beyond = drop is not None and drop.has_interval and drop.low > PAPER_DROP  # type: ignore[operator]
            if down or beyond:
                v = DISAGREES
            elif up and drop is not None:
                v = AGREES
            else:
                v = TIE
            parts.append((str(model), v))
            said = ", ".join(f"{n} ×{r.text()}" for n, r in cuts.items())
            over = [n for n, r in cuts.items() if r.has_interval and r.low > PAPER_CUT]  # type: ignore[operator]
            evidence.append(f"{model}: int4 vs {base['precision']}: {said}; accuracy drop "
                            + (drop.text("sig2") if drop is not None else "not measured")
                            + (f"; beyond the paper's {PAPER_CUT}×: {', '.join(over)}" if over else "") + scope_said
                            + f" → {v}")
            rows += [("inference", str(base["cell"])), ("inference", str(q["cell"]))]
    if not parts:
        return Finding(claim, NOT_MEASURABLE, "needs int4 and the baseline precision of one model served ok with "
                                              "AMU or energy", rule=rule)
    verdict = _combine([p for _, p in parts])
    return Finding(claim, verdict, _summary(verdict, parts, "models"), evidence, rows, rule)


def _pairs(finetune: pd.DataFrame | None, a: str, b: str, cols: tuple[str, ...]
           ) -> list[tuple[str, pd.Series, pd.Series, str]]:
    """Per (model, task): the rows of methods a and b, and the first of ``cols`` both have."""
    ok = _ok(finetune)
    out: list[tuple[str, pd.Series, pd.Series, str]] = []
    if not len(ok) or "method" not in ok.columns:
        return out
    for (model, task), g in ok.groupby(["model", "task"], sort=False):
        ra, rb = g[g["method"] == a], g[g["method"] == b]
        if not len(ra) or not len(rb):
            continue
        col = next((c for c in cols if est(ra.iloc[0], c) is not None and est(rb.iloc[0], c) is not None), None)
        if col:
            out.append((f"{model}/{task}", ra.iloc[0], rb.iloc[0], col))
    return out


def rslora_large_only(finetune: pd.DataFrame | None) -> Finding:
    claim = "RSLoRA beats LoRA only at large sizes"
    rule = (f"per model and task, RSLoRA's loss (held-out, else training) against LoRA's: at or under "
            f"{format_value(LARGE_PARAMS, 'params')} parameters RSLoRA lower beyond the intervals disagrees (else "
            f"agrees); above, RSLoRA lower agrees, higher disagrees, overlap is not distinguishable")
    parts, evidence, rows, any_large = [], [], [], False
    for where, rs, lo, col in _pairs(finetune, "rslora", "lora", ("val_loss", "train_loss")):
        params = _num(rs.get("params_total"))
        large = params is not None and params > LARGE_PARAMS
        any_large |= large
        c = compare(est(rs, col), est(lo, col))  # type: ignore[arg-type]
        v = (AGREES if c == -1 else DISAGREES if c == 1 else TIE) if large else (DISAGREES if c == -1 else AGREES)
        parts.append((where, v))
        size = format_value(params, "params") if params is not None else "size unknown"
        evidence.append(f"{where} ({size}, {'large' if large else 'not large'}): {col} rslora "
                        f"{_text(rs, col)} vs lora {_text(lo, col)} → {v}")
        rows += [("finetune", str(rs["cell"])), ("finetune", str(lo["cell"]))]
    if not parts:
        return Finding(claim, NOT_MEASURABLE, "needs rslora and lora fine-tuned ok on one model and task", rule=rule)
    verdict = _combine([p for _, p in parts])
    summary = _summary(verdict, parts, "model × task pairs")
    if not any_large:
        summary += f"; no model above {format_value(LARGE_PARAMS, 'params')} was measured, so only the 'not at small "\
                   "sizes' half is tested"
    return Finding(claim, verdict, summary, evidence, rows, rule)


def dora_adds_latency(finetune: pd.DataFrame | None) -> Finding:
    claim = "DoRA adds latency"
    rule = "per model and task, DoRA's AL (s/iter) above LoRA's beyond the 95 % intervals; below disagrees"
    parts, evidence, rows = [], [], []
    for where, do, lo, col in _pairs(finetune, "dora", "lora", ("al_s_per_iter",)):
        c = compare(est(do, col), est(lo, col))  # type: ignore[arg-type]
        v = AGREES if c == 1 else DISAGREES if c == -1 else TIE
        parts.append((where, v))
        evidence.append(f"{where}: AL dora {_text(do, col)} s vs lora {_text(lo, col)} s → {v}")
        rows += [("finetune", str(do["cell"])), ("finetune", str(lo["cell"]))]
    if not parts:
        return Finding(claim, NOT_MEASURABLE, "needs dora and lora fine-tuned ok with AL on one model and task",
                       rule=rule)
    verdict = _combine([p for _, p in parts])
    return Finding(claim, verdict, _summary(verdict, parts, "model × task pairs"), evidence, rows, rule)


CLAIMS: tuple[tuple[str, Callable[[pd.DataFrame | None], Finding]], ...] = (
    ("pretrain", mqa_memory_latency),
    ("pretrain", mla_lowest_perplexity),
    ("pretrain", moe_costs_memory),
    ("inference", int4_cuts),
    ("finetune", rslora_large_only),
    ("finetune", dora_adds_latency),
)


def findings(tables: Mapping[str, pd.DataFrame]) -> list[Finding]:
    """Every headline claim judged from the aggregated tables (a missing table: not measurable)."""
    return [judge(tables.get(stem)) for stem, judge in CLAIMS]
