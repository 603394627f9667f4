"""The PyMC compiler: a specification becomes a ``pm.Model``, sampled by PyMC's own NUTS,
nutpie's or NumPyro's (the engines declared in ``__init__``)."""

from __future__ import annotations

import logging
import os
import time
import warnings
from typing import Mapping

import numpy as np

from polyppl.backends.beta_binomial_math import pytensor_beta_binomial_logpmf
from polyppl.backends.pymc.corr_cholesky import (
    flat_cholesky_factor_cov, flat_corr_cholesky, flat_corr_matrix, lkj_corr_cholesky,
)
from polyppl.backends.pymc.stan_transforms import FAMILIES as CONSTRAINED_FLAT
from polyppl.backends.pymc.stan_transforms import constrained_flat
from polyppl.inference.draws import STAT_NAMES, Approximation, Draws, LogDensity, Timings, split_by_gradients, stopwatch
from polyppl.inference.methods import SamplerSettings, VariationalSettings
from polyppl.inference.progress import Percent, note
from polyppl.inference.variational import ELBO_EVERY, psis_resample
from polyppl.spec import Data, Dataset, Deterministic, Dist, Factor, Model, Observed, Param, evaluate

import pymc as pm  # noqa: E402  (after the polyppl imports: keeps import errors readable)
import pytensor  # noqa: E402
import pytensor.tensor as pt  # noqa: E402

#: polyppl family -> (PyMC class, {polyppl argument: PyMC argument}).
DISTRIBUTIONS = {
    "normal": (pm.Normal, {"mu": "mu", "sigma": "sigma"}),
    "half_normal": (pm.HalfNormal, {"sigma": "sigma"}),
    "student_t": (pm.StudentT, {"nu": "nu", "mu": "mu", "sigma": "sigma"}),
    "half_student_t": (pm.HalfStudentT, {"nu": "nu", "sigma": "sigma"}),
    "cauchy": (pm.Cauchy, {"mu": "alpha", "sigma": "beta"}),
    "half_cauchy": (pm.HalfCauchy, {"sigma": "beta"}),
    "beta": (pm.Beta, {"alpha": "alpha", "beta": "beta"}),
    "gamma": (pm.Gamma, {"alpha": "alpha", "beta": "beta"}),
    "exponential": (pm.Exponential, {"rate": "lam"}),
    "uniform": (pm.Uniform, {"lower": "lower", "upper": "upper"}),
    "flat": (pm.Flat, {}),
    "half_flat": (pm.HalfFlat, {}),
    "binomial": (pm.Binomial, {"n": "n", "p": "p"}),
    "binomial_logit": (pm.Binomial, {"n": "n", "logit_p": "logit_p"}),
    "beta_binomial": (None, {"n": "n", "alpha": "alpha", "beta": "beta"}),  # _beta_binomial below
    "bernoulli": (pm.Bernoulli, {"p": "p"}),
    "bernoulli_logit": (pm.Bernoulli, {"logit_p": "logit_p"}),
    "poisson": (pm.Poisson, {"rate": "mu"}),
    "poisson_log": (pm.Poisson, {"log_rate": "mu"}),
    "lognormal": (pm.LogNormal, {"mu": "mu", "sigma": "sigma"}),
    "inv_gamma": (pm.InverseGamma, {"alpha": "alpha", "beta": "beta"}),
    "double_exponential": (pm.Laplace, {"mu": "mu", "sigma": "b"}),
    "logistic": (pm.Logistic, {"mu": "mu", "sigma": "s"}),
    "weibull": (pm.Weibull, {"alpha": "alpha", "sigma": "beta"}),
    "chi_square": (pm.ChiSquared, {"nu": "nu"}),
    "neg_binomial_2": (pm.NegativeBinomial, {"mu": "mu", "phi": "alpha"}),
    "neg_binomial_2_log": (pm.NegativeBinomial, {"log_mu": "mu", "phi": "alpha"}),
}
#: Arguments PyMC takes on another scale than the spec: poisson_log's rate by its log.
_ARGUMENT_SCALE = {("poisson_log", "log_rate"): pt.exp, ("neg_binomial_2_log", "log_mu"): pt.exp}

def _matmul(a, b):
    """A matrix times a vector or a matrix as a product and a sum, which PyTensor compiles to
    C: its Dot becomes a Python Op where PyTensor links no BLAS (a pip install), measured at
    0.13 ms a call against 5 us for the elementwise form on the seed's formula."""
    if b.ndim == 1:
        return (a * b).sum(axis=-1)
    return (a[:, :, None] * b[None, :, :]).sum(axis=1)


FUNCTIONS = {
    "neg": lambda x: -x,
    "exp": pt.exp,
    "log": pt.log,
    "log1p": pt.log1p,
    "erfc": pt.erfc,
    "atan": pt.arctan,
    "expm1": pt.expm1,
    "gamma_p": pt.gammainc,
    "gamma_q": pt.gammaincc,
    "lgamma": pt.gammaln,
    "sqrt": pt.sqrt,
    "inv_logit": pm.math.invlogit,
    "logit": pm.math.logit,
    "where": pt.switch,
    "matmul": _matmul,
    "transpose": lambda a: a.T,
    "diag_pre_multiply": lambda v, a: v[:, None] * a,
    "rows_dot": lambda a, b: (a * b).sum(axis=-1),
    "log_sum_exp": pt.logaddexp,
    "sum": pt.sum,
    "max": pt.max,
    "cholesky": lambda a: pt.linalg.cholesky(a, lower=True),
    "solve_lower": lambda lower, b: pt.linalg.solve_triangular(lower, b, lower=True),
    "diagonal": pt.diagonal,
    "|": pt.or_,
    "concat": lambda *parts: pt.concatenate([pt.flatten(p) for p in parts]),
    "scan": lambda step, init, sequences, outer: _scan(step, init, sequences, outer),
}


def _scan(step, init, sequences, outer):
    """PyTensor's scan: one node in the graph, whatever the number of steps. The nodes the
    step reads besides its state and elements (parameters) go in as non-sequences: PyMC
    finds the random variables of a scan's inner graph only there."""
    state = pt.as_tensor_variable(init).astype(pytensor.config.floatX)
    sequences = [pt.as_tensor_variable(s_) for s_ in sequences]
    outer = [pt.as_tensor_variable(v) for v in outer]
    n = len(sequences)

    def one(*args):
        elements, carry, outer_values = args[:n], args[n], args[n + 1:]
        return pt.as_tensor_variable(step(carry, elements, outer_values)).astype(state.dtype)

    return pytensor.scan(one, sequences=sequences, outputs_info=[state], non_sequences=outer, return_updates=False)


def _logit_logpmf(value, logit_p, n=None):
    """The Bernoulli (``n`` None) or Binomial log-pmf of ``value`` given the log-odds, as
    ``value * logit_p - n * softplus(logit_p)`` plus the binomial coefficient: PyMC's own
    (``Bernoulli(logit_p=...)``, ``Binomial(logit_p=...)``) goes through the probability, and
    its gradient is NaN once a log-odds passes about 36 (posteriordb's wells_dist, whose
    log-odds reach 67, had a NaN gradient in beta); -inf off the support."""
    if n is None:
        inside, coefficient, n = pt.eq(value, 0) | pt.eq(value, 1), 0.0, 1
    else:
        inside = (value >= 0) & (value <= n)
        coefficient = pt.gammaln(n + 1.0) - pt.gammaln(value + 1.0) - pt.gammaln(n - value + 1.0)
    return pt.switch(inside, coefficient + value * logit_p - n * pt.softplus(logit_p), -np.inf)


def _logit_draws(*args, rng=None, size=None):
    """Draws of a Bernoulli (log-odds) or Binomial (n, log-odds)."""
    n, logit_p = (1, args[0]) if len(args) == 1 else args
    return rng.binomial(n, 1.0 / (1.0 + np.exp(-np.asarray(logit_p))), size=size)


def _logit_variable(name: str, family: str, args: dict, **kwargs):
    if family == "bernoulli_logit":
        return pm.CustomDist(name, args["logit_p"], logp=lambda value, x: _logit_logpmf(value, x),
                             random=_logit_draws, dtype="int64", **kwargs)
    return pm.CustomDist(name, args["n"], args["logit_p"], logp=lambda value, n, x: _logit_logpmf(value, x, n),
                         random=_logit_draws, dtype="int64", **kwargs)


#: Families with a log-odds argument, whose log-pmf is written out (``_logit_logpmf``).
_LOGIT_FAMILIES = frozenset({"bernoulli_logit", "binomial_logit"})


def _lpdf(family: str, args: dict, value):
    """``family``'s log density of ``value``, summed over its elements (a Factor's term)."""
    if family == "beta_binomial":
        return pytensor_beta_binomial_logpmf(value, args["n"], args["alpha"], args["beta"]).sum()
    if family in _LOGIT_FAMILIES:
        return _logit_logpmf(value, args["logit_p"], args.get("n")).sum()
    cls, names = DISTRIBUTIONS[family]
    scaled = {names[k]: _ARGUMENT_SCALE.get((family, k), lambda x: x)(v) for k, v in args.items()}
    return pm.logp(cls.dist(**scaled), value).sum()


FUNCTIONS["lpdf"] = _lpdf


def _random_variable(name: str, dist: Dist, env: dict, dims: tuple[str, ...], **kwargs):
    if dist.family == "lkj_corr_cholesky":
        k = len(pm.modelcontext(None).coords[dims[0]])
        return lkj_corr_cholesky(name, evaluate(dist.kwargs["eta"], env, FUNCTIONS), k, dims)
    if dist.family == "flat_corr_cholesky":
        return flat_corr_cholesky(name, len(pm.modelcontext(None).coords[dims[0]]), dims)
    if dist.family == "flat_corr_matrix":
        return flat_corr_matrix(name, len(pm.modelcontext(None).coords[dims[0]]), dims)
    if dist.family in ("flat_cholesky_factor_cov", "flat_cov_matrix"):
        return flat_cholesky_factor_cov(name, len(pm.modelcontext(None).coords[dims[0]]),
                                        dist.family == "flat_cov_matrix", dims)
    if dist.family in CONSTRAINED_FLAT:
        k = len(pm.modelcontext(None).coords[dims[-1]]) if dist.info.event_dims else None
        return constrained_flat(name, dist.family, [evaluate(e, env, FUNCTIONS) for _, e in dist.args], dims, k)
    cls, names = DISTRIBUTIONS[dist.family]
    args = {names[k]: _ARGUMENT_SCALE.get((dist.family, k), lambda x: x)(evaluate(e, env, FUNCTIONS))
            for k, e in dist.args}
    if dist.family == "beta_binomial":
        return _beta_binomial(name, **args, dims=dims or None, **kwargs)
    if dist.family in _LOGIT_FAMILIES:
        return _logit_variable(name, dist.family, {k: evaluate(e, env, FUNCTIONS) for k, e in dist.args},
                               dims=dims or None, **kwargs)
    return cls(name, **args, dims=dims or None, **kwargs)


def _beta_binomial_draws(n, alpha, beta, rng=None, size=None):
    return rng.binomial(n, rng.beta(alpha, beta, size=size))


def _beta_binomial(name: str, n, alpha, beta, **kwargs):
    """PyMC's BetaBinomial takes differences of lgamma values, which lose all precision at
    large alpha + beta (the sampler then drifts there); this one computes the log-pmf in the
    stable form of ``beta_binomial_math``, as one compiled op with analytic partials."""
    return pm.CustomDist(
        name, n, alpha, beta,
        logp=lambda value, n, alpha, beta: pytensor_beta_binomial_logpmf(value, n, alpha, beta),
        random=_beta_binomial_draws, dtype="int64", **kwargs,
    )


def build(model: Model, dataset: Dataset, shared_data: bool = False) -> pm.Model:
    """Walk the specification once, in order, adding each node to a PyMC model.

    ``shared_data``: data and observed values become ``pm.Data`` containers (the observed
    ones named by :func:`_observed_data_name`), so that ``pm.set_data`` swaps in another
    dataset of the same shapes without building or compiling anything again."""
    coords = {d: list(dataset.coords[d]) for d in model.dims}
    values = _data_values(model, dataset)
    with pm.Model(coords=coords) as pymc_model:
        env: dict = {}
        for node in model.nodes:
            if isinstance(node, Data):
                env[node.name] = (pm.Data(node.name, values[node.name]) if shared_data
                                  else pt.as_tensor_variable(values[node.name]))
            elif isinstance(node, Param):
                env[node.name] = _random_variable(node.name, node.dist, env, node.dims)
            elif isinstance(node, Deterministic):
                env[node.name] = pm.Deterministic(node.name, evaluate(node.expr, env, FUNCTIONS), dims=node.dims or None)
            elif isinstance(node, Factor):
                pm.Potential(node.name, evaluate(node.expr, env, FUNCTIONS))
            elif isinstance(node, Observed):
                observed = values[_observed_data_name(node.name)]
                if shared_data:
                    observed = pm.Data(_observed_data_name(node.name), observed)
                _random_variable(node.name, node.dist, env, node.dims, observed=observed)
    return pymc_model


def _observed_data_name(name: str) -> str:
    """The ``pm.Data`` container of an observed node's values (the node's own name is its
    random variable's)."""
    return f"{name}__observed"


def _data_values(model: Model, dataset: Dataset) -> dict[str, np.ndarray]:
    """Values of the data nodes (by name) and of the observed nodes (by
    :func:`_observed_data_name`), with the dtypes the model was built with."""
    values = {}
    for node in model.nodes:
        if isinstance(node, Data):
            values[node.name] = np.asarray(dataset.values[node.name], dtype="int64" if node.dtype == "int" else "float64")
        elif isinstance(node, Observed):
            values[_observed_data_name(node.name)] = np.asarray(dataset.values[node.name])
    return values


def _quiet() -> None:
    logging.getLogger("pymc").setLevel(logging.ERROR)
    warnings.filterwarnings("ignore", module="pymc")


def compile(model: Model, dataset: Dataset, engine: str, options: Mapping[str, str]) -> PyMCModel:
    """Build the PyMC model. PyMC compiles its log density lazily, inside ``pm.sample``,
    so compile time is measured there (everything but the sampling loop)."""
    _quiet()
    return PyMCModel(build(model, dataset), model, engine)


class PyMCModel:
    """A spec compiled to a ``pm.Model``, run by one of the PyMC backend's engines."""

    compile_seconds = 0.0
    compile_cached = False

    def __init__(self, pymc_model: pm.Model, model: Model, engine: str, shared: _SharedDataModel | None = None,
                 values: dict[str, np.ndarray] | None = None) -> None:
        self.pymc_model, self.model, self.engine = pymc_model, model, engine
        # What every model on data of these shapes shares (made by the first with_data: the
        # model built with pm.Data containers), and, in a model made by with_data, its values.
        self._shared, self._values = shared, values

    def run(self, method: str, settings: SamplerSettings) -> Draws:
        if isinstance(settings, SamplerSettings):  # the target the model asks for, unless the user set one
            settings = settings.for_model(self.model)
        self._set_data()
        return getattr(self, method)(settings)

    def with_data(self, dataset: Dataset) -> PyMCModel:
        """This model on another dataset of the same shapes, reusing what was compiled.

        The data live in ``pm.Data`` containers of one ``pm.Model`` (built on the first
        call). On PyMC's own NUTS one step per (target_accept, max_tree_depth) is compiled
        once for every dataset, and each run first sets its own dataset's values; nutpie's
        model is compiled by Numba once and each run binds its values (nutpie's
        ``with_data``). NumPyro's NUTS through PyMC compiles inside its own call, so for it
        this builds the model anew."""
        if self.engine == "numpyro":
            return PyMCModel(build(self.model, dataset), self.model, self.engine)
        if self._shared is None:
            self._shared = _SharedDataModel(build(self.model, dataset, shared_data=True))
        return PyMCModel(self._shared.pymc_model, self.model, self.engine, self._shared,
                         self._shared.values_for(self.model, dataset))

    def _set_data(self) -> None:
        if self._values is not None:
            pm.set_data(self._values, model=self.pymc_model)

    def nuts(self, settings: SamplerSettings) -> Draws:
        """PyMC's NUTS (or NumPyro's through ``pm.sample``). PyMC times only its sampling
        loop; compile, initial points and process start-up are the rest of the call
        (reported as compile time)."""
        if self.engine == "nutpie":
            if self._shared is None:
                return _sample_nutpie(*_compile_nutpie(self.pymc_model), self.model, settings)
            compiled, compile_seconds = self._shared.nutpie_model()
            return _sample_nutpie(compiled.with_data(**self._values), compile_seconds, self.model, settings)
        if self._values is not None and settings.init == "default":
            return _sample_with_step(self._shared, self.model, settings)
        init = {"default": "jitter+adapt_diag", "advi": "advi", "pathfinder": "adapt_diag",
                "uniform": "adapt_diag"}[settings.init]
        kwargs = _sampler_kwargs(self.engine, settings)
        if self.engine == "pymc":  # the others take no per-draw callback
            percent = Percent(settings.chains * (settings.tune + settings.draws))
            kwargs["callback"] = lambda trace, draw: percent.step()
            note("compiling the log density and its gradient (PyTensor), starting the chains' processes")
        if settings.init == "uniform":
            kwargs["initvals"] = _uniform_initvals(self.pymc_model, settings)
        elif settings.init == "pathfinder":
            kwargs["initvals"] = _pathfinder_initvals(self.pymc_model, self.model, settings)
        with self.pymc_model, stopwatch() as elapsed:
            idata = pm.sample(
                draws=settings.draws,
                tune=settings.tune,
                chains=settings.chains,
                random_seed=settings.seed,
                nuts_sampler=self.engine,
                init=init,
                progressbar=False,
                compute_convergence_checks=False,
                discard_tuned_samples=False,
                idata_kwargs={"log_likelihood": False},
                **kwargs,
            )
        total = elapsed()
        loop = float(idata.sample_stats.attrs.get("sampling_time", total))
        posterior = {name: idata.posterior[name].values for name in self.model.output_names}
        ss = idata.sample_stats
        # NumPyro's NUTS through PyMC keeps no warm-up statistics.
        warm = idata.warmup_sample_stats if "warmup_sample_stats" in idata else {}
        stats = _stats(ss, _PYMC_STATS)
        warmup_steps = int(warm["n_steps"].values.sum()) if "n_steps" in warm else 0
        warmup_s, sampling_s = split_by_gradients(loop, warmup_steps, int(stats["n_steps"].sum()))
        return Draws(
            posterior=posterior,
            stats=stats,
            warmup_gradient_evaluations=warmup_steps,
            timings=Timings(max(total - loop, 0.0), warmup_s, sampling_s, split="gradients"),
            engine=("pymc-nuts" if self.engine == "pymc" else f"{self.engine}-nuts via pymc")
            + (f" ({settings.chain_method} chains)" if settings.chain_method != "auto" else ""),
        )

    def advi(self, settings: VariationalSettings) -> Draws:
        """PyMC's mean-field ADVI (``pm.fit(method="advi")``), stopped by Stan's rule."""
        return _advi(self.pymc_model, self.model, settings.resolved("advi"), "advi")

    def fullrank(self, settings: VariationalSettings) -> Draws:
        """PyMC's full-rank ADVI (``pm.fit(method="fullrank_advi")``), stopped by Stan's rule."""
        return _advi(self.pymc_model, self.model, settings.resolved("fullrank"), "fullrank_advi")

    def pathfinder(self, settings: VariationalSettings) -> Draws:
        """Multi-path Pathfinder from pymc-extras, its paths run one after another."""
        return _pathfinder(self.pymc_model, self.model, settings.resolved("pathfinder"))

    def log_density(self) -> LogDensity:
        self._set_data()
        return _log_density(self.pymc_model, self.model)


#: PyMC's names of the NUTS step's per-draw statistics, by polyppl's (STAT_NAMES); pm.sample
#: renames them the same way when it builds InferenceData.
_STEP_STATS = {"diverging": "diverging", "tree_depth": "depth", "n_steps": "tree_size", "energy": "energy",
               "step_size": "step_size", "acceptance_rate": "mean_tree_accept", "lp": "model_logp"}


class _SharedDataModel:
    """A ``pm.Model`` whose data are ``pm.Data`` containers, with what was compiled for it:
    NUTS steps by (target_accept, max_tree_depth) and initial-point functions by chains."""

    def __init__(self, pymc_model: pm.Model) -> None:
        self.pymc_model = pymc_model
        self._steps: dict[tuple[float, int], tuple[object, float]] = {}
        self._initial_points: dict[int, list] = {}
        self._nutpie: object | None = None

    def nutpie_model(self) -> tuple[object, float]:
        """nutpie's compiled model (data as shared values) and the seconds its compile took
        (0 once compiled)."""
        if self._nutpie is None:
            self._nutpie, seconds = _compile_nutpie(self.pymc_model)
            return self._nutpie, seconds
        return self._nutpie, 0.0

    def values_for(self, model: Model, dataset: Dataset) -> dict[str, np.ndarray]:
        """``dataset``'s values for the containers, checked against the shapes built with."""
        values = _data_values(model, dataset)
        for name, value in values.items():
            current = self.pymc_model[name].get_value()
            if np.shape(value) != np.shape(current):
                raise ValueError(f"{name!r} has shape {np.shape(value)} here and {np.shape(current)} in the model "
                                 "compiled for reuse; with_data needs datasets of the same shapes")
            values[name] = np.asarray(value, dtype=current.dtype)
        return values

    def needs_compile(self, settings: SamplerSettings) -> bool:
        return (settings.target_accept, settings.max_tree_depth) not in self._steps

    def step(self, settings: SamplerSettings) -> tuple[object, float]:
        """The NUTS step for these settings and the seconds its compile took (0 once cached)."""
        key = (settings.target_accept, settings.max_tree_depth)
        if key not in self._steps:
            with self.pymc_model, stopwatch() as elapsed:
                step = pm.NUTS(target_accept=settings.target_accept, max_treedepth=settings.max_tree_depth)
            self._steps[key] = (step, elapsed())
            return self._steps[key]
        return self._steps[key][0], 0.0

    def initial_points(self, chains: int, seed: int) -> list[dict[str, np.ndarray]]:
        """One start per chain, as pm.sample's default init makes them: the model's initial
        point with uniform(-1, 1) jitter on the unconstrained scale (keyed by value variable)."""
        from pymc.initial_point import make_initial_point_fns_per_chain

        if chains not in self._initial_points:
            self._initial_points[chains] = make_initial_point_fns_per_chain(
                model=self.pymc_model, overrides=None, jitter_rvs=set(self.pymc_model.free_RVs), chains=chains)
        seeds = np.random.SeedSequence(seed).generate_state(chains)
        return [function(int(s)) for function, s in zip(self._initial_points[chains], seeds)]


def _sample_with_step(shared: _SharedDataModel, model: Model, settings: SamplerSettings) -> Draws:
    """PyMC's NUTS through ``pm.sample`` with a step compiled once for every dataset.

    pm.sample resets the step's tuning (step size, mass matrix) and seeds it for each chain,
    so a reused step samples as a new one would. Chains start, as with pm.sample's default
    init (jitter+adapt_diag), from jittered initial points; the mass matrix adaptation starts
    from the step's own default (mean 0, variance 1) rather than the mean of those points,
    which only weighs the adaptation's first window. Draws come back as PyMC's own trace
    (no InferenceData), to keep what surrounds the sampling loop short."""
    if shared.needs_compile(settings):
        note("compiling the log density and its gradient (PyTensor)")
    step, compile_seconds = shared.step(settings)
    starts = shared.initial_points(settings.chains, settings.seed)
    percent = Percent(settings.chains * (settings.tune + settings.draws))
    cores = 1 if settings.chain_method == "sequential" else min(settings.chains, os.cpu_count() or 1)
    with shared.pymc_model, stopwatch() as elapsed, warnings.catch_warnings():
        # The warm-up draws are kept on purpose (their gradient count is the warm-up's cost).
        warnings.filterwarnings("ignore", message="Tuning samples will be included")
        # PyMC 6 deprecates the raw trace (not removed yet); building InferenceData instead
        # costs a grid's fits more than their diagnostics.
        warnings.filterwarnings("ignore", message="`return_inferencedata=False` is deprecated", category=FutureWarning)
        trace = pm.sample(
            draws=settings.draws, tune=settings.tune, chains=settings.chains, cores=cores, random_seed=settings.seed,
            step=step, initvals=starts, progressbar=False, compute_convergence_checks=False,
            return_inferencedata=False, discard_tuned_samples=False, callback=lambda trace, draw: percent.step(),
        )
    total = elapsed()
    loop = float(trace.report.t_sampling or total)
    tune = settings.tune
    posterior = {name: np.stack(trace.get_values(name, combine=False))[:, tune:] for name in model.output_names}
    stats = {ours: np.stack(trace.get_sampler_stats(theirs, combine=False)).astype(_STAT_TYPES.get(ours, float))
             for ours, theirs in _STEP_STATS.items()}
    warmup_steps = int(stats["n_steps"][:, :tune].sum())
    stats = {name: values[:, tune:] for name, values in stats.items()}
    warmup_s, sampling_s = split_by_gradients(loop, warmup_steps, int(stats["n_steps"].sum()))
    return Draws(
        posterior=posterior,
        stats=stats,
        warmup_gradient_evaluations=warmup_steps,
        timings=Timings(compile_seconds + max(total - loop, 0.0), warmup_s, sampling_s, split="gradients",
                        compile_cached=compile_seconds == 0.0),
        engine="pymc-nuts (step reused across datasets)"
        + (f" ({settings.chain_method} chains)" if settings.chain_method != "auto" else ""),
    )


#: polyppl's statistic names (STAT_NAMES) -> the sampler's, in PyMC's InferenceData.
_PYMC_STATS = {name: name for name in STAT_NAMES}
_NUTPIE_STATS = {**_PYMC_STATS, "tree_depth": "depth", "acceptance_rate": "mean_tree_accept", "lp": "logp"}
_STAT_TYPES = {"diverging": bool, "tree_depth": np.int64, "n_steps": np.int64}


def _stats(sample_stats, names: Mapping[str, str]) -> dict[str, np.ndarray]:
    return {ours: sample_stats[theirs].values.astype(_STAT_TYPES.get(ours, float)) for ours, theirs in names.items()}


def _sampler_kwargs(engine: str, settings: SamplerSettings) -> dict:
    """How chains run: processes for PyMC's own NUTS, NumPyro's chain method for its NUTS
    (nutpie's threads: ``_sample_nutpie``). The backend's declaration has already refused
    combinations an engine lacks."""
    method = settings.chain_method
    if engine == "pymc":
        return {"cores": 1 if method == "sequential" else min(settings.chains, os.cpu_count() or 1),
                "nuts": {"target_accept": settings.target_accept, "max_treedepth": settings.max_tree_depth}}
    # NumPyro's NUTS kernel takes its own argument names (PyMC passes them on unchanged).
    return {"nuts": {"target_accept": settings.target_accept, "max_tree_depth": settings.max_tree_depth,
                     "chain_method": "parallel" if method == "parallel" else "vectorized"}}


def _compile_nutpie(pymc_model: pm.Model) -> tuple[object, float]:
    """nutpie's model compiled by Numba, and the seconds it took."""
    import nutpie

    with stopwatch() as elapsed:
        compiled = nutpie.compile_pymc_model(pymc_model)
    return compiled, elapsed()


def _sample_nutpie(compiled, compile_seconds: float, model: Model, settings: SamplerSettings) -> Draws:
    """nutpie's NUTS (Rust) on the model compiled by Numba. Called directly rather than
    through ``pm.sample``, which drops the tree-depth limit and times nothing but sampling.
    nutpie chooses its own initial points (jittered around zero, unconstrained)."""
    import nutpie

    cores = 1 if settings.chain_method == "sequential" else min(settings.chains, os.cpu_count() or 1)
    with stopwatch() as elapsed:
        # The raw trace (Arrow batches per chain): nutpie's own conversion to InferenceData
        # costs ten times its sampling on a small model (0.2 s against 0.02 s, eight schools).
        trace = nutpie.sample(
            compiled, draws=settings.draws, tune=settings.tune, chains=settings.chains, cores=cores,
            seed=settings.seed, target_accept=settings.target_accept, maxdepth=settings.max_tree_depth,
            save_warmup=True, progress_bar=False, return_raw_trace=True,
        )
    draw_batches, stat_batches = trace.get_arrow_trace()
    draws = [_arrow_columns(batch, model.output_names) for batch in draw_batches]
    stats = [_arrow_columns(batch, ["tuning", *_NUTPIE_STATS.values()]) for batch in stat_batches]
    tuned = [~chain["tuning"] for chain in stats]  # nutpie marks every warm-up row
    posterior = {name: np.stack([chain[name][keep] for chain, keep in zip(draws, tuned)]) for name in model.output_names}
    sampled = {ours: np.stack([chain[theirs][keep] for chain, keep in zip(stats, tuned)]).astype(_STAT_TYPES.get(ours, float))
               for ours, theirs in _NUTPIE_STATS.items()}
    warmup_steps = int(sum(chain["n_steps"][~keep].sum() for chain, keep in zip(stats, tuned)))
    warmup_s, sampling_s = split_by_gradients(elapsed(), warmup_steps, int(sampled["n_steps"].sum()))
    return Draws(
        posterior=posterior,
        stats=sampled,
        warmup_gradient_evaluations=warmup_steps,
        timings=Timings(compile_seconds, warmup_s, sampling_s, split="gradients",
                        compile_cached=compile_seconds == 0.0),
        engine="nutpie-nuts via pymc (numba)" + (" (sequential chains)" if cores == 1 and settings.chains > 1 else ""),
    )


def _arrow_columns(batch, names) -> dict[str, np.ndarray]:
    """Columns of one chain's Arrow batch as arrays of shape (rows, *the variable's shape);
    nutpie stores a variable's elements flattened in C order, its shape in the metadata."""
    import pyarrow

    columns = {}
    for name in names:
        column = batch.column(name)
        shape = (column.field.metadata or {}).get(b"shape", b"").decode()
        array = pyarrow.array(column)
        if hasattr(array, "flatten"):  # a list per row
            array = array.flatten()
        columns[name] = array.to_numpy(zero_copy_only=False).reshape(
            batch.num_rows, *(int(size) for size in shape.split(",") if size))
    return columns


def _uniform_initvals(pymc_model: pm.Model, settings: SamplerSettings) -> list[dict]:
    """uniform(-2, 2) on the unconstrained scale, per chain, as Stan and NumPyro do."""
    rng = np.random.default_rng(settings.seed)
    point = pymc_model.initial_point()
    out = []
    for _ in range(settings.chains):
        values = {}
        for rv in pymc_model.free_RVs:
            value_var = pymc_model.rvs_to_values[rv]
            shape = np.shape(point[value_var.name])
            z = rng.uniform(-2, 2, size=shape)
            transform = pymc_model.rvs_to_transforms.get(rv)
            values[rv.name] = transform.backward(z, *rv.owner.inputs).eval() if transform is not None else z
        out.append(values)
    return out


def _log_density(pymc_model: pm.Model, model: Model) -> LogDensity:
    logp = pymc_model.compile_logp(jacobian=True)
    dlogp = pymc_model.compile_dlogp(jacobian=True)
    value_names = {rv.name: pymc_model.rvs_to_values[rv].name for rv in pymc_model.free_RVs}
    shapes = {name: np.shape(v) for name, v in pymc_model.initial_point().items()}
    param_shapes = {p.name: shapes[value_names[p.name]] for p in model.params}

    def function(point: Mapping[str, np.ndarray]) -> tuple[float, dict[str, np.ndarray]]:
        values = {value_names[k]: np.asarray(v, dtype=float) for k, v in point.items()}
        gradient = np.asarray(dlogp(values))
        out, offset = {}, 0
        # compile_dlogp concatenates gradients in the order of value_vars.
        for rv in pymc_model.free_RVs:
            size = int(np.prod(param_shapes[rv.name], dtype=int))
            out[rv.name] = gradient[offset : offset + size].reshape(param_shapes[rv.name])
            offset += size
        return float(logp(values)), out

    return LogDensity(param_shapes, function)


# --------------------------------------------------------------------------- approximations


class _FirstStep:
    """A ``pm.fit`` callback noting when the first step ended: PyTensor compiles inside
    ``pm.fit``, and that is reported as compile time."""

    def __init__(self) -> None:
        self.time: float | None = None

    def __call__(self, approx, losses: np.ndarray, iteration: int) -> None:
        if self.time is None:
            self.time = time.perf_counter()


class _FlatPoints:
    """PyMC's flat unconstrained vectors (the order of ``DictToArrayBijection``) turned into
    the log density and the named outputs (parameters on their own scale, deterministics)."""

    def __init__(self, pymc_model: pm.Model, model: Model) -> None:
        import pytensor
        from pymc.blocking import DictToArrayBijection

        self.pymc_model, self.names = pymc_model, model.output_names
        self.point = pymc_model.initial_point()
        self.info = DictToArrayBijection.map(self.point).point_map_info
        self.logp = pymc_model.compile_logp(jacobian=True)
        outputs = {v.name: v for v in pymc_model.unobserved_value_vars}
        self.outputs = pytensor.function(pymc_model.value_vars, [outputs[n] for n in self.names],
                                         on_unused_input="ignore")

    def unflatten(self, flat: np.ndarray) -> dict[str, np.ndarray]:
        from pymc.blocking import DictToArrayBijection, RaveledVars

        return DictToArrayBijection.rmap(RaveledVars(np.asarray(flat, dtype=float), self.info), self.point)

    def log_p(self, flat: np.ndarray) -> np.ndarray:
        return np.array([self.logp(self.unflatten(x)) for x in flat], dtype=float)

    def posterior(self, flat: np.ndarray) -> dict[str, np.ndarray]:
        """Outputs of each flat point, as (1, draws, *shape): one chain."""
        values = [self.unflatten(x) for x in flat]
        order = [v.name for v in self.pymc_model.value_vars]
        columns = list(zip(*(self.outputs(*[point[name] for name in order]) for point in values)))
        return {name: np.asarray(column, dtype=float)[None] for name, column in zip(self.names, columns)}


def _advi(pymc_model: pm.Model, model: Model, settings: VariationalSettings, method: str) -> Draws:
    """``pm.fit`` with PyMC's own optimiser and the convergence check ``pm.sample(init="advi")``
    uses (parameters changing by less than the tolerance, absolutely or relatively, over 100
    steps); then draws from the Gaussian on PyMC's flat unconstrained scale, with log q and
    log p at each."""
    from pymc.variational.callbacks import CheckParametersConvergence

    first_step = _FirstStep()
    checks = [CheckParametersConvergence(every=ELBO_EVERY, tolerance=settings.tolerance, diff=diff)
              for diff in ("absolute", "relative")]
    with stopwatch() as compiling:
        points = _FlatPoints(pymc_model, model)
    with pymc_model, stopwatch() as elapsed:
        start = time.perf_counter()
        approx = pm.fit(n=settings.iterations, method=method, random_seed=settings.seed, progressbar=False,
                        obj_n_mc=settings.gradient_draws, callbacks=[first_step, *checks])
    compile_seconds = compiling() + (first_step.time or start) - start
    fit_seconds = elapsed() - ((first_step.time or start) - start)
    iterations = len(approx.hist)
    with stopwatch() as drawing:
        group = approx.groups[0]
        mean = np.asarray(group.mean.eval(), dtype=float)
        rng = np.random.default_rng([settings.seed, 1])
        noise = rng.standard_normal((settings.draws, mean.size))
        if method == "advi":
            sd = np.asarray(group.std.eval(), dtype=float)
            flat = mean + noise * sd
            log_q = -0.5 * (noise**2).sum(axis=1) - np.log(sd).sum()
        else:
            factor = np.asarray(group.L.eval(), dtype=float)
            flat = mean + noise @ factor.T
            log_q = -0.5 * (noise**2).sum(axis=1) - np.log(np.abs(np.diag(factor))).sum()
        log_q = log_q - 0.5 * mean.size * np.log(2 * np.pi)
        log_p = points.log_p(flat)
        posterior = points.posterior(flat)
    family = "mean-field Gaussian" if method == "advi" else "full-rank Gaussian"
    return Draws(
        posterior=posterior,
        stats={"lp": log_p[None], "log_q": log_q[None]},
        warmup_gradient_evaluations=0,
        timings=Timings(compile_seconds, fit_seconds, drawing(), split="measured"),
        engine=f"pymc {'advi' if method == 'advi' else 'fullrank advi'} (pm.fit)",
        # obj_n_mc Monte Carlo draws, hence gradients, per step
        approximation=Approximation(family, log_p[None], log_q[None], iterations, iterations * settings.gradient_draws,
                                    converged=iterations < settings.iterations),
    )


def _multipath_pathfinder(pymc_model: pm.Model, settings: VariationalSettings):
    """pymc-extras' multi-path Pathfinder, its arguments' defaults as ``fit_pathfinder``'s,
    without importance resampling (done by polyppl, so that Pareto k sees the raw draws)."""
    from pymc.blocking import DictToArrayBijection
    from pymc_extras.inference.pathfinder.lbfgs import LBFGSConfig
    from pymc_extras.inference.pathfinder.multipath import multipath_pathfinder

    size = DictToArrayBijection.map(pymc_model.initial_point()).data.size
    logging.getLogger("pymc_extras").setLevel(logging.ERROR)
    lbfgs = LBFGSConfig(maxiter=settings.iterations, ftol=settings.tolerance).set_default_maxcor(size)
    # Paths one after another in this process (parallel=False): a fit uses one core, as every
    # other engine's does, and starts no processes of its own inside a worker.
    return multipath_pathfinder(
        pymc_model, num_paths=settings.paths, num_draws=settings.draws, num_draws_per_path=settings.draws,
        num_elbo_draws=10, jitter=2.0, lbfgs_config=lbfgs, importance_sampling=None, progressbar=False,
        parallel=False, random_seed=settings.seed,
    )


def _pathfinder(pymc_model: pm.Model, model: Model, settings: VariationalSettings) -> Draws:
    from pymc_extras.inference.pathfinder.lbfgs import LBFGSStatus

    with stopwatch() as compiling:
        points = _FlatPoints(pymc_model, model)
    with stopwatch() as elapsed:
        result = _multipath_pathfinder(pymc_model, settings)
    with stopwatch() as drawing:
        flat = np.asarray(result.samples, dtype=float).reshape(-1, np.shape(result.samples)[-1])
        log_p, log_q = np.asarray(result.logP, dtype=float), np.asarray(result.logQ, dtype=float)
        chosen = psis_resample(log_p, log_q, settings.draws, settings.seed)
        posterior = points.posterior(flat[chosen])
    compile_seconds = compiling() + float(result.compile_time or 0.0)
    failed = settings.paths - log_p.shape[0]
    return Draws(
        posterior=posterior,
        stats={"lp": log_p.ravel()[chosen][None], "log_q": log_q.ravel()[chosen][None]},
        warmup_gradient_evaluations=0,
        timings=Timings(compile_seconds, max(elapsed() - float(result.compile_time or 0.0), 0.0), drawing(),
                        split="measured"),
        engine="pymc-extras pathfinder",
        approximation=Approximation(
            "Gaussian per path (L-BFGS inverse Hessian)", log_p, log_q, int(np.sum(result.lbfgs_niter)), None,
            converged=failed == 0 and LBFGSStatus.MAX_ITER_REACHED not in result.lbfgs_status,
            notes=(f"{failed} of {settings.paths} paths failed",) if failed else (),
        ),
    )


def _pathfinder_initvals(pymc_model: pm.Model, model: Model, settings: SamplerSettings) -> list[dict]:
    """One draw per chain from Pathfinder (default settings, the run's seed), resampled by
    PSIS weights, as ``pm.sample``'s initial values."""
    resolved = VariationalSettings(seed=settings.seed).resolved("pathfinder")
    result = _multipath_pathfinder(pymc_model, resolved)
    points = _FlatPoints(pymc_model, model)
    flat = np.asarray(result.samples, dtype=float).reshape(-1, np.shape(result.samples)[-1])
    chosen = psis_resample(np.asarray(result.logP), np.asarray(result.logQ), settings.chains, settings.seed)
    free = {rv.name for rv in pymc_model.free_RVs}
    posterior = points.posterior(flat[chosen])
    return [{name: posterior[name][0, chain] for name in free} for chain in range(settings.chains)]
