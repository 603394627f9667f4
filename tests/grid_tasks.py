"""Task functions for the grids of tests/test_grid.py, importable by name (``grid_tasks:echo``)
on Dask workers: spawned workers start with the test process's ``sys.path``, which holds
this folder."""

from __future__ import annotations

import concurrent.futures
import multiprocessing
import os
import signal
import sys
import time


def echo(argument: dict) -> dict:
    """The argument's value back, after ``sleep`` seconds."""
    time.sleep(argument.get("sleep", 0.0))
    return {"value": argument["value"]}


def fail(argument: dict) -> dict:
    raise ValueError(f"deliberate failure of task {argument['value']}")


def hang(argument: dict) -> dict:
    time.sleep(argument["sleep"])
    return {"value": "woke up"}


def die(argument: dict) -> dict:
    """Kill this worker process, as the out-of-memory killer or a segfault would."""
    os.kill(os.getpid(), signal.SIGKILL)
    return {}


def _square(x: int) -> int:
    return x * x


def hazards(argument: dict) -> dict:
    """What a worker lets a fit do: start processes (as PyMC's chains do) and a process pool
    after JAX is loaded (as httpstan's chains do), with which start method, and where
    PyTensor would compile."""
    import jax.numpy as jnp

    float(jnp.ones(3).sum())  # JAX loaded and its threads running
    process = multiprocessing.Process(target=time.sleep, args=(0.1,))
    process.start()
    process.join()
    with concurrent.futures.ProcessPoolExecutor(max_workers=1) as pool:
        squared = pool.submit(_square, 7).result()
    return {
        "daemon": multiprocessing.current_process().daemon,
        "start_method": multiprocessing.get_start_method(),
        "child_exit_code": process.exitcode,
        "pool_result": squared,
        "pytensor_flags": os.environ.get("PYTENSOR_FLAGS", ""),
        "pytensor_imported": "pytensor" in sys.modules,
    }


#: A process pool kept for the life of the worker, as httpstan keeps its own.
_KEPT_POOL = None


def keep_a_pool(argument: dict) -> dict:
    """Start a process pool from the fork server and keep it, as PyStan's httpstan does:
    processes that outlive the task, and, unless the grid ends them, the worker."""
    global _KEPT_POOL
    if _KEPT_POOL is None:
        _KEPT_POOL = concurrent.futures.ProcessPoolExecutor(max_workers=2)
    pids = set(_KEPT_POOL.submit(os.getpid).result() for _ in range(4))
    time.sleep(argument.get("sleep", 0.0))
    return {"pool_pids": sorted(pids)}
