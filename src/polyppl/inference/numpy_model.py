"""The specification evaluated with NumPy and SciPy: draws, densities, forward simulation.

A fourth implementation of the spec, beside the PyMC, NumPyro and Stan compilers. It does
not sample posteriors; it serves the jobs that need the model's generative direction or an
independent density:

* :func:`draw` and :func:`logpdf`, for every family, in polyppl's parametrisation (Gamma
  shape/rate, Exponential rate, StudentT(nu, mu, sigma), half families folded at 0,
  binomial_logit/bernoulli_logit by the logit). Draws use NumPy's generator; densities use
  ``scipy.stats``. Arguments may carry a leading axis of posterior draws, so a quantity
  drawn from its conditional given each posterior draw is one vectorised call.
* :func:`simulate`: parameters from the prior, data from the likelihood, with the data
  shapes and covariates of a dataset (simulation-based calibration). Improper priors and
  factors are refused unless the user states proper substitutes (:func:`substitute`).
* :func:`log_likelihood`: the summed log-likelihood at parameter values, per posterior draw.
* :func:`evaluate`: :func:`polyppl.spec.evaluate` with NumPy, plus a batched walk for values
  that carry a leading draws axis.
"""

from __future__ import annotations

import operator
from dataclasses import dataclass, replace
from typing import Callable, Collection, Mapping

import numpy as np
from scipy import linalg, special, stats

from polyppl import spec
from polyppl.spec import (
    FAMILIES, MATRIX_FUNCTIONS, Binary, Call, Concat, Conditional, Const, Data, Dataset, Deterministic, Dist, Expr,
    Factor, Index, LogPdf, Model, Observed, Param, Scan, SpecError, Var, check_dataset, free_vars,
)

#: NumPy's implementation of every name in ``spec.FUNCTIONS``, and ``"|"`` (and ``"lpdf"``,
#: below ``logpdf``), for ``spec.evaluate``.
FUNCTIONS: dict[str, Callable[..., np.ndarray]] = {
    "neg": np.negative,
    "exp": np.exp,
    "log": np.log,
    "log1p": np.log1p,
    "erfc": special.erfc,
    "atan": np.arctan,
    "expm1": np.expm1,
    "gamma_p": special.gammainc,
    "gamma_q": special.gammaincc,
    "lgamma": special.gammaln,
    "sqrt": np.sqrt,
    "inv_logit": special.expit,
    "logit": special.logit,
    "where": np.where,
    "matmul": np.matmul,
    "transpose": np.transpose,
    "diag_pre_multiply": lambda v, a: v[:, None] * a,
    "rows_dot": lambda a, b: (a * b).sum(axis=-1),
    "log_sum_exp": np.logaddexp,
    "sum": np.sum,
    "max": np.max,
    "cholesky": np.linalg.cholesky,
    "solve_lower": lambda lower, b: linalg.solve_triangular(lower, b, lower=True),
    "diagonal": np.diagonal,
    "|": np.logical_or,
    "concat": lambda *parts: np.concatenate([np.ravel(p) for p in parts]),
    "scan": lambda step, init, sequences, outer: _scan(step, init, sequences, outer),
}

_BINARY = {
    "+": operator.add, "-": operator.sub, "*": operator.mul, "/": operator.truediv, "**": operator.pow,
    "<": operator.lt, "<=": operator.le, ">": operator.gt, ">=": operator.ge, "|": FUNCTIONS["|"],
}

#: Parameter names of every family this module draws and scores, in the spec's order.
PARAMS: dict[str, tuple[str, ...]] = {name: family.params for name, family in FAMILIES.items()}
#: Families whose values are integers (draws come back as int64).
DISCRETE: frozenset[str] = frozenset(name for name, family in FAMILIES.items() if family.discrete)
#: Families whose density does not integrate to one: nothing can be drawn from them.
IMPROPER: frozenset[str] = frozenset(name for name, family in FAMILIES.items() if family.improper)
#: A proper prior on the same support, named in the errors that refuse an improper one.
_PROPER_EXAMPLE = {"flat": "Normal(0.0, 10.0)", "half_flat": "HalfNormal(10.0)"}
#: The same, as the CLI's ``--substitute`` spells it.
_PROPER_CLI = {"flat": "normal(0, 10)", "half_flat": "half_normal(10)"}


class ImproperPriorError(SpecError):
    """A prior that cannot be drawn from: an improper family, or a factor in the model.

    ``name`` is the node (or, from :func:`draw`, the family) the message is about.
    """

    def __init__(self, name: str, message: str | None = None) -> None:
        self.name = name
        super().__init__(message or _improper_message(name))


def _improper_message(family: str) -> str:
    return (
        f"{family}: the prior is improper (its density does not integrate to one), so no value "
        f"can be drawn from it; state a proper prior on the same support in its place, "
        f"e.g. {_PROPER_EXAMPLE.get(family, 'a proper family')}, with a scale that suits the parameter"
    )


# --------------------------------------------------------------------------- families

# Each function takes the generator, the output shape and the arguments by polyppl's names.
_DRAW: dict[str, Callable[..., np.ndarray]] = {
    "normal": lambda rng, size, mu, sigma: rng.normal(mu, sigma, size),
    "half_normal": lambda rng, size, sigma: np.abs(rng.normal(0.0, sigma, size)),
    "student_t": lambda rng, size, nu, mu, sigma: mu + sigma * rng.standard_t(nu, size),
    "half_student_t": lambda rng, size, nu, sigma: np.abs(sigma * rng.standard_t(nu, size)),
    "cauchy": lambda rng, size, mu, sigma: mu + sigma * rng.standard_cauchy(size),
    "half_cauchy": lambda rng, size, sigma: np.abs(sigma * rng.standard_cauchy(size)),
    "beta": lambda rng, size, alpha, beta: rng.beta(alpha, beta, size),
    "gamma": lambda rng, size, alpha, beta: rng.gamma(alpha, 1.0 / beta, size),
    "exponential": lambda rng, size, rate: rng.exponential(1.0 / rate, size),
    "uniform": lambda rng, size, lower, upper: rng.uniform(lower, upper, size),
    "binomial": lambda rng, size, n, p: rng.binomial(n, p, size),
    "binomial_logit": lambda rng, size, n, logit_p: rng.binomial(n, special.expit(logit_p), size),
    "bernoulli": lambda rng, size, p: rng.binomial(1, p, size),
    "bernoulli_logit": lambda rng, size, logit_p: rng.binomial(1, special.expit(logit_p), size),
    "poisson": lambda rng, size, rate: rng.poisson(rate, size),
    "beta_binomial": lambda rng, size, n, alpha, beta: rng.binomial(n, rng.beta(alpha, beta, size)),
    "poisson_log": lambda rng, size, log_rate: rng.poisson(np.exp(log_rate), size),
    "lkj_corr_cholesky": lambda rng, size, eta: _lkj_cholesky_draw(rng, size, eta),
    "lognormal": lambda rng, size, mu, sigma: rng.lognormal(mu, sigma, size),
    "inv_gamma": lambda rng, size, alpha, beta: beta / rng.gamma(alpha, 1.0, size),
    "double_exponential": lambda rng, size, mu, sigma: rng.laplace(mu, sigma, size),
    "logistic": lambda rng, size, mu, sigma: rng.logistic(mu, sigma, size),
    "weibull": lambda rng, size, alpha, sigma: sigma * rng.weibull(alpha, size),
    "chi_square": lambda rng, size, nu: rng.chisquare(nu, size),
    "neg_binomial_2": lambda rng, size, mu, phi: rng.negative_binomial(phi, phi / (phi + mu), size),
    "neg_binomial_2_log": lambda rng, size, log_mu, phi: rng.negative_binomial(phi, phi / (phi + np.exp(log_mu)), size),
}


def corr_cholesky_from_partial(partial: np.ndarray) -> np.ndarray:
    """The Cholesky factor of a K x K correlation matrix from its K (K - 1) / 2 canonical
    partial correlations in (-1, 1), row by row below the diagonal: Stan's
    ``cholesky_corr_constrain`` after its tanh (signed stick-breaking of each row).
    Leading axes are batch axes."""
    partial = np.asarray(partial, dtype=float)
    m = partial.shape[-1]
    k = int(round((1 + np.sqrt(1 + 8 * m)) / 2))
    rows, cols = np.tril_indices(k, -1)
    w = np.zeros(partial.shape[:-1] + (k, k))
    w[..., rows, cols] = partial
    # Row i, column j: w_ij times the stick left after columns < j, sqrt(prod_{l<j}(1 - w_il^2)).
    left = np.cumprod(1.0 - w**2, axis=-1)
    left = np.concatenate([np.ones(left.shape[:-1] + (1,)), left[..., :-1]], axis=-1)
    return (w + np.eye(k)) * np.sqrt(left)


def _lkj_cholesky_draw(rng: np.random.Generator, size: tuple[int, ...], eta: np.ndarray) -> np.ndarray:
    """LKJ(eta) by the C-vine: the partial correlation of row i, column j is 2 Beta(c, c) - 1
    with c = eta + (K - 2) / 2 - j / 2 (Lewandowski et al. 2009, section 2.4; NumPyro's
    ``LKJCholesky(sample_method="cvine")``)."""
    k = size[-1]
    rows, cols = np.tril_indices(k, -1)
    eta = np.asarray(eta, dtype=float)
    if eta.ndim >= 2:  # one eta per matrix, aligned to the value's trailing (K, K)
        eta = eta[..., 0, 0]
    concentration = eta[..., None] + (k - 2) / 2 - cols / 2
    partial = 2 * rng.beta(concentration, concentration, tuple(size[:-2]) + (len(cols),)) - 1
    return corr_cholesky_from_partial(partial)


def lkj_corr_cholesky_logpdf(value: np.ndarray, eta: np.ndarray) -> np.ndarray:
    """Log density of the Cholesky factor L (..., K, K) of an LKJ(eta) correlation matrix, per
    matrix: sum over k = 2..K of (K - k + 2 eta - 2) log L_kk, plus the normalising constant
    of the LKJ density on correlation matrices (Lewandowski et al. 2009, eq. 16)."""
    value = np.asarray(value, dtype=float)
    eta = np.asarray(eta, dtype=float)
    if eta.ndim >= 2:  # one eta per matrix, aligned to the value's trailing (K, K)
        eta = eta[..., 0, 0]
    k = value.shape[-1]
    order = np.arange(2, k + 1)
    log_diagonal = np.log(np.diagonal(value, axis1=-2, axis2=-1)[..., 1:])
    kernel = (k - order + 2 * eta[..., None] - 2) * log_diagonal
    return kernel.sum(axis=-1) + _lkj_log_normaliser(eta, k)


def _lkj_log_normaliser(eta: np.ndarray, k: int) -> np.ndarray:
    """log c_K(eta), the LKJ normalising constant in its C-vine form:
    c = prod_{i=1}^{K-1} [2^{2 eta + K - i - 2} B(eta + (K - i - 1)/2, eta + (K - i - 1)/2)]^{K - i},
    returned as minus its log (so that the density integrates to one)."""
    total = np.zeros(np.shape(eta))
    for i in range(1, k):
        b = eta + (k - i - 1) / 2
        total = total + (k - i) * ((2 * eta + k - i - 2) * np.log(2.0) + special.betaln(b, b))
    return -total


def _log_choose(n: np.ndarray, k: np.ndarray) -> np.ndarray:
    return special.gammaln(n + 1) - special.gammaln(k + 1) - special.gammaln(n - k + 1)


def _binomial_logit_logpmf(k: np.ndarray, n: np.ndarray, logit_p: np.ndarray) -> np.ndarray:
    # On the logit scale: scipy's binom at p = expit(logit_p) rounds p to 1 for logit_p > 37
    # and then scores every k < n as impossible.
    inside = (k == np.floor(k)) & (k >= 0) & (k <= n)
    k_in = np.where(inside, k, 0)
    lp = _log_choose(n, k_in) + k_in * special.log_expit(logit_p) + (n - k_in) * special.log_expit(-logit_p)
    return np.where(inside, lp, -np.inf)


def _bernoulli_logit_logpmf(k: np.ndarray, logit_p: np.ndarray) -> np.ndarray:
    lp = np.where(k == 1, special.log_expit(logit_p), special.log_expit(-logit_p))
    return np.where((k == 0) | (k == 1), lp, -np.inf)


_LOG2 = np.log(2.0)

# Each function takes the value and the arguments by polyppl's names; SciPy's parametrisation inside.
_LOGPDF: dict[str, Callable[..., np.ndarray]] = {
    "normal": lambda x, mu, sigma: stats.norm.logpdf(x, mu, sigma),
    "half_normal": lambda x, sigma: stats.halfnorm.logpdf(x, 0.0, sigma),
    "student_t": lambda x, nu, mu, sigma: stats.t.logpdf(x, nu, mu, sigma),
    # SciPy has no half Student t: twice the density of the t at 0 on the positive half-line.
    "half_student_t": lambda x, nu, sigma: np.where(np.asarray(x) >= 0, _LOG2 + stats.t.logpdf(x, nu, 0.0, sigma), -np.inf),
    "cauchy": lambda x, mu, sigma: stats.cauchy.logpdf(x, mu, sigma),
    "half_cauchy": lambda x, sigma: stats.halfcauchy.logpdf(x, 0.0, sigma),
    "beta": lambda x, alpha, beta: stats.beta.logpdf(x, alpha, beta),
    "gamma": lambda x, alpha, beta: stats.gamma.logpdf(x, alpha, scale=1.0 / np.asarray(beta, dtype=float)),
    "exponential": lambda x, rate: stats.expon.logpdf(x, scale=1.0 / np.asarray(rate, dtype=float)),
    "uniform": lambda x, lower, upper: stats.uniform.logpdf(x, lower, np.subtract(upper, lower)),
    "flat": lambda x: np.zeros(np.shape(x)),
    "half_flat": lambda x: np.where(np.asarray(x) >= 0, 0.0, -np.inf),
    "binomial": lambda k, n, p: stats.binom.logpmf(k, n, p),
    "binomial_logit": _binomial_logit_logpmf,
    "bernoulli": lambda k, p: stats.bernoulli.logpmf(k, p),
    "bernoulli_logit": _bernoulli_logit_logpmf,
    "poisson": lambda k, rate: stats.poisson.logpmf(k, rate),
    "beta_binomial": lambda k, n, alpha, beta: stats.betabinom.logpmf(k, n, alpha, beta),
    "poisson_log": lambda k, log_rate: stats.poisson.logpmf(k, np.exp(log_rate)),
    "lkj_corr_cholesky": lkj_corr_cholesky_logpdf,
    "lognormal": lambda x, mu, sigma: stats.lognorm.logpdf(x, sigma, scale=np.exp(mu)),
    "inv_gamma": lambda x, alpha, beta: stats.invgamma.logpdf(x, alpha, scale=beta),
    "double_exponential": lambda x, mu, sigma: stats.laplace.logpdf(x, mu, sigma),
    "logistic": lambda x, mu, sigma: stats.logistic.logpdf(x, mu, sigma),
    "weibull": lambda x, alpha, sigma: stats.weibull_min.logpdf(x, alpha, scale=sigma),
    "chi_square": lambda x, nu: stats.chi2.logpdf(x, nu),
    "neg_binomial_2": lambda k, mu, phi: stats.nbinom.logpmf(k, phi, phi / (phi + np.asarray(mu, dtype=float))),
    "neg_binomial_2_log": lambda k, log_mu, phi: stats.nbinom.logpmf(k, phi, phi / (phi + np.exp(log_mu))),
    # Flat on Stan's constrained types: 0 on the support (per vector for the vector types).
    "flat_ordered": lambda x: np.where(np.all(np.diff(x, axis=-1) > 0, axis=-1), 0.0, -np.inf),
    "flat_positive_ordered": lambda x: np.where(np.all(np.diff(x, axis=-1) > 0, axis=-1) & (x[..., 0] > 0), 0.0, -np.inf),
    "flat_simplex": lambda x: np.where(np.all(x >= 0, axis=-1) & (np.abs(np.sum(x, axis=-1) - 1) < 1e-8), 0.0, -np.inf),
    "flat_lower": lambda x, lower: np.where(x >= lower, 0.0, -np.inf),
    "flat_upper": lambda x, upper: np.where(x <= upper, 0.0, -np.inf),
    "flat_interval": lambda x, lower, upper: np.where((x >= lower) & (x <= upper), 0.0, -np.inf),
    "flat_corr_cholesky": lambda x: np.where(_is_cholesky_factor(x) & _unit(np.sum(np.square(x), axis=-1)), 0.0, -np.inf),
    "flat_cholesky_factor_cov": lambda x: np.where(_is_cholesky_factor(x), 0.0, -np.inf),
    "flat_cov_matrix": lambda x: np.where(_is_covariance(x), 0.0, -np.inf),
    "flat_corr_matrix": lambda x: np.where(_is_covariance(x) & _unit(np.diagonal(x, axis1=-2, axis2=-1)), 0.0, -np.inf),
    "flat_affine": lambda x, offset, multiplier: np.zeros(np.broadcast_shapes(np.shape(x), np.shape(offset),
                                                                              np.shape(multiplier))),
}


def _unit(values: np.ndarray) -> np.ndarray:
    """Whether every value of the last axis is 1 (to 1e-8)."""
    return np.all(np.abs(values - 1.0) < 1e-8, axis=-1)


def _is_cholesky_factor(x: np.ndarray) -> np.ndarray:
    """Per matrix: lower triangular with a positive diagonal."""
    x = np.asarray(x, dtype=float)
    upper = np.triu(x, 1)
    return np.all(upper == 0, axis=(-2, -1)) & np.all(np.diagonal(x, axis1=-2, axis2=-1) > 0, axis=-1)


def _is_covariance(x: np.ndarray) -> np.ndarray:
    """Per matrix: symmetric (to 1e-8) and positive definite."""
    x = np.asarray(x, dtype=float)
    symmetric = np.all(np.abs(x - np.swapaxes(x, -1, -2)) < 1e-8, axis=(-2, -1))
    eigenvalues = np.linalg.eigvalsh(x)
    return symmetric & np.all(eigenvalues > 0, axis=-1)


def _stick_breaking(y: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Stan's ``simplex_constrain`` (2.35): K - 1 unconstrained values to a simplex of K, and
    the log Jacobian. z_k = inv_logit(y_k - log(K - 1 - k)) of the stick left."""
    km1 = y.shape[-1]
    adjusted = y - np.log(km1 - np.arange(km1))
    z = special.expit(adjusted)
    left = np.concatenate([np.ones(y.shape[:-1] + (1,)), np.cumprod(1 - z, axis=-1)], axis=-1)
    x = np.concatenate([left[..., :-1] * z, left[..., -1:]], axis=-1)
    log_jacobian = np.sum(np.log(left[..., :-1]) + special.log_expit(adjusted) + special.log_expit(-adjusted), axis=-1)
    return x, log_jacobian


def corr_matrix_positions(k: int) -> tuple[np.ndarray, np.ndarray]:
    """The (row, column) of each partial correlation of a K x K correlation matrix in Stan's
    ``read_corr_L`` order: below the diagonal, column by column."""
    columns, rows = np.triu_indices(k, 1)
    return rows, columns


def _corr_matrix(z: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Stan's ``corr_matrix_constrain``: the tanh of each value a partial correlation, placed
    column by column below the diagonal, L by signed stick-breaking of each row, L L^T; log
    Jacobian sum(log(1 - r^2)) + 0.5 sum over columns c (from 0) of (K - c - 2) log(1 - r^2)."""
    k = int(round((1 + np.sqrt(1 + 8 * z.shape[-1])) / 2))
    rows, columns = corr_matrix_positions(k)
    partial = np.tanh(z)
    w = np.zeros(z.shape[:-1] + (k, k))
    w[..., rows, columns] = partial
    left = np.cumprod(1.0 - w**2, axis=-1)
    left = np.concatenate([np.ones(left.shape[:-1] + (1,)), left[..., :-1]], axis=-1)
    lower = (w + np.eye(k)) * np.sqrt(left)
    weights = 1.0 + 0.5 * (k - columns - 2)
    return lower @ np.swapaxes(lower, -1, -2), np.sum(weights * np.log1p(-partial**2), axis=-1)


def _cholesky_factor_cov(z: np.ndarray, covariance: bool) -> tuple[np.ndarray, np.ndarray]:
    """Stan's ``cholesky_factor_constrain`` (K (K + 1) / 2 values: the lower triangle row by
    row, each diagonal element as its log), and for a covariance matrix ``cov_matrix_constrain``
    (L L^T, log Jacobian K log 2 + sum_k (K - k + 2) log L_kk, k from 1), with the log Jacobian."""
    k = int(round((np.sqrt(1 + 8 * z.shape[-1]) - 1) / 2))
    rows, cols = np.tril_indices(k)
    on_diagonal = rows == cols
    value = np.zeros(z.shape[:-1] + (k, k))
    value[..., rows, cols] = np.where(on_diagonal, np.exp(z), z)
    log_diagonal = z[..., on_diagonal]
    if not covariance:
        return value, np.sum(log_diagonal, axis=-1)
    weights = k - np.arange(k) + 1.0
    return value @ np.swapaxes(value, -1, -2), k * np.log(2.0) + np.sum(weights * log_diagonal, axis=-1)


def constrain(family: str, z: np.ndarray, args: Mapping[str, np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
    """A parameter's value from its unconstrained value ``z``, by the transform every backend
    samples a family's support through (Stan's), and the log Jacobian of the transform
    (summed per vector for the vector types). ``args`` are the family's evaluated arguments
    (the bounds of the bounded families)."""
    z = np.asarray(z, dtype=float)
    info = FAMILIES[family]
    support = info.support
    if support == "corr_cholesky":
        partial = np.tanh(z)
        value = corr_cholesky_from_partial(partial)
        k = value.shape[-1]
        rows, cols = np.tril_indices(k, -1)
        w = np.zeros(z.shape[:-1] + (k, k))
        w[..., rows, cols] = partial
        left = np.cumprod(1.0 - w**2, axis=-1)
        left = np.concatenate([np.ones(left.shape[:-1] + (1,)), left[..., :-1]], axis=-1)[..., rows, cols]
        return value, np.sum(np.log1p(-partial**2), axis=-1) + 0.5 * np.sum(np.log(left[..., cols > 0]), axis=-1)
    if support == "corr_matrix":
        return _corr_matrix(z)
    if support in ("cholesky_factor_cov", "cov_matrix"):
        return _cholesky_factor_cov(z, support == "cov_matrix")
    if support == "ordered":
        return np.cumsum(np.concatenate([z[..., :1], np.exp(z[..., 1:])], axis=-1), axis=-1), np.sum(z[..., 1:], axis=-1)
    if support == "positive_ordered":
        return np.cumsum(np.exp(z), axis=-1), np.sum(z, axis=-1)
    if support == "simplex":
        return _stick_breaking(z)
    if support in ("positive", "lower_bounded"):
        lower = np.asarray(args["lower"], dtype=float) if support == "lower_bounded" else 0.0
        return lower + np.exp(z), z
    if support == "upper_bounded":
        return np.asarray(args["upper"], dtype=float) - np.exp(z), z
    if support in ("unit", "interval", "bounded"):
        lower, upper = (0.0, 1.0) if support == "unit" else (np.asarray(args["lower"], dtype=float),
                                                                np.asarray(args["upper"], dtype=float))
        width = upper - lower
        return lower + width * special.expit(z), np.log(width) + special.log_expit(z) + special.log_expit(-z)
    if support == "affine":
        offset, multiplier = (np.asarray(args[k], dtype=float) for k in ("offset", "multiplier"))
        return offset + multiplier * z, np.log(multiplier) + np.zeros_like(z)
    return z, np.zeros_like(z)


def constrain_point(model: Model, dataset: Dataset, point: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
    """Every parameter's value at an unconstrained point (as :func:`constrain`), in the
    model's order, so that a bound that is an expression of data or of earlier parameters
    is evaluated at their values."""
    env: dict[str, object] = {k: np.asarray(v) for k, v in dataset.values.items()}
    out = {}
    for node in model.nodes:
        if isinstance(node, Param):
            args = {k: np.asarray(spec.evaluate(e, env, FUNCTIONS)) for k, e in node.dist.args}
            out[node.name], _ = constrain(node.dist.family, point[node.name], args)
            env[node.name] = out[node.name]
        elif isinstance(node, Deterministic):
            try:
                env[node.name] = spec.evaluate(node.expr, env, FUNCTIONS)
            except KeyError:
                continue
    return out


def _positive(v: np.ndarray) -> np.ndarray:
    return (v > 0) & np.isfinite(v)


def _count(v: np.ndarray) -> np.ndarray:
    return (v >= 0) & np.isfinite(v) & (v == np.floor(v))


# The domain of each argument, checked before drawing: NumPy raises on some bad arguments
# (a negative scale) but returns nan or garbage on others (a nan mean, a p above 1).
_DOMAINS: dict[str, tuple[Callable[[np.ndarray], np.ndarray], str]] = {
    "mu": (np.isfinite, "finite"),
    "sigma": (_positive, "positive and finite"),
    "nu": (_positive, "positive and finite"),
    "alpha": (_positive, "positive and finite"),
    "beta": (_positive, "positive and finite"),
    "rate": (_positive, "positive and finite"),
    "lower": (np.isfinite, "finite"),
    "upper": (np.isfinite, "finite"),
    "offset": (np.isfinite, "finite"),
    "multiplier": (_positive, "positive and finite"),
    "n": (_count, "a whole number >= 0"),
    "p": (lambda v: (v >= 0) & (v <= 1), "in [0, 1]"),
    "logit_p": (lambda v: ~np.isnan(v), "a number (not nan)"),
    "log_rate": (lambda v: ~np.isnan(v), "a number (not nan)"),
    "eta": (_positive, "positive and finite"),
    "phi": (_positive, "positive and finite"),
    "log_mu": (lambda v: ~np.isnan(v), "a number (not nan)"),
}
#: Arguments whose domain differs from the one of their name elsewhere.
_FAMILY_DOMAINS = {("poisson", "rate"): (lambda v: (v >= 0) & np.isfinite(v), "non-negative and finite"),
                   ("neg_binomial_2", "mu"): (_positive, "positive and finite")}


def _check_args(family: str, args: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
    expected = PARAMS[family]
    if set(args) != set(expected):
        raise SpecError(f"{family} takes ({', '.join(expected)}), got ({', '.join(args)})")
    out = {}
    for name in expected:
        value = np.asarray(args[name], dtype=float)
        ok, what = _FAMILY_DOMAINS.get((family, name), _DOMAINS[name])
        bad = ~ok(value)
        if np.any(bad):
            raise SpecError(f"{family}: {name} must be {what}, got {value[bad].flat[0]!r}")
        out[name] = value.astype(np.int64) if name == "n" else value
    if family == "uniform" and np.any(out["lower"] >= out["upper"]):
        raise SpecError("uniform: lower must be below upper")
    return out


def draw(family: str, args: Mapping[str, np.ndarray], rng: np.random.Generator, shape: tuple[int, ...]) -> np.ndarray:
    """Draws from ``family`` in polyppl's parametrisation, one per element of the output.

    The output's shape is ``shape`` broadcast with the arguments' shapes (NumPy's rules,
    aligned from the right): arguments of shape ``(draws, *shape)`` give one draw per
    posterior draw and element, and a scalar argument per posterior draw must come as
    ``(draws, 1, ..., 1)`` (see :func:`dist_args`). Discrete families give int64.
    Raises :class:`ImproperPriorError` for ``flat`` and ``half_flat``, and SpecError naming
    the family for an unknown family or an argument outside its domain.
    """
    if family in IMPROPER:
        raise ImproperPriorError(family)
    if family not in _DRAW:
        raise SpecError(f"no NumPy sampler for the family {family!r}")
    checked = _check_args(family, args)
    try:
        size = np.broadcast_shapes(tuple(shape), *(v.shape for v in checked.values()))
    except ValueError:
        shapes = ", ".join(f"{k} {v.shape}" for k, v in checked.items())
        raise SpecError(f"{family}: arguments of shapes {shapes} do not fit the shape {tuple(shape)}") from None
    out = _DRAW[family](rng, size, **checked)
    return out.astype(np.int64) if family in DISCRETE else np.asarray(out, dtype=float)


def logpdf(family: str, value: np.ndarray, args: Mapping[str, np.ndarray]) -> np.ndarray:
    """Elementwise log density (log mass for discrete families) of ``value`` under ``family``.

    The SciPy twin of every backend's density, in polyppl's parametrisation; value and
    arguments broadcast (NumPy's rules). Improper families score 0 on their support (and
    ``half_flat`` minus infinity below 0). Arguments outside their domain give nan, as SciPy does.
    """
    if family not in _LOGPDF:
        raise SpecError(f"no SciPy density for the family {family!r}")
    expected = PARAMS[family]
    if set(args) != set(expected):
        raise SpecError(f"{family} takes ({', '.join(expected)}), got ({', '.join(args)})")
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.asarray(_LOGPDF[family](np.asarray(value), **{k: np.asarray(args[k]) for k in expected}), dtype=float)


FUNCTIONS["lpdf"] = lambda family, args, value: np.sum(logpdf(family, value, args))


# --------------------------------------------------------------------------- expressions


def evaluate(expr: Expr, env: Mapping[str, np.ndarray], batched: Collection[str] = frozenset()) -> np.ndarray:
    """Value of an expression with NumPy.

    ``batched`` names the entries of ``env`` that carry a leading axis of posterior draws,
    ``(draws, *shape)``; the rest have their node's shape. Without batched names this is
    :func:`polyppl.spec.evaluate` with :data:`FUNCTIONS`, the walk every backend shares.
    With them, the result has the leading draws axis too: scalars per draw are aligned
    against vectors (``(draws,)`` becomes ``(draws, 1)``) and indexing picks along the
    vector's axis, not the draws axis.
    """
    if not free_vars(expr) & set(batched):
        return np.asarray(spec.evaluate(expr, env, FUNCTIONS))
    return _walk(expr, env, frozenset(batched))[0]


def _walk(expr: Expr, env: Mapping[str, np.ndarray], batched: frozenset[str]) -> tuple[np.ndarray, bool]:
    """(value, whether it carries the leading draws axis)."""
    if isinstance(expr, Const):
        return np.asarray(expr.value), False
    if isinstance(expr, Var):
        return np.asarray(env[expr.name]), expr.name in batched
    if isinstance(expr, Index):
        (base, base_batched), (index, index_batched) = _walk(expr.base, env, batched), _walk(expr.index, env, batched)
        if index_batched:
            raise SpecError("an index must be data, not a quantity that varies across draws")
        return (base[:, index] if base_batched else base[index]), base_batched
    if isinstance(expr, Binary):
        (left, right), is_batched = _aligned([_walk(expr.left, env, batched), _walk(expr.right, env, batched)])
        return _BINARY[expr.op](left, right), is_batched
    if isinstance(expr, Call) and expr.fn in MATRIX_FUNCTIONS:
        operands = [_walk(a, env, batched) for a in expr.args]
        return _BATCHED_MATRIX[expr.fn](*operands), any(b for _, b in operands)
    if isinstance(expr, Call):
        args, is_batched = _aligned([_walk(a, env, batched) for a in expr.args])
        return FUNCTIONS[expr.fn](*args), is_batched
    if isinstance(expr, LogPdf):
        names = [k for k, _ in expr.args]
        operands, is_batched = _aligned([_walk(expr.value, env, batched)] + [_walk(e, env, batched) for _, e in expr.args])
        density = logpdf(expr.family, operands[0], dict(zip(names, operands[1:])))
        if is_batched:
            return density.reshape(density.shape[0], -1).sum(axis=1), True
        return np.sum(density), False
    if isinstance(expr, Concat):
        parts = [_walk(p, env, batched) for p in expr.parts]
        if not any(b for _, b in parts):
            return FUNCTIONS["concat"](*(v for v, _ in parts)), False
        n = next(v.shape[0] for v, b in parts if b)
        flat = [v.reshape(n, -1) if b else np.broadcast_to(np.ravel(v), (n, v.size)) for v, b in parts]
        return np.concatenate(flat, axis=1), True
    if isinstance(expr, Scan):
        return _walk_scan(expr, env, batched)
    raise TypeError(f"not an expression: {expr!r}")


def _scan(step: Callable, init, sequences: list, outer: list) -> np.ndarray:
    """A scan as a Python loop: the states of every step, stacked along the first axis."""
    state, states = np.asarray(init, dtype=float), []
    for elements in zip(*sequences):
        state = np.asarray(step(state, elements, outer), dtype=float)
        states.append(state)
    return np.stack(states) if states else np.zeros((0,) + state.shape)


def _walk_scan(expr: Scan, env: Mapping[str, np.ndarray], batched: frozenset[str]) -> tuple[np.ndarray, bool]:
    """A scan over draws at once: the state and the elements carry the draws axis where
    their inputs do; the states stack along the axis after it."""
    state, is_batched = _walk(expr.init, env, batched)
    sequences = [(name, *_walk(e, env, batched)) for name, e in expr.sequences]
    length = next(((v.shape[1] if b else v.shape[0]) for _, v, b in sequences), 0)
    states = []
    for i in range(length):
        local = {expr.carry: state, **{name: (v[:, i] if b else v[i]) for name, v, b in sequences}}
        local_batched = {name for name, _, b in sequences if b} | ({expr.carry} if is_batched else set())
        state, step_batched = _walk(expr.body, {**env, **local}, (batched - expr.local_names) | local_batched)
        if step_batched and not is_batched:
            states = [np.broadcast_to(s_, state.shape) for s_ in states]
        is_batched = is_batched or step_batched
        states.append(state)
    return np.stack(states, axis=1 if is_batched else 0), is_batched


def _batched_matmul(a: tuple[np.ndarray, bool], b: tuple[np.ndarray, bool]) -> np.ndarray:
    (a, _), (b, b_batched) = a, b
    if b.ndim - b_batched == 1:
        # A vector (j,) or (draws, j) as a column, so that matmul broadcasts the draws axis.
        return np.matmul(a, b[..., None])[..., 0]
    return np.matmul(a, b)


#: The linear algebra functions on (value, whether it carries a leading draws axis) pairs.
_BATCHED_MATRIX: dict[str, Callable[..., np.ndarray]] = {
    "matmul": _batched_matmul,
    "transpose": lambda a: np.swapaxes(a[0], -1, -2),
    "diag_pre_multiply": lambda v, a: v[0][..., :, None] * a[0],
    "rows_dot": lambda a, b: (a[0] * b[0]).sum(axis=-1),
    "sum": lambda a: a[0].reshape(a[0].shape[:1] + (-1,)).sum(axis=-1) if a[1] else np.sum(a[0]),
    "max": lambda a: a[0].reshape(a[0].shape[:1] + (-1,)).max(axis=-1) if a[1] else np.max(a[0]),
    "cholesky": lambda a: np.linalg.cholesky(a[0]),
    "solve_lower": lambda lower, b: np.linalg.solve(lower[0], b[0][..., None])[..., 0],
    "diagonal": lambda a: np.diagonal(a[0], axis1=-2, axis2=-1),
}


def _aligned(operands: list[tuple[np.ndarray, bool]]) -> tuple[list[np.ndarray], bool]:
    """Operands of one operation, a batched scalar padded to broadcast against batched
    vectors, and whether the result is batched.

    The spec combines values of equal dims or a scalar with anything, so an operand's own
    rank (without the draws axis) is 0 or the operation's rank.
    """
    if not any(b for _, b in operands):
        return [v for v, _ in operands], False
    rank = max(v.ndim - b for v, b in operands)
    return [v.reshape(v.shape + (1,) * (rank - v.ndim + 1)) if b else v for v, b in operands], True


def dist_args(
    dist: Dist, env: Mapping[str, np.ndarray], shape: tuple[int, ...], batched: Collection[str] = frozenset()
) -> dict[str, np.ndarray]:
    """A distribution's arguments evaluated for a node of ``shape``, ready for :func:`draw`
    and :func:`logpdf`: an argument that depends on batched names has shape
    ``(draws, *shape)`` or ``(draws, 1, ..., 1)``; the others have their own shape."""
    out = {}
    for name, expr in dist.args:
        value = evaluate(expr, env, batched)
        if free_vars(expr) & set(batched) and value.ndim - 1 < len(shape):
            value = value.reshape(value.shape[:1] + (1,) * len(shape))
        out[name] = value
    return out


# --------------------------------------------------------------------------- substitutes


def substitute(model: Model, substitutes: Mapping[str, Dist | None]) -> Model:
    """The model with stated priors in place of its own, and stated factors dropped.

    ``substitutes`` maps a parameter's name to a proper :class:`~polyppl.spec.Dist` (its
    prior in the result) and a factor's name to ``None`` (the factor is dropped), e.g. for
    the Beta-Binomial model, whose ``a`` and ``b`` are HalfFlat with a factor (a+b)^-2.5::

        {"a": s.Gamma(2.0, 0.1), "b": s.Gamma(2.0, 0.1), "hyperprior": None}

    Simulation-based calibration must fit this model, not the original, to the data that
    :func:`simulate` draws with the same substitutes: the posterior is calibrated only
    against the prior the data came from.
    """
    nodes: list = []
    for name, value in substitutes.items():
        try:
            node = model[name]
        except KeyError:
            choices = [n.name for n in model.nodes if isinstance(n, (Param, Factor))]
            raise SpecError(
                f"model {model.name!r} has no parameter or factor {name!r} to substitute; "
                f"its parameters and factors are: {', '.join(choices)}"
            ) from None
        if isinstance(node, Param):
            if not isinstance(value, Dist):
                raise SpecError(f"the substitute for parameter {name!r} must be a proper prior (a Dist), not {value!r}")
            if value.family in IMPROPER or value.family in DISCRETE or value.family not in FAMILIES:
                raise SpecError(
                    f"the substitute for parameter {name!r} must be a proper continuous prior, not {value.family}"
                )
        elif isinstance(node, Factor):
            if value is not None:
                raise SpecError(f"factor {name!r} can only be dropped: substitute None for it, not {value!r}")
        else:
            raise SpecError(
                f"{name!r} is a {type(node).__name__} node; only parameters (a prior) and factors (None) can be substituted"
            )
    for node in model.nodes:
        if node.name not in substitutes:
            nodes.append(node)
        elif isinstance(node, Param):
            nodes.append(replace(node, dist=substitutes[node.name]))
    return replace(model, nodes=tuple(nodes))


def _check_simulable(model: Model) -> None:
    """Raise ImproperPriorError listing every improper prior and factor, with a fix."""
    improper = [p for p in model.params if p.dist.family in IMPROPER]
    factors = model.of_type(Factor)
    if not improper and not factors:
        return
    params = {p.name for p in model.params}
    lines = [f"  - parameter {p.name!r} has an improper prior ({p.dist.family})" for p in improper]
    for f in factors:
        concerns = ", ".join(repr(n) for n in sorted(free_vars(f.expr) & params)) or "no parameter"
        lines.append(
            f"  - factor {f.name!r} adds an extra term to the log density (of {concerns}), "
            "so the prior is not a product of distributions that can be drawn from"
        )
    example = {p.name: "s." + _PROPER_EXAMPLE.get(p.dist.family, "Normal(0.0, 10.0)") for p in improper} \
        | {f.name: "None" for f in factors}
    options = [f"--substitute '{p.name} ~ {_PROPER_CLI.get(p.dist.family, 'normal(0, 10)')}'" for p in improper]
    options += [f"--substitute '{f.name} ~ none'" for f in factors]
    raise ImproperPriorError(
        (improper or factors)[0].name,
        f"cannot simulate model {model.name!r} from its prior:\n" + "\n".join(lines) + "\n"
        f"State a proper prior for each such parameter and drop each factor, e.g. {' '.join(options)} "
        "(from Python: substitutes={" + ", ".join(f"{k!r}: {v}" for k, v in example.items()) + "}; "
        "placeholders: choose priors that suit the model, on the support it needs, which for a "
        "parameter that a factor restricts, e.g. to positive values, is narrower than its declaration). "
        "The model with substitutes is the one simulated and fitted.",
    )


# --------------------------------------------------------------------------- simulation


@dataclass(frozen=True)
class SimulatedData:
    """One draw from the prior predictive distribution."""

    #: True values of the parameters and deterministics, named and shaped as in the posterior.
    truth: dict[str, np.ndarray]
    #: The input's data, coords and covariates, with simulated values for the observed nodes.
    dataset: Dataset
    #: Parameters whose prior was replaced, and factors dropped, for the records.
    substituted: tuple[str, ...] = ()
    dropped: tuple[str, ...] = ()


def _data_value(node: Data | Observed, dataset: Dataset) -> np.ndarray:
    value = np.asarray(dataset.values[node.name])
    return value.astype(np.int64) if node.dtype == "int" else value.astype(float)


def _check_inputs(model: Model, dataset: Dataset) -> None:
    """The data nodes and every dim's labels; observed values are not needed to simulate."""
    for dim in model.dims:
        if dim not in dataset.coords:
            raise SpecError(f"model {model.name!r} needs labels for dim {dim!r}")
    check_dataset(Model(model.name, tuple(model.data_nodes)), dataset)


def _in_node(node: Param | Observed | Deterministic, model: Model, what: str, fn: Callable[[], np.ndarray]) -> np.ndarray:
    """Run fn, naming the node (and its family) in any SpecError or NumPy error it raises."""
    family = f" ({node.dist.family})" if isinstance(node, (Param, Observed)) else ""
    try:
        return fn()
    except (ValueError, FloatingPointError) as err:
        raise SpecError(f"model {model.name!r}, {what} {node.name!r}{family}: {err}") from err


def simulate(
    model: Model, dataset: Dataset, rng: np.random.Generator, substitutes: Mapping[str, Dist | None] | None = None
) -> SimulatedData:
    """Draw parameters from the prior and observations from the likelihood, once.

    Walks the nodes in order: Data from ``dataset`` (its observed values, if any, are not
    used), each Param from its prior, each Deterministic evaluated, each Observed from its
    likelihood, each Conditional from its distribution given the simulated observations
    (decisions are not simulated). A model with an improper prior (Flat, HalfFlat) or a Factor is refused with
    :class:`ImproperPriorError` naming the nodes, unless ``substitutes`` states a proper
    prior for each improper parameter and drops each factor (see :func:`substitute`).
    """
    substitutes = dict(substitutes or {})
    proper = substitute(model, substitutes)
    _check_simulable(proper)
    _check_inputs(proper, dataset)
    env: dict[str, np.ndarray] = {}
    observed: dict[str, np.ndarray] = {}
    for node in proper.nodes:
        if isinstance(node, Data):
            env[node.name] = _data_value(node, dataset)
            continue
        shape = dataset.shape(node.dims)
        if isinstance(node, Param):
            env[node.name] = _in_node(
                node, proper, "parameter", lambda: draw(node.dist.family, dist_args(node.dist, env, shape), rng, shape)
            )
        elif isinstance(node, Deterministic):
            env[node.name] = _in_node(
                node, proper, "deterministic", lambda: np.broadcast_to(evaluate(node.expr, env), shape).astype(float)
            )
        elif isinstance(node, Observed):
            observed[node.name] = _in_node(
                node, proper, "observed", lambda: draw(node.dist.family, dist_args(node.dist, env, shape), rng, shape)
            )
        elif isinstance(node, Conditional):
            # p(params) p(y | params) p(c | params, y) is the joint prior: the conditional is
            # drawn given the simulated observations.
            env[node.name] = _in_node(
                node, proper, "conditional",
                lambda: draw(node.dist.family, dist_args(node.dist, {**env, **observed}, shape), rng, shape),
            )
    return SimulatedData(
        truth={name: env[name] for name in proper.output_names},
        dataset=Dataset(
            values={**{d.name: env[d.name] for d in proper.data_nodes}, **observed},
            coords=dict(dataset.coords),
            source=f"simulated from the prior of {model.name!r} on {dataset.source or 'the given data'}",
        ),
        substituted=tuple(k for k, v in substitutes.items() if v is not None),
        dropped=tuple(k for k, v in substitutes.items() if v is None),
    )


# --------------------------------------------------------------------------- likelihood


def log_likelihood(model: Model, dataset: Dataset, values: Mapping[str, np.ndarray]) -> np.ndarray:
    """The log-likelihood, summed over every Observed node and element, at parameter values.

    ``values`` holds each Param's value with its node's shape, or with leading batch axes
    (``(draws, *shape)``, ``(chain, draw, *shape)``), the same for every parameter; the
    result has the batch shape (``()`` without one). Deterministics are recomputed from the
    parameters (entries for them in ``values`` are ignored); factors and priors are not part
    of the likelihood.
    """
    check_dataset(model, dataset)
    batch_shape: tuple[int, ...] | None = None
    for p in model.params:
        if p.name not in values:
            raise SpecError(f"model {model.name!r}: no value for parameter {p.name!r}")
        shape, value_shape = dataset.shape(p.dims), np.shape(values[p.name])
        lead = len(value_shape) - len(shape)
        if lead < 0 or value_shape[lead:] != shape or (batch_shape is not None and value_shape[:lead] != batch_shape):
            expected = shape if batch_shape is None else batch_shape + shape
            raise SpecError(
                f"model {model.name!r}: parameter {p.name!r} has values of shape {value_shape}, expected {expected}"
                + (" (batch axes first)" if batch_shape is None else "")
            )
        batch_shape = value_shape[:lead]
    batch_shape = batch_shape or ()
    n = int(np.prod(batch_shape, dtype=np.int64))
    env: dict[str, np.ndarray] = {}
    batched: set[str] = set()
    total = np.zeros(n)
    for node in model.nodes:
        if isinstance(node, Data):
            env[node.name] = _data_value(node, dataset)
            continue
        if isinstance(node, Factor):
            continue
        shape = dataset.shape(node.dims)
        if isinstance(node, Param):
            env[node.name] = np.asarray(values[node.name], dtype=float).reshape((n, *shape))
            batched.add(node.name)
        elif isinstance(node, Deterministic):
            value = _in_node(node, model, "deterministic", lambda: evaluate(node.expr, env, batched))
            if free_vars(node.expr) & batched:
                value = value.reshape(value.shape[:1] + (1,) * (len(shape) + 1 - value.ndim) + value.shape[1:])
                env[node.name] = np.broadcast_to(value, (n, *shape))
                batched.add(node.name)
            else:
                env[node.name] = np.broadcast_to(value, shape)
        elif isinstance(node, Observed):
            y = _data_value(node, dataset)
            args = _in_node(node, model, "observed", lambda: dist_args(node.dist, env, shape, batched))
            lp = logpdf(node.dist.family, y, args)
            total = total + lp.reshape(lp.shape[: lp.ndim - len(shape)] + (-1,)).sum(axis=-1)
    return total.reshape(batch_shape)


__all__ = [
    "DISCRETE", "FUNCTIONS", "IMPROPER", "PARAMS", "ImproperPriorError", "SimulatedData", "dist_args", "draw",
    "evaluate", "log_likelihood", "logpdf", "simulate", "substitute",
]
