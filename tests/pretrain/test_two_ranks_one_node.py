"""Two ranks on one node: the node's energy is counted once, not once per rank.

torchrun starts two processes on this host (LOCAL_WORLD_SIZE=2), as the workflow's own launcher
does for one node with two devices. The node's energy counter is scripted (this host has none;
scripted_energy.py: every read adds ``JOULES``), so the record's energy is known exactly: the
measuring rank (local rank 0) reads the counter at the window's two edges and its k − 1
sub-window marks, k·J in all. Had every rank counted its node (a rank summed per rank, not per
node), the record would read 2·k·J, or be missing for the rank that measures nothing.
tests/pretrain/test_two_nodes.py is the other half: two nodes, their energies summed.
"""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from record_consistency import check_record

from effbench import config as cfg
from effbench.measure.training import boundary_steps
from effbench.record import read_records, settings_json
from launch_helpers import ROOT, settings

JOULES = 10.0


def test_energy_of_one_node_is_counted_once_over_its_ranks(tmp_path, data_dir):
    s = settings("gqa", 2)
    launch = cfg.launch_command(sys.executable, s["parallel"])
    assert "--nproc-per-node=2" in launch and "--nnodes=1" in launch
    out = tmp_path / "out"
    cmd = [*launch.split(), str(ROOT / "tests" / "pretrain" / "scripted_energy.py"), str(ROOT / "scripts" / "pretrain.py"),
           "--settings", settings_json(s), "--config-hash", "t", "--data-dir", str(data_dir),
           "--record", str(out / "record.parquet"), "--samples", str(out / "samples.parquet"),
           "--checkpoint", str(out / "model.pt"), "--resume-dir", str(out / "resume")]
    env = {"PYTHONPATH": str(ROOT / "src"), "PATH": "/usr/bin:/bin", "OMP_NUM_THREADS": "1",
           "EFFBENCH_TEST_JOULES": str(JOULES)}
    p = subprocess.run(cmd, capture_output=True, text=True, timeout=600, env=env)
    assert p.returncode == 0, p.stdout[-3000:] + p.stderr[-5000:]
    (r,) = read_records([out / "record.parquet"]).to_pylist()
    assert r["status"] == "ok" and json.loads(r["parallel_json"])["world_size"] == 2
    spans = len(boundary_steps(r["steps"])) + 1  # k sub-windows: k counter deltas of J each
    assert r["energy_j"] == pytest.approx(JOULES * spans)  # the node once, not per rank
    assert r["energy_j__source"] == "scripted_counter"  # one node: nothing summed over nodes
    assert r["energy_j_per_token"] == pytest.approx(JOULES * spans / r["tokens"])
    assert r["aec_w"] == pytest.approx(JOULES * spans / r["seconds"])
    assert json.loads(r["parallel_json"])["measured"] == "node of rank 0"
    check_record(r, out / "samples.parquet")
