"""Aggregation: tables, leaderboard, Pareto front and plots, manifests and the summary page."""

from __future__ import annotations

import importlib.util
import json
import math
import re
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pandas as pd
import pytest

from effbench.aggregate.frame import load_frame
from effbench.aggregate.leaderboard import competition_rank, compute_leaderboard, normalise, tied_ranks
from effbench.aggregate.pareto import front_steps, pareto_front
from effbench.aggregate.specs import PRETRAIN, SPECS, check_spec
from effbench.aggregate.stage import aggregate_stage
from effbench.aggregate.summary import write_summary
from effbench.aggregate.tables import build_table, format_value, render_latex, render_markdown
from effbench.measure.figure import Figure
from effbench.measure.spread import Interval
from effbench.record import write_record

ROOT = Path(__file__).resolve().parents[2]
NO_NVML = "pynvml.NVMLError_LibraryNotFound: NVML Shared Library Not Found"
NO_MFU = "no dense peak known for this CPU"
T0 = datetime(2025, 5, 1, 12, 0, tzinfo=UTC)

# size, technique: ppl, amu_gb, al_s_per_iter, tt, aec_w (None = missing)
CELLS = {
    ("xs", "gqa"): (8.09, 44.87, 0.1283, 2.0e-4, 300.0),
    ("xs", "mqa"): (8.23, 42.24, 0.1298, 2.0e-4, 280.0),
    ("xs", "mla"): (7.79, 52.93, 0.2537, 1.0e-4, None),
    ("s", "gqa"): (7.10, 76.53, 0.4000, 0.5e-4, 450.0),
}
PARAMS = {"xs": 10_000_000, "s": 50_000_000}


def _f(v: float | None, source: str, reason: str = NO_NVML) -> Figure:
    return Figure.missing(reason) if v is None else Figure.of(v, source)


def make_record(
    path: Path, size: str, technique: str, i: int, status: str = "ok", metrics=None, host: str = "devbox",
    intervals: dict[str, tuple[float, float]] | None = None, extra: dict | None = None,
) -> Path:
    """intervals: metric -> (low, high), a 95 % interval over 5 repeats; extra: more columns."""
    ppl, amu, al, tt, aec = metrics or (None,) * 5
    values = {
        "stage": "pretrain",
        "cell": f"{size}/{technique}",
        "run_id": f"pretrain/{size}/{technique}/{i}",
        "status": status,
        "size": size,
        "technique": technique,
        "seconds": 10.0,
        "params_total": PARAMS[size],
        "seq_length": 256,
        "model_family": "gpt",
        "settings_json": "{}",
        "settings_hash": "s" * 64,
        "config_hash": "c" * 64,
        "code_version": "v0.1-test",
        "library_versions_json": "{}",
        "host": host,
        "device_kind": "cpu",
        "device_name": "Test CPU",
        "device_count": 1,
        "seed": 1,
        "started_at": T0 + timedelta(minutes=10 * i),
        "ended_at": T0 + timedelta(minutes=10 * i + 5),
    }
    if status == "ok":
        values.update(
            ppl=_f(ppl, "val_loss"),
            amu_gb=_f(amu, "psutil_rss"),
            al_s_per_iter=_f(al, "wall_clock"),
            tt_tokens_per_param_s=_f(tt, "wall_clock"),
            aec_w=_f(aec, "rapl"),
            energy_j_per_token=_f(None if aec is None else aec / 1e4, "rapl"),
            mfu_frac=Figure.missing(NO_MFU),
        )
        for m, (lo, hi) in (intervals or {}).items():
            values[m] = values[m].with_interval(Interval(lo, hi, 5, "t_repeats"))
        values.update(extra or {})
    else:
        values["status_detail"] = "CUDA out of memory at micro-batch 1"
    target = path / f"run{i}" / "pretrain" / size / technique / "record.parquet"  # the results layout
    write_record(target, values)
    return target


@pytest.fixture()
def records(tmp_path: Path) -> list[Path]:
    d = tmp_path / "records"
    paths = [make_record(d, s, t, i, metrics=m) for i, ((s, t), m) in enumerate(CELLS.items())]
    paths.append(make_record(d, "xs", "moe", 9, status="oom"))
    return paths


# --- formatting and specs ---------------------------------------------------------------


def test_specs_are_consistent() -> None:
    for spec in SPECS.values():
        check_spec(spec)
    assert PRETRAIN.quality == "ppl" and PRETRAIN.quality_lower_is_better


def test_format_value() -> None:
    assert format_value(0.12834, "sig4") == "0.1283"
    assert format_value(42.2412, "f2") == "42.24"
    assert format_value(8.0949, "f2") == "8.09"
    assert format_value(1.234e-4, "sci3") == "1.23e-04"
    assert format_value(1.54e9, "params") == "1.54B"
    assert format_value(279.0, "sig4") == "279.0"
    assert format_value(9.99996, "sig4") == "10.00"
    assert format_value(None, "f2") == ""


# --- tables -------------------------------------------------------------------------------


def test_table_values_na_footnotes_and_oom(records: list[Path]) -> None:
    df = load_frame(records, PRETRAIN)
    t = build_table(df, PRETRAIN)
    assert t.headers[:5] == ["Size", "Method", "Family", "Params", "Context"]
    assert "PPL" in t.headers and "AL (s/iter)" in t.headers and "TT (tok/param/s)" in t.headers
    rows = {(r[0], r[1]): dict(zip(t.headers, r)) for r in t.rows}
    marks = {(r[0], r[1]): dict(zip(t.headers, m)) for r, m in zip(t.rows, t.marks)}
    # order: xs before s (by params), techniques in the spec's order
    assert [tuple(r[:2]) for r in t.rows] == [("xs", "mqa"), ("xs", "gqa"), ("xs", "mla"), ("xs", "moe"), ("s", "gqa")]
    gqa = rows[("xs", "gqa")]
    assert gqa["PPL"] == "8.09" and gqa["AMU (GB)"] == "44.87" and gqa["AL (s/iter)"] == "0.1283"
    assert gqa["TT (tok/param/s)"] == "2.00e-04" and gqa["AEC (W)"] == "300.0" and gqa["Params"] == "10M"
    # one note per distinct reason: AEC and energy share the NVML reason; MFU has its own
    assert t.notes == [NO_MFU, NO_NVML]
    assert rows[("xs", "mla")]["AEC (W)"] == "n/a" and marks[("xs", "mla")]["AEC (W)"] == 2
    assert marks[("xs", "mla")]["Energy (J/token)"] == 2 and marks[("xs", "gqa")]["MFU"] == 1
    moe = rows[("xs", "moe")]
    assert all(moe[c.header] == "OOM" for c in PRETRAIN.metric_columns)
    assert moe["Params"] == "10M"
    assert any("xs/moe" in n and "out of memory" in n for n in t.status_notes)
    md = render_markdown(t)
    assert "| xs | mla |" in md and "n/a [2]" in md and f"- [2] n/a: {NO_NVML}" in md
    tex = render_latex(t)
    assert "n/a\\textsuperscript{2}" in tex and "\\toprule" in tex and "NVMLError\\_LibraryNotFound" in tex


def test_csv_keeps_raw_numbers_and_status(records: list[Path], tmp_path: Path) -> None:
    out = tmp_path / "results"
    aggregate_stage("pretrain", records, out)
    csv = pd.read_csv(out / "tables" / "pretrain.csv")
    by_cell = csv.set_index("cell")
    assert by_cell.loc["xs/gqa", "al_s_per_iter"] == pytest.approx(0.1283)
    assert by_cell.loc["xs/gqa", "tt_tokens_per_param_s"] == pytest.approx(2.0e-4)
    assert math.isnan(by_cell.loc["xs/mla", "aec_w"])
    assert by_cell.loc["xs/moe", "status"] == "oom" and math.isnan(by_cell.loc["xs/moe", "ppl"])
    assert (out / "tables" / "pretrain.md").is_file() and (out / "tables" / "pretrain.tex").is_file()


def test_repeats_collapse_to_median(tmp_path: Path) -> None:
    d = tmp_path / "r"
    paths = [
        make_record(d, "xs", "gqa", 0, metrics=(8.0, 40.0, 0.10, 1e-4, 100.0)),
        make_record(d, "xs", "gqa", 1, metrics=(8.2, 44.0, 0.30, 3e-4, None)),
        make_record(d, "xs", "gqa", 2, metrics=(8.4, 42.0, 0.20, 2e-4, 300.0), intervals={"ppl": (8.3, 8.5)}),
    ]
    df = load_frame(paths, PRETRAIN)
    assert len(df) == 1 and int(df.loc[0, "n_runs"]) == 3
    assert df.loc[0, "al_s_per_iter"] == pytest.approx(0.20)
    assert df.loc[0, "aec_w"] == pytest.approx(200.0) and df.loc[0, "aec_w__missing"] is None
    assert pd.isna(df.loc[0, "ppl__ci_low"])  # the last run's interval does not describe the median


def test_wrong_stage_is_an_error(records: list[Path], tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="other stages"):
        aggregate_stage("finetune", records, tmp_path / "o")


# --- leaderboard --------------------------------------------------------------------------


def test_normalise_and_rank_helpers() -> None:
    assert normalise([1.0, 2.0, 3.0], lower_is_better=True) == [1.0, 0.5, 0.0]
    assert normalise([1.0, 2.0, 3.0], lower_is_better=False) == [0.0, 0.5, 1.0]
    assert normalise([5.0, 5.0], lower_is_better=True) == [1.0, 1.0]
    assert competition_rank([0.5, 0.9, 0.5, None]) == [2, 1, 2, None]
    assert competition_rank([3.0, 1.0, 1.0], higher_is_better=False) == [3, 1, 1]


def test_leaderboard_ranks_match_hand_computation(records: list[Path]) -> None:
    board = compute_leaderboard(load_frame(records, PRETRAIN), PRETRAIN)
    groups = {g.key: g for g in board.groups}
    xs = groups[("xs",)]
    # AEC is missing for xs/mla: left out of the xs score, and said so
    assert xs.used == ["ppl", "amu_gb", "al_s_per_iter", "tt_tokens_per_param_s"]
    assert xs.excluded == {"aec_w": "missing for xs/mla"}
    # records without intervals: scored as exact, and the group says their noise is unknown
    assert xs.noise_unknown == xs.used and xs.within_noise == {}
    # by hand: lower-is-better metrics inverted, (max - v) / (max - min)
    ppl = {"gqa": (8.23 - 8.09) / (8.23 - 7.79), "mqa": 0.0, "mla": 1.0}
    amu = {"gqa": (52.93 - 44.87) / (52.93 - 42.24), "mqa": 1.0, "mla": 0.0}
    al = {"gqa": 1.0, "mqa": (0.2537 - 0.1298) / (0.2537 - 0.1283), "mla": 0.0}
    tt = {"gqa": 1.0, "mqa": 1.0, "mla": 0.0}
    expect = {f"xs/{k}": (ppl[k] + amu[k] + al[k] + tt[k]) / 4 for k in ppl}  # gqa .768, mqa .747, mla .25
    rows = xs.rows.set_index("cell").astype(object).where(lambda f: f.notna(), None)
    for cell, score in expect.items():
        assert rows.loc[cell, "score"] == pytest.approx(score)
    assert list(xs.rows["cell"]) == ["xs/gqa", "xs/mqa", "xs/mla", "xs/moe"]
    assert [rows.loc[c, "rank"] for c in ("xs/gqa", "xs/mqa", "xs/mla")] == [1, 2, 3]
    assert rows.loc["xs/moe", "rank"] is None and rows.loc["xs/moe", "status"] == "oom"
    # per-metric ranks: a tie shares the best rank; AEC ranked among rows that have it
    assert [rows.loc[c, "tt_tokens_per_param_s__rank"] for c in ("xs/gqa", "xs/mqa", "xs/mla")] == [1, 1, 3]
    assert [rows.loc[c, "aec_w__rank"] for c in ("xs/gqa", "xs/mqa", "xs/mla")] == [2, 1, None]
    assert [rows.loc[c, "ppl__rank"] for c in ("xs/gqa", "xs/mqa", "xs/mla")] == [2, 3, 1]
    # a group with one row: rank 1, score 1
    s = groups[("s",)].rows.set_index("cell").astype(object)
    assert s.loc["s/gqa", "rank"] == 1 and s.loc["s/gqa", "score"] == 1.0


def test_leaderboard_files(records: list[Path], tmp_path: Path) -> None:
    out = tmp_path / "results"
    aggregate_stage("pretrain", records, out)
    lb = pd.read_csv(out / "leaderboard" / "pretrain.csv")
    assert list(lb[lb["group"] == "size = xs"]["cell"]) == ["xs/gqa", "xs/mqa", "xs/mla", "xs/moe"]
    assert lb.set_index("cell").loc["xs/gqa", "metrics_excluded"] == "aec_w"
    md = (out / "leaderboard" / "pretrain.md").read_text()
    assert "### size = xs" in md and "Excluded (not present for every row): AEC (W) (missing for xs/mla)" in md
    assert "| 1 | xs/gqa | 0.768 |" in md


def test_tied_ranks_share_the_leaders_rank_where_intervals_overlap() -> None:
    vals = [10.0, 9.5, 8.0, 7.9]
    bounds = [(9.0, 11.0), (9.2, 9.8), (7.5, 8.5), (7.0, 8.8)]
    assert tied_ranks(vals, bounds) == [1, 1, 3, 3]
    # overlap is with the tie group's leader, not the neighbour: 9.5 ties 10, 8.9 does not
    assert tied_ranks([10.0, 9.5, 8.9], [(9.9, 10.1), (8.8, 10.2), (8.85, 8.95)]) == [1, 1, 3]
    assert tied_ranks([3.0, 1.0, None], [None, None, None], higher_is_better=False) == [2, 1, None]


def test_leaderboard_noise_ties_and_not_significant(tmp_path: Path) -> None:
    d = tmp_path / "r"
    # AMU's spread (52.93 - 42.24 = 10.7) is inside its ±11 noise: left out of the score.
    amu = {c: (CELLS[c][1] - 11, CELLS[c][1] + 11) for c in CELLS}
    ppl_half = {("xs", "gqa"): 0.5, ("xs", "mqa"): 0.05, ("xs", "mla"): 0.05, ("s", "gqa"): 0.05}
    paths = [
        make_record(d, s_, t_, i, metrics=m, intervals={
            "amu_gb": amu[(s_, t_)], "ppl": (m[0] - ppl_half[(s_, t_)], m[0] + ppl_half[(s_, t_)])})
        for i, ((s_, t_), m) in enumerate(CELLS.items())
    ]
    board = compute_leaderboard(load_frame(paths, PRETRAIN), PRETRAIN)
    xs = {g.key: g for g in board.groups}[("xs",)]
    assert xs.within_noise == {"amu_gb": "spread 11 within noise ±11"}
    assert xs.used == ["ppl", "al_s_per_iter", "tt_tokens_per_param_s"]
    assert xs.noise_unknown == ["al_s_per_iter", "tt_tokens_per_param_s"]
    rows = xs.rows.set_index("cell").astype(object).where(lambda f: f.notna(), None)
    ppl = {"gqa": 0.14 / 0.44, "mqa": 0.0, "mla": 1.0}
    al = {"gqa": 1.0, "mqa": (0.2537 - 0.1298) / (0.2537 - 0.1283), "mla": 0.0}
    tt = {"gqa": 1.0, "mqa": 1.0, "mla": 0.0}
    for k in ppl:
        assert rows.loc[f"xs/{k}", "score"] == pytest.approx((ppl[k] + al[k] + tt[k]) / 3)
    # gqa's score interval (±0.5/0.44/3 = ±0.38) covers mqa's: they tie; mla's does not reach it
    assert rows.loc["xs/gqa", "score_half_width"] == pytest.approx(0.5 / 0.44 / 3)
    assert [rows.loc[f"xs/{k}", "rank"] for k in ("gqa", "mqa", "mla")] == [1, 1, 3]
    # PPL: mla (7.79 ± 0.05) leads; gqa (8.09 ± 0.5) overlaps it, mqa (8.23 ± 0.05) does not
    assert [rows.loc[f"xs/{k}", "ppl__rank"] for k in ("gqa", "mqa", "mla")] == [1, 3, 1]
    # quality against the best (mla): gqa's difference 0.30 is inside 2 combined SEs
    assert rows.loc["xs/gqa", "quality_vs_best"] == "not significant"
    assert rows.loc["xs/mqa", "quality_vs_best"] == "significant"
    assert rows.loc["xs/mla", "quality_vs_best"] is None
    from effbench.aggregate.leaderboard import render_markdown as lb_markdown

    md = lb_markdown(board, PRETRAIN)
    assert "Left out (spread within noise): AMU (GB) — spread 11 within noise ±11." in md
    assert "Noise unknown (no intervals recorded), ranked as if exact: AL (s/iter), TT (tok/param/s)." in md
    assert "8.09 ± 0.50 (#1) n.s." in md and "| 1 | xs/gqa | 0.773 ± 0.379 |" in md


def test_table_prints_intervals_and_flags_short_energy_windows(tmp_path: Path) -> None:
    d = tmp_path / "r"
    p = make_record(d, "xs", "gqa", 0, metrics=CELLS[("xs", "gqa")], intervals={"aec_w": (290.0, 310.0)},
                    extra={"energy_window_short": True, "energy_counter_updates": 14.4})
    t = build_table(load_frame([p], PRETRAIN), PRETRAIN)
    row = dict(zip(t.headers, t.rows[0]))
    mark = dict(zip(t.headers, t.marks[0]))
    assert row["AEC (W)"] == "300.0 ± 10" and mark["AEC (W)"] == "E" and mark["Energy (J/token)"] == "E"
    assert row["PPL"] == "8.09" and mark["PPL"] is None
    md = render_markdown(t)
    assert "300.0 ± 10 [E]" in md and "- [E] energy measured over a window of fewer than 20" in md
    assert "---:" in md.splitlines()[3]  # the ± column still aligns as a number


# --- Pareto -------------------------------------------------------------------------------


def test_pareto_front_hand_made() -> None:
    pts = [(1, 5), (2, 3), (2, 3), (3, 4), (4, 1), (5, 1), (float("nan"), 0)]
    # (3,4) is dominated by (2,3); (5,1) by (4,1) (tie on y, worse x); the duplicate (2,3) pair both stay
    assert pareto_front(pts, ("min", "min")) == [0, 1, 2, 4]
    # y higher is better: (1,5) dominates everything with x >= 1 and y <= 5
    assert pareto_front(pts, ("min", "max")) == [0]
    assert pareto_front([(1, 1), (2, 2), (3, 3)], ("lower", "higher")) == [0, 1, 2]
    assert pareto_front([(1, 1), (2, 2), (3, 3)], ("max", "max")) == [2]
    assert pareto_front([], ("min", "min")) == []
    with pytest.raises(ValueError):
        pareto_front([(1, 2)], ("min", "sideways"))
    assert front_steps([2, 1], [3, 5], "min") == ([1, 2], [5, 3], "steps-post")
    assert front_steps([1, 2], [3, 5], "max")[2] == "steps-pre"


def test_plots_written_only_where_x_measured(records: list[Path], tmp_path: Path) -> None:
    out = tmp_path / "results"
    m = aggregate_stage("pretrain", records, out)
    names = {p["name"] for p in m["plots"]}
    assert names == {"pretrain_ppl_vs_amu_gb", "pretrain_ppl_vs_al_s_per_iter", "pretrain_ppl_vs_aec_w"}
    for n in names:
        assert (out / "plots" / f"{n}.png").read_bytes()[:4] == b"\x89PNG"
        assert "<svg" in (out / "plots" / f"{n}.svg").read_text()
    aec = next(p for p in m["plots"] if p["x"] == "aec_w")
    assert aec["left_out"] and "xs/mla" in aec["left_out"][0]
    assert m["skipped"] == []
    assert sorted(p.name for p in (out / "plots").iterdir()) == sorted(
        f"{n}.{e}" for n in names for e in ("png", "svg")
    )


def test_no_plot_when_x_missing_everywhere(tmp_path: Path) -> None:
    d = tmp_path / "r"
    paths = [
        make_record(d, "xs", t, i, metrics=(ppl, 40.0 + i, 0.1 + i / 10, 1e-4, None), host="cpu-host")
        for i, (t, ppl) in enumerate((("gqa", 8.0), ("mqa", 8.5)))
    ]
    out = tmp_path / "results"
    m = aggregate_stage("pretrain", paths, out)
    assert not (out / "plots" / "pretrain_ppl_vs_aec_w.png").exists()
    assert not (out / "plots" / "pretrain_ppl_vs_aec_w.svg").exists()
    (skip,) = m["skipped"]
    assert skip["x"] == "aec_w" and skip["reason"] == f"AEC (W) not measured on host cpu-host: {NO_NVML}"
    assert (out / "plots" / "pretrain_ppl_vs_amu_gb.png").is_file()
    summary = write_summary([out / "pretrain.manifest.json"], out).read_text()
    assert f"AEC (W) not measured on host cpu-host: {NO_NVML}" in summary


# --- manifest, summary and CLIs -------------------------------------------------------------


def _load_script(name: str):  # type: ignore[no-untyped-def]
    spec = importlib.util.spec_from_file_location(name, ROOT / "scripts" / f"{name}.py")
    mod = importlib.util.module_from_spec(spec)
    assert spec.loader is not None
    spec.loader.exec_module(mod)
    return mod


def test_cli_manifest_and_summary_links_resolve(records: list[Path], tmp_path: Path) -> None:
    out = tmp_path / "results"
    argv = ["--stage", "pretrain", "--out", str(out), "--records", *map(str, records)]
    assert _load_script("aggregate").main(argv) == 0
    manifest = json.loads((out / "pretrain.manifest.json").read_text())
    assert manifest["tables"] == {e: f"tables/pretrain.{e}" for e in ("csv", "md", "tex")}
    prov = manifest["provenance"]
    assert prov["hosts"] == ["devbox"] and prov["code_versions"] == ["v0.1-test"] and prov["runs"] == 5
    assert prov["statuses"] == {"ok": 4, "oom": 1} and prov["started_first"].startswith("2025-05-01T12:00")
    assert _load_script("summarize").main(["--out", str(out), "--manifests", str(out / "pretrain.manifest.json")]) == 0
    text = (out / "summary.md").read_text()
    links = [t for t in re.findall(r"\]\(([^)]+)\)", text) if not t.startswith("#")]
    assert links
    for link in links:
        assert (out / link).is_file(), link
    linked = {Path(link).as_posix() for link in links}
    for rel in [*manifest["tables"].values(), *manifest["leaderboard"].values()]:
        assert rel in linked
    for p in manifest["plots"]:
        assert p["png"] in linked and p["svg"] in linked
    assert "| xs | mla |" in text  # the table is embedded
    assert "## Provenance" in text and "`devbox`" in text and "`v0.1-test`" in text


def test_empty_stage(tmp_path: Path) -> None:
    out = tmp_path / "results"
    m = aggregate_stage("finetune", [], out)
    assert m["rows"] == 0 and len(m["skipped"]) == len(SPECS["finetune"].pareto)
    assert "No runs" in (out / "tables" / "finetune.md").read_text()
    summary = write_summary([out / "finetune.manifest.json"], out).read_text()
    assert "- **finetune** (0 rows)" in summary and "0 runs (none) in 0 rows" in summary
    assert "No plots were drawn." in summary and "| Runs | no runs |" in summary


def _other_stage_record(path: Path, stage: str, i: int, **values) -> Path:  # type: ignore[no-untyped-def]
    base = {
        "stage": stage,
        "run_id": f"{stage}/{i}",
        "status": "ok",
        "seconds": 10.0,
        "settings_json": "{}",
        "settings_hash": "s" * 64,
        "config_hash": "c" * 64,
        "code_version": "v0.1-test",
        "library_versions_json": "{}",
        "host": "devbox",
        "device_kind": "cpu",
        "device_name": "Test CPU",
        "device_count": 1,
        "seed": 1,
        "started_at": T0,
        "ended_at": T0 + timedelta(minutes=1),
    }
    target = path / f"run{i}" / stage / values["cell"] / "record.parquet"
    write_record(target, {**base, **values})
    return target


def test_finetune_and_inference_specs_run(tmp_path: Path) -> None:
    d = tmp_path / "r"
    ft = [
        _other_stage_record(
            d,
            "finetune",
            i,
            cell=f"tiny/sft/{m}",
            model="tiny",
            task="sft",
            method=m,
            params_total=1_000_000,
            train_loss=Figure.of(loss, "trainer"),
            val_loss=Figure.of(loss + 0.1, "llamafactory_eval_loss"),
            amu_gb=Figure.of(1.0 + i, "psutil_rss"),
            aec_w=Figure.missing(NO_NVML),
        )
        for i, (m, loss) in enumerate((("lora", 0.48), ("rslora", 0.41)))
    ]
    m = aggregate_stage("finetune", ft, tmp_path / "out")
    assert m["leaderboard_groups"][0]["group"] == "size_band = up to 4.5B, task = sft"
    # quality is the held-out loss, not the loss of the batches the method fitted
    assert m["leaderboard_groups"][0]["metrics_used"] == ["val_loss", "amu_gb"]
    assert {p["x"] for p in m["plots"]} == {"amu_gb"}  # AL (not recorded) and AEC (no NVML) skipped
    inf = [
        _other_stage_record(
            d,
            "inference",
            i,
            cell=f"tiny/{p}/b1",
            model="tiny",
            precision=p,
            load_point="b1",
            params_total=1_000_000,
            accuracy=Figure.of(acc, "lm_eval"),
            it_tokens_per_s=Figure.of(tps, "wall_clock"),
        )
        for i, (p, acc, tps) in enumerate((("bf16", 0.55, 17.5), ("int4", 0.51, 19.2)))
    ]
    m = aggregate_stage("inference", inf, tmp_path / "out")
    rows = pd.read_csv(tmp_path / "out" / "leaderboard" / "inference.csv")
    assert list(rows["precision"]) == ["bf16", "int4"] and list(rows["rank"]) == [1, 1]  # 0.5 each: a tie
    s = write_summary(
        [tmp_path / "out" / "finetune.manifest.json", tmp_path / "out" / "inference.manifest.json"], tmp_path / "out"
    )
    assert "## Quantization and inference" in s.read_text()


def test_table_flags_a_cell_that_was_not_measured_alone(tmp_path: Path) -> None:
    d = tmp_path / "r"
    shared = make_record(d, "xs", "gqa", 0, metrics=CELLS[("xs", "gqa")],
                         extra={"alone": False, "concurrent_jobs": 1, "concurrent_jobs_json": '["finetune/xs/lora"]'})
    alone = make_record(d, "xs", "mqa", 0, metrics=CELLS[("xs", "mqa")], extra={"alone": True, "concurrent_jobs": 0})
    t = build_table(load_frame([shared, alone], PRETRAIN), PRETRAIN)
    marks = {row[0] + "/" + row[1] if len(t.headers) > 1 else row[0]: mk[0] for row, mk in zip(t.rows, t.marks)}
    assert sorted(marks.values(), key=str) == [None, "S"]
    md = render_markdown(t)
    assert "[S] xs/gqa: not measured alone; overlapping jobs: [\"finetune/xs/lora\"]" in md
    assert "xs/mqa: not measured alone" not in md
