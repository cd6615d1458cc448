"""torch.distributed + megatron parallel-state initialisation (data parallel, TP=PP=1, optional EP).

Works standalone (world size 1 on a free local port) and under torchrun (reads RANK,
WORLD_SIZE, LOCAL_RANK, MASTER_ADDR, MASTER_PORT from the environment).
"""

from __future__ import annotations

import os
import socket
from dataclasses import dataclass

import torch
import torch.distributed as dist

from effbench.measure.figure import Figure
from effbench.pretrain.compat_cpu import apply_cpu_compat


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def init_single_process(backend: str | None = None, seed: int | None = None, expert_parallel: int = 1) -> int:
    """Initialise torch.distributed, megatron's parallel state (TP=PP=1, experts split over
    ``expert_parallel`` ranks) and its RNG seed.

    backend: None picks nccl when CUDA is available, else gloo.
    seed: seed of megatron's model-parallel RNG streams; None derives it from torch's
      current seed (so a caller's earlier torch.manual_seed decides it).
    Idempotent: later calls change nothing. Returns the world size (= data-parallel size).
    """
    from megatron.core import parallel_state, tensor_parallel

    apply_cpu_compat()  # no-op on GPU
    cuda = torch.cuda.is_available()
    if backend is None:
        backend = "nccl" if cuda else "gloo"

    if not dist.is_initialized():
        # Under torchrun these are already set; standalone we are rank 0 of 1.
        rank = int(os.environ.get("RANK", "0"))
        world_size = int(os.environ.get("WORLD_SIZE", "1"))
        os.environ.setdefault("MASTER_ADDR", "127.0.0.1")
        if "MASTER_PORT" not in os.environ:
            if world_size != 1:
                raise RuntimeError("WORLD_SIZE > 1 needs MASTER_PORT (launch with torchrun)")
            os.environ["MASTER_PORT"] = str(_free_port())
        if cuda:
            # Bind this process to its GPU before NCCL creates communicators.
            torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", "0")))
        dist.init_process_group(backend=backend, rank=rank, world_size=world_size)

    if not parallel_state.model_parallel_is_initialized():
        parallel_state.initialize_model_parallel(
            tensor_model_parallel_size=1, pipeline_model_parallel_size=1,
            expert_model_parallel_size=expert_parallel,
        )
        if seed is None:
            seed = torch.initial_seed() % 2**31
        # Resolves to the CPU version installed by apply_cpu_compat() when CUDA is absent
        # (looked up at call time, after patching).
        tensor_parallel.model_parallel_cuda_manual_seed(seed)
    return dist.get_world_size()


def is_node_leader() -> bool:
    """Whether this rank measures its node (local rank 0, as effbench.runner.run_cell decides)."""
    return int(os.environ.get("LOCAL_RANK", "0")) == 0


@dataclass(frozen=True)
class NodeSum:
    total: Figure  # the sum over every node, or missing if any node's figure is
    count: int  # nodes that contributed (ranks that measure their node)


def sum_over_nodes(fig: Figure, *, measures_node: bool) -> NodeSum:
    """Sum a per-node figure (e.g. a window's energy) over the nodes of the job.

    A collective: every rank calls it; only ranks that measure their node contribute. If
    any node's figure is missing the total is missing too (a partial sum would read as the
    job's energy), with rank 0's reason or the count of unmeasured nodes.
    """
    if not dist.is_initialized() or dist.get_world_size() == 1:
        return NodeSum(fig, 1)
    device = "cuda" if dist.get_backend() == "nccl" else "cpu"  # NCCL reduces device tensors only
    measured = measures_node and fig.value is not None
    buf = torch.tensor([fig.value if measured else 0.0, float(measures_node), float(measured)],
                       dtype=torch.float64, device=device)
    dist.all_reduce(buf)
    total, nodes, measured_nodes = float(buf[0]), int(buf[1]), int(buf[2])
    if nodes == 1:
        return NodeSum(fig, 1)
    if measured_nodes < nodes:
        why = fig.missing_reason or "missing on another node"
        return NodeSum(Figure.missing(f"{why} (measured on {measured_nodes} of {nodes} nodes)"), nodes)
    return NodeSum(Figure.of(total, f"{fig.source}_sum_over_{nodes}_nodes"), nodes)


def destroy() -> None:
    """Tear down megatron parallel state and the process group (for tests and re-inits)."""
    from megatron.core import parallel_state

    if parallel_state.model_parallel_is_initialized():
        parallel_state.destroy_model_parallel()
    if dist.is_initialized():
        dist.destroy_process_group()
