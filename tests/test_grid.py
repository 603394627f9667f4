"""The grid of fits (polyppl.execution.grid): ledger, resuming, failures, Dask workers.

Real processes, real Dask local clusters, no mocks. Task functions live in
tests/grid_tasks.py; the last test runs real SBC fits of Stan (CmdStan, or PyStan where no
CmdStan is installed). Measured on the shared 2-core machine (load 6-8): 8 s for the fast
tests; the Dask tests 25-30 s each for the two local-cluster tests, 65 s for the cluster
started with the dask CLI, 76 s for the worker-kill SBC test (2026-11-27, machine loaded by
a benchmark: 17, 8, 8 and 19 s). All run by default: they guard the grid's promises.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path

import pytest

from polyppl.execution.grid import IN_PROCESS, FitKey, GridTask, append_line, read_ledger, run_grid

TESTS = Path(__file__).resolve().parent


def _tasks(count: int, function: str = "grid_tasks:echo", config: str = "c1", sleep: float = 0.0) -> list[GridTask]:
    return [GridTask(FitKey("toy", "none", "nuts", i, 1), function, {"value": i, "sleep": sleep}, config)
            for i in range(count)]


@pytest.fixture(autouse=True)
def _tests_importable(monkeypatch):
    monkeypatch.syspath_prepend(str(TESTS))


def test_ledger_skips_a_line_cut_short_and_closes_it(tmp_path):
    ledger = tmp_path / "ledger.jsonl"
    entry = {"key": FitKey("m", "b", "nuts", 0, 1).as_dict(), "config": "c", "status": "ok", "result": {"x": 1}}
    append_line(ledger, entry)
    with ledger.open("a") as handle:  # what a driver killed in the middle of a write leaves
        handle.write('{"key": {"model": "m", "backend": "b", "met')
    append_line(ledger, {**entry, "key": FitKey("m", "b", "nuts", 1, 1).as_dict()})
    lines = ledger.read_text().splitlines()
    assert len(lines) == 3 and json.loads(lines[2])["key"]["simulation"] == 1
    read = read_ledger(ledger)
    assert sorted(key for key, _ in read.entries) == ["m|b|nuts|0|1", "m|b|nuts|1|1"] and read.unreadable == 1


def test_in_process_grid_resumes_and_reruns_a_changed_config(tmp_path):
    ledger = tmp_path / "ledger.jsonl"
    first = run_grid(_tasks(3), ledger=ledger, scheduler=IN_PROCESS)
    assert (first.ran, first.reused) == (3, 0)
    assert [first.entries[t.key]["result"]["value"] for t in _tasks(3)] == [0, 1, 2]
    again = run_grid(_tasks(5), ledger=ledger, scheduler=IN_PROCESS)
    assert (again.ran, again.reused) == (2, 3)
    lines: list[str] = []
    changed = run_grid(_tasks(5, config="c2"), ledger=ledger, scheduler=IN_PROCESS, progress=lines.append)
    assert (changed.ran, changed.reused) == (5, 0)
    assert len(ledger.read_text().splitlines()) == 10
    # Entries of another config (other settings, or an older layout of a study's results: its
    # LEDGER_FORMAT is in the config) are never read as today's, and the progress says so.
    assert lines[0] == ("5 tasks in the ledger for other settings or an older layout of its results (a study's "
                        "LEDGER_FORMAT): not reused, run again")


def test_a_failing_task_is_recorded_in_process(tmp_path):
    run = run_grid(_tasks(2, "grid_tasks:fail"), ledger=tmp_path / "l.jsonl", scheduler=IN_PROCESS)
    for entry in run.entries.values():
        assert entry["status"] == "error"
        assert "ValueError: deliberate failure" in entry["error"] and "Traceback" in entry["traceback"]


def test_killed_driver_loses_no_finished_task(tmp_path):
    """A driver killed mid-grid (SIGKILL, no clean-up) leaves every finished task in the
    ledger; the next run runs only the others."""
    ledger = tmp_path / "ledger.jsonl"
    script = textwrap.dedent(f"""
        import sys
        sys.path.insert(0, {str(TESTS)!r})
        from pathlib import Path
        from polyppl.execution.grid import FitKey, GridTask, run_grid
        tasks = [GridTask(FitKey("toy", "none", "nuts", i, 1), "grid_tasks:echo", {{"value": i, "sleep": 0.4}}, "c1")
                 for i in range(40)]
        run_grid(tasks, ledger=Path({str(ledger)!r}), scheduler="in-process")
    """)
    driver = subprocess.Popen([sys.executable, "-c", script])
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and (not ledger.exists() or len(ledger.read_text().splitlines()) < 4):
        time.sleep(0.1)
    os.kill(driver.pid, signal.SIGKILL)
    driver.wait()
    finished = len(read_ledger(ledger).entries)
    assert 4 <= finished < 40
    resumed = run_grid(_tasks(40, sleep=0.0), ledger=ledger, scheduler=IN_PROCESS)
    assert (resumed.reused, resumed.ran) == (finished, 40 - finished)
    assert sorted(e["result"]["value"] for e in resumed.entries.values()) == list(range(40))


def test_ctrl_c_stops_a_dask_grid_quietly_and_keeps_what_finished(tmp_path):
    """Ctrl-C in a terminal signals the whole process group: the driver stops the grid and
    closes its local cluster, and the workers (started with SIGINT ignored) print nothing;
    every finished task stays in the ledger."""
    ledger = tmp_path / "ledger.jsonl"
    script = textwrap.dedent(f"""
        import signal
        import sys
        signal.signal(signal.SIGINT, signal.default_int_handler)  # as in a terminal (a test runner may ignore it)
        sys.path.insert(0, {str(TESTS)!r})
        from pathlib import Path
        from polyppl.execution.grid import FitKey, GridTask, run_grid
        tasks = [GridTask(FitKey("toy", "none", "nuts", i, 1), "grid_tasks:echo", {{"value": i, "sleep": 0.5}}, "c1")
                 for i in range(200)]
        try:
            run_grid(tasks, ledger=Path({str(ledger)!r}), workers=2)
        except KeyboardInterrupt:
            print("interrupted", file=sys.stderr)
            sys.exit(130)
    """)
    driver = subprocess.Popen([sys.executable, "-c", script], stderr=subprocess.PIPE, text=True,
                              start_new_session=True)  # its own process group, as a terminal's job
    deadline = time.monotonic() + 180
    while time.monotonic() < deadline and (not ledger.exists() or len(ledger.read_text().splitlines()) < 3):
        time.sleep(0.1)
    os.killpg(driver.pid, signal.SIGINT)
    _, err = driver.communicate(timeout=120)
    assert driver.returncode == 130 and "interrupted" in err
    assert "Traceback" not in err, err
    assert 3 <= len(read_ledger(ledger).entries) < 200


def test_dask_records_errors_timeouts_and_crashes(tmp_path):
    """On a local cluster of two workers: a task that raises is an error, one that runs past
    the timeout is a timeout (and its worker is restarted), one whose worker dies every time
    is run again ``retries`` times and then recorded as crashed; the rest finish."""
    tasks = [
        *_tasks(4, sleep=0.2),
        GridTask(FitKey("toy", "none", "nuts", "fail", 1), "grid_tasks:fail", {"value": "x"}, "c1"),
        GridTask(FitKey("toy", "none", "nuts", "hang", 1), "grid_tasks:hang", {"sleep": 120}, "c1"),
        GridTask(FitKey("toy", "none", "nuts", "die", 1), "grid_tasks:die", {}, "c1"),
    ]
    notes: list[str] = []
    run = run_grid(tasks, ledger=tmp_path / "ledger.jsonl", workers=2, timeout=8, retries=1, progress=notes.append)
    status = {t.key.simulation: run.entries[t.key]["status"] for t in tasks}
    # Each death of the "die" task's worker is reported as it happens and in the summary; the
    # worker restarted on purpose after the timeout is not. The task kills its worker once per
    # try: twice (retries=1) on the grid, and up to twice more when it is run again alone as a
    # suspect; how many of those deaths the scheduler sees depends on timing.
    lost = sum("lost mid-grid" in n for n in notes)
    assert 1 <= len(run.workers_lost) <= 4 and lost == len(run.workers_lost), notes
    assert status == {0: "ok", 1: "ok", 2: "ok", 3: "ok", "fail": "error", "hang": "timeout", "die": "crashed"}
    assert "2 different workers" in run.entries[tasks[-1].key]["error"]  # retries=1: two attempts
    assert len(read_ledger(tmp_path / "ledger.jsonl").entries) == len(tasks)


def test_tasks_waiting_behind_a_dying_one_are_not_recorded_as_crashed(tmp_path):
    """Dask charges a worker's death to every task the worker held: on one worker, the tasks
    queued behind one that kills it are charged too. Run again alone, they finish; only the
    task that kills its worker there as well is recorded as crashed."""
    tasks = [GridTask(FitKey("toy", "none", "nuts", "die", 1), "grid_tasks:die", {}, "c1"), *_tasks(3, sleep=0.0)]
    run = run_grid(tasks, ledger=tmp_path / "ledger.jsonl", workers=1, retries=0)
    status = {t.key.simulation: run.entries[t.key]["status"] for t in tasks}
    assert status == {"die": "crashed", 0: "ok", 1: "ok", 2: "ok"}
    assert "run alone" in run.entries[tasks[0].key]["error"]
    assert sorted(e["result"]["value"] for e in run.entries.values() if e["status"] == "ok") == [0, 1, 2]


def test_dask_workers_are_fit_for_fits(tmp_path):
    """Each worker may start processes (not a daemon), uses forkserver, not fork, for them
    (JAX is loaded), and has a PyTensor cache directory of its own."""
    tasks = [GridTask(FitKey("toy", "none", "nuts", i, 1), "grid_tasks:hazards", {}, "c1") for i in range(4)]
    run = run_grid(tasks, ledger=None, workers=2)
    assert all(e["status"] == "ok" for e in run.entries.values()), [e.get("error") for e in run.entries.values()]
    results = [{**e["result"], "pid": e["pid"]} for e in run.entries.values()]
    for result in results:
        assert result["daemon"] is False and result["start_method"] == "forkserver"
        assert result["child_exit_code"] == 0 and result["pool_result"] == 49
        assert "base_compiledir=" in result["pytensor_flags"] and not result["pytensor_imported"]
    directories = {r["pid"]: r["pytensor_flags"].rsplit("base_compiledir=", 1)[1] for r in results}
    assert len(set(directories.values())) == len(directories) == 2


def test_worker_killed_mid_sbc_loses_nothing_and_changes_no_rank(tmp_path):
    """SBC of eight schools on Stan, 8 simulations, on two workers; one worker is killed
    (SIGKILL) as the first fit finishes. Its fit runs again on a worker the nanny restarts:
    every simulation finishes once, and every rank equals the run in this process."""
    from polyppl.inference.methods import SamplerSettings
    from polyppl.studies.sbc import run_sbc

    settings = SamplerSettings(chains=2, draws=100, tune=200)
    reference = run_sbc("eight-schools", ["stan"], simulations=8, seed=11, settings=settings, out=tmp_path / "here",
                        scheduler=IN_PROCESS)
    killed: list[int] = []
    ledger = tmp_path / "dask" / "eight-schools-classic-sbc-ledger.jsonl"

    def kill_once() -> None:
        # The worker that finished first takes the next fit at once: kill it mid-fit.
        deadline = time.monotonic() + 600
        while time.monotonic() < deadline and not (ledger.exists() and ledger.read_text().strip()):
            time.sleep(0.05)
        pid = json.loads(ledger.read_text().splitlines()[0])["pid"]
        os.kill(pid, signal.SIGKILL)
        killed.append(pid)

    killer = threading.Thread(target=kill_once, daemon=True)
    killer.start()
    distributed = run_sbc("eight-schools", ["stan"], simulations=8, seed=11, settings=settings,
                          out=tmp_path / "dask", workers=2)
    killer.join(timeout=5)
    assert killed
    column = distributed.columns["stan"]
    assert column.counts["ok"] == 8 and column.counts["crashed"] == 0
    assert len(read_ledger(distributed.ledger).entries) == 8
    assert distributed.L == reference.L
    assert column.ranks == reference.columns["stan"].ranks


def test_existing_cluster_started_with_the_dask_cli(tmp_path):
    """``dask scheduler`` and ``dask worker ADDRESS`` (daemonic workers, Dask's default), then a
    grid given the scheduler's address: the workers are prepared as the local cluster's are."""
    dask = Path(sys.executable).parent / "dask"
    scheduler_file = tmp_path / "scheduler.json"
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(TESTS), os.environ.get("PYTHONPATH", "")])}
    scheduler = subprocess.Popen([str(dask), "scheduler", "--scheduler-file", str(scheduler_file), "--port", "0",
                                  "--dashboard-address", ":0", "--no-show"], env=env, stderr=subprocess.DEVNULL)
    worker = None
    try:
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline and not scheduler_file.exists():
            time.sleep(0.2)
        address = json.loads(scheduler_file.read_text())["address"]
        worker = subprocess.Popen([str(dask), "worker", address, "--nthreads", "1", "--nworkers", "1"], env=env,
                                  stderr=subprocess.DEVNULL)
        tasks = [GridTask(FitKey("toy", "none", "nuts", i, 1), "grid_tasks:hazards", {}, "c1") for i in range(2)]
        run = run_grid(tasks, ledger=tmp_path / "ledger.jsonl", scheduler=address)
        assert run.where.startswith(f"the Dask cluster at {address}")
        for entry in run.entries.values():
            assert entry["status"] == "ok", entry.get("error")
            assert entry["result"]["daemon"] is False and entry["result"]["child_exit_code"] == 0
            assert entry["result"]["pool_result"] == 49 and entry["result"]["start_method"] == "forkserver"
    finally:
        for process in (worker, scheduler):
            if process is not None:
                process.terminate()
                process.wait(timeout=60)
