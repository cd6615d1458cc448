"""Ranks resume only from the same step: megatron's stack writes one resume file per rank, one
after another, so a kill between two ranks' writes leaves them at different steps; they must
then start afresh together rather than run different numbers of steps (a hang) or count steps
twice."""

from __future__ import annotations

import os
import socket

import torch
import torch.distributed as dist
import torch.multiprocessing as mp


CASES = [[40, 40], [40, 30], [40, -1]]  # the same step; a kill between two ranks' files; one rank has none


def _agree(rank: int, port: int, out: "mp.Queue[tuple[int, list[bool]]]") -> None:
    from effbench.pretrain.train import _same_on_every_rank

    torch.set_num_threads(1)
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    dist.init_process_group("gloo", rank=rank, world_size=2)
    try:
        out.put((rank, [_same_on_every_rank(steps[rank], "cpu") for steps in CASES]))
    finally:
        dist.destroy_process_group()


def test_ranks_resume_only_from_one_step():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    ctx = mp.get_context("spawn")
    q = ctx.Queue()
    procs = [ctx.Process(target=_agree, args=(r, port, q)) for r in range(2)]
    for p in procs:
        p.start()
    answers = [q.get(timeout=120) for _ in procs]
    for p in procs:
        p.join(60)
    assert all(p.exitcode == 0 for p in procs)
    assert [ok for _, ok in answers] == [[True, False, False]] * 2  # every rank reaches the same answer
