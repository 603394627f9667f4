"""Fits in child processes, one at a time, their results on disk as they finish.

Each fit runs in its own process (``python -m polyppl.execution.worker``), so a crash (a
segfault, a killed process) or a hang of one backend cannot take the caller down; a
timeout or Ctrl-C kills the child's whole process group, and everything finished stays on
disk. A fit's DataTree (``STEM.nc``) and record (``STEM.json``) are written atomically
by the child the moment it ends; a failed, crashed or timed-out fit gets a record with its
status, error and output tail.

A finished fit is reused only when its record's content hash equals the request's (same
model, data, backend and engine, method, settings and package versions) and its ``.nc``
file matches the checksum in its record. Otherwise it is run again, and the progress line
says which input changed or that the file was damaged. Callers that share a results folder
with other runs hold its lock (``store.folder_lock``) around ``run_fit`` and the reading of
its files.
"""

from __future__ import annotations

import json
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from polyppl.execution.child import run_child
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


def run_fit(request: FitRequest, stem: Path, *, timeout: float | None = None, force: bool = False,
            progress: Progress = lambda line: None, label: str = "") -> FitOutcome:
    """Reuse the finished fit at ``stem`` or run ``request`` in a child process."""
    label = label or request.backend
    record, why = (None, "--force") if force else finished(request, stem)
    if record is not None:
        return FitOutcome(request, stem, record, reused=True, note=why)
    progress(f"{label}: sampling" if why == "no earlier run" else f"{label}: running again: {why}")
    for suffix in (".json", ".nc"):  # the record first: never a record without its draws
        stem_path(stem, suffix).unlink(missing_ok=True)  # never a stale result beside a new failure
    stem.parent.mkdir(parents=True, exist_ok=True)
    remove_stale_parts(stem.parent)
    result = run_child([sys.executable, "-m", "polyppl.execution.worker", str(stem)],
                       stdin=json.dumps(request.to_json()).encode(), timeout=timeout,
                       progress=lambda s: progress(f"{label}: still running ({s:.0f} s)"))
    record_path = stem_path(stem, ".json")
    if result.status == "ok" or (result.status == "failed" and record_path.exists()):
        record = FitRecord.load(record_path)
    else:
        status = "crashed" if result.status == "failed" else result.status
        record = base_record(request).failed(status, result.error or status, result.output_tail, result.wall_seconds)
        save_json(record.to_json(), record_path)
    return FitOutcome(request, stem, record, note=why)
