"""Arrays of Stan's constrained vector types as parameters (``array[J] simplex[K]``,
``array[J] ordered[K]``, ``array[J] positive_ordered[K]``), each vector through Stan's
transform with its Jacobian, checked against Stan's own log density and then sampled.

The translation check (20 random points on the unconstrained scale, log density and gradient
on PyMC and NumPyro equal to Stan's own up to a constant, 1e-8 relative) fails if one
vector of an array were transformed as a whole (a simplex over J x K values), if the
unconstrained values were laid out in another order than Stan's (array element by element,
each vector's K - 1 or K values in turn), or if a Jacobian were dropped. The short
comparison then shows every backend's draws named as Stan names them (``theta[2,3]``).
"""


import pytest

from polyppl.models.stan_program import check_support, stan_program
from conftest import write_program

#: The sampling test's family-wise false-alarm rate.
ALPHA = 1e-3

#: Arrays of simplexes (under dirichlet in a loop, of data alpha and of a parameter's multiple
#: of it, whose normalising term Stan's ~ then keeps once per simplex; one simplex per group
#: picked by the data for categorical, categorical of each row), of ordered and of positive_ordered vectors (as
#: the location and scale of an array of data vectors, row by row).
ARRAYS = """data {
  int<lower=1> N;
  int<lower=1> J;
  int<lower=2> K;
  array[N] int<lower=1, upper=J> g;
  array[N] int<lower=1, upper=K> y;
  array[J] int<lower=1, upper=K> z;
  vector<lower=0>[K] alpha;
  array[J] vector[2] v;
}
parameters {
  array[J] simplex[K] theta;
  array[J] simplex[K] phi;
  array[J] ordered[2] c;
  array[J] positive_ordered[2] tau;
  real<lower=0> kappa;
}
model {
  kappa ~ lognormal(1, 0.5);
  for (j in 1:J) {
    theta[j] ~ dirichlet(alpha);
    phi[j] ~ dirichlet(kappa * alpha);
    c[j] ~ normal(0, 3);
    z[j] ~ categorical(phi[j]);
  }
  for (n in 1:N) {
    y[n] ~ categorical(theta[g[n]]);
  }
  for (j in 1:J) {
    tau[j] ~ exponential(1);
    v[j] ~ normal(c[j], tau[j]);
  }
}
"""
ARRAYS_DATA = {"N": 7, "J": 3, "K": 3, "g": [1, 2, 3, 1, 2, 3, 1], "y": [1, 3, 2, 3, 3, 1, 2], "z": [2, 1, 3],
               "alpha": [1.5, 2.0, 0.7], "v": [[0.3, -1.0], [0.8, 1.1], [-0.2, 0.5]]}



def test_arrays_of_constrained_vectors_match_stan(tmp_path):
    from polyppl.studies.translation import check_translation

    found = stan_program(*write_program(tmp_path, ARRAYS, ARRAYS_DATA))
    families = {p.name: (p.dist.family, p.dims) for p in found.model.params}
    assert families["theta"] == ("flat_simplex", ("J", "K")) and families["c"][0] == "flat_ordered"
    assert families["tau"][0] == "flat_positive_ordered"
    result = check_translation(found)
    assert result.points == 20 and result.max_rel_error <= 1e-8


def test_the_stan_program_regenerated_from_the_spec_reads_the_arrays_as_matrices(tmp_path):
    """Without the user's program, the Stan backend runs the program it writes from the spec:
    each array of vectors declared as Stan's type, read as the matrix of its rows where the
    spec's arithmetic uses it; its log density is the lowered model's."""
    from dataclasses import replace

    from polyppl.backends.stan.program import stan_program as regenerated
    from polyppl.studies.translation import check_translation

    found = stan_program(*write_program(tmp_path, ARRAYS, ARRAYS_DATA))
    spec_only = replace(found, model=replace(found.model, source=None))
    text = regenerated(spec_only.model)
    assert "array[N_J] simplex[N_K] theta;" in text and "rows_of_vectors(theta)" in text
    result = check_translation(spec_only)
    assert result.points == 20 and result.max_rel_error <= 1e-8


@pytest.mark.slow  # about 4 minutes of CPU on 2 cores (a Stan compile, three backends sampling)
@pytest.mark.false_alarm(ALPHA)
def test_arrays_of_constrained_vectors_sample_alike_named_as_stan_names_them(tmp_path):
    """A short comparison: every backend's draws named as Stan names them, and no
    disagreement (the comparison's family-wise false-alarm rate ALPHA, Holm over its tests:
    0.1%, not compare's 1%, to keep the suite's flakiness budget)."""
    from polyppl.inference.methods import SamplerSettings
    from polyppl.studies.compare import compare

    found = stan_program(*write_program(tmp_path, ARRAYS, ARRAYS_DATA))
    comparison = compare(found, settings=SamplerSettings(chains=2, draws=200, tune=200, seed=3), out=tmp_path / "out",
                         family_alpha=ALPHA)
    saved = comparison.to_json()
    assert saved["translation"]["points"] == 20 and saved["translation"]["max_rel_error"] <= 1e-8
    for backend in ("pymc", "numpyro", "stan"):
        assert saved["backends"][backend]["status"] == "ok"
        assert {"theta[2,3]", "phi[3,1]", "c[1,2]", "tau[3,2]"} <= set(saved["backends"][backend]["posterior"])
    assert saved["agreement"]["verdict"] != "disagree", saved["agreement"]["reasons"]


@pytest.mark.parametrize("declaration", ["array[2, 2] simplex[3] w;", "array[2] cholesky_factor_corr[3] w;"])
def test_arrays_outside_the_subset_are_named_with_their_line(tmp_path, declaration):
    program = ARRAYS.replace("  array[J] positive_ordered[2] tau;\n",
                             f"  array[J] positive_ordered[2] tau;\n  {declaration}\n")
    support = check_support(*write_program(tmp_path, program, ARRAYS_DATA))
    assert support.line == 16 and support.construct.startswith("an array of") \
        and support.construct.endswith("(w) is not supported for PyMC and NumPyro")
