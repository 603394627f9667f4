"""The Beta-Binomial log-pmf and its gradient, exact in float64 for a + b from 1e-3 to 1e15.

    log p(y | n, a, b) = log C(n, y) + lrf(a, y) + lrf(b, n - y) - lrf(a + b, n),
    lrf(x, k) = lgamma(x + k) - lgamma(x)                 (log rising factorial)

Why not lgamma differences
--------------------------
Each lgamma above is huge where the result is not: lgamma(1e15) ~ 3.4e16 carries a rounding
error of about 4 (its ulp), and at n = 1e7 log C(n, y) is a difference of numbers of 1.5e8.
On the test grid the textbook form errs by up to 12 nats at a + b = 1e15, 5e-5 at 1e10, and
8e-6 at a + b = 1e-3 with n = 1e7; a sampler fed such values drifts to ever larger a + b
(Stan's ``beta_binomial``, an lbeta difference, does the same).

The form
--------
Write lgamma(z) = (z - 1/2) log z - z + log(2 pi) / 2 + c(z), which *defines* the Stirling
remainder c(z) for every z > 0 (c ~ 1/(12 z) for large z, c ~ -log(z) / 2 for tiny z), and
let bd0(x, m) = x log(x / m) + m - x >= 0 (Loader's deviance term). Then, exactly,

    lrf(x, k) = k log(x + k) - bd0(x, x + k) - log1p(k / x) / 2 + c(x + k) - c(x).

In the sum of the three lrf, the k log(x + k) parts (weights y, n - y, -n, summing to zero)
join log C(n, y) as a binomial log-pmf at the posterior mean of the rate, P = (a + y) / (a +
b + n), Q = (b + n - y) / (a + b + n) = 1 - P; and the three bd0 (their linear parts cancel
likewise) regroup into two, at the prior weight s = a + b:

    log p = log Binom(y | n, P) - bd0(a, s P) - bd0(b, s Q)
            - [log1p(y / a) + log1p((n - y) / b) - log1p(n / s)] / 2
            + [c(a + y) - c(a)] + [c(b + n - y) - c(b)] - [c(s + n) - c(s)].

The huge (z - 1/2) log z - z parts have cancelled analytically. What is left: a binomial
log-pmf and two deviances, all <= 0, each large only where the result is; the log1p terms
(below 30 in size) and c terms (below 10). So the value is accurate to a few ulps of
max(|log p|, 1) in every regime, with O(1) cost per observation (no sum over the count).
The pieces:

* log Binom(y | n, P) in Loader's saddle-point form (R's ``dbinom_raw``): for 0 < y < n,
  c(n) - c(y) - c(n - y) - bd0(y, nP) - bd0(n - y, nQ) + log(n / (2 pi y (n - y))) / 2
  (c(m) is Loader's stirlerr(m)); n log Q for y = 0 and n log P for y = n, with log Q taken
  as log1p(-P) where P < Q (and symmetrically), so that a rate near 0 or 1 keeps its digits.
  The first four terms depend on the counts alone (``_binomial_data_term``).
* bd0(x, m): with v = (x - m) / (x + m), log(x / m) = 2 atanh(v) gives bd0 = (x - m) v +
  2 x (v^3 / 3 + v^5 / 5 + ...), all terms of the result's sign; 10 terms for |v| < 0.2
  (truncation below 1e-16 relative), x log(x / m) - (x - m) otherwise (cancelling by a
  factor 5.6 at most, at |v| = 0.2).
* c(z): for z >= 8 the asymptotic series sum_{j=1..8} B_2j / (2j (2j - 1) z^(2j - 1)),
  truncation 7e-17 at z = 8 (1.5e-16 for its derivative), chosen against mpmath: with 7
  terms the threshold would be 10, a threshold of 6 needs 12 terms. Below 8, lgamma(z) =
  lgamma(z + 8) - log(z (z + 1) ... (z + 7)) with the series at z + 8, which rearranges
  into (z + 1/2) log1p(8 / z) - log(prod_{i=1..7} (z + i) / (z + 8)^7) - 8 + series(z + 8):
  terms below 8 in size, absolute error below 4e-15 from z = 1e-8 to 8 (as good as SciPy's
  lgamma; no special function is used anywhere, so every backend computes the same thing).

Gradient
--------
d/da log p = D(a, y) - D(s, n) and d/db log p = D(b, n - y) - D(s, n), with D(x, k) =
psi(x + k) - psi(x) = d/dx lrf(x, k), which the form above gives without cancellation:

    D(x, k) = log1p(k / x) + k / (2 x (x + k)) + c'(x + k) - c'(x),

about k / x at x = 1e15 rather than a difference of two digammas of 35 (c' by the
derivative of each branch of c; ``beta_binomial_logpmf_gradient``). The two D of a partial
cancel where y / a is near n / s (at s = 1e15 both are ~1e-8 and the partial ~1e-16); no
float64 method resolves better than a few ulps of |D(a, y)| + |D(s, n)|, the scale against
which gradient errors are stated. Differentiating the value expression by autodiff (JAX's
jax.grad of ``beta_binomial_logpmf(..., jax_ops())``) is also accurate, because every
``where`` evaluates its branch not taken at a harmless argument (c clamps z into each
branch's range, the binomial interior sees y = n - y = 1 where y is 0 or n, log1p(-P) sees
P = 0 where not taken), so that no 0 * inf turns a gradient into NaN.

Accuracy
--------
Against mpmath at 50 digits, tests/test_beta_binomial_numerics.py: a + b in {1e-3, 0.1, 1,
10, 1e3, 1e6, 1e10, 1e15}, a / (a + b) in {1e-3, 0.3, 0.5, 0.97}, n in {1, 7, 100, 1e4,
1e7}, y in {0, 1, n // 3, n - 1, n} (704 points), plus 3000 random points over the same
ranges. Largest value error over max(|log p|, 1), and largest gradient error over the
scale above, for NumPy / JAX (custom JVP) / JAX (jax.grad) / PyTensor / Stan:

    value      4.2e-15 / 1.4e-14 / 1.4e-14 / 2.9e-15 / 4.2e-15   (grid; 2e-14 at most on random points)
    gradient   6.3e-16 / 6.3e-16 / 5.5e-14 / 6.3e-16 / 2.1e-13   (grid; random: 1e-15 analytic, 2.3e-14 jax.grad)

by a + b on the grid (worst implementation), value / gradient: 1e-3: 4e-15 / 2e-14; 0.1:
3e-15 / 6e-14; 1: 3e-15 / 8e-15; 10: 1.4e-14 / 4e-14; 1e3: 2e-15 / 8e-15; 1e6, 1e10, 1e15:
2e-15 / 7e-16; by n, every n from 1 to 1e7: at most 1.4e-14 / 6e-14.

Interfaces
----------
``log_rising_factorial(x, k, ops)``, ``beta_binomial_logpmf(y, n, alpha, beta, ops)`` and
``beta_binomial_logpmf_gradient`` are written once against ``ArrayOps`` (log, log1p, where,
to_float); ``NUMPY`` is the default, ``jax_ops()`` supplies ``jax.numpy`` and
``pytensor_scalar_ops()`` ``pytensor.scalar``. From these one definition:

* ``jax_beta_binomial_logpmf``: JAX, with the analytic gradient as its custom JVP;
* ``pytensor_beta_binomial_logpmf`` / ``pytensor_log_rising_factorial``: PyTensor Elemwise
  ops whose scalar graphs (the value; the partials) PyTensor compiles to C loops. The
  same definition run on ``pytensor.tensor`` is correct but makes a ~2000-node graph with
  its gradient, which PyTensor's rewriter took minutes to compile;
* ``STAN_FUNCTIONS``: the same computation in Stan (``if`` for ``where``, Stan's autodiff
  for the gradient), with the overloads the compiler needs.

Cost of value and gradient with respect to shared alpha and beta over 1000 observations
(jitted JAX, compiled PyTensor, CPU, best of 30 interleaved rounds on a shared, loaded
2-core machine; ranges over 4 runs): JAX's naive lgamma form 270-350 us;
``jax_beta_binomial_logpmf`` 0.7-0.9 times that, the generic form under jax.grad 1.1-1.4
times. PyTensor's naive form (gammaln, its gradient psi) 155-295 us; the Elemwise op 3-4
times that: its C loop calls libm for 23 logs and divides 58 times per observation, one at
a time, where XLA vectorises.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Callable

import numpy as np

Array = Any  # a NumPy, JAX or PyTensor array, or a Python number


@dataclass(frozen=True)
class ArrayOps:
    """The elementwise operations the log-pmf needs from an array library (no special functions)."""

    log: Callable[[Array], Array]
    log1p: Callable[[Array], Array]
    where: Callable[[Array, Array, Array], Array]
    #: integer counts to float64 (exact below 2^53; n - y is formed in integers before).
    to_float: Callable[[Array], Array]


NUMPY = ArrayOps(np.log, np.log1p, np.where, lambda k: np.asarray(k, dtype=np.float64))


def jax_ops() -> ArrayOps:
    """``jax.numpy`` operations (the caller enables float64: ``jax_enable_x64``)."""
    import jax.numpy as jnp

    return ArrayOps(jnp.log, jnp.log1p, jnp.where, lambda k: jnp.asarray(k, dtype=jnp.float64))


def pytensor_scalar_ops() -> ArrayOps:
    """``pytensor.scalar`` operations, for building the PyTensor ops below (``switch`` for ``where``)."""
    import pytensor.scalar as ps

    return ArrayOps(ps.log, ps.log1p, ps.switch, lambda k: ps.cast(k, "float64"))


#: c(z) is its asymptotic series from this argument up; below, the series at z + 8 shifted back.
STIRLING_THRESHOLD = 8.0
#: B_2j / (2j (2j - 1)), j = 1..8: the Stirling series c(z) = sum_j coefficient_j / z^(2j - 1).
STIRLING_COEFFICIENTS = (
    1.0 / 12.0, -1.0 / 360.0, 1.0 / 1260.0, -1.0 / 1680.0,
    1.0 / 1188.0, -691.0 / 360360.0, 1.0 / 156.0, -3617.0 / 122400.0,
)
#: (2j - 1) B_2j / (2j (2j - 1)): c'(z) = -sum_j coefficient_j / z^(2j).
STIRLING_DERIVATIVE_COEFFICIENTS = tuple((2 * j + 1) * c for j, c in enumerate(STIRLING_COEFFICIENTS))
#: bd0 uses its atanh series where |x - M| / (x + M) is below this.
BD0_SERIES_LIMIT = 0.2
#: 2 / (2j + 1), j = 1..10: the atanh series' coefficients after its first term.
ATANH_COEFFICIENTS = tuple(2.0 / (2 * j + 1) for j in range(1, 11))


def _horner(w: Array, coefficients: tuple[float, ...]) -> Array:
    """sum_j coefficients[j] w^j."""
    total = coefficients[-1]
    for coefficient in reversed(coefficients[:-1]):
        total = total * w + coefficient
    return total


def stirling_remainder(z: Array, ops: ArrayOps = NUMPY) -> Array:
    """c(z) = lgamma(z) - ((z - 1/2) log z - z + log(2 pi) / 2), for z > 0."""
    small = z < STIRLING_THRESHOLD
    # Below the threshold, lgamma(z) = lgamma(z + 8) - log(z (z + 1) ... (z + 7)) with
    # lgamma(z + 8) in Stirling's form; the (z - 1/2) log z - z parts then combine into
    # terms below 8 in size, so that no special function is needed at all. The series is
    # summed once, at z + 8 or at z. Each branch sees an argument inside its range where it
    # is not taken (clamped by where, not minimum: JAX splits minimum's gradient at a tie),
    # so that its value and gradient stay finite there: a where's gradient multiplies the
    # branch not taken by 0, and 0 * inf is NaN.
    clamped = ops.where(small, z, STIRLING_THRESHOLD)
    series_at = ops.where(small, z + STIRLING_THRESHOLD, z)
    rising = ((clamped + 1.0) * (clamped + 2.0) * (clamped + 3.0) * (clamped + 4.0)
              * (clamped + 5.0) * (clamped + 6.0) * (clamped + 7.0))
    top = clamped + STIRLING_THRESHOLD
    top2 = top * top  # top^7 by products: C's pow() would cost as much as a log
    shift = ((clamped + 0.5) * ops.log1p(STIRLING_THRESHOLD / clamped)
             - ops.log(rising / (top2 * top2 * top2 * top)) - STIRLING_THRESHOLD)
    series = _horner(1.0 / (series_at * series_at), STIRLING_COEFFICIENTS) / series_at
    return ops.where(small, shift, 0.0) + series


def stirling_remainder_derivative(z: Array, ops: ArrayOps = NUMPY) -> Array:
    """c'(z) = digamma(z) - log(z) + 1 / (2 z): the derivative of ``stirling_remainder``, branch by branch."""
    small = z < STIRLING_THRESHOLD
    clamped = ops.where(small, z, STIRLING_THRESHOLD)
    series_at = ops.where(small, z + STIRLING_THRESHOLD, z)
    # d/dz of the shift: log((z + 8)^7 / ((z + 1) ... (z + 7))) differentiates into
    # sum_i (8 - i) / (z + i), over z + 8: positive terms, summed as one fraction (one
    # division instead of seven).
    numerator, denominator = 0.0, 1.0
    for i in range(1, 8):
        numerator = numerator * (clamped + i) + (STIRLING_THRESHOLD - i) * denominator
        denominator = denominator * (clamped + i)
    top = clamped + STIRLING_THRESHOLD
    shift = (ops.log1p(STIRLING_THRESHOLD / clamped)
             - (STIRLING_THRESHOLD * (clamped + 0.5) / clamped + numerator / denominator) / top)
    w = 1.0 / (series_at * series_at)
    return ops.where(small, shift, 0.0) - w * _horner(w, STIRLING_DERIVATIVE_COEFFICIENTS)


def bd0(x: Array, m: Array, ops: ArrayOps = NUMPY) -> Array:
    """Loader's deviance term x log(x / m) + m - x >= 0, for x, m > 0, without cancellation."""
    d = x - m
    v = d / (x + m)
    v2 = v * v
    # log(x / m) = 2 atanh(v) = 2 (v + v^3 / 3 + ...), and 2 x v - d = d v: every term has
    # the sign of the result. 10 terms leave a relative truncation below 1e-16 at |v| < 0.2.
    series = d * v + x * (v * v2) * _horner(v2, ATANH_COEFFICIENTS)
    # Away from x = m, the direct form loses at most a factor 5.6 (at |v| = 0.2).
    return ops.where(abs(v) < BD0_SERIES_LIMIT, series, x * ops.log(x / m) - d)


def log_rising_factorial(x: Array, k: Array, ops: ArrayOps = NUMPY) -> Array:
    """lgamma(x + k) - lgamma(x) for x > 0, k >= 0, to a few ulps from x = 1e-6 to 1e15."""
    return (k * ops.log(x + k) - bd0(x, x + k, ops) - 0.5 * ops.log1p(k / x)
            + (stirling_remainder(x + k, ops) - stirling_remainder(x, ops)))


def digamma_difference(x: Array, k: Array, ops: ArrayOps = NUMPY) -> Array:
    """psi(x + k) - psi(x) = d/dx log_rising_factorial(x, k), about k / x for large x, without cancellation."""
    # The derivative of log_rising_factorial's form: k / (x + k) from k log(x + k) cancels
    # against bd0's, leaving log1p(k / x) and terms of order k / x^2.
    return (ops.log1p(k / x) + k / (2.0 * x * (x + k))
            + (stirling_remainder_derivative(x + k, ops) - stirling_remainder_derivative(x, ops)))


def _binomial_data_term(y: Array, f: Array, ops: ArrayOps) -> Array:
    """The part of log Binom(y | y + f, p) that depends on the counts alone (0 where y or f is 0)."""
    interior = (y > 0.5) & (f > 0.5)
    # Where y is 0 or n the interior form is not taken: it sees y = n - y = 1 there instead
    # of a log(0) whose gradient would turn the where's into NaN.
    ys = ops.where(interior, y, 1.0)
    fs = ops.where(interior, f, 1.0)
    ns = ys + fs
    term = (stirling_remainder(ns, ops) - stirling_remainder(ys, ops) - stirling_remainder(fs, ops)
            + 0.5 * ops.log(ns / (2.0 * math.pi * ys * fs)))
    return ops.where(interior, term, 0.0)


def _binomial_logpmf(y: Array, f: Array, n: Array, p: Array, q: Array, data_term: Array, ops: ArrayOps) -> Array:
    """log Binom(y | n, p), with f = n - y and q = 1 - p given separately (Loader's form)."""
    lower = p <= q
    # log1p(-q) where q < p (so q < 1/2); q replaced by 0 where that branch is not taken.
    log_p = ops.where(lower, ops.log(p), ops.log1p(-ops.where(lower, 0.0, q)))
    log_q = ops.where(lower, ops.log1p(-ops.where(lower, p, 0.0)), ops.log(q))
    interior = (y > 0.5) & (f > 0.5)
    ys = ops.where(interior, y, 1.0)
    fs = ops.where(interior, f, 1.0)
    ns = ys + fs
    inner = data_term - bd0(ys, ns * p, ops) - bd0(fs, ns * q, ops)
    return ops.where(y < 0.5, n * log_q, ops.where(f < 0.5, n * log_p, inner))


def _beta_binomial_logpmf(y: Array, f: Array, alpha: Array, beta: Array, data_term: Array, ops: ArrayOps) -> Array:
    """``beta_binomial_logpmf`` from float counts y and f = n - y and ``_binomial_data_term(y, f)``."""
    n = y + f
    total = alpha + beta
    grand = total + n
    p = (alpha + y) / grand  # the posterior mean of the rate; q = 1 - p, computed apart
    q = (beta + f) / grand
    halves = ops.log1p(y / alpha) + ops.log1p(f / beta) - ops.log1p(n / total)
    remainders = ((stirling_remainder(alpha + y, ops) - stirling_remainder(alpha, ops))
                  + (stirling_remainder(beta + f, ops) - stirling_remainder(beta, ops))
                  - (stirling_remainder(grand, ops) - stirling_remainder(total, ops)))
    return (_binomial_logpmf(y, f, n, p, q, data_term, ops) - bd0(alpha, total * p, ops)
            - bd0(beta, total * q, ops) - 0.5 * halves + remainders)


def beta_binomial_logpmf(y: Array, n: Array, alpha: Array, beta: Array, ops: ArrayOps = NUMPY) -> Array:
    """log BetaBinomial(y | n, alpha, beta) for integer 0 <= y <= n and alpha, beta > 0 (broadcasting)."""
    f = ops.to_float(n - y)  # n - y in integers first: exact
    y = ops.to_float(y)
    return _beta_binomial_logpmf(y, f, alpha, beta, _binomial_data_term(y, f, ops), ops)


def _beta_binomial_gradient(y: Array, f: Array, alpha: Array, beta: Array, ops: ArrayOps) -> tuple[Array, Array]:
    common = digamma_difference(alpha + beta, y + f, ops)
    return digamma_difference(alpha, y, ops) - common, digamma_difference(beta, f, ops) - common


def beta_binomial_logpmf_gradient(y: Array, n: Array, alpha: Array, beta: Array,
                                  ops: ArrayOps = NUMPY) -> tuple[Array, Array]:
    """(d/dalpha, d/dbeta) of ``beta_binomial_logpmf``, as differences of ``digamma_difference``.

    Each partial is a difference of two digamma differences that cancel where y / alpha is
    near n / (alpha + beta); its error is a few ulps of those two terms, not of the result.
    """
    return _beta_binomial_gradient(ops.to_float(y), ops.to_float(n - y), alpha, beta, ops)


#: Objects built on first use, so that importing this module imports neither JAX nor PyTensor.
_LAZY: dict[str, Any] = {}


def jax_beta_binomial_logpmf(y: Array, n: Array, alpha: Array, beta: Array) -> Array:
    """``beta_binomial_logpmf`` in JAX with ``beta_binomial_logpmf_gradient`` as its derivative.

    ``beta_binomial_logpmf(..., ops=jax_ops())`` differentiated by jax.grad is correct too
    (gradient errors 5e-14 of the scale against 6e-16), but its value and gradient take
    about 1.5 times as long (jitted, CPU).
    """
    ops = jax_ops()
    f = ops.to_float(n - y)
    return _jax_logpmf()(ops.to_float(y), f, alpha, beta)


def _jax_logpmf() -> Callable[[Array, Array, Array, Array], Array]:
    if "jax" not in _LAZY:
        import jax

        ops = jax_ops()

        @jax.custom_jvp
        def logpmf(y, f, alpha, beta):
            return _beta_binomial_logpmf(y, f, alpha, beta, _binomial_data_term(y, f, ops), ops)

        @logpmf.defjvp
        def logpmf_jvp(primals, tangents):
            # The counts' tangents are ignored: they are integers converted to floats.
            y, f, alpha, beta = primals
            d_alpha, d_beta = _beta_binomial_gradient(y, f, alpha, beta, ops)
            return logpmf(y, f, alpha, beta), d_alpha * tangents[2] + d_beta * tangents[3]

        _LAZY["jax"] = logpmf
    return _LAZY["jax"]


def _pytensor_composite_class() -> type:
    """A PyTensor Composite computing a function, whose gradient is another Composite's outputs."""
    from pytensor.scalar import Composite

    class DifferentiableComposite(Composite):
        """One output, f; its gradient with respect to the inputs listed in ``wrt`` is the
        scalar graph ``partials``, compiled as its own Composite (one C loop for both partials).

        Value and partials are separate ops, not one op with three outputs, because PyTensor's
        canonicalisation (which PyMC applies to every log density before differentiating it)
        replaces a Composite whose outputs are not all used by a plain Composite, and a plain
        Composite has no gradient. The other inputs are integer counts, with zero gradient;
        the partials themselves are not differentiable.
        """

        init_param = ("inputs", "outputs", "partials", "wrt")

        def __init__(self, inputs, outputs, partials, wrt, name="DifferentiableComposite"):
            self.wrt = tuple(wrt)
            self.graph = (list(inputs), list(outputs), list(partials))
            self.partials_op = Composite(list(inputs), list(partials), name=f"{name}_partials")
            super().__init__(inputs, outputs, name=name)

        def clone(self):
            return self  # PyTensor 3's inner graphs are frozen: an op is immutable

        def pullback(self, inputs, outputs, output_grads):  # PyTensor 3's name for L_op
            partials = self.partials_op(*inputs)
            partials = dict(zip(self.wrt, partials if isinstance(partials, (list, tuple)) else [partials]))
            return [output_grads[0] * partials[i] if i in partials else x.zeros_like(dtype="float64")
                    for i, x in enumerate(inputs)]

    # Pickle (PyMC pickles compiled graphs for its worker processes) finds the class through
    # this module's __getattr__, which builds it on first use: pytensor is not imported before.
    DifferentiableComposite.__module__ = __name__
    DifferentiableComposite.__qualname__ = "DifferentiableComposite"
    return DifferentiableComposite


def __getattr__(name: str) -> Any:
    if name == "DifferentiableComposite":
        if name not in _LAZY:
            _LAZY[name] = _pytensor_composite_class()
        return _LAZY[name]
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def _pytensor_op(which: str) -> Any:
    """PyTensor Elemwise ops built once from the generic definitions, run on ``pytensor.scalar``.

    'data_term': the counts-only part of the log-pmf (PyTensor folds it into a constant where
    the counts are constants); 'logpmf': the log-pmf (partials d/dalpha, d/dbeta) from y, n, that term,
    alpha, beta; 'rising': log_rising_factorial (partial d/dx) from x, k.
    """
    if which not in _LAZY:
        import pytensor.scalar as ps
        from pytensor.tensor.elemwise import Elemwise

        ops = pytensor_scalar_ops()
        differentiable = __getattr__("DifferentiableComposite")
        if which == "rising":
            x, k = ps.float64("x"), ps.float64("k")
            op = differentiable([x, k], [log_rising_factorial(x, k, ops)], [digamma_difference(x, k, ops)],
                                wrt=(0,), name="polyppl_rising")
        else:
            y, n = ps.int64("y"), ps.int64("n")
            f, y_float = ops.to_float(n - y), ops.to_float(y)
            if which == "data_term":
                op = ps.Composite([y, n], [_binomial_data_term(y_float, f, ops)], name="polyppl_data_term")
            else:
                data_term, alpha, beta = ps.float64("data_term"), ps.float64("alpha"), ps.float64("beta")
                op = differentiable([y, n, data_term, alpha, beta],
                                    [_beta_binomial_logpmf(y_float, f, alpha, beta, data_term, ops)],
                                    list(_beta_binomial_gradient(y_float, f, alpha, beta, ops)),
                                    wrt=(3, 4), name="polyppl_beta_binomial")
        _LAZY[which] = Elemwise(op, name=f"polyppl_{which}")
    return _LAZY[which]


def pytensor_beta_binomial_logpmf(y: Array, n: Array, alpha: Array, beta: Array) -> Array:
    """``beta_binomial_logpmf`` as one PyTensor Elemwise op, differentiable in alpha and beta.

    The generic definition run on ``pytensor.tensor`` is correct too, but its ~2000-node
    graph (with gradient) takes PyTensor's rewriter minutes; as a Composite it is one node
    whose scalar graph is compiled to C once (and cached by PyTensor across processes).
    """
    import pytensor.tensor as pt

    y, n = pt.cast(y, "int64"), pt.cast(n, "int64")
    return _pytensor_op("logpmf")(y, n, _pytensor_op("data_term")(y, n),
                                  pt.cast(alpha, "float64"), pt.cast(beta, "float64"))


def pytensor_log_rising_factorial(x: Array, k: Array) -> Array:
    """``log_rising_factorial`` as one PyTensor Elemwise op, differentiable in x."""
    import pytensor.tensor as pt

    return _pytensor_op("rising")(pt.cast(x, "float64"), pt.cast(k, "float64"))


#: Up to this alpha + beta, the Stan functions use Stan's own ``beta_binomial_lpmf``.
STAN_BUILTIN_TOTAL_LIMIT = 1e3

#: Stan 2.35 definitions, for a program's ``functions`` block (without the block itself, so
#: that several families can share one): ``y ~ polyppl_beta_binomial(n, alpha, beta)`` for y
#: and n ``array[] int`` and alpha, beta each ``real`` or ``vector``, and for a single int y
#: and n with real alpha and beta.
#:
#: Stan has no custom gradients in its language, so it differentiates every operation of the
#: form above on its autodiff tape: about 100 per observation, which made value and gradient
#: 40 times as costly as Stan's ``beta_binomial_lpmf`` (whose partials are analytic). Up to
#: alpha + beta = STAN_BUILTIN_TOTAL_LIMIT the built-in is exact enough (measured against
#: mpmath on the test grid: value within 8e-11 of max(|log p|, 1) at n = 1e7 and 2e-13 up to
#: n = 1e4, gradient within 6e-13 of the scale; beyond, its error grows to 1e-9 at a + b =
#: 1e6 and to units at 1e15), so ``polyppl_beta_binomial_lpmf`` uses it there, and the exact
#: form, ``polyppl_beta_binomial_stable_lpmf``, above. The form is the same computation as
#: the vectorised versions, with ``if`` for ``where`` (Stan differentiates the branch taken,
#: so none needs safe inputs), series cut at as many terms as their argument needs (same
#: truncation bounds), and, for a shared alpha and beta, their own c terms computed once.
STAN_FUNCTIONS = """
  // c(z) = lgamma(z) - ((z - 1/2) log z - z + log(2 pi) / 2) for z >= 8: the Stirling series,
  // with as many of its 8 terms as leave a truncation below 1e-17 of c(z).
  real polyppl_stirling_series(real z) {
    array[8] real coefficients = {1.0 / 12, -1.0 / 360, 1.0 / 1260, -1.0 / 1680,
                                  1.0 / 1188, -691.0 / 360360, 1.0 / 156, -3617.0 / 122400};
    int terms = z >= 1e4 ? 2 : (z >= 300 ? 3 : (z >= 100 ? 4 : (z >= 30 ? 6 : 8)));
    real w = inv_square(z);
    real s = coefficients[terms];
    for (j in 1:(terms - 1)) {
      s = s * w + coefficients[terms - j];
    }
    return s / z;
  }

  // c(z) for z > 0: below 8 from the series at z + 8 and lgamma's recurrence.
  real polyppl_stirling_remainder(real z) {
    if (z < 8) {
      real rising = (z + 1) * (z + 2) * (z + 3) * (z + 4) * (z + 5) * (z + 6) * (z + 7);
      return (z + 0.5) * log1p(8 / z) - log(rising / pow(z + 8, 7)) - 8 + polyppl_stirling_series(z + 8);
    }
    return polyppl_stirling_series(z);
  }

  // Loader's deviance term x log(x / m) + m - x, by the atanh series where |v| < 0.2, with as
  // many terms as leave a truncation below 1e-16 of the result.
  real polyppl_bd0(real x, real m) {
    real d = x - m;
    real v = d / (x + m);
    if (abs(v) < 0.2) {
      int terms = abs(v) < 1e-3 ? 3 : (abs(v) < 0.02 ? 5 : 10);
      real v2 = square(v);
      real s = 2.0 / (2 * terms + 1);
      for (j in 1:(terms - 1)) {
        s = s * v2 + 2.0 / (2 * (terms - j) + 1);
      }
      return d * v + x * v * v2 * s;
    }
    return x * log(x / m) - d;
  }

  // log Binomial(y | n, p) with q = 1 - p given apart (Loader's saddle-point form).
  real polyppl_binomial_saddle(int y, int n, real p, real q) {
    if (y == 0) {
      return n * (p <= q ? log1p(-p) : log(q));
    }
    if (y == n) {
      return n * (p <= q ? log(p) : log1p(-q));
    }
    return polyppl_stirling_remainder(n) - polyppl_stirling_remainder(y) - polyppl_stirling_remainder(n - y)
           - polyppl_bd0(y, n * p) - polyppl_bd0(n - y, n * q) + 0.5 * log(n / (2 * pi() * y * (n - y)));
  }

  // The log-pmf less -c(alpha) - c(beta) + c(alpha + beta), which depend on the shapes alone.
  real polyppl_beta_binomial_varying(int y, int n, real alpha, real beta) {
    int f = n - y;
    real total = alpha + beta;
    real grand = total + n;
    real p = (alpha + y) / grand;
    real q = (beta + f) / grand;
    return polyppl_binomial_saddle(y, n, p, q) - polyppl_bd0(alpha, total * p) - polyppl_bd0(beta, total * q)
           - 0.5 * (log1p(y / alpha) + log1p(f / beta) - log1p(n / total))
           + polyppl_stirling_remainder(alpha + y) + polyppl_stirling_remainder(beta + f)
           - polyppl_stirling_remainder(grand);
  }

  real polyppl_beta_binomial_shapes(real alpha, real beta) {
    return polyppl_stirling_remainder(alpha + beta) - polyppl_stirling_remainder(alpha)
           - polyppl_stirling_remainder(beta);
  }

  real polyppl_beta_binomial_stable_lpmf(int y, int n, real alpha, real beta) {
    return polyppl_beta_binomial_varying(y, n, alpha, beta) + polyppl_beta_binomial_shapes(alpha, beta);
  }

  real polyppl_beta_binomial_lpmf(int y, int n, real alpha, real beta) {
    if (alpha + beta <= %(limit)r) {
      return beta_binomial_lpmf(y | n, alpha, beta);
    }
    return polyppl_beta_binomial_stable_lpmf(y | n, alpha, beta);
  }

  real polyppl_beta_binomial_lpmf(array[] int y, array[] int n, real alpha, real beta) {
    if (alpha + beta <= %(limit)r) {
      return beta_binomial_lpmf(y | n, alpha, beta);
    }
    real lp = size(y) * polyppl_beta_binomial_shapes(alpha, beta);
    for (i in 1:size(y)) {
      lp += polyppl_beta_binomial_varying(y[i], n[i], alpha, beta);
    }
    return lp;
  }

  real polyppl_beta_binomial_lpmf(array[] int y, array[] int n, vector alpha, vector beta) {
    real lp = 0;
    for (i in 1:size(y)) {
      lp += polyppl_beta_binomial_lpmf(y[i] | n[i], alpha[i], beta[i]);
    }
    return lp;
  }

  real polyppl_beta_binomial_lpmf(array[] int y, array[] int n, real alpha, vector beta) {
    real lp = 0;
    for (i in 1:size(y)) {
      lp += polyppl_beta_binomial_lpmf(y[i] | n[i], alpha, beta[i]);
    }
    return lp;
  }

  real polyppl_beta_binomial_lpmf(array[] int y, array[] int n, vector alpha, real beta) {
    real lp = 0;
    for (i in 1:size(y)) {
      lp += polyppl_beta_binomial_lpmf(y[i] | n[i], alpha[i], beta);
    }
    return lp;
  }
""" % {"limit": STAN_BUILTIN_TOTAL_LIMIT}
