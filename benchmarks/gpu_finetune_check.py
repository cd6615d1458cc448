"""GPU check of the fine-tuning stage: the real stage script (LlamaFactory run_exp with the
measuring callback) on one GPU in bf16, LoRA and DoRA, on a Qwen2.5-0.5B-shaped model.

    python benchmarks/gpu_finetune_check.py --task-dir DIR --tokenizer-dir DIR --out $OUT

No weights can be downloaded on the GPU machine, so the model is built there: a Llama with
Qwen2.5-0.5B's body (24 layers, hidden 896, 14 heads, 2 KV heads, FFN 4864), the pipeline's
tokenizer, random initialisation. Its loss says nothing about quality; memory, latency,
throughput and energy of LoRA against DoRA at that shape are what is checked. The cell
settings come from config/config.yaml through effbench.config, with device cuda and bf16.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))

from effbench import config as cfg  # noqa: E402
from effbench.record import read_records  # noqa: E402


def build_model(tokenizer_dir: Path, out: Path) -> None:
    from transformers import AutoTokenizer, LlamaConfig, LlamaForCausalLM

    tok = AutoTokenizer.from_pretrained(tokenizer_dir)
    conf = LlamaConfig(vocab_size=len(tok), hidden_size=896, intermediate_size=4864, num_hidden_layers=24,
                       num_attention_heads=14, num_key_value_heads=2, max_position_embeddings=2048,
                       rope_theta=1e6, tie_word_embeddings=True, bos_token_id=tok.bos_token_id,
                       eos_token_id=tok.eos_token_id, pad_token_id=tok.pad_token_id)
    LlamaForCausalLM(conf).save_pretrained(out)
    tok.save_pretrained(out)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--task-dir", type=Path, required=True)
    ap.add_argument("--tokenizer-dir", type=Path, required=True)
    ap.add_argument("--out", type=Path, required=True)
    ap.add_argument("--methods", nargs="+", default=["lora", "dora"])
    ap.add_argument("--max-steps", type=int, default=40)
    ap.add_argument("--device", default="cuda", help="cpu: a quick fp32 rehearsal of this script")
    a = ap.parse_args()
    model_dir = Path("/tmp/effbench-qwen05-shape")
    build_model(a.tokenizer_dir, model_dir)
    c = yaml.safe_load((ROOT / "config" / "config.yaml").read_text())
    c["device"] = a.device
    c["measure"]["interval_s"] = 0.1
    ft = c["finetune"]
    ft["models"] = {"qwen05-shape": {"path": str(model_dir), "template": "default"}}
    ft["training"].update(precision="bf16" if a.device == "cuda" else "fp32", max_steps=a.max_steps, warmup_measure_steps=5,
                          per_device_train_batch_size=8, threads=8)
    ft["training"].pop("num_train_epochs", None)
    for method in a.methods:
        s = cfg.finetune_settings(c, "qwen05-shape", method, "synthetic")
        out = a.out / method
        cmd = [sys.executable, str(ROOT / "scripts" / "finetune.py"), "--settings", json.dumps(s),
               "--config-hash", "gpu-check", "--model-path", str(model_dir), "--data-dir", str(a.task_dir),
               "--output-dir", f"/tmp/ft-{method}", "--record", str(out / "record.parquet"),
               "--samples", str(out / "samples.parquet")]
        p = subprocess.run(cmd, capture_output=True, text=True, env={**os.environ, "DISABLE_VERSION_CHECK": "1"})
        (a.out / f"{method}.log").write_text(p.stdout + p.stderr)
        if p.returncode:
            print(json.dumps({"method": method, "rc": p.returncode, "tail": (p.stdout + p.stderr)[-3000:]}))
            continue
        (r,) = read_records([out / "record.parquet"]).to_pylist()
        keep = ("status", "device_name", "driver_version", "precision", "train_loss", "val_loss", "amu_gb",
                "peak_mem_gb", "pcu_frac", "al_s_per_iter", "st_samples_per_param_s", "aec_w", "energy_j",
                "energy_j__source", "energy_j_per_sample", "params_total", "params_trainable",
                "params_trainable_frac", "disk_bytes", "steps", "samples", "seconds", "library_versions_json")
        print(json.dumps({"method": method, **{k: r.get(k) for k in keep}}, default=str), flush=True)


if __name__ == "__main__":
    main()
