"""One fit in its own process: ``python -m polyppl.execution.worker STEM`` with the request's
JSON on standard input (so that no request file is left behind by a killed run).

Writes ``STEM.nc`` and then ``STEM.json`` (with the ``.nc`` file's checksum) atomically. On an exception it writes a record with
``status: error``, the error text and the traceback's tail, and exits 1.
"""

from __future__ import annotations

import json
import sys
import time
import traceback
from contextlib import nullcontext
from dataclasses import replace
from pathlib import Path

from polyppl.execution.child import Channel, die_with_parent, use_forkserver
from polyppl.execution.fit import base_record, fit
from polyppl.execution.request import FitRequest
from polyppl.inference.idata import save_json, stem_path


def peak_memory_mb() -> float | None:
    """This process's peak resident memory. Linux's VmHWM, not ``ru_maxrss``: a child
    started by fork and exec inherits its parent's ``ru_maxrss`` (measured: 1.5 GB for a
    child of a 1.5 GB parent), while VmHWM starts afresh with the new program."""
    status = Path("/proc/self/status")
    if status.exists():
        for line in status.read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    return None


def main(request_json: bytes, stem: str, channel: Channel | None = None) -> int:
    """Run the request; with a ``channel`` to the parent (``runner.run_fits``), say what it
    is doing and sample only when given the turn. The record's wall seconds leave out the
    wait for the turn (``turn_wait_seconds``)."""
    request = FitRequest.from_json(json.loads(request_json))
    start = time.perf_counter()
    progress = channel.note if channel else None
    turn = channel.turn if channel else nullcontext
    try:
        result = fit(request, progress, turn=turn)
    except Exception as exc:  # the point of a worker: record any failure of the backend, then exit
        waited = channel.waited if channel else 0.0
        record = base_record(request).failed("error", f"{type(exc).__name__}: {exc}",
                                             wall_seconds=time.perf_counter() - start - waited)
        save_json(replace(record, traceback=traceback.format_exc()[-4000:]).to_json(), stem_path(Path(stem), ".json"))
        return 1
    waited = channel.waited if channel else 0.0
    record = replace(result.record, wall_seconds=time.perf_counter() - start - waited,
                     turn_wait_seconds=waited if channel else None, peak_memory_mb=peak_memory_mb())
    replace(result, record=record).save(Path(stem))
    return 0


if __name__ == "__main__":
    die_with_parent()
    use_forkserver()
    sys.exit(main(sys.stdin.buffer.read(), sys.argv[1], Channel.from_environment()))
