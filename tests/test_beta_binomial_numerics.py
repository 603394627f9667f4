"""Accuracy of the stable Beta-Binomial log-pmf (polyppl.backends.beta_binomial_math) in all
four implementations (NumPy, JAX, PyTensor, Stan) against mpmath at 50 digits.

The grid: a + b in {1e-3, 0.1, 1, 10, 1e3, 1e6, 1e10, 1e15}, a / (a + b) in {1e-3, 0.3, 0.5,
0.97}, n in {1, 7, 100, 1e4, 1e7}, y in {0, 1, n // 3, n - 1, n}: 704 points. The reference
takes a and b as the float64 numbers the implementations see, so it is exact for them.

Tolerances (deterministic arithmetic, so there is no false-alarm rate, only round-off):

* value: |error| <= VALUE_RTOL * max(|log p|, 1). The form sums about a dozen terms, each
  within a few ulps, that cancel by at most a factor ~6, so its error bound is of order
  1e-14; the largest error measured on the grid is 1.4e-14 (JAX), 2e-14 on 3000 random
  points: a margin of 5 to 7. A naive lgamma difference is off by up to 12 nats at a + b = 1e15.
* gradient: |error in d/da| <= GRAD_RTOL * (|psi(a + y) - psi(a)| + |psi(a + b + n) - psi(a + b)|),
  and likewise for b. The partial derivative is the difference of these two digamma
  differences, and they cancel where y / a is near n / (a + b): at a + b = 1e15 both are
  about 1e-8 and their difference 1e-16. No float64 evaluation at (a, b) resolves the
  difference better than eps times the terms, so the terms set the scale. The largest error
  measured is 2.1e-13 of that scale (Stan's autodiff; JAX's jax.grad 5.5e-14, the analytic
  gradient of NumPy, JAX's custom JVP and PyTensor 6e-16); GRAD_RTOL leaves a margin of 20.

The module takes about 80 s here (JAX and PyTensor compiles, the Stan model from httpstan's
cache); the first run adds the Stan compile, 1 to 3 minutes.
"""

from __future__ import annotations

import itertools

import mpmath
import numpy as np
import pytest
from scipy.special import gammaln
from scipy.stats import betabinom

from polyppl.backends import beta_binomial_math as bbm

TOTALS = (1e-3, 0.1, 1.0, 10.0, 1e3, 1e6, 1e10, 1e15)
MEANS = (1e-3, 0.3, 0.5, 0.97)
COUNTS = (1, 7, 100, 10**4, 10**7)
VALUE_RTOL = 1e-13
GRAD_RTOL = 5e-12


@pytest.fixture(scope="module", autouse=True)
def _fifty_digits():
    """mpmath at 50 digits for this module's references, restored for other modules."""
    with mpmath.workdps(50):
        yield


def _points() -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    rows = []
    for total, mean, n in itertools.product(TOTALS, MEANS, COUNTS):
        a, b = total * mean, total * (1.0 - mean)
        rows += [(y, n, a, b) for y in sorted({0, 1, n // 3, n - 1, n})]
    y, n, a, b = zip(*rows)
    return np.array(y, dtype=np.int64), np.array(n, dtype=np.int64), np.array(a), np.array(b)


Y, N, A, B = _points()


def _exact_mp(y: int, n: int, a: float, b: float) -> tuple[mpmath.mpf, ...]:
    """log p, d/da, d/db and the two gradient scales, at 50 digits."""
    a, b = mpmath.mpf(a), mpmath.mpf(b)
    lg, psi = mpmath.loggamma, mpmath.digamma
    value = (lg(n + 1) - lg(y + 1) - lg(n - y + 1) + lg(a + y) - lg(a) + lg(b + n - y) - lg(b)
             - lg(a + b + n) + lg(a + b))
    rise_a, rise_b, rise_t = psi(a + y) - psi(a), psi(b + n - y) - psi(b), psi(a + b + n) - psi(a + b)
    return value, rise_a - rise_t, rise_b - rise_t, abs(rise_a) + abs(rise_t), abs(rise_b) + abs(rise_t)


def _exact(y: int, n: int, a: float, b: float) -> tuple[float, ...]:
    return tuple(float(v) for v in _exact_mp(y, n, a, b))


@pytest.fixture(scope="module")
def exact() -> dict[str, np.ndarray]:
    table = np.array([_exact(*row) for row in zip(Y.tolist(), N.tolist(), A.tolist(), B.tolist())])
    return dict(zip(("value", "da", "db", "scale_a", "scale_b"), table.T))


def _assert_close(name: str, got, want, scale, rtol: float) -> None:
    got = np.asarray(got, dtype=float)
    error = np.abs(got - want) / scale
    worst = int(np.nanargmax(np.where(np.isnan(error), np.inf, error)))
    assert np.all(error <= rtol), (
        f"{name}: error {error[worst]:.2e} of its scale (tolerance {rtol:.0e}) at y={Y[worst]}, n={N[worst]}, "
        f"a={A[worst]!r}, b={B[worst]!r}: got {got[worst]!r}, exact {want[worst]!r}; "
        f"{int(np.sum(~(error <= rtol)))} of {error.size} points fail")


def _assert_value(name: str, got, exact) -> None:
    _assert_close(f"{name} value", got, exact["value"], np.maximum(np.abs(exact["value"]), 1.0), VALUE_RTOL)


def _assert_gradient(name: str, da, db, exact) -> None:
    _assert_close(f"{name} d/da", da, exact["da"], exact["scale_a"], GRAD_RTOL)
    _assert_close(f"{name} d/db", db, exact["db"], exact["scale_b"], GRAD_RTOL)


def test_reference_derivatives_are_the_derivatives_of_the_reference_value():
    """The digamma form used as the exact gradient agrees with mpmath's numerical derivative."""
    points = [(1, 7, 0.5, 0.5), (3333, 10**4, 3e5, 7e5), (0, 10**7, 1e-6, 1e-3 - 1e-6), (5, 100, 9.7e14, 3e13)]
    for y, n, a, b in points:
        def value(a_, b_):
            lg = mpmath.loggamma
            return lg(a_ + y) - lg(a_) + lg(b_ + n - y) - lg(b_) - lg(a_ + b_ + n) + lg(a_ + b_)

        _, da, db, scale_a, scale_b = _exact_mp(y, n, a, b)
        a_, b_ = mpmath.mpf(a), mpmath.mpf(b)
        assert abs(mpmath.diff(lambda t: value(t, b_), a_) - da) < 1e-20 * scale_a
        assert abs(mpmath.diff(lambda t: value(a_, t), b_) - db) < 1e-20 * scale_b


def test_numpy_value_and_gradient(exact):
    _assert_value("numpy", bbm.beta_binomial_logpmf(Y, N, A, B), exact)
    _assert_gradient("numpy", *bbm.beta_binomial_logpmf_gradient(Y, N, A, B), exact)


@pytest.mark.parametrize("form", ["generic", "custom_jvp"])
def test_jax_value_and_gradient(form, exact):
    """The generic definition on jax.numpy differentiated by JAX, and the custom-JVP version."""
    import jax

    jax.config.update("jax_enable_x64", True)
    if form == "generic":
        ops = bbm.jax_ops()

        def logpmf(a, b):
            return bbm.beta_binomial_logpmf(Y, N, a, b, ops)
    else:
        def logpmf(a, b):
            return bbm.jax_beta_binomial_logpmf(Y, N, a, b)

    # Each point has its own (a, b), so the gradient of the sum is the per-point gradient.
    value = jax.jit(logpmf)(A, B)
    da, db = jax.jit(jax.grad(lambda a, b: logpmf(a, b).sum(), argnums=(0, 1)))(A, B)
    _assert_value(f"jax {form}", value, exact)
    _assert_gradient(f"jax {form}", da, db, exact)


def test_pytensor_value_and_gradient(exact):
    import pickle

    import pytensor
    import pytensor.tensor as pt

    a, b = pt.dvector("a"), pt.dvector("b")
    # Counts as symbolic inputs, and as constants (as the PyMC compiler passes data, where
    # the counts-only term is folded at compile time).
    y, n = pt.lvector("y"), pt.lvector("n")
    logp = bbm.pytensor_beta_binomial_logpmf(y, n, a, b)
    symbolic = pytensor.function([y, n, a, b], [logp, *pytensor.grad(logp.sum(), [a, b])])
    logp = bbm.pytensor_beta_binomial_logpmf(Y, N, a, b)
    constant = pytensor.function([a, b], [logp, *pytensor.grad(logp.sum(), [a, b])])
    for name, outputs in [("symbolic counts", symbolic(Y, N, A, B)), ("constant counts", constant(A, B))]:
        value, da, db = outputs
        _assert_value(f"pytensor, {name}", value, exact)
        _assert_gradient(f"pytensor, {name}", da, db, exact)
    # PyMC pickles compiled functions for its worker processes.
    np.testing.assert_array_equal(pickle.loads(pickle.dumps(constant))(A, B)[1], constant(A, B)[1])


STAN_PROGRAM = """
functions {
%s
}
data {
  int<lower=0> M;
  array[M] int<lower=0> n;
  array[M] int<lower=0> y;
  int<lower=0, upper=1> stable;  // differentiate the exact form everywhere, or the hybrid
}
parameters {
  // a and b themselves (unconstrained, evaluated at positive values only), so that the
  // exact reference is computed at the very numbers Stan sees; exp(log a) would move them
  // by an ulp, i.e. by up to y * 2e-16 in log p.
  vector[M] a;
  vector[M] b;
}
model {
  if (stable) {
    for (i in 1:M) {
      target += polyppl_beta_binomial_stable_lpmf(y[i] | n[i], a[i], b[i]);
    }
  } else {
    y ~ polyppl_beta_binomial(n, a, b);
  }
}
generated quantities {
  vector[M] exact_form;
  vector[M] hybrid;
  for (i in 1:M) {
    exact_form[i] = polyppl_beta_binomial_stable_lpmf(y[i] | n[i], a[i], b[i]);
    hybrid[i] = polyppl_beta_binomial_lpmf(y[i] | n[i], a[i], b[i]);
  }
  // The overloads with a real alpha or beta, on either side of the built-in's limit.
  real shared_small = polyppl_beta_binomial_lpmf(y | n, a[1], b[1]);
  real shared_large = polyppl_beta_binomial_lpmf(y | n, a[M], b[M]);
  real shared_a = polyppl_beta_binomial_lpmf(y | n, a[1], b);
  real shared_b = polyppl_beta_binomial_lpmf(y | n, a, b[M]);
}
"""
#: Where the Stan functions call Stan's beta_binomial_lpmf (a + b <= 1e3), its value error,
#: measured at most 8e-11 of max(|log p|, 1) on the grid (at n = 1e7; it grows like n log n).
STAN_BUILTIN_VALUE_RTOL = 5e-10


@pytest.fixture(scope="module")
def stan_models():
    import stan

    from polyppl.backends.stan.compiler import captured_output

    program = STAN_PROGRAM % bbm.STAN_FUNCTIONS
    data = {"M": len(Y), "n": N.tolist(), "y": Y.tolist()}
    with captured_output():  # one compile per module (cached by httpstan after the first); two data sets
        return {stable: stan.build(program, data={**data, "stable": int(stable)}, random_seed=1)
                for stable in (True, False)}


def test_stan_value_and_gradient(stan_models, exact):
    point = np.concatenate([A, B]).tolist()
    model = stan_models[True]
    names = model.constrained_param_names
    gqs = np.asarray(model.constrain_pars(point, include_tparams=True, include_gqs=True))
    gradient = np.asarray(model.grad_log_prob(point))
    _assert_value("stan exact form", gqs[[names.index(f"exact_form.{i + 1}") for i in range(len(A))]], exact)
    _assert_gradient("stan exact form", gradient[: len(A)], gradient[len(A):], exact)

    # polyppl_beta_binomial: Stan's built-in up to a + b = 1e3, the exact form above.
    hybrid = gqs[[names.index(f"hybrid.{i + 1}") for i in range(len(A))]]
    builtin = A + B <= bbm.STAN_BUILTIN_TOTAL_LIMIT
    scale = np.maximum(np.abs(exact["value"]), 1.0)
    error = np.abs(hybrid - exact["value"]) / scale
    assert np.all(error[builtin] <= STAN_BUILTIN_VALUE_RTOL) and np.all(error[~builtin] <= VALUE_RTOL)
    gradient = np.asarray(stan_models[False].grad_log_prob(point))
    _assert_gradient("stan", gradient[: len(A)], gradient[len(A):], exact)
    # The `~` statement (the array / vector / vector overload) sums the pointwise values.
    assert stan_models[False].log_prob(point, adjust_transform=False) == pytest.approx(hybrid.sum(), rel=1e-14)
    for name, a, b in [("shared_small", A[0], B[0]), ("shared_large", A[-1], B[-1]),
                       ("shared_a", A[0], B), ("shared_b", A, B[-1])]:
        want = bbm.beta_binomial_logpmf(Y, N, a, b)
        builtin = np.broadcast_to(a + b <= bbm.STAN_BUILTIN_TOTAL_LIMIT, want.shape)
        tolerance = np.sum(np.where(builtin, STAN_BUILTIN_VALUE_RTOL, VALUE_RTOL) * np.maximum(np.abs(want), 1))
        assert abs(gqs[names.index(name)] - want.sum()) <= tolerance, name


X_VALUES = (1e-6, 1e-3, 0.5, 1.0, 7.9, 8.0, 10.0, 1e3, 1e6, 1e10, 1e15)
K_VALUES = (0, 1, 7, 100, 10**4, 10**7)


@pytest.mark.parametrize("library", ["numpy", "jax", "pytensor"])
def test_log_rising_factorial(library):
    """lgamma(x + k) - lgamma(x) and its derivative psi(x + k) - psi(x), against mpmath."""
    x, k = (np.array(v, dtype=float) for v in zip(*itertools.product(X_VALUES, K_VALUES)))
    exact = np.array([float(mpmath.loggamma(mpmath.mpf(xi) + ki) - mpmath.loggamma(xi)) for xi, ki in zip(x, k)])
    exact_dx = np.array([float(mpmath.digamma(mpmath.mpf(xi) + ki) - mpmath.digamma(xi)) for xi, ki in zip(x, k)])
    if library == "numpy":
        value, dx = bbm.log_rising_factorial(x, k), bbm.digamma_difference(x, k)
    elif library == "jax":
        import jax

        jax.config.update("jax_enable_x64", True)
        ops = bbm.jax_ops()
        value = bbm.log_rising_factorial(x, k, ops)
        dx = jax.grad(lambda t: bbm.log_rising_factorial(t, k, ops).sum())(x)
    else:
        import pytensor
        import pytensor.tensor as pt

        xs = pt.dvector("x")
        out = bbm.pytensor_log_rising_factorial(xs, k)
        value, dx = pytensor.function([xs], [out, pytensor.grad(out.sum(), xs)])(x)
    assert np.all(np.abs(value - exact) <= VALUE_RTOL * np.maximum(np.abs(exact), 1))
    # d/dx is a single digamma difference, about k / x for large x: relative accuracy,
    # plus the round-off of c'(x) ~ -1/(2x), which enters at x and at x + k and cancels
    # exactly at k = 0 (JAX's fused kernels leave 2e-11 of it at x = 1e-6).
    assert np.all(np.abs(dx - exact_dx) <= GRAD_RTOL * np.abs(exact_dx) + 1e-15 / np.minimum(x, 1.0))


def test_stirling_remainder_and_bd0_across_their_thresholds():
    """The pieces with a branch, on both sides of each threshold, against mpmath."""
    z = np.concatenate([np.geomspace(1e-8, 1e16, 200), np.nextafter(8.0, [0.0, 16.0]), [8.0]])
    with mpmath.workdps(80):  # c'(1e16) ~ 1e-33 is a difference of digammas of 37
        exact = [(mpmath.loggamma(t) - ((t - 0.5) * mpmath.log(t) - t + mpmath.log(2 * mpmath.pi) / 2),
                  mpmath.digamma(t) - mpmath.log(t) + 1 / (2 * t)) for t in map(mpmath.mpf, z)]
    c, dc = (np.array(v, dtype=float) for v in zip(*exact))
    # c(z) is at most 10 in size and is added to terms at least that large: absolute error.
    assert np.max(np.abs(bbm.stirling_remainder(z) - c)) < 1e-14
    # c'(z) below 8 is a sum of terms of order 1 that cancel to ~1e-3 near z = 8: measured
    # 1.2e-13 relative there, 1e-16 in the series above.
    assert np.all(np.abs(bbm.stirling_remainder_derivative(z) - dc) <= 1e-12 * np.abs(dc))
    # Ratios m / x on both sides of the series limit |v| = 0.2 (m / x = 2/3 and 3/2), near 1, far off.
    ratios = np.concatenate([1 + np.linspace(-0.6, 0.6, 41), 1.5 * (1 + np.array([-1e-15, 1e-15])),
                             (2 / 3) * (1 + np.array([-1e-15, 1e-15])), [1 + 1e-12, 1e-9, 1e9]])
    x, r = (v.ravel() for v in np.meshgrid(np.geomspace(1e-3, 1e12, 60), ratios))
    m = x * r
    exact_bd0 = np.array([float(mpmath.mpf(xi) * mpmath.log(mpmath.mpf(xi) / mpmath.mpf(mi)) + mi - xi)
                          for xi, mi in zip(x, m)])
    assert np.all(np.abs(bbm.bd0(x, m) - exact_bd0) <= 1e-14 * exact_bd0)


def test_finite_far_outside_the_grid():
    """Where a sampler may wander in warm-up: values and gradients finite, no NaN from a where."""
    import jax
    import pytensor
    import pytensor.tensor as pt

    jax.config.update("jax_enable_x64", True)
    shapes = [1e-12, 1e-8, 1e20, 1e50, 1e100]
    counts = [(0, 1), (1, 1), (0, 10**7), (3, 10**7), (10**7, 10**7)]
    y, n, a, b = (np.array(v) for v in zip(*[(y, n, a, b) for y, n in counts for a in shapes for b in shapes]))
    ops = bbm.jax_ops()
    value = bbm.beta_binomial_logpmf(y, n, a, b, ops)
    da, db = jax.jit(jax.grad(lambda a_, b_: bbm.beta_binomial_logpmf(y, n, a_, b_, ops).sum(), argnums=(0, 1)))(a, b)
    assert np.all(np.isfinite(value)) and np.all(np.isfinite(da)) and np.all(np.isfinite(db))
    assert np.all(value <= 0)
    np.testing.assert_allclose(value, bbm.beta_binomial_logpmf(y, n, a, b), rtol=1e-13, atol=1e-13)
    yv, nv, av, bv = pt.lvector("y"), pt.lvector("n"), pt.dvector("a"), pt.dvector("b")
    logp = bbm.pytensor_beta_binomial_logpmf(yv, nv, av, bv)
    outputs = pytensor.function([yv, nv, av, bv], [logp, *pytensor.grad(logp.sum(), [av, bv])])(y, n, a, b)
    assert all(np.all(np.isfinite(o)) for o in outputs)


def test_agrees_with_scipy_where_scipy_is_accurate(exact):
    """SciPy's lbeta-difference betabinom, within its own accuracy: a + b <= 1e3, n <= 1e4.

    There SciPy's error against mpmath is at most 2.1e-11 of max(|log p|, 1) on the grid (it
    grows to 1e-9 at n = 1e7 and a + b = 1e6, and to units at a + b = 1e15).
    """
    keep = (A + B <= 1e3 * (1 + 1e-12)) & (N <= 10**4)
    ours = bbm.beta_binomial_logpmf(Y[keep], N[keep], A[keep], B[keep])
    theirs = betabinom.logpmf(Y[keep], N[keep], A[keep], B[keep])
    assert np.all(np.abs(ours - theirs) <= 1e-10 * np.maximum(np.abs(theirs), 1))


def test_naive_lgamma_difference_is_wrong_at_huge_total(exact):
    """Why the form exists: the textbook lgamma difference is off by nats at a + b = 1e15."""
    naive = (gammaln(N + 1.0) - gammaln(Y + 1.0) - gammaln(N - Y + 1.0) + gammaln(A + Y) - gammaln(A)
             + gammaln(B + N - Y) - gammaln(B) - gammaln(A + B + N) + gammaln(A + B))
    huge = A + B > 1e14
    naive_error = np.abs(naive - exact["value"])[huge]
    stable_error = np.abs(bbm.beta_binomial_logpmf(Y, N, A, B) - exact["value"])[huge]
    assert np.median(naive_error) > 1.0  # measured: median 3.1, largest 12
    assert np.all(stable_error <= VALUE_RTOL * np.maximum(np.abs(exact["value"][huge]), 1))
