"""A 10-million-row A/B experiment (2 groups x 2 arms): CSV to posterior through counts
per cell, against the row-level Bernoulli model users write by hand.

Sampling the row-level model at 10 million rows takes hours, so its cost is the time of
one gradient evaluation at 10 million rows (measured) times the gradient evaluations the
counts run needed on the same backend (warm-up and sampling): the same posterior geometry,
so NUTS takes the same number of steps.
"""

from __future__ import annotations

import re
import time
from pathlib import Path

import numpy as np
import pytest

from harness import SETTINGS, clear_pystan_fits, handwritten_stan_data, handwritten_stan_program
from polyppl.backends import BACKENDS
from polyppl.models import MODELS, multilevel_logistic
from polyppl.spec import Dataset

N_ROWS = 10_000_000
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
    counts = benchmark.pedantic(lambda: multilevel_logistic.read_csv(rows_csv[n]), rounds=3, iterations=1)
    reader = "read_csv (whole-column)"
    seconds = benchmark.stats.stats.median
    benchmark.extra_info.update({"rows": n, "seconds_per_10M_rows": seconds * N_ROWS / n, "trials": counts.values["trials"].tolist()})
    results.append({"kind": "10M rows read", "model": "multilevel-logistic", "backend": "-", "implementation": reader,
                    "rows": n, "seconds": seconds, "seconds_per_10M_rows": seconds * N_ROWS / n})


@pytest.mark.parametrize("backend", BACKENDS)
def test_counts_csv_to_posterior(benchmark, results, rows_csv, backend: str) -> None:
    """Read 10M rows, aggregate to 4 cells, sample (the defaults of `polyppl run`)."""
    from polyppl import runner

    builtin = MODELS["multilevel-logistic"]

    def csv_to_posterior() -> dict:
        counts = multilevel_logistic.read_csv(rows_csv[N_ROWS])
        if backend == "stan":
            clear_pystan_fits()
        idata = runner.sample(builtin.spec(PARAMETRIZATION, counts), counts, backend, SETTINGS)
        return runner.summarize(idata, builtin).record()

    benchmark.group = "10M rows: CSV to posterior"
    record = benchmark.pedantic(csv_to_posterior, rounds=1, iterations=1)
    d = record["diagnostics"]
    gradients = d["gradient_evaluations"] + d["warmup_gradient_evaluations"]
    COUNTS_RUNS[backend] = {"seconds": benchmark.stats.stats.median, "gradients": gradients, **record["timings"]}
    benchmark.extra_info.update(COUNTS_RUNS[backend])
    results.append({"kind": "10M rows CSV to posterior", "model": "multilevel-logistic", "backend": backend,
                    "implementation": "counts", "seconds": benchmark.stats.stats.median, "compile_s": record["timings"]["compile_seconds"],
                    "warmup_s": record["timings"]["warmup_seconds"], "sampling_s": record["timings"]["sampling_seconds"],
                    "gradients": gradients})


def _gradient_seconds(backend: str, rows: Dataset) -> float:
    """Seconds per gradient of the hand-written row-level Bernoulli model on ``rows``."""
    if backend == "stan":
        # PyStan's log_prob sends the data on every call; Stan's own timing of one
        # gradient evaluation, printed before sampling, is the number wanted. Stan reads
        # its data as JSON, so it gets a tenth of the rows, and the time is scaled up.
        import stan

        rows = _first_rows(rows, N_ROWS // STAN_ROWS_FRACTION)

        posterior = stan.build(handwritten_stan_program("multilevel-logistic", PARAMETRIZATION, row_level=True),
                               data=handwritten_stan_data("multilevel-logistic", rows), random_seed=1)
        fit = posterior.sample(num_chains=1, num_samples=1, num_warmup=0)
        text = "\n".join(o.decode("utf-8", "replace") for o in fit.stan_outputs)
        seconds = float(re.search(r"Gradient evaluation took ([0-9.eE+-]+) seconds", text).group(1))
        return seconds * STAN_ROWS_FRACTION
    if backend == "pymc":
        from handwritten import pymc_models

        model = pymc_models.multilevel_logistic(rows, PARAMETRIZATION)
        dlogp = model.compile_dlogp()
        point = model.initial_point()
        dlogp(point)
        start = time.perf_counter()
        for _ in range(GRADIENT_REPEATS):
            dlogp(point)
        return (time.perf_counter() - start) / GRADIENT_REPEATS
    import jax
    from handwritten import numpyro_models
    from numpyro.infer.util import initialize_model

    model = numpyro_models.multilevel_logistic(rows, PARAMETRIZATION)
    init = initialize_model(jax.random.PRNGKey(0), model)
    gradient = jax.jit(jax.grad(init.potential_fn))
    params = init.param_info.z
    jax.block_until_ready(gradient(params))
    start = time.perf_counter()
    for _ in range(GRADIENT_REPEATS):
        jax.block_until_ready(gradient(params))
    return (time.perf_counter() - start) / GRADIENT_REPEATS


def _first_rows(rows: Dataset, n: int) -> Dataset:
    v = rows.values
    return multilevel_logistic.rows_dataset(list(rows.coords["group"]), v["group_idx"][:n], v["treated"][:n], v["success"][:n], rows.source)


@pytest.fixture(scope="module")
def rows(rows_csv) -> Dataset:
    """The 10M rows as row-level data (read once for the three backends)."""
    return multilevel_logistic.read_csv(rows_csv[N_ROWS], row_level=True)


@pytest.mark.parametrize("backend", BACKENDS)
def test_row_level_gradient(benchmark, results, rows: Dataset, backend: str) -> None:
    benchmark.group = "10M rows: row-level Bernoulli gradient"
    seconds = benchmark.pedantic(lambda: _gradient_seconds(backend, rows), rounds=1, iterations=1)
    counts = COUNTS_RUNS.get(backend)
    estimate = seconds * counts["gradients"] if counts else None
    benchmark.extra_info.update({"seconds_per_gradient": seconds, "estimated_row_level_sampling_s": estimate})
    results.append({"kind": "10M rows row-level (estimated)", "model": "multilevel-logistic", "backend": backend,
                    "implementation": "rows, hand-written", "seconds_per_gradient": seconds, "seconds": estimate,
                    "gradients": counts and counts["gradients"]})
