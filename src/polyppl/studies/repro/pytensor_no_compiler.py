"""pytensor-no-compiler: without a C++ compiler PyTensor falls back to Python, silently
tens of times slower. Measured in child processes, one with a PATH that has no g++."""

from __future__ import annotations

import tempfile
from typing import Any

from polyppl.execution.child import call_in_child
from polyppl.studies.repro.base import (
    NOT_REPRODUCED,
    REPRODUCED,
    BackendResult,
    RunOptions,
    Scenario,
    builtin,
    first_line,
    versions,
)


def pymc_gradient_speed() -> dict[str, Any]:
    """Seconds per log-density gradient of eight schools in PyMC, and a short sampling run,
    with whatever C compiler PyTensor finds in this process. Called in child processes."""
    import logging
    import time

    import pymc as pm
    import pytensor
    from pymc.blocking import DictToArrayBijection

    from polyppl.backends.pymc.compiler import build

    logging.getLogger("pymc").setLevel(logging.ERROR)
    model, dataset = builtin("eight-schools", "noncentered")
    pymc_model = build(model.density_model(), dataset)
    logp_dlogp = pymc_model.logp_dlogp_function(ravel_inputs=True)
    point = DictToArrayBijection.map(pymc_model.initial_point()).data
    calls = 1000
    start = time.perf_counter()
    for _ in range(calls):
        logp_dlogp._pytensor_function(point)
    per_gradient = (time.perf_counter() - start) / calls
    with pymc_model:
        idata = pm.sample(draws=100, tune=100, chains=2, cores=1, random_seed=1, nuts_sampler="pymc",
                          progressbar=False, compute_convergence_checks=False)
    return {
        "cxx": pytensor.config.cxx,
        "seconds_per_gradient": per_gradient,
        "sampling_seconds": float(idata.sample_stats.attrs["sampling_time"]),
    }


def _speed_line(label: str, run: dict[str, Any]) -> str:
    return (f"{label} (cxx={run['cxx']!r}): {1e6 * run['seconds_per_gradient']:.0f} µs per gradient; "
            f"2 chains x 200 iterations of eight schools in {run['sampling_seconds']:.2f} s")


def _no_compiler(opts: RunOptions) -> BackendResult:
    # PyTensor looks for g++ on PATH when it is imported; an empty PATH is a machine without one.
    with tempfile.TemporaryDirectory() as empty:
        without, child = call_in_child(f"{__name__}:pymc_gradient_speed", env={"PATH": empty})
    with_compiler, _ = call_in_child(f"{__name__}:pymc_gradient_speed")
    output = child.output_tail
    warning = next((line for line in output.splitlines() if "g++ not detected" in line or "g++ not available" in line), "")
    slowdown = without["seconds_per_gradient"] / with_compiler["seconds_per_gradient"]
    return BackendResult(
        backend="pymc",
        outcome=REPRODUCED if warning and slowdown > 5 else NOT_REPRODUCED,
        evidence=[first_line(warning or "(no warning printed)", 300), _speed_line("no C++ compiler on PATH", without)],
        cause=(
            "PyTensor compiles each model's log density to C with g++; when it finds none it warns once at import "
            "and runs every operation through its Python implementations, which still give the right numbers, so "
            "nothing fails: sampling is just tens of times slower. Up to PyTensor 2; PyTensor 3 compiles with "
            "Numba where it finds no C++ compiler, so there the failure no longer reproduces."
        ),
        fix="install a C++ compiler (conda: gxx / m2w64-toolchain on Windows) or point PyTensor at one "
        "(PYTENSOR_FLAGS=cxx=/path/to/g++)",
        fix_evidence=[_speed_line("g++ found", with_compiler), f"{slowdown:.0f} times faster per gradient"],
        fix_works=slowdown > 5,
        measurements={"without_compiler": without, "with_compiler": with_compiler, "slowdown": slowdown,
                      "warning": warning},
        versions=versions("pymc", opts),
    )


SCENARIO = Scenario(
    "pytensor-no-compiler",
    "PyTensor without a C++ compiler falls back to Python: no error, sampling tens of times slower",
    "Eight schools in PyMC, in a child process whose PATH has no g++, against one that finds it.",
    (
        "https://github.com/pymc-devs/pymc/issues/6562 (g++ not found on Windows: 'PyTensor will be unable "
        "to compile C-implementations and will default to Python')",
        "https://github.com/pymc-devs/pytensor/issues/234",
        "https://github.com/lnccbrown/HSSM/issues/204 (example takes forever to run)",
    ),
    {"pymc": _no_compiler},
    {
        "numpyro": "NumPyro compiles with XLA, which needs no system C++ compiler",
        "stan": "Stan cannot build a model at all without a C++ compiler; there is no slow fallback",
    },
)
