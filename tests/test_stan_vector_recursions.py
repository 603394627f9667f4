"""The Stan front end's recursions whose state is a vector, and arrays assigned row by row.

* Translation: posteriordb's three HMMs (``hmm_example``, ``hmm_drive_0``, ``hmm_drive_1``,
  BSD licence, tests/data/posteriordb): a transition matrix assembled row by row from two
  simplexes, ``dirichlet`` priors on its rows in a loop, and the forward algorithm (a
  ``log_sum_exp`` over j of ``gamma[t - 1, j] + log(theta[j, k]) + emission``), lowered to
  the spec, equal Stan's own log density and gradient at 20 random unconstrained points to
  1e-8 relative. Their Viterbi generated quantities (``if`` on parameter values, back
  pointers) are left out of the PyMC and NumPyro columns, with a note naming the line.
* A small program with both reductions over an inner loop (``log_sum_exp`` and ``sum``
  through a local array, a matrix read transposed): Stan's own density, each recursion one
  Scan whose state has dims (K,), and a 300-step series lowers to a model no larger than a
  30-step one (never a node per step).
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from polyppl import spec as s
from polyppl.models.stan_program import check_support, stan_program
from conftest import write_program

DATA = Path(__file__).parent / "data" / "posteriordb"



def _walk(expr: s.Expr):
    yield expr
    for child in vars(expr).values():
        for item in (child if isinstance(child, tuple) else (child,)):
            for leaf in (item if isinstance(item, tuple) else (item,)):
                if isinstance(leaf, s.Expr):
                    yield from _walk(leaf)


def _exprs(model: s.Model):
    for node in model.nodes:
        if isinstance(node, (s.Deterministic, s.Factor)):
            yield from _walk(node.expr)


def _scans(model: s.Model) -> list[s.Scan]:
    """The distinct Scan nodes (a recursion's states read in several places are one)."""
    return list({id(e): e for e in _exprs(model) if isinstance(e, s.Scan)}.values())


def _size(model: s.Model) -> int:
    return sum(1 for _ in _exprs(model))


# --------------------------------------------------------------------------- posteriordb


@pytest.mark.slow
@pytest.mark.parametrize("program,data", [("hmm_example", "hmm_example"), ("hmm_drive_0", "bball_drive_event_0"),
                                          ("hmm_drive_1", "bball_drive_event_1")])
def test_posteriordb_hmms_translate(program, data):
    from polyppl.studies.translation import check_translation

    found = stan_program(DATA / f"{program}.stan", DATA / f"{data}.json.zip")
    model = found.model
    assert isinstance(model["theta"], s.Deterministic) and model["theta"].dims in (("K", "K"), ("K", "K_col"))
    (scan,) = _scans(model)
    assert s.expr_dims(model, scan.init) == ("K",)
    assert "z_star" not in model.names and "z_star" in model.description
    result = check_translation(found)
    assert result.points == 20 and result.max_rel_error <= 1e-8


# --------------------------------------------------------------------------- a small program

RECURSIONS = """data {
  int<lower=2> T;
  int<lower=1> K;
  array[T] real y;
  matrix[K, K] B;
}
parameters {
  simplex[K] p1;
  simplex[K] p2;
  simplex[K] p3;
  ordered[K] mu;
  real<lower=0> sigma;
  real<lower=0, upper=1> rho;
}
transformed parameters {
  array[K] simplex[K] P;
  P[1] = p1;
  P[2] = p2;
  P[3] = p3;
}
model {
  array[T, K] real f;
  array[T, K] real x;
  array[K] real acc;
  array[K] real terms;
  mu ~ normal(0, 3);
  sigma ~ normal(0, 1);
  for (k in 1:K) {
    f[1, k] = log(1.0 / K) + normal_lpdf(y[1] | mu[k], sigma);
  }
  for (t in 2:T) {
    for (k in 1:K) {
      for (j in 1:K) {
        acc[j] = f[t - 1, j] + log(P[j, k]) + normal_lpdf(y[t] | mu[k], sigma);
      }
      f[t, k] = log_sum_exp(acc);
    }
  }
  target += log_sum_exp(f[T]);
  for (k in 1:K) {
    x[1, k] = mu[k];
  }
  for (t in 2:T) {
    for (k in 1:K) {
      for (j in 1:K) {
        terms[j] = rho * B[k, j] * x[t - 1, j];
      }
      x[t, k] = sum(terms) - 0.5 * y[t];
    }
  }
  target += normal_lpdf(x[T] | 0, 10);
}
"""


def _recursions_data(T: int) -> dict:
    rng = np.random.default_rng(3)
    states = rng.integers(0, 3, size=T)
    y = rng.normal(np.array([-2.0, 0.0, 3.0])[states], 1.0)
    return {"T": T, "K": 3, "y": y.round(3).tolist(), "B": rng.normal(0, 0.5, size=(3, 3)).round(3).tolist()}


def test_vector_state_recursions_translate(tmp_path):
    """A forward algorithm (log_sum_exp over j) and a linear recursion x[t] = rho B x[t-1] -
    y[t] / 2 (a sum over j, B read as B[k, j]): one Scan each, with a (K,) state, and
    Stan's own log density and gradient."""
    from polyppl.studies.translation import check_translation

    found = stan_program(*write_program(tmp_path, RECURSIONS, _recursions_data(30)))
    scans = _scans(found.model)
    assert len(scans) == 2
    assert all(s.expr_dims(found.model, scan) == ("from2_T", "K") for scan in scans)
    assert found.model["P"].dims in (("K", "K"), ("K", "K_col"))
    assert check_translation(found).max_rel_error <= 1e-8


def test_a_300_step_recursion_is_no_larger_than_a_30_step_one(tmp_path):
    """Vectorization guard: the steps are a Scan's, never nodes of their own."""
    small = stan_program(*write_program(tmp_path, RECURSIONS, _recursions_data(30))).model
    large = stan_program(*write_program(tmp_path, RECURSIONS, _recursions_data(300))).model
    assert _size(large) == _size(small)


def test_the_lowered_model_equals_numpy_loops(tmp_path):
    """The spec's value of the forward algorithm, by NumPy, equals a plain loop over t, j, k
    (log-sum-exp by SciPy), far from the mode (where an unshifted exp would underflow); the
    linear recursion equals x[t] = rho B x[t - 1] - y[t] / 2."""
    from scipy.special import logsumexp

    from polyppl.inference import numpy_model

    data = _recursions_data(30)
    found = stan_program(*write_program(tmp_path, RECURSIONS, data))
    model, dataset = found.model, found.dataset
    P = np.array([[0.7, 0.2, 0.1], [0.1, 0.8, 0.1], [0.25, 0.25, 0.5]])
    mu, sigma = np.array([-40.0, 0.0, 60.0]), 0.05
    env = {**{k: np.asarray(v) for k, v in dataset.values.items()}, "p1": P[0], "p2": P[1], "p3": P[2],
           "mu": mu, "sigma": np.asarray(sigma), "rho": np.asarray(0.5)}
    env["P"] = numpy_model.evaluate(model["P"].expr, env)
    np.testing.assert_array_equal(env["P"], P)
    forward = next(n for n in model.nodes if isinstance(n, s.Factor) and any(
        isinstance(e, s.Scan) and "P" in s.free_vars(e.body) for e in _walk(n.expr)))
    y = np.asarray(data["y"])
    emission = -0.5 * ((y[:, None] - mu) / sigma) ** 2 - np.log(sigma) - 0.5 * np.log(2 * np.pi)
    f = np.log(1 / 3) + emission[0]
    for t in range(1, len(y)):
        f = np.array([logsumexp(f + np.log(P[:, k])) for k in range(3)]) + emission[t]
    want = logsumexp(f)
    assert np.isfinite(want)
    np.testing.assert_allclose(numpy_model.evaluate(forward.expr, env), want, rtol=1e-12)
    # The linear recursion: x[t] = rho B x[t - 1] - y[t] / 2 (B read as B[k, j]).
    linear = next(n for n in model.nodes if isinstance(n, s.Factor) and any(
        isinstance(e, s.Scan) and "B" in s.free_vars(e.body) for e in _walk(n.expr)))
    x, B = mu, np.asarray(data["B"])
    for t in range(1, len(y)):
        x = 0.5 * B @ x - 0.5 * y[t]
    want = np.sum(-0.5 * (x / 10) ** 2 - np.log(10) - 0.5 * np.log(2 * np.pi))
    np.testing.assert_allclose(numpy_model.evaluate(linear.expr, env), want, rtol=1e-12)


@pytest.mark.parametrize("old,new,message", [
    ("f[t - 1, j] + log", "f[t - 2, j] + log",
     "line 34: f read other than at [t - 1, j] in the loop that writes it (a recursion of one lag)"),
    ("f[t, k] = log_sum_exp(acc);", "f[t, k] = log_sum_exp(acc);\n      x[t, k] = 0;",
     "line 37: assigning x in a recursion on f (only a local array, element by element in the inner loop)"),
])
def test_vector_recursions_outside_the_subset_name_their_line(tmp_path, old, new, message):
    program = RECURSIONS.replace(old, new)
    found = check_support(*write_program(tmp_path, program, _recursions_data(10)))
    assert not found.supported
    assert found.message == message + " is not supported for PyMC and NumPyro"


def test_a_square_matrix_quantity_is_named_as_stan_names_it():
    """xarray takes each dim once: theta of dims (K, K) (``array[K] simplex[K]``) becomes a
    DataTree variable over (K, K__2) with K's labels, flattened to Stan's names."""
    from polyppl.inference.diagnostics import flatten
    from polyppl.inference.idata import _dataset

    draws = np.arange(16.0).reshape(1, 4, 2, 2)
    posterior = _dataset({"theta": (("chain", "draw", "K", "K"), draws)},
                         {"chain": [0], "draw": np.arange(4), "K": [1, 2]})
    flat = flatten(posterior)
    assert sorted(flat) == ["theta[1,1]", "theta[1,2]", "theta[2,1]", "theta[2,2]"]
    np.testing.assert_array_equal(flat["theta[1,2]"], draws[..., 0, 1])
