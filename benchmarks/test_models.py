"""Every built-in model on every backend, generated beside hand-written.

* ``test_sampling``: the defaults of `polyppl run` (4 chains, 1000 warm-up + 1000 draws,
  seed 1) in this process, generated and hand-written in alternating pairs (the order
  swapped every round, so that a change of machine load hits both alike): cached compile
  (PyMC's compile folder, httpstan's model cache; NumPyro re-traces per run and finds XLA's
  executables in its persistent cache), warm-up, sampling, gradients per draw, ESS per
  second: medians over the rounds, and every round's sampling time.
* ``test_gradient_cost``: seconds per log density and gradient evaluation, generated and
  hand-written timed in alternating blocks: on a shared 2-core machine, sampling times of
  well under a second move by tens of percent between runs, and this is the number the
  compiler decides (the sampler's own work per step is the same code for both). PyStan
  has no in-process gradient call (its ``grad_log_prob`` is an HTTP request with the
  data), so Stan's ratio comes from the sampling pairs, by Stan's own clock (its
  per-chain sampling time over the gradient evaluations of the sampling draws).
* ``test_cold_compile``: one run in a fresh process with nothing compiled before.
"""

from __future__ import annotations

import itertools
import json
import subprocess
import sys

import pytest

from harness import HERE, IMPLEMENTATIONS, SMOKE, check_premise, gradient_call, interleaved_seconds, medians, run_once
from polyppl.models import MODELS

#: Pairs of runs: sampling phases of a fraction of a second to 3 s swing by 20-30% from run
#: to run on this machine, so a few pairs, compared by their fastest rounds. A PyMC or
#: NumPyro run takes 3-10 s (NumPyro re-traces on every run): three pairs; a cached Stan
#: run about a second: five.
ROUNDS = {"pymc": 3, "stan": 5, "numpyro": 3}


def rounds(backend: str) -> int:
    return 1 if SMOKE else ROUNDS[backend.partition(":")[0]]


# ``backend``: every column, Stan with its engine (conftest.columns).
@pytest.mark.parametrize("model", list(MODELS))
def test_sampling(benchmark, results, model: str, backend: str) -> None:
    check_premise(model, backend)
    records: dict[str, list[dict]] = {impl: [] for impl in IMPLEMENTATIONS}
    orders = itertools.cycle([IMPLEMENTATIONS, IMPLEMENTATIONS[::-1]])

    def pair() -> None:
        for implementation in next(orders):
            records[implementation].append(run_once(model, backend, implementation))

    benchmark.group = f"sampling {model}"
    benchmark.pedantic(pair, rounds=rounds(backend), iterations=1)
    for implementation in IMPLEMENTATIONS:
        row = medians(records[implementation])
        # Every round's times, for the ratios of the fastest rounds (conftest.ratio_rows).
        for key in ("sampling_s", "stan_clock_seconds_per_gradient"):
            if all(key in r for r in records[implementation]):
                row[f"{key}_rounds"] = [r[key] for r in records[implementation]]
        benchmark.extra_info[implementation] = row
        results.append({"kind": "sampling", "model": model, "backend": backend, "implementation": implementation, **row})


@pytest.mark.parametrize("backend", ["pymc", "numpyro"])
@pytest.mark.parametrize("model", list(MODELS))
def test_gradient_cost(benchmark, results, model: str, backend: str) -> None:
    check_premise(model, backend)
    benchmark.group = "gradient cost"
    seconds = benchmark.pedantic(
        lambda: interleaved_seconds({impl: gradient_call(model, backend, impl) for impl in IMPLEMENTATIONS}),
        rounds=1, iterations=1)
    row = {f"seconds_per_gradient_{impl}": seconds[impl] for impl in IMPLEMENTATIONS}
    row["ratio"] = seconds["generated"] / seconds["handwritten"]
    benchmark.extra_info.update(row)
    results.append({"kind": "gradient", "model": model, "backend": backend, "implementation": "both", **row})


def isolated_run(*args: str) -> dict:
    """Run benchmarks/isolated_run.py in a fresh process; its JSON record."""
    done = subprocess.run([sys.executable, str(HERE / "isolated_run.py"), *args], capture_output=True, text=True)
    if done.returncode != 0:
        raise RuntimeError(done.stderr[-3000:])
    return json.loads(done.stdout.strip().splitlines()[-1])


@pytest.mark.isolated
@pytest.mark.parametrize("model", list(MODELS))
def test_cold_compile(benchmark, results, model: str, backend: str) -> None:
    records: list[dict] = []
    benchmark.group = "cold compile"
    benchmark.pedantic(lambda: records.append(isolated_run(model, backend, "--cold")), rounds=1, iterations=1)
    row = medians(records)
    benchmark.extra_info.update(row)
    results.append({"kind": "cold compile", "model": model, "backend": backend, "implementation": "generated", **row})
