"""GPU check of the quantization/inference axis: an int4 checkpoint made by the pipeline
loads with transformers + compressed-tensors on CUDA and generates; the stage's serving code
measures it; the measurement core's energy agrees with the NVML counter read directly.

    python benchmarks/gpu_int4_check.py --int4 results/quantize/xs-gqa/int4/model \\
        [--bf16 results/quantize/xs-gqa/bf16/model] --out $OUT [--seconds 8]

1. Load: ``AutoModelForCausalLM.from_pretrained(int4, device_map="cuda")``; report the
   quantization config transformers saw, load time, torch memory; greedy ``generate``.
   With ``--bf16``: the same prompt on the bf16 checkpoint and the share of equal tokens.
2. Serve: the inference stage's own code (``run_cell`` + ``serve_point``, transformers engine,
   NVML backend) at two load points; records and samples under ``--out``.
3. Energy: a Monitor window of ``--seconds`` of decode; the core's energy (NVML total-energy
   counter at the window edges) against the same counter read here with pynvml just outside
   the window, and against the integral of the sampler's polled power.

Prints one JSON object (card, driver, date, figures) and writes it to ``<out>/gpu_int4_check.json``.
Needs on the GPU machine, beyond torch / transformers / nvidia-ml-py / pyarrow / psutil:
``compressed-tensors==0.19.0`` (pure Python; needs loguru) — see docs/gpu-checks.md.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))

from effbench.measure import formulas  # noqa: E402
from effbench.measure.monitor import Monitor  # noqa: E402
from effbench.record import read_records  # noqa: E402
from effbench.runner import Cell, run_cell, setup_logging  # noqa: E402


def load_and_generate(model_dir: Path, prompt: list[int], new_tokens: int) -> dict:
    import torch
    from transformers import AutoModelForCausalLM

    torch.cuda.reset_peak_memory_stats()
    t0 = time.monotonic()
    model = AutoModelForCausalLM.from_pretrained(str(model_dir), dtype=torch.bfloat16, device_map="cuda").eval()
    torch.cuda.synchronize()
    load_s = time.monotonic() - t0
    qc = getattr(model.config, "quantization_config", None)
    ids = torch.tensor([prompt], device="cuda")
    with torch.inference_mode():
        t0 = time.monotonic()
        out = model.generate(ids, max_new_tokens=new_tokens, min_new_tokens=new_tokens, do_sample=False)
        torch.cuda.synchronize()
        gen_s = time.monotonic() - t0
    linear = next(m for n, m in model.named_modules() if n.endswith("mlp.down_proj"))
    info = {
        "dir": str(model_dir),
        "quantization_config": (qc.to_dict() if hasattr(qc, "to_dict") else qc) and {
            k: (qc.to_dict() if hasattr(qc, "to_dict") else qc).get(k) for k in ("quant_method", "format")},
        "down_proj_module": type(linear).__name__,
        "down_proj_params": {n: [str(p.dtype), list(p.shape)] for n, p in linear.named_parameters()},
        "load_s": round(load_s, 3),
        "generate_s": round(gen_s, 4),
        "tokens": out[0, len(prompt):].tolist(),
        "torch_peak_alloc_gb": round(torch.cuda.max_memory_allocated() / 1e9, 4),
    }
    del model
    torch.cuda.empty_cache()
    return info


def serve(int4: Path, out: Path, seconds: float) -> list[dict]:
    from effbench.inference.serve import SharedEngine, serve_point

    base = {"model": "check", "precision": "int4", "engine": "transformers", "dtype": "bf16", "warmup_requests": 2,
            "repeats": 3, "min_seconds": seconds / 2, "threads": 8, "device": "cuda", "seed": 0,
            "measure": {"interval_s": 0.1}, "vllm": {}}
    points = {"offline": {"mode": "offline", "requests": 32, "concurrency": 32, "prompt_len": 64, "output_len": 32},
              "c1": {"mode": "concurrency", "requests": 4, "concurrency": 1, "prompt_len": 64, "output_len": 32}}
    shared = SharedEngine({**base, "point": points["offline"], "load_point": "offline"}, int4, "cuda")
    paths = []
    try:
        for name, lp in points.items():
            s = {**base, "load_point": name, "point": lp}
            cell = Cell.from_settings("inference", s, record_path=out / name / "record.parquet",
                                      samples_path=out / name / "samples.parquet", config_hash="gpu-check",
                                      libraries=["torch", "transformers", "compressed-tensors", "nvidia-ml-py"])
            run_cell(cell, lambda mon, s=s: serve_point(s, shared, mon))
            paths.append(out / name / "record.parquet")
    finally:
        shared.close()
    keep = ("cell", "status", "it_tokens_per_s", "al_s_per_request", "ttft_s_p50", "tpot_s_p50", "itl_s_p99",
            "e2e_s_p50", "amu_gb", "pcu_frac", "aec_w", "aec_w__source", "energy_j", "energy_j_per_token", "seconds",
            "device_name", "driver_version")
    return [{k: r[k] for k in keep} for r in read_records(paths).to_pylist()]


def energy_check(int4: Path, seconds: float) -> dict:
    import pynvml
    import torch
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(str(int4), dtype=torch.bfloat16, device_map="cuda").eval()
    ids = torch.randint(10, 1000, (64, 64), device="cuda")
    pynvml.nvmlInit()
    h = pynvml.nvmlDeviceGetHandleByIndex(torch.cuda.current_device())
    with Monitor(device="cuda", interval_s=0.05, sync=torch.cuda.synchronize) as mon:
        torch.cuda.synchronize()
        raw0 = pynvml.nvmlDeviceGetTotalEnergyConsumption(h) / 1000.0
        mon.begin_window("energy")
        t0 = time.monotonic()
        n = 0
        with torch.inference_mode():
            while time.monotonic() - t0 < seconds:
                model.generate(ids, max_new_tokens=32, min_new_tokens=32, do_sample=False)
                n += 1
        w = mon.end_window("energy")
        raw1 = pynvml.nvmlDeviceGetTotalEnergyConsumption(h) / 1000.0
    power = w._per_device("power_w")
    polled = sum(formulas.energy_from_power(ts, vs, w.t0, w.t1) for ts, vs in power.values()) if power else None
    core = w.energy()
    return {
        "window_s": round(w.seconds, 3),
        "generate_calls": n,
        "core_energy_j": core.value,
        "core_energy_source": core.source,
        "raw_counter_delta_j": raw1 - raw0,
        "core_vs_raw": core.value / (raw1 - raw0) if core.value else None,
        "polled_power_integral_j": polled,
        "core_vs_polled": core.value / polled if core.value and polled else None,
        "aec_w": w.figures()["aec_w"].value,
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--int4", type=Path, required=True, help="an int4 model directory made by the quantize stage")
    ap.add_argument("--bf16", type=Path, help="the bf16 directory of the same model (token agreement)")
    ap.add_argument("--out", type=Path, required=True)
    ap.add_argument("--seconds", type=float, default=8.0, help="length of the energy window")
    args = ap.parse_args()
    setup_logging()
    import torch
    import transformers

    args.out.mkdir(parents=True, exist_ok=True)
    prompt = list(range(20, 52))
    result: dict = {
        "date": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
        "card": torch.cuda.get_device_name(0),
        "torch": torch.__version__,
        "transformers": transformers.__version__,
    }
    try:
        from importlib.metadata import version

        result["compressed_tensors"] = version("compressed-tensors")
    except Exception as e:  # noqa: BLE001
        result["compressed_tensors"] = f"missing: {e}"
    result["int4"] = load_and_generate(args.int4, prompt, 32)
    if args.bf16:
        result["bf16"] = load_and_generate(args.bf16, prompt, 32)
        a, b = result["int4"]["tokens"], result["bf16"]["tokens"]
        result["greedy_token_agreement_int4_vs_bf16"] = sum(x == y for x, y in zip(a, b)) / len(a)
    result["serve"] = serve(args.int4, args.out, args.seconds)
    result["energy"] = energy_check(args.int4, args.seconds)
    text = json.dumps(result, indent=2, default=str)
    (args.out / "gpu_int4_check.json").write_text(text + "\n")
    print(text)


if __name__ == "__main__":
    main()
