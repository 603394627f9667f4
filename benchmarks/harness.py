"""One benchmark run: a built-in model on one backend, generated or hand-written.

The hand-written model replaces only the backend's compiler (``build`` for PyMC and
NumPyro, the program and data for Stan), so both implementations go through the same
sampler call, timers and conversion of draws: any difference is the model's code.
"""

from __future__ import annotations

import statistics
import time
from contextlib import contextmanager, nullcontext
from pathlib import Path
from typing import Any, Callable, Iterator
from unittest import mock

import numpy as np

from polyppl.models import MODELS
from polyppl.settings import SamplerSettings
from polyppl.spec import Dataset

HERE = Path(__file__).resolve().parent
RESULTS = HERE / "results"
IMPLEMENTATIONS = ("generated", "handwritten")
#: The defaults of `polyppl run`: what a user gets.
SETTINGS = SamplerSettings(chains=4, draws=1000, tune=1000, seed=1)


def handwritten_stan_program(model_name: str, parametrization: str, row_level: bool = False) -> str:
    stem = model_name.replace("-", "_") + ("_rows" if row_level else "") + f"_{parametrization}"
    return (HERE / "handwritten" / "stan" / f"{stem}.stan").read_text()


def handwritten_stan_data(model_name: str, dataset: Dataset) -> dict:
    v = {k: np.asarray(x) for k, x in dataset.values.items()}
    if model_name == "multilevel-logistic":
        out = {"N": len(v["group_idx"]), "J": len(dataset.coords["group"]), "group": (v["group_idx"] + 1).tolist(),
               "treated": v["treated"].astype(float).tolist()}
        if "success" in v:
            return {**out, "success": v["success"].tolist()}
        return {**out, "trials": v["trials"].tolist(), "successes": v["successes"].tolist()}
    if model_name == "beta-binomial":
        return {"K": len(v["trials"]), "n": v["trials"].tolist(), "y": v["successes"].tolist()}
    return {"J": len(v["y"]), "y": v["y"].tolist(), "sigma": v["sigma"].tolist()}


@contextmanager
def handwritten(model_name: str, parametrization: str, backend: str) -> Iterator[None]:
    """Within this block, ``backend`` samples the hand-written model instead of the generated one."""
    key = (model_name, parametrization)
    if backend == "pymc":
        from handwritten import pymc_models
        from polyppl.backends import pymc_backend

        with mock.patch.object(pymc_backend, "build", lambda model, dataset: pymc_models.MODELS[key](dataset)):
            yield
    elif backend == "numpyro":
        from handwritten import numpyro_models
        from polyppl.backends import numpyro_backend

        with mock.patch.object(numpyro_backend, "build", lambda model, dataset: numpyro_models.MODELS[key](dataset)):
            yield
    else:
        from polyppl.backends import stan_backend

        row_level = False

        def program(model):
            return handwritten_stan_program(model_name, parametrization, row_level)

        def data(model, dataset):
            nonlocal row_level
            row_level = "success" in dataset.values
            return handwritten_stan_data(model_name, dataset)

        # stan_backend.sample asks for the program before the data: decide the form from the data first.
        def sample(model, dataset, settings):
            data(model, dataset)
            return original(model, dataset, settings)

        original = stan_backend.sample
        with mock.patch.object(stan_backend, "stan_program", program), mock.patch.object(stan_backend, "stan_data", data), \
                mock.patch.object(stan_backend, "sample", sample):
            yield


def suite_stan_programs() -> dict[str, str]:
    """The Stan programs the in-process benchmarks sample, by label: each model's hand-written
    program, and the two of the 10M-row benchmarks (generated centered counts, hand-written
    row-level). The generated default programs are left out: test_cold_compile compiles them."""
    from polyppl.backends.stan_program import stan_program

    programs = {f"{name} hand-written": handwritten_stan_program(name, MODELS[name].default_parametrization) for name in MODELS}
    multilevel = MODELS["multilevel-logistic"]
    programs["multilevel-logistic centered, generated"] = stan_program(multilevel.spec("centered", multilevel.dataset()))
    programs["multilevel-logistic row-level, hand-written"] = handwritten_stan_program("multilevel-logistic", "centered", row_level=True)
    return programs


def _compile_stan_program(program: str) -> float:
    """Compile one program into httpstan's model cache (in a child process: httpstan
    redirects the process's stderr while it compiles); the seconds it took."""
    import asyncio

    import stan.common

    async def post() -> None:
        async with stan.common.HttpstanClient() as client:
            response = await client.post("/models", json={"program_code": program})
            if response.status != 201:
                raise RuntimeError(response.json()["message"])

    start = time.perf_counter()
    asyncio.run(post())
    return time.perf_counter() - start


def compile_stan_programs(programs: dict[str, str], processes: int = 2,
                          progress: Callable[[str], None] = print) -> None:
    """Compile the programs httpstan has not cached yet, ``processes`` at a time.

    On a machine that has never compiled them this is minutes of g++ (~35 s a program on
    these cores), which in-process benchmarks would otherwise pay one after another
    inside their first rounds."""
    import multiprocessing
    from concurrent.futures import ProcessPoolExecutor

    import httpstan.cache
    import httpstan.models

    cached = set(httpstan.cache.list_model_names())
    missing = {label: program for label, program in programs.items()
               if httpstan.models.calculate_model_name(program) not in cached}
    if not missing:
        return
    progress(f"compiling {len(missing)} Stan programs not in httpstan's cache, {processes} at a time: {', '.join(missing)}")
    # spawn: the parent may already run JAX's threads, which a fork would copy mid-state.
    with ProcessPoolExecutor(processes, mp_context=multiprocessing.get_context("spawn")) as pool:
        for label, seconds in zip(missing, pool.map(_compile_stan_program, missing.values())):
            progress(f"  {label}: {seconds:.0f} s")


def clear_pystan_fits() -> None:
    """httpstan caches each fit by model, data and seed, and a repeated request returns the
    cached draws without sampling: remove them so every round samples."""
    import httpstan.cache

    for fit in (httpstan.cache.cache_directory() / "models").glob("*/fits/*.jsonlines.gz"):
        fit.unlink(missing_ok=True)


def run_once(model_name: str, backend: str, implementation: str, settings: SamplerSettings = SETTINGS,
             dataset: Dataset | None = None, parametrization: str | None = None) -> dict[str, Any]:
    """Sample once (the model's default parametrization and scenario unless given); the
    timings, gradient counts and ESS of the run, flat."""
    from polyppl import runner

    builtin = MODELS[model_name]
    dataset = dataset or builtin.dataset()
    parametrization = parametrization or builtin.default_parametrization
    spec = builtin.spec(parametrization, dataset)
    stan_clock: list[tuple[float, float]] = []
    if backend == "stan":
        clear_pystan_fits()
    with handwritten(model_name, parametrization, backend) if implementation == "handwritten" else nullcontext(), \
            stan_own_clock(stan_clock) if backend == "stan" else nullcontext():
        idata = runner.sample(spec, dataset, backend, settings)
    record = runner.summarize(idata, builtin).record()
    t, d = record["timings"], record["diagnostics"]
    extra = {}
    if stan_clock:
        # Stan's own "Elapsed Time ... (Sampling)", summed over chains, per gradient of the
        # sampling draws: free of PyStan's transport of the draws, which the wall clock counts.
        gradients = d["gradients_per_draw"] * settings.draws * settings.chains
        extra["stan_clock_seconds_per_gradient"] = stan_clock[-1][1] / gradients
    return {**extra,
        "parametrization": parametrization,
        "engine": record["engine"],
        "compile_s": t["compile_seconds"],
        "compile_cached": t["compile_cached"],
        "warmup_s": t["warmup_seconds"],
        "sampling_s": t["sampling_seconds"],
        "gradients_per_draw": d["gradients_per_draw"],
        "seconds_per_gradient": d["seconds_per_gradient"],
        "ess_bulk_min": d["ess_bulk_min"],
        "ess_bulk_per_s": d["ess_bulk_per_second"],
        "posterior_means": {k: s["mean"] for k, s in record["posterior"].items()},
    }


@contextmanager
def stan_own_clock(into: list[tuple[float, float]]) -> Iterator[None]:
    """Within this block, the Stan backend's reading of Stan's per-chain warm-up and
    sampling times (summed over chains) is also appended to ``into``."""
    from polyppl.backends import stan_backend

    split = stan_backend._split_elapsed

    def recording(text: str) -> tuple[float, float]:
        into.append(split(text))
        return into[-1]

    with mock.patch.object(stan_backend, "_split_elapsed", recording):
        yield


def medians(records: list[dict[str, Any]]) -> dict[str, Any]:
    """Per-field medians over rounds (numbers), the first value otherwise; compile time is
    the fastest round's and ``compile_cached`` the last round's, since a first round on a
    fresh machine still compiles what the later rounds find cached."""
    out: dict[str, Any] = {}
    for key, first in records[0].items():
        values = [r[key] for r in records]
        numeric = isinstance(first, (int, float)) and not isinstance(first, bool) and None not in values
        out[key] = statistics.median(values) if numeric else first
    if "compile_s" in out:
        out["compile_s"] = min(r["compile_s"] for r in records)
        out["compile_cached"] = records[-1]["compile_cached"]
    out["rounds"] = len(records)
    return out


#: NumPyro's NUTS evaluates gradients inside one compiled loop: timed as a compiled loop of
#: this many evaluations, so that the ~10 us of dispatching a jitted call is not counted.
NUMPYRO_GRADIENTS_PER_CALL = 1000


def gradient_call(model_name: str, backend: str, implementation: str) -> tuple[Callable[[], object], int]:
    """A call evaluating the log density and its gradient as the backend's NUTS does (PyMC's
    ``logp_dlogp_function``; NumPyro's potential inside a compiled loop), near the initial
    point, and how many evaluations one call makes."""
    builtin = MODELS[model_name]
    dataset = builtin.dataset()
    parametrization = builtin.default_parametrization
    key = (model_name, parametrization)
    if backend == "pymc":
        from handwritten import pymc_models
        from polyppl.backends import pymc_backend

        model = (pymc_models.MODELS[key](dataset) if implementation == "handwritten"
                 else pymc_backend.build(builtin.spec(parametrization, dataset), dataset))
        function = model.logp_dlogp_function(ravel_inputs=True)
        function.set_extra_values({})
        point = np.concatenate([np.ravel(v) for v in model.initial_point().values()])
        return (lambda: function(point)), 1
    import jax
    from handwritten import numpyro_models
    from numpyro.infer.util import initialize_model
    from polyppl.backends import numpyro_backend

    model = (numpyro_models.MODELS[key](dataset) if implementation == "handwritten"
             else numpyro_backend.build(builtin.spec(parametrization, dataset), dataset))
    init = initialize_model(jax.random.PRNGKey(0), model)
    n = NUMPYRO_GRADIENTS_PER_CALL
    shift = jax.numpy.linspace(-0.1, 0.1, n)
    points = jax.tree.map(lambda v: v + shift.reshape((n,) + (1,) * v.ndim), init.param_info.z)
    loop = jax.jit(lambda zs: jax.lax.map(jax.value_and_grad(init.potential_fn), zs))
    return (lambda: jax.block_until_ready(loop(points))), n


def interleaved_seconds(calls: dict[str, tuple[Callable[[], object], int]], blocks: int = 11,
                        block_seconds: float = 0.2) -> dict[str, float]:
    """Median seconds per evaluation of each (call, evaluations per call), timed in
    alternating blocks so that a change of machine load hits all of them alike."""
    per_block = {}
    for name, (call, _) in calls.items():
        call()  # compile or warm caches outside the timing
        start, n = time.perf_counter(), 0
        while time.perf_counter() - start < block_seconds:
            call()
            n += 1
        per_block[name] = max(n, 1)
    samples: dict[str, list[float]] = {name: [] for name in calls}
    for _ in range(blocks):
        for name, (call, evaluations) in calls.items():
            start = time.perf_counter()
            for _ in range(per_block[name]):
                call()
            samples[name].append((time.perf_counter() - start) / (per_block[name] * evaluations))
    return {name: statistics.median(values) for name, values in samples.items()}
