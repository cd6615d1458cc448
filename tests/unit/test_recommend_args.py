"""`effbench recommend` checks what it is given (issue #23 item 6): a load point, technique, model
or precision the records do not hold exits non-zero listing the valid ones (read from the
aggregated records); a valid one narrows the answer to it; a `--model-params` far outside the
measured sizes is warned about on stderr. The real command entry on hand-made records: the
pretraining records of test_aggregate (xs/gqa, xs/mqa, xs/mla, s/gqa) and the serving fixture of
test_serving (model `tiny` at bf16 / fp16 / int4, load points offline and c1), aggregated as the
pipeline aggregates them (their manifests are what the command reads)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from effbench.cli import main as effbench_main
from effbench.decision.recommend_render import render_markdown as effbench_render

ROOT = Path(__file__).resolve().parents[2]
CONFIG = str(ROOT / "config" / "config.yaml")


@pytest.fixture(scope="module")
def results(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from test_aggregate import CELLS, make_record
    from test_serving import _fixture

    from effbench.aggregate.serving import aggregate_inference, aggregate_quantize
    from effbench.aggregate.stage import aggregate_stage
    from effbench.measure.figure import Figure

    tmp = tmp_path_factory.mktemp("recommend_args")
    out = tmp / "results"
    records = []
    for i, ((size, tech), m) in enumerate(CELLS.items()):
        made = make_record(tmp / "made", size, tech, i, metrics=m, extra={"peak_mem_gb": Figure.of(m[1], "psutil_pss")})
        target = out / "pretrain" / size / tech / "record.parquet"
        target.parent.mkdir(parents=True)
        shutil.move(made, target)
        records.append(target)
    aggregate_stage("pretrain", records, out)
    quant, inf, scores = _fixture(out)  # written at their cells' paths under results/
    aggregate_inference(inf, quant, scores, out, "bf16", "offline")
    aggregate_quantize(quant, scores, out, "bf16")
    return out


def _run(results: Path, capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str, str]:
    rc = effbench_main(["recommend", "--configfile", CONFIG, "--results", str(results), *args])
    got = capsys.readouterr()
    return rc, got.out, got.err


@pytest.mark.parametrize("flag, value, valid", [
    ("--load-point", "nosuch", "c1, offline"),
    ("--technique", "nosuch", "gqa, mla, mqa"),
    ("--model", "nosuch", "tiny"),
    ("--precision", "int3", "bf16, fp16, int4"),
])
def test_an_unknown_name_exits_non_zero_with_the_valid_choices(results: Path, capsys: pytest.CaptureFixture[str],
                                                                flag: str, value: str, valid: str) -> None:
    rc, out, err = _run(results, capsys, flag, value)
    assert rc != 0 and out == ""
    what = flag.removeprefix("--").replace("-", " ")
    assert f"unknown {what} {value!r} ({flag})" in err, err
    assert valid in err, err


def test_the_configs_load_point_is_checked_too(results: Path, tmp_path: Path,
                                               capsys: pytest.CaptureFixture[str]) -> None:
    config = tmp_path / "config.yaml"
    config.write_text(Path(CONFIG).read_text().replace("table_load_point: offline", "table_load_point: c64"))
    rc = effbench_main(["recommend", "--configfile", str(config), "--results", str(results)])
    err = capsys.readouterr().err
    assert rc != 0 and "unknown load point 'c64' (inference.table_load_point in the config)" in err
    assert "c1, offline" in err


def test_valid_names_narrow_the_answer(results: Path, capsys: pytest.CaptureFixture[str]) -> None:
    rc, out, err = _run(results, capsys, "--load-point", "c1", "--technique", "mqa", "--model", "tiny",
                        "--precision", "int4", "--json")
    assert rc == 0, err
    a = json.loads(out)
    steps = {s["step"]: s for s in a["steps"]}
    assert a["load_point"] == "c1"
    assert [x["candidate"] for x in steps["architecture"]["candidates"]] == ["mqa"]
    assert [x["cell"] for x in steps["precision"]["candidates"]] == ["tiny/int4/c1"]
    assert "Asked about only: technique = mqa, model = tiny, precision = int4." in effbench_render(a)


def test_a_size_far_outside_the_measured_ones_is_warned_about(results: Path,
                                                              capsys: pytest.CaptureFixture[str]) -> None:
    rc, out, err = _run(results, capsys, "--model-params", "7e10")
    assert rc == 0
    # pretraining measured 10M-50M parameters, serving 1,000: 70B is far above both
    assert "effbench recommend: warning: model_params 70B is 1,400× the largest pretrain model measured" in err, err
    assert "extrapolates from models of another scale" in out
    rc, out, err = _run(results, capsys, "--model-params", "2e7")  # inside the pretraining sizes
    assert rc == 0 and "pretrain model measured" not in err
