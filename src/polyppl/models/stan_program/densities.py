"""Log densities inside expressions, and the functions that mix them.

``target += log_mix(theta, normal_lpdf(y[n] | mu[1], sigma[1]), normal_lpdf(y[n] | mu[2], sigma[2]))``
in a loop over n needs each density per row, not summed (a spec ``LogPdf`` is a sum): here
a family's ``_lpdf`` inside an expression is its closed form, with every constant (as Stan's
``_lpdf`` keeps them), written with the spec's elementwise functions, so that it is one
expression over the loop's rows on every backend. ``log_mix`` and ``log_sum_exp`` of two
values are the spec's ``log_sum_exp``; ``log_sum_exp`` of a vector of known size folds it.
"""

from __future__ import annotations

import math

import numpy as np
from scipy import special

from polyppl import spec as s
from polyppl.models.stan_program.interpret import Unsupported

_HALF_LOG_2PI = 0.5 * math.log(2 * math.pi)


def _constant(expr: s.Expr, family: str, arg: str, line: int) -> float:
    if not isinstance(expr, s.Const):
        raise Unsupported(line, f"{family}_lpdf inside an expression with a {arg} that is not a constant "
                          "is not supported for PyMC and NumPyro")
    return expr.value


def _normal(x, mu, sigma, line):
    z = (x - mu) / sigma
    return -0.5 * z * z - s.log(sigma) - _HALF_LOG_2PI


def _std_normal(x, line):
    return -0.5 * x * x - _HALF_LOG_2PI


def _cauchy(x, mu, sigma, line):
    z = (x - mu) / sigma
    return -math.log(math.pi) - s.log(sigma) - s.log1p(z * z)


def _lognormal(x, mu, sigma, line):
    z = (s.log(x) - mu) / sigma
    return -0.5 * z * z - s.log(sigma) - s.log(x) - _HALF_LOG_2PI


def _exponential(x, rate, line):
    return s.log(rate) - rate * x


def _logistic(x, mu, sigma, line):
    z = (x - mu) / sigma
    return -z - s.log(sigma) - 2.0 * s.log1p(s.exp(-z))


def _student_t(x, nu, mu, sigma, line):
    n = _constant(nu, "student_t", "nu", line)
    z = (x - mu) / sigma
    constant = float(special.gammaln((n + 1) / 2) - special.gammaln(n / 2) - 0.5 * math.log(n * math.pi))
    return constant - s.log(sigma) - (n + 1) / 2 * s.log1p(z * z / n)


#: Stan's family -> its log density per element, of the value and Stan's arguments (spec expressions).
CLOSED_FORMS = {"normal": _normal, "std_normal": _std_normal, "cauchy": _cauchy, "lognormal": _lognormal,
                "exponential": _exponential, "logistic": _logistic, "student_t": _student_t}


def elementwise_lpdf(function: str, value: s.Expr, args: tuple[s.Expr, ...], line: int) -> s.Expr:
    """``function`` (``normal_lpdf``, ...) of ``value`` per element, as a spec expression."""
    family, suffix = function.rsplit("_", 1)
    if suffix != "lpdf":
        raise Unsupported(line, f"{function} inside an expression (only _lpdf, which keeps Stan's constants) "
                          "is not supported for PyMC and NumPyro")
    form = CLOSED_FORMS.get(family)
    if form is None:
        raise Unsupported(line, f"{function} inside an expression is not supported for PyMC and NumPyro "
                          f"(only {', '.join(f + '_lpdf' for f in CLOSED_FORMS)})")
    if form.__code__.co_argcount != len(args) + 2:
        raise Unsupported(line, f"{function} with {len(args)} arguments")
    return form(value, *args, line)


_LOG_HALF = math.log(0.5)
_LOG_2 = math.log(2.0)
_SQRT_2 = math.sqrt(2.0)
_HALF_LOG_PI = 0.5 * math.log(math.pi)
#: Past this, erfc(x) (about 1e-274 at 25) nears float64's underflow at ~26.5: log(erfc(x))
#: is its asymptotic series there.
_ERFC_SERIES_FROM = 25.0
#: erfc(x) x sqrt(pi) exp(x^2) = 1 + sum_n (-1)^n (2n - 1)!! / (2 x^2)^n: the coefficients of
#: 1/x^2n, n = 1..6; the next term is under 3e-17 at x = 25.
_ERFC_SERIES = (-0.5, 0.75, -1.875, 6.5625, -29.53125, 162.421875)

# Every form below is a spec expression evaluated on both sides of each ``where``, and its
# gradient too, so the side not taken gets an argument where it is finite (a NaN or an
# infinite derivative there would poison the gradient of the side taken).


def _log1m_exp(a: s.Expr) -> s.Expr:
    """log(1 - exp(a)) for a <= 0, without cancellation at either end (Stan's log1m_exp):
    log(-expm1(a)) near 0, log1p(-exp(a)) below -log(2)."""
    near_zero = a > -_LOG_2
    return s.where(near_zero, s.log(-s.expm1(a)), s.log1p(-s.exp(s.where(near_zero, -_LOG_2, a))))


def _log_erfc(x: s.Expr) -> s.Expr:
    """log(erfc(x)), finite wherever its value is: erfc itself up to 25, then its asymptotic
    series (erfc underflows to 0 at ~26.5, where log(erfc) is -inf and its gradient NaN)."""
    series = x > _ERFC_SERIES_FROM
    far = s.where(series, x, _ERFC_SERIES_FROM)
    inverse_square = 1.0 / (far * far)
    tail = 0.0
    for coefficient in reversed(_ERFC_SERIES):
        tail = inverse_square * (coefficient + tail)
    asymptotic = -far * far - s.log(far) - _HALF_LOG_PI + s.log1p(tail)
    return s.where(series, asymptotic, s.log(s.erfc(s.where(series, _ERFC_SERIES_FROM, x))))


def _std_normal_lcdf(z: s.Expr) -> s.Expr:
    """log(Phi(z)): log(erfc(-z / sqrt(2)) / 2), as log1p(-erfc(z / sqrt(2)) / 2) above 0 (there
    its value is near 0, to be kept to relative precision: T[L, U] of a right tail subtracts two)."""
    right = z > 0.0
    return s.where(right, s.log1p(-0.5 * s.erfc(s.where(right, z, 0.0) / _SQRT_2)),
                   _log_erfc(-z / _SQRT_2) + _LOG_HALF)


def _normal_lcdf(x, mu, sigma, line):
    return _std_normal_lcdf((x - mu) / sigma)


def _normal_lccdf(x, mu, sigma, line):
    return _std_normal_lcdf((mu - x) / sigma)


def _lognormal_lcdf(x, mu, sigma, line):
    return _normal_lcdf(s.log(x), mu, sigma, line)


def _lognormal_lccdf(x, mu, sigma, line):
    return _normal_lccdf(s.log(x), mu, sigma, line)


def _exponential_lcdf(x, rate, line):
    return _log1m_exp(-rate * x)


def _exponential_lccdf(x, rate, line):
    return -rate * x


def _cauchy_lcdf_of(z: s.Expr) -> s.Expr:
    """log(1/2 + atan(z) / pi), as log(atan(-1/z) / pi) below z = -1 (the same value; the sum
    cancels to nothing in the left tail, at z = -1e17 it is 0) and log1p(-atan(1/z) / pi)
    above z = 1 (a value near 0, kept to relative precision)."""
    left, right = z < -1.0, z > 1.0
    middle = s.log(0.5 + s.atan(z) / math.pi)
    return s.where(left, s.log(s.atan(-1.0 / s.where(left, z, -1.0)) / math.pi),
                   s.where(right, s.log1p(-s.atan(1.0 / s.where(right, z, 1.0)) / math.pi), middle))


def _cauchy_lcdf(x, mu, sigma, line):
    return _cauchy_lcdf_of((x - mu) / sigma)


def _cauchy_lccdf(x, mu, sigma, line):
    return _cauchy_lcdf_of((mu - x) / sigma)


def _logistic_lcdf(x, mu, sigma, line):
    return -s.log_sum_exp(0.0, -(x - mu) / sigma)  # log(inv_logit(z)), no overflow of exp(-z)


def _logistic_lccdf(x, mu, sigma, line):
    return -s.log_sum_exp(0.0, (x - mu) / sigma)


def _double_exponential_lcdf_of(z: s.Expr) -> s.Expr:
    """log(exp(z) / 2) below 0, log(1 - exp(-z) / 2) above (Stan's two branches)."""
    left = z < 0.0
    return s.where(left, _LOG_HALF + z, s.log1p(-0.5 * s.exp(-s.where(left, 0.0, z))))


def _double_exponential_lcdf(x, mu, sigma, line):
    return _double_exponential_lcdf_of((x - mu) / sigma)


def _double_exponential_lccdf(x, mu, sigma, line):
    return _double_exponential_lcdf_of((mu - x) / sigma)


def _weibull_power(x, alpha, sigma):
    return s.exp(alpha * s.log(x / sigma))  # (x / sigma)^alpha, as Stan computes it


def _weibull_lcdf(x, alpha, sigma, line):
    return _log1m_exp(-_weibull_power(x, alpha, sigma))


def _weibull_lccdf(x, alpha, sigma, line):
    return -_weibull_power(x, alpha, sigma)


def _frechet_lcdf(x, alpha, sigma, line):
    return -_weibull_power(sigma, alpha, x)  # -(sigma / x)^alpha


def _frechet_lccdf(x, alpha, sigma, line):
    return _log1m_exp(-_weibull_power(sigma, alpha, x))


def _rayleigh_lcdf(x, sigma, line):
    return _log1m_exp(-0.5 * (x / sigma) * (x / sigma))


def _rayleigh_lccdf(x, sigma, line):
    return -0.5 * (x / sigma) * (x / sigma)


def _gumbel_lcdf(x, mu, beta, line):
    return -s.exp(-(x - mu) / beta)


def _gumbel_lccdf(x, mu, beta, line):
    return _log1m_exp(-s.exp(-(x - mu) / beta))


def _pareto_lcdf(x, y_min, alpha, line):
    return _log1m_exp(alpha * s.log(y_min / x))


def _pareto_lccdf(x, y_min, alpha, line):
    return alpha * s.log(y_min / x)


def _gamma_lcdf(x, alpha, beta, line):
    return s.log(s.gamma_p(alpha, beta * x))  # as Stan: log(gamma_p), which underflows where it does


def _gamma_lccdf(x, alpha, beta, line):
    return s.log(s.gamma_q(alpha, beta * x))


def _inv_gamma_lcdf(x, alpha, beta, line):
    return s.log(s.gamma_q(alpha, beta / x))


def _inv_gamma_lccdf(x, alpha, beta, line):
    return s.log(s.gamma_p(alpha, beta / x))


def _chi_square_lcdf(x, nu, line):
    return s.log(s.gamma_p(0.5 * nu, 0.5 * x))


def _chi_square_lccdf(x, nu, line):
    return s.log(s.gamma_q(0.5 * nu, 0.5 * x))


def _uniform_lcdf(x, low, high, line):
    return s.log((x - low) / (high - low))  # inside [low, high]


def _uniform_lccdf(x, low, high, line):
    return s.log((high - x) / (high - low))


#: Stan's family -> its log cdf and log complementary cdf per element (``_cdf`` is exp of the
#: first), each in a form that stays finite and accurate in the tails where its value is.
CDFS = {"normal": (_normal_lcdf, _normal_lccdf), "lognormal": (_lognormal_lcdf, _lognormal_lccdf),
        "exponential": (_exponential_lcdf, _exponential_lccdf), "cauchy": (_cauchy_lcdf, _cauchy_lccdf),
        "logistic": (_logistic_lcdf, _logistic_lccdf),
        "double_exponential": (_double_exponential_lcdf, _double_exponential_lccdf),
        "weibull": (_weibull_lcdf, _weibull_lccdf), "frechet": (_frechet_lcdf, _frechet_lccdf),
        "rayleigh": (_rayleigh_lcdf, _rayleigh_lccdf), "gumbel": (_gumbel_lcdf, _gumbel_lccdf),
        "pareto": (_pareto_lcdf, _pareto_lccdf), "uniform": (_uniform_lcdf, _uniform_lccdf),
        "gamma": (_gamma_lcdf, _gamma_lccdf), "inv_gamma": (_inv_gamma_lcdf, _inv_gamma_lccdf),
        "chi_square": (_chi_square_lcdf, _chi_square_lccdf)}

#: The cdfs of parameters that stay unsupported, and why.
_WITHOUT_CLOSED_FORM = {
    family: ("its cdf is a regularized incomplete beta function, whose gradient in its shape arguments "
             "JAX (NumPyro's backend) does not compute") for family in ("beta", "student_t")}

#: Stan's functions whose gradient Stan computes by an approximation, not as the derivative of
#: their value: the translation check compares gradients through them to the tolerance named.
APPROXIMATE_GRADIENTS: dict[str, s.LooseGradient] = {
    # Measured against the exact derivative on a grid of z in (-38, 12): up to 6e-5 relative
    # (4.5e-5 in the check's measure, at z near -3); exact above z = 5.
    "normal_lcdf": s.LooseGradient(
        "normal_lcdf", 1e-4, "Stan's normal_lcdf gradient is a polynomial approximation "
        "(stan math normal_lcdf.hpp), up to ~5e-5 relative"),
    # The derivative of Q(a, x) in a: a series Stan stops at 1e-6 (gamma_p's, in gamma_lcdf, at
    # 1e-10, is exact to 1e-11 relative: not here). Measured against PyTensor's and JAX's
    # (both within 1e-14 of mpmath's): up to 2.4e-4 relative, for a in (0.5, 3).
    **{function: s.LooseGradient(
        function, 1e-3, f"Stan's {function} gradient in its shape is a series summed to 1e-6 "
        "(stan math grad_reg_inc_gamma.hpp), up to ~2e-4 relative")
       for function in ("gamma_lccdf", "gamma_cdf", "inv_gamma_lcdf", "inv_gamma_lccdf", "inv_gamma_cdf",
                        "chi_square_lcdf", "chi_square_lccdf", "chi_square_cdf")},
}


def elementwise_cdf(function: str, value: s.Expr, args: tuple[s.Expr, ...], line: int) -> s.Expr:
    """``function`` (``normal_lcdf``, ``exponential_lccdf``, ``cauchy_cdf``, ...) of ``value``
    per element, as a spec expression."""
    family, suffix = function.rsplit("_", 1)
    forms = CDFS.get(family)
    if forms is None:
        why = f"; {_WITHOUT_CLOSED_FORM[family]}" if family in _WITHOUT_CLOSED_FORM else ""
        raise Unsupported(line, f"{function} of parameters is not supported for PyMC and NumPyro "
                          f"(only the cdfs of {', '.join(CDFS)}{why})")
    form = forms[1] if suffix == "lccdf" else forms[0]
    if form.__code__.co_argcount != len(args) + 2:
        raise Unsupported(line, f"{function} with {len(args)} arguments")
    out = form(value, *args, line)
    return s.exp(out) if suffix == "cdf" else out


def truncation_functions(family: str, lower: bool, upper: bool) -> tuple[str, ...]:
    """The cdf that ``T[L, U]`` of ``family`` calls, as Stan's generated code calls it: lccdf
    of L alone, lcdf of U alone or of both (``truncation``)."""
    return (f"{family}_lcdf",) if upper else (f"{family}_lccdf",)


def truncation(family: str, lower: s.Expr | None, upper: s.Expr | None, args: tuple[s.Expr, ...],
               line: int) -> s.Expr:
    """The log probability of [lower, upper] under ``family``, which ``T[lower, upper]``
    subtracts, as Stan's generated code computes it: lccdf(lower), lcdf(upper), or
    log_diff_exp(lcdf(upper), lcdf(lower))."""
    if lower is None:
        return elementwise_cdf(f"{family}_lcdf", upper, args, line)
    if upper is None:
        return elementwise_cdf(f"{family}_lccdf", lower, args, line)
    high = elementwise_cdf(f"{family}_lcdf", upper, args, line)
    low = elementwise_cdf(f"{family}_lcdf", lower, args, line)
    return high + _log1m_exp(low - high)


def lkj_log_normaliser(eta: s.Expr, k: int) -> s.Expr:
    """The terms of Stan's LKJ normalising constant (``do_lkj_constant``, eta other than 1)
    that depend on eta: (K - 1) lgamma(eta + (K - 1)/2) - sum_{j=1}^{K-1} lgamma(eta + (K - 1 - j)/2)."""
    total = (k - 1) * s.lgamma(eta + 0.5 * (k - 1))
    for j in range(1, k):
        total = total - s.lgamma(eta + 0.5 * (k - 1 - j))
    return total


def multi_normal_cholesky(value: s.Expr, mu: s.Expr, lower: s.Expr, size: int) -> s.Expr:
    """Stan's ``multi_normal_cholesky_lpdf(y | mu, L)`` with its constants:
    -sum(log(diag(L))) - |L^-1 (y - mu)|^2 / 2 - size log(2 pi) / 2."""
    z = s.solve_lower(lower, value - mu)
    return -s.sum_all(s.log(s.diagonal(lower))) - 0.5 * s.sum_all(z * z) - size * _HALF_LOG_2PI


def multi_normal_cholesky_columns(values: s.Expr, mu: s.Expr, lower: s.Expr, size: int, count: int) -> s.Expr:
    """The sum of ``multi_normal_cholesky_lpdf`` over ``count`` columns of ``values`` (size x
    count) with the columns of ``mu`` as their means and one factor ``L``."""
    z = s.solve_lower(lower, values - mu)
    return (-count * s.sum_all(s.log(s.diagonal(lower))) - 0.5 * s.sum_all(z * z)
            - count * size * _HALF_LOG_2PI)


def log_mix(theta: s.Expr, first: s.Expr, second: s.Expr) -> s.Expr:
    """Stan's ``log_mix(theta, lp1, lp2)``: log(theta exp(lp1) + (1 - theta) exp(lp2))."""
    return s.log_sum_exp(s.log(theta) + first, s.log1p(-theta) + second)


def log_sum_exp_of(elements: list[s.Expr]) -> s.Expr:
    """log(sum(exp(elements))), folded two at a time."""
    total = elements[0]
    for element in elements[1:]:
        total = s.log_sum_exp(total, element)
    return total
