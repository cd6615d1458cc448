"""Two nodes of one data-parallel job: the record's energy is every node's, not rank 0's.

Two processes on gloo, each its own node (LOCAL_WORLD_SIZE=1, as torchrun sets it with one
process per node), each node's energy counter scripted (this host has none; see
scripted_energy.py): node 0 uses 10 J in the window, node 1 20 J.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from record_consistency import check_mfu, check_record

from effbench import config as cfg
from effbench.data.synthetic import make_pretraining_corpus
from effbench.measure.training import boundary_steps
from effbench.record import read_records, settings_json

ROOT = Path(__file__).resolve().parents[2]
JOULES = (10.0, 20.0)  # per node
PEAK = 5.0e10  # a stated per-device peak: MFU counts both nodes' devices


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def test_energy_is_summed_over_nodes(tmp_path):
    data = tmp_path / "data"
    make_pretraining_corpus(data, vocab_size=512, train_tokens=40_000, val_tokens=4_000, seed=3)
    c = yaml.safe_load((ROOT / "config" / "config.yaml").read_text())
    c["pretrain"]["training"].update(train_steps=3, warmup_steps=1, checkpoint_interval=100, eval_batches=1,
                                     micro_batch_size=2, global_batch_size=4, warmup_measure_steps=1)
    c["pretrain"]["sizes"]["xs"].update(num_layers=1, seq_length=32)
    c["pretrain"]["parallel"] = {"nodes": 2, "gpus_per_node": 1}
    c["device"] = "cpu"
    c["measure"]["peak_flops"] = {"fp32": PEAK}
    s = cfg.pretrain_settings(c, "xs", "gqa")
    out = tmp_path / "out"
    cmd = [sys.executable, str(ROOT / "tests" / "pretrain" / "scripted_energy.py"), str(ROOT / "scripts" / "pretrain.py"),
           "--settings", settings_json(s), "--config-hash", "t", "--data-dir", str(data),
           "--record", str(out / "record.parquet"), "--samples", str(out / "samples.parquet"),
           "--checkpoint", str(out / "model.pt"), "--resume-dir", str(out / "resume")]
    port = str(_free_port())
    procs = []
    for rank, joules in enumerate(JOULES):
        env = {"PYTHONPATH": str(ROOT / "src"),
               "PATH": "/usr/bin:/bin", "OMP_NUM_THREADS": "1", "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": port,
               "RANK": str(rank), "WORLD_SIZE": "2", "LOCAL_RANK": "0", "LOCAL_WORLD_SIZE": "1",
               "GROUP_RANK": str(rank), "EFFBENCH_TEST_JOULES": str(joules)}
        procs.append(subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env))
    for p in procs:
        stdout, stderr = p.communicate(timeout=300)
        assert p.returncode == 0, stdout[-3000:] + stderr[-5000:]
    (r,) = read_records([out / "record.parquet"]).to_pylist()
    assert r["status"] == "ok" and r["tokens"] == 2 * 4 * 32
    # Each counter read adds J: the window reads it at its two edges and at its k - 1 sub-window
    # marks (measure/training.py), so each node measures k·J, and the record sums the nodes.
    spans = len(boundary_steps(r["steps"])) + 1
    assert r["energy_j"] == pytest.approx(sum(JOULES) * spans)
    assert r["energy_j__source"] == "scripted_counter_sum_over_2_nodes"
    assert r["energy_j_per_token"] == pytest.approx(sum(JOULES) * spans / r["tokens"])
    assert r["aec_w"] == pytest.approx(sum(JOULES) * spans / r["seconds"])
    assert "energy: all 2 nodes" in r["parallel_json"]
    # TT, tokens/s, J/token and AEC from the summed energy, MFU over both devices, the window
    check_record(r, out / "samples.parquet")
    check_mfu(r, PEAK)
