"""A grid of many fits on Dask distributed, with a resumable ledger and warm workers.

A grid is a list of tasks, each one fit (or one measurement) named by a :class:`FitKey`
(model, backend, method, simulation, seed) and run by a function given by name
(``module:function``), called on a worker with the task's argument and returning a
JSON-able dict with a ``status``. Simulation-based calibration (``studies/sbc.py``) and the
sweeps of ``polyppl bench`` run through it.

Where the fits run:

* by default on a local Dask cluster started for the grid: one worker process per core,
  one thread each (``LocalCluster(n_workers=cores, threads_per_worker=1, processes=True)``);
* with ``scheduler="tcp://HOST:PORT"`` on an existing cluster (``dask scheduler`` and
  ``dask worker ADDRESS`` on any machines that have polyppl installed), the same tasks;
* with ``scheduler="in-process"`` here, one after another (no Dask; for debugging and for
  tests that change this process, e.g. a deliberately broken compiler).

The ledger (JSON lines, ``ledger``) gets one line per finished task as its result arrives,
appended with a single write and flushed to disk, so a driver that is killed loses nothing
finished; run again with the same ledger, the grid skips every task already there (for the
same ``config``, a hash of everything else that determines the results) and runs the rest.
Each line carries the checksum of its own bytes and the ledger is read as bytes: a line cut
short by a kill, two lines run together, or bytes changed on disk make that line unreadable;
its task is run again and the unreadable lines are counted in the progress and the summary.
Two runs on one ledger take turns (a lock beside it, ``store.folder_lock``).

Failures are recorded, not dropped: a task whose function raises gets ``status: error``
with the message and traceback's tail; one that runs past ``timeout`` seconds gets
``status: timeout`` (its worker is then restarted, since a fit cannot be stopped inside its
thread); one whose worker dies (killed, out of memory, a segfault) is run again on another
worker, up to ``retries`` more times (the scheduler's ``allowed-failures``), and then gets
``status: crashed``. Dask charges a worker's death to every task the worker held, the one
it ran and any waiting behind it, so a task caught in ``retries + 1`` deaths is only a
suspect: it is run again alone, once the rest of the grid has finished, and recorded as
crashed only if its worker dies there too. Results do not depend on which worker runs a
task or in what order: each task carries its own seeds.

Known hazards, handled when a worker starts (:func:`prepare_worker_process`):

* PyMC (chains in processes) and httpstan (a process pool per fit) start child processes,
  which Python forbids in daemonic processes, and Dask's worker processes are daemonic by
  default: the local cluster starts them non-daemonic, and a worker of an existing cluster
  marks itself non-daemonic.
* JAX does not survive ``fork``: worker processes are started by ``spawn`` (Dask's default,
  set explicitly for the local cluster), and inside a worker the default start method is
  ``forkserver`` (httpstan's own fork pool is replaced where JAX is loaded, in the Stan
  backend).
* PyTensor's compile cache is locked for whole compiles: each worker process gets a
  directory of its own (``$POLYPPL_CACHE/workers/slot-N``, the first free slot, held by a
  lock while the process lives, so a later worker reuses its compiled modules).
* cmdstanpy fits write CSV files: each run has an output directory of its own (Stan backend),
  and processes compiling the same program take turns on a lock.

Warm workers: :func:`compiled_for` compiles a model once per worker process and hands out
copies bound to each task's dataset (``CompiledModel.with_data``), so a worker pays the
import and the compile once for all the simulations it runs.
"""

from __future__ import annotations

import contextlib
import hashlib
import importlib
import json
import logging
import math
import multiprocessing
import os
import signal
import threading
import time
import traceback
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Callable, Mapping, Sequence

from polyppl.backends import BACKENDS, get_backend
from polyppl.backends.base import CompiledModel
from polyppl.errors import UserError
from polyppl.execution.reaper import adopting_descendants, end_group_with_this_process
from polyppl.execution.store import folder_lock
from polyppl.inference.draws import stopwatch
from polyppl.spec import Dataset, Model
from polyppl.spec.serialize import content_hash, model_hash

#: ``scheduler`` value that runs the tasks in this process, one after another.
IN_PROCESS = "in-process"
#: Extra runs of a task whose worker died, before it is recorded as crashed.
DEFAULT_RETRIES = 2
STATUSES = ("ok", "error", "timeout", "crashed")
TRACEBACK_CHARS = 3000
Progress = Callable[[str], None]


@dataclass(frozen=True)
class FitKey:
    """What names one task of a grid in its ledger. ``simulation`` is the simulation's number
    (SBC) or another label of the data a fit ran on (a sweep point's sizes)."""

    model: str
    backend: str
    method: str
    simulation: int | str
    seed: int

    def text(self) -> str:
        return f"{self.model}|{self.backend}|{self.method}|{self.simulation}|{self.seed}"

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class GridTask:
    """One task: ``function`` (``module:function``) is imported on the worker and called
    with ``argument`` (picklable); it returns a JSON-able dict with a ``status`` of
    :data:`STATUSES` (``ok`` where it says nothing). ``config`` is a hash of everything
    besides the key that determines the result: a ledger entry is reused only for the same."""

    key: FitKey
    function: str
    argument: Any
    config: str


@dataclass(frozen=True)
class GridRun:
    """Every task's ledger entry (``status``, ``result``, ``worker``, ``seconds``), those found
    in the ledger and those run now, and where they ran."""

    entries: dict[FitKey, dict[str, Any]]
    reused: int
    ran: int
    wall_seconds: float
    workers: int
    where: str
    #: Ledger lines that failed their checksum (their tasks were run again).
    unreadable_lines: int = 0
    #: Workers that left the cluster while the grid ran (their tasks were run again elsewhere).
    workers_lost: tuple[str, ...] = ()


# --------------------------------------------------------------------------- ledger


#: Every ledger line ends with the SHA-256 of the line without it: ``...,"sha256":"HEX"}``.
_CHECKSUM_KEY = b',"sha256":"'
_CHECKSUM_END = len(_CHECKSUM_KEY) + 64 + 2


def ledger_line(entry: Mapping[str, Any]) -> bytes:
    """One ledger line: the entry as compact JSON with its own checksum as its last member."""
    payload = json.dumps(entry, allow_nan=False, default=_json_default, sort_keys=True, separators=(",", ":")).encode()
    digest = hashlib.sha256(payload).hexdigest().encode()
    return payload[:-1] + _CHECKSUM_KEY + digest + b'"}\n'


def parse_ledger_line(line: bytes) -> dict[str, Any] | None:
    """The entry of one ledger line (without its newline), or None where the line is not
    exactly as written: cut short, two lines run together, bytes changed (a zeroed block,
    invalid UTF-8), or no checksum."""
    if len(line) <= _CHECKSUM_END or line[-_CHECKSUM_END:-66] != _CHECKSUM_KEY or line[-2:] != b'"}':
        return None
    payload = line[:-_CHECKSUM_END] + b"}"
    if hashlib.sha256(payload).hexdigest().encode() != line[-66:-2]:
        return None
    try:
        entry = json.loads(payload.decode("utf-8"))
        FitKey(**entry["key"])
    except (ValueError, KeyError, TypeError):
        return None
    return entry if isinstance(entry, dict) else None


@dataclass(frozen=True)
class Ledger:
    """A ledger as read: entries by (key text, config), the last line of a pair winning, and
    how many lines were unreadable (their tasks are run again)."""

    entries: dict[tuple[str, str], dict[str, Any]]
    unreadable: int = 0


def read_ledger(path: Path) -> Ledger:
    """The entries of the ledger at ``path``, read as bytes, each line checked against its
    checksum; unreadable lines are counted and skipped."""
    entries: dict[tuple[str, str], dict[str, Any]] = {}
    unreadable = 0
    if not path.exists():
        return Ledger(entries)
    for line in path.read_bytes().split(b"\n"):
        if not line.strip(b" \r\t"):
            continue
        entry = parse_ledger_line(line.rstrip(b"\r"))
        if entry is None:
            unreadable += 1
            continue
        entries[FitKey(**entry["key"]).text(), str(entry.get("config"))] = entry
    return Ledger(entries, unreadable)


def stale_tasks(ledger: Ledger, tasks: Sequence[GridTask]) -> int:
    """How many of ``tasks`` the ledger holds under another ``config``: run with other
    settings, or written in an older layout of their results (each study puts its
    ``LEDGER_FORMAT`` in the config), so never read as today's."""
    keys = {key for key, _ in ledger.entries}
    return sum(1 for t in tasks if t.key.text() in keys)


def append_line(path: Path, entry: Mapping[str, Any]) -> None:
    """Append one ledger line with a single write, flushed to disk; a line left unfinished by
    a kill is first closed, so that it spoils only itself."""
    path.parent.mkdir(parents=True, exist_ok=True)
    data = ledger_line(entry)
    descriptor = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o666)
    try:
        size = os.fstat(descriptor).st_size
        if size:
            with open(path, "rb") as handle:
                handle.seek(size - 1)
                if handle.read(1) != b"\n":
                    data = b"\n" + data
        os.write(descriptor, data)
        os.fsync(descriptor)
    finally:
        os.close(descriptor)


def _json_default(value: Any) -> Any:
    if hasattr(value, "item"):  # NumPy scalars
        return value.item()
    raise TypeError(f"not JSON-able: {type(value).__name__}")


def _clean(value: Any) -> Any:
    """Non-finite floats as None: the ledger is strict JSON."""
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {k: _clean(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_clean(v) for v in value]
    if hasattr(value, "item"):
        return _clean(value.item())
    return value


# --------------------------------------------------------------------------- on a worker

#: This process's compiled models, by :func:`_compiled_key`.
_COMPILED: dict[str, CompiledModel] = {}
#: The lock that makes this process's scratch directory its own, held while it lives.
_SLOT_LOCK: Any = None


def compiled_for(backend: str, engine: str, model: Model, dataset: Dataset,
                 options: Mapping[str, str] | None = None) -> tuple[CompiledModel, float]:
    """``model`` compiled for ``backend``/``engine`` and bound to ``dataset``, and the
    seconds spent compiling it in this call (0 when this process had it already).

    Compiled once per process for datasets of the same shapes (dims' sizes and values'
    shapes); every call, the first included, returns ``compiled.with_data(dataset)``, so
    that a fit runs the same code whether or not its worker was warm."""
    key = _compiled_key(backend, engine, model, dataset, options or {})
    if key in _COMPILED:
        return _COMPILED[key].with_data(dataset), 0.0
    with stopwatch() as elapsed:
        _COMPILED[key] = get_backend(backend).compile(model, dataset, engine, dict(options or {}))
        bound = _COMPILED[key].with_data(dataset)  # the first builds what every dataset shares
    return bound, elapsed()


def forget_compiled() -> None:
    """Drop this process's compiled models (a timed-out fit may still be using one)."""
    _COMPILED.clear()


def _compiled_key(backend: str, engine: str, model: Model, dataset: Dataset, options: Mapping[str, str]) -> str:
    import numpy as np

    shapes = {name: list(np.shape(value)) for name, value in sorted(dataset.values.items())}
    sizes = {dim: len(labels) for dim, labels in sorted(dataset.coords.items())}
    return content_hash([backend, engine, sorted(options.items()), model_hash(model), shapes, sizes])


def prepare_worker_process() -> str:
    """Make this process fit to run fits beside other workers (the hazards in the module's
    docstring); idempotent. Returns its scratch directory."""
    global _SLOT_LOCK
    process = multiprocessing.current_process()
    if process.daemon:
        # Dask starts workers as daemons unless told otherwise; PyMC and httpstan need children.
        process.daemon = False
    multiprocessing.set_start_method("forkserver", force=True)
    if _SLOT_LOCK is None:
        _SLOT_LOCK = _claim_slot()
        for backend in BACKENDS.values():
            if backend.prepare_worker is not None:
                backend.prepare_worker(Path(_SLOT_LOCK.name).parent)
    return str(Path(_SLOT_LOCK.name).parent)


def _claim_slot():
    """The first ``$POLYPPL_CACHE/workers/slot-N`` whose lock no live process holds; the
    open lock file (closing it, or dying, frees the slot)."""
    import fcntl

    root = Path(os.environ.get("POLYPPL_CACHE", Path.home() / ".cache" / "polyppl")) / "workers"
    for number in range(10_000):
        directory = root / f"slot-{number}"
        directory.mkdir(parents=True, exist_ok=True)
        handle = open(directory / "owner.lock", "a")
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            handle.close()
            continue
        return handle
    raise RuntimeError(f"no free worker slot under {root}")


def _call(function: str, argument: Any) -> dict[str, Any]:
    module, _, name = function.partition(":")
    result = getattr(importlib.import_module(module), name)(argument)
    return {"status": "ok", **result}


def _worker_name() -> str:
    try:
        from distributed import get_worker

        return get_worker().address
    except (ImportError, ValueError):
        return f"pid {os.getpid()}"


def run_task(function: str, argument: Any, timeout: float | None) -> dict[str, Any]:
    """One task on a worker: the function's result with ``worker``, ``pid`` and ``seconds``;
    an exception becomes ``status: error``; past ``timeout`` seconds, ``status: timeout`` (the
    fit's thread is left behind: the driver restarts the worker)."""
    outcome: dict[str, Any] = {}

    def target() -> None:
        try:
            outcome.update(_call(function, argument))
        except Exception as exc:  # a failed fit is a result to record, not a reason to stop the grid
            outcome.update(status="error", error=f"{type(exc).__name__}: {exc}",
                           traceback=traceback.format_exc()[-TRACEBACK_CHARS:])

    cpu = _cpu_seconds()
    with stopwatch() as elapsed:
        if timeout is None:
            target()
        else:
            thread = threading.Thread(target=target, name="polyppl-fit", daemon=True)
            thread.start()
            thread.join(timeout)
            if thread.is_alive():
                forget_compiled()
                outcome = {"status": "timeout", "error": f"no result after {timeout:g} s"}
    return {**outcome, "worker": _worker_name(), "pid": os.getpid(), "seconds": elapsed(),
            "cpu_seconds": _cpu_seconds() - cpu}


def _cpu_seconds() -> float:
    """CPU time of this process (every thread) and of its finished children (CmdStan's
    executables, PyMC's chain processes): on a loaded machine, what a quiet one's wall time
    would be for single-threaded work."""
    import resource

    own, children = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime + children.ru_utime + children.ru_stime


def _setup_plugin(local: bool):
    """A Dask worker plugin that prepares each worker process (existing and future ones);
    on a ``local`` cluster, what each worker starts also ends with it (``kill -9`` of the
    driver leaves nothing running)."""
    from distributed.diagnostics.plugin import WorkerPlugin

    class PolypplWorkerSetup(WorkerPlugin):
        idempotent = True
        name = "polyppl-worker-setup"

        def __init__(self, local: bool) -> None:
            self.local = local

        def setup(self, worker) -> None:
            prepare_worker_process()
            if self.local:
                end_group_with_this_process()

    return PolypplWorkerSetup(local)


# --------------------------------------------------------------------------- driver


def run_grid(
    tasks: Sequence[GridTask],
    *,
    ledger: Path | None,
    scheduler: str | None = None,
    workers: int | None = None,
    timeout: float | None = None,
    retries: int = DEFAULT_RETRIES,
    progress: Progress | None = None,
    on_result: Callable[[GridTask, dict[str, Any]], None] | None = None,
) -> GridRun:
    """Run the tasks not yet in ``ledger`` (with their ``config``), appending each one's entry
    as it finishes; every task's entry, old and new.

    ``scheduler``: None for a local cluster of ``workers`` processes (default: one per
    core), an address ``tcp://HOST:PORT`` of a running Dask scheduler, or
    :data:`IN_PROCESS`. ``timeout``: seconds per task (None: no limit; not enforced
    in-process). ``retries``: runs of a task after its worker died, before it is recorded as
    crashed (on an existing cluster its scheduler's ``allowed-failures`` decides). With
    ``ledger=None`` nothing is written or reused (the caller keeps its own record through
    ``on_result``, called for each finished task in the driver)."""
    keys = [t.key.text() for t in tasks]
    if len(set(keys)) != len(keys):
        raise ValueError("two tasks of a grid have the same key")
    if workers is not None and workers < 1:
        raise UserError(f"workers must be at least 1, got {workers}")
    if retries < 0:
        raise UserError(f"retries must be at least 0, got {retries}")
    if scheduler not in (None, IN_PROCESS):
        scheduler = check_scheduler_address(scheduler)
    with contextlib.ExitStack() as held:
        if ledger is not None:  # another run on this ledger: take turns, then reuse what it finished
            held.enter_context(folder_lock(ledger.parent, ledger.name, waiting=progress or (lambda line: None)))
        return _run_grid(tasks, ledger, scheduler, workers, timeout, retries, progress, on_result)


def _run_grid(tasks: Sequence[GridTask], ledger: Path | None, scheduler: str | None, workers: int | None,
              timeout: float | None, retries: int, progress: Progress | None,
              on_result: Callable[[GridTask, dict[str, Any]], None] | None) -> GridRun:
    done = read_ledger(ledger) if ledger is not None else Ledger({})
    if done.unreadable and progress is not None:
        progress(f"{done.unreadable} ledger line{'s' if done.unreadable != 1 else ''} unreadable "
                 "(cut short, run together or changed on disk): re-run")
    entries = {t.key: done.entries[t.key.text(), t.config] for t in tasks if (t.key.text(), t.config) in done.entries}
    todo = [t for t in tasks if t.key not in entries]
    stale = stale_tasks(done, todo)
    if stale and progress is not None:
        progress(f"{stale} task{'s' if stale != 1 else ''} in the ledger for other settings or an older layout of "
                 "its results (a study's LEDGER_FORMAT): not reused, run again")

    def record(task: GridTask, outcome: dict[str, Any]) -> None:
        outcome = dict(outcome)
        status = outcome.pop("status", "ok")
        meta = {name: outcome.pop(name, None) for name in ("worker", "pid", "seconds", "cpu_seconds", "error", "traceback")}
        entry = _clean({"key": task.key.as_dict(), "config": task.config, "status": status, **meta, "result": outcome})
        if ledger is not None:
            append_line(ledger, entry)
        entries[task.key] = entry
        if on_result is not None:
            on_result(task, entry)

    tracker = _Tracker(len(todo), progress)
    with stopwatch() as elapsed:
        lost: tuple[str, ...] = ()
        if not todo:
            count, where = 0, "nothing to run"
        elif scheduler == IN_PROCESS:
            count, where = 1, "in this process"
            for task in todo:
                outcome = run_task(task.function, task.argument, None)
                record(task, outcome)
                tracker.finished(task, outcome.get("status", "ok"))
        else:
            count, where, lost = _run_on_dask(todo, scheduler, workers, timeout, retries, record, tracker)
    return GridRun(entries, reused=len(tasks) - len(todo), ran=len(todo), wall_seconds=elapsed(), workers=count,
                   where=where, unreadable_lines=done.unreadable, workers_lost=lost)


#: Address schemes of a Dask scheduler that polyppl connects to.
SCHEDULER_SCHEMES = ("tcp", "tls")


def check_scheduler_address(address: str) -> str:
    """``address`` as ``SCHEME://HOST:PORT`` (``HOST:PORT`` means tcp), or a UserError that
    says what is expected, before any connection is tried."""
    expected = (f"expected tcp://HOST:PORT (the address `dask scheduler` prints) or {IN_PROCESS!r}")
    scheme, sep, rest = address.strip().partition("://")
    if not sep:
        scheme, rest = "tcp", address.strip()
    host, colon, port = rest.rpartition(":")
    if scheme not in SCHEDULER_SCHEMES or not colon or not host or "/" in rest or not port.isdigit() \
            or not 0 < int(port) < 65536:
        raise UserError(f"--scheduler {address!r} is not a Dask scheduler address; {expected}")
    return f"{scheme}://{host}:{port}"


def _reachable(address: str, seconds: float = 5.0) -> None:
    """A UserError at once when nothing listens at ``address`` (Dask would retry for 30 s and
    then say only that it timed out)."""
    import socket

    host, _, port = address.partition("://")[2].rpartition(":")
    try:
        socket.create_connection((host.strip("[]"), int(port)), timeout=seconds).close()
    except ConnectionRefusedError:
        raise UserError(f"cannot reach the Dask scheduler at {address}: connection refused (nothing listens there; "
                        "start one with `uv run dask scheduler`)") from None
    except socket.gaierror as exc:
        raise UserError(f"cannot reach the Dask scheduler at {address}: unknown host ({exc.strerror})") from None
    except OSError as exc:
        raise UserError(f"cannot reach the Dask scheduler at {address}: "
                        f"{exc.strerror or type(exc).__name__} (no answer within {seconds:g} s)") from None


def default_workers() -> int:
    """One worker per core this process may use."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:
        return os.cpu_count() or 1


def _run_on_dask(todo: Sequence[GridTask], scheduler: str | None, workers: int | None, timeout: float | None,
                 retries: int, record: Callable[[GridTask, dict[str, Any]], None],
                 tracker: _Tracker) -> tuple[int, str, tuple[str, ...]]:
    import dask
    from distributed import Client, KilledWorker, LocalCluster, as_completed

    settings = {
        # Workers start their own processes (PyMC's chains, httpstan's pool): not daemons.
        "distributed.worker.daemon": False,
        # JAX does not survive fork.
        "distributed.worker.multiprocessing-method": "spawn",
        "distributed.scheduler.allowed-failures": retries,
    }
    # Closed in reverse order on every way out: the watch, the client, the cluster, and then
    # every process the local cluster left behind.
    with contextlib.ExitStack() as stack, dask.config.set(settings):
        if scheduler is None:
            stack.enter_context(adopting_descendants())
            count = workers or default_workers()
            with _interrupts_ignored_by_children():
                cluster = LocalCluster(n_workers=count, threads_per_worker=1, processes=True, dashboard_address=None,
                                       silence_logs=logging.ERROR)
            stack.callback(cluster.close)
            client = Client(cluster)
            where = f"a local Dask cluster of {count} worker process" + ("es" if count != 1 else "")
        else:
            if workers is not None:
                raise UserError("--workers applies to the local cluster; an existing cluster has the workers it has")
            _reachable(scheduler)
            try:
                client = Client(scheduler, timeout=30)
            except OSError as exc:
                raise UserError(f"cannot reach the Dask scheduler at {scheduler}: {exc}") from None
            count = len(client.scheduler_info().get("workers", {}))
            where = f"the Dask cluster at {scheduler} ({count} workers when the grid started)"
        stack.callback(client.close)
        client.register_plugin(_setup_plugin(local=scheduler is None))
        watch = _WorkerWatch(client, tracker)
        stack.callback(watch.stop)

        def submit(tasks: Sequence[GridTask], attempt: str) -> dict[Any, GridTask]:
            return {client.submit(run_task, task.function, task.argument, timeout, pure=False,
                                  key=f"polyppl-{content_hash([task.key.text(), task.function, attempt])[:20]}"): task
                    for task in tasks}

        def finish(futures: dict[Any, GridTask], alone: bool) -> list[GridTask]:
            """Record each task as it finishes; the suspects of a worker's death, when not alone."""
            suspects = []
            for future in as_completed(futures):
                task = futures.pop(future)
                try:
                    outcome = future.result()
                except KilledWorker as exc:
                    if not alone:
                        suspects.append(task)
                        continue
                    outcome = {"status": "crashed", "error": f"{exc} (run alone)"}
                except Exception as exc:  # e.g. the function cannot be imported on that worker
                    outcome = {"status": "error", "error": f"{type(exc).__name__}: {exc}"}
                record(task, outcome)
                tracker.finished(task, outcome.get("status", "ok"))
                if outcome.get("status") == "timeout":
                    # The fit's thread cannot be stopped: restart its worker (the nanny starts a new one).
                    watch.expect_gone(outcome["worker"])
                    client.restart_workers([outcome["worker"]], raise_for_error=False)
            return suspects

        for suspect in finish(submit(todo, "grid"), alone=False):
            finish(submit([suspect], "alone"), alone=True)
        watch.stop()
        return count, where, tuple(watch.lost)


class _WorkerWatch:
    """Notices a worker that leaves the cluster while the grid runs (killed, out of memory,
    a segfault; not one restarted on purpose) and says so in the progress."""

    EVERY_SECONDS = 1.0

    def __init__(self, client, tracker: _Tracker) -> None:
        self.client, self.tracker = client, tracker
        self.lost: list[str] = []
        self.expected: set[str] = set()
        self.known = self._workers() or set()
        self.done = threading.Event()
        self.thread = threading.Thread(target=self._run, name="polyppl-worker-watch", daemon=True)
        self.thread.start()

    def _workers(self) -> set[str] | None:
        try:
            return set(self.client.scheduler_info().get("workers", {}))
        except Exception:  # the client is closing: nothing more to watch
            return None

    def expect_gone(self, address: str) -> None:
        self.expected.add(address)

    def _run(self) -> None:
        while not self.done.wait(self.EVERY_SECONDS):
            now = self._workers()
            if now is None or self.done.is_set():
                return
            for address in sorted(self.known - now - self.expected):
                self.lost.append(address)
                self.tracker.worker_lost(address)
            self.known = now

    def stop(self) -> None:
        self.done.set()
        if self.thread is not threading.current_thread():
            self.thread.join(timeout=5)


@contextlib.contextmanager
def _interrupts_ignored_by_children():
    """Start the local cluster's worker processes with SIGINT ignored (a disposition they
    keep through spawn): Ctrl-C reaches the whole process group, and the driver alone should
    answer it, closing the cluster, rather than every worker printing its traceback."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = signal.signal(signal.SIGINT, signal.SIG_IGN)
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, previous)


class _Tracker:
    """Progress lines: at most one every 10 s, and the last; a lost worker at once."""

    EVERY_SECONDS = 10.0

    def __init__(self, total: int, progress: Progress | None) -> None:
        self.total, self.progress = total, progress
        self.counts: dict[str, int] = {}
        self.start = self.last = time.monotonic()

    def worker_lost(self, address: str) -> None:
        if self.progress is not None:
            self.progress(f"worker {address} lost mid-grid (killed, out of memory or crashed); "
                          "the tasks it held run again on other workers")

    def finished(self, task: GridTask, status: str) -> None:
        self.counts[status] = self.counts.get(status, 0) + 1
        done = sum(self.counts.values())
        now = time.monotonic()
        if self.progress is None or (now - self.last < self.EVERY_SECONDS and done < self.total):
            return
        self.last = now
        rate = done / max(now - self.start, 1e-9) * 60
        left = (self.total - done) / rate if rate > 0 else float("inf")
        statuses = ", ".join(f"{n} {s}" for s, n in sorted(self.counts.items()))
        self.progress(f"{done}/{self.total} finished ({statuses}); {rate:.1f} per minute"
                      + (f", about {left:.0f} min left" if done < self.total else ""))

