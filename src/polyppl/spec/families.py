"""Distribution families: the vocabulary every compiler implements.

Like NumPyro's distributions, each family declares its support (which fixes every
backend's transform) and the constraint on each argument; a constant argument outside its
constraint is refused when the distribution is declared, naming the value.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal

from polyppl.spec.expr import Const, Expr, ExprLike, LogPdf, as_expr

Support = Literal["real", "positive", "unit", "interval", "count", "binary", "corr_cholesky",
                  "cholesky_factor_cov", "cov_matrix", "corr_matrix", "ordered", "positive_ordered", "simplex", "lower_bounded", "upper_bounded", "bounded", "affine"]
#: What an argument must be: any real, positive, in [0, 1], a whole number >= 0.
Constraint = Literal["real", "positive", "unit", "count"]


@dataclass(frozen=True)
class Family:
    """What every compiler needs to know about a distribution family."""

    params: tuple[str, ...]
    support: Support
    constraints: tuple[Constraint, ...] = ()
    discrete: bool = False
    #: A density that does not integrate to one (Flat, HalfFlat): no prior to simulate from.
    improper: bool = False
    #: Trailing dims that make up one value (2 for a matrix-valued family); 0 for the
    #: families whose every element is a value of its own.
    event_dims: int = 0


#: The vocabulary. Parameter names are polyppl's, the same for every backend.
#: Rates are rates (Gamma(alpha, beta) has mean alpha/beta; Exponential(rate)).
FAMILIES: dict[str, Family] = {
    "normal": Family(("mu", "sigma"), "real", ("real", "positive")),
    "half_normal": Family(("sigma",), "positive", ("positive",)),
    "student_t": Family(("nu", "mu", "sigma"), "real", ("positive", "real", "positive")),
    "half_student_t": Family(("nu", "sigma"), "positive", ("positive", "positive")),
    "cauchy": Family(("mu", "sigma"), "real", ("real", "positive")),
    "half_cauchy": Family(("sigma",), "positive", ("positive",)),
    "beta": Family(("alpha", "beta"), "unit", ("positive", "positive")),
    "gamma": Family(("alpha", "beta"), "positive", ("positive", "positive")),
    "exponential": Family(("rate",), "positive", ("positive",)),
    "uniform": Family(("lower", "upper"), "interval", ("real", "real")),
    "flat": Family((), "real", improper=True),
    "half_flat": Family((), "positive", improper=True),
    "binomial": Family(("n", "p"), "count", ("count", "unit"), discrete=True),
    "binomial_logit": Family(("n", "logit_p"), "count", ("count", "real"), discrete=True),
    "beta_binomial": Family(("n", "alpha", "beta"), "count", ("count", "positive", "positive"), discrete=True),
    "bernoulli": Family(("p",), "binary", ("unit",), discrete=True),
    "bernoulli_logit": Family(("logit_p",), "binary", ("real",), discrete=True),
    "poisson": Family(("rate",), "count", ("positive",), discrete=True),
    "poisson_log": Family(("log_rate",), "count", ("real",), discrete=True),
    "lkj_corr_cholesky": Family(("eta",), "corr_cholesky", ("positive",), event_dims=2),
    # Stan's parametrisations, as Stan names them.
    "lognormal": Family(("mu", "sigma"), "positive", ("real", "positive")),
    "inv_gamma": Family(("alpha", "beta"), "positive", ("positive", "positive")),  # beta: a scale
    "double_exponential": Family(("mu", "sigma"), "real", ("real", "positive")),
    "logistic": Family(("mu", "sigma"), "real", ("real", "positive")),
    "weibull": Family(("alpha", "sigma"), "positive", ("positive", "positive")),  # shape, scale
    "chi_square": Family(("nu",), "positive", ("positive",)),
    "neg_binomial_2": Family(("mu", "phi"), "count", ("positive", "positive"), discrete=True),
    "neg_binomial_2_log": Family(("log_mu", "phi"), "count", ("real", "positive"), discrete=True),
    # Flat densities on Stan's constrained types, each sampled through Stan's own transform
    # (so that a lowered Stan program shares its unconstrained space): a vector of
    # increasing values, of increasing positive values, a simplex (K values >= 0 summing to
    # one, K - 1 unconstrained values by stick-breaking); values above a lower bound, below
    # an upper bound, or between two, where the bounds may be expressions of data and
    # other parameters; and real values sampled as offset + multiplier * u.
    "flat_ordered": Family((), "ordered", improper=True, event_dims=1),
    "flat_positive_ordered": Family((), "positive_ordered", improper=True, event_dims=1),
    "flat_simplex": Family((), "simplex", improper=True, event_dims=1),
    "flat_lower": Family(("lower",), "lower_bounded", ("real",), improper=True),
    "flat_upper": Family(("upper",), "upper_bounded", ("real",), improper=True),
    "flat_interval": Family(("lower", "upper"), "bounded", ("real", "real"), improper=True),
    "flat_affine": Family(("offset", "multiplier"), "affine", ("real", "positive"), improper=True),
    # The Cholesky factor of a correlation matrix (Stan's ``cholesky_factor_corr``), through
    # the transform LKJCholesky is sampled through.
    "flat_corr_cholesky": Family((), "corr_cholesky", improper=True, event_dims=2),
    # The Cholesky factor of a covariance matrix (Stan's ``cholesky_factor_cov[K]``: lower
    # triangular, positive diagonal) and a covariance matrix (``cov_matrix[K]``), each from
    # K (K + 1) / 2 unconstrained values: the lower triangle row by row, the diagonal as its log.
    "flat_cholesky_factor_cov": Family((), "cholesky_factor_cov", improper=True, event_dims=2),
    "flat_cov_matrix": Family((), "cov_matrix", improper=True, event_dims=2),
    # A correlation matrix (``corr_matrix[K]``): L L^T of a Cholesky factor built from
    # K (K - 1) / 2 partial correlations (tanh), read column by column.
    "flat_corr_matrix": Family((), "corr_matrix", improper=True, event_dims=2),
}
#: The families above: flat on a constrained type, through Stan's transform of that type.
CONSTRAINED_FLAT = frozenset({"flat_ordered", "flat_positive_ordered", "flat_simplex", "flat_lower", "flat_upper",
                              "flat_interval", "flat_affine", "flat_corr_cholesky",
                              "flat_cholesky_factor_cov", "flat_cov_matrix", "flat_corr_matrix"})

_CHECKS = {
    "real": (lambda v: not math.isnan(v), "a number"),
    "positive": (lambda v: v > 0, "positive"),
    "unit": (lambda v: 0 <= v <= 1, "in [0, 1]"),
    "count": (lambda v: v >= 0 and float(v).is_integer(), "a whole number >= 0"),
}


@dataclass(frozen=True)
class Dist:
    family: str
    args: tuple[tuple[str, Expr], ...]

    @property
    def kwargs(self) -> dict[str, Expr]:
        return dict(self.args)

    @property
    def info(self) -> Family:
        return FAMILIES[self.family]


def _dist(family: str, **kwargs: ExprLike) -> Dist:
    info = FAMILIES[family]
    if tuple(kwargs) != info.params:
        raise TypeError(f"{family} takes ({', '.join(info.params)}), got ({', '.join(kwargs)})")
    args = tuple((k, as_expr(v)) for k, v in kwargs.items())
    for (name, value), constraint in zip(args, info.constraints):
        check, words = _CHECKS[constraint]
        if isinstance(value, Const) and not check(value.value):
            raise ValueError(f"{family}: argument {name} must be {words}, got {value.value!r}")
    return Dist(family, args)


def Normal(mu: ExprLike, sigma: ExprLike) -> Dist:
    return _dist("normal", mu=mu, sigma=sigma)


def HalfNormal(sigma: ExprLike) -> Dist:
    return _dist("half_normal", sigma=sigma)


def StudentT(nu: ExprLike, mu: ExprLike, sigma: ExprLike) -> Dist:
    return _dist("student_t", nu=nu, mu=mu, sigma=sigma)


def HalfStudentT(nu: ExprLike, sigma: ExprLike) -> Dist:
    return _dist("half_student_t", nu=nu, sigma=sigma)


def Cauchy(mu: ExprLike, sigma: ExprLike) -> Dist:
    return _dist("cauchy", mu=mu, sigma=sigma)


def HalfCauchy(sigma: ExprLike) -> Dist:
    return _dist("half_cauchy", sigma=sigma)


def Beta(alpha: ExprLike, beta: ExprLike) -> Dist:
    return _dist("beta", alpha=alpha, beta=beta)


def Gamma(alpha: ExprLike, beta: ExprLike) -> Dist:
    """Shape ``alpha``, rate ``beta``."""
    return _dist("gamma", alpha=alpha, beta=beta)


def Exponential(rate: ExprLike) -> Dist:
    return _dist("exponential", rate=rate)


def Uniform(lower: float, upper: float) -> Dist:
    """Bounds are constants: they fix the support, hence the transform."""
    if not (isinstance(lower, (int, float)) and isinstance(upper, (int, float)) and lower < upper):
        raise TypeError(f"Uniform needs constant bounds lower < upper, got {lower!r}, {upper!r}")
    return _dist("uniform", lower=lower, upper=upper)


def Flat() -> Dist:
    """The improper flat density on the real line."""
    return _dist("flat")


def HalfFlat() -> Dist:
    """The improper flat density on the positive reals (sampled on the log scale)."""
    return _dist("half_flat")


def FlatOrdered() -> Dist:
    """Flat on increasing vectors (Stan's ``ordered``): the first value, then the log of each
    difference, unconstrained."""
    return _dist("flat_ordered")


def FlatPositiveOrdered() -> Dist:
    """Flat on increasing positive vectors (Stan's ``positive_ordered``): the log of the first
    value and of each difference, unconstrained."""
    return _dist("flat_positive_ordered")


def FlatSimplex() -> Dist:
    """Flat on the simplex (Stan's ``simplex``): K values by Stan's stick-breaking transform
    of K - 1 unconstrained values (so uniform, a Dirichlet(1, ..., 1))."""
    return _dist("flat_simplex")


def FlatLower(lower: ExprLike) -> Dist:
    """Flat above ``lower`` (an expression of data or of other parameters): ``lower + exp(u)``."""
    return _dist("flat_lower", lower=lower)


def FlatUpper(upper: ExprLike) -> Dist:
    """Flat below ``upper``: ``upper - exp(u)``."""
    return _dist("flat_upper", upper=upper)


def FlatInterval(lower: ExprLike, upper: ExprLike) -> Dist:
    """Flat between two bounds that may be expressions (Uniform takes constants and is
    normalised): ``lower + (upper - lower) inv_logit(u)``."""
    return _dist("flat_interval", lower=lower, upper=upper)


def FlatAffine(offset: ExprLike, multiplier: ExprLike) -> Dist:
    """Flat on the real line, sampled as ``offset + multiplier * u`` (Stan's
    ``<offset, multiplier>``; the log Jacobian is ``log(multiplier)`` per value)."""
    return _dist("flat_affine", offset=offset, multiplier=multiplier)


def FlatCorrCholesky() -> Dist:
    """Flat on the Cholesky factors of K x K correlation matrices (Stan's
    ``cholesky_factor_corr``), sampled as LKJCholesky is: K (K - 1) / 2 unconstrained values,
    the tanh of each a canonical partial correlation. Two dims of the same size (a dim and
    its :func:`~polyppl.spec.column_dim`)."""
    return _dist("flat_corr_cholesky")


def FlatCholeskyFactorCov() -> Dist:
    """Flat on the lower triangular K x K matrices with a positive diagonal (Stan's
    ``cholesky_factor_cov[K]``): K (K + 1) / 2 unconstrained values, the lower triangle row by
    row with the log of each diagonal element."""
    return _dist("flat_cholesky_factor_cov")


def FlatCovMatrix() -> Dist:
    """Flat on the K x K covariance matrices (Stan's ``cov_matrix[K]``): ``L @ L.T`` of the
    Cholesky factor ``L`` that FlatCholeskyFactorCov samples, with Stan's log Jacobian
    ``K log 2 + sum_k (K - k + 2) log L_kk`` (k from 1)."""
    return _dist("flat_cov_matrix")


def FlatCorrMatrix() -> Dist:
    """Flat on the K x K correlation matrices (Stan's ``corr_matrix[K]``): ``L @ L.T`` with
    ``L`` built from K (K - 1) / 2 canonical partial correlations, the tanh of unconstrained
    values read column by column below the diagonal (Stan's ``read_corr_L``), and Stan's log
    Jacobian."""
    return _dist("flat_corr_matrix")


def Binomial(n: ExprLike, p: ExprLike) -> Dist:
    return _dist("binomial", n=n, p=p)


def BinomialLogit(n: ExprLike, logit_p: ExprLike) -> Dist:
    return _dist("binomial_logit", n=n, logit_p=logit_p)


def BetaBinomial(n: ExprLike, alpha: ExprLike, beta: ExprLike) -> Dist:
    """``n`` trials whose success probability is Beta(alpha, beta): a Binomial with its rate
    integrated out. Every compiler evaluates it in a form that stays exact for alpha + beta
    up to 1e15 and n up to 1e7 (``polyppl.backends.beta_binomial_math``)."""
    return _dist("beta_binomial", n=n, alpha=alpha, beta=beta)


def Bernoulli(p: ExprLike) -> Dist:
    return _dist("bernoulli", p=p)


def BernoulliLogit(logit_p: ExprLike) -> Dist:
    return _dist("bernoulli_logit", logit_p=logit_p)


def Poisson(rate: ExprLike) -> Dist:
    return _dist("poisson", rate=rate)


def PoissonLog(log_rate: ExprLike) -> Dist:
    """Poisson by the log of its rate (a log link): ``PoissonLog(eta + log(exposure))``."""
    return _dist("poisson_log", log_rate=log_rate)


def LKJCholesky(eta: ExprLike) -> Dist:
    """The Cholesky factor ``L`` of a correlation matrix whose density is proportional to
    ``det(L @ L.T) ** (eta - 1)`` (Lewandowski, Kurowicka and Joe 2009); ``eta = 1`` is
    uniform over correlation matrices. A parameter with this prior has two dims of the same
    size (term, term); every backend samples it through Stan's transform (the tanh of the
    canonical partial correlations, row by row below the diagonal)."""
    return _dist("lkj_corr_cholesky", eta=eta)



def LogNormal(mu: ExprLike, sigma: ExprLike) -> Dist:
    """``exp`` of a Normal(mu, sigma)."""
    return _dist("lognormal", mu=mu, sigma=sigma)


def InverseGamma(alpha: ExprLike, beta: ExprLike) -> Dist:
    """Shape ``alpha``, scale ``beta``: density proportional to ``x^(-alpha-1) exp(-beta / x)``."""
    return _dist("inv_gamma", alpha=alpha, beta=beta)


def DoubleExponential(mu: ExprLike, sigma: ExprLike) -> Dist:
    """The Laplace distribution: location ``mu``, scale ``sigma``."""
    return _dist("double_exponential", mu=mu, sigma=sigma)


def Logistic(mu: ExprLike, sigma: ExprLike) -> Dist:
    return _dist("logistic", mu=mu, sigma=sigma)


def Weibull(alpha: ExprLike, sigma: ExprLike) -> Dist:
    """Shape ``alpha``, scale ``sigma``."""
    return _dist("weibull", alpha=alpha, sigma=sigma)


def ChiSquare(nu: ExprLike) -> Dist:
    return _dist("chi_square", nu=nu)


def NegBinomial2(mu: ExprLike, phi: ExprLike) -> Dist:
    """Counts of mean ``mu`` and variance ``mu + mu^2 / phi``."""
    return _dist("neg_binomial_2", mu=mu, phi=phi)


def NegBinomial2Log(log_mu: ExprLike, phi: ExprLike) -> Dist:
    """NegBinomial2 by the log of its mean (a log link)."""
    return _dist("neg_binomial_2_log", log_mu=log_mu, phi=phi)


def lpdf(dist: Dist, value: ExprLike) -> LogPdf:
    """``dist``'s log density of ``value``, summed over its elements: a scalar term for a
    Factor. Improper and matrix-valued families have no such term."""
    if dist.info.improper or dist.info.event_dims:
        raise TypeError(f"lpdf takes a proper family of scalar values, not {dist.family}")
    return LogPdf(dist.family, dist.args, as_expr(value))
