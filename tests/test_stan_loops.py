"""The Stan front end's loops beyond "all of a vector, from 1", and the spec's Scan.

* Translation: loops over part of a range, index arithmetic on data (``y[t - k]``), sums over
  an inner loop, vectors assigned part by part, and one-lag recursions (ARMA, GARCH, an AR
  level in transformed parameters) lowered to the spec equal Stan's own log density and
  gradient at 20 random unconstrained points, to 1e-8 relative (float64 round-off of the same
  function; posteriordb's ``arK`` and ``arma11``, BSD licence, tests/data/posteriordb).
* Vectorization: a 500-row loop and a 500-step recursion lower to expressions no larger than
  those of a 50-row one (no node per row; a recursion is one Scan node).
* The Scan node itself equals a NumPy loop, value and gradient, on PyMC, NumPyro and Stan.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from conftest import HAVE_CMDSTAN, write_program

from polyppl import spec as s
from polyppl.errors import UserError
from polyppl.models.stan_program import check_support, stan_program

DATA = Path(__file__).parent / "data" / "posteriordb"



def _tree_size(expr: s.Expr) -> int:
    """The number of expression nodes (a Scan's body counted once)."""
    if isinstance(expr, (s.Var, s.Const)):
        return 1
    if isinstance(expr, s.Binary):
        return 1 + _tree_size(expr.left) + _tree_size(expr.right)
    if isinstance(expr, s.Call):
        return 1 + sum(_tree_size(a) for a in expr.args)
    if isinstance(expr, s.Index):
        return 1 + _tree_size(expr.base) + _tree_size(expr.index)
    if isinstance(expr, s.Concat):
        return 1 + sum(_tree_size(p) for p in expr.parts)
    if isinstance(expr, s.LogPdf):
        return 1 + _tree_size(expr.value) + sum(_tree_size(e) for _, e in expr.args)
    if isinstance(expr, s.Scan):
        return 1 + _tree_size(expr.init) + _tree_size(expr.body) + sum(_tree_size(e) for _, e in expr.sequences)
    raise TypeError(expr)


def _model_size(model: s.Model) -> int:
    total = 0
    for node in model.nodes:
        if isinstance(node, (s.Deterministic, s.Factor)):
            total += 1 + _tree_size(node.expr)
        elif isinstance(node, (s.Param, s.Observed, s.Conditional)):
            total += 1 + sum(_tree_size(e) for _, e in node.dist.args)
        else:
            total += 1
    return total


def _scans(model: s.Model) -> list[s.Scan]:
    found = []

    def walk(expr):
        if isinstance(expr, s.Scan):
            found.append(expr)
        for child in vars(expr).values():
            for item in (child if isinstance(child, tuple) else (child,)):
                for leaf in (item if isinstance(item, tuple) else (item,)):
                    if isinstance(leaf, s.Expr):
                        walk(leaf)

    for node in model.nodes:
        if isinstance(node, (s.Deterministic, s.Factor)):
            walk(node.expr)
        elif isinstance(node, (s.Param, s.Observed)):
            for _, e in node.dist.args:
                walk(e)
    return found


# --------------------------------------------------------------------------- posteriordb


@pytest.mark.slow
@pytest.mark.parametrize("program,data", [("arK", "arK"), ("arma11", "arma")])
def test_posteriordb_loops_translate(program, data):
    """arK: a loop from K + 1 with a sum over lags ``beta[k] * y[t - k]``; arma11: a one-lag
    recursion on the errors (a Scan), nu[t] computed from it vectorized."""
    from polyppl.studies.translation import check_translation

    found = stan_program(DATA / f"{program}.stan", DATA / f"{data}.json.zip")
    assert len(_scans(found.model)) == (1 if program == "arma11" else 0)
    result = check_translation(found)
    assert result.points == 20 and result.max_rel_error <= 1e-8


# --------------------------------------------------------------------------- every construct, one program

LOOPS = """data {
  int<lower=2> T;
  int<lower=1> K;
  array[T] real y;
  vector[T] x;
  vector[T] z;
}
parameters {
  real alpha;
  vector[K] beta;
  real<lower=0> sigma;
  real<lower=-1, upper=1> phi;
  real<lower=0> a0;
  real<lower=0, upper=1> a1;
  real<lower=0, upper=1> b1;
}
transformed parameters {
  vector[T] level;
  level[1] = y[1];
  for (t in 2:T) {
    level[t] = phi * level[t - 1] + alpha * x[t];
  }
}
model {
  array[T] real s;
  alpha ~ normal(0, 2);
  beta ~ normal(0, 1);
  sigma ~ normal(0, 1);
  a0 ~ exponential(1);
  s[1] = 1;
  for (t in 2:T) {
    s[t] = sqrt(a0 + a1 * square(y[t - 1] - alpha) + b1 * square(s[t - 1]));
  }
  z ~ normal(0, s);
  for (t in (K + 1):T) {
    real mu = level[t];
    for (k in 1:K) {
      mu += beta[k] * y[t - k];
    }
    y[t] ~ normal(mu, sigma);
  }
}
"""


def _loops_data(T: int, seed: int = 1) -> dict:
    rng = np.random.default_rng(seed)
    return {"T": T, "K": 2, "y": rng.normal(size=T).round(3).tolist(), "x": rng.normal(size=T).round(3).tolist(),
            "z": rng.normal(size=T).round(3).tolist()}


def test_partial_loops_sums_and_recursions_translate(tmp_path):
    """An AR level in transformed parameters (a recursion on a parameter, assigned part by
    part), a GARCH volatility (a recursion through sqrt and square), and an AR(K) likelihood
    from K + 1 with ``mu += beta[k] * y[t - k]`` over an inner loop: Stan's own density."""
    from polyppl.studies.translation import check_translation

    found = stan_program(*write_program(tmp_path, LOOPS, _loops_data(40)))
    model = found.model
    assert isinstance(model["level"], s.Deterministic) and model["level"].dims == ("T",)
    assert len(_scans(model)) == 2  # level and s: one Scan each, never a node per step
    assert check_translation(found).max_rel_error <= 1e-8


def test_a_500_row_loop_is_no_larger_than_a_50_row_one(tmp_path):
    """Vectorization guard: every loop of LOOPS (partial ranges, lags, the inner sum, two
    recursions) lowers to expressions whose size does not grow with the number of rows."""
    small = stan_program(*write_program(tmp_path, LOOPS, _loops_data(50))).model
    (tmp_path / "big").mkdir()
    big_problem = stan_program(*write_program(tmp_path / "big", LOOPS, _loops_data(500)))
    big = big_problem.model
    assert _model_size(big) == _model_size(small) < 120
    assert len(big.nodes) == len(small.nodes) < 30
    assert big_problem.dataset.size("T") == 500


# --------------------------------------------------------------------------- the Scan node


def _scan_model() -> tuple[s.Model, s.Dataset, np.ndarray, np.ndarray]:
    """x[t] = phi * x[t-1] + w * e[t] (x[0] = x0), y ~ normal(x, exp(log_s)): flat priors, so the
    log density is the likelihood alone and a NumPy loop is its exact reference."""
    rng = np.random.default_rng(7)
    T = 9
    e, y = rng.normal(size=T), rng.normal(size=T)
    body = s.Var("phi") * s.Var("state") + s.Var("shock")
    scan = s.Scan("T", s.Var("x0"), "state", (("shock", s.Var("e") * s.Var("w")),), body)
    model = s.Model("scan", (
        s.Data("e", "real", ("T",)), s.Param("x0", s.Flat()), s.Param("phi", s.Flat()), s.Param("w", s.Flat()),
        s.Param("log_s", s.Flat()), s.Deterministic("x", scan, ("T",)),
        s.Observed("y", s.Normal(s.Var("x"), s.exp(s.Var("log_s"))), ("T",))))
    return model, s.Dataset({"e": e, "y": y}, {"T": tuple(range(1, T + 1))}), e, y


def _numpy_logp(point: dict, e: np.ndarray, y: np.ndarray) -> float:
    state, total = float(point["x0"]), 0.0
    sd = np.exp(float(point["log_s"]))
    for t in range(len(e)):
        state = float(point["phi"]) * state + float(point["w"]) * e[t]
        total += -0.5 * ((y[t] - state) / sd) ** 2 - np.log(sd) - 0.5 * np.log(2 * np.pi)
    return total


def _check_scan_backend(backend: str, engine: str | None = None) -> None:
    from polyppl.backends import get_backend

    model, dataset, e, y = _scan_model()
    density = get_backend(backend).compile(model, dataset, **({"engine": engine} if engine else {})).log_density()
    rng = np.random.default_rng(3)
    offsets = []
    for _ in range(5):
        point = {k: np.asarray(rng.uniform(-1, 1)) for k in ("x0", "phi", "w", "log_s")}
        logp, grad = density(point)
        offsets.append(logp - _numpy_logp(point, e, y))
        for name in point:
            h = 1e-6  # central differences of the NumPy loop: error O(h^2) ~ 1e-12, round-off ~1e-10
            up, down = dict(point), dict(point)
            up[name], down[name] = point[name] + h, point[name] - h
            numeric = (_numpy_logp(up, e, y) - _numpy_logp(down, e, y)) / (2 * h)
            assert float(grad[name]) == pytest.approx(numeric, rel=1e-6, abs=1e-6), name
    # Stan drops the constant -0.5 log(2 pi) per row; PyMC and NumPyro keep it: one offset each.
    assert np.ptp(offsets) < 1e-9


@pytest.mark.parametrize("backend", ["pymc", "numpyro"])
def test_scan_equals_a_numpy_loop(backend):
    _check_scan_backend(backend)


@pytest.mark.slow
@pytest.mark.cmdstan
@pytest.mark.skipif(not HAVE_CMDSTAN, reason="no CmdStan install found (set CMDSTAN)")
def test_scan_equals_a_numpy_loop_on_stan():
    """The Stan program written from the spec: the scan as a function of the functions block."""
    from polyppl.backends.stan.program import stan_program as write_stan

    assert "vector polyppl_scan_1(real state_init, vector shock_seq, real phi)" in write_stan(_scan_model()[0])
    _check_scan_backend("stan", "cmdstanpy")


def test_scan_evaluates_and_round_trips():
    """NumPy's evaluation (the conditional draws' walk, over draws at once too), the dims rule
    and the JSON round trip."""
    from polyppl.inference import numpy_model
    from polyppl.spec.serialize import expr_from_json, expr_to_json, model_from_json, model_hash, model_to_json

    model, dataset, e, _ = _scan_model()
    scan = model["x"].expr
    env = {"e": e, "x0": 0.5, "phi": 0.8, "w": -0.3}
    expected, state = [], 0.5
    for value in e:
        state = 0.8 * state - 0.3 * value
        expected.append(state)
    np.testing.assert_allclose(numpy_model.evaluate(scan, env), expected, rtol=1e-14)
    draws = {**env, "phi": np.array([0.8, 0.1]), "w": np.array([-0.3, 2.0])}
    batched = numpy_model.evaluate(scan, draws, batched={"phi", "w"})
    assert batched.shape == (2, len(e))
    np.testing.assert_allclose(batched[0], expected, rtol=1e-14)
    assert s.expr_dims(model, scan) == ("T",)
    assert expr_to_json(expr_from_json(expr_to_json(scan))) == expr_to_json(scan)
    again = model_from_json(json.loads(json.dumps(model_to_json(model))))
    assert model_hash(again) == model_hash(model)
    with pytest.raises(s.SpecError, match="the scan's body has dims"):
        s.Model("bad", model.nodes[:5] + (s.Deterministic("x", s.Scan("T", s.Var("x0"), "state", (
            ("shock", s.Var("e")),), s.Var("e")), ("T",)),))


# --------------------------------------------------------------------------- what stays outside


@pytest.mark.parametrize("loop,message", [
    ("for (t in 3:T) s[t] = s[t - 2] + a;", "line 15: s read at an index other than t or t - 1 in the loop that "
                                           "writes it (a recursion of one lag is lowered to a scan)"),
    ("for (t in 3:T) { s[t] = r[t - 1] + a; r[t] = s[t - 1]; }", "line 15: a recursion carrying several "
                                                                "variables (r, s)"),
])
def test_recursions_outside_the_subset_name_their_line(tmp_path, loop, message):
    program = ("data {\n  int<lower=3> T;\n  vector[T] y;\n}\nparameters {\n  real a;\n}\nmodel {\n"
               "  vector[T] s;\n  vector[T] r;\n  s[1] = a;\n  s[2] = a;\n  r[1] = a;\n  r[2] = a;\n  " + loop + "\n"
               "  y ~ normal(s, 1);\n}\n")
    found = check_support(*write_program(tmp_path, program, {"T": 5, "y": [0.1, 0.2, 0.3, 0.4, 0.5]}))
    assert not found.supported
    assert found.message == message + " is not supported for PyMC and NumPyro"
    with pytest.raises(UserError, match="--backends stan"):
        stan_program(tmp_path / "p.stan", tmp_path / "d.json")


# --------------------------------------------------------------------------- user functions, while

FUNCTIONS = """functions {
  real twice(real x) {
    return 2 * x;
  }
  vector shifted(vector v, real a, int k) {
    vector[rows(v)] out;
    real b = a;
    if (k > 1) {
      b = a * k;
    } else {
      b = a - 1;
    }
    out = v + b;
    return out;
  }
  real mynormal_lpdf(real y, real mu, real s) {
    return -0.5 * square((y - mu) / s) - log(s);
  }
}
data {
  int<lower=0> N;
  vector[N] x;
  array[N] int<lower=0, upper=1> y;
}
transformed data {
  int twos = 0;
}
parameters {
  real alpha;
  real beta;
  real<lower=0> s;
}
model {
  int n = 1;
  while (n < N) {
    n = n * 2;
  }
  alpha ~ mynormal(0, n);
  s ~ exponential(1);
  target += mynormal_lpdf(beta | 0, s);
  y ~ bernoulli_logit(shifted(twice(beta) * x, alpha, 2));
}
"""


def test_user_functions_are_inlined_where_they_are_called(tmp_path):
    """A function of reals, one of a vector with a local, an if on an integer argument and a
    return, a user density used with ~ and target +=, and a while loop on data in the model
    block: inlined, equal to Stan's own density."""
    from polyppl.render.spec_text import expr_text
    from polyppl.studies.translation import check_translation

    found = stan_program(*write_program(tmp_path, FUNCTIONS, {"N": 5, "x": [0.1, -1, 2, 0.5, 1.2], "y": [0, 1, 1, 0, 1]}))
    model = found.model
    assert model["y"].dist.family == "bernoulli_logit"
    assert len(model.of_type(s.Factor)) == 2  # the two user densities, as terms
    assert "/ 8" in expr_text(model.of_type(s.Factor)[0].expr)  # the while loop ran: n = 8
    assert check_translation(found).max_rel_error <= 1e-8


def test_a_solver_names_its_line(tmp_path):
    program = FUNCTIONS.replace("  y ~ bernoulli_logit(", "  real z = ode_rk45_tol_placeholder(alpha);\n  y ~ bernoulli_logit(")
    # stanc rejects an unknown function: check the lowering's message on a solver Stan knows.
    program = program.replace("ode_rk45_tol_placeholder(alpha)", "ode_rk45(dz, [alpha]', 0.0, {1.0}, beta)[1, 1]")
    program = program.replace("functions {\n", "functions {\n  vector dz(real t, vector z, real b) {\n"
                                             "    return -b * z;\n  }\n")
    found = check_support(*write_program(tmp_path, program, {"N": 5, "x": [0.1, -1, 2, 0.5, 1.2], "y": [0, 1, 1, 0, 1]}))
    assert not found.supported
    assert found.construct == "the solver ode_rk45 is not supported for PyMC and NumPyro"
    assert found.line == program.splitlines().index(next(line for line in program.splitlines()
                                                         if "ode_rk45" in line)) + 1


# --------------------------------------------------------------------------- _rng in generated quantities

PREDICTIVE = """data {
  int<lower=0> N;
  vector[N] y;
  vector[N] x;
}
parameters {
  real mu;
}
model {
  mu ~ normal(0, 10);
  y ~ normal(mu, 1);
}
generated quantities {
  real y_new = normal_rng(mu, 1);
  real twice_new = 2 * y_new;
  array[N] real y_rep;
  for (n in 1:N) {
    y_rep[n] = normal_rng(mu + x[n], 1);
  }
  array[N] int k_rep = poisson_log_rng(rep_vector(mu, N));
}
"""


def test_rng_calls_are_conditional_draws(tmp_path):
    found = stan_program(*write_program(tmp_path, PREDICTIVE, {"N": 3, "y": [0.5, 1.5, -0.2], "x": [1.0, 2.0, 3.0]}))
    model = found.model
    assert isinstance(model["y_new"], s.Conditional) and model["y_new"].dist.family == "normal"
    assert isinstance(model["y_rep"], s.Conditional) and model["y_rep"].dims == ("N",)
    assert isinstance(model["k_rep"], s.Conditional) and model["k_rep"].dist.family == "poisson_log"
    assert isinstance(model["twice_new"], s.Deterministic)
    assert set(model.post_sampling_names()) == {"y_new", "y_rep", "k_rep", "twice_new"}
    assert "left out" not in model.description


@pytest.mark.false_alarm(2e-4)
def test_posterior_predictive_draws_have_the_exact_predictive_distribution(tmp_path):
    """y_new = normal_rng(mu, 1) completed on exact posterior draws of mu (normal prior
    N(0, 10^2), normal likelihood with sd 1: a normal posterior): its mean and sd are the
    predictive's, mean m and sd sqrt(v + 1), within z * their standard errors, z for a
    family-wise false-alarm rate of 2e-4 over the two comparisons (the draws are independent,
    so the standard errors are known: sd / sqrt(n) and, for the sd, sd / sqrt(2 (n - 1)))."""
    from stat_tolerance import z_threshold

    from polyppl.inference.posterior import complete

    y = np.array([0.5, 1.5, -0.2, 0.9])
    found = stan_program(*write_program(tmp_path, PREDICTIVE, {"N": 4, "y": y.tolist(), "x": [0.0] * 4}))
    precision = 1 / 100 + len(y)
    m, v = y.sum() / precision, 1 / precision
    chains, draws = 4, 5000
    mu = np.random.default_rng(11).normal(m, np.sqrt(v), size=(chains, draws))
    done = complete(found.model, found.dataset, {"mu": mu}, seed=12)
    y_new = done["y_new"].ravel()
    n, sd = y_new.size, np.sqrt(v + 1)
    z = z_threshold(2e-4, 2)
    assert abs(y_new.mean() - m) < z * sd / np.sqrt(n)
    assert abs(y_new.std(ddof=1) - sd) < z * sd / np.sqrt(2 * (n - 1))
    np.testing.assert_allclose(done["twice_new"], 2 * done["y_new"])
    assert done["y_rep"].shape == (chains, draws, 4)


@pytest.mark.slow
@pytest.mark.cmdstan
@pytest.mark.skipif(not HAVE_CMDSTAN, reason="no CmdStan install found (set CMDSTAN)")
def test_the_stan_program_written_from_the_lowered_spec_equals_the_source(tmp_path):
    """LOOPS lowered to the spec, then written back as a Stan program by polyppl's own Stan
    compiler (scans as functions, joined parts, a matrix of indexes): its log density and
    gradient equal the original program's, as the translation check compares them."""
    from dataclasses import replace

    from polyppl.backends import get_backend

    found = stan_program(*write_program(tmp_path, LOOPS, _loops_data(30)))
    source = get_backend("stan").compile(found.model, found.dataset, engine="cmdstanpy").log_density()
    written = get_backend("stan").compile(replace(found.model, source=None), found.dataset,
                                          engine="cmdstanpy").log_density()
    rng = np.random.default_rng(5)
    offsets = []
    for _ in range(5):
        point = {k: rng.uniform(-2, 2, size=shape) for k, shape in source.shapes.items()}
        (a, grad_a), (b, grad_b) = source(point), written(point)
        offsets.append(a - b)
        for name in point:
            np.testing.assert_allclose(grad_b[name], grad_a[name], rtol=1e-8, atol=1e-8)
    assert np.ptp(offsets) < 1e-8 * max(1.0, abs(offsets[0]))


SLICES = """data {
  int<lower=2> T;
  vector[T] y;
}
parameters {
  real alpha;
  real<lower=-1, upper=1> beta;
  real<lower=0> sigma;
}
model {
  y[2:T] ~ normal(alpha + beta * y[1:(T - 1)], sigma);
}
generated quantities {
  vector[T] level;
  array[T] real y_sim;
  level[1] = y[1];
  for (t in 2:T) {
    level[t] = alpha + beta * level[t - 1];
  }
  y_sim[1] = y[1];
  for (t in 2:T) {
    y_sim[t] = normal_rng(alpha + beta * y_sim[t - 1], sigma);
  }
}
"""


def test_slices_and_a_recursion_in_generated_quantities(tmp_path):
    """``y[2:T]`` and ``y[1:(T - 1)]`` of data (a dim named by their length, as Stan's sizes
    go), Stan's density; a generated quantity's recursion of parameters alone (a scan with
    no data) equals a NumPy loop; a draw inside a recursion is left out by name."""
    from polyppl.inference import numpy_model
    from polyppl.studies.translation import check_translation

    y = [0.1, 0.4, -0.2, 0.3, 0.8]
    found = stan_program(*write_program(tmp_path, SLICES, {"T": 5, "y": y}))
    model = found.model
    assert "left out of the comparison: y_sim (line 22: normal_rng inside a recursion" in model.description
    env = {**{k: np.asarray(v) for k, v in found.dataset.values.items()}, "alpha": 0.3, "beta": -0.6}
    level = numpy_model.evaluate(model["level"].expr, env)
    expected = [y[0]]
    for _ in range(4):
        expected.append(0.3 - 0.6 * expected[-1])
    np.testing.assert_allclose(level, expected, rtol=1e-14)
    assert check_translation(found).max_rel_error <= 1e-8


FIRST_ROWS = """data {
  int<lower=1> N;
  int<lower=1, upper=N> M;
  vector[N] y;
  array[N] int<lower=1, upper=3> g;
}
parameters {
  vector[3] a;
  real<lower=0> sigma;
}
model {
  a ~ normal(0, 1);
  for (n in 1:M) {
    y[n] ~ normal(a[g[n]], sigma);
  }
}
"""
FIRST_ROWS_DATA = {"N": 6, "M": 4, "y": [0.1, 0.4, -0.2, 0.3, 0.8, 1.0], "g": [1, 2, 3, 1, 2, 3]}


def test_a_loop_over_the_first_rows_only(tmp_path):
    """``for (n in 1:M)`` over the first M of N rows: the rows' data gathered once, ``a[g[n]]``
    an index by the first M groups; one term over M rows."""
    model = stan_program(*write_program(tmp_path, FIRST_ROWS, FIRST_ROWS_DATA)).model
    (factor,) = model.of_type(s.Factor)
    assert s.expr_dims(model, factor.expr.value) == ("M",)
    gathered = [n for n in model.data_nodes if n.dims == ("M",) and n.index_of is None]
    assert len(gathered) == 1


@pytest.mark.slow
def test_a_loop_over_the_first_rows_translates(tmp_path):
    from polyppl.studies.translation import check_translation

    assert check_translation(stan_program(*write_program(tmp_path, FIRST_ROWS, FIRST_ROWS_DATA))).max_rel_error <= 1e-8


@pytest.mark.parametrize("backend", ["numpy", "pymc", "numpyro"])
def test_a_scan_with_a_vector_state(backend):
    """A state of dims (K,) (as an HMM's forward variables would be): each backend's scan
    function on the same expression equals the NumPy loop."""
    if backend == "pymc":
        from polyppl.backends.pymc.compiler import FUNCTIONS
    elif backend == "numpyro":
        from polyppl.backends.numpyro.compiler import FUNCTIONS
    else:
        from polyppl.inference.numpy_model import FUNCTIONS
    scan = s.Scan("T", s.Var("init"), "state", (("e", s.Var("shocks")),),
                  s.Var("decay") * s.Var("state") + s.Var("e"))
    init, shocks, decay = np.array([1.0, -2.0, 0.5]), np.array([0.3, -0.1, 0.7, 0.2]), np.array([0.9, 0.5, -0.4])
    if backend == "numpyro":
        import jax

        with jax.enable_x64(True):  # as the NumPyro compiler sets it for float64 runs
            value = np.asarray(s.evaluate(scan, {"init": init, "shocks": shocks, "decay": decay}, FUNCTIONS))
    else:
        value = s.evaluate(scan, {"init": init, "shocks": shocks, "decay": decay}, FUNCTIONS)
        value = np.asarray(value.eval() if hasattr(value, "eval") else value)
    expected, state = [], init
    for e in shocks:
        state = decay * state + e
        expected.append(state)
    np.testing.assert_allclose(value, np.array(expected), rtol=1e-12)
