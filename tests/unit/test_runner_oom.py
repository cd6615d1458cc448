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
    # vLLM's start-up checks of its KV cache, as the engine core raises them (GPU and CPU backends)
    ValueError("No available memory for the cache blocks. Try increasing `gpu_memory_utilization`"),
    ValueError("To serve at least one request with the model's max seq len (4096), (2.0 GiB KV cache is needed, "
               "which is larger than the available KV cache memory (1.5 GiB)."),
    RuntimeError("Engine core initialization failed. See root cause above. Failed core proc(s): {} Root cause in "
                 "the engine core: ValueError: Available memory on node 0 (20.1/23.4 GiB) on kv cache allocation "
                 "is less than requested memory for kv (800.0 GiB)."),
])
def test_allocation_failures_are_oom(exc):
    assert is_out_of_memory(exc)


@pytest.mark.parametrize("exc", [RuntimeError("shape mismatch"), FileNotFoundError("no model"), KeyError("x"),
                                 RuntimeError("Engine core initialization failed. See root cause above. Root cause "
                                              "in the engine core: KeyError: 'model.layers.0.q_proj'")])
def test_other_failures_are_not(exc):
    assert not is_out_of_memory(exc)


def test_the_engine_cores_root_cause_is_read_back_from_the_job_log(tmp_path):
    """vLLM's engine core prints its traceback to the stderr it shares with the job (the job's log)."""
    import subprocess
    import sys

    log_path = tmp_path / "job.log"
    log_path.write_text("(EngineCore_DP0 pid=7) Traceback (most recent call last):\n"
                        "(EngineCore_DP0 pid=7)   File \"x.py\", line 1, in <module>\n"
                        "(EngineCore_DP0 pid=7) ValueError: Available memory on node 0 is less than requested "
                        "memory for kv (9.0 GiB).\nINFO later line\n")
    code = "from effbench.inference.engines import engine_core_root_cause as f; print(f())"
    with log_path.open("a") as err:
        out = subprocess.run([sys.executable, "-c", code], stdout=subprocess.PIPE, stderr=err, text=True, check=True)
    assert out.stdout.strip() == "ValueError: Available memory on node 0 is less than requested memory for kv (9.0 GiB)."
    piped = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert piped.stdout.strip() == "None"  # stderr is a pipe, not a log file: nothing to read back
