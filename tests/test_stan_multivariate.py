"""The Stan front end's correlation types, multivariate and categorical densities, and
cumulative distribution functions of parameters, each checked against Stan's own log density.

Each program is lowered to the spec and its translation checked (``check_translation``): the
lowered model's log density and gradient on PyMC and NumPyro equal Stan's own for the program
on the unconstrained scale, Jacobians included, at 20 random points, to 1e-8 relative. A
cholesky_factor_corr sampled through any other transform than Stan's (partial correlations
by tanh, row by row), a dropped Jacobian term or a cdf's constant that depends on a parameter
fails it.
"""


import pytest

from polyppl.models.stan_program import check_support, stan_program
from conftest import write_program

#: The varying-slopes program: a cholesky_factor_corr with an lkj_corr_cholesky prior, one
#: without a prior (flat), the non-centred slopes diag_pre_multiply(tau, L) * z, the centred
#: ones as an array of vectors under multi_normal_cholesky (vectorized, and row by row in a
#: loop), and the correlation matrix of L in generated quantities.
VARYING_SLOPES = """data {
  int<lower=1> N;
  int<lower=1> J;
  int<lower=1> K;
  array[N] int<lower=1, upper=J> g;
  matrix[N, K] x;
  vector[N] y;
}
parameters {
  vector[K] mu;
  vector<lower=0>[K] tau;
  cholesky_factor_corr[K] L;
  cholesky_factor_corr[K] L2;
  matrix[K, J] z;
  array[J] vector[K] beta_c;
  array[J] vector[K] gamma;
  real<lower=0> sigma;
}
transformed parameters {
  matrix[J, K] beta = (diag_pre_multiply(tau, L) * z)';
}
model {
  mu ~ normal(0, 2);
  tau ~ normal(0, 1);
  sigma ~ normal(0, 1);
  L ~ lkj_corr_cholesky(2);
  for (k in 1:K) {
    z[k] ~ std_normal();
  }
  beta_c ~ multi_normal_cholesky(mu, diag_pre_multiply(tau, L2));
  for (j in 1:J) {
    gamma[j] ~ multi_normal_cholesky(mu, L);
  }
  y ~ normal(rows_dot_product(beta[g], x), sigma);
}
generated quantities {
  corr_matrix[K] Omega = multiply_lower_tri_self_transpose(L);
}
"""
VARYING_SLOPES_DATA = {"N": 8, "J": 3, "K": 3, "g": [1, 2, 3, 1, 2, 3, 1, 2],
                       "x": [[1, 0.5, -0.2], [1, -1.0, 0.3], [1, 0.1, 0.9], [1, 2.0, -1.1],
                             [1, -0.4, 0.0], [1, 0.7, 0.6], [1, -1.3, 1.2], [1, 0.2, -0.8]],
                       "y": [0.3, -1.2, 0.8, 2.1, -0.1, 0.9, -1.6, 0.4]}



def test_varying_slopes_with_cholesky_factor_corr_match_stan(tmp_path):
    from polyppl.studies.translation import check_translation

    found = stan_program(*write_program(tmp_path, VARYING_SLOPES, VARYING_SLOPES_DATA))
    model = found.model
    assert model["L"].dist.family == "lkj_corr_cholesky" and model["L2"].dist.family == "flat_corr_cholesky"
    # Two dims of the same size and coords (xarray refuses one dim twice), named as Stan names
    # the elements (L[2,1]).
    assert model["L"].dims == ("K", "K_col") and model["Omega"].dims == ("K", "K_col")
    assert found.dataset.coords["K_col"] == found.dataset.coords["K"] == (1, 2, 3)
    result = check_translation(found)
    assert result.points == 20 and result.max_rel_error <= 1e-8


#: cov_matrix, corr_matrix and cholesky_factor_cov[K] parameters (flat, through Stan's transforms, Jacobians
#: included), under multi_normal and multi_normal_cholesky of an array of vectors and of one
#: vector (a covariance quad_form_diag(Omega, tau), Omega under lkj_corr), with an expression of them in generated quantities.
COVARIANCE = """data {
  int<lower=1> J;
  int<lower=1> K;
  array[J] vector[K] y;
  vector[K] y1;
}
parameters {
  vector[K] mu;
  cov_matrix[K] Sigma;
  cholesky_factor_cov[K] Lc;
  cholesky_factor_cov[K, K] Lk;
  corr_matrix[K] Omega;
  vector<lower=0>[K] tau;
}
model {
  mu ~ normal(0, 2);
  tau ~ normal(0, 1);
  Omega ~ lkj_corr(3);
  y ~ multi_normal(mu, Sigma);
  y1 ~ multi_normal(mu, quad_form_diag(Omega, tau));
  y1 ~ multi_normal_cholesky(mu, Lc);
  y ~ multi_normal_cholesky(mu, Lk);
}
generated quantities {
  cov_matrix[K] S = multiply_lower_tri_self_transpose(Lc);
}
"""
COVARIANCE_DATA = {"J": 4, "K": 3, "y": [[0.1, -0.5, 1.2], [0.9, 0.3, -0.4], [-1.1, 0.8, 0.2], [0.4, -0.2, 0.6]],
                   "y1": [0.5, -1.0, 0.3]}


def test_cov_matrix_and_cholesky_factor_cov_match_stan(tmp_path):
    from polyppl.studies.translation import check_translation

    found = stan_program(*write_program(tmp_path, COVARIANCE, COVARIANCE_DATA))
    families = {p.name: p.dist.family for p in found.model.params}
    assert families == {"mu": "normal", "Sigma": "flat_cov_matrix", "Lc": "flat_cholesky_factor_cov",
                        "Lk": "flat_cholesky_factor_cov", "Omega": "flat_corr_matrix", "tau": "half_normal"}
    assert found.model["Sigma"].dims == ("K", "K_col")
    result = check_translation(found)
    assert result.points == 20 and result.max_rel_error <= 1e-8


def test_a_cholesky_factor_cov_of_more_rows_than_columns_is_named_with_its_line(tmp_path):
    program = COVARIANCE.replace("cholesky_factor_cov[K, K] Lk;", "cholesky_factor_cov[K + 1, K] Lk;") \
        .replace("  y ~ multi_normal_cholesky(mu, Lk);\n", "")
    support = check_support(*write_program(tmp_path, program, COVARIANCE_DATA))
    assert (support.line, support.construct) == (
        11, "a cholesky_factor_cov of more rows than columns (Lk) is not supported for PyMC and NumPyro")

#: dirichlet on a simplex (~ and target += dirichlet_lpdf), categorical_logit with one vector
#: of logits per row (a row of x * beta, transposed) and categorical with one simplex per row
#: (a row of a matrix of softmax-like probabilities built from a simplex).
CATEGORIES = """data {
  int<lower=1> N;
  int<lower=2> K;
  int<lower=1> D;
  array[N] int<lower=1, upper=K> y;
  matrix[N, D] x;
  vector<lower=0>[K] alpha;
}
parameters {
  simplex[K] theta;
  simplex[K] phi;
  matrix[D, K] beta;
}
transformed parameters {
  matrix[N, K] eta = x * beta;
}
model {
  theta ~ dirichlet(alpha);
  target += dirichlet_lpdf(phi | rep_vector(2, K));
  for (d in 1:D) {
    beta[d] ~ normal(0, 2);
  }
  for (n in 1:N) {
    y[n] ~ categorical_logit(eta[n]');
  }
  y ~ categorical(theta);
}
"""
CATEGORIES_DATA = {"N": 6, "K": 3, "D": 2, "y": [1, 3, 3, 2, 1, 3], "alpha": [1.5, 2.0, 0.7],
                   "x": [[1, 0.2], [1, -1.1], [1, 0.4], [1, 1.5], [1, -0.3], [1, 0.8]]}


def test_dirichlet_and_categorical_per_row_match_stan(tmp_path):
    from polyppl.studies.translation import check_translation

    found = stan_program(*write_program(tmp_path, CATEGORIES, CATEGORIES_DATA))
    assert found.model["theta"].dist.family == "flat_simplex"
    result = check_translation(found)
    assert result.points == 20 and result.max_rel_error <= 1e-8


#: normal and exponential _lcdf, _lccdf and _cdf of parameters inside expressions (per row of a
#: loop, and of a vector), and truncations whose bounds or arguments are parameters: T[L, ] of
#: a normal (its lccdf), T[, U] of an exponential (its lcdf), T[L, U] of an exponential, per row
#: of a loop and of one value.
CDFS = """data {
  int<lower=1> N;
  vector<lower=0>[N] t;
  vector<lower=0>[N] u;
  vector[N] w;
  vector[N] v;
}
parameters {
  real mu;
  real<lower=1> sigma;
  real<lower=0> rate;
  real<lower=0> cap;
  real<lower=mu> a;
  real<lower=0, upper=cap> b;
}
model {
  mu ~ normal(0, 1);
  sigma ~ normal(0, 1);
  rate ~ gamma(2, 2);
  cap ~ normal(3, 1);
  a ~ normal(0, 2) T[mu, ];
  b ~ exponential(rate) T[, cap];
  for (n in 1:N) {
    w[n] ~ normal(mu, sigma) T[-3, ];
    t[n] ~ exponential(rate) T[0.1 * cap, 10];
    target += exponential_lccdf(u[n] | rate) + normal_lccdf(v[n] | mu, sigma);
  }
  target += exponential_lcdf(u | rate) + log(normal_cdf(0.5 | mu, sigma)) + exponential_cdf(1 | rate);
}
"""
CDFS_DATA = {"N": 4, "t": [1.5, 1.2, 3.0, 0.8], "u": [0.3, 2.0, 0.9, 1.4],
             "w": [0.2, -0.5, 1.1, 0.0], "v": [-0.7, 0.4, 1.6, 0.1]}


def test_cdfs_and_truncation_of_parameters_match_stan(tmp_path):
    from polyppl.studies.translation import check_translation

    result = check_translation(stan_program(*write_program(tmp_path, CDFS, CDFS_DATA)))
    assert result.points == 20 and result.max_rel_error <= 1e-8


def test_a_cdf_outside_the_closed_forms_is_named_with_its_line(tmp_path):
    program = CDFS.replace("normal_lccdf(v[n] | mu, sigma)", "beta_lccdf(0.5 | mu, sigma)")
    support = check_support(*write_program(tmp_path, program, CDFS_DATA))
    assert support.line == 26 and "beta_lccdf of parameters is not supported" in support.construct
