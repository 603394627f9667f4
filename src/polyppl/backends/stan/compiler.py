"""The Stan backend's compiler: the generated program (``program.py``), compiled once by one
of two engines, and methods run on it.

* ``cmdstanpy``: executables are cached under ``$POLYPPL_CACHE/cmdstan/<hash>`` (default
  ``~/.cache/polyppl``), the hash covering the program, the CmdStan version and the C++
  compiler, so a second run in a new process does not compile. Each run writes its CSV
  files to a folder of its own, removed once read (several runs at once never share one).
* ``pystan`` (PyStan 3 / httpstan): httpstan caches compiled models in its own cache
  directory, keyed by the program and the httpstan (hence Stan) version.

Both give the same draws layout, the seven sampler statistics under polyppl's names, warm-up
and sampling times from Stan's own per-chain report, and gradient counts.
"""

from __future__ import annotations

import contextlib
import copy
import hashlib
import io
import json
import logging
import os
import re
import sys
import tempfile
import warnings
from pathlib import Path
from typing import Callable, Mapping

import numpy as np

from polyppl.backends.stan import cmdstan_version, cxx_version
from polyppl.backends.stan.program import engine_code, is_array_of_vectors, stan_data, stan_program
from polyppl.inference.draws import Approximation, Draws, LogDensity, Timings, stopwatch
from polyppl.inference.methods import SamplerSettings, VariationalSettings
from polyppl.inference.numpy_model import constrain_point
from polyppl.inference.progress import note
from polyppl.inference.variational import psis_resample
from polyppl.spec import Dataset, Model, Observed, Param, SpecError, unconstrained_shape

warnings.filterwarnings("ignore", message=".*pkg_resources.*")

#: Stan's per-draw sampler columns -> polyppl's names.
STAT_COLUMNS = {
    "divergent__": "diverging",
    "treedepth__": "tree_depth",
    "n_leapfrog__": "n_steps",
    "energy__": "energy",
    "stepsize__": "step_size",
    "accept_stat__": "acceptance_rate",
    "lp__": "lp",
}
# Stan prints "Elapsed Time: 0.05 seconds (Warm-up)" and, on the next line, "0.04 seconds (Sampling)".
_ELAPSED = re.compile(r"([0-9.eE+-]+) seconds \((Warm-up|Sampling)\)")
# CmdStan's ADVI console: "Iteration: 200 / 250 [ 80%]  (Adaptation)" while it adapts eta, then one
# row per ELBO evaluation, "   900  -32.694  0.121  0.007   MEDIAN ELBO CONVERGED".
_ADVI_ADAPTATION = re.compile(r"Iteration:\s*(\d+)\s*/\s*\d+.*\(Adaptation\)")
_ADVI_ROW = re.compile(r"^\s*(\d+)\s+\S+\s+\S+\s+\S+(.*)$", re.MULTILINE)
# CmdStan's Pathfinder console, per path: a row "26  -7.9e-01 ...  651 ..." (iteration first) and
# "Path [1] :Best Iter: [15] ELBO (-39.43) evaluations: (651)".
_PATH_ROW = re.compile(r"^\s+(\d+)\s+[-+0-9.eE]+\s", re.MULTILINE)
_PATH_EVALUATIONS = re.compile(r"Best Iter: \[\d+\].*evaluations: \((\d+)\)")


#: What the first run of a Stan program waits for (51 to 86 s measured on 2 cores).
FIRST_COMPILE = "compiling the Stan program (first run of this program: about a minute; cached afterwards)"


def compile(model: Model, dataset: Dataset, engine: str, options: Mapping[str, str]) -> StanModel:
    if model.source is not None and model.source.language == "stan":
        # A model lowered from the user's Stan program: that program runs, unchanged, on its own
        # data, with the observed variables' values from this dataset (SBC's simulated ones).
        program, data = model.source.text, source_data(model, dataset)
    else:
        program, data = stan_program(model), stan_data(model, dataset)
    code = engine_code(program)
    runner = CmdStanPyEngine(code) if engine == "cmdstanpy" else PyStanEngine(code, data)
    return StanModel(model, dataset, program, data, runner)


class StanModel:
    """The generated program, compiled by one engine."""

    def __init__(self, model: Model, dataset: Dataset, program: str, data: dict, runner: CmdStanPyEngine | PyStanEngine):
        self.model, self.dataset, self.program, self.data, self.runner = model, dataset, program, data, runner
        self.engine = runner.name
        self.compile_seconds = runner.compile_seconds
        self.compile_cached = runner.compile_cached

    def run(self, method: str, settings: SamplerSettings) -> Draws:
        if isinstance(settings, SamplerSettings):  # the target the model asks for, unless the user set one
            settings = settings.for_model(self.model)
        return getattr(self, method)(settings)

    def with_data(self, dataset: Dataset) -> StanModel:
        """This program on another dataset, reusing the compiled executable (CmdStan takes the
        data with each run; PyStan builds the program with its data from httpstan's cache)."""
        data = source_data(self.model, dataset) if self.model.source is not None else stan_data(self.model, dataset)
        reused = StanModel(self.model, dataset, self.program, data, self.runner.with_data(data))
        reused.compile_seconds, reused.compile_cached = 0.0, True
        return reused

    def nuts(self, settings: SamplerSettings) -> Draws:
        columns, warmup_steps, warmup_s, sampling_s, total = self.runner.nuts(self.data, settings)
        shapes = {n: self.dataset.shape(getattr(self.model[n], "dims", ())) for n in self.model.output_names}
        stats = {ours: columns[theirs] for theirs, ours in STAT_COLUMNS.items()}
        stats["diverging"] = stats["diverging"].astype(bool)
        stats["tree_depth"] = stats["tree_depth"].astype(np.int64)
        stats["n_steps"] = stats["n_steps"].astype(np.int64)
        return Draws(
            posterior=_columns_by_variable(columns, self.model, shapes),
            stats=stats,
            warmup_gradient_evaluations=warmup_steps,
            timings=_phase_timings(total, self.compile_seconds, self.compile_cached, warmup_s, sampling_s),
            engine=self.engine,
        )

    def advi(self, settings: VariationalSettings) -> Draws:
        """CmdStan's mean-field ADVI (its own eta adaptation and stopping rule)."""
        return self._variational(settings.resolved("advi"), "meanfield")

    def fullrank(self, settings: VariationalSettings) -> Draws:
        """CmdStan's full-rank ADVI (its own eta adaptation and stopping rule)."""
        return self._variational(settings.resolved("fullrank"), "fullrank")

    def _variational(self, settings: VariationalSettings, algorithm: str) -> Draws:
        columns, console, seconds = self.runner.variational(self.data, settings, algorithm)
        adaptation = max((int(n) for n in _ADVI_ADAPTATION.findall(console)), default=0)
        rows = _ADVI_ROW.findall(console.partition("Begin stochastic gradient ascent")[2])
        iterations = int(rows[-1][0]) if rows else 0
        converged = bool(rows) and "CONVERGED" in rows[-1][1]
        log_p, log_q = columns["log_p__"][None], columns["log_g__"][None]
        return Draws(
            posterior=self._posterior({k: v[None] for k, v in columns.items()}),
            stats={"lp": log_p, "log_q": log_q},
            warmup_gradient_evaluations=0,
            # CmdStan fits and draws in one call: all of it is reported as fitting.
            timings=Timings(self.compile_seconds, seconds, 0.0, split="none", compile_cached=self.compile_cached),
            engine=f"cmdstan {algorithm} advi",
            # grad_samples gradients per step, eta's adaptation steps included
            approximation=Approximation("mean-field Gaussian" if algorithm == "meanfield" else "full-rank Gaussian",
                                        log_p, log_q, iterations, (adaptation + iterations) * settings.gradient_draws,
                                        converged,
                                        notes=() if converged else ("CmdStan reports no ELBO convergence",)),
        )

    def pathfinder(self, settings: VariationalSettings) -> Draws:
        """CmdStan's multi-path Pathfinder, its draws pooled and resampled by polyppl (as
        CmdStan would by default), so that Pareto k is computed from the raw draws."""
        settings = settings.resolved("pathfinder")
        columns, console, seconds = self.runner.pathfinder(self.data, settings)
        log_p = columns["lp__"].reshape(settings.paths, -1)
        log_q = columns["lp_approx__"].reshape(settings.paths, -1)
        chosen = psis_resample(log_p, log_q, settings.draws, settings.seed)
        iterations = [int(n) for n in _last_row_per_path(console)]
        return Draws(
            posterior=self._posterior({k: v[chosen][None] for k, v in columns.items()}),
            stats={"lp": log_p.ravel()[chosen][None], "log_q": log_q.ravel()[chosen][None]},
            warmup_gradient_evaluations=0,
            timings=Timings(self.compile_seconds, seconds, 0.0, split="none", compile_cached=self.compile_cached),
            engine="cmdstan pathfinder",
            # CmdStan counts log-density evaluations, its ELBO estimates' included.
            approximation=Approximation("Gaussian per path (L-BFGS inverse Hessian)", log_p, log_q, sum(iterations),
                                        sum(int(n) for n in _PATH_EVALUATIONS.findall(console)),
                                        converged=bool(iterations) and max(iterations) < settings.iterations),
        )

    def _posterior(self, columns: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        shapes = {n: self.dataset.shape(getattr(self.model[n], "dims", ())) for n in self.model.output_names}
        return _columns_by_variable(columns, self.model, shapes)

    def log_density(self) -> LogDensity:
        shapes = {p.name: unconstrained_shape(p, self.dataset) for p in self.model.params}
        evaluate = self.runner.log_density_function(
            self.data, self.model, shapes, lambda point: constrain_point(self.model, self.dataset, point))

        def function(point: Mapping[str, np.ndarray]) -> tuple[float, dict[str, np.ndarray]]:
            logp, flat_gradient = evaluate(point)
            return logp, _unflatten(flat_gradient, self.model, shapes)

        return LogDensity(shapes, function)


# --------------------------------------------------------------------------- cmdstanpy


class CmdStanPyEngine:
    name = "cmdstanpy"

    def __init__(self, program: str) -> None:
        import cmdstanpy

        # cmdstanpy logs every chain's start and end, and its own convergence warnings: the
        # record's diagnostics say the same for every engine, so only its errors are shown.
        # (Its logger is configured on first use, which would undo a level set before.)
        cmdstanpy.utils.get_logger().setLevel(logging.ERROR)
        key = hashlib.sha256(json.dumps([program, cmdstan_version(), cxx_version()]).encode()).hexdigest()[:16]
        directory = _cache_root() / "cmdstan" / key
        directory.mkdir(parents=True, exist_ok=True)
        stan_file = directory / "model.stan"
        if not stan_file.exists() or stan_file.read_text() != program:
            stan_file.write_text(program)
        exe = directory / "model"
        # Processes that compile the same program at once (workers of a grid) take turns.
        with exclusive(directory / "compile.lock"):
            self.compile_cached = exe.exists()
            if not self.compile_cached:
                note(FIRST_COMPILE)
            with stopwatch() as elapsed, captured_output():
                self.model = cmdstanpy.CmdStanModel(stan_file=str(stan_file),
                                                    exe_file=str(exe) if self.compile_cached else None)
        self.compile_seconds = elapsed()

    def with_data(self, data: dict) -> CmdStanPyEngine:
        """The same executable: CmdStan reads the data with each run."""
        return self

    def nuts(self, data: dict, settings: SamplerSettings) -> tuple[dict[str, np.ndarray], int, float, float, float]:
        inits = None
        with tempfile.TemporaryDirectory(prefix="polyppl-cmdstan-") as output_dir:
            if settings.init == "advi":
                vb = self.model.variational(data=data, seed=settings.seed, require_converged=False,
                                            show_console=False, output_dir=output_dir)
                inits = vb.stan_variables()
            elif settings.init == "pathfinder":
                with captured_output():
                    pathfinder = self.model.pathfinder(data=data, seed=settings.seed, show_console=False,
                                                       output_dir=output_dir)
                inits = pathfinder.create_inits(seed=settings.seed, chains=settings.chains)
            elif settings.init == "uniform":
                inits = 2.0  # CmdStan's own default: uniform(-2, 2) on the unconstrained scale
            parallel = 1 if settings.chain_method == "sequential" else min(settings.chains, os.cpu_count() or 1)
            with stopwatch() as elapsed:
                fit = self.model.sample(
                    data=data,
                    chains=settings.chains,
                    parallel_chains=parallel,
                    # Chains one after another run in one CmdStan process (the same draws as a
                    # process per chain; 40 ms less per fit of eight schools).
                    force_one_process_per_chain=False if parallel == 1 else None,
                    seed=settings.seed,
                    iter_warmup=settings.tune,
                    iter_sampling=settings.draws,
                    # CmdStan refuses to adapt without warm-up iterations (PyStan just skips
                    # it), and cmdstanpy refuses a target for an adaptation that is off.
                    adapt_engaged=settings.tune > 0,
                    save_warmup=True,
                    adapt_delta=settings.target_accept if settings.tune > 0 else None,
                    max_treedepth=settings.max_tree_depth,
                    inits=inits,
                    show_progress=False,
                    show_console=False,
                    sig_figs=18,
                    output_dir=output_dir,
                )
            total = elapsed()
            # Read here, before the folder goes, but outside the clock: parsing the text is
            # not sampling, and the phases are split in proportion of this clock. One chain
            # at a time, the warm-up rows only for their gradient count (cmdstanpy's draws()
            # would hold every row of every chain, warm-up included: 0.8 GB at 2,048 groups,
            # then copied by column).
            columns, warmup_steps = _read_sampler_csvs(fit.runset.csv_files, fit.column_names, settings.tune)
            chain_times = fit.time  # per chain: {"warmup": s, "sampling": s, "total": s}
        warmup = sum(t.get("warmup", 0.0) for t in chain_times)
        sampling = sum(t.get("sampling", 0.0) for t in chain_times)
        return columns, warmup_steps, warmup, sampling, total

    def variational(self, data: dict, settings: VariationalSettings,
                    algorithm: str) -> tuple[dict[str, np.ndarray], str, float]:
        """CmdStan's ADVI: the draws by column (without the mean's row), the console text and
        the wall time."""
        with tempfile.TemporaryDirectory(prefix="polyppl-cmdstan-") as output_dir:
            with stopwatch() as elapsed, captured_output():
                fit = self.model.variational(
                    data=data, seed=settings.seed, algorithm=algorithm, iter=settings.iterations,
                    tol_rel_obj=settings.tolerance, grad_samples=settings.gradient_draws, draws=settings.draws,
                    require_converged=False,
                    show_console=False, sig_figs=18, output_dir=output_dir)
            array = np.asarray(fit.variational_sample, dtype=float)
            console = _console(fit.runset.stdout_files)
        return {name: array[:, i] for i, name in enumerate(fit.column_names)}, console, elapsed()

    def pathfinder(self, data: dict, settings: VariationalSettings) -> tuple[dict[str, np.ndarray], str, float]:
        """CmdStan's multi-path Pathfinder without resampling: every path's draws by column
        (path after path), the console text and the wall time. CmdStan's L-BFGS tolerance on
        the relative change of the objective is in units of machine epsilon."""
        with tempfile.TemporaryDirectory(prefix="polyppl-cmdstan-") as output_dir:
            with stopwatch() as elapsed, captured_output():
                fit = self.model.pathfinder(
                    data=data, seed=settings.seed, num_paths=settings.paths, num_single_draws=settings.draws,
                    draws=settings.draws, max_lbfgs_iters=settings.iterations,
                    tol_rel_obj=settings.tolerance / np.finfo(float).eps, psis_resample=False, show_console=False,
                    sig_figs=18, output_dir=output_dir)
            array = np.asarray(fit.draws(), dtype=float)
            console = _console(fit._runset.stdout_files)  # cmdstanpy keeps the console files on the run set
        return {name: array[:, i] for i, name in enumerate(fit.column_names)}, console, elapsed()

    def log_density_function(self, data: dict, model: Model, shapes: Mapping[str, tuple[int, ...]],
                             constrain: Callable[[Mapping[str, np.ndarray]], dict[str, np.ndarray]]):
        def evaluate(point: Mapping[str, np.ndarray]) -> tuple[float, np.ndarray]:
            # CmdStan's log_prob method takes constrained values (by the transforms every
            # backend shares, numpy_model.constrain) and returns the gradient with respect to
            # the unconstrained ones.
            constrained = {name: value.tolist() for name, value in constrain(point).items()}
            with captured_output():
                frame = self.model.log_prob(constrained, data, jacobian=True, sig_figs=18)
            row = frame.iloc[0].to_numpy(dtype=float)
            return float(row[0]), row[1:]

        return evaluate


# --------------------------------------------------------------------------- PyStan


def _httpstan_without_fork() -> None:
    """httpstan runs each chain in a process pool it creates with the ``fork`` start method
    (``httpstan/services_stub.py``), and forking a process in which JAX's threads run can
    deadlock. Where JAX runs here, its pool is replaced, once, by one whose processes start
    from the fork server (httpstan's worker function is a picklable module-level function,
    made for that). Elsewhere the fork pool stays: a fork server's processes import the
    user's ``__main__`` script again, which fails for a plain script that calls
    ``polyppl.sample(..., "stan")`` at its top level (no ``if __name__ == "__main__":``)."""
    import concurrent.futures
    import multiprocessing

    import httpstan.services_stub as stub

    if stub.executor._mp_context.get_start_method() == "fork" and _jax_running():
        stub.executor = concurrent.futures.ProcessPoolExecutor(
            mp_context=multiprocessing.get_context("forkserver"), initializer=stub.init_worker)


def _jax_running() -> bool:
    """Whether JAX's runtime (and its threads) started in this process. ``"jax" in
    sys.modules`` is not it: ArviZ registers a lazy ``jax`` module that loads nothing."""
    bridge = sys.modules.get("jax._src.xla_bridge")
    return bridge is not None and bool(getattr(bridge, "_backends", True))


class PyStanEngine:
    name = "pystan"

    def __init__(self, program: str, data: dict) -> None:
        import httpstan.cache
        import httpstan.models

        _httpstan_without_fork()
        self.program, self.data = program, data
        name = httpstan.models.calculate_model_name(program)
        # PyStan builds a program with its data and seed; the first build compiles (cached
        # by httpstan afterwards), so later builds with other seeds cost milliseconds.
        # Processes that build the same program at once (workers of a grid) take turns.
        with exclusive(_cache_root() / "httpstan-locks" / f"{name.replace('/', '-')}.lock"):
            self.compile_cached = name in httpstan.cache.list_model_names()
            if not self.compile_cached:
                note(FIRST_COMPILE)
            with stopwatch() as elapsed:
                self.posterior = self._build(1)
        self.compile_seconds = elapsed()

    def with_data(self, data: dict) -> PyStanEngine:
        """The same program with other data: built (from httpstan's cache) at each run."""
        reused = copy.copy(self)
        reused.data, reused.posterior, reused.compile_seconds, reused.compile_cached = data, None, 0.0, True
        return reused

    def _build(self, seed: int):
        import stan

        with captured_output():
            return stan.build(self.program, data=self.data, random_seed=seed)

    def nuts(self, data: dict, settings: SamplerSettings) -> tuple[dict[str, np.ndarray], int, float, float, float]:
        posterior = self._build(settings.seed)
        # httpstan stores every seeded fit (megabytes each) and answers a repeated request
        # from that store. Fits this call adds are removed afterwards; a fit answered from
        # the store is recognised by its timings below. (Fits of other processes are left
        # alone: removing them mid-run breaks those runs.)
        stored_before = _stored_fits(posterior.model_name)
        arguments = dict(
            num_chains=settings.chains,
            num_samples=settings.draws,
            num_warmup=settings.tune,
            save_warmup=True,
            delta=settings.target_accept,
            max_depth=settings.max_tree_depth,
            # No progress messages: httpstan parses each chunk of 8192 bytes of the log that
            # holds "info:Iteration" with a regular expression and fails (IndexError 'pop from
            # empty list', httpstan 4.13 views.py) when the chunk cuts the message short, as a
            # burst of rejection messages does (lme4's sleepstudy). polyppl shows no progress bar.
            refresh=0,
        )
        with captured_output(), stopwatch() as elapsed:
            try:
                fit = posterior.sample(**arguments)
            except RuntimeError as error:
                # Another process running the identical fit (same program, data and seed)
                # removed the shared stored copy between httpstan's writing and reading it.
                if "not found" not in str(error):
                    raise
                fit = posterior.sample(**arguments)
        total = elapsed()
        for path in _stored_fits(posterior.model_name) - stored_before:
            path.unlink(missing_ok=True)
        # Only the lines that can hold Stan's elapsed times: the outputs also hold every draw as
        # JSON (megabytes), which the pattern would scan for seconds (2 s for 4 x 2000 draws).
        warmup, sampling = split_elapsed("\n".join(line.decode("utf-8", "replace") for o in fit.stan_outputs
                                                   for line in o.splitlines() if b" seconds (" in line))
        if (warmup + sampling) / settings.chains > 2 * total:
            # Answered from httpstan's store of an identical earlier run: its own per-chain
            # times are the only measurement; report them over the chains run at once.
            parallel = min(settings.chains, os.cpu_count() or 1)
            total = (warmup + sampling) / parallel
        draws = fit._draws  # (column, draw, chain); PyStan's documented layout, no public accessor
        names = list(fit.sample_and_sampler_param_names) + list(fit.constrained_param_names)
        columns = {name: np.ascontiguousarray(draws[index].T) for index, name in enumerate(names)}
        return _split_warmup(columns, settings.tune) + (warmup, sampling, total)

    def log_density_function(self, data: dict, model: Model, shapes: Mapping[str, tuple[int, ...]],
                             constrain: Callable[[Mapping[str, np.ndarray]], dict[str, np.ndarray]]):
        posterior = self.posterior or self._build(1)

        def evaluate(point: Mapping[str, np.ndarray]) -> tuple[float, np.ndarray]:
            # Stan's unconstrained vector holds a matrix column by column.
            flat = np.concatenate([stan_ravel(model, p.name, point[p.name]) for p in stan_order(model)]).tolist()
            return float(posterior.log_prob(flat, adjust_transform=True)), np.asarray(posterior.grad_log_prob(flat))

        return evaluate


def _cache_root() -> Path:
    return Path(os.environ.get("POLYPPL_CACHE", Path.home() / ".cache" / "polyppl"))


@contextlib.contextmanager
def exclusive(path: Path):
    """Hold an exclusive lock on ``path`` (created if missing) for the block: one process at
    a time, across processes (``flock``; released if the holder dies)."""
    import fcntl

    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def _stored_fits(model_name: str) -> set[Path]:
    import httpstan.cache

    fits = httpstan.cache.model_directory(model_name) / "fits"
    return set(fits.iterdir()) if fits.is_dir() else set()


# --------------------------------------------------------------------------- shared


@contextlib.contextmanager
def captured_output():
    """Hold back what PyStan, CmdStan and the C++ compiler print (at the file-descriptor
    level, since the compiler is a subprocess); show it only if the call fails."""
    sys.stdout.flush()
    sys.stderr.flush()
    saved = os.dup(1), os.dup(2)
    with tempfile.TemporaryFile(mode="w+b") as sink:
        os.dup2(sink.fileno(), 1)
        os.dup2(sink.fileno(), 2)
        try:
            with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
                yield
        except BaseException:
            sys.stdout.flush()
            sys.stderr.flush()
            os.dup2(saved[0], 1)
            os.dup2(saved[1], 2)
            sink.seek(0)
            print(sink.read().decode("utf-8", "replace")[-4000:], file=sys.stderr)
            raise
        finally:
            os.dup2(saved[0], 1)
            os.dup2(saved[1], 2)
            os.close(saved[0])
            os.close(saved[1])


def _console(paths: list[str]) -> str:
    return "\n".join(Path(path).read_text(errors="replace") for path in paths if Path(path).exists())


def _last_row_per_path(console: str) -> list[str]:
    """The iteration number of each Pathfinder path's last table row."""
    return [rows[-1] for block in console.split("Best Iter:")[:-1] if (rows := _PATH_ROW.findall(block))]


def split_elapsed(text: str) -> tuple[float, float]:
    """Stan's own warm-up and sampling seconds, summed over chains, from its console output."""
    warmup = sampling = 0.0
    for seconds, phase in _ELAPSED.findall(text):
        if phase == "Warm-up":
            warmup += float(seconds)
        else:
            sampling += float(seconds)
    return warmup, sampling


#: Sampling rows of several chains are parsed in one call up to this much text (pandas's
#: fixed cost is about 0.7 ms a call); larger chains one at a time, to bound memory.
_CSV_BATCH_BYTES = 32 * 2**20


def _read_sampler_csvs(paths: list[str], names: tuple[str, ...], tune: int) -> tuple[dict[str, np.ndarray], int]:
    """CmdStan's sampler CSV files (one per chain, warm-up rows first) as sampling draws by
    column, each (chain, draw) and a view into one array, and the warm-up's leapfrog steps.

    Only the sampling rows are parsed as numbers, by pandas's C reader (exact to the last
    bit, as np.loadtxt, which took twice as long); of a warm-up row only its leapfrog count
    is read (the warm-up is most of a short run's text: eight schools' fits of 500 + 250
    iterations read in 11 ms instead of 20)."""
    import pandas as pd

    leapfrog = names.index("n_leapfrog__")
    warmup_steps = 0
    draws: np.ndarray | None = None  # (column, chain, draw), filled as batches are parsed
    batch: list[bytes] = []
    parsed = 0  # chains parsed into ``draws``

    def parse(upto: int) -> None:
        nonlocal parsed
        if upto > parsed:
            table = pd.read_csv(io.BytesIO(b"\n".join(batch)), header=None, dtype=float).to_numpy(dtype=float)
            draws[:, parsed:upto, :] = table.reshape(upto - parsed, -1, len(names)).transpose(2, 0, 1)
            batch.clear()
            parsed = upto

    for chain, path in enumerate(paths):
        lines = [line for line in Path(path).read_bytes().split(b"\n") if line and not line.startswith(b"#")]
        if lines[0].count(b",") + 1 != len(names):  # CmdStan writes theta.1 where cmdstanpy says theta[1]
            raise RuntimeError(f"{path}: {lines[0].count(b',') + 1} columns; cmdstanpy expected {len(names)}")
        if draws is None:
            draws = np.empty((len(names), len(paths), len(lines) - 1 - tune))
        if len(lines) - 1 - tune != draws.shape[2]:
            raise RuntimeError(f"{path}: {len(lines) - 1 - tune} draws; the first chain has {draws.shape[2]}")
        warmup_steps += sum(int(float(line.split(b",", leapfrog + 1)[leapfrog])) for line in lines[1: 1 + tune])
        if sum(map(len, batch)) + sum(map(len, lines)) > _CSV_BATCH_BYTES:
            parse(chain)
        batch.extend(lines[1 + tune:])
    parse(len(paths))
    assert draws is not None
    return {name: draws[i] for i, name in enumerate(names)}, warmup_steps


def _split_warmup(columns: dict[str, np.ndarray], tune: int) -> tuple[dict[str, np.ndarray], int]:
    """The sampling draws by column, and the warm-up's gradient evaluations."""
    warmup_steps = int(columns["n_leapfrog__"][:, :tune].sum())
    return {k: v[:, tune:] for k, v in columns.items()}, warmup_steps


def _phase_timings(total: float, compile_seconds: float, cached: bool, warmup: float, sampling: float) -> Timings:
    """Scale the engine's summed per-chain phase times to the measured wall time."""
    engine_total = warmup + sampling
    if engine_total <= 0:
        return Timings(compile_seconds, 0.0, total, split="none", compile_cached=cached)
    return Timings(compile_seconds, total * warmup / engine_total, total * sampling / engine_total, "engine", cached)


def _columns_by_variable(columns: Mapping[str, np.ndarray], model: Model, shapes: Mapping[str, tuple[int, ...]]) -> dict[str, np.ndarray]:
    """Stan's flat columns (``rates.1``, ``z.2.3`` or ``rates[1]``, ``z[2,3]``) back into arrays
    (chain, draw, *shape)."""
    out = {}
    for name in model.output_names:
        shape = shapes[name]
        if not shape:
            out[name] = columns[name]
            continue
        value = np.empty(columns[next(iter(columns))].shape + tuple(shape))
        for index in np.ndindex(*shape):
            dotted = ".".join(str(i + 1) for i in index)
            key = f"{name}.{dotted}" if f"{name}.{dotted}" in columns else f"{name}[{dotted.replace('.', ',')}]"
            value[(..., *index)] = columns[key]
        out[name] = value
    return out


def source_data(model: Model, dataset: Dataset) -> dict:
    """The data of the program a model was lowered from: the program's own, with each observed
    variable's value taken from ``dataset`` (the variables the spec observes are the data block's
    variables of the same names). Only observed values can change: the lowered spec holds the
    rest, and what transformed data computed, as they were in the program's data."""
    data = json.loads(model.source.data_json)
    for node in model.of_type(Observed):
        if node.name not in data:
            # Computed by the program's transformed data from its own data: the program computes it
            # again, so it cannot take another value (SBC refuses such a program before it runs).
            continue
        value = np.asarray(dataset.values[node.name])
        data[node.name] = value.astype(np.int64 if node.dtype == "int" else np.float64).tolist()
    return data


def stan_order(model: Model) -> list[Param]:
    """The parameters in the order of the program's unconstrained vector: the spec's order for
    a generated program, the declaration order of the user's program it was lowered from."""
    if model.source is None:
        return model.params
    return [model[name] for name in model.source.parameters]


def _unflatten(flat: np.ndarray, model: Model, shapes: Mapping[str, tuple[int, ...]]) -> dict[str, np.ndarray]:
    out, offset = {}, 0
    for p in stan_order(model):
        size = int(np.prod(shapes[p.name], dtype=int))
        out[p.name] = stan_unravel(model, p.name, np.asarray(flat[offset : offset + size]), shapes[p.name])
        offset += size
    return out


def _layout(model: Model, name: str, ndim: int) -> list[int]:
    """The axes of a parameter's value in the order Stan's unconstrained vector runs them
    slowest first: an array element after element, a matrix (or vector) column by column."""
    if model.source is not None:
        rank = model.source.array_rank(name)
    else:
        rank = 1 if is_array_of_vectors(model[name]) else 0
    rank = min(rank, ndim)
    return list(range(rank)) + list(reversed(range(rank, ndim)))


def stan_ravel(model: Model, name: str, value: np.ndarray) -> np.ndarray:
    """A parameter's unconstrained value as its part of Stan's unconstrained vector."""
    value = np.asarray(value)
    return np.ravel(np.transpose(value, _layout(model, name, value.ndim)))


def stan_unravel(model: Model, name: str, flat: np.ndarray, shape: tuple[int, ...]) -> np.ndarray:
    """:func:`stan_ravel` undone."""
    axes = _layout(model, name, len(shape))
    return np.transpose(flat.reshape([shape[a] for a in axes]), np.argsort(axes))


