"""No process left behind by a grid: its driver and its workers adopt and end their
descendants (Linux).

A local Dask cluster's worker processes start processes of their own (a fork server per
worker for PyMC's chains and httpstan's pool, the pool's processes, a resource tracker),
and these outlive the worker that started them: they are reparented to PID 1 and run on.
Here the driver declares itself a *child subreaper* (``PR_SET_CHILD_SUBREAPER``) while the
grid runs, so every orphaned descendant becomes its child instead, and ends every child
that the grid left behind when the grid ends, however it ends (normal end, an exception,
Ctrl-C, SIGTERM turned into an exception by the CLI). Each worker of a local cluster leads a
process group of its own, guarded by a small process that kills the group once the worker
is gone, so that ``kill -9`` of the driver (after which Dask ends its workers at once)
leaves nothing either.
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Iterator

_PR_SET_CHILD_SUBREAPER = 36
_PR_GET_CHILD_SUBREAPER = 37


def _prctl(option: int, value: int) -> bool:
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        return libc.prctl(option, ctypes.c_ulong(value), 0, 0, 0) == 0
    except (OSError, AttributeError):  # not Linux
        return False


def _is_subreaper() -> bool:
    flag = ctypes.c_int(0)
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(_PR_GET_CHILD_SUBREAPER, ctypes.byref(flag), 0, 0, 0)
    except (OSError, AttributeError):
        return False
    return bool(flag.value)


def children(pid: int | None = None) -> set[int]:
    """The processes whose parent is ``pid`` (this process by default), from /proc."""
    pid = os.getpid() if pid is None else pid
    found = set()
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        with contextlib.suppress(OSError, IndexError, ValueError):
            fields = (entry / "stat").read_text().rpartition(")")[2].split()
            if int(fields[1]) == pid and fields[0] != "Z":
                found.add(int(entry.name))
    return found


def end_children(keep: set[int] = frozenset(), grace: float = 2.0) -> int:
    """End this process's children other than ``keep`` and, a subreaper adopting them as
    their parents die, their descendants: SIGTERM, then SIGKILL after ``grace`` seconds.
    Returns how many were ended."""
    ended: set[int] = set()
    deadline = time.monotonic() + grace
    for _ in range(200):
        left = children() - set(keep)
        if not left:
            break
        hard = time.monotonic() > deadline
        for pid in left:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL if hard else signal.SIGTERM)
            ended.add(pid)
        time.sleep(0.05)
        for pid in left:  # collect the dead ones (no zombie left in the table)
            with contextlib.suppress(ChildProcessError):
                os.waitpid(pid, os.WNOHANG)
    return len(ended)


@contextlib.contextmanager
def adopting_descendants() -> Iterator[None]:
    """While the block runs, orphaned descendants become this process's children; when it
    ends, every child started in the block (and what they started) is ended."""
    before = children()
    was = _is_subreaper()
    _prctl(_PR_SET_CHILD_SUBREAPER, 1)
    try:
        yield
    finally:
        try:
            end_children(keep=before)
        finally:
            if not was:
                _prctl(_PR_SET_CHILD_SUBREAPER, 0)


#: The guard of a process group: waits for the end of a pipe whose other end only the watched
#: process holds, then kills the group (what was started there and left behind). A separate
#: process, not a thread, so that a long C call holding the GIL cannot delay it.
_GUARD = """
import os, signal, sys
descriptor, group = int(sys.argv[1]), int(sys.argv[2])
while True:
    try:
        if os.read(descriptor, 1) == b"":
            break
    except InterruptedError:
        continue
    except OSError:
        break
try:
    os.killpg(group, signal.SIGKILL)
except (ProcessLookupError, PermissionError):
    pass
"""


def guard_group(descriptor: int, group: int) -> None:
    """Start a guard that kills process group ``group`` once every write end of the pipe whose
    read end is ``descriptor`` is closed (the process holding it ended, however it ended)."""
    subprocess.Popen([sys.executable, "-c", _GUARD, str(descriptor), str(group)], pass_fds=(descriptor,),
                     start_new_session=True, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                     stderr=subprocess.DEVNULL)


def end_group_with_this_process() -> None:
    """In a worker process: make it the leader of a process group of its own, which what it
    starts joins, and start a guard that kills that group once the worker is gone, however it
    ends (Dask ends a worker whose driver died with ``os._exit``, which runs no clean-up).
    Idempotent within a process.

    A guard process is needed: a fork server's children hold the server's "alive" pipe, so
    neither they nor the server notice that the process that started them is gone."""
    global _GUARDED
    if _GUARDED is not None:
        return
    os.setpgid(0, 0)
    watched, held = os.pipe()
    guard_group(watched, os.getpgrp())
    os.close(watched)
    _GUARDED = held  # open until this process ends; never inherited (os.pipe's are not)


_GUARDED: int | None = None
