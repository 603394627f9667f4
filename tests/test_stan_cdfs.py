"""The Stan front end's cdfs of parameters: ``_lcdf``, ``_lccdf`` and ``_cdf`` inside
expressions and the truncations ``T[L, ]``, ``T[, U]``, ``T[L, U]`` whose bounds or arguments
are parameters, each family's against Stan's own log density and gradient
(``check_translation``: 20 random points, 1e-8 relative), their values and gradients in the
tails against SciPy's, and the functions whose gradient Stan approximates (``normal_lcdf``;
the gamma family's cdfs but ``gamma_lcdf``), checked to the looser tolerance the check
records with its reason, their log density still to 1e-8.
"""

import math

import numpy as np
import pytest
from scipy import stats

from polyppl import spec as s
from polyppl.errors import UserError
from polyppl.inference.numpy_model import FUNCTIONS as NUMPY_FUNCTIONS
from polyppl.models.stan_program import check_support, densities, stan_program
from polyppl.spec.serialize import model_from_json, model_to_json
from conftest import write_program

#: Every family with a closed-form cdf but normal and exponential (test_stan_multivariate.py), and
#: gamma_lcdf (whose gradient Stan computes exactly, unlike the gamma family's others, below):
#: _lcdf, _lccdf and _cdf of data with parameter arguments and of a parameter; truncations of a
#: parameter with parameter arguments, T[L, U] of each family a ``~`` statement takes (not
#: gumbel, frechet, rayleigh, pareto: their cdfs only), T[L, ] and T[, U] of two.
CDFS = """data {
  real y;
  real<lower=1> yp;
}
parameters {
  real mu;
  real<lower=0.5, upper=2> sigma;
  real<lower=0.5, upper=3> alpha;
  real<lower=0> t;
  real<lower=0.5, upper=4> v;
  real<lower=-1, upper=2> w;
}
model {
  mu ~ normal(0, 1);
  t ~ exponential(1);
  target += cauchy_lcdf(y | mu, sigma) + cauchy_lccdf(w | mu, sigma) + cauchy_cdf(y | mu, sigma);
  target += logistic_lcdf(y | mu, sigma) + logistic_lccdf(w | mu, sigma) + logistic_cdf(y | mu, sigma);
  target += double_exponential_lcdf(y | mu, sigma) + double_exponential_lccdf(w | mu, sigma)
            + double_exponential_cdf(w | mu, sigma);
  target += lognormal_lcdf(yp | mu, sigma) + lognormal_lccdf(v | mu, sigma) + lognormal_cdf(v | mu, sigma);
  target += weibull_lcdf(yp | alpha, sigma) + weibull_lccdf(v | alpha, sigma) + weibull_cdf(v | alpha, sigma);
  target += frechet_lcdf(yp | alpha, sigma) + frechet_lccdf(v | alpha, sigma);
  target += rayleigh_lcdf(yp | sigma) + rayleigh_lccdf(v | sigma);
  target += gumbel_lcdf(y | mu, sigma) + gumbel_lccdf(w | mu, sigma);
  target += pareto_lcdf(yp + t | yp, alpha) + pareto_lccdf(v + t | v, alpha);
  target += uniform_lcdf(y | y - 1 - t, y + alpha) + uniform_lccdf(w | -1 - t, 2 + alpha);
  target += gamma_lcdf(yp | alpha, sigma);
  w ~ cauchy(mu, sigma) T[-1, 2];
  w ~ logistic(mu, sigma) T[-1, 2];
  w ~ double_exponential(mu, sigma) T[-1, 2];
  w ~ uniform(-1 - t, 2 + t) T[-1, 2];
  v ~ lognormal(mu, sigma) T[0.5, 4];
  v ~ weibull(alpha, sigma) T[0.5, 4];
  v ~ gamma(alpha, sigma) T[0.5, 4];
  v ~ weibull(alpha, sigma) T[0.5, ];
  w ~ logistic(mu, sigma) T[, 2];
}
"""
CDFS_DATA = {"y": 0.7, "yp": 1.3}

#: normal_lcdf of a parameter, inside an expression and in T[, U] and T[L, U] of a normal.
NORMAL_LCDF = """data {
  real y;
}
parameters {
  real mu;
  real<lower=0.5, upper=2> sigma;
  real<lower=-1, upper=2> w;
}
model {
  mu ~ normal(0, 1);
  target += normal_lcdf(y | mu, sigma) + normal_lccdf(w | mu, sigma);
  w ~ normal(mu, sigma) T[-1, 2];
  w ~ normal(mu, sigma) T[, 2];
}
"""


#: The gamma family's cdfs whose gradient in the shape Stan sums as a series to 1e-6 (all but
#: gamma_lcdf, above), in expressions and in truncations.
GAMMA_CDFS = """data {
  real<lower=0> yp;
}
parameters {
  real<lower=0.5, upper=3> alpha;
  real<lower=0.5, upper=2> beta;
  real<lower=0.5, upper=4> v;
}
model {
  target += gamma_lccdf(v | alpha, beta) + gamma_cdf(v | alpha, beta);
  target += inv_gamma_lcdf(yp | alpha, beta) + inv_gamma_lccdf(v | alpha, beta);
  target += chi_square_lcdf(v | alpha) + chi_square_lccdf(yp | alpha);
  v ~ inv_gamma(alpha, beta) T[0.5, 4];
  v ~ chi_square(alpha) T[0.5, ];
}
"""



def test_every_closed_form_cdf_matches_stan_to_1e_8(tmp_path):
    from polyppl.studies.translation import RTOL, check_translation

    found = stan_program(*write_program(tmp_path, CDFS, CDFS_DATA))
    assert found.model.source.loose_gradients == ()
    result = check_translation(found)
    assert result.points == 20 and result.max_rel_error <= 1e-8
    assert result.gradient_rtol == RTOL and result.to_json()["gradient_rtol"] == RTOL
    assert "gradient_rtol_reason" not in result.to_json() and "gradient tolerance" not in result.summary()


def test_normal_lcdf_of_parameters_passes_with_the_looser_gradient_tolerance_it_records(tmp_path):
    """Stan's gradient of normal_lcdf is a polynomial approximation: the check holds gradients
    to 1e-4 for this program, says why, and still holds the log density to 1e-8."""
    from polyppl.studies.translation import check_translation

    found = stan_program(*write_program(tmp_path, NORMAL_LCDF, {"y": 0.7}))
    assert [g.function for g in found.model.source.loose_gradients] == ["normal_lcdf"]
    assert model_from_json(model_to_json(found.model)).source == found.model.source  # kept where it is stored
    result = check_translation(found)
    assert result.gradient_rtol == 1e-4 and 1e-8 < result.max_rel_error <= 1e-4
    assert "polynomial approximation" in result.gradient_rtol_reason
    assert result.to_json()["gradient_rtol_reason"] == result.gradient_rtol_reason
    assert "(gradient tolerance 0.0001: Stan's normal_lcdf gradient is a polynomial approximation" in result.summary()
    # The log density itself is held to 1e-8: a translation off by a constant factor in one
    # term fails, whatever the gradient tolerance.
    with pytest.raises(UserError, match=r"the log density \(up to a constant\) differs from Stan's .* tolerance 1e-08\)"):
        wrong = s.Model(found.model.name, tuple(
            s.Factor(n.name, n.expr * 1.001) if isinstance(n, s.Factor) else n for n in found.model.nodes),
            source=found.model.source)
        from dataclasses import replace
        check_translation(replace(found, model=wrong))


def test_the_gamma_familys_cdfs_pass_with_the_tolerance_of_stans_series(tmp_path):
    """Stan's gradient of the regularized incomplete gamma function in its shape is a series
    summed to 1e-6: this program's gradients are held to 1e-3, its log density to 1e-8."""
    from polyppl.studies.translation import check_translation

    found = stan_program(*write_program(tmp_path, GAMMA_CDFS, {"yp": 1.3}))
    assert {g.function for g in found.model.source.loose_gradients} == {
        "gamma_lccdf", "gamma_cdf", "inv_gamma_lcdf", "inv_gamma_lccdf", "chi_square_lcdf", "chi_square_lccdf"}
    result = check_translation(found)
    assert result.gradient_rtol == 1e-3 and result.max_rel_error <= 1e-3
    assert "grad_reg_inc_gamma.hpp" in result.gradient_rtol_reason


def _evaluate(expr: s.Expr, **values: float) -> float:
    return float(s.evaluate(expr, {k: np.asarray(v) for k, v in values.items()}, NUMPY_FUNCTIONS))


def _cdf(function: str, x: float, *args: float) -> float:
    names = [f"a{i}" for i in range(len(args))]
    expr = densities.elementwise_cdf(function, s.Var("x"), tuple(s.Var(n) for n in names), 1)
    return _evaluate(expr, x=x, **dict(zip(names, args)))


#: (Stan's function, its arguments, SciPy's value): far in the tails, where log(cdf) written
#: naively is -inf (its cdf underflows or cancels to 0) or loses every digit.
TAILS = [
    ("normal_lcdf", (-30.0, 0.0, 1.0), stats.norm.logcdf(-30.0)),
    ("normal_lcdf", (-40.0, 0.0, 1.0), stats.norm.logcdf(-40.0)),
    ("normal_lccdf", (30.0, 0.0, 1.0), stats.norm.logsf(30.0)),
    ("normal_lccdf", (200.0, 0.0, 1.0), stats.norm.logsf(200.0)),
    ("normal_lcdf", (30.0, 0.0, 1.0), stats.norm.logcdf(30.0)),
    ("lognormal_lcdf", (math.exp(-40.0), 0.0, 1.0), stats.norm.logcdf(-40.0)),
    ("cauchy_lcdf", (-1e17, 0.0, 1.0), stats.cauchy.logcdf(-1e17)),
    ("cauchy_lccdf", (1e17, 0.0, 1.0), stats.cauchy.logsf(1e17)),
    ("cauchy_lcdf", (1e12, 0.0, 1.0), -1.0 / (math.pi * 1e12)),
    ("cauchy_lcdf", (0.3, 0.0, 1.0), stats.cauchy.logcdf(0.3)),
    ("cauchy_lcdf", (-3.0, 0.0, 1.0), stats.cauchy.logcdf(-3.0)),
    ("cauchy_lcdf", (3.0, 0.0, 1.0), stats.cauchy.logcdf(3.0)),
    ("logistic_lcdf", (-800.0, 0.0, 1.0), stats.logistic.logcdf(-800.0)),
    ("logistic_lccdf", (800.0, 0.0, 1.0), stats.logistic.logsf(800.0)),
    ("double_exponential_lcdf", (-800.0, 0.0, 1.0), math.log(0.5) - 800.0),
    ("double_exponential_lccdf", (800.0, 0.0, 1.0), math.log(0.5) - 800.0),
    ("double_exponential_lccdf", (-40.0, 0.0, 1.0), -0.5 * math.exp(-40.0)),
    ("exponential_lcdf", (1e-12, 1.0), stats.expon.logcdf(1e-12)),
    ("weibull_lcdf", (1e-6, 2.0, 1.0), stats.weibull_min.logcdf(1e-6, 2.0)),
    ("rayleigh_lcdf", (1e-9, 1.0), stats.rayleigh.logcdf(1e-9)),
    ("gumbel_lccdf", (40.0, 0.0, 1.0), stats.gumbel_r.logsf(40.0)),
    ("frechet_lccdf", (1e9, 2.0, 1.0), stats.invweibull.logsf(1e9, 2.0)),
    ("pareto_lcdf", (1.0 + 1e-12, 1.0, 3.0), stats.pareto.logcdf(1.0 + 1e-12, 3.0)),
]


@pytest.mark.parametrize(("function", "arguments", "expected"), TAILS, ids=[f"{t[0]}({t[1][0]:g})" for t in TAILS])
def test_cdfs_are_finite_and_accurate_in_the_tails(function, arguments, expected):
    assert np.isfinite(expected)
    assert _cdf(function, *arguments) == pytest.approx(expected, rel=1e-9, abs=1e-300)


#: Stan's log cdf, SciPy's law, and points in its far tails.
GRADIENT_TAILS = {"normal_lcdf": (stats.norm, [-40.0, -30.0, -1.0, 0.5, 30.0, 40.0]),
                  "cauchy_lcdf": (stats.cauchy, [-1e12, -30.0, -1.0, 0.5, 30.0, 1e12]),
                  "logistic_lcdf": (stats.logistic, [-800.0, -30.0, 0.5, 30.0])}


@pytest.mark.parametrize("backend", ["pymc", "numpyro"])
def test_the_tail_forms_have_finite_exact_gradients_on_each_backend(backend):
    """Each form's gradient in the far tails on each backend (each ``where`` evaluates both
    its sides and differentiates both): d/dz log F(z) = f(z) / F(z), from SciPy's values."""
    from polyppl.backends import get_backend

    nodes, coords, point = [], {}, {}
    for function, (law, points) in GRADIENT_TAILS.items():
        name = function.removesuffix("_lcdf")
        nodes += [s.Param(name, s.Flat(), (f"k_{name}",)),
                  s.Factor(f"{name}_lcdf", s.sum_all(densities.elementwise_cdf(
                      function, s.Var(name), (s.Const(0.0), s.Const(1.0)), 1)))]
        coords[f"k_{name}"], point[name] = tuple(range(len(points))), np.array(points)
    density = get_backend(backend).compile(s.Model("tails", tuple(nodes)), s.Dataset({}, coords)).log_density()
    logp, grad = density(point)
    laws = {f.removesuffix("_lcdf"): law for f, (law, _) in GRADIENT_TAILS.items()}
    assert logp == pytest.approx(sum(laws[n].logcdf(v).sum() for n, v in point.items()), rel=1e-12)
    for name, values in point.items():
        expected = np.exp(laws[name].logpdf(values) - laws[name].logcdf(values))
        np.testing.assert_allclose(np.asarray(grad[name]), expected, rtol=1e-9, atol=1e-300, err_msg=name)


def test_a_cdf_without_a_closed_form_is_named_with_why(tmp_path):
    program = CDFS.replace("  t ~ exponential(1);", "  t ~ exponential(1);\n  target += beta_lcdf(0.3 | alpha, sigma);")
    support = check_support(*write_program(tmp_path, program, CDFS_DATA))
    assert support.line == 16 and support.construct.startswith("beta_lcdf of parameters is not supported for PyMC "
                                                               "and NumPyro (only the cdfs of normal, lognormal")
    assert support.construct.endswith("; its cdf is a regularized incomplete beta function, whose gradient in its "
                                      "shape arguments JAX (NumPyro's backend) does not compute)")
    program = CDFS.replace("  w ~ logistic(mu, sigma) T[, 2];", "  w ~ student_t(3, mu, sigma) T[, 2];")
    support = check_support(*write_program(tmp_path, program, CDFS_DATA))
    assert support.construct.startswith("student_t_lcdf of parameters") and "incomplete beta" in support.construct


def test_show_says_why_a_program_whose_cdfs_run_over_rows_is_not_regenerated(tmp_path, capsys):
    """A cdf per row of a loop lowers to an elementwise choice over the rows (its stable form
    in the tails), which has no Stan expression: ``show`` prints the spec and says so, exit 0."""
    from polyppl.cli import main

    program = """data {
  int<lower=1> N;
  vector[N] y;
}
parameters {
  real mu;
}
model {
  mu ~ normal(0, 1);
  for (n in 1:N) target += normal_lccdf(y[n] | mu, 1);
}
"""
    path, data = write_program(tmp_path, program, {"N": 2, "y": [0.1, 0.5]})
    assert main(["show", str(path), "--data", str(data)]) == 0
    out = capsys.readouterr().out
    assert "target +=" in out and "The Stan program is not regenerated from the lowered spec (comparisons" in out
