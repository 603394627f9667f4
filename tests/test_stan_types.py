"""The Stan front end's constrained types and mixtures, each checked against Stan's own
log density.

Every program below is lowered to the spec, and its translation is checked
(``check_translation``): the lowered model's log density and gradient on PyMC and NumPyro
equal Stan's own for the program on the unconstrained scale, Jacobians included, at 20
random points, to 1e-8 relative (float64 round-off of the same function). A type whose
unconstrained parametrization differed from Stan's (a positive_ordered vector as exp of an
ordered one, NumPyro's own; a simplex by another transform, PyMC's own) fails it.
"""


import numpy as np
import pytest

from polyppl import spec as s
from polyppl.errors import UserError
from polyppl.models.stan_program import check_support, stan_program
from conftest import write_program

#: ordered, positive_ordered and simplex parameters; log_mix and log_sum_exp of two values of
#: _lpdf terms, per row of a loop; log_sum_exp of a vector; normal, student_t, cauchy and
#: lognormal densities inside expressions.
MIXTURE = """data {
  int<lower=0> N;
  vector[N] y;
}
parameters {
  ordered[2] mu;
  positive_ordered[3] tau;
  simplex[3] w;
  array[2] real<lower=0> sigma;
  real<lower=0, upper=1> theta;
}
model {
  sigma ~ normal(0, 2);
  mu ~ normal(0, 2);
  tau ~ lognormal(0, 1);
  theta ~ beta(5, 5);
  for (n in 1 : N) {
    target += log_mix(theta, normal_lpdf(y[n] | mu[1], sigma[1]),
                      student_t_lpdf(y[n] | 4, mu[2], sigma[2]));
    target += log_sum_exp(log(w[1]) + cauchy_lpdf(y[n] | mu[1], tau[1]),
                          log(w[3]) + normal_lpdf(y[n] | mu[2], tau[3]));
  }
  target += log_sum_exp(tau) + lognormal_lpdf(tau[2] | 0, w[2]);
}
"""
MIXTURE_DATA = {"N": 5, "y": [-1.2, 0.3, 2.5, 1.9, -0.4]}

#: A lower bound other than 0, an upper bound alone, bounds that are data vectors, bounds
#: and an offset that are parameter expressions, <offset, multiplier> of data and parameters.
BOUNDS = """data {
  int<lower=0> N;
  vector[N] lo;
  real m;
}
parameters {
  real<lower=1> a;
  real<upper=2> b;
  vector<lower=lo>[N] c;
  real<lower=a, upper=a + exp(b)> d;
  vector<lower=-1, upper=lo + 3>[N] e;
  real<offset=m, multiplier=2> f;
  real<lower=0> tau;
  vector<offset=a, multiplier=tau>[N] z;
  real<multiplier=5> g;
}
model {
  a ~ normal(2, 1);
  b ~ normal(0, 3);
  c ~ normal(0, 3);
  d ~ normal(a, 2);
  tau ~ normal(0, 1);
  z ~ normal(a, tau);
  f ~ normal(m, 2);
  g ~ normal(0, 5);
  target += -square(e[1] - e[2]);
}
"""
BOUNDS_DATA = {"N": 3, "lo": [-0.5, 0.0, 1.5], "m": 0.7}


#: A Gaussian process: gp_exp_quad_cov of 1-D data, diag_matrix, cholesky_decompose,
#: multi_normal_cholesky and multi_normal of one vector, locals in a nested block of
#: transformed parameters (locals, not outputs).
GAUSSIAN_PROCESS = """data {
  int<lower=1> N;
  array[N] real x;
  vector[N] y;
  vector[N] y2;
}
parameters {
  real<lower=0> rho;
  real<lower=0> alpha;
  real<lower=0> sigma;
  vector[N] eta;
}
transformed parameters {
  vector[N] f;
  {
    matrix[N, N] K = gp_exp_quad_cov(x, alpha, rho) + diag_matrix(rep_vector(1e-6, N));
    f = cholesky_decompose(K) * eta;
  }
}
model {
  matrix[N, N] cov = gp_exp_quad_cov(x, alpha, rho) + diag_matrix(rep_vector(square(sigma), N));
  rho ~ gamma(5, 4);
  alpha ~ normal(0, 2);
  sigma ~ normal(0, 1);
  eta ~ std_normal();
  y ~ multi_normal_cholesky(f, cholesky_decompose(cov));
  y2 ~ multi_normal(rep_vector(0, N), cov);
}
"""
GAUSSIAN_PROCESS_DATA = {"N": 4, "x": [-1.0, 0.5, 1.0, 2.5], "y": [0.3, -0.2, 1.1, 0.4], "y2": [1.0, 0.2, -0.3, 0.0]}


#: categorical of a simplex and categorical_logit of a vector, of integer data as a whole and
#: row by row in a loop; a prior truncated with constant bounds (T[0, ], T[, 4]).
CATEGORICAL = """data {
  int<lower=1> N;
  int<lower=2> K;
  array[N] int<lower=1, upper=K> y;
  array[N] int<lower=1, upper=K> z;
}
parameters {
  simplex[K] theta;
  vector[K] beta;
  real<lower=0> s;
  real<upper=4> u;
}
model {
  beta ~ normal(0, 2);
  s ~ normal(1, 2) T[0, ];
  u ~ cauchy(0, 3) T[, 4];
  y ~ categorical(theta);
  for (n in 1:N) {
    z[n] ~ categorical_logit(beta);
  }
}
"""
CATEGORICAL_DATA = {"N": 6, "K": 3, "y": [1, 3, 3, 2, 1, 3], "z": [2, 2, 1, 3, 2, 2]}



def test_ordered_positive_ordered_simplex_and_mixtures_match_stan(tmp_path):
    from polyppl.studies.translation import check_translation

    found = stan_program(*write_program(tmp_path, MIXTURE, MIXTURE_DATA))
    families = {p.name: p.dist.family for p in found.model.params}
    assert families == {"mu": "flat_ordered", "tau": "flat_positive_ordered", "w": "flat_simplex",
                        "sigma": "half_normal", "theta": "beta"}
    # Each loop's term is one expression over the rows, not one node per row: the priors on
    # mu and tau, a factor per statement of the loop, and two for the last line.
    assert len(found.model.of_type(s.Factor)) == 6
    result = check_translation(found)
    assert result.points == 20 and result.max_rel_error <= 1e-8


def test_general_bounds_and_offset_multiplier_match_stan(tmp_path):
    from polyppl.studies.translation import check_translation

    found = stan_program(*write_program(tmp_path, BOUNDS, BOUNDS_DATA))
    families = {p.name: p.dist.family for p in found.model.params}
    assert families == {"a": "flat_lower", "b": "flat_upper", "c": "flat_lower", "d": "flat_interval",
                        "e": "flat_interval", "f": "flat_affine", "tau": "half_normal", "z": "flat_affine",
                        "g": "flat_affine"}
    assert s.free_vars(found.model["d"].dist.kwargs["upper"]) == {"a", "b"}
    result = check_translation(found)
    assert result.points == 20 and result.max_rel_error <= 1e-8


def test_gaussian_process_matches_stan(tmp_path):
    from polyppl.studies.translation import check_translation

    found = stan_program(*write_program(tmp_path, GAUSSIAN_PROCESS, GAUSSIAN_PROCESS_DATA))
    assert "K" not in found.model.output_names and "f" in found.model.output_names
    result = check_translation(found)
    assert result.points == 20 and result.max_rel_error <= 1e-8


def test_categorical_matches_stan(tmp_path):
    from polyppl.studies.translation import check_translation

    found = stan_program(*write_program(tmp_path, CATEGORICAL, CATEGORICAL_DATA))
    assert found.model["theta"].dist.family == "flat_simplex" and found.model["u"].dist.family == "flat_upper"
    result = check_translation(found)
    assert result.points == 20 and result.max_rel_error <= 1e-8


def test_a_still_unsupported_type_is_named_with_its_line(tmp_path):
    program = MIXTURE.replace("  simplex[3] w;\n", "  simplex[3] w;\n  unit_vector[2] S;\n")
    path, data = write_program(tmp_path, program, MIXTURE_DATA)
    support = check_support(path, data)
    assert (support.line, support.construct) == (
        9, "the parameter type unit_vector (S) is not supported for PyMC and NumPyro")
    with pytest.raises(UserError, match=r"line 9: the parameter type unit_vector \(S\) is not supported for PyMC "
                       r"and NumPyro \(`--backends stan` still runs the program as it is\)"):
        stan_program(path, data)


def test_truncation_of_parameters_is_named_with_its_line(tmp_path):
    """T[L, U] whose normalising term reads parameters needs the family's cdf of them: a
    family without one in closed form is named (those with one: test_stan_cdfs.py)."""
    program = CATEGORICAL.replace("  u ~ cauchy(0, 3) T[, 4];", "  u ~ student_t(3, s, 3) T[, 4];")
    support = check_support(*write_program(tmp_path, program, CATEGORICAL_DATA))
    assert support.line == 16 and support.construct.startswith(
        "student_t_lcdf of parameters is not supported for PyMC and NumPyro (only the cdfs of normal, lognormal")


def test_lupdf_inside_an_expression_is_named_with_its_line(tmp_path):
    program = MIXTURE.replace("student_t_lpdf(y[n] | 4,", "student_t_lupdf(y[n] | 4,")
    support = check_support(*write_program(tmp_path, program, MIXTURE_DATA))
    assert support.line == 19 and "student_t_lupdf inside an expression" in support.construct


def test_the_transforms_numpy_model_shares_are_stans():
    """numpy_model.constrain (which gives CmdStan its constrained values) against Stan's
    formulas written out: stick-breaking with the log(K - 1 - k) shift, positive_ordered as a
    cumulative sum of exponentials, and their log Jacobians by finite differences."""
    from polyppl.inference.numpy_model import constrain

    y = np.array([0.3, -1.1, 0.8])
    x, log_jacobian = constrain("flat_simplex", y, {})
    z = 1 / (1 + np.exp(-(y - np.log([3.0, 2.0, 1.0]))))
    expected = [z[0], (1 - z[0]) * z[1], (1 - z[0]) * (1 - z[1]) * z[2], (1 - z[0]) * (1 - z[1]) * (1 - z[2])]
    np.testing.assert_allclose(x, expected, rtol=1e-14)

    def first_values(v):
        return constrain("flat_simplex", v, {})[0][:3]

    eps = 1e-6
    jacobian = np.column_stack([(first_values(y + eps * e) - first_values(y - eps * e)) / (2 * eps) for e in np.eye(3)])
    np.testing.assert_allclose(log_jacobian, np.log(abs(np.linalg.det(jacobian))), rtol=1e-7)
    x, log_jacobian = constrain("flat_positive_ordered", y, {})
    np.testing.assert_allclose(x, np.cumsum(np.exp(y)), rtol=1e-14)
    assert log_jacobian == pytest.approx(y.sum(), rel=1e-14)


@pytest.mark.false_alarm(1e-11)
@pytest.mark.parametrize("backend", ["pymc", "numpyro", "stan"])
def test_draws_bounded_by_parameters_are_mapped_with_each_draws_bounds(backend):
    """``theta<offset=mu, multiplier=2>`` with ``mu`` near 5: every draw of theta is mapped with
    its own draw's mu. NumPyro, unless the model is replayed per draw, maps every draw with the
    first point's mu (within (-2, 2) of 0): a log density right everywhere and draws around
    mu's starting value. theta's posterior is N(5, sqrt(0.1^2 + 2^2)) per element; the mean of
    2 x 300 draws of 3 elements has MCSE about 0.07 (ESS >= 800 on this model), so 0.5 is 7 MCSE
    (false alarm under 1e-11); the fault puts it 3 or more away."""
    from polyppl.execution.fit import sample
    from polyppl.inference.methods import SamplerSettings

    theta = s.Var("theta")
    model = s.Model("affine_bounds", (
        s.Param("mu", s.Normal(5.0, 0.1)),
        s.Param("theta", s.FlatAffine(s.Var("mu"), 2.0), ("g",)),
        s.Factor("theta_density", s.sum_all(-0.5 * ((theta - s.Var("mu")) / 2.0) ** 2)),
    ))
    dataset = s.Dataset({}, {"g": ["a", "b", "c"]})
    idata = sample(model, dataset, backend, SamplerSettings(chains=2, draws=300, tune=300, seed=3))
    mean = float(idata.posterior["theta"].mean())
    assert abs(mean - 5.0) < 0.5, f"{backend}: theta's draws average {mean:.3f}, not about 5"


ODE = """
functions {
  vector decay(real t, vector y, real k) {
    return -k * y;
  }
}
data {
  int<lower=1> N;
  array[N] real ts;
  array[N] real y_obs;
}
parameters {
  real<lower=0> k;
  real<lower=0> sigma;
}
transformed parameters {
  array[2] real packed = {k, sigma};
  array[N] vector[1] y = ode_rk45(decay, [1.0]', 0.0, ts, k);
}
model {
  k ~ normal(0, 1);
  sigma ~ normal(0, 1);
  for (n in 1:N) y_obs[n] ~ normal(y[n][1], sigma);
}
"""


def test_a_solver_is_named_before_anything_else_the_program_holds(tmp_path):
    """An ODE program stops on its solver, with the solver's line, even where a line before it
    (an array expression of parameters) is also outside the subset: the solver is the reason."""
    support = check_support(*write_program(tmp_path, ODE, {"N": 3, "ts": [1.0, 2.0, 3.0], "y_obs": [0.5, 0.3, 0.1]}))
    assert (support.line, support.construct) == (18, "the solver ode_rk45 is not supported for PyMC and NumPyro")
