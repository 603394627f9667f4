"""No process left behind by a grid: its driver and its workers adopt and end their
descendants (Linux).

A local Dask cluster's worker processes start processes of their own (a fork server per
worker for PyMC's chains and httpstan's pool, the pool's processes, a resource tracker),
and these outlive the worker that started them: they are reparented to PID 1 and run on.
Here the driver declares itself a *child subreaper* (``PR_SET_CHILD_SUBREAPER``) while the
grid runs, so every orphaned descendant becomes its child instead, and ends every child
that the grid left behind when the grid ends, however it ends (normal end, an exception,
Ctrl-C, SIGTERM turned into an exception by the CLI). A worker does the same for its own
descendants, and ends them and itself when its parent (the driver) is gone, so that
``kill -9`` of the driver leaves nothing either.
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import signal
import threading
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


def end_with_parent(every: float = 0.5) -> None:
    """In a worker process: adopt its orphaned descendants, and once its parent is gone,
    end them and exit. Idempotent within a process."""
    global _WATCHING
    if _WATCHING:
        return
    _WATCHING = True
    _prctl(_PR_SET_CHILD_SUBREAPER, 1)
    parent = os.getppid()

    def watch() -> None:
        while os.getppid() == parent:
            time.sleep(every)
        end_children(grace=0.5)
        os._exit(1)

    threading.Thread(target=watch, name="polyppl-end-with-parent", daemon=True).start()


_WATCHING = False
