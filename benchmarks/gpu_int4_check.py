"""GPU check of the quantization/inference axis: an int4 checkpoint made by the pipeline
loads with transformers + compressed-tensors on CUDA and is faithful to bf16; the stage's
serving code measures it; the measurement core's energy agrees with the NVML counter read directly.

    python benchmarks/gpu_int4_check.py --int4 results/quantize/xs-gqa/int4/model \\
        [--bf16 results/quantize/xs-gqa/bf16/model] --data-dir results/data/pretrain --out $OUT \\
        [--seconds 8] [--device cuda|cpu]

1. Load and fidelity: ``from_pretrained`` on the device; report the quantization config
   transformers saw, load time, torch memory; then score held-out windows of the pipeline
   corpus (``--data-dir``: val.bin + meta.json) by teacher forcing (effbench.fidelity, as the
   pipeline's fidelity rule): held-out perplexity, and with ``--bf16`` KL(bf16 ‖ int4) mean and
   p99 over positions and top-1 agreement, with the pipeline's pass thresholds. (Free-running
   greedy text is no fidelity measure: one near-tied token shifts all the text after it.)
   ``--device cpu`` runs this step only (steps 2 and 3 need CUDA and NVML).
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


def load_and_score(model_dir: Path, windows, device: str) -> tuple[dict, "object"]:
    """Load on ``device`` as the transformers engine does; the held-out log-distributions."""
    import torch

    from effbench.fidelity.extract import forward_logprobs, load_transformers

    cuda = device == "cuda"
    if cuda:
        torch.cuda.reset_peak_memory_stats()
    t0 = time.monotonic()
    model = load_transformers(model_dir, "bf16", device)
    if cuda:
        torch.cuda.synchronize()
    load_s = time.monotonic() - t0
    qc = getattr(model.config, "quantization_config", None)
    qc = qc.to_dict() if hasattr(qc, "to_dict") else qc
    t0 = time.monotonic()
    logp = forward_logprobs(model, windows, device)
    score_s = time.monotonic() - t0
    linear = next(m for n, m in model.named_modules() if n.endswith("mlp.down_proj"))
    info = {
        "dir": str(model_dir),
        "quantization_config": qc and {k: qc.get(k) for k in ("quant_method", "format")},
        "down_proj_module": type(linear).__name__,
        "down_proj_params": {n: [str(p.dtype), list(p.shape)] for n, p in linear.named_parameters()},
        "load_s": round(load_s, 3),
        "score_s": round(score_s, 4),
        "torch_peak_alloc_gb": round(torch.cuda.max_memory_allocated() / 1e9, 4) if cuda else None,
    }
    del model
    if cuda:
        torch.cuda.empty_cache()
    return info, logp


def fidelity_step(int4: Path, bf16: Path | None, data_dir: Path, device: str, windows: int) -> dict:
    from effbench.fidelity.extract import held_out_windows
    from effbench.fidelity.measures import fidelity, passes, perplexity

    length = int(json.loads((int4 / "config.json").read_text())["max_position_embeddings"])
    w = held_out_windows(data_dir, windows, length)
    targets = w[:, 1:].reshape(-1)
    out: dict = {"held_out": {"dir": str(data_dir), "windows": windows, "window_len": length}}
    out["int4"], q = load_and_score(int4, w, device)
    q = q.reshape(-1, q.shape[-1])
    if bf16 is None:
        out["fidelity"] = {"ppl": perplexity(q, targets)}
        return out
    out["bf16"], b = load_and_score(bf16, w, device)
    figures = fidelity(b.reshape(-1, b.shape[-1]), q, targets)
    out["fidelity"] = {**figures, "passes": passes(figures)}
    return out


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
    ap.add_argument("--bf16", type=Path, help="the bf16 directory of the same model (KL, top-1 agreement)")
    ap.add_argument("--data-dir", type=Path, required=True, help="the pipeline corpus (val.bin + meta.json)")
    ap.add_argument("--windows", type=int, default=32, help="held-out windows of the model's context")
    ap.add_argument("--out", type=Path, required=True)
    ap.add_argument("--seconds", type=float, default=8.0, help="length of the energy window")
    ap.add_argument("--device", choices=("cuda", "cpu"), default="cuda", help="cpu: step 1 only")
    args = ap.parse_args()
    setup_logging()
    import torch
    import transformers

    args.out.mkdir(parents=True, exist_ok=True)
    cuda = args.device == "cuda"
    result: dict = {
        "date": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
        "card": torch.cuda.get_device_name(0) if cuda else "cpu",
        "torch": torch.__version__,
        "transformers": transformers.__version__,
    }
    try:
        from importlib.metadata import version

        result["compressed_tensors"] = version("compressed-tensors")
    except Exception as e:  # noqa: BLE001
        result["compressed_tensors"] = f"missing: {e}"
    result.update(fidelity_step(args.int4, args.bf16, args.data_dir, args.device, args.windows))
    if cuda:
        result["serve"] = serve(args.int4, args.out, args.seconds)
        result["energy"] = energy_check(args.int4, args.seconds)
    else:
        result["serve"] = result["energy"] = "skipped: --device cpu (these steps measure CUDA and NVML)"
    text = json.dumps(result, indent=2, default=str)
    (args.out / "gpu_int4_check.json").write_text(text + "\n")
    print(text)


if __name__ == "__main__":
    main()
