"""Fidelity of every served precision of one model to its baseline precision (docs/fidelity.md).

Called by workflow/rules/fidelity.smk in the inference environment, once per model. Every
checkpoint scores the same held-out windows (the pretraining corpus' validation split) through
the engine the inference stage serves it with (one engine per model: where vLLM cannot serve one
precision here, transformers scores them all; fidelity.json's ``engine`` is the one that scored it);
each extraction runs in its own process (one vLLM
engine per process, and its memory is returned before the next loads), the baseline's once.
Writes ``<out-dir>/<precision>/fidelity.json`` per precision: perplexity of both, KL(baseline ‖
precision) mean and p99 over positions, top-1 agreement, and the verdict against the thresholds
(``pass`` | ``fail``, with ``verdict_reason`` and the ``thresholds`` used; the settings'
``thresholds``, else effbench.fidelity.measures.THRESHOLDS). For the baseline precision itself only
its perplexity is measured (KL and agreement are null with the reason) and its verdict is ``baseline``.

    fidelity.py --settings JSON --model-dirs bf16=DIR int4=DIR --data-dir D --out-dir OUT
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

from effbench.lifetime import exit_without_teardown

BASELINE_ITSELF = "the baseline itself"


def used_engine_path(out: Path) -> Path:
    """Where a child writes which engine gave its distributions, beside its .npy."""
    return out.with_name(out.stem + ".engine.json")


def extract(args: argparse.Namespace) -> None:
    """Child process: one checkpoint's log-distributions to an .npy file, and the engine that
    gave them ({"engine", "engine_fallback"}) to :func:`used_engine_path`."""
    from effbench.fidelity.extract import logprobs_and_engine
    from effbench.torch_device import pick_device

    s = json.loads(args.settings)
    windows = np.load(args.windows)
    logp, engine, why = logprobs_and_engine(args.model_dir, windows, s, pick_device(s["device"]))
    np.save(args.out, logp)
    used_engine_path(args.out).write_text(json.dumps({"engine": engine, "engine_fallback": why}))


def _extract_in_child(model_dir: Path, settings: dict, windows: Path, out: Path) -> tuple[float, dict]:
    """(seconds, the engine the child used)."""
    t0 = time.monotonic()
    subprocess.run([sys.executable, __file__, "extract", "--model-dir", str(model_dir), "--settings",
                    json.dumps(settings), "--windows", str(windows), "--out", str(out)], check=True)
    return time.monotonic() - t0, json.loads(used_engine_path(out).read_text())


def model_engine_of(engines: dict[str, dict], dirs: dict[str, Path]) -> tuple[str, str | None]:
    """The engine that serves every precision of this model (one engine per model,
    effbench.inference.engine_choice.model_engine), and why it is not the configured one or None."""
    s = next(iter(engines.values()))
    if s["engine"] != "vllm":
        return s["engine"], None
    from effbench.inference.engine_choice import model_engine
    from effbench.torch_device import pick_device

    return model_engine(s, dirs, pick_device(s["device"]))


def window_length(model_dir: Path, settings: list[dict], cap: int | None) -> int:
    """The model's context (capped by ``cap``), one short of vLLM's max_model_len where an engine
    is vLLM, so that it can still schedule the one token it must generate: one length for all."""
    length = int(json.loads((model_dir / "config.json").read_text())["max_position_embeddings"])
    for s in settings:
        if s["engine"] == "vllm":
            length = min(length, s["vllm"]["max_model_len"] - 1)
    return min(length, cap or length)


def parse_dirs(pairs: list[str]) -> dict[str, Path]:
    out = {}
    for pair in pairs:
        precision, sep, path = pair.partition("=")
        if not sep or not precision or not path:
            raise SystemExit(f"--model-dirs: expected PRECISION=DIR, got {pair!r}")
        out[precision] = Path(path)
    return out


def measure(args: argparse.Namespace) -> None:
    from effbench.atomic import write_text
    from effbench.fidelity.extract import held_out_windows
    from effbench.fidelity.job import fidelity_record
    from effbench.fidelity.measures import THRESHOLDS, fidelity, perplexity, verdict
    from effbench.runner import setup_logging

    setup_logging()
    job = json.loads(args.settings)
    dirs, engines, base_p = parse_dirs(args.model_dirs), job["precisions"], job["baseline_precision"]
    if set(dirs) != set(engines) or base_p not in engines:
        raise SystemExit(f"--model-dirs names {sorted(dirs)}, the settings {sorted(engines)} "
                         f"(baseline {base_p!r})")
    thresholds = job.get("thresholds") or THRESHOLDS
    # One engine per model, as the inference stage serves it: where vLLM cannot serve one precision
    # here, transformers scores them all (and each fidelity.json says so).
    engine, why = model_engine_of(engines, dirs)
    served = {p: {**s, "engine": engine} for p, s in engines.items()}
    length = window_length(dirs[base_p], list(served.values()), job.get("window_len"))
    windows = held_out_windows(args.data_dir, job["windows"], length)
    targets = windows[:, 1:].reshape(-1)
    with tempfile.TemporaryDirectory(prefix="fidelity-") as tmp:
        w = Path(tmp) / "windows.npy"
        np.save(w, windows)
        t, base_used = _extract_in_child(dirs[base_p], served[base_p], w, Path(tmp) / f"{base_p}.npy")
        seconds, used = {base_p: t}, {base_p: base_used}
        base = np.load(Path(tmp) / f"{base_p}.npy")
        base = base.reshape(-1, base.shape[-1])
        for precision, settings in engines.items():  # the baseline first (job order)
            if precision == base_p:
                figures: dict = {"ppl": perplexity(base, targets), "ppl_baseline": perplexity(base, targets),
                                 "kl_mean": None, "kl_p99": None, "top1_agreement": None, "positions": len(targets)}
                figures.update({f"{k}__missing": BASELINE_ITSELF for k in ("kl_mean", "kl_p99", "top1_agreement")})
            else:
                out = Path(tmp) / f"{precision}.npy"
                seconds[precision], used[precision] = _extract_in_child(dirs[precision], served[precision], w, out)
                comp = np.load(out)
                figures = fidelity(base, comp.reshape(-1, comp.shape[-1]), targets)
                out.unlink()
            scored = {"engine": used[precision]["engine"],
                      "engine_fallback": why or used[precision].get("engine_fallback")}
            result = fidelity_record(job, precision, settings, scored, figures,
                                     verdict(figures, thresholds, baseline=precision == base_p),
                                     windows=windows.shape[0], window_len=length,
                                     held_out=str(args.data_dir / "val.bin"), seconds=seconds)
            write_text(args.out_dir / precision / "fidelity.json", json.dumps(result, indent=2) + "\n")
            print(json.dumps(result))


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = p.add_subparsers(dest="cmd")
    x = sub.add_parser("extract", help="(internal) one checkpoint's log-distributions")
    x.add_argument("--model-dir", type=Path, required=True)
    x.add_argument("--settings", required=True)
    x.add_argument("--windows", type=Path, required=True)
    x.add_argument("--out", type=Path, required=True)
    p.add_argument("--settings", help='{"model", "baseline_precision", "windows", "window_len", '
                                      '"precisions": {precision: serving settings}} (JSON)')
    p.add_argument("--model-dirs", nargs="+", metavar="PRECISION=DIR", help="each precision's checkpoint")
    p.add_argument("--data-dir", type=Path, help="the pretraining corpus (val.bin + meta.json)")
    p.add_argument("--out-dir", type=Path, help="writes <out-dir>/<precision>/fidelity.json")
    a = p.parse_args()
    if a.cmd == "extract":
        extract(a)
    else:
        for k in ("settings", "model_dirs", "data_dir", "out_dir"):
            if getattr(a, k) is None:
                p.error(f"--{k.replace('_', '-')} is required")
        measure(a)


if __name__ == "__main__":
    main()
    exit_without_teardown()  # outputs are written; skip 2-3 s of interpreter teardown
