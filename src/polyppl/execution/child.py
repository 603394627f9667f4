"""Child processes: started in a session of their own, so that a timeout or Ctrl-C kills
the whole process group (PyMC's chain processes, CmdStan's executables, httpstan's pool);
their output is kept in a file and its tail returned.

A child dies with the process that started it, however that one ends (``kill -9``
included): it receives the read end of a pipe whose only writer is its parent, and hands
it to a small guard process (:func:`die_with_parent`, the guard of ``reaper``) that kills
the child's process group when the pipe closes. A parent-death signal
(``PR_SET_PDEATHSIG``) would kill the child alone and leave its own children running.

A fit's child (``runner``) also has a channel to its parent: it says what it is doing
(compiling, sampling 40%) and waits for its turn to sample, so that several fits import and
compile at once while only one samples. Two uses: a fit in a child (``runner``), and a
function called in a child with its own environment (``call_in_child``), for measurements
that change process-wide state (JAX's precision, a PATH without a C++ compiler).
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
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, Iterator, Mapping, Sequence

from polyppl.execution.reaper import guard_group


def use_forkserver() -> None:
    """Start the processes of this process's libraries (PyMC's chains, httpstan's pool)
    from a fork server instead of forking this process: once JAX is loaded here, a fork
    copies its threads mid-state and can deadlock (JAX warns "os.fork() was called").
    The server imports PyMC once, so each chain process starts from it in milliseconds.
    Call before any process is started (the CLI, the worker and the tests do)."""
    multiprocessing.set_start_method("forkserver", force=True)
    multiprocessing.set_forkserver_preload(["pymc"])


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
#: The environment variable that gives a child started with a channel its two descriptors.
CHANNEL_VARIABLE = "POLYPPL_CHANNEL"


class ChildProcess:
    """A child started in a session of its own, its output kept in a file, run to its end by
    whoever polls it. With ``channel``, the child has two pipes to this process (their
    descriptors in ``POLYPPL_CHANNEL``, read by :meth:`Channel.from_environment`): it sends
    lines (what it is doing, that it waits for its turn to sample) and is given its turn by
    :meth:`grant_turn`."""

    def __init__(self, argv: Sequence[str], *, env: Mapping[str, str] | None = None, stdin: bytes = b"",
                 channel: bool = False) -> None:
        self.started = time.monotonic()
        self._log = tempfile.TemporaryFile("w+b")
        given = tempfile.TemporaryFile("w+b")
        given.write(stdin)
        given.seek(0)
        watched, self._held = os.pipe()  # the child reads ``watched``; only this process holds ``held``
        passed = [watched]
        extra = {PARENT_PIPE_VARIABLE: str(watched)}
        self._notes = self._turns = None
        if channel:
            self._notes, notes_out = os.pipe()
            turns_in, self._turns = os.pipe()
            passed += [notes_out, turns_in]
            extra[CHANNEL_VARIABLE] = f"{notes_out},{turns_in}"
        try:
            self.process = subprocess.Popen(list(argv), stdin=given, stdout=self._log, stderr=subprocess.STDOUT,
                                            start_new_session=True, pass_fds=tuple(passed),
                                            env={**os.environ, **(env or {}), **extra})
        except BaseException:
            self._close(self._held, self._notes, self._turns)
            self._log.close()
            raise
        finally:
            self._close(*passed)
            given.close()
        if self._notes is not None:
            os.set_blocking(self._notes, False)
        self._pending = b""
        self.timed_out = False

    @staticmethod
    def _close(*descriptors: int | None) -> None:
        for descriptor in descriptors:
            if descriptor is not None:
                os.close(descriptor)

    @property
    def elapsed(self) -> float:
        return time.monotonic() - self.started

    def running(self) -> bool:
        return self.process.poll() is None

    def messages(self) -> list[str]:
        """The lines the child sent since the last call (none without a channel)."""
        if self._notes is None:
            return []
        while True:
            try:
                chunk = os.read(self._notes, 65536)
            except BlockingIOError:
                break
            if not chunk:
                break
            self._pending += chunk
        *lines, self._pending = self._pending.split(b"\n")
        return [line.decode("utf-8", "replace") for line in lines]

    def grant_turn(self) -> None:
        try:
            os.write(self._turns, b"g")
        except BrokenPipeError:  # it has ended: its exit is read by the next poll
            pass

    def kill(self, timed_out: bool = False) -> None:
        self.timed_out = self.timed_out or timed_out
        _kill(self.process)

    def result(self, timeout: float | None = None) -> ChildResult:
        """The result of a child that has ended (call after ``running()`` is False or ``kill``)."""
        self.process.wait()
        wall = self.elapsed
        self._close(self._held, self._notes, self._turns)
        self._held = self._notes = self._turns = None
        log = self._log
        log.seek(0, os.SEEK_END)
        log.seek(max(0, log.tell() - 4 * OUTPUT_TAIL_CHARS))
        tail = log.read().decode("utf-8", "replace")[-OUTPUT_TAIL_CHARS:]
        log.close()
        code = self.process.returncode
        if self.timed_out:
            return ChildResult("timeout", code, tail, wall,
                               f"no result after {timeout:.0f} s; the process was killed" if timeout else "timed out")
        if code < 0:
            return ChildResult("crashed", code, tail, wall, f"the process died with signal {signal.Signals(-code).name}")
        if code != 0:
            return ChildResult("failed", code, tail, wall, f"the process exited with code {code}")
        return ChildResult("ok", code, tail, wall)


def run_child(argv: Sequence[str], *, env: Mapping[str, str] | None = None, timeout: float | None = None,
              stdin: bytes = b"") -> ChildResult:
    """Run ``argv`` to the end (or ``timeout`` seconds), keeping its output's tail; ``stdin``
    is its standard input (from an unnamed file: nothing is left on disk).

    On Ctrl-C (or any exception here) the child's process group is killed and the exception
    goes on; if this process is killed outright, the child kills its group itself
    (:func:`die_with_parent`)."""
    child = ChildProcess(argv, env=env, stdin=stdin)
    try:
        while child.running():
            if timeout is not None and child.elapsed > timeout:
                child.kill(timed_out=True)
                break
            time.sleep(0.1)
    except BaseException:
        child.kill()
        child.result()
        raise
    return child.result(timeout)


class Channel:
    """In a child started with a channel: lines to the parent (``note``), and the turn to
    sample, which the parent gives one child at a time (``turn``)."""

    def __init__(self, notes: int, turns: int) -> None:
        self._notes, self._turns = notes, turns
        #: Seconds spent waiting for the turn.
        self.waited = 0.0

    @classmethod
    def from_environment(cls) -> Channel | None:
        value = os.environ.pop(CHANNEL_VARIABLE, None)
        if value is None:
            return None
        notes, turns = (int(part) for part in value.split(","))
        for descriptor in (notes, turns):
            os.set_inheritable(descriptor, False)
        return cls(notes, turns)

    def send(self, kind: str, text: str = "") -> None:
        line = f"{kind} {text}".strip().replace("\n", " ") + "\n"
        try:
            os.write(self._notes, line.encode())
        except BrokenPipeError:
            pass

    def note(self, text: str) -> None:
        self.send("note", text)

    @contextmanager
    def turn(self) -> Iterator[None]:
        """Wait for the parent's go, run the body (the sampling), say that it is done."""
        started = time.monotonic()
        self.send("wait")
        while True:
            try:
                if os.read(self._turns, 1):
                    break
                raise RuntimeError("the parent closed the channel before this fit's turn")
            except InterruptedError:
                continue
        self.waited += time.monotonic() - started
        self.send("start")
        try:
            yield
        finally:
            self.send("done")


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
