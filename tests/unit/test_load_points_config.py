"""Open-loop load points, SLOs, sweeps and the beyond-the-paper precisions: resolved at DAG build,
and bad input refused there, naming the key (issue #22)."""

import copy
from pathlib import Path

import pytest
import yaml

from config_edits import edited

from effbench import config as cfg
from effbench.config.load_points import expand_load_points, rate_name, sweep_rates

ROOT = Path(__file__).resolve().parents[2]
DEFAULT = yaml.safe_load((ROOT / "config" / "config.yaml").read_text())
POISSON = {"mode": "rate", "rate": 4.0, "requests": 10, "prompt_len": 64, "output_len": 16,
           "slo": {"ttft_ms": 500, "tpot_ms": 100}}


def with_point(point: dict, name: str = "p", **inference) -> dict:
    """The default config with ``point`` as its only open-loop point."""
    c = edited(DEFAULT, ("inference", "load_points", name), point)
    del c["inference"]["load_points"]["poisson"]
    c["inference"].update(inference)
    return c


def open_cells(plan) -> dict[str, dict]:
    return {c.load_point: c.settings for c in plan.serve.inference if c.settings["point"]["mode"] == "rate"}


@pytest.mark.parametrize(
    "point, key",
    [
        ({**POISSON, "rate": 0}, "inference.load_points.p.rate"),
        ({**POISSON, "rate": -1.5}, "inference.load_points.p.rate"),
        ({**POISSON, "slo": {"ttft_ms": 0, "tpot_ms": 100}}, "inference.load_points.p.slo.ttft_ms"),
        ({**POISSON, "slo": {"ttft_ms": 200, "tpot_ms": 0}}, "inference.load_points.p.slo.tpot_ms"),
        ({**POISSON, "sweep": {"from": 8, "to": 2}}, "inference.load_points.p.sweep.to"),
        ({**POISSON, "sweep": {"from": 0, "to": 2}}, "inference.load_points.p.sweep.from"),
        ({**POISSON, "duration_s": 3}, "inference.load_points.p"),  # requests and duration_s
        ({k: v for k, v in POISSON.items() if k != "requests"}, "inference.load_points.p"),  # neither
        ({"mode": "offline", "requests": 4, "prompt_len": 8, "output_len": 8, "rate": 2},
         "inference.load_points.p.rate"),  # an open-loop key on a closed-loop point
        ({**POISSON, "mode": "sideways"}, "inference.load_points.p.mode"),
    ],
)
def test_bad_load_points_are_refused_naming_the_key(point, key):
    with pytest.raises(cfg.ConfigError, match=f"`{key}`"):
        cfg.plan(with_point(point))


def test_unknown_open_loop_model_is_refused():
    with pytest.raises(cfg.ConfigError, match="`inference.open_loop.models`.*xs-nope"):
        cfg.plan(with_point(POISSON, open_loop={"models": ["xs-nope"]}))


@pytest.mark.parametrize("beyond, key", [
    ({"precisions": ["fp4"]}, "quantize.beyond_paper.precisions"),  # an unknown scheme
    ({"precisions": ["fp8"], "models": ["xs-nope"]}, "quantize.beyond_paper.models"),
    ({"precisions": ["int8"], "int8": {"method": "awq"}}, "quantize.int8.method"),
])
def test_bad_beyond_paper_settings_are_refused(beyond, key):
    c = copy.deepcopy(DEFAULT)
    if "int8" in beyond:
        c["quantize"]["int8"] = beyond.pop("int8")
    c["quantize"]["beyond_paper"] = beyond
    with pytest.raises(cfg.ConfigError, match=f"`{key}"):
        cfg.plan(c)


def test_beyond_paper_precisions_for_their_models_only():
    c = copy.deepcopy(DEFAULT)
    c["quantize"]["beyond_paper"] = {"precisions": ["fp8", "int8"], "models": ["xs-gqa"]}
    p = cfg.plan(c)
    assert p.serve.precisions_of("xs-gqa") == ["bf16", "int4", "fp8", "int8"]
    assert p.serve.precisions_of("xs-mha") == ["bf16", "int4"]
    assert p.serve.models_with(["bf16", "int4", "fp8", "int8"]) == ["xs-gqa"]
    q = {(x.model, x.precision): x.settings for x in p.serve.quantize}
    assert q[("xs-gqa", "fp8")]["precision_set"] == "beyond_paper" and q[("xs-gqa", "fp8")]["weight_bits"] == 8
    assert q[("xs-gqa", "int8")]["int8"]["method"] == "smoothquant_gptq"
    assert "precision_set" not in q[("xs-gqa", "bf16")]  # the paper's cells keep their settings (and records)
    inf = {(x.model, x.precision) for x in p.serve.inference}
    assert ("xs-gqa", "int8") in inf and ("xs-mha", "int8") not in inf


def test_sweep_expands_into_named_points_after_its_base():
    points = expand_load_points({"p": {**POISSON, "sweep": {"from": 1, "to": 16, "steps": 5,
                                                            "spacing": "geometric"}}}, repeats=5)
    assert list(points) == ["p", "p@1", "p@2", "p@8", "p@16"]  # 4 (the base's own rate) not repeated
    assert [points[n]["rate"] for n in points] == [4.0, 1.0, 2.0, 8.0, 16.0]
    assert all(p["sweep_of"] == "p" and p["repeats"] == 5 and p["concurrency"] == 10 for p in points.values())
    assert sweep_rates("k", {"from": 1, "to": 3, "steps": 3, "spacing": "linear"}) == [1.0, 2.0, 3.0]
    assert rate_name(0.5) == "0.5" and rate_name(2.0) == "2" and rate_name(1 / 3) == "0.3333"


def test_duration_gives_the_request_count_per_rate():
    lp = {k: v for k, v in POISSON.items() if k != "requests"}
    points = expand_load_points({"p": {**lp, "duration_s": 2.5, "sweep": {"from": 2, "to": 8, "steps": 3,
                                                                         "spacing": "geometric"}}}, repeats=3)
    assert {n: p["requests"] for n, p in points.items()} == {"p": 10, "p@2": 5, "p@8": 20}


def test_open_loop_points_serve_only_the_chosen_models_and_precisions():
    p = cfg.plan(with_point({**POISSON, "sweep": {"from": 2, "to": 8, "steps": 3}},
                            open_loop={"models": ["xs-gqa"], "precisions": ["bf16"]}))
    rate_cells = [(c.model, c.precision, c.load_point) for c in p.serve.inference if c.settings["point"]["mode"] == "rate"]
    assert rate_cells == [("xs-gqa", "bf16", "p"), ("xs-gqa", "bf16", "p@2"), ("xs-gqa", "bf16", "p@8")]
    assert p.serve.points(open_loop=True) == ["p", "p@2", "p@8"]
    assert "p" not in p.serve.points(open_loop=False)
    assert p.serve.serving_job("xs-gqa", "bf16", open_loop=True).keys() == {"p", "p@2", "p@8"}
    s = open_cells(p)["p@8"]
    assert s["point"]["rate"] == 8.0 and s["point"]["arrivals"] == "poisson" and s["point"]["slo"]["tpot_ms"] == 100
    assert s["repeats"] == DEFAULT["inference"]["repeats"]


def test_a_points_own_repeats_override_the_default():
    p = cfg.plan(with_point({**POISSON, "repeats": 2}))
    assert open_cells(p)["p"]["repeats"] == 2
