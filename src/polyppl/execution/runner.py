"""Fits in child processes, their results on disk as they finish.

Each fit runs in its own process (``python -m polyppl.execution.worker``), so a crash (a
segfault, a killed process) or a hang of one backend cannot take the caller down; a
timeout or Ctrl-C kills the child's whole process group, and everything finished stays on
disk. A fit's DataTree (``STEM.nc``) and record (``STEM.json``) are written atomically
by the child the moment it ends; a failed, crashed or timed-out fit gets a record with its
status, error and output tail.

A finished fit is reused only when its record's content hash equals the request's (same
model, data, backend and engine, method, settings and package versions) and its ``.nc``
file matches the checksum in its record. Otherwise it is run again, and the progress line
says which input changed or that the file was damaged.

Several fits (``run_fits``: a comparison's backends) start at once, so that the slow parts
before sampling (starting Python, importing PyMC, JAX or Stan, compiling) overlap; each
samples alone, when every other fit waits for its turn or has ended, so that its recorded
warm-up and sampling seconds are as clean as if it had run by itself. Each child says what
it is doing (``child.Channel``): the progress lines name the phase (importing, compiling the
Stan program, tracing, sampling 40%) rather than a bare "still running". Callers that share a results folder
with other runs hold its lock (``store.folder_lock``) around ``run_fit`` and the reading of
its files.
"""

from __future__ import annotations

import json
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from polyppl.execution.child import ChildProcess
from polyppl.execution.fit import base_record
from polyppl.execution.record import FitRecord
from polyppl.execution.request import FitRequest, differences
from polyppl.execution.store import file_sha256, remove_stale_parts
from polyppl.inference.idata import save_json, stem_path

Progress = Callable[[str], None]


@dataclass(frozen=True)
class FitOutcome:
    """What happened to one requested fit, and where its files are (``STEM.nc``/``.json``).
    ``request`` is None for an outcome read back from disk (it is only read, never re-run)."""

    request: FitRequest | None
    stem: Path
    record: FitRecord
    reused: bool = False
    #: Why the fit was or was not reused, for the progress line.
    note: str = ""

    @property
    def ok(self) -> bool:
        return self.record.ok

    @property
    def netcdf(self) -> Path | None:
        return stem_path(self.stem, ".nc") if self.ok else None


def finished(request: FitRequest, stem: Path) -> tuple[FitRecord | None, str]:
    """The finished record of ``request`` at ``stem`` if it may be reused, and why (not)."""
    record_path, netcdf = stem_path(stem, ".json"), stem_path(stem, ".nc")
    if not record_path.exists():
        return None, "no earlier run"
    try:
        record = FitRecord.load(record_path)
    except (ValueError, KeyError, TypeError):
        return None, "its earlier record is unreadable"
    if not record.ok:
        return None, f"the earlier run ended with status {record.status}"
    if not netcdf.exists():
        return None, f"{netcdf.name} is missing"
    if record.request_hash != request.content_hash():
        changed = differences(record.request_parts, request.hash_parts())
        return None, f"{' and '.join(changed) or 'the request'} changed since the earlier run"
    if not record.netcdf_sha256:
        return None, f"the record of {netcdf.name} has no checksum of it (written by an older polyppl)"
    if file_sha256(netcdf) != record.netcdf_sha256:
        return None, f"{netcdf.name} does not match the checksum in its record (damaged or cut short)"
    return record, f"reusing the finished run in {netcdf} (same model, data, settings and versions)"


@dataclass(frozen=True)
class FitJob:
    """One fit to run: its request, where its files go, and its name in the progress lines."""

    request: FitRequest
    stem: Path
    label: str = ""


#: How often the fit that is running is reported when it says nothing new.
QUIET_SECONDS = 15.0
#: What a fit's process is doing, as its channel tells (``child.Channel``).
PREPARING, WAITING, SAMPLING, FINISHING, DONE = "preparing", "waiting", "sampling", "finishing", "done"


@dataclass
class _Running:
    job: FitJob
    position: int  # in the jobs given
    why: str
    child: ChildProcess
    state: str = PREPARING
    doing: str = "starting Python and importing polyppl"
    waited: float = 0.0
    waiting_since: float | None = None
    last_said: float = 0.0

    @property
    def active_seconds(self) -> float:
        """Seconds it has run, its wait for the turn left out (what a timeout counts)."""
        waiting = self.child.elapsed - self.waiting_since if self.waiting_since is not None else 0.0
        return self.child.elapsed - self.waited - waiting


def run_fit(request: FitRequest, stem: Path, *, timeout: float | None = None, force: bool = False,
            progress: Progress = lambda line: None, label: str = "") -> FitOutcome:
    """Reuse the finished fit at ``stem`` or run ``request`` in a child process."""
    return run_fits([FitJob(request, stem, label)], timeout=timeout, force=force, progress=progress)[0]


def run_fits(jobs: list[FitJob], *, timeout: float | None = None, force: bool = False,
             progress: Progress = lambda line: None) -> list[FitOutcome]:
    """Reuse each finished fit or run it in a child process; the outcomes in the jobs' order.

    The children start at once: they import their libraries and compile their models side
    by side. Each samples only when given its turn, and a turn is given only while every
    other child waits for one or has ended, so that a fit samples alone and its recorded
    warm-up and sampling seconds hold no other fit's import, compile or summary (the jobs'
    order decides among those waiting). ``timeout`` counts each child's seconds less its
    wait for the turn."""
    outcomes: list[FitOutcome | None] = [None] * len(jobs)
    running: list[_Running] = []
    try:
        for i, job in enumerate(jobs):
            label = job.label or job.request.backend
            record, why = (None, "--force") if force else finished(job.request, job.stem)
            if record is not None:
                outcomes[i] = FitOutcome(job.request, job.stem, record, reused=True, note=why)
                progress(f"{label}: {why}")
                continue
            if why != "no earlier run":
                progress(f"{label}: running again: {why}")
            for suffix in (".json", ".nc"):  # the record first: never a record without its draws
                stem_path(job.stem, suffix).unlink(missing_ok=True)  # never a stale result beside a new failure
            job.stem.parent.mkdir(parents=True, exist_ok=True)
            remove_stale_parts(job.stem.parent)
            child = ChildProcess([sys.executable, "-m", "polyppl.execution.worker", str(job.stem)],
                                 stdin=json.dumps(job.request.to_json()).encode(), channel=True)
            running.append(_Running(FitJob(job.request, job.stem, label), i, why, child))
            progress(f"{label}: starting (importing {job.request.backend} and its libraries)")
        while any(r.state != DONE for r in running):
            for r in running:
                if r.state != DONE:
                    _listen(r, progress)
            for r in running:
                if r.state == DONE:
                    continue
                if not r.child.running():
                    _listen(r, progress)
                    r.state = DONE
                    outcomes[r.position] = _outcome(r, timeout, progress)
                elif timeout is not None and r.active_seconds > timeout:
                    r.child.kill(timed_out=True)
                    r.state = DONE
                    outcomes[r.position] = _outcome(r, timeout, progress)
                elif r.child.elapsed - r.last_said >= QUIET_SECONDS and r.state != WAITING:
                    r.last_said = r.child.elapsed
                    progress(f"{r.job.label}: {r.doing} ({r.active_seconds:.0f} s so far)")
            _give_turn(running, progress)
            time.sleep(0.1)
    finally:
        for r in running:
            if r.state != DONE:
                r.child.kill()
                r.child.result()
    return outcomes  # type: ignore[return-value]


def _listen(r: _Running, progress: Progress) -> None:
    """Read what the child said: a note (what it does now), or that it waits for its turn,
    starts sampling or is done sampling."""
    for line in r.child.messages():
        kind, _, text = line.partition(" ")
        if kind == "note" and text:
            r.doing = text
            r.last_said = r.child.elapsed
            progress(f"{r.job.label}: {text}")
        elif kind == "wait":
            r.state, r.waiting_since = WAITING, r.child.elapsed
            progress(f"{r.job.label}: ready; waits for its turn to sample (one fit samples at a time, alone)")
        elif kind == "start":
            if r.waiting_since is not None:
                r.waited += r.child.elapsed - r.waiting_since
            r.state, r.waiting_since = SAMPLING, None
        elif kind == "done":
            r.state, r.doing = FINISHING, "summarising the draws"


def _give_turn(running: list[_Running], progress: Progress) -> None:
    """The turn to the first child waiting for it, once no other child is doing anything."""
    if any(r.state in (PREPARING, SAMPLING, FINISHING) for r in running):
        return
    waiting = [r for r in running if r.state == WAITING]
    if waiting:
        waiting[0].state = SAMPLING  # until it says "start"; no second turn meanwhile
        waiting[0].last_said = waiting[0].child.elapsed
        waiting[0].child.grant_turn()


def _outcome(r: _Running, timeout: float | None, progress: Progress) -> FitOutcome:
    result = r.child.result(timeout)
    request, stem, label = r.job.request, r.job.stem, r.job.label
    record_path = stem_path(stem, ".json")
    if result.status == "ok" or (result.status == "failed" and record_path.exists()):
        record = FitRecord.load(record_path)
    else:
        status = "crashed" if result.status == "failed" else result.status
        record = base_record(request).failed(status, result.error or status, result.output_tail, r.active_seconds)
        save_json(record.to_json(), record_path)
    if record.ok and record.timings is not None:
        t = record.timings
        waited = f", {r.waited:.0f} s more waiting for its turn" if r.waited >= 1 else ""
        progress(f"{label}: ok: compile {t.compile_seconds:.1f} s, warm-up {t.warmup_seconds:.1f} s, "
                 f"sampling {t.sampling_seconds:.1f} s ({r.active_seconds:.0f} s with start-up and summary{waited})")
    else:
        progress(f"{label}: {record.status}" + (f" - {record.error}" if record.error else ""))
    return FitOutcome(request, stem, record, note=r.why)
