"""SBC's cost per fit on a warm worker: eight schools at ``polyppl sbc``'s default settings,
one simulation after another in this process, as one worker of the grid runs them after its
first (compiling) fit, which is not timed.

Per backend: the sampler's own seconds per fit, the task's, the overhead between them
(simulating the data, binding it to the compiled model, R-hat and ESS of every quantity,
the log-likelihood, the ranks; for Stan also CmdStan's CSV files) against the sampling, and
fits per worker-minute. The grid as a whole (Dask's hand-over, workers sharing the machine)
is ``polyppl sbc``'s timing table; the README quotes both.
"""

from __future__ import annotations

import statistics
from dataclasses import replace

import pytest

from harness import SMOKE
from polyppl.studies.sbc import DEFAULT_SETTINGS, SbcFit, plan_sbc, run_simulation

MODEL = "eight-schools"
#: Timed fits per backend after the first; PyMC's own NUTS takes about 6 s a fit.
FITS = {"pymc": 3}
DEFAULT_FITS = 20


@pytest.mark.parametrize("backend", ["pymc", "pymc:nutpie", "stan", "numpyro"])
def test_sbc_fit(benchmark, results, tmp_path, backend: str) -> None:
    fits = 1 if SMOKE else FITS.get(backend, DEFAULT_FITS)
    settings = replace(DEFAULT_SETTINGS, chains=2, draws=30, tune=30) if SMOKE else DEFAULT_SETTINGS
    # No remedies: a flagged fit's extra rungs are more fits, not overhead around one.
    plan = plan_sbc(MODEL, [backend], simulations=1 + fits, seed=1, settings=settings, out=tmp_path, remedies=["none"])
    run_simulation(plan.tasks[0].argument)  # the worker's compile
    records: list[SbcFit] = []
    benchmark.group = f"sbc fits {MODEL}"
    benchmark.pedantic(lambda: records.extend(SbcFit.from_json(run_simulation(task.argument)) for task in plan.tasks[1:]),
                       rounds=1, iterations=1)
    sampler = statistics.median(r.sampler_seconds for r in records)
    task = statistics.median(r.task_seconds - r.compile_seconds for r in records)
    row = {
        "fits": len(records),
        "sampler_s_per_fit": sampler,
        "task_s_per_fit": task,
        "overhead_s_per_fit": task - sampler,
        "overhead_share": (task - sampler) / sampler,
        "fits_per_worker_minute": 60 / task,
        "engine": records[0].record.engine,
    }
    benchmark.extra_info.update(row)
    results.append({"kind": "sbc fit", "model": MODEL, "backend": backend, "implementation": "warm worker", **row})
