"""Every family and every expression function of the spec, on every backend.

One model holds every family (a parameter for each continuous one, an observed node for
each discrete one) and a factor that uses every expression function, so each compiler is
checked on all of them with one compile per engine. At random unconstrained points:

* PyMC's log density (it keeps every normalising constant) equals the SciPy twin, the sum
  of ``scipy.stats`` log densities at the constrained values plus each transform's log
  Jacobian, to 1e-9 relative;
* NumPyro and Stan (both engines) equal PyMC up to one constant (Stan drops constants) and
  their gradients equal PyMC's to 1e-8 relative.

Exact arithmetic on the same expressions: the tolerances are float64 round-off.
"""

import math

import numpy as np
import pytest

from conftest import stan_engines_of_a_repeat
from polyppl import spec as s
from polyppl.inference.numpy_model import FUNCTIONS as NUMPY_FUNCTIONS
from polyppl.inference.numpy_model import constrain, logpdf
from test_log_density import assert_same_density, densities

V = s.Var
UNIFORM_BOUNDS = (-1.0, 3.0)


def all_families_model() -> s.Model:
    mu, sigma, nu, p, rate = V("mu"), V("sigma"), V("nu"), V("p"), V("rate")
    return s.Model("all-families", (
        s.Data("trials", "int", ("cell",), lower=0),
        s.Data("counts", "int", ("cell",), lower=0),
        # Parameters that the others' arguments depend on, so every gradient is exercised.
        s.Param("mu", s.Normal(0.5, 2.0)),
        s.Param("sigma", s.HalfNormal(1.5)),
        s.Param("nu", s.Gamma(4.0, 0.5)),
        s.Param("p", s.Beta(2.0, 3.0)),
        s.Param("rate", s.Exponential(0.7)),
        s.Param("x_student_t", s.StudentT(nu, mu, sigma)),
        s.Param("x_half_student_t", s.HalfStudentT(nu, sigma)),
        s.Param("x_cauchy", s.Cauchy(mu, sigma)),
        s.Param("x_half_cauchy", s.HalfCauchy(sigma)),
        s.Param("x_uniform", s.Uniform(*UNIFORM_BOUNDS)),
        s.Param("x_flat", s.Flat()),
        s.Param("x_half_flat", s.HalfFlat()),
        s.Param("x_beta", s.Beta(rate + 1.0, sigma + 0.5)),
        s.Param("x_gamma", s.Gamma(nu, rate)),
        s.Param("x_lognormal", s.LogNormal(mu, sigma)),
        s.Param("x_inv_gamma", s.InverseGamma(nu, rate)),
        s.Param("x_double_exponential", s.DoubleExponential(mu, sigma)),
        s.Param("x_logistic", s.Logistic(mu, sigma)),
        s.Param("x_weibull", s.Weibull(nu, sigma)),
        s.Param("x_chi_square", s.ChiSquare(nu)),
        # Flat on Stan's constrained types, through Stan's transforms; bounds of other parameters.
        s.Param("x_ordered", s.FlatOrdered(), ("cell",)),
        s.Param("x_positive_ordered", s.FlatPositiveOrdered(), ("cell",)),
        s.Param("x_simplex", s.FlatSimplex(), ("cell",)),
        s.Param("x_lower", s.FlatLower(mu)),
        s.Param("x_upper", s.FlatUpper(mu + 1.0)),
        s.Param("x_interval", s.FlatInterval(mu, mu + sigma)),
        s.Param("x_affine", s.FlatAffine(mu, sigma), ("cell",)),
        s.Factor("constrained_types", s.lpdf(s.Normal(0.0, 2.0), V("x_ordered")) - s.sum_all(V("x_positive_ordered"))
                 + s.sum_all(s.log(V("x_simplex"))) - (V("x_lower") - V("x_upper")) ** 2 / 4.0 + V("x_interval")
                 + s.lpdf(s.Normal(0.0, 3.0), V("x_affine"))),
        # Every expression function and operator, in the density.
        s.Factor("every_function", -0.5 * (s.log1p(s.sqrt(V("x_gamma"))) - s.logit(V("x_beta")) / 4.0) ** 2
                 + s.where((V("x_flat") > 1.0) | (V("x_flat") < -3.0) | (V("x_half_flat") >= 5.0)
                           | (V("x_uniform") <= -0.9), -(V("x_flat") ** 2), -V("x_flat") / 2.0)
                 - s.exp(-V("x_half_flat")) + s.log(V("x_half_flat") + 1.0) - s.inv_logit(V("x_uniform"))
                 - s.log_sum_exp(V("x_flat"), V("x_half_flat")) + s.log(s.erfc(V("x_flat") / 3.0))
                 + s.atan(V("x_flat")) - s.expm1(-V("x_half_flat"))
                 + s.log(s.gamma_p(V("x_half_flat") + 0.5, 1.5)) + s.log(s.gamma_q(2.0, V("x_half_flat") + 0.1))
                 - s.lgamma(V("x_gamma") + 0.5)),
        s.Observed("y_binomial", s.Binomial(V("trials"), p), ("cell",)),
        s.Observed("y_binomial_logit", s.BinomialLogit(V("trials"), mu), ("cell",)),
        s.Observed("y_beta_binomial", s.BetaBinomial(V("trials"), sigma + 1.0, nu), ("cell",)),
        s.Observed("y_bernoulli", s.Bernoulli(p), ("cell",)),
        s.Observed("y_bernoulli_logit", s.BernoulliLogit(mu * 0.5), ("cell",)),
        s.Observed("y_poisson", s.Poisson(rate * 3.0), ("cell",)),
        s.Observed("y_poisson_log", s.PoissonLog(mu - 1.0), ("cell",)),
        s.Observed("y_normal", s.Normal(mu, sigma), ("cell",)),
        s.Observed("y_neg_binomial_2", s.NegBinomial2(rate * 3.0, nu), ("cell",)),
        s.Observed("y_neg_binomial_2_log", s.NegBinomial2Log(mu, sigma + 0.5), ("cell",)),
        # A family's log density as a term of its own (a Stan program's target += *_lpdf).
        s.Factor("a_log_density", s.lpdf(s.StudentT(nu, mu, sigma), V("x_cauchy") - V("x_flat"))),
        s.Factor("a_log_mass", s.lpdf(s.NegBinomial2Log(mu, nu), V("counts"))),
    ))


DATASET = s.Dataset(
    values={
        "trials": np.array([3, 10, 1, 25]),
        "counts": np.array([0, 4, 2, 13]),
        "y_binomial": np.array([1, 4, 1, 20]),
        "y_binomial_logit": np.array([0, 7, 1, 12]),
        "y_beta_binomial": np.array([3, 2, 0, 11]),
        "y_bernoulli": np.array([0, 1, 1, 0]),
        "y_bernoulli_logit": np.array([1, 1, 0, 1]),
        "y_poisson": np.array([0, 3, 7, 2]),
        "y_poisson_log": np.array([1, 0, 4, 2]),
        "y_normal": np.array([0.3, -1.2, 2.5, 0.9]),
        "y_neg_binomial_2": np.array([0, 5, 2, 9]),
        "y_neg_binomial_2_log": np.array([3, 0, 1, 6]),
    },
    coords={"cell": ("a", "b", "c", "d")},
)


#: Matrix-valued families and functions are checked in tests/test_formula_density.py.
MATRIX_FAMILIES = {"lkj_corr_cholesky"}
#: The flat families on Stan's matrix types are checked against Stan in tests/test_stan_multivariate.py.
MATRIX_FAMILIES |= {"flat_corr_cholesky", "flat_cholesky_factor_cov", "flat_cov_matrix", "flat_corr_matrix"}


def test_every_family_and_function_is_in_the_model():
    model = all_families_model()
    used = {n.dist.family for n in model.nodes if isinstance(n, (s.Param, s.Observed))}
    expected = set(s.FAMILIES) - MATRIX_FAMILIES
    assert used == expected, f"add to the test model: {sorted(expected - used)}"
    text = repr(model.nodes)
    for function in set(s.FUNCTIONS) - s.MATRIX_FUNCTIONS:
        assert f"fn='{function}'" in text, f"add {function} to the test model's factor"
    for op in (*s.ARITHMETIC, *s.COMPARISONS, *s.LOGICAL):
        assert f"op='{op}'" in text, f"add the operator {op} to the test model"


def scipy_log_density(model: s.Model, dataset: s.Dataset, point: dict) -> float:
    """The log density from SciPy's (via ``numpy_model.logpdf``, itself tested against
    ``scipy.stats``), with every normalising constant, plus the log Jacobians."""
    env = {k: np.asarray(v) for k, v in dataset.values.items()}
    total = 0.0
    for node in model.nodes:
        if isinstance(node, s.Param):
            args = {k: np.asarray(s.evaluate(e, env, NUMPY_FUNCTIONS)) for k, e in node.dist.args}
            value, log_jacobian = constrain(node.dist.family, np.asarray(point[node.name], dtype=float), args)
            total += float(np.sum(logpdf(node.dist.family, value, args)) + np.sum(log_jacobian))
            env[node.name] = value
        elif isinstance(node, s.Factor):
            total += float(s.evaluate(node.expr, env, NUMPY_FUNCTIONS))
        elif isinstance(node, s.Observed):
            args = {k: np.asarray(s.evaluate(e, env, NUMPY_FUNCTIONS)) for k, e in node.dist.args}
            total += float(np.sum(logpdf(node.dist.family, np.asarray(dataset.values[node.name]), args)))
    return total


def _points(shapes: dict, n: int = 5) -> list[dict]:
    rng = np.random.default_rng(20261127)
    return [{k: rng.uniform(-1.5, 1.5, size=shape) for k, shape in shapes.items()} for _ in range(n)]


@pytest.mark.parametrize("stan_engine", stan_engines_of_a_repeat(False))
def test_every_family_agrees_across_backends_and_with_scipy(stan_engine):
    model = all_families_model()
    found = densities(model, DATASET, stan_engine)
    points = _points(found["pymc"].shapes)
    assert_same_density(found, points)
    for point in points:
        pymc_logp, _ = found["pymc"](point)
        expected = scipy_log_density(model, DATASET, point)
        assert pymc_logp == pytest.approx(expected, rel=1e-9, abs=1e-9), point


@pytest.mark.parametrize("stan_engine", stan_engines_of_a_repeat(False))
def test_beta_binomial_is_exact_at_huge_concentration(stan_engine):
    """The Beta-Binomial at a + b up to 1e15 and counts up to 1e7, where log-beta differences
    lose every digit: all backends agree with each other (the exactness of the form itself
    against mpmath is tested in test_beta_binomial_numerics.py)."""
    u, v = V("logit_mean"), V("log_concentration")
    model = s.Model("beta-binomial-extreme", (
        s.Data("trials", "int", ("k",), lower=1),
        s.Param("logit_mean", s.Normal(0.0, 3.0)),
        s.Param("log_concentration", s.Normal(15.0, 20.0)),
        s.Observed("successes", s.BetaBinomial(V("trials"), s.exp(v) * s.inv_logit(u), s.exp(v) * s.inv_logit(-u)),
                   ("k",)),
    ))
    dataset = s.Dataset({"trials": np.array([10, 1_000, 10_000_000]), "successes": np.array([3, 450, 4_200_000])},
                        {"k": ("small", "medium", "huge")})
    found = densities(model, dataset, stan_engine)
    points = [{"logit_mean": np.asarray(u0), "log_concentration": np.asarray(v0)}
              for u0, v0 in [(-0.3, -5.0), (0.1, 0.0), (-0.2, 10.0), (-0.32, 25.0), (-0.33, math.log(1e15))]]
    # d/d log_concentration = a d/da + b d/db sums terms of the size of the counts (a d/da is
    # about y = 4.2e6) that cancel to about 0.03 at a + b = 7e10: float64 leaves an absolute
    # error of a few ulps of 1e7 (measured: 1.4e-9 between Stan and PyMC), so the gradients
    # are compared to 1e-8 absolute there, 1e-8 relative elsewhere.
    assert_same_density(found, points, grad_atol=1e-8)


@pytest.mark.parametrize("stan_engine", stan_engines_of_a_repeat(False))
def test_logit_families_keep_their_gradient_at_large_log_odds(stan_engine):
    """Bernoulli and Binomial by their log-odds at log-odds out to +-70 (posteriordb's
    wells_dist reaches 67): every backend's gradient equals the closed form
    sum(y - n * inv_logit(eta)) * d eta, and they agree with each other. PyMC's own
    Bernoulli(logit_p=...) gave NaN there (its form goes through the probability)."""
    a, b = V("a"), V("b")
    eta = a + b * V("x")
    model = s.Model("logit-extreme", (
        s.Data("x", "real", ("row",)),
        s.Data("trials", "int", ("row",), lower=0),
        s.Param("a", s.Flat()),
        s.Param("b", s.Flat()),
        s.Observed("switched", s.BernoulliLogit(eta), ("row",)),
        s.Observed("successes", s.BinomialLogit(V("trials"), eta), ("row",)),
    ))
    x = np.array([-70.0, -40.0, -37.0, -1.0, 0.0, 2.0, 36.5, 45.0, 70.0])
    y = np.array([0, 1, 0, 1, 0, 1, 0, 1, 0])
    trials = np.full(x.size, 5)
    successes = np.array([0, 5, 1, 2, 3, 4, 0, 5, 2])
    dataset = s.Dataset({"x": x, "trials": trials, "switched": y, "successes": successes},
                        {"row": tuple(str(i) for i in range(x.size))})
    found = densities(model, dataset, stan_engine)
    points = [{"a": np.asarray(a0), "b": np.asarray(b0)} for a0, b0 in [(0.0, 1.0), (0.5, -1.0), (0.1, 0.9)]]
    assert_same_density(found, points)
    for point in points:
        eta_value = float(point["a"]) + float(point["b"]) * x
        p = 1.0 / (1.0 + np.exp(-eta_value))
        residual = (y - p) + (successes - trials * p)
        for backend, density in found.items():
            _, grad = density(point)
            np.testing.assert_allclose([float(grad["a"]), float(grad["b"])],
                                       [residual.sum(), (residual * x).sum()], rtol=1e-8, atol=1e-8,
                                       err_msg=f"{backend} at {point}")
