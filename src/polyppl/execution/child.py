"""Child processes: started in a session of their own, so that a timeout or Ctrl-C kills
the whole process group (PyMC's chain processes, CmdStan's executables, httpstan's pool);
their output is kept in a file and its tail returned.

A child dies with the process that started it, however that one ends (``kill -9``
included): it receives the read end of a pipe whose only writer is its parent, and hands
it to a small guard process (:func:`die_with_parent`, the guard of ``reaper``) that kills
the child's process group when the pipe closes. A parent-death signal (``PR_SET_PDEATHSIG``) would kill the child alone and leave
its own children running.

Two uses: a fit in a child (``runner``), and a function called in a child with its own
environment (``call_in_child``), for measurements that change process-wide state (JAX's
precision, a PATH without a C++ compiler).
"""

from __future__ import annotations

import importlib
import json
import multiprocessing
import os
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from typing import Any, Callable, Mapping, Sequence

from polyppl.execution.reaper import guard_group


def use_forkserver() -> None:
    """Start the processes of this process's libraries (PyMC's chains, httpstan's pool)
    from a fork server instead of forking this process: once JAX is loaded here, a fork
    copies its threads mid-state and can deadlock (JAX warns "os.fork() was called").
    The server imports PyMC once, so each chain process starts from it in milliseconds.
    Call before any process is started (the CLI, the worker and the tests do)."""
    multiprocessing.set_start_method("forkserver", force=True)
    multiprocessing.set_forkserver_preload(["pymc"])


#: How often a long child is reported as still running.
PROGRESS_EVERY_SECONDS = 15.0
OUTPUT_TAIL_CHARS = 3000


@dataclass(frozen=True)
class ChildResult:
    """``status``: ``ok`` (exit 0), ``failed`` (another exit code), ``crashed`` (killed by a
    signal it did not ask for) or ``timeout``; ``error`` says what happened in words."""

    status: str
    returncode: int | None
    output_tail: str
    wall_seconds: float
    error: str | None = None


#: The environment variable that gives a child the descriptor of its parent's pipe.
PARENT_PIPE_VARIABLE = "POLYPPL_PARENT_PIPE"


def run_child(argv: Sequence[str], *, env: Mapping[str, str] | None = None, timeout: float | None = None,
              progress: Callable[[float], None] | None = None, stdin: bytes = b"") -> ChildResult:
    """Run ``argv`` to the end (or ``timeout`` seconds), keeping its output's tail; ``stdin``
    is its standard input (from an unnamed file: nothing is left on disk).

    ``progress(elapsed)`` is called every 15 s while it runs. On Ctrl-C (or any exception
    here) the child's process group is killed and the exception goes on; if this process is
    killed outright, the child kills its group itself (:func:`die_with_parent`)."""
    start = time.monotonic()
    with tempfile.TemporaryFile("w+b") as log, tempfile.TemporaryFile("w+b") as given:
        given.write(stdin)
        given.seek(0)
        watched, held = os.pipe()  # the child reads ``watched``; only this process holds ``held``
        try:
            process = subprocess.Popen(list(argv), stdin=given, stdout=log, stderr=subprocess.STDOUT,
                                       start_new_session=True, pass_fds=(watched,),
                                       env={**os.environ, **(env or {}), PARENT_PIPE_VARIABLE: str(watched)})
        except BaseException:
            os.close(held)
            raise
        finally:
            os.close(watched)
        timed_out = False
        try:
            next_note = PROGRESS_EVERY_SECONDS
            while process.poll() is None:
                elapsed = time.monotonic() - start
                if timeout is not None and elapsed > timeout:
                    _kill(process)
                    timed_out = True
                    break
                if progress and elapsed >= next_note:
                    progress(elapsed)
                    next_note += PROGRESS_EVERY_SECONDS
                time.sleep(0.1)
        except BaseException:
            _kill(process)
            raise
        finally:
            os.close(held)
        wall = time.monotonic() - start
        log.seek(0, os.SEEK_END)
        log.seek(max(0, log.tell() - 4 * OUTPUT_TAIL_CHARS))
        tail = log.read().decode("utf-8", "replace")[-OUTPUT_TAIL_CHARS:]
    code = process.returncode
    if timed_out:
        return ChildResult("timeout", code, tail, wall, f"no result after {timeout:.0f} s; the process was killed")
    if code < 0:
        return ChildResult("crashed", code, tail, wall, f"the process died with signal {signal.Signals(-code).name}")
    if code != 0:
        return ChildResult("failed", code, tail, wall, f"the process exited with code {code}")
    return ChildResult("ok", code, tail, wall)


def _kill(process: subprocess.Popen) -> None:
    try:
        os.killpg(process.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass
    process.wait()


def die_with_parent() -> None:
    """In a child started by :func:`run_child`: kill this process's group (this process and
    every process it started) once its parent is gone, however the parent ended."""
    descriptor = os.environ.pop(PARENT_PIPE_VARIABLE, None)
    if descriptor is None:
        return
    descriptor = int(descriptor)
    guard_group(descriptor, os.getpgrp())
    os.close(descriptor)  # the guard holds it now; nothing this process starts inherits it


_RESULT_MARK = "POLYPPL-RESULT "


def call_in_child(function: str, kwargs: Mapping[str, Any] | None = None, *, env: Mapping[str, str] | None = None,
                  timeout: float | None = 600) -> tuple[Any, ChildResult]:
    """``module:function(**kwargs)`` in a fresh interpreter; its JSON-able result.

    Raises RuntimeError with the child's output when it fails."""
    argv = [sys.executable, "-m", "polyppl.execution.child", function, json.dumps(dict(kwargs or {}))]
    result = run_child(argv, env=env, timeout=timeout)
    lines = [line for line in result.output_tail.splitlines() if line.startswith(_RESULT_MARK)]
    if result.status != "ok" or not lines:
        raise RuntimeError(f"{function} failed in a child process ({result.error or 'no result'}):\n{result.output_tail}")
    return json.loads(lines[-1][len(_RESULT_MARK):]), result


def _main(function: str, kwargs: str) -> None:
    module, _, name = function.partition(":")
    value = getattr(importlib.import_module(module), name)(**json.loads(kwargs))
    print(_RESULT_MARK + json.dumps(value), flush=True)


if __name__ == "__main__":
    die_with_parent()
    use_forkserver()
    _main(*sys.argv[1:3])
