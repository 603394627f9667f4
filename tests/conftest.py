import json
import warnings
from pathlib import Path

import pytest

import flakiness_budget
from polyppl.backends.stan import cmdstan_path
from polyppl.execution.child import use_forkserver

warnings.filterwarnings("ignore", message=".*pkg_resources.*")

# PyMC's chain processes and httpstan's pool start from a fork server, never by forking
# this process once JAX runs in it (pytest.ini turns JAX's fork warning into a failure).
use_forkserver()

REPO = Path(__file__).resolve().parents[1]
HAVE_CMDSTAN = cmdstan_path() is not None


def write_program(tmp_path: Path, program: str, data: dict) -> tuple[Path, Path]:
    """A Stan program and its data as files (``p.stan``, ``d.json``) in ``tmp_path``, as a
    user would give them to ``polyppl.stan_program``."""
    (tmp_path / "p.stan").write_text(program)
    (tmp_path / "d.json").write_text(json.dumps(data))
    return tmp_path / "p.stan", tmp_path / "d.json"


#: Every way Stan runs: each Stan test runs on both engines. The cmdstanpy cases need a
#: CmdStan install (CI builds one); elsewhere they are skipped, marked ``cmdstan``.
STAN_ENGINES = [
    pytest.param("pystan", id="pystan"),
    pytest.param("cmdstanpy", id="cmdstanpy", marks=[
        pytest.mark.cmdstan,
        pytest.mark.skipif(not HAVE_CMDSTAN, reason="no CmdStan install found (set CMDSTAN)"),
    ]),
]
#: Columns for tests that run every backend and both Stan engines.
COLUMNS = [
    pytest.param(("pymc", None), id="pymc"),
    pytest.param(("numpyro", None), id="numpyro"),
    *[pytest.param(("stan", p.values[0]), id=f"stan-{p.id}", marks=p.marks) for p in STAN_ENGINES],
]


def stan_engines_of_a_repeat(pystan_in_default_run: bool) -> list:
    """:data:`STAN_ENGINES` for one case of a test repeated over models or families. Both
    engines compile the same program text, so what a second engine adds is its own path (data
    in; draws, names and gradients out), which one case per test exercises: where CmdStan is
    installed, PyStan runs the other cases under ``-m slow`` only (a first PyStan build of a
    program takes about a minute); without CmdStan, PyStan is the Stan engine and runs them all."""
    pystan, cmdstanpy = STAN_ENGINES
    if pystan_in_default_run or not HAVE_CMDSTAN:
        return [pystan, cmdstanpy]
    return [pytest.param("pystan", id="pystan", marks=[pytest.mark.slow]), cmdstanpy]


def columns_of_a_repeat(pystan_in_default_run: bool) -> list:
    """:data:`COLUMNS`, with PyStan as in :func:`stan_engines_of_a_repeat`."""
    return [*COLUMNS[:2], *[pytest.param(("stan", p.values[0]), id=f"stan-{p.id}", marks=p.marks)
                            for p in stan_engines_of_a_repeat(pystan_in_default_run)]]


@pytest.fixture
def repo():
    return REPO


@pytest.fixture(autouse=True)
def no_fork_after_jax(recwarn):
    """Fail a test in which this process forked while JAX's threads ran (JAX warns, and such
    a fork can deadlock): every process is started by the fork server or as a new program."""
    yield
    forks = [str(w.message) for w in recwarn if "os.fork() was called" in str(w.message)]
    assert not forks, forks[0]


# --------------------------------------------------------------------------- flakiness budget


def pytest_configure(config):
    for line in flakiness_budget.MARKERS.values():
        config.addinivalue_line("markers", line)


def pytest_collection_modifyitems(config, items):
    # The declared rates travel with each report as user properties, so that under xdist the
    # controller, which prints the summary, sees the cases its workers ran.
    for item in items:
        declared = flakiness_budget.declaration(item)
        if declared.false_alarm is not None or declared.miss is not None:
            item.user_properties.append(("flakiness", (declared.false_alarm, declared.miss)))


def pytest_runtest_logreport(report):
    if report.when != "call" or report.outcome == "skipped":
        return
    for key, value in report.user_properties:
        if key == "flakiness":
            _RAN.append(flakiness_budget.Declaration(report.nodeid, *value))
        elif key == "selftest":
            _SELFTEST.append(value)


#: The declarations of the statistical cases that ran (on xdist's controller: its workers' too).
_RAN: list[flakiness_budget.Declaration] = []
#: What `polyppl selftest --quick` printed in tests/test_selftest.py (each rate with its interval):
#: CI's log shows it at the end, under xdist too.
_SELFTEST: list[str] = []


def pytest_terminal_summary(terminalreporter, exitstatus, config):
    """The budget of the statistical cases this run ran (the whole suite's:
    ``uv run python scripts/flakiness_budget.py``)."""
    for text in _SELFTEST:
        terminalreporter.section("polyppl selftest --quick")
        for line in text.splitlines():
            terminalreporter.write_line(line)
    if _RAN:
        terminalreporter.section("flakiness budget")
        for line in flakiness_budget.budget_lines(_RAN, "the cases this run ran", detail=5):
            terminalreporter.write_line(line)
