"""The Stan front end's vectors declared inside a loop's body (posteriordb's ldaK2, ldaK5).

* Translation: a vector and a real array declared in a loop over n, set whole
  (``log(theta[doc[n]])``, the same ``mu`` in every iteration), filled or incremented by an
  inner loop over k (``theta[doc[n], k]``, ``phi[k, w[n]]``, ``mu[k]``, ``y[n]``), then reduced
  (``log_sum_exp``, ``sum``), read element by element in a second inner loop, and used in
  transformed parameters, and a scratch array declared outside the loop but filled afresh in
  each iteration before it is read (posteriordb's normal_mixture_k), lowered to the spec
  equal Stan's own log density and gradient at 20 random unconstrained points, to 1e-8 relative (float64 round-off), on both engines.
* Vectorization: a 500-row loop lowers to the same expressions as a 50-row one (the local
  is one value over (n, k), never a node per row).
* A local outside the subset (a matrix; an element read before it is filled; all of it read
  while an inner loop fills it; an inner loop over part of it) is refused with its line.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from conftest import STAN_ENGINES, write_program

from polyppl.models.stan_program import check_support, stan_program

LOCALS = """data {
  int<lower=1> N;
  int<lower=1> M;
  int<lower=1> V;
  vector[N] y;
  array[N] int<lower=1, upper=M> doc;
  array[N] int<lower=1, upper=V> w;
}
transformed data {
  int K = 3;
}
parameters {
  array[M] simplex[K] theta;
  array[K] simplex[V] phi;
  vector[K] mu;
  real<lower=0> sigma;
}
transformed parameters {
  vector[N] mixture;
  for (n in 1:N) {
    vector[K] lp = log(theta[doc[n]]);
    for (k in 1:K) {
      lp[k] += normal_lpdf(y[n] | mu[k], sigma);
    }
    mixture[n] = log_sum_exp(lp);
  }
}
model {
  array[K] real scratch;
  mu ~ normal(0, 3);
  sigma ~ normal(0, 1);
  target += sum(mixture);
  for (n in 1:N) {
    array[K] real gamma;
    vector[K] shifted = mu;
    for (k in 1:K) {
      gamma[k] = log(theta[doc[n], k]) + log(phi[k, w[n]]);
      shifted[k] += y[n];
    }
    target += log_sum_exp(gamma) + 0.1 * sum(gamma) - 0.1 * log_sum_exp(shifted);
    for (k in 1:K) {
      target += 0.01 * square(gamma[k]);
    }
  }
  for (n in 1:N) {
    for (k in 1:K) {
      scratch[k] = normal_lpdf(y[n] | mu[k], 2 * sigma);
    }
    target += 0.1 * log_sum_exp(scratch);
  }
}
"""


def _data(n: int, seed: int = 1) -> dict:
    rng = np.random.default_rng(seed)
    return {"N": n, "M": 4, "V": 6, "y": rng.normal(size=n).round(3).tolist(),
            "doc": rng.integers(1, 5, size=n).tolist(), "w": rng.integers(1, 7, size=n).tolist()}



@pytest.mark.parametrize("engine", STAN_ENGINES)
def test_vectors_declared_in_a_loop_translate(tmp_path, engine):
    from polyppl.studies.translation import check_translation

    found = stan_program(*write_program(tmp_path, LOCALS, _data(40)))
    assert found.model["mixture"].dims == ("N",)
    result = check_translation(found, stan_engine=engine)
    assert result.points == 20 and result.max_rel_error <= 1e-8


def test_a_500_row_loop_with_a_local_vector_lowers_as_a_50_row_one(tmp_path):
    small = stan_program(*write_program(tmp_path, LOCALS, _data(50))).model
    large = stan_program(*write_program(tmp_path, LOCALS, _data(500))).model
    assert repr(large.nodes) == repr(small.nodes)


@pytest.mark.parametrize("declaration,fill,message", [
    ("matrix[K, K] gamma;", "gamma[k, k] = mu[k];",
     "line 13: a matrix, row vector, int array or array of vectors declared inside a loop"),
    ("vector[K] gamma;", "gamma[k] += mu[k];", "line 14: reading gamma before it is assigned"),
    ("vector[K] gamma;", "gamma[k] = mu[k]; target += log_sum_exp(gamma);",
     "line 14: reading all of gamma inside an inner loop of the loop that declares it"),
    ("vector[K] gamma;", "gamma[k] = mu[k]; } for (k in 1:2) { target += gamma[k];",
     "line 14: reading part of gamma (a vector declared inside a loop: only gamma[k] in a loop over all of it, "
     "right inside)"),
])
def test_local_vectors_outside_the_subset_name_their_line(tmp_path, declaration, fill, message):
    program = ("data {\n  int<lower=1> N;\n  vector[N] y;\n}\ntransformed data {\n  int K = 3;\n}\n"
               "parameters {\n  vector[K] mu;\n}\nmodel {\n  for (n in 1:N) {\n    " + declaration + "\n"
               "    for (k in 1:K) { " + fill + " }\n    target += log_sum_exp(gamma);\n  }\n}\n")
    found = check_support(*write_program(tmp_path, program, {"N": 3, "y": [0.1, 0.2, 0.3]}))
    assert not found.supported
    assert found.message == message + " is not supported for PyMC and NumPyro"
