"""A 10-million-row A/B experiment (2 groups x 2 arms): CSV to posterior through counts
per cell, against the row-level Bernoulli model users write by hand.

Sampling the row-level model at 10 million rows takes hours, so its cost is the time of
one gradient evaluation at 10 million rows (measured) times the gradient evaluations the
counts run needed on the same backend (warm-up and sampling): the same posterior geometry,
so NUTS takes the same number of steps. The row-level model is the hand-written one of each
backend, built into the backend's compiled-model class (``harness.handwritten``) after its
premise is checked on the seed's row-level data (``harness.check_premise``).
"""

from __future__ import annotations

import re
import time
from pathlib import Path

import numpy as np
import pytest

from harness import SETTINGS, SMOKE, check_premise, clear_pystan_fits, handwritten, request_for
from polyppl.execution.fit import fit
from polyppl.inference.methods import SamplerSettings
from polyppl.models import multilevel_logistic
from polyppl.spec import Dataset

N_ROWS = 10_000 if SMOKE else 10_000_000
#: The current reader (csv module, one Cell per value) is timed on a tenth of the rows.
PROBABILITIES = np.array([[0.30, 0.50], [0.55, 0.60]])  # (group, treated)
GRADIENT_REPEATS = 5
#: Millions of trials per cell pin a and b: the centered form samples in ~14 gradients per
#: draw, the default non-centered one saturates tree depth 10 (RESULTS.md).
PARAMETRIZATION = "centered"
#: Stan's row-level gradient is timed on 1/10 of the rows (a gradient's cost is linear in rows).
STAN_ROWS_FRACTION = 10
COUNTS_RUNS: dict[str, dict] = {}


def write_rows_csv(path: Path, n_rows: int, seed: int = 0) -> None:
    """A row-level CSV: random group and arm, Bernoulli success; 8 distinct lines, joined as bytes."""
    rng = np.random.default_rng(seed)
    lines = np.array([f"{g},{t},{y}\n".encode() for g in ("Canada", "China") for t in (0, 1) for y in (0, 1)], dtype=object)
    group, treated = rng.integers(0, 2, n_rows), rng.integers(0, 2, n_rows)
    success = (rng.random(n_rows) < PROBABILITIES[group, treated]).astype(np.int64)
    with path.open("wb") as handle:
        handle.write(b"group,treated,success\n")
        handle.write(b"".join(lines[group * 4 + treated * 2 + success]))


@pytest.fixture(scope="module")
def rows_csv(tmp_path_factory) -> dict[int, Path]:
    folder = tmp_path_factory.mktemp("rows")
    paths = {}
    for n in (N_ROWS,):
        paths[n] = folder / f"rows-{n}.csv"
        write_rows_csv(paths[n], n)
    return paths


def test_read_rows_csv(benchmark, results, rows_csv) -> None:
    benchmark.group = "10M rows: read and aggregate"
    n = N_ROWS
    seconds_by_round: list[float] = []

    def read() -> Dataset:
        start = time.perf_counter()
        counts = multilevel_logistic.read_csv(rows_csv[n])
        seconds_by_round.append(time.perf_counter() - start)
        return counts

    counts = benchmark.pedantic(read, rounds=1 if SMOKE else 3, iterations=1)
    reader = "read_csv (whole-column)"
    seconds = float(np.median(seconds_by_round))
    benchmark.extra_info.update({"rows": n, "seconds_per_10M_rows": seconds * N_ROWS / n, "trials": counts.values["trials"].tolist()})
    results.append({"kind": "10M rows read", "model": "multilevel-logistic", "backend": "-", "implementation": reader,
                    "rows": n, "seconds": seconds, "seconds_per_10M_rows": seconds * N_ROWS / n})


# ``backend``: every column, Stan with its engine (conftest.columns).
def test_counts_csv_to_posterior(benchmark, results, rows_csv, backend: str) -> None:
    """Read 10M rows, aggregate to 4 cells, sample (the defaults of `polyppl run`)."""
    seconds: list[float] = []

    def csv_to_posterior():
        start = time.perf_counter()
        counts = multilevel_logistic.read_csv(rows_csv[N_ROWS])
        request = request_for("multilevel-logistic", backend, SETTINGS, counts, PARAMETRIZATION)
        if request.engine == "pystan":
            clear_pystan_fits()
        record = fit(request).record
        seconds.append(time.perf_counter() - start)
        return record

    benchmark.group = "10M rows: CSV to posterior"
    record = benchmark.pedantic(csv_to_posterior, rounds=1, iterations=1)
    d, t = record.diagnostics, record.timings
    gradients = d.gradient_evaluations + d.warmup_gradient_evaluations
    timings = {"compile_seconds": t.compile_seconds, "compile_cached": t.compile_cached,
               "warmup_seconds": t.warmup_seconds, "sampling_seconds": t.sampling_seconds}
    COUNTS_RUNS[backend] = {"seconds": seconds[-1], "gradients": gradients, **timings}
    benchmark.extra_info.update(COUNTS_RUNS[backend])
    results.append({"kind": "10M rows CSV to posterior", "model": "multilevel-logistic", "backend": backend,
                    "implementation": "counts", "seconds": seconds[-1], "compile_s": t.compile_seconds,
                    "warmup_s": t.warmup_seconds, "sampling_s": t.sampling_seconds, "gradients": gradients})


def _gradient_seconds(backend: str, rows: Dataset) -> float:
    """Seconds per gradient of the hand-written row-level Bernoulli model on ``rows``."""
    one_draw = SamplerSettings(chains=1, draws=1, tune=0, seed=1)
    if backend.startswith("stan"):
        # The engines' log_prob calls send the data on every call; Stan's own timing of one
        # gradient evaluation, printed before sampling, is the number wanted. Stan reads
        # its data as JSON, so it gets a tenth of the rows, and the time is scaled up.
        rows = _first_rows(rows, N_ROWS // STAN_ROWS_FRACTION)
        compiled = handwritten(request_for("multilevel-logistic", backend, one_draw, rows, PARAMETRIZATION))
        text = _stan_console(compiled)
        seconds = float(re.search(r"Gradient evaluation took ([0-9.eE+-]+) seconds", text).group(1))
        return seconds * STAN_ROWS_FRACTION
    compiled = handwritten(request_for("multilevel-logistic", backend, one_draw, rows, PARAMETRIZATION))
    if backend == "pymc":
        model = compiled.pymc_model
        dlogp = model.compile_dlogp()
        point = model.initial_point()
        dlogp(point)
        start = time.perf_counter()
        for _ in range(GRADIENT_REPEATS):
            dlogp(point)
        return (time.perf_counter() - start) / GRADIENT_REPEATS
    import jax
    from numpyro.infer.util import initialize_model

    init = initialize_model(jax.random.PRNGKey(0), compiled.model_fn)
    gradient = jax.jit(jax.grad(init.potential_fn))
    params = init.param_info.z
    jax.block_until_ready(gradient(params))
    start = time.perf_counter()
    for _ in range(GRADIENT_REPEATS):
        jax.block_until_ready(gradient(params))
    return (time.perf_counter() - start) / GRADIENT_REPEATS


def _stan_console(compiled) -> str:
    """Stan's console output of one draw without warm-up on the compiled program."""
    engine = compiled.runner
    if engine.name == "pystan":
        fit_ = engine.posterior.sample(num_chains=1, num_samples=1, num_warmup=0)  # built with the data
        return "\n".join(o.decode("utf-8", "replace") for o in fit_.stan_outputs)
    import tempfile

    with tempfile.TemporaryDirectory(prefix="polyppl-bench-") as output_dir:
        fit_ = engine.model.sample(data=compiled.data, chains=1, iter_warmup=0, iter_sampling=1, adapt_engaged=False,
                                   seed=1, show_progress=False, show_console=False, output_dir=output_dir)
        return "\n".join(Path(p).read_text(errors="replace") for p in fit_.runset.stdout_files)


def _first_rows(rows: Dataset, n: int) -> Dataset:
    v = rows.values
    return multilevel_logistic.rows_dataset(list(rows.coords["group"]), v["group_idx"][:n], v["treated"][:n], v["success"][:n], rows.source)


@pytest.fixture(scope="module")
def rows(rows_csv) -> Dataset:
    """The 10M rows as row-level data (read once for the three backends)."""
    return multilevel_logistic.read_csv(rows_csv[N_ROWS], row_level=True)


def test_row_level_gradient(benchmark, results, rows: Dataset, backend: str) -> None:
    check_premise("multilevel-logistic", backend, PARAMETRIZATION, scenario="seed-rows")
    benchmark.group = "10M rows: row-level Bernoulli gradient"
    seconds = benchmark.pedantic(lambda: _gradient_seconds(backend, rows), rounds=1, iterations=1)
    counts = COUNTS_RUNS.get(backend)
    estimate = seconds * counts["gradients"] if counts else None
    benchmark.extra_info.update({"seconds_per_gradient": seconds, "estimated_row_level_sampling_s": estimate})
    results.append({"kind": "10M rows row-level (estimated)", "model": "multilevel-logistic", "backend": backend,
                    "implementation": "rows, hand-written", "seconds_per_gradient": seconds, "seconds": estimate,
                    "gradients": counts and counts["gradients"]})
