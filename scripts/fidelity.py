"""Fidelity of one model × precision to its baseline precision (docs/fidelity.md).

Called by workflow/rules/fidelity.smk in the inference environment. Both checkpoints score
the same held-out windows (the pretraining corpus' validation split) through the engine the
inference stage serves with; each extraction runs in its own process (one vLLM engine per
process, and its memory is returned before the next loads). Writes one JSON file:
perplexity of both, KL(baseline ‖ precision) mean and p99 over positions, top-1 agreement.
For the baseline precision itself only its perplexity is measured (KL and agreement are
null with the reason).

    fidelity.py --settings JSON --model-dir M --baseline-dir B --data-dir D --out fidelity.json
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

BASELINE_ITSELF = "the baseline itself"


def extract(args: argparse.Namespace) -> None:
    """Child process: one checkpoint's log-distributions to an .npy file."""
    from effbench.fidelity.extract import logprobs
    from effbench.torch_device import pick_device

    s = json.loads(args.settings)
    windows = np.load(args.windows)
    np.save(args.out, logprobs(args.model_dir, windows, s, pick_device(s["device"])))


def _extract_in_child(model_dir: Path, settings: dict, windows: Path, out: Path) -> float:
    t0 = time.monotonic()
    subprocess.run([sys.executable, __file__, "extract", "--model-dir", str(model_dir), "--settings",
                    json.dumps(settings), "--windows", str(windows), "--out", str(out)], check=True)
    return time.monotonic() - t0


def window_length(model_dir: Path, settings: dict, cap: int | None) -> int:
    """The model's context (capped by ``cap``), one short of vLLM's max_model_len so the engine
    can still schedule the one token it must generate."""
    length = int(json.loads((model_dir / "config.json").read_text())["max_position_embeddings"])
    if settings["engine"] == "vllm":
        length = min(length, settings["vllm"]["max_model_len"] - 1)
    return min(length, cap or length)


def measure(args: argparse.Namespace) -> None:
    from effbench.atomic import write_text
    from effbench.fidelity.extract import held_out_windows
    from effbench.fidelity.measures import fidelity, perplexity
    from effbench.runner import setup_logging

    setup_logging()
    job = json.loads(args.settings)
    comp_s, base_s = job["compare"], job["baseline"]
    length = window_length(args.baseline_dir, comp_s, job.get("window_len"))
    windows = held_out_windows(args.data_dir, job["windows"], length)
    targets = windows[:, 1:].reshape(-1)
    is_baseline = args.model_dir.resolve() == args.baseline_dir.resolve()
    with tempfile.TemporaryDirectory(prefix="fidelity-") as tmp:
        w, b, c = Path(tmp) / "windows.npy", Path(tmp) / "base.npy", Path(tmp) / "comp.npy"
        np.save(w, windows)
        seconds = {"baseline": _extract_in_child(args.baseline_dir, base_s, w, b)}
        base = np.load(b)
        base = base.reshape(-1, base.shape[-1])
        if is_baseline:
            figures: dict = {"ppl": perplexity(base, targets), "ppl_baseline": perplexity(base, targets),
                             "kl_mean": None, "kl_p99": None, "top1_agreement": None, "positions": len(targets)}
            figures.update({f"{k}__missing": BASELINE_ITSELF for k in ("kl_mean", "kl_p99", "top1_agreement")})
        else:
            seconds["compare"] = _extract_in_child(args.model_dir, comp_s, w, c)
            comp = np.load(c)
            figures = fidelity(base, comp.reshape(-1, comp.shape[-1]), targets)
    result = {
        "model": job["model"], "precision": job["precision"], "baseline": job["baseline_precision"],
        "engine": comp_s["engine"], "dtype": comp_s["dtype"], "baseline_dtype": base_s["dtype"],
        "device": comp_s["device"], "windows": int(windows.shape[0]), "window_len": int(length),
        "held_out": str(args.data_dir / "val.bin"), "extract_seconds": seconds, **figures,
    }
    write_text(args.out, json.dumps(result, indent=2) + "\n")
    print(json.dumps(result))


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = p.add_subparsers(dest="cmd")
    x = sub.add_parser("extract", help="(internal) one checkpoint's log-distributions")
    x.add_argument("--model-dir", type=Path, required=True)
    x.add_argument("--settings", required=True)
    x.add_argument("--windows", type=Path, required=True)
    x.add_argument("--out", type=Path, required=True)
    p.add_argument("--settings", help='{"model", "precision", "baseline_precision", "windows", "window_len", '
                                      '"compare": serving settings, "baseline": serving settings} (JSON)')
    p.add_argument("--model-dir", type=Path, help="the precision's checkpoint (quantize stage)")
    p.add_argument("--baseline-dir", type=Path, help="the baseline precision's checkpoint")
    p.add_argument("--data-dir", type=Path, help="the pretraining corpus (val.bin + meta.json)")
    p.add_argument("--out", type=Path, help="fidelity.json")
    a = p.parse_args()
    if a.cmd == "extract":
        extract(a)
    else:
        for k in ("settings", "model_dir", "baseline_dir", "data_dir", "out"):
            if getattr(a, k) is None:
                p.error(f"--{k.replace('_', '-')} is required")
        measure(a)


if __name__ == "__main__":
    main()
