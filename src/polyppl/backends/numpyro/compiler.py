"""The NumPyro compiler: a specification becomes a NumPyro model function; NumPyro's NUTS
samples it, in float64 by default so that it computes the same numbers as PyMC and Stan."""

from __future__ import annotations

import functools
import math
import os
import time
from pathlib import Path
from typing import Callable, Mapping

import numpy as np

from polyppl.backends.beta_binomial_math import jax_beta_binomial_logpmf
from polyppl.errors import UserError
from polyppl.inference.draws import (
    Approximation, Draws, LogDensity, Timings, split_by_gradients, stopwatch, tree_depth_from_steps,
)
from polyppl.inference.methods import SamplerSettings, VariationalSettings
from polyppl.inference.progress import note
from polyppl.inference.variational import ELBO_EVERY, ElboConvergence, psis_resample, uniform_starts
from polyppl.spec import (
    Data, Dataset, Deterministic, Dist, Factor, Model, Observed, Param, evaluate, unconstrained_shape,
)

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import numpyro  # noqa: E402
import numpyro.distributions as dist  # noqa: E402
from numpyro.distributions import constraints  # noqa: E402
from numpyro.infer import MCMC, NUTS, init_to_uniform  # noqa: E402
from numpyro.infer.util import constrain_fn, potential_energy  # noqa: E402
from jax.flatten_util import ravel_pytree  # noqa: E402

from polyppl.backends.numpyro.stan_transforms import (  # noqa: E402
    AffineConstraint, stan_cholesky_factor_cov, stan_corr_matrix, stan_cov_matrix, stan_positive_ordered,
)

#: NumPyro has no default optimiser for SVI; Adam with this step size, as in NumPyro's examples.
ADAM_STEP_SIZE = 0.01


def configure_jax(precision: str) -> None:
    """JAX's process-wide settings, made explicitly by ``compile`` (never on import):
    the float precision, and a persistent cache of XLA executables outside the source tree
    (beside the CmdStan cache), so the second run of a model skips XLA's compile, about half
    of NumPyro's start-up here."""
    jax.config.update("jax_enable_x64", precision == "float64")
    if not jax.config.jax_compilation_cache_dir:
        jax.config.update(
            "jax_compilation_cache_dir",
            str(Path(os.environ.get("POLYPPL_CACHE", Path.home() / ".cache" / "polyppl")) / "jax"),
        )
        jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.5)

class StableBetaBinomial(dist.BetaBinomial):
    """NumPyro's BetaBinomial with the log-pmf of ``beta_binomial_math``: its own, a
    difference of lbeta values, loses all precision at large alpha + beta, where the sampler
    then drifts. The gradient is analytic (a custom JVP)."""

    def log_prob(self, value):
        return jax_beta_binomial_logpmf(value, self.total_count, self.concentration1, self.concentration0)


class SmoothBinomialLogits(dist.BinomialLogits):
    """NumPyro's BinomialLogits with ``k * logit - n * softplus(logit)``: its own (NumPyro
    0.22) writes the normaliser with ``clip(logit, 0)`` and ``|logit|``, whose gradients
    JAX takes one-sided at 0, so at a log-odds of exactly 0 its gradient is off by n / 2
    (5 trials: 3.0 for 0.5). BernoulliLogits has the same kink (0.0 for -0.5)."""

    def log_prob(self, value):
        n = jnp.asarray(self.total_count, dtype=jnp.result_type(float))
        coefficient = (jax.scipy.special.gammaln(n + 1) - jax.scipy.special.gammaln(value + 1)
                       - jax.scipy.special.gammaln(n - value + 1))
        return coefficient + value * self.logits - n * jax.nn.softplus(self.logits)


class SmoothBernoulliLogits(dist.BernoulliLogits):
    """NumPyro's BernoulliLogits with ``y * logit - softplus(logit)`` (see SmoothBinomialLogits)."""

    def log_prob(self, value):
        return value * self.logits - jax.nn.softplus(self.logits)


#: polyppl family -> function of the evaluated arguments (in FAMILIES order) and batch shape.
DISTRIBUTIONS: dict[str, Callable[..., dist.Distribution]] = {
    "normal": lambda shape, mu, sigma: dist.Normal(mu, sigma),
    "half_normal": lambda shape, sigma: dist.HalfNormal(sigma),
    "student_t": lambda shape, nu, mu, sigma: dist.StudentT(nu, mu, sigma),
    "half_student_t": lambda shape, nu, sigma: dist.FoldedDistribution(dist.StudentT(nu, 0.0, sigma)),
    "cauchy": lambda shape, mu, sigma: dist.Cauchy(mu, sigma),
    "half_cauchy": lambda shape, sigma: dist.HalfCauchy(sigma),
    "beta": lambda shape, alpha, beta: dist.Beta(alpha, beta),
    "gamma": lambda shape, alpha, beta: dist.Gamma(alpha, beta),
    "exponential": lambda shape, rate: dist.Exponential(rate),
    "uniform": lambda shape, lower, upper: dist.Uniform(lower, upper),
    "flat": lambda shape: dist.ImproperUniform(constraints.real, shape, ()),
    "half_flat": lambda shape: dist.ImproperUniform(constraints.positive, shape, ()),
    "binomial": lambda shape, n, p: dist.BinomialProbs(p, total_count=n),
    "binomial_logit": lambda shape, n, logit_p: SmoothBinomialLogits(logit_p, total_count=n),
    "beta_binomial": lambda shape, n, alpha, beta: StableBetaBinomial(alpha, beta, total_count=n),
    "bernoulli": lambda shape, p: dist.BernoulliProbs(p),
    "bernoulli_logit": lambda shape, logit_p: SmoothBernoulliLogits(logit_p),
    "poisson": lambda shape, rate: dist.Poisson(rate),
    "poisson_log": lambda shape, log_rate: dist.Poisson(jnp.exp(log_rate)),
    "lognormal": lambda shape, mu, sigma: dist.LogNormal(mu, sigma),
    "inv_gamma": lambda shape, alpha, beta: dist.InverseGamma(alpha, beta),
    "double_exponential": lambda shape, mu, sigma: dist.Laplace(mu, sigma),
    "logistic": lambda shape, mu, sigma: dist.Logistic(mu, sigma),
    "weibull": lambda shape, alpha, sigma: dist.Weibull(sigma, alpha),
    "chi_square": lambda shape, nu: dist.Chi2(nu),
    "neg_binomial_2": lambda shape, mu, phi: dist.NegativeBinomial2(mu, phi),
    "neg_binomial_2_log": lambda shape, log_mu, phi: dist.NegativeBinomial2(jnp.exp(log_mu), phi),
    # The shape is (K, K): one matrix; NumPyro samples it through CorrCholeskyTransform.
    "lkj_corr_cholesky": lambda shape, eta: dist.LKJCholesky(shape[-1], eta),
    # Flat on Stan's constrained types, through Stan's transforms (stan_transforms.py).
    "flat_ordered": lambda shape: dist.ImproperUniform(constraints.ordered_vector, shape[:-1], shape[-1:]),
    "flat_positive_ordered": lambda shape: dist.ImproperUniform(stan_positive_ordered, shape[:-1], shape[-1:]),
    "flat_simplex": lambda shape: dist.ImproperUniform(constraints.simplex, shape[:-1], shape[-1:]),
    "flat_corr_cholesky": lambda shape: dist.ImproperUniform(constraints.corr_cholesky, shape[:-2], shape[-2:]),
    "flat_cholesky_factor_cov": lambda shape: dist.ImproperUniform(stan_cholesky_factor_cov, shape[:-2], shape[-2:]),
    "flat_cov_matrix": lambda shape: dist.ImproperUniform(stan_cov_matrix, shape[:-2], shape[-2:]),
    "flat_corr_matrix": lambda shape: dist.ImproperUniform(stan_corr_matrix, shape[:-2], shape[-2:]),
    "flat_lower": lambda shape, lower: dist.ImproperUniform(constraints.greater_than(lower), shape, ()),
    "flat_upper": lambda shape, upper: dist.ImproperUniform(constraints.less_than(upper), shape, ()),
    "flat_interval": lambda shape, lower, upper: dist.ImproperUniform(constraints.interval(lower, upper), shape, ()),
    "flat_affine": lambda shape, offset, multiplier: dist.ImproperUniform(AffineConstraint(offset, multiplier), shape, ()),
}

#: Flat families whose support may be bounded by other parameters (``real<upper=b>``,
#: ``<offset=mu, multiplier=tau>``). NumPyro constrains draws with the transform of its first
#: trace unless the model holds a deterministic site or a support it recognizes as dynamic
#: (``infer.util._transforms_from_trace`` looks only at lower bounds and intervals), so the
#: draws of ``<offset=mu, multiplier=tau>`` would be mapped with the first point's mu and tau:
#: a log density right at every point and every draw wrong. A model with one of these
#: families gets a deterministic site (``REPLAY_SITE``, never an output) so that NumPyro
#: replays it for every draw.
BOUNDED_BY_VALUES = ("flat_lower", "flat_upper", "flat_interval", "flat_affine")
REPLAY_SITE = "_polyppl_replay"

FUNCTIONS = {
    "neg": jnp.negative,
    "exp": jnp.exp,
    "log": jnp.log,
    "log1p": jnp.log1p,
    "erfc": jax.scipy.special.erfc,
    "atan": jnp.arctan,
    "expm1": jnp.expm1,
    "gamma_p": jax.scipy.special.gammainc,
    "gamma_q": jax.scipy.special.gammaincc,
    "lgamma": jax.scipy.special.gammaln,
    "sqrt": jnp.sqrt,
    "inv_logit": jax.nn.sigmoid,
    "logit": jax.scipy.special.logit,
    "where": jnp.where,
    "log_sum_exp": jnp.logaddexp,
    "sum": jnp.sum,
    "max": jnp.max,
    "cholesky": jnp.linalg.cholesky,
    "solve_lower": lambda lower, b: jax.scipy.linalg.solve_triangular(lower, b, lower=True),
    "diagonal": jnp.diagonal,
    "matmul": jnp.matmul,
    "transpose": jnp.transpose,
    "diag_pre_multiply": lambda v, a: v[:, None] * a,
    "rows_dot": lambda a, b: (a * b).sum(axis=-1),
    "|": jnp.logical_or,
    "concat": lambda *parts: jnp.concatenate([jnp.ravel(p) for p in parts]),
    "scan": lambda step, init, sequences, outer: _scan(step, init, sequences, outer),
    # ``lpdf``: a family's log density of a value, summed (a Factor's term); below DISTRIBUTIONS.
}


def _scan(step, init, sequences, outer) -> jnp.ndarray:
    """``jax.lax.scan``: the step traced once, whatever the number of steps."""
    state = jnp.asarray(init, dtype=jnp.result_type(float))

    def one(carry, elements):
        new = jnp.asarray(step(carry, elements, outer), dtype=carry.dtype)
        return new, new

    return jax.lax.scan(one, state, tuple(jnp.asarray(s_) for s_ in sequences))[1]


def _lpdf(family: str, args: dict, value) -> jnp.ndarray:
    """``family``'s log density of ``value``, summed over its elements."""
    from polyppl.spec import FAMILIES

    ordered = [args[name] for name in FAMILIES[family].params]
    return jnp.sum(DISTRIBUTIONS[family](jnp.shape(value), *ordered).log_prob(value))


FUNCTIONS["lpdf"] = _lpdf


def _distribution(d: Dist, env: dict, shape: tuple[int, ...]) -> dist.Distribution:
    args = [evaluate(e, env, FUNCTIONS) for _, e in d.args]
    out = DISTRIBUTIONS[d.family](shape, *args)
    batch_shape = shape[: len(shape) - d.info.event_dims]
    return out if tuple(out.batch_shape) == batch_shape else out.expand(batch_shape)


def build(model: Model, dataset: Dataset) -> Callable[[], None]:
    """A NumPyro model function that walks the specification in order."""
    return functools.partial(model_of_data(model, dataset), data_arrays(model, dataset))


def data_arrays(model: Model, dataset: Dataset) -> dict[str, np.ndarray]:
    """The values of the data and observed nodes, by name. NumPy here, JAX arrays only when
    the model is traced: building a model does not start JAX's backend, so that a method can
    still size XLA's thread pool (``_xla_pool_of_one``)."""
    return {n.name: np.asarray(dataset.values[n.name]) for n in model.nodes if isinstance(n, (Data, Observed))}


def model_of_data(model: Model, dataset: Dataset) -> Callable[[dict], None]:
    """A NumPyro model function of one argument, the data (:func:`data_arrays`), for
    datasets with ``dataset``'s shapes: compiled with the data as an argument, it runs on
    another dataset without being traced or compiled again."""
    # Python's int and float: JAX gives them 64 bits when x64 is on, 32 when it is off.
    dtypes = {n.name: int if n.dtype == "int" else float for n in model.nodes if isinstance(n, (Data, Observed))}
    shapes = {n.name: dataset.shape(getattr(n, "dims", ())) for n in model.nodes}
    replay = any(isinstance(n, Param) and n.dist.family in BOUNDED_BY_VALUES for n in model.nodes)

    def numpyro_model(data: dict) -> None:
        env: dict = {}
        if replay:
            numpyro.deterministic(REPLAY_SITE, jnp.zeros(()))
        for node in model.nodes:
            if isinstance(node, Data):
                env[node.name] = jnp.asarray(data[node.name], dtype=dtypes[node.name])
            elif isinstance(node, Param):
                env[node.name] = numpyro.sample(node.name, _distribution(node.dist, env, shapes[node.name]))
            elif isinstance(node, Deterministic):
                env[node.name] = numpyro.deterministic(node.name, evaluate(node.expr, env, FUNCTIONS))
            elif isinstance(node, Factor):
                numpyro.factor(node.name, evaluate(node.expr, env, FUNCTIONS))
            elif isinstance(node, Observed):
                observed = jnp.asarray(data[node.name], dtype=dtypes[node.name])
                numpyro.sample(node.name, _distribution(node.dist, env, shapes[node.name]), obs=observed)

    return numpyro_model


class _CompileClock:
    """Seconds JAX spent tracing, lowering and compiling, and whether the persistent cache
    answered (JAX's monitoring events).

    The seconds are those of the union of the events' intervals, not their sum: events that
    overlap (compiles on other threads) would count twice, and a phase's seconds, its wall
    time less the compile inside it, could come out 0 (a sampling phase did once, under a
    load of 6 on 2 cores; its cause was not pinned down)."""

    def __init__(self) -> None:
        self._intervals: list[tuple[float, float]] = []
        self.cache_hits = 0
        jax.monitoring.register_event_duration_secs_listener(self._record)
        jax.monitoring.register_event_listener(self._count)

    @property
    def seconds(self) -> float:
        total, reach = 0.0, -math.inf
        for start, end in sorted(self._intervals):
            if end > reach:
                total += end - max(start, reach)
                reach = end
        return total

    def _record(self, event: str, duration: float, **_: object) -> None:
        if event.startswith("/jax/core/compile/"):  # reported as the event ends
            now = time.perf_counter()
            self._intervals.append((now - duration, now))

    def _count(self, event: str, **_: object) -> None:
        if event == "/jax/compilation_cache/cache_hits":
            self.cache_hits += 1

    def close(self) -> None:
        jax.monitoring.unregister_event_duration_listener(self._record)
        jax.monitoring.unregister_event_listener(self._count)


EXTRA_FIELDS = ("diverging", "num_steps", "energy", "accept_prob", "adapt_state.step_size", "potential_energy")


def compile(model: Model, dataset: Dataset, engine: str, options: Mapping[str, str]) -> NumPyroModel:
    """The model function. JAX traces and compiles it inside each method's first call,
    whose compile time is measured there (JAX's own compile events)."""
    configure_jax(options["precision"])
    return NumPyroModel(build(model, dataset), model, dataset, options["precision"])


class NumPyroModel:
    compile_seconds = 0.0
    compile_cached = False
    engine = "numpyro"

    def __init__(self, model_fn: Callable[[], None], model: Model, dataset: Dataset, precision: str,
                 samplers: _ReusedSamplers | None = None, data: dict | None = None) -> None:
        self.model_fn, self.model, self.dataset, self.precision = model_fn, model, dataset, precision
        # What every model on data of these shapes shares (made by the first with_data), and,
        # in a model made by with_data, its dataset's arrays.
        self._samplers, self._data = samplers, data

    def run(self, method: str, settings: SamplerSettings) -> Draws:
        if isinstance(settings, SamplerSettings):  # the target the model asks for, unless the user set one
            settings = settings.for_model(self.model)
        return getattr(self, method)(settings)

    def with_data(self, dataset: Dataset) -> NumPyroModel:
        """This model on another dataset of the same shapes, reusing what was compiled: the
        data are an argument of the model function, and NUTS with vectorized chains (``auto``)
        is compiled once per settings as a function of the data (``_ReusedSamplers``), so a
        new dataset is neither traced nor compiled again. Other chain methods run NumPyro's
        ``MCMC`` on the new data."""
        if self._samplers is None:
            self._samplers = _ReusedSamplers(model_of_data(self.model, self.dataset), self.dataset)
        self._samplers.check_shapes(self.model, dataset)
        data = data_arrays(self.model, dataset)
        return NumPyroModel(functools.partial(self._samplers.model_fn, data), self.model, dataset, self.precision,
                            self._samplers, data)

    def log_density(self) -> LogDensity:
        return _log_density(self.model_fn, self.model, self.dataset)

    def nuts(self, settings: SamplerSettings) -> Draws:
        """NumPyro's NUTS, warm-up and sampling as two calls, so both are timed directly;
        the time JAX spends compiling inside them is reported as compile time."""
        init_params = None
        if settings.init == "pathfinder":
            _xla_pool_of_one()
        if settings.init in ("advi", "pathfinder"):
            init_params = _vi_starts(self._flat(), settings)
        if init_params is not None or self._data is None or settings.chain_method not in ("auto", "vectorized"):
            return _nuts(self.model_fn, self.model, settings, self.precision, init_params)
        return _reused_nuts(self._samplers, self.model, settings, self.precision, self._data)

    def advi(self, settings: VariationalSettings) -> Draws:
        """SVI with ``AutoNormal`` (mean-field Gaussian), stopped by Stan's rule."""
        return _svi(self._flat(), settings.resolved("advi"), "advi", self.precision)

    def fullrank(self, settings: VariationalSettings) -> Draws:
        """SVI with ``AutoMultivariateNormal`` (full-rank Gaussian), stopped by Stan's rule."""
        return _svi(self._flat(), settings.resolved("fullrank"), "fullrank", self.precision)

    def pathfinder(self, settings: VariationalSettings) -> Draws:
        """BlackJAX's Pathfinder on NumPyro's log density, one path after another."""
        _xla_pool_of_one()
        return _pathfinder(self._flat(), settings.resolved("pathfinder"), self.precision)

    def _flat(self) -> _FlatModel:
        return _FlatModel(self.model_fn, self.model, self.dataset)


class _ReusedSamplers:
    """NUTS compiled once per sampler settings (all but the seed) for a model function of the
    data, shared by every dataset of one shape.

    NumPyro's ``MCMC(jit_model_args=True)`` would retrace its sampling loop on every run here
    (its loop passes a freshly jitted body as a static argument, which never matches the
    cache), so the loop is written out with NumPyro's own kernel (``numpyro.infer.hmc.hmc``,
    the NUTS that ``MCMC`` runs): initial points uniform(-2, 2) on the unconstrained scale
    (``init_to_uniform(radius=2)``, without its redraws of non-finite starts), NumPyro's
    warm-up adaptation for ``tune`` iterations, then ``draws``, all chains vectorized in one
    compiled function of (seed, data)."""

    def __init__(self, model_fn: Callable[[dict], None], dataset: Dataset) -> None:
        self.model_fn = model_fn
        self._shapes = {name: np.shape(value) for name, value in dataset.values.items()}
        self._programs: dict[tuple, Callable] = {}

    def check_shapes(self, model: Model, dataset: Dataset) -> None:
        for node in model.nodes:
            if isinstance(node, (Data, Observed)) and np.shape(dataset.values[node.name]) != self._shapes[node.name]:
                raise ValueError(f"{node.name!r} has shape {np.shape(dataset.values[node.name])} here and "
                                 f"{self._shapes[node.name]} in the model compiled for reuse; with_data needs datasets "
                                 "of the same shapes")

    def program(self, settings: SamplerSettings, data: dict) -> Callable:
        """``run(rng_key, data) -> (warm-up steps per chain, HMC states of the draws, constrained
        draws)``, jitted; the arrays are (draw, chain, ...)."""
        key = (settings.target_accept, settings.max_tree_depth, settings.tune, settings.draws, settings.chains)
        if key not in self._programs:
            self._programs[key] = _vectorized_nuts(self.model_fn, data, settings)
        return self._programs[key]


def _vectorized_nuts(model_fn: Callable[[dict], None], data: dict, settings: SamplerSettings) -> Callable:
    from numpyro.infer.hmc import hmc
    from numpyro.infer.util import initialize_model

    info, potential_fn_gen, postprocess_fn_gen, _ = initialize_model(
        jax.random.PRNGKey(0), model_fn, model_args=(data,), dynamic_args=True, init_strategy=init_to_uniform(radius=2.0))
    init_kernel, sample_kernel = hmc(potential_fn_gen=potential_fn_gen, algo="NUTS")
    shapes = {name: jnp.shape(value) for name, value in info[0].items()}
    chains = settings.chains

    def run(rng_key, data):
        start_key, kernel_key = jax.random.split(rng_key)
        start_keys = jax.random.split(start_key, len(shapes))
        starts = {name: jax.random.uniform(k, (chains, *shape), minval=-2.0, maxval=2.0)
                  for k, (name, shape) in zip(start_keys, sorted(shapes.items()))}

        def init(z, key):
            return init_kernel(z, settings.tune, target_accept_prob=settings.target_accept,
                               max_tree_depth=settings.max_tree_depth, model_args=(data,), rng_key=key)

        state = jax.vmap(init)(starts, jax.random.split(kernel_key, chains))
        step = jax.vmap(lambda s: sample_kernel(s, model_args=(data,)))

        def advance(carry, _):
            carry = step(carry)
            return carry, carry

        state, warm = jax.lax.scan(advance, state, None, length=settings.tune)
        _, states = jax.lax.scan(advance, state, None, length=settings.draws)
        constrained = jax.vmap(jax.vmap(postprocess_fn_gen(data)))(states.z)
        return warm.num_steps.sum(axis=0), states, constrained

    return jax.jit(run)


def _reused_nuts(samplers: _ReusedSamplers, model: Model, settings: SamplerSettings, precision: str,
                 data: dict) -> Draws:
    """NUTS through the program compiled once for these settings (``_ReusedSamplers``):
    warm-up and sampling are one call, split in proportion to their gradient evaluations."""
    clock = _CompileClock()
    note("tracing the model and compiling the sampler (JAX), then warm-up and sampling in one compiled loop")
    try:
        with stopwatch() as building:  # the first run of these settings traces the model and builds the loop
            program = samplers.program(settings, data)
        built_by = clock.seconds
        with stopwatch() as elapsed:
            warm_steps, states, constrained = program(jax.random.PRNGKey(settings.seed), data)
            states, constrained = jax.device_get((states, constrained))
        compile_in_run = clock.seconds - built_by
    finally:
        clock.close()
    compile_seconds = building() + compile_in_run
    by_chain = lambda values: np.swapaxes(np.asarray(values), 0, 1)  # noqa: E731  (draw, chain) -> (chain, draw)
    n_steps = by_chain(states.num_steps).astype(np.int64)
    warmup_steps = int(np.asarray(warm_steps).sum())
    stats = {
        "diverging": by_chain(states.diverging).astype(bool),
        "tree_depth": tree_depth_from_steps(n_steps),
        "n_steps": n_steps,
        "energy": by_chain(states.energy),
        "step_size": by_chain(states.adapt_state.step_size),
        "acceptance_rate": by_chain(states.accept_prob),
        "lp": -by_chain(states.potential_energy),
    }
    warmup_s, sampling_s = split_by_gradients(max(elapsed() - compile_in_run, 0.0), warmup_steps, int(n_steps.sum()))
    return Draws(
        posterior={name: by_chain(constrained[name]) for name in model.output_names},
        stats=stats,
        warmup_gradient_evaluations=warmup_steps,
        timings=Timings(compile_seconds=compile_seconds, warmup_seconds=warmup_s, sampling_seconds=sampling_s,
                        split="gradients", compile_cached=clock.cache_hits > 0),
        engine=f"numpyro-nuts (vectorized chains, {precision}, compiled once for every dataset)",
    )


def _nuts(model_fn: Callable[[], None], model: Model, settings: SamplerSettings, precision: str,
          init_params: dict[str, np.ndarray] | None = None) -> Draws:
    kernel = NUTS(
        model_fn,
        target_accept_prob=settings.target_accept,
        max_tree_depth=settings.max_tree_depth,
        init_strategy=init_to_uniform(radius=2.0),
    )
    # "auto" is vectorized: one compiled loop for all chains, measured fastest for small
    # models on a 2-core CPU (benchmarks/RESULTS.md).
    chain_method = "vectorized" if settings.chain_method == "auto" else settings.chain_method
    if chain_method == "parallel" and jax.local_device_count() < settings.chains:
        # NumPyro would fall back to sequential chains with only a warning.
        raise UserError(
            f"parallel NumPyro chains need one host device per chain: {jax.local_device_count()} for "
            f"{settings.chains} chains; set XLA_FLAGS=--xla_force_host_platform_device_count={settings.chains} "
            "before Python starts"
        )
    mcmc = MCMC(
        kernel,
        num_warmup=settings.tune,
        num_samples=settings.draws,
        num_chains=settings.chains,
        chain_method=chain_method,
        progress_bar=False,
    )
    clock = _CompileClock()
    note("tracing the model and compiling the sampler (JAX), then warm-up and sampling in one compiled loop")
    try:
        key = jax.random.PRNGKey(settings.seed)
        with stopwatch() as warmup:
            mcmc.warmup(key, extra_fields=("num_steps",), collect_warmup=True, init_params=init_params)
            warmup_steps = int(np.asarray(mcmc.get_extra_fields()["num_steps"]).sum())
        compile_in_warmup = clock.seconds
        with stopwatch() as sampling:
            mcmc.run(mcmc.post_warmup_state.rng_key, extra_fields=EXTRA_FIELDS)
            samples = {k: np.asarray(v) for k, v in mcmc.get_samples(group_by_chain=True).items()}
            fields = {k: np.asarray(v) for k, v in mcmc.get_extra_fields(group_by_chain=True).items()}
        compile_seconds = clock.seconds
    finally:
        clock.close()
    posterior = {name: samples[name] for name in model.output_names}
    n_steps = fields["num_steps"].astype(np.int64)
    stats = {
        "diverging": fields["diverging"].astype(bool),
        "tree_depth": tree_depth_from_steps(n_steps),
        "n_steps": n_steps,
        "energy": fields["energy"],
        "step_size": fields["adapt_state.step_size"],
        "acceptance_rate": fields["accept_prob"],
        "lp": -fields["potential_energy"],
    }
    return Draws(
        posterior=posterior,
        stats=stats,
        warmup_gradient_evaluations=warmup_steps,
        timings=Timings(
            compile_seconds=compile_seconds,
            warmup_seconds=max(warmup() - compile_in_warmup, 0.0),
            sampling_seconds=max(sampling() - (compile_seconds - compile_in_warmup), 0.0),
            split="measured",
            compile_cached=clock.cache_hits > 0,
        ),
        engine=f"numpyro-nuts ({chain_method} chains, {precision})",
    )


def _log_density(numpyro_model: Callable[[], None], model: Model, dataset: Dataset) -> LogDensity:
    shapes = {p.name: unconstrained_shape(p, dataset) for p in model.params}

    def negative(params):
        return potential_energy(numpyro_model, (), {}, params)

    value_and_grad = jax.jit(jax.value_and_grad(negative))

    def function(point: Mapping[str, np.ndarray]) -> tuple[float, dict[str, np.ndarray]]:
        value, grad = value_and_grad({k: jnp.asarray(v, dtype=float) for k, v in point.items()})
        return -float(value), {k: -np.asarray(g) for k, g in grad.items()}

    return LogDensity(shapes, function)


# --------------------------------------------------------------------------- approximations


class _FlatModel:
    """The model's unconstrained parameters as one flat vector (``ravel_pytree`` of the
    parameters by name), its log density (``-potential_energy``, Jacobian included) and the
    named outputs (parameters on their own scale, deterministics) of a batch of vectors."""

    def __init__(self, model_fn: Callable[[], None], model: Model, dataset: Dataset) -> None:
        self.model_fn, self.names = model_fn, model.output_names
        self.shapes = {p.name: unconstrained_shape(p, dataset) for p in model.params}
        flat, self.unravel = ravel_pytree({name: jnp.zeros(shape) for name, shape in self.shapes.items()})
        self.size = flat.size
        self.log_density = jax.jit(lambda x: -potential_energy(model_fn, (), {}, self.unravel(x)))
        self.log_densities = jax.jit(jax.vmap(self.log_density))
        self.outputs = jax.jit(jax.vmap(
            lambda x: constrain_fn(model_fn, (), {}, self.unravel(x), return_deterministic=True)))

    def compile(self, *batch_sizes: int) -> None:
        """Compile the log density and the outputs for batches of these sizes (JAX compiles
        per shape), so that drawing is timed apart from compiling."""
        for size in batch_sizes:
            self.log_densities(jnp.zeros((size, self.size))).block_until_ready()
        jax.block_until_ready(self.outputs(jnp.zeros((batch_sizes[0], self.size))))

    def posterior(self, flat: np.ndarray) -> dict[str, np.ndarray]:
        """Outputs of each flat vector, as (1, draws, *shape): one chain."""
        values = self.outputs(jnp.asarray(flat))
        return {name: np.asarray(values[name], dtype=float)[None] for name in self.names}

    def unconstrained(self, flat: np.ndarray) -> dict[str, np.ndarray]:
        """A batch of flat vectors as unconstrained parameters by name, batch axis first."""
        return {k: np.asarray(v) for k, v in jax.vmap(self.unravel)(jnp.asarray(flat)).items()}


def _gaussian_draws(loc: np.ndarray, factor: np.ndarray, draws: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Draws from N(loc, factor factor^T) (``factor`` a vector: a diagonal; else any square
    factor, not only a triangular one) and log q at each."""
    noise = np.random.default_rng([seed, 1]).standard_normal((draws, loc.size))
    if factor.ndim == 1:
        flat, log_det = loc + noise * factor, np.log(factor).sum()
    else:
        flat, log_det = loc + noise @ factor.T, np.linalg.slogdet(factor)[1]
    return flat, -0.5 * (noise**2).sum(axis=1) - log_det - 0.5 * loc.size * np.log(2 * np.pi)


class _Svi:
    """SVI (Adam, ``Trace_ELBO`` with ``gradient_draws`` Monte Carlo draws per step) with ``AutoNormal``
    (``advi``) or ``AutoMultivariateNormal`` (``fullrank``), initialised at uniform(-2, 2) on
    the unconstrained scale, its loop of 100 steps compiled ahead of time (so that its
    compile time is measured apart)."""

    def __init__(self, flat: _FlatModel, settings: VariationalSettings, method: str) -> None:
        from numpyro.infer import SVI, Trace_ELBO
        from numpyro.infer.autoguide import AutoMultivariateNormal, AutoNormal

        self.flat, self.settings, self.method = flat, settings, method
        guide_class = AutoNormal if method == "advi" else AutoMultivariateNormal
        guide = guide_class(flat.model_fn, init_loc_fn=init_to_uniform(radius=2.0))
        self.svi = SVI(flat.model_fn, guide, numpyro.optim.Adam(step_size=ADAM_STEP_SIZE),
                       Trace_ELBO(num_particles=settings.gradient_draws))
        self.state = self.svi.init(jax.random.PRNGKey(settings.seed))
        steps = jax.jit(lambda state: jax.lax.scan(lambda carry, _: self.svi.update(carry), state, None,
                                                   length=ELBO_EVERY))
        self.hundred_steps = steps.lower(self.state).compile()

    def fit(self) -> tuple[int, bool]:
        """Run until Stan's rule, on the mean loss of each 100 steps, stops it or the limit
        (rounded up to a multiple of 100) is reached: the steps taken and whether the rule
        stopped it."""
        rule = ElboConvergence(self.settings.tolerance, self.settings.iterations)
        steps, converged = 0, False
        while steps < self.settings.iterations and not converged:
            self.state, losses = self.hundred_steps(self.state)
            steps += ELBO_EVERY
            losses = np.asarray(losses)
            converged = rule.update(-float(losses[np.isfinite(losses)].mean()))
        return steps, converged

    def gaussian(self) -> tuple[np.ndarray, np.ndarray]:
        """The fitted Gaussian on the flat scale: its mean and its scales (``advi``) or a
        factor of its covariance (``fullrank``)."""
        params = self.svi.get_params(self.state)
        if self.method == "advi":
            # ravel_pytree orders a dict by its keys, as it does the flat vector's parameters.
            loc, _ = ravel_pytree({n: params[f"{n}_auto_loc"] for n in self.flat.shapes})
            scale, _ = ravel_pytree({n: params[f"{n}_auto_scale"] for n in self.flat.shapes})
            return np.asarray(loc), np.asarray(scale)
        # AutoMultivariateNormal's latent vector holds the sites in the model's order, the flat
        # vector by name (ravel_pytree sorts a dict's keys): rows put in the flat order, found
        # by unpacking positions with the guide's own unpacking. The factor is then a row
        # permutation of a triangular one, which is all a factor needs.
        loc, factor = np.asarray(params["auto_loc"]), np.asarray(params["auto_scale_tril"])
        positions = self.svi.guide._unpack_latent(jnp.arange(loc.size, dtype=float))
        order = np.asarray(ravel_pytree({name: positions[name] for name in self.flat.shapes})[0]).astype(int)
        return loc[order], factor[order]


def _svi(flat: _FlatModel, settings: VariationalSettings, method: str, precision: str) -> Draws:
    clock = _CompileClock()  # only to tell whether the persistent cache answered
    try:
        with stopwatch() as compiling:
            run = _Svi(flat, settings, method)
            flat.compile(settings.draws)
        with stopwatch() as fitting:
            steps, converged = run.fit()
        with stopwatch() as drawing:
            loc, factor = run.gaussian()
            draws, log_q = _gaussian_draws(loc, factor, settings.draws, settings.seed)
            log_p = np.asarray(flat.log_densities(jnp.asarray(draws)), dtype=float)
            posterior = flat.posterior(draws)
    finally:
        clock.close()
    guide = "AutoNormal" if method == "advi" else "AutoMultivariateNormal"
    return Draws(
        posterior=posterior,
        stats={"lp": log_p[None], "log_q": log_q[None]},
        warmup_gradient_evaluations=0,
        timings=Timings(compiling(), fitting(), drawing(), split="measured", compile_cached=clock.cache_hits > 0),
        engine=f"numpyro svi {guide} ({precision})",
        # Trace_ELBO with num_particles draws: as many gradients per step
        approximation=Approximation("mean-field Gaussian" if method == "advi" else "full-rank Gaussian",
                                    log_p[None], log_q[None], steps, steps * settings.gradient_draws, converged),
    )


class _GradientCounter:
    """Counts gradient evaluations of a JAX function, also inside compiled loops: the
    function's derivative rule reports each evaluation to the host (log densities evaluated
    without a gradient, as for Pathfinder's ELBO, are not counted)."""

    def __init__(self, function: Callable) -> None:
        self.count = 0

        @jax.custom_vjp
        def counted(x):
            return function(x)

        def forward(x):
            value, gradient = jax.value_and_grad(function)(x)
            jax.debug.callback(self._add)
            return value, gradient

        def backward(gradient, cotangent):
            return (cotangent * gradient,)

        counted.defvjp(forward, backward)
        self.function = counted

    def _add(self) -> None:
        self.count += 1


def _xla_pool_of_one() -> None:
    """XLA's CPU intra-op thread pool wedges on the batched LAPACK calls of BlackJAX's
    Pathfinder (QR and LU factorisations, vmapped over the L-BFGS history): a factorisation
    runs on a pool worker and fans its batch out into the same pool (LAPACK's
    ParallelBatchMap), so two at once on a pool of two wait for each other for good (seen on
    2 cores with jaxlib 0.10.2: every thread in futex_do_wait, the process asleep; the QR
    case first, then LU on the multilevel model with Eigen single-threaded). A pool of one
    cannot deadlock. JAX sizes the pool from the CPU affinity when its backend starts, so
    the backend is started here pinned to one CPU, and the affinity restored: only the
    pool's own thread stays pinned. Effective only before JAX's backend starts, which in a
    fit's own process (``compare``, ``run``) is still to come here."""
    from jax._src import xla_bridge

    if xla_bridge.backends_are_initialized():
        return
    flags = os.environ.get("XLA_FLAGS", "")
    if "xla_cpu_multi_thread_eigen" not in flags:
        os.environ["XLA_FLAGS"] = f"{flags} --xla_cpu_multi_thread_eigen=false".strip()
    if not hasattr(os, "sched_setaffinity"):  # not Linux: the flag alone
        return
    allowed = os.sched_getaffinity(0)
    os.sched_setaffinity(0, {min(allowed)})
    try:
        jax.devices()
    finally:
        os.sched_setaffinity(0, allowed)


class _Pathfinder:
    """BlackJAX's single-path Pathfinder (BlackJAX's defaults but for the iteration limit and
    tolerance), compiled ahead of time, run from ``paths`` uniform(-2, 2) starts."""

    def __init__(self, flat: _FlatModel, settings: VariationalSettings) -> None:
        import blackjax

        self.flat, self.settings = flat, settings
        self.counter = _GradientCounter(flat.log_density)

        def one_path(key, start):
            fit_key, draw_key = jax.random.split(key)
            state, info = blackjax.vi.pathfinder.approximate(fit_key, self.counter.function, start,
                                                             maxiter=settings.iterations, ftol=settings.tolerance)
            draws, log_q = blackjax.vi.pathfinder.sample(draw_key, state, settings.draws)
            # The path's history repeats its last point after L-BFGS stops.
            positions = info.path.position
            return draws, log_q, jnp.any(positions[1:] != positions[:-1], axis=-1).sum()

        self.starts = jnp.asarray(uniform_starts(np.random.default_rng([settings.seed, 2]), settings.paths, flat.size))
        self.keys = jax.random.split(jax.random.PRNGKey(settings.seed), settings.paths)
        self.one_path = jax.jit(one_path).lower(self.keys[0], self.starts[0]).compile()

    def run(self) -> tuple[np.ndarray, np.ndarray, np.ndarray, int, int, bool]:
        """The raw draws (path, draw, coordinate), log p and log q at each, the L-BFGS
        iterations and gradient evaluations over all paths, and whether every path stopped
        before the iteration limit."""
        draws, log_q, iterations = [], [], []
        for key, start in zip(self.keys, self.starts):
            path_draws, path_log_q, moved = self.one_path(key, start)
            draws.append(np.asarray(path_draws))
            log_q.append(np.asarray(path_log_q))
            iterations.append(int(moved))
        draws_array = np.stack(draws)
        log_p = np.asarray(self.flat.log_densities(jnp.asarray(draws_array.reshape(-1, self.flat.size))), dtype=float)
        return (draws_array, log_p.reshape(self.settings.paths, -1), np.stack(log_q), sum(iterations),
                self.counter.count, max(iterations) < self.settings.iterations)


def _pathfinder(flat: _FlatModel, settings: VariationalSettings, precision: str) -> Draws:
    clock = _CompileClock()  # only to tell whether the persistent cache answered
    try:
        with stopwatch() as compiling:
            pathfinder = _Pathfinder(flat, settings)
            flat.compile(settings.draws, settings.paths * settings.draws)
        with stopwatch() as fitting:
            draws, log_p, log_q, iterations, gradients, converged = pathfinder.run()
        with stopwatch() as drawing:
            chosen = psis_resample(log_p, log_q, settings.draws, settings.seed)
            posterior = flat.posterior(draws.reshape(-1, flat.size)[chosen])
    finally:
        clock.close()
    return Draws(
        posterior=posterior,
        stats={"lp": log_p.ravel()[chosen][None], "log_q": log_q.ravel()[chosen][None]},
        warmup_gradient_evaluations=0,
        timings=Timings(compiling(), fitting(), drawing(), split="measured", compile_cached=clock.cache_hits > 0),
        engine=f"blackjax pathfinder on numpyro ({precision})",
        approximation=Approximation("Gaussian per path (L-BFGS inverse Hessian)", log_p, log_q, iterations,
                                    gradients, converged),
    )


def _vi_starts(flat: _FlatModel, settings: SamplerSettings) -> dict[str, np.ndarray]:
    """One unconstrained starting point per chain, drawn from ADVI (``AutoNormal``) or from
    Pathfinder (resampled by PSIS weights), each with default settings and the run's seed."""
    vi = VariationalSettings(seed=settings.seed).resolved(settings.init)
    if settings.init == "advi":
        run = _Svi(flat, vi, "advi")
        run.fit()
        starts, _ = _gaussian_draws(*run.gaussian(), settings.chains, settings.seed)
    else:
        draws, log_p, log_q, _, _, _ = _Pathfinder(flat, vi).run()
        starts = draws.reshape(-1, flat.size)[psis_resample(log_p, log_q, settings.chains, settings.seed)]
    return flat.unconstrained(starts)
