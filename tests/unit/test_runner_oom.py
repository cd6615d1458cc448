"""Which exceptions run_cell records as out of memory (everything else fails the job)."""

import pytest

from effbench.runner import is_out_of_memory


class OutOfMemoryError(RuntimeError):  # the name torch.cuda.OutOfMemoryError carries
    pass


@pytest.mark.parametrize("exc", [
    MemoryError(),
    OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB"),
    RuntimeError("[enforce fail at alloc_cpu.cpp:127] err == 0. DefaultCPUAllocator: can't allocate memory: "
                 "you tried to allocate 40000000000000 bytes. Error code 12 (Cannot allocate memory)"),
    RuntimeError("CUDA error: out of memory"),
])
def test_allocation_failures_are_oom(exc):
    assert is_out_of_memory(exc)


@pytest.mark.parametrize("exc", [RuntimeError("shape mismatch"), FileNotFoundError("no model"), KeyError("x")])
def test_other_failures_are_not(exc):
    assert not is_out_of_memory(exc)
