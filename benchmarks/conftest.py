"""The benchmark suite: out of the default test run (testpaths = tests).

    uv run pytest benchmarks/ --benchmark-only
    uv run pytest benchmarks/ --smoke -k eight-schools      # every code path once, tiny runs

Each benchmark also stores its medians (compile, warm-up, sampling, gradients per draw,
ESS per second) in its ``extra_info``; at the end the suite writes them all, with the
generated-over-hand-written ratios, to ``benchmarks/results/latest.json`` and ``latest.md``
(a partial run, ``-k ...``, replaces only its own rows there; a ``--smoke`` run writes
nothing). No benchmark asserts on time: a loaded machine is slower, not wrong. Every
benchmark that compares hand-written with generated code first asserts its premise
(``harness.check_premise``): that the hand-written model is what runs, and that it defines
the same posterior.

Stan runs on the engine polyppl chooses (cmdstanpy where CmdStan is installed, else
PyStan) unless ``--stan-engine`` names one, or ``both``.
"""

from __future__ import annotations

import datetime
import json
import os
import platform
import sys
import warnings
from pathlib import Path
from typing import Any

import pytest

warnings.filterwarnings("ignore", message=".*pkg_resources.*")
sys.path.insert(0, str(Path(__file__).resolve().parent))

from polyppl.execution.child import use_forkserver  # noqa: E402

# PyMC's chain processes and httpstan's pool start from a fork server, as in polyppl's CLI:
# never by forking this process once JAX runs in it.
use_forkserver()

#: PyMC and httpstan start worker processes; the in-process NumPyro benchmarks go last.
BACKEND_ORDER = {"pymc": 0, "stan": 1, "numpyro": 2}
ROWS: list[dict[str, Any]] = []
STAN_ENGINES = ("auto", "cmdstanpy", "pystan", "both")


def pytest_addoption(parser: pytest.Parser) -> None:
    group = parser.getgroup("polyppl benchmarks")
    group.addoption("--smoke", action="store_true",
                    help="a few draws, one round, tiny data: show that every code path runs (writes no results)")
    group.addoption("--stan-engine", default="auto", choices=STAN_ENGINES,
                    help="Stan's engine: polyppl's choice (auto), cmdstanpy, pystan, or both")


@pytest.hookimpl(tryfirst=True)
def pytest_configure(config: pytest.Config) -> None:
    # The project's addopts ask for two xdist workers (for the tests); benchmarks run one
    # at a time, on a machine nothing else of ours is using, and pytest-benchmark turns
    # itself off under xdist. Undone here, before xdist and pytest-benchmark configure.
    if getattr(config.option, "numprocesses", None):
        config.option.numprocesses, config.option.dist, config.option.tx = 0, "no", []
    config.addinivalue_line("markers", "isolated: each round runs in a fresh process")
    if config.getoption("smoke"):
        # Read by harness.py when it is first imported (after this), and by the fresh
        # processes of isolated_run.py, which inherit it.
        os.environ["POLYPPL_BENCH_SMOKE"] = "1"


def columns(stan_engine: str) -> list[str]:
    """The backends a benchmark runs on, Stan with its engine named (``stan:pystan``)."""
    from polyppl.backends.stan import choose_engine

    engines = {"auto": [choose_engine()], "both": ["cmdstanpy", "pystan"]}.get(stan_engine, [stan_engine])
    return ["pymc", *(f"stan:{e}" for e in engines), "numpyro"]


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    """A benchmark with a ``backend`` argument that it does not parametrize itself runs on
    every column (:func:`columns`)."""
    if "backend" not in metafunc.fixturenames:
        return
    for marker in metafunc.definition.iter_markers("parametrize"):
        names = marker.args[0]
        if "backend" in ([n.strip() for n in names.split(",")] if isinstance(names, str) else names):
            return
    metafunc.parametrize("backend", columns(metafunc.config.getoption("stan_engine")))


@pytest.fixture
def results() -> list[dict[str, Any]]:
    """Append one row per benchmark: its labels and medians."""
    return ROWS


def _param(item: pytest.Item, name: str) -> Any:
    callspec = getattr(item, "callspec", None)
    return callspec.params.get(name) if callspec else None


@pytest.fixture(scope="session", autouse=True)
def stan_programs_compiled(request: pytest.FixtureRequest) -> None:
    """Compile the Stan programs the selected in-process PyStan benchmarks need before any
    is timed, two at a time (a no-op where httpstan has them cached); the generated default
    programs are compiled by the cold-compile benchmarks. (CmdStan's executables are
    compiled by each benchmark's premise check, before it times anything.)"""
    from harness import compile_stan_programs, suite_stan_programs

    pystan = [item for item in request.session.items if _param(item, "backend") == "stan:pystan"]
    models = sorted({_param(item, "model") for item in pystan if item.originalname == "test_sampling"})
    rows = any(item.module.__name__ == "test_rows_vs_counts" for item in pystan)
    if not models and not rows:
        return
    capture = request.config.pluginmanager.getplugin("capturemanager")
    with capture.global_and_fixture_disabled():
        compile_stan_programs(suite_stan_programs(models, rows), progress=lambda line: print(line, flush=True))


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    def key(item: pytest.Item) -> tuple[int, int]:
        in_process = 0 if "isolated" in item.keywords else 1
        backend = str(_param(item, "backend") or "").partition(":")[0]
        return in_process, BACKEND_ORDER.get(backend, -1)

    items.sort(key=key)


def machine() -> dict[str, Any]:
    from importlib.metadata import version

    from polyppl.backends.stan import cmdstan_version

    packages = ("pymc", "pytensor", "numpyro", "jax", "pystan", "httpstan", "cmdstanpy", "arviz", "nutpie")
    return {
        "date": datetime.date.today().isoformat(),
        "cpus": os.cpu_count(),
        "processor": platform.processor() or platform.machine(),
        "python": platform.python_version(),
        "versions": {**{p: version(p) for p in packages}, "cmdstan": cmdstan_version() or "none"},
    }


def fastest_ratio(generated: list[float], handwritten: list[float]) -> float:
    """Generated over hand-written, fastest round over fastest round: other work on the
    machine only ever adds time, so the fastest round is the closest to the code's own cost
    (sub-second phases of identical code spread by 20-30% between rounds here)."""
    return min(generated) / min(handwritten)


def ratio_rows(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Generated over hand-written, per model and backend: sampling time and gradients per
    draw from the sampling benchmarks' alternating pairs of runs; seconds per gradient from
    the gradient benchmarks (Stan: Stan's own clock in the sampling runs)."""
    sampling = {(r["model"], r["backend"], r["implementation"]): r for r in rows if r["kind"] == "sampling"}
    gradient = {(r["model"], r["backend"]): r["ratio"] for r in rows if r["kind"] == "gradient"}
    out = []
    for (model, backend, implementation), generated in sampling.items():
        hand = sampling.get((model, backend, "handwritten"))
        if implementation != "generated" or hand is None or "sampling_s_rounds" not in generated:
            continue  # rows of a suite older than the paired runs
        stan_clock = "stan_clock_seconds_per_gradient_rounds"
        out.append({
            "model": model,
            "backend": backend,
            "sampling_ratio": fastest_ratio(generated["sampling_s_rounds"], hand["sampling_s_rounds"]),
            "sampling_ratios": [g / h for g, h in zip(generated["sampling_s_rounds"], hand["sampling_s_rounds"])],
            "gradients_per_draw": (generated["gradients_per_draw"], hand["gradients_per_draw"]),
            "gradient_ratio": gradient.get((model, backend)) or (
                fastest_ratio(generated[stan_clock], hand[stan_clock]) if stan_clock in generated and stan_clock in hand else None),
        })
    return out


def _number(value: Any, digits: int) -> str:
    return "" if value is None else f"{value:.{digits}f}"


def markdown(rows: list[dict[str, Any]], ratios: list[dict[str, Any]]) -> str:
    lines = ["| kind | model | backend | implementation / setting | compile s | warm-up s | sampling s | grad/draw | ESS bulk min | ESS/s | peak MB |",
             "|---|---|---|---|---:|---:|---:|---:|---:|---:|---:|"]
    for r in rows:
        if r["kind"] in ("sampling", "cold compile", "setting"):
            numbers = [_number(r.get(k), d) for k, d in (("compile_s", 2), ("warmup_s", 2), ("sampling_s", 3), ("gradients_per_draw", 1),
                                                         ("ess_bulk_min", 0), ("ess_bulk_per_s", 0), ("peak_rss_mb", 0))]
            lines.append(f"| {r['kind']} | {r['model']} | {r['backend']} | {r['implementation']} | {' | '.join(numbers)} |")
    lines += ["", "| model | backend | sampling time generated / hand-written (fastest rounds) | within each pair | grad/draw generated, hand-written | s per gradient generated / hand-written |",
              "|---|---|---:|---|---|---:|"]
    for r in ratios:
        g, h = r["gradients_per_draw"]
        pairs = ", ".join(f"{x:.2f}" for x in r["sampling_ratios"])
        lines.append(f"| {r['model']} | {r['backend']} | {r['sampling_ratio']:.3f} | {pairs} | {g:.2f}, {h:.2f} | "
                     f"{_number(r['gradient_ratio'], 3) or 'not measured'} |")
    lines += ["", "| 10M rows | backend | form | rows | seconds | s per gradient | gradient evaluations |", "|---|---|---|---:|---:|---:|---:|"]
    for r in rows:
        if r["kind"].startswith("10M"):
            lines.append(f"| {r['kind']} | {r['backend']} | {r['implementation']} | {r.get('rows', '')} | {_number(r.get('seconds'), 1)} | "
                         f"{_number(r.get('seconds_per_gradient'), 4)} | {r.get('gradients') or ''} |")
    lines += ["", "| SBC fits, warm worker | backend | engine | fits | sampler s per fit | task s per fit | overhead s per fit | overhead / sampling | fits per worker-minute |",
              "|---|---|---|---:|---:|---:|---:|---:|---:|"]
    for r in rows:
        if r["kind"] == "sbc fit":
            lines.append(f"| {r['model']} | {r['backend']} | {r['engine']} | {r['fits']} | {r['sampler_s_per_fit']:.3f} | "
                         f"{r['task_s_per_fit']:.3f} | {r['overhead_s_per_fit']:.3f} | {100 * r['overhead_share']:.1f}% | "
                         f"{r['fits_per_worker_minute']:.0f} |")
    return "\n".join(lines) + "\n"


def _row_key(row: dict[str, Any]) -> tuple:
    return row["kind"], row["model"], row["backend"], row["implementation"]


def merged_rows(path: Path, new: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The rows of an earlier run with this run's rows in place of theirs: a run of a few
    benchmarks (``-k``) updates those and keeps the rest. Each row says which run took it."""
    old = json.loads(path.read_text())["rows"] if path.exists() else []
    fresh = {_row_key(r): r for r in new}
    kept = [r for r in old if _row_key(r) not in fresh]
    return kept + new


def pytest_sessionfinish(session: pytest.Session) -> None:
    if not ROWS or session.config.getoption("smoke"):
        return
    from harness import RESULTS

    RESULTS.mkdir(exist_ok=True)
    run = datetime.datetime.now().isoformat(timespec="seconds")
    rows = merged_rows(RESULTS / "latest.json", [{**r, "run": run} for r in ROWS])
    ratios = ratio_rows(rows)
    (RESULTS / "latest.json").write_text(json.dumps({"machine": machine(), "rows": rows, "ratios": ratios}, indent=1))
    (RESULTS / "latest.md").write_text(markdown(rows, ratios))
