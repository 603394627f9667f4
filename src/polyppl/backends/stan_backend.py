"""The Stan backend: the generated program, run by one of two engines.

* ``cmdstanpy`` when a CmdStan install is found (``cmdstanpy.cmdstan_path()``); compiled
  executables are cached under ``~/.cache/polyppl/cmdstan/<hash>``, the hash covering the
  program, the CmdStan version and the C++ compiler.
* ``pystan`` (PyStan 3 / httpstan) otherwise: nothing to download, Stan ships in the
  httpstan wheel; httpstan caches compiled models in its own cache directory (outside the
  source tree), keyed by the program and the httpstan (hence Stan) version.

No download is ever attempted.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import json
import os
import re
import shutil
import subprocess
import warnings
from pathlib import Path
from typing import Mapping, Protocol

import numpy as np

from polyppl.backends import BackendDraws, LogDensity, Timings, stopwatch
from polyppl.backends.stan_program import stan_data, stan_program
from polyppl.errors import UserError
from polyppl.settings import SamplerSettings
from polyppl.spec import Dataset, Model, Param

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


def cmdstan_path() -> str | None:
    """The CmdStan install cmdstanpy would use, or None. Never downloads."""
    try:
        import cmdstanpy

        with contextlib.redirect_stderr(io.StringIO()):
            return cmdstanpy.cmdstan_path()
    except (ValueError, ImportError, RuntimeError):
        return None


def choose_engine(requested: str = "auto") -> str:
    if requested == "auto":
        return "cmdstanpy" if cmdstan_path() else "pystan"
    if requested == "cmdstanpy" and not cmdstan_path():
        raise UserError("Stan engine 'cmdstanpy' asked for, but no CmdStan install was found (set CMDSTAN)")
    return requested


class StanEngine(Protocol):
    name: str

    def sample(self, program: str, data: dict, settings: SamplerSettings) -> tuple[dict[str, np.ndarray], int, Timings]:
        """Draws by Stan column name (chain, draw) for sampling, warm-up gradient count, timings."""
        ...

    def log_density(self, program: str, data: dict, model: Model) -> LogDensity: ...


@contextlib.contextmanager
def captured_output():
    """Hold back what PyStan and the C++ compiler print (at the file-descriptor level, since
    the compiler is a subprocess); show it only if the call fails."""
    import sys
    import tempfile

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
            tail = sink.read().decode("utf-8", "replace")[-4000:]
            print(tail, file=sys.stderr)
            raise
        finally:
            os.dup2(saved[0], 1)
            os.dup2(saved[1], 2)
            os.close(saved[0])
            os.close(saved[1])


def _split_elapsed(text: str) -> tuple[float, float]:
    warmup = sampling = 0.0
    for seconds, phase in _ELAPSED.findall(text):
        if phase == "Warm-up":
            warmup += float(seconds)
        else:
            sampling += float(seconds)
    return warmup, sampling


def _phase_timings(total: float, compile_seconds: float, cached: bool, warmup: float, sampling: float) -> Timings:
    """Scale the engine's summed per-chain phase times to the measured wall time."""
    engine_total = warmup + sampling
    if engine_total <= 0:
        return Timings(compile_seconds, 0.0, total, split="none", compile_cached=cached)
    return Timings(compile_seconds, total * warmup / engine_total, total * sampling / engine_total, "engine", cached)


def _columns_by_variable(columns: Mapping[str, np.ndarray], model: Model, shapes: Mapping[str, tuple[int, ...]]) -> dict[str, np.ndarray]:
    """Stan's flat columns (``rates.1`` or ``rates[1]``) back into arrays (chain, draw, *shape)."""
    out = {}
    for name in model.output_names:
        shape = shapes[name]
        if not shape:
            out[name] = columns[name]
            continue
        parts = []
        for i in range(shape[0]):
            key = f"{name}.{i + 1}" if f"{name}.{i + 1}" in columns else f"{name}[{i + 1}]"
            parts.append(columns[key])
        out[name] = np.stack(parts, axis=-1)
    return out


class PyStanEngine:
    name = "pystan"

    def _build(self, program: str, data: dict, seed: int):
        import httpstan.cache
        import httpstan.models
        import stan

        cached = httpstan.models.calculate_model_name(program) in httpstan.cache.list_model_names()
        with captured_output(), stopwatch() as elapsed:
            posterior = stan.build(program, data=data, random_seed=seed)
        return posterior, elapsed(), cached

    def sample(self, program: str, data: dict, settings: SamplerSettings):
        if settings.chain_method not in ("auto", "parallel"):
            raise UserError("PyStan runs chains in parallel only; chain_method 'sequential' needs CmdStan")
        posterior, compile_seconds, cached = self._build(program, data, settings.seed)
        if settings.init == "advi":
            raise NotImplementedError("PyStan 3 has no ADVI; initialisation from ADVI needs CmdStan")
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
        text = "\n".join(o.decode("utf-8", "replace") for o in fit.stan_outputs)
        warmup, sampling = _split_elapsed(text)
        if (warmup + sampling) / settings.chains > 2 * total:
            # Answered from httpstan's store of an identical earlier run: its own per-chain
            # times are the only measurement, so report those over the chains run at once.
            parallel = min(settings.chains, os.cpu_count() or 1)
            timings = Timings(compile_seconds, warmup / parallel, sampling / parallel, "engine (stored fit)", cached)
        else:
            timings = _phase_timings(total, compile_seconds, cached, warmup, sampling)
        columns: dict[str, np.ndarray] = {}
        draws = fit._draws  # (column, draw, chain); pystan's documented layout, no public accessor
        names = list(fit.sample_and_sampler_param_names) + list(fit.constrained_param_names)
        for index, name in enumerate(names):
            columns[name] = np.ascontiguousarray(draws[index].T)  # (chain, draw)
        warm = settings.tune
        warmup_steps = int(columns["n_leapfrog__"][:, :warm].sum())
        return {k: v[:, warm:] for k, v in columns.items()}, warmup_steps, timings

    def log_density(self, program: str, data: dict, model: Model) -> LogDensity:
        posterior, _, _ = self._build(program, data, 1)
        shapes = {p.name: _param_shape(p, data) for p in model.params}

        def function(point: Mapping[str, np.ndarray]) -> tuple[float, dict[str, np.ndarray]]:
            flat = np.concatenate([np.ravel(point[p.name]) for p in model.params]).tolist()
            logp = posterior.log_prob(flat, adjust_transform=True)
            grad = np.asarray(posterior.grad_log_prob(flat))
            return float(logp), _unflatten(grad, model, shapes)

        return LogDensity(shapes, function)


def _stored_fits(model_name: str) -> set[Path]:
    import httpstan.cache

    fits = httpstan.cache.model_directory(model_name) / "fits"
    return set(fits.iterdir()) if fits.is_dir() else set()


class CmdStanPyEngine:
    name = "cmdstanpy"

    def _model(self, program: str):
        import cmdstanpy

        cxx = shutil.which(os.environ.get("CXX", "g++")) or "c++"
        toolchain = subprocess.run([cxx, "--version"], capture_output=True, text=True).stdout.splitlines()[:1]
        key = hashlib.sha256(
            json.dumps([program, cmdstanpy.cmdstan_version(), toolchain]).encode()
        ).hexdigest()[:16]
        directory = Path(os.environ.get("POLYPPL_CACHE", Path.home() / ".cache" / "polyppl")) / "cmdstan" / key
        directory.mkdir(parents=True, exist_ok=True)
        stan_file = directory / "model.stan"
        if not stan_file.exists() or stan_file.read_text() != program:
            stan_file.write_text(program)
        exe = directory / "model"
        cached = exe.exists()
        with stopwatch() as elapsed:
            model = cmdstanpy.CmdStanModel(stan_file=str(stan_file), exe_file=str(exe) if cached else None)
        return model, elapsed(), cached

    def sample(self, program: str, data: dict, settings: SamplerSettings):
        if settings.chain_method == "vectorized":
            raise UserError("Stan has no vectorized chains; chain_method is sequential or parallel")
        model, compile_seconds, cached = self._model(program)
        inits = None
        if settings.init == "advi":
            vb = model.variational(data=data, seed=settings.seed, require_converged=False, show_console=False)
            inits = vb.stan_variables()
        with stopwatch() as elapsed:
            fit = model.sample(
                data=data,
                chains=settings.chains,
                parallel_chains=1 if settings.chain_method == "sequential" else min(settings.chains, os.cpu_count() or 1),
                seed=settings.seed,
                iter_warmup=settings.tune,
                iter_sampling=settings.draws,
                save_warmup=True,
                adapt_delta=settings.target_accept,
                max_treedepth=settings.max_tree_depth,
                inits=inits,
                show_progress=False,
                sig_figs=18,
            )
        total = elapsed()
        warmup = sum(t.get("warmup", 0.0) for t in fit.time.values())
        sampling = sum(t.get("sampling", 0.0) for t in fit.time.values())
        timings = _phase_timings(total, compile_seconds, cached, warmup, sampling)
        array = fit.draws(inc_warmup=True)  # (draw, chain, column)
        columns = {name: np.ascontiguousarray(array[:, :, i].T) for i, name in enumerate(fit.column_names)}
        warm = settings.tune
        warmup_steps = int(columns["n_leapfrog__"][:, :warm].sum())
        return {k: v[:, warm:] for k, v in columns.items()}, warmup_steps, timings

    def log_density(self, program: str, data: dict, model: Model) -> LogDensity:
        cmdstan_model, _, _ = self._model(program)
        shapes = {p.name: _param_shape(p, data) for p in model.params}

        def function(point: Mapping[str, np.ndarray]) -> tuple[float, dict[str, np.ndarray]]:
            # CmdStan's log_prob method takes constrained values and returns the gradient
            # with respect to the unconstrained ones.
            constrained = {p.name: _constrain(p, np.asarray(point[p.name], dtype=float)).tolist() for p in model.params}
            frame = cmdstan_model.log_prob(constrained, data, jacobian=True, sig_figs=18)
            row = frame.iloc[0].to_numpy(dtype=float)
            return float(row[0]), _unflatten(row[1:], model, shapes)

        return LogDensity(shapes, function)


def _param_shape(param: Param, data: dict) -> tuple[int, ...]:
    return tuple(int(data[f"N_{d}"]) for d in param.dims)


def _unflatten(flat: np.ndarray, model: Model, shapes: Mapping[str, tuple[int, ...]]) -> dict[str, np.ndarray]:
    out, offset = {}, 0
    for p in model.params:
        size = int(np.prod(shapes[p.name], dtype=int))
        out[p.name] = np.asarray(flat[offset : offset + size]).reshape(shapes[p.name])
        offset += size
    return out


def _constrain(param: Param, z: np.ndarray) -> np.ndarray:
    lower, upper = param.bounds
    if lower is None and upper is None:
        return z
    if upper is None:
        return lower + np.exp(z)
    return lower + (upper - lower) / (1.0 + np.exp(-z))


def engine(requested: str = "auto") -> StanEngine:
    return CmdStanPyEngine() if choose_engine(requested) == "cmdstanpy" else PyStanEngine()


def versions() -> dict[str, str]:
    from importlib.metadata import PackageNotFoundError, version

    out = {}
    for package in ("pystan", "httpstan", "cmdstanpy"):
        try:
            out[package] = version(package)
        except PackageNotFoundError:
            pass
    if cmdstan_path():
        import cmdstanpy

        out["cmdstan"] = ".".join(map(str, cmdstanpy.cmdstan_version() or ()))
    return out


def sample(model: Model, dataset: Dataset, settings: SamplerSettings) -> BackendDraws:
    program = stan_program(model)
    data = stan_data(model, dataset)
    chosen = engine(settings.stan_engine)
    columns, warmup_steps, timings = chosen.sample(program, data, settings)
    shapes = {n: dataset.shape(getattr(model[n], "dims", ())) for n in model.output_names}
    stats = {ours: columns[theirs] for theirs, ours in STAT_COLUMNS.items()}
    stats["diverging"] = stats["diverging"].astype(bool)
    stats["tree_depth"] = stats["tree_depth"].astype(np.int64)
    stats["n_steps"] = stats["n_steps"].astype(np.int64)
    return BackendDraws(
        posterior=_columns_by_variable(columns, model, shapes),
        stats=stats,
        warmup_gradient_evaluations=warmup_steps,
        timings=timings,
        engine=chosen.name,
    )


def log_density(model: Model, dataset: Dataset, engine_name: str = "auto") -> LogDensity:
    return engine(engine_name).log_density(stan_program(model), stan_data(model, dataset), model)


__all__ = ["cmdstan_path", "choose_engine", "engine", "log_density", "sample", "versions"]
