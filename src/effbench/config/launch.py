"""How a rule starts a stage script (interpreter, torchrun, srun + torchrun) and what its
job asks the scheduler for, both from the config's parallel layout."""

from __future__ import annotations

import shlex
from typing import Any


def launch_command(python: str, layout: dict[str, int], cpus_per_node: int | None = None, gpus: bool = False,
                   torchrun: bool = False) -> str:
    """How a rule starts a stage script for this layout (a shell prefix; the script follows).

    One process: the interpreter. One node, several processes: torchrun (``python -m
    effbench.torchrun``: torchrun that dies with the job's shell) standalone, one process per GPU of the allocation. Several nodes:
    ``srun`` starts one torchrun per node of the allocation, which rendezvous at the first node;
    its step gets ``cpus_per_node`` CPUs and (``gpus``) the node's GPUs, which a step inside a
    batch script is not given by default. ``torchrun``: torchrun even for one process (DeepSpeed
    needs a launched process group; LlamaFactory's FORCE_TORCHRUN).
    """
    py = shlex.quote(python)
    nodes, per_node = layout["nodes"], layout["gpus_per_node"]
    if nodes * per_node == 1 and not torchrun:
        return py
    if nodes == 1:
        return f"{py} -m effbench.torchrun --standalone --nnodes=1 --nproc-per-node={per_node}"
    # Inside the Slurm allocation (the rule is submitted with nodes=N, one task per node).
    head = "$(scontrol show hostnames \"$(squeue -h -j \"$SLURM_JOB_ID\" -o %N)\" | head -n1)"
    step = (f" --cpus-per-task={cpus_per_node}" if cpus_per_node else "") + (f" --gres=gpu:{per_node}" if gpus else "")
    return (
        f"srun --nodes={nodes} --ntasks={nodes} --ntasks-per-node=1{step} --kill-on-bad-exit=1 "
        f"{py} -m effbench.torchrun --nnodes={nodes} --nproc-per-node={per_node} "
        f"--rdzv-backend=c10d --rdzv-id=\"$SLURM_JOB_ID\" --rdzv-endpoint={head}:29500"
    )


def step_cpus(layout: dict[str, int], threads: int, resources: Any) -> tuple[int, bool]:
    """(CPUs per node, whether the job has GPUs) of a running job, from its Snakemake resources."""
    gpus = "gpu" in resources.keys() or "gres" in resources.keys()
    return (resources.get("cpus_per_gpu", threads) * layout["gpus_per_node"] if gpus else threads), gpus


def gpu_resources(device: str, layout: dict[str, int]) -> dict[str, Any]:
    """What a GPU job asks the scheduler for, from the config's parallel layout (the layout is
    part of the experiment; the profile keeps the site's CPUs per GPU, memory, time, partition).
    Single node: `gpu` (sbatch --gpus). Several nodes: one task per node, `gres` per node."""
    if device == "cpu":
        return {}
    nodes, per_node = layout["nodes"], layout["gpus_per_node"]
    if nodes == 1:
        return {"gpu": per_node}
    # mpi: the job step runs our command in the batch script, and our srun places one
    # torchrun per node; tasks_per_gpu=0 keeps the plugin from adding --ntasks-per-gpu.
    return {"nodes": nodes, "gres": f"gpu:{per_node}", "mpi": "torchrun", "tasks": nodes, "tasks_per_gpu": 0}


ONE_GPU = {"nodes": 1, "gpus_per_node": 1}  # fine-tuning, quantization, eval and serving jobs
