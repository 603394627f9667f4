"""One benchmark run: a built-in model on one backend, generated or hand-written.

The hand-written model is built into the same compiled-model class the backend's compiler
returns (``PyMCModel`` around a hand-written ``pm.Model``, ``NumPyroModel`` around a
hand-written model function, ``StanModel`` with a hand-written program and its data,
compiled by the same engine), and both implementations run through ``fit(request,
compiled=...)``: the same sampler call, timers and conversion of draws, so any difference
is the model's code. Nothing is patched.

Before anything is timed, :func:`check_premise` asserts that the swap took effect (the
compiled model carries the hand-written model or program, not the generated one, and
``fit`` runs the compiled model it is given) and that both implementations define the
same posterior (log densities equal up to one constant, gradients equal to 1e-8 relative,
at random unconstrained points). Without it a swap that silently stopped working would
show every ratio as 1.00.

``POLYPPL_BENCH_SMOKE=1`` (``pytest benchmarks --smoke``) shrinks every run to a few draws,
to show that each code path runs; its numbers mean nothing.
"""

from __future__ import annotations

import os
import statistics
import time
from functools import lru_cache
from pathlib import Path
from typing import Any, Callable, Mapping

import numpy as np

from polyppl.backends import get_backend, parse_column
from polyppl.execution.fit import fit
from polyppl.execution.request import FitRequest
from polyppl.inference.methods import SamplerSettings
from polyppl.models import MODELS, Labels
from polyppl.spec import Dataset

HERE = Path(__file__).resolve().parent
RESULTS = HERE / "results"
IMPLEMENTATIONS = ("generated", "handwritten")
#: A run of the suite that only shows that every code path runs (``pytest --smoke``).
SMOKE = os.environ.get("POLYPPL_BENCH_SMOKE") == "1"
#: The defaults of `polyppl run`: what a user gets.
SETTINGS = (SamplerSettings(chains=2, draws=30, tune=30, seed=1) if SMOKE
            else SamplerSettings(chains=4, draws=1000, tune=1000, seed=1))
#: The premise check: random unconstrained points, in the region a sampler visits.
PREMISE_POINTS = 5
PREMISE_GRAD_RTOL = 1e-8


class PremiseError(AssertionError):
    """The hand-written implementation is not what runs, or not the same posterior."""


# --------------------------------------------------------------------------- hand-written sources


def handwritten_stan_path(model_name: str, parametrization: str, row_level: bool = False) -> Path:
    stem = model_name.replace("-", "_") + ("_rows" if row_level else "") + f"_{parametrization}"
    return HERE / "handwritten" / "stan" / f"{stem}.stan"


def handwritten_stan_program(model_name: str, parametrization: str, row_level: bool = False) -> str:
    return handwritten_stan_path(model_name, parametrization, row_level).read_text()


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


def _row_level(dataset: Dataset) -> bool:
    return "success" in dataset.values


# --------------------------------------------------------------------------- requests and compiled models


def request_for(model_name: str, column: str, settings: SamplerSettings = SETTINGS, dataset: Dataset | None = None,
                parametrization: str | None = None, options: Mapping[str, str] | None = None,
                scenario: str | None = None) -> FitRequest:
    """The fit request of a built-in model on ``column`` (``pymc``, ``stan``, ``stan:pystan``,
    ``pymc:nutpie``): the model's default parametrization and scenario unless given."""
    builtin = MODELS[model_name]
    if dataset is None:
        scenario = scenario or builtin.default_scenario
        dataset = builtin.dataset(scenario)
    parametrization = parametrization or builtin.default_parametrization
    chosen = parse_column(column)
    return FitRequest.make(builtin.spec(parametrization, dataset), dataset, chosen.backend, chosen.engine, "nuts",
                           settings, options, Labels(model_name, scenario or "benchmark data", parametrization))


def _options(request: FitRequest) -> dict[str, str]:
    """The request's backend options with the backend's defaults filled in, as
    ``Backend.compile`` passes them to the compiler."""
    declared = get_backend(request.backend).options
    return {key: values[0] for key, values in declared.items()} | dict(request.options)


def generated(request: FitRequest):
    """polyppl's compiled model of the request, as ``fit`` would compile it."""
    return get_backend(request.backend).compile(request.model, request.dataset, request.engine, dict(request.options))


def handwritten(request: FitRequest):
    """The hand-written implementation of the request's built-in model, built into the
    compiled-model class of the request's backend and engine, and checked to carry it
    (:func:`assert_handwritten`)."""
    labels = request.labels
    key = (labels.model, labels.parametrization)
    density = request.model.density_model()
    dataset = request.dataset
    if request.backend == "pymc":
        from handwritten import pymc_models
        from polyppl.backends.pymc.compiler import PyMCModel

        builder = _lookup(pymc_models.MODELS, key, "PyMC")
        source = builder(dataset)
        compiled = PyMCModel(source, density, request.engine)
    elif request.backend == "numpyro":
        from handwritten import numpyro_models
        from polyppl.backends.numpyro.compiler import NumPyroModel, configure_jax

        precision = _options(request)["precision"]
        configure_jax(precision)  # what the NumPyro compiler sets when it compiles
        builder = _lookup(numpyro_models.MODELS, key, "NumPyro")
        source = builder(dataset)
        compiled = NumPyroModel(source, density, dataset, precision)
    elif request.backend == "stan":
        from polyppl.backends.stan.compiler import CmdStanPyEngine, PyStanEngine, StanModel

        path = handwritten_stan_path(labels.model, labels.parametrization, _row_level(dataset))
        if not path.exists():
            raise PremiseError(f"no hand-written Stan program {path.name} for {key}")
        builder, source = None, path.read_text()
        data = handwritten_stan_data(labels.model, dataset)
        runner = CmdStanPyEngine(source) if request.engine == "cmdstanpy" else PyStanEngine(source, data)
        compiled = StanModel(density, dataset, source, data, runner)
    else:
        raise PremiseError(f"no hand-written models for backend {request.backend!r}")
    assert_handwritten(compiled, request, source, builder)
    return compiled


def _lookup(table: dict, key: tuple[str, str], library: str) -> Callable[[Dataset], Any]:
    if key not in table:
        raise PremiseError(f"no hand-written {library} model for {key}; there are: {sorted(table)}")
    return table[key]


def compiled_for(request: FitRequest, implementation: str):
    return generated(request) if implementation == "generated" else handwritten(request)


# --------------------------------------------------------------------------- the premise


def _module(function: Any) -> str:
    return getattr(getattr(function, "func", function), "__module__", "") or ""


def assert_handwritten(compiled, request: FitRequest, source: Any, builder: Callable | None) -> None:
    """``compiled`` carries the hand-written model of ``request`` and not polyppl's: the
    ``pm.Model`` or model function the sampler will run is the very object built by
    ``handwritten/`` (PyMC, NumPyro); the program the engine compiled is the hand-written
    file's text, with the hand-written data, and differs from the generated program (Stan)."""
    labels = request.labels
    where = f"{labels.model} ({labels.parametrization}) on {request.column}"
    if request.backend == "pymc":
        from polyppl.backends.pymc.compiler import PyMCModel

        if _module(builder) != "handwritten.pymc_models":
            raise PremiseError(f"{where}: {builder!r} is not a model of handwritten/pymc_models.py")
        if not isinstance(compiled, PyMCModel) or compiled.pymc_model is not source:
            raise PremiseError(f"{where}: the compiled model does not carry the hand-written pm.Model")
    elif request.backend == "numpyro":
        from polyppl.backends.numpyro.compiler import NumPyroModel

        if _module(builder) != "handwritten.numpyro_models" or _module(source) != "handwritten.numpyro_models":
            raise PremiseError(f"{where}: {source!r} is not a model of handwritten/numpyro_models.py")
        if not isinstance(compiled, NumPyroModel) or compiled.model_fn is not source:
            raise PremiseError(f"{where}: the compiled model does not carry the hand-written model function")
    else:
        from polyppl.backends.stan.compiler import StanModel
        from polyppl.backends.stan.program import stan_program

        text = handwritten_stan_program(labels.model, labels.parametrization, _row_level(request.dataset))
        engine = compiled.runner
        compiled_text = Path(engine.model.stan_file).read_text() if engine.name == "cmdstanpy" else engine.program
        if not isinstance(compiled, StanModel) or not source == text == compiled.program == compiled_text:
            raise PremiseError(f"{where}: the program {engine.name} compiled is not the hand-written file's")
        if text == stan_program(request.model.density_model()):
            raise PremiseError(f"{where}: the hand-written program is the generated one; the comparison is empty")
        if compiled.data != handwritten_stan_data(labels.model, request.dataset):
            raise PremiseError(f"{where}: the Stan data are not the hand-written program's")


class _Ran(Exception):
    pass


class _RunRefused:
    """A compiled model whose every run raises: ``fit`` given it must raise."""

    engine, compile_seconds, compile_cached = "none", 0.0, False

    def run(self, method, settings):
        raise _Ran

    def log_density(self):
        raise _Ran

    def with_data(self, dataset):
        return self


def assert_fit_runs_given_model(request: FitRequest) -> None:
    """``fit(request, compiled=X)`` runs X, not a model it compiles itself."""
    try:
        fit(request, compiled=_RunRefused())
    except _Ran:
        return
    raise PremiseError("fit(request, compiled=...) did not run the compiled model it was given")


def assert_same_posterior(generated_model, handwritten_model, where: str, seed: int = 20261124) -> None:
    """Log densities (Jacobians included) at random unconstrained points in (-2, 2) differ
    by one constant, and gradients agree to 1e-8 relative: the same posterior, to float64
    round-off (as tests/test_log_density.py compares the backends)."""
    ours, theirs = generated_model.log_density(), handwritten_model.log_density()
    shapes = {k: tuple(s) for k, s in ours.shapes.items()}
    if shapes != {k: tuple(s) for k, s in theirs.shapes.items()}:
        raise PremiseError(f"{where}: unconstrained parameters differ: generated {shapes}, "
                           f"hand-written {dict(theirs.shapes)}")
    rng = np.random.default_rng(seed)
    offsets, scale = [], 1.0
    for _ in range(PREMISE_POINTS):
        point = {k: rng.uniform(-2, 2, size=s) for k, s in shapes.items()}
        (lp_gen, grad_gen), (lp_hand, grad_hand) = ours(point), theirs(point)
        g = np.concatenate([np.ravel(grad_gen[k]) for k in shapes])
        h = np.concatenate([np.ravel(grad_hand[k]) for k in shapes])
        try:
            np.testing.assert_allclose(h, g, rtol=PREMISE_GRAD_RTOL, atol=1e-10)
        except AssertionError as error:
            raise PremiseError(f"{where}: gradients of hand-written and generated differ at {point}:\n{error}") from None
        offsets.append(lp_hand - lp_gen)
        scale = max(scale, abs(lp_gen), abs(lp_hand))
    offsets = np.asarray(offsets)
    if not np.all(np.isfinite(offsets)) or np.ptp(offsets) >= 1e-8 * scale:
        raise PremiseError(f"{where}: log densities of hand-written and generated differ by more than a "
                           f"constant: hand-written - generated = {offsets}")


@lru_cache(maxsize=None)
def _checked(model_name: str, column: str, parametrization: str | None, options: tuple, scenario: str | None) -> bool:
    request = request_for(model_name, column, parametrization=parametrization, options=dict(options), scenario=scenario)
    where = f"{model_name} ({request.labels.parametrization}) on {request.column}"
    assert_fit_runs_given_model(request)
    hand = handwritten(request)  # checked to carry the hand-written model
    assert_same_posterior(generated(request), hand, where)
    return True


def check_premise(model_name: str, column: str, parametrization: str | None = None,
                  options: Mapping[str, str] | None = None, scenario: str | None = None) -> None:
    """Assert, before timing, that the hand-written implementation is what runs and that it
    defines the generated model's posterior, on the model's default scenario unless given
    (once per model, column, parametrization, options and scenario in a process); raises
    :class:`PremiseError` otherwise."""
    _checked(model_name, column, parametrization, tuple(sorted((options or {}).items())), scenario)


# --------------------------------------------------------------------------- Stan's own clock


class StanClock:
    """A Stan engine (cmdstanpy or PyStan) that also keeps Stan's own warm-up and sampling
    seconds of each NUTS run (summed over chains), which the record scales to the wall
    time. It wraps the engine of both implementations alike; everything else is the
    engine's."""

    def __init__(self, engine) -> None:
        self.engine = engine
        self.readings: list[tuple[float, float]] = []

    def __getattr__(self, name: str):
        return getattr(self.engine, name)

    def nuts(self, data: dict, settings: SamplerSettings):
        out = self.engine.nuts(data, settings)
        self.readings.append((out[2], out[3]))
        return out


def with_stan_clock(compiled) -> tuple[Any, StanClock]:
    """The same program, data and engine, with the engine read by a :class:`StanClock`."""
    from polyppl.backends.stan.compiler import StanModel

    clock = StanClock(compiled.runner)
    return StanModel(compiled.model, compiled.dataset, compiled.program, compiled.data, clock), clock


# --------------------------------------------------------------------------- runs


def suite_stan_programs(models: list[str] | None = None, rows: bool = True) -> dict[str, str]:
    """The Stan programs the in-process benchmarks sample on PyStan, by label: each model's
    hand-written program, and with ``rows`` the two of the 10M-row benchmarks (generated
    centered counts, hand-written row-level). The generated default programs are left out:
    test_cold_compile compiles them."""
    from polyppl.backends.stan.program import engine_code, stan_program

    programs = {f"{name} hand-written": handwritten_stan_program(name, MODELS[name].default_parametrization)
                for name in (MODELS if models is None else models)}
    if rows:
        multilevel = MODELS["multilevel-logistic"]
        programs["multilevel-logistic centered, generated"] = engine_code(stan_program(
            multilevel.spec("centered", multilevel.dataset()).density_model()))
        programs["multilevel-logistic row-level, hand-written"] = handwritten_stan_program(
            "multilevel-logistic", "centered", row_level=True)
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

    for fit_file in (httpstan.cache.cache_directory() / "models").glob("*/fits/*.jsonlines.gz"):
        fit_file.unlink(missing_ok=True)


def run_once(model_name: str, column: str, implementation: str, settings: SamplerSettings = SETTINGS,
             dataset: Dataset | None = None, parametrization: str | None = None,
             options: Mapping[str, str] | None = None) -> dict[str, Any]:
    """Sample once (the model's default parametrization and scenario unless given); the
    timings, gradient counts and ESS of the run, flat. The model is compiled anew (from the
    libraries' caches) in every run, for both implementations."""
    request = request_for(model_name, column, settings, dataset, parametrization, options)
    compiled = compiled_for(request, implementation)
    clock = None
    if request.backend == "stan":
        if request.engine == "pystan":
            clear_pystan_fits()
        compiled, clock = with_stan_clock(compiled)
    record = fit(request, compiled=compiled).record
    t, d = record.timings, record.diagnostics
    extra = {}
    if clock is not None:
        if len(clock.readings) != 1:
            raise PremiseError(f"the {implementation} Stan engine built here ran {len(clock.readings)} times, not once")
        # Stan's own "Elapsed Time ... (Sampling)", summed over chains, per gradient of the
        # sampling draws: free of the engine's transport of the draws, which the wall clock counts.
        gradients = d.gradients_per_draw * settings.draws * settings.chains
        extra["stan_clock_seconds_per_gradient"] = clock.readings[-1][1] / gradients
    return {**extra,
        "parametrization": request.labels.parametrization,
        "engine": record.engine,
        "compile_s": t.compile_seconds,
        "compile_cached": t.compile_cached,
        "warmup_s": t.warmup_seconds,
        "sampling_s": t.sampling_seconds,
        "gradients_per_draw": d.gradients_per_draw,
        "seconds_per_gradient": d.seconds_per_gradient,
        "ess_bulk_min": d.ess_bulk_min,
        "ess_bulk_per_s": d.ess_bulk_per_second,
        "posterior_means": {k: s.mean for k, s in record.posterior.items()},
    }


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
NUMPYRO_GRADIENTS_PER_CALL = 10 if SMOKE else 1000


def gradient_call(model_name: str, backend: str, implementation: str) -> tuple[Callable[[], object], int]:
    """A call evaluating the log density and its gradient as the backend's NUTS does (PyMC's
    ``logp_dlogp_function``; NumPyro's potential inside a compiled loop), near the initial
    point, and how many evaluations one call makes. Both implementations are the compiled
    models a fit would run (:func:`compiled_for`)."""
    compiled = compiled_for(request_for(model_name, backend), implementation)
    if backend == "pymc":
        model = compiled.pymc_model
        function = model.logp_dlogp_function(ravel_inputs=True)
        function.set_extra_values({})
        point = np.concatenate([np.ravel(v) for v in model.initial_point().values()])
        return (lambda: function(point)), 1
    import jax
    from numpyro.infer.util import initialize_model

    init = initialize_model(jax.random.PRNGKey(0), compiled.model_fn)
    n = NUMPYRO_GRADIENTS_PER_CALL
    shift = jax.numpy.linspace(-0.1, 0.1, n)
    points = jax.tree.map(lambda v: v + shift.reshape((n,) + (1,) * v.ndim), init.param_info.z)
    loop = jax.jit(lambda zs: jax.lax.map(jax.value_and_grad(init.potential_fn), zs))
    return (lambda: jax.block_until_ready(loop(points))), n


def interleaved_seconds(calls: dict[str, tuple[Callable[[], object], int]], blocks: int = 1 if SMOKE else 11,
                        block_seconds: float = 0.01 if SMOKE else 0.2) -> dict[str, float]:
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
