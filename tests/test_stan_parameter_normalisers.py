"""Densities whose normalising terms depend on a parameter, and Stan's log gamma functions,
each checked against Stan's own log density.

Stan's ``~`` drops the terms of a density that do not depend on parameters; a dirichlet's
lgamma(sum(alpha)) - sum(lgamma(alpha)) and an LKJ density's normalising constant depend on
alpha and eta, so where these are parameters Stan keeps them and so must the lowered model.
The translation check compares log densities up to one constant at 20 random points: a
dropped (or wrong) normalising term is a function of the parameter, not a constant, and
fails it.
"""


from polyppl.models.stan_program import stan_program
from conftest import write_program

#: dirichlet of a parameter alpha (``~`` and ``target += dirichlet_lpdf``), one alpha per row
#: of an array of simplexes in a loop, lkj_corr and lkj_corr_cholesky of a parameter eta, and
#: lgamma, lbeta, lchoose and lmgamma of parameters.
NORMALISERS = """data {
  int<lower=1> N;
  int<lower=2> K;
  array[N] int<lower=1, upper=K> y;
}
parameters {
  vector<lower=0>[K] alpha;
  simplex[K] theta;
  simplex[K] phi;
  real<lower=0> eta;
  real<lower=0> nu;
  corr_matrix[K] Omega;
  cholesky_factor_corr[K] L;
  real<lower=0> a;
  real<lower=0> b;
}
model {
  alpha ~ gamma(2, 1);
  eta ~ gamma(2, 1);
  nu ~ gamma(2, 1);
  a ~ gamma(3, 1);
  b ~ gamma(3, 1);
  theta ~ dirichlet(alpha);
  target += dirichlet_lpdf(phi | alpha + 1);
  Omega ~ lkj_corr(eta);
  L ~ lkj_corr_cholesky(nu);
  y ~ categorical(theta);
  target += lgamma(a + 0.5) - lbeta(a, b) + lchoose(a + 10, b) + lmgamma(3, a + 2);
}
"""
NORMALISERS_DATA = {"N": 5, "K": 3, "y": [1, 3, 2, 3, 3]}



def test_normalising_terms_of_parameters_match_stan(tmp_path):
    from polyppl.studies.translation import check_translation

    found = stan_program(*write_program(tmp_path, NORMALISERS, NORMALISERS_DATA))
    families = {p.name: p.dist.family for p in found.model.params}
    assert families["theta"] == "flat_simplex" and families["Omega"] == "flat_corr_matrix"
    assert families["L"] == "lkj_corr_cholesky"
    # lgamma is one spec function (every backend's own), not a closed form of something else.
    assert "fn='lgamma'" in repr(found.model.nodes)
    result = check_translation(found)
    assert result.points == 20 and result.max_rel_error <= 1e-8

