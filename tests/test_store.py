"""The results folder as a store, and the processes of a run (issue 26): nothing lost,
nothing mixed, nothing left running.

Each test replays a fault a user's machine meets: two runs on one ``--out``, a draws file
cut short, a ledger with damaged lines, ``kill -9`` or SIGTERM of the driver, a crash of
polyppl itself, a model file that exits, a wrong scheduler address. Processes left behind
are found in the process table: the test process makes itself a child subreaper, so that
any process orphaned by a run becomes its child instead of PID 1's.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import textwrap
import time
from pathlib import Path

import pytest

from polyppl.execution import reaper
from polyppl.execution.grid import IN_PROCESS, FitKey, GridTask, append_line, ledger_line, read_ledger, run_grid
from polyppl.inference.idata import atomic_write

TESTS = Path(__file__).resolve().parent
SMALL = ["--chains", "2", "--draws", "100", "--tune", "100"]


def polyppl(*args: str, cwd: Path, timeout: float = 600) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "polyppl.cli", *args], capture_output=True, text=True, cwd=cwd,
                          timeout=timeout)


@pytest.fixture
def orphans():
    """The processes started during the test that are still running at its end, found by
    adopting every orphan (``PR_SET_CHILD_SUBREAPER``); ended afterwards whatever happens."""
    before = reaper.children()
    reaper._prctl(reaper._PR_SET_CHILD_SUBREAPER, 1)

    def left(settle: float = 10.0) -> list[str]:
        deadline = time.monotonic() + settle
        while True:
            for pid in reaper.children() - before:  # collect the exited ones
                try:
                    os.waitpid(pid, os.WNOHANG)
                except ChildProcessError:
                    pass
            running = reaper.children() - before
            if not running or time.monotonic() > deadline:
                return [_cmdline(pid) for pid in sorted(running)]
            time.sleep(0.2)

    try:
        yield left
    finally:
        reaper.end_children(keep=before, grace=0.5)
        reaper._prctl(reaper._PR_SET_CHILD_SUBREAPER, 0)


def _cmdline(pid: int) -> str:
    try:
        return f"{pid}: " + Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode()[:200]
    except OSError:
        return f"{pid}: (gone)"


def _descendants(pid: int) -> set[int]:
    found, frontier = set(), {pid}
    while frontier:
        frontier = set().union(*(reaper.children(p) for p in frontier)) - found
        found |= frontier
    return found


# --------------------------------------------------------------------------- files


@pytest.mark.parametrize("umask", [0o022, 0o002, 0o077])
def test_result_files_get_the_mode_the_umask_gives(tmp_path, umask):
    previous = os.umask(umask)
    try:
        atomic_write(tmp_path / "r.json", lambda tmp: tmp.write_text("{}"))
    finally:
        os.umask(previous)
    assert (tmp_path / "r.json").stat().st_mode & 0o777 == 0o666 & ~umask
    assert [p.name for p in tmp_path.iterdir()] == ["r.json"]  # no temporary file left


# --------------------------------------------------------------------------- ledger


def _tasks(count: int) -> list[GridTask]:
    return [GridTask(FitKey("toy", "none", "nuts", i, 1), "grid_tasks:echo", {"value": i}, "c1") for i in range(count)]


def test_damaged_ledger_lines_are_rerun_and_counted(tmp_path, monkeypatch):
    """A line cut short, two lines run together by a cut (which parses as one valid JSON
    object: the first task's key with the second's result), a zeroed block and a byte that
    is not UTF-8: each is unreadable, counted, and its task runs again; nothing else does."""
    monkeypatch.syspath_prepend(str(TESTS))
    ledger = tmp_path / "ledger.jsonl"
    first = run_grid(_tasks(6), ledger=ledger, scheduler=IN_PROCESS)
    assert first.ran == 6
    lines = ledger.read_bytes().splitlines(keepends=True)
    a, b = lines[1], lines[2]
    merged = a[:a.index(b'"result"')] + b[b.index(b'"result"'):]  # task 1's key, task 2's result
    assert json.loads(merged)["key"]["simulation"] == 1 and json.loads(merged)["result"]["value"] == 2
    damaged = [lines[0][:40] + b"\n", merged, b"\0" * (len(lines[3]) - 1) + b"\n", lines[4].replace(b'"toy"', b'"t\xffy"'), lines[5]]
    ledger.write_bytes(b"".join(damaged))
    read = read_ledger(ledger)
    assert read.unreadable == 4 and sorted(read.entries) == [("toy|none|nuts|5|1", "c1")]
    notes: list[str] = []
    again = run_grid(_tasks(6), ledger=ledger, scheduler=IN_PROCESS, progress=notes.append)
    assert (again.ran, again.reused, again.unreadable_lines) == (5, 1, 4)
    assert "4 ledger lines unreadable (cut short, run together or changed on disk): re-run" in notes
    assert sorted(e["result"]["value"] for e in again.entries.values()) == list(range(6))
    assert read_ledger(ledger).unreadable == 4  # the damaged lines stay, each only spoils itself


def test_a_ledger_line_carries_the_checksum_of_its_bytes():
    entry = {"key": FitKey("m", "b", "nuts", 0, 1).as_dict(), "config": "c", "status": "ok", "result": {"x": 1.5}}
    line = ledger_line(entry)
    assert line.endswith(b'"}\n') and json.loads(line)["sha256"]
    changed = line.replace(b"1.5", b"2.5")
    assert json.loads(changed)["result"]["x"] == 2.5  # still valid JSON ...
    from polyppl.execution.grid import parse_ledger_line

    assert parse_ledger_line(line[:-1]) == entry and parse_ledger_line(changed[:-1]) is None  # ... but not as written


# --------------------------------------------------------------------------- processes

_GRID_SCRIPT = """
import signal
import sys
sys.path.insert(0, {tests!r})
from pathlib import Path
from polyppl.cli import _terminate
from polyppl.execution.child import use_forkserver
from polyppl.execution.grid import FitKey, GridTask, run_grid

signal.signal(signal.SIGINT, signal.default_int_handler)  # as in a terminal
signal.signal(signal.SIGTERM, _terminate)  # as the CLI does
if __name__ == "__main__":
    use_forkserver()
    tasks = [GridTask(FitKey("toy", "none", "nuts", i, 1), "grid_tasks:keep_a_pool", {{"sleep": {sleep}}}, "c1")
             for i in range({count})]
    try:
        run = run_grid(tasks, ledger=Path({ledger!r}), workers=2)
        print("statuses", sorted(e["status"] for e in run.entries.values()))
    except BaseException as exc:
        print("stopped by", type(exc).__name__)
        sys.exit(1)
"""


@pytest.mark.parametrize("ending", ["normal", "ctrl-c", "sigterm", "kill-9"])
def test_a_local_cluster_leaves_no_process_behind(tmp_path, orphans, ending):
    """Workers whose tasks keep a process pool (as httpstan does) start a fork server, a
    resource tracker and pool processes: none survives the grid, however it ends (the
    driver's own end, Ctrl-C, SIGTERM, or ``kill -9`` of the driver)."""
    ledger = tmp_path / "ledger.jsonl"
    count, sleep = (2, 0.0) if ending == "normal" else (40, 1.0)
    script = textwrap.dedent(_GRID_SCRIPT.format(tests=str(TESTS), sleep=sleep, count=count, ledger=str(ledger)))
    (tmp_path / "grid.py").write_text(script)
    with open(tmp_path / "out.txt", "w") as out:  # a file, not a pipe: a leftover would hold a pipe open
        driver = subprocess.Popen([sys.executable, str(tmp_path / "grid.py")], stdout=out, stderr=subprocess.STDOUT,
                                  start_new_session=True)
        if ending != "normal":
            deadline = time.monotonic() + 300
            while time.monotonic() < deadline and len(read_ledger(ledger).entries) < 2:
                time.sleep(0.2)
            assert len(read_ledger(ledger).entries) >= 2, (tmp_path / "out.txt").read_text()
            pools = [pid for pid in _descendants(driver.pid) if "forkserver" in _cmdline(pid)]
            assert pools, "the tasks should have started a fork server"
            if ending == "ctrl-c":
                os.killpg(driver.pid, signal.SIGINT)
            else:
                os.kill(driver.pid, signal.SIGTERM if ending == "sigterm" else signal.SIGKILL)
        driver.wait(timeout=300)
    output = (tmp_path / "out.txt").read_text()
    expected = {"normal": "statuses ['ok', 'ok']", "ctrl-c": "stopped by KeyboardInterrupt",
                "sigterm": "stopped by Terminated", "kill-9": ""}[ending]
    assert expected in output, output
    assert orphans() == []


def test_kill_9_of_compare_leaves_no_process(tmp_path, orphans, request):
    """``kill -9`` of ``polyppl compare`` while PyMC samples in its child (chains in processes
    of their own): the child and everything it started die with it, and no request file is
    left in the temporary folder."""
    # A short temporary folder of its own: multiprocessing puts AF_UNIX sockets there, whose
    # paths may not exceed 107 bytes (pytest's tmp_path can be longer).
    temp = Path(tempfile.mkdtemp(prefix="pp-", dir="/tmp"))
    request.addfinalizer(lambda: shutil.rmtree(temp, ignore_errors=True))
    with open(tmp_path / "out.txt", "w") as out:
        driver = subprocess.Popen([sys.executable, "-m", "polyppl.cli", "compare", "eight-schools", "--backends", "pymc",
                                   "--chains", "2", "--draws", "200000", "--tune", "500", "--out", str(tmp_path / "out")],
                                  stdout=out, stderr=subprocess.STDOUT, env={**os.environ, "TMPDIR": str(temp)})
        deadline = time.monotonic() + 300
        while time.monotonic() < deadline:  # until the fit's child runs its two chains' processes
            running = _descendants(driver.pid)
            if any("polyppl.execution.worker" in _cmdline(p) for p in running) and len(running) >= 3:
                break
            if driver.poll() is not None:
                pytest.fail("compare ended before its chains ran: " + (tmp_path / "out.txt").read_text())
            time.sleep(0.2)
        else:
            pytest.fail("the fit's chains did not start: " + (tmp_path / "out.txt").read_text())
        os.kill(driver.pid, signal.SIGKILL)
        driver.wait()
    assert orphans() == []
    assert list(temp.glob("polyppl-request-*")) == []


# --------------------------------------------------------------------------- compare's fits


def test_a_damaged_draws_file_is_run_again_and_said_so(tmp_path):
    """A finished fit whose ``.nc`` file was cut short is not reused: the record's checksum
    differs, the progress says so and the fit runs again; ``load_comparison`` (``polyppl
    report``) refuses the damaged file in one line. Temporary files of a dead writer are
    removed; every file has the umask's mode."""
    from polyppl.errors import UserError
    from polyppl.inference.methods import SamplerSettings
    from polyppl.studies.compare import compare, load_comparison

    settings = SamplerSettings(chains=2, draws=100, tune=100)
    first = compare("eight-schools", backends=["numpyro"], settings=settings, out=tmp_path, remedies=["none"])
    netcdf = first.outcomes["numpyro"].netcdf
    assert first.outcomes["numpyro"].record.netcdf_sha256
    for path in tmp_path.iterdir():
        assert path.stat().st_mode & 0o777 == 0o666 & ~_umask(), path
    netcdf.write_bytes(netcdf.read_bytes()[: netcdf.stat().st_size // 2])
    with pytest.raises(UserError, match="does not match the checksum in its record"):
        load_comparison(tmp_path)
    stale = tmp_path / f".{netcdf.name}.{_dead_pid()}-0a1b2c3d.part"
    stale.write_bytes(b"half a file")
    notes: list[str] = []
    again = compare("eight-schools", backends=["numpyro"], settings=settings, out=tmp_path, remedies=["none"],
                    progress=notes.append)
    assert not again.outcomes["numpyro"].reused
    assert any(f"running again: {netcdf.name} does not match the checksum in its record" in n for n in notes), notes
    assert again.verdict == first.verdict and not stale.exists()
    load_comparison(tmp_path)  # readable again


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def _dead_pid() -> int:
    process = subprocess.Popen([sys.executable, "-c", "pass"])
    process.wait()
    return process.pid


_COMPARE_SCRIPT = """
import sys
from polyppl.execution.child import use_forkserver
from polyppl.inference.methods import SamplerSettings
from polyppl.studies.compare import compare

def note(line):
    print(line, file=sys.stderr, flush=True)

if __name__ == "__main__":
    use_forkserver()
    comparison = compare("eight-schools", backends=["numpyro"], settings=SamplerSettings(chains=2, draws={draws}, tune=100),
                         out="out", remedies=["none"], progress=note)
    posterior = comparison.sources["numpyro"]
    print("draws used", {{q.draws.size for q in posterior.values()}}, flush=True)
"""


def test_two_compare_runs_on_one_out_take_turns(tmp_path):
    """Two comparisons with different settings on one ``--out`` at once, then two with the
    same: each finishes (no crash), the second waits for the first, each judges its own
    draws (never the other run's), the files on disk agree with each other, and identical
    runs sample once."""
    def start(draws: int, name: str) -> subprocess.Popen:
        (tmp_path / f"{name}.py").write_text(textwrap.dedent(_COMPARE_SCRIPT.format(draws=draws)))
        return subprocess.Popen([sys.executable, f"{name}.py"], cwd=tmp_path, stdout=open(tmp_path / f"{name}.out", "w"),
                                stderr=open(tmp_path / f"{name}.err", "w"))

    def outputs(names):
        return [(tmp_path / f"{n}.out").read_text() for n in names], [(tmp_path / f"{n}.err").read_text() for n in names]

    runs = {"a": (start(100, "a"), 100), "b": (start(150, "b"), 150)}
    codes = [process.wait(timeout=900) for process, _ in runs.values()]
    out, err = outputs(runs)
    assert codes == [0, 0], err
    for text, (_, draws) in zip(out, runs.values()):
        assert f"draws used {{{2 * draws}}}" in text, (out, err)
    assert any("waiting for another polyppl run" in e for e in err), err
    record = json.loads((tmp_path / "out" / "eight-schools-classic-numpyro-nuts.json").read_text())
    from polyppl.inference.idata import load_netcdf

    draws = load_netcdf(tmp_path / "out" / "eight-schools-classic-numpyro-nuts.nc")["posterior"].sizes["draw"]
    saved = json.loads((tmp_path / "out" / "eight-schools-classic-numpyro-comparison.json").read_text())
    assert draws == record["settings"]["draws"] == saved["settings"]["draws"]

    same = [start(draws, "c"), start(draws, "d")]
    codes = [process.wait(timeout=900) for process in same]
    out, err = outputs(["c", "d"])
    assert codes == [0, 0], err
    assert all("reusing the finished run" in e and "sampling" not in e for e in err), err


def test_a_lock_file_removed_by_a_failing_holder_still_excludes_the_next_two(tmp_path):
    """The first run in a new folder meets bad input and removes the lock file it created
    while a second run waits on it: the second must then hold the lock at the path (not on
    the removed file), so that a third run waits for it instead of running beside it."""
    import fcntl
    import threading

    from polyppl.execution.store import folder_lock

    folder, path = tmp_path / "out", tmp_path / "out" / ".m.lock"
    second_waits, second_holds, release_second = threading.Event(), threading.Event(), threading.Event()

    def second() -> None:
        with folder_lock(folder, "m", waiting=lambda line: second_waits.set()):
            second_holds.set()
            release_second.wait(30)

    waiter = threading.Thread(target=second)
    with pytest.raises(ValueError):
        with folder_lock(folder, "m"):
            waiter.start()
            assert second_waits.wait(30)
            raise ValueError("bad input")
    assert second_holds.wait(30)
    try:
        assert path.exists()
        third = os.open(path, os.O_RDWR)
        try:
            with pytest.raises(BlockingIOError):
                fcntl.flock(third, fcntl.LOCK_EX | fcntl.LOCK_NB)
        finally:
            os.close(third)
    finally:
        release_second.set()
        waiter.join(30)


# --------------------------------------------------------------------------- exit codes


def test_an_internal_error_exits_4_with_one_line_and_a_log(tmp_path, monkeypatch, capsys):
    """A bug is not a verdict: exit code 4 (never 1, "disagree"), one line on stderr naming
    the log file, the traceback in that file. The bug is planted in ``polyppl models``."""
    from polyppl import cli

    def broken(args):
        return {}["missing"]

    monkeypatch.setattr(cli.models, "cmd_models", broken)  # registered when main builds its parser
    monkeypatch.setattr("tempfile.tempdir", str(tmp_path))  # `models` has no --out: the log goes there
    code = cli.main(["models"])
    err = capsys.readouterr().err.strip()
    assert code == cli.INTERNAL_ERROR == 4
    assert len(err.splitlines()) == 1 and err.startswith("polyppl: internal error: KeyError: 'missing'"), err
    log = Path(err.split("traceback in ")[1].split(";")[0])
    assert log.parent == tmp_path and "Traceback" in log.read_text() and "in broken" in log.read_text()


def test_sys_exit_in_a_user_model_file_is_bad_input(tmp_path):
    (tmp_path / "mine.py").write_text("import sys\nsys.exit(0)\n")
    result = polyppl("compare", "mine.py:model", "--out", "out", cwd=tmp_path)
    assert result.returncode == 2, result.stderr
    assert "mine.py: importing it called sys.exit(0)" in result.stderr and "Traceback" not in result.stderr
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("address, words", [
    ("foo", "is not a Dask scheduler address"),
    ("http://127.0.0.1:8786", "is not a Dask scheduler address"),
    ("tcp://127.0.0.1:notaport", "is not a Dask scheduler address"),
    ("tcp://127.0.0.1:{free}", "connection refused"),
])
def test_a_scheduler_address_is_checked_and_a_refusal_reported_at_once(tmp_path, address, words):
    with socket.socket() as probe:  # a port nothing listens on
        probe.bind(("127.0.0.1", 0))
        free = probe.getsockname()[1]
    start = time.monotonic()
    result = polyppl("sbc", "eight-schools", "--backends", "numpyro", "--simulations", "2", *SMALL,
                     "--scheduler", address.format(free=free), "--out", "out", cwd=tmp_path)
    assert result.returncode == 2, result.stderr
    assert words in result.stderr and "Traceback" not in result.stderr, result.stderr
    assert time.monotonic() - start < 30


# --------------------------------------------------------------------------- a plain script

_PLAIN_SCRIPT = """
from polyppl import spec as s, sample, SamplerSettings

mu, sigma = s.Var("mu"), s.Var("sigma")
model = s.Model("hierarchical-poisson", (
    s.Data("exposure", "real", ("site",), lower=0),
    s.Param("mu", s.Normal(0.0, 2.0)),
    s.Param("sigma", s.HalfStudentT(3.0, 1.0)),
    s.Param("z", s.Normal(0.0, 1.0), ("site",)),
    s.Deterministic("rates", s.exp(mu + sigma * s.Var("z")), ("site",)),
    s.Observed("y", s.Poisson(s.Var("exposure") * s.Var("rates")), ("site",)),
))
data = s.Dataset(values={"exposure": [1.0, 2.0, 0.5], "y": [3, 11, 0]}, coords={"site": ("north", "south", "east")})
idata = sample(model, data, "stan", SamplerSettings(chains=2, draws=100, tune=100, seed=1), engine="pystan")
print("draws", dict(idata["posterior"].sizes))
"""


def test_sample_on_pystan_from_a_plain_script_without_a_main_guard(tmp_path):
    """The README's Python example with "stan", in a script with no ``if __name__ ==
    "__main__":``: PyStan's chains run in processes that must not import the script again."""
    (tmp_path / "plain.py").write_text(_PLAIN_SCRIPT)
    result = subprocess.run([sys.executable, "plain.py"], cwd=tmp_path, capture_output=True, text=True, timeout=900)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "draws {'chain': 2, 'draw': 100," in result.stdout, result.stdout


# --------------------------------------------------------------------------- PyStan on lme4


@pytest.mark.slow
def test_sleepstudy_runs_on_pystan(tmp_path):
    """lme4's sleepstudy with correlated random slopes on PyStan at the default settings
    (4 chains x 1000 + 1000): httpstan 4.13 failed every run ("pop from empty list" in its
    progress parser) while polyppl asked for progress messages; without them it samples."""
    result = polyppl("compare", "--formula", "Reaction ~ Days + (Days | Subject)", "--family", "gaussian",
                     "--data", str(TESTS / "data" / "lme4" / "sleepstudy.csv"), "--backends", "stan:pystan",
                     "--out", "out", cwd=tmp_path, timeout=1800)
    record = json.loads((tmp_path / "out" / "formula-sleepstudy-stan-pystan-nuts.json").read_text())
    assert record["status"] == "ok", (record.get("error"), result.stderr[-2000:])


def test_a_change_to_the_fitting_code_is_a_new_version(tmp_path):
    """A result is reused only when the code that fitted it is the same, polyppl's own
    included: an edit to a backend's compiler between two releases (a fix) changes the
    request's versions, so a fit of the old code runs again ("package versions or polyppl's
    fitting code" changed) rather than being reused as a stale answer. Studies, rendering and
    the CLI are not part of it: a report's change re-runs no fit."""
    from polyppl.execution.request import FIT_CODE, code_digest

    root = tmp_path / "polyppl"
    for part in (*FIT_CODE, "render"):
        (root / part / "sub").mkdir(parents=True)
        (root / part / "sub" / "module.py").write_text("x = 1\n")
    before = code_digest(root)
    (root / "render" / "sub" / "module.py").write_text("x = 2\n")
    assert code_digest(root) == before
    (root / "backends" / "sub" / "module.py").write_text("x = 2\n")
    assert code_digest(root) != before
    assert len(before) == 12 and code_digest() == code_digest()
