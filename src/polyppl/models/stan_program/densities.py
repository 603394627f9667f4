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


def _normal_lcdf(x, mu, sigma, line):
    return s.log(s.erfc(-(x - mu) / (sigma * math.sqrt(2.0)))) + _LOG_HALF


def _normal_lccdf(x, mu, sigma, line):
    return s.log(s.erfc((x - mu) / (sigma * math.sqrt(2.0)))) + _LOG_HALF


def _exponential_lcdf(x, rate, line):
    return s.log1p(-s.exp(-rate * x))


def _exponential_lccdf(x, rate, line):
    return -rate * x


#: Stan's family -> its log cdf and log complementary cdf per element (``_cdf`` is exp of the first).
CDFS = {"normal": (_normal_lcdf, _normal_lccdf), "exponential": (_exponential_lcdf, _exponential_lccdf)}


def elementwise_cdf(function: str, value: s.Expr, args: tuple[s.Expr, ...], line: int) -> s.Expr:
    """``function`` (``normal_lcdf``, ``exponential_lccdf``, ``normal_cdf``, ...) of ``value``
    per element, as a spec expression."""
    family, suffix = function.rsplit("_", 1)
    forms = CDFS.get(family)
    if forms is None:
        raise Unsupported(line, f"{function} of parameters is not supported for PyMC and NumPyro "
                          f"(only the cdfs of {', '.join(CDFS)})")
    if function == "normal_lcdf":
        # Its value is log(erfc(-z) / 2), but Stan's gradient of it is a piecewise polynomial
        # approximation (Stan math's normal_lcdf.hpp), off by up to ~1e-6 relative: no closed
        # form matches it to the translation check's 1e-8.
        raise Unsupported(line, "normal_lcdf of parameters (also in T[, U] and T[L, U] of a normal) is not "
                          "supported for PyMC and NumPyro (Stan's gradient of it is an approximation)")
    form = forms[1] if suffix == "lccdf" else forms[0]
    if form.__code__.co_argcount != len(args) + 2:
        raise Unsupported(line, f"{function} with {len(args)} arguments")
    out = form(value, *args, line)
    return s.exp(out) if suffix == "cdf" else out


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
    return high + s.log1p(-s.exp(low - high))


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
