"""The Stan front end: a user's Stan program lowered to the spec.

* Translation: on posteriordb programs (``tests/data/posteriordb``, BSD licence), the lowered
  model's log density and gradient on PyMC and NumPyro equal Stan's own for the program, at
  20 random unconstrained points, to 1e-8 relative (float64 round-off of the same function).
* Vectorization: a loop over 919 rows lowers to one node over the rows, not 919 nodes.
* Bad input: a construct outside the subset, data that do not fit the declarations, and a
  program Stan rejects each give one line naming the line, variable or construct (exit 2).
"""

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from polyppl import spec as s
from polyppl.errors import UserError
from polyppl.models.stan_program import check_support, stan_program
from conftest import write_program

DATA = Path(__file__).parent / "data" / "posteriordb"
EXAMPLES = Path(__file__).resolve().parents[1] / "examples"

#: (program, data): each construct the front end supports, used by at least one program.
#: eight_schools_centered: a vector parameter with a prior of other parameters, a half-Cauchy
#: (<lower=0> with cauchy(0, 5)). noncentered: transformed parameters. radon: a loop with a
#: local vector, an index array, target += normal_lpdf. kidscore_momiq: constant indexes
#: beta[1], a vector with no prior (flat). logearn_interaction_z: transformed data (mean, sd, log).
#: rats_model: a variable declared inside a loop, flat priors on <lower=0> parameters, a
#: generated quantity.
PROGRAMS = [
    ("rats_model", "rats_data"),
    ("eight_schools_centered", "eight_schools"),
    ("eight_schools_noncentered", "eight_schools"),
    ("radon_variable_intercept_noncentered", "radon_mn"),
    ("kidscore_momiq", "kidiq"),
    ("logearn_interaction_z", "earnings"),
]


def problem(program: str, data: str):
    return stan_program(DATA / f"{program}.stan", DATA / f"{data}.json.zip")


@pytest.mark.parametrize("program,data", [
    pytest.param(p, d, marks=[] if p == "eight_schools_centered" else [pytest.mark.slow]) for p, d in PROGRAMS])
def test_translation_matches_stan(program, data):
    from polyppl.studies.translation import check_translation

    result = check_translation(problem(program, data))
    assert result.points == 20
    assert result.max_rel_error <= 1e-8


def test_loop_over_rows_is_one_vectorized_node():
    model = problem("radon_variable_intercept_noncentered", "radon_mn").model
    observed = model.observed
    assert [o.name for o in observed] == ["log_radon"] and observed[0].dims == ("N",)
    assert len(model.nodes) < 15
    assert {n.name for n in model.params} == {"alpha_raw", "beta", "mu_alpha", "sigma_alpha", "sigma_y"}
    assert model["county_idx"].index_of == "J"


def test_a_variable_declared_in_a_loop_is_one_value_per_iteration():
    model = problem("rats_model", "rats_data").model
    (observed,) = model.observed
    assert observed.name == "y" and model["rat"].index_of == "N"  # int irat = rat[n]; alpha[irat]
    assert isinstance(model["alpha0"], s.Deterministic)  # a generated quantity


def test_names_dims_and_priors_as_the_program_declares_them():
    found = problem("eight_schools_centered", "eight_schools")
    model, dataset = found.model, found.dataset
    assert model["theta"].dims == ("J",) and dataset.coords["J"] == tuple(range(1, 9))
    assert model["tau"].dist.family == "half_cauchy"  # real<lower=0> tau; tau ~ cauchy(0, 5)
    assert model.source is not None and model.source.parameters == ("theta", "mu", "tau")
    assert json.loads(model.source.data_json)["y"] == [28, 8, -3, 7, -1, 1, 18, 12]


def test_transformed_data_runs_on_the_data():
    found = problem("logearn_interaction_z", "earnings")
    values = found.dataset.values
    earn = json.loads(found.model.source.data_json)["earn"]
    np.testing.assert_allclose(values["log_earn"], np.log(earn))
    z = values["z_height"]
    assert abs(z.mean()) < 1e-12 and abs(z.std(ddof=1) - 1) < 1e-12



REGRESSION = """data {
  int<lower=0> N;
  vector[N] x;
  array[N] int<lower=0, upper=1> y;
}
parameters {
  real alpha;
  real beta;
}
model {
  alpha ~ normal(0, 2);
  beta ~ normal(0, 2);
  y ~ bernoulli_logit(alpha + beta * x);
}
"""


def test_logistic_regression_lowers(tmp_path):
    from polyppl.studies.translation import check_translation

    program, data = write_program(tmp_path, REGRESSION, {"N": 4, "x": [0.1, -1, 2, 0.5], "y": [0, 1, 1, 0]})
    found = stan_program(program, data)
    assert found.model["y"].dist.family == "bernoulli_logit"
    assert check_translation(found).max_rel_error <= 1e-8


FACTORS = """data {
  int<lower=0> N;
  vector[N] x;
  vector[N] y;
}
parameters {
  real alpha;
  real beta;
  real<lower=0> sigma;
}
model {
  sigma ~ normal(1, 2);
  alpha ~ normal(0, 1);
  alpha ~ student_t(3, 0, 2);
  target += -0.5 * log(sigma);
  (y - alpha) / sigma ~ normal(beta * x, 1);
  target += -N * log(sigma);
}
"""


def test_terms_outside_a_prior_become_factors(tmp_path):
    """A truncated prior (normal(1, 2) on a parameter declared <lower=0>), a second density
    of one parameter, a scalar term and a density of an expression: factors on parameters
    flat on their constraint, still equal to Stan's density."""
    from polyppl.studies.translation import check_translation

    program, data = write_program(tmp_path, FACTORS, {"N": 3, "x": [0.1, -1, 2], "y": [0.5, 1.5, -0.2]})
    found = stan_program(program, data)
    assert found.model["sigma"].dist.family == "half_flat" and found.model["alpha"].dist.family == "flat"
    assert len(found.model.of_type(s.Factor)) == 6
    assert check_translation(found).max_rel_error <= 1e-8


FAMILIES = """data {
  int<lower=0> N;
  vector<lower=0>[N] w;
  array[N] int<lower=0> k;
  array[N] int<lower=0> m;
  vector[N] x;
  vector[N] z;
  vector[N] u;
}
parameters {
  real mu;
  real<lower=0> sigma;
  real<lower=0> phi;
  real<lower=0> shape;
  real<lower=0> rate;
}
model {
  mu ~ logistic(0, 2);
  sigma ~ inv_gamma(3, 2);
  phi ~ weibull(2, 3);
  shape ~ chi_square(3);
  rate ~ lognormal(0, 1);
  w ~ lognormal(mu, sigma);
  k ~ neg_binomial_2_log(mu + x, phi);
  m ~ neg_binomial_2(rate, phi);
  target += double_exponential_lpdf(z | mu, shape);
  u ~ student_t(shape + 1, mu, sigma);
}
"""


def test_families_as_stan_parametrizes_them(tmp_path):
    """Each of Stan's families the spec takes, lowered with Stan's argument order and
    parametrization (inv_gamma's scale, weibull's shape then scale, neg_binomial_2's mean and
    concentration): equal to Stan's own density."""
    from polyppl.studies.translation import check_translation

    data = {"N": 3, "w": [0.5, 1.5, 3.0], "k": [0, 4, 9], "m": [2, 0, 5], "x": [0.1, -1.0, 2.0],
            "z": [0.3, -0.7, 1.1], "u": [1.0, -2.0, 0.5]}
    program, data_path = write_program(tmp_path, FAMILIES, data)
    found = stan_program(program, data_path)
    families = {n.name: n.dist.family for n in found.model.nodes if isinstance(n, (s.Param, s.Observed))}
    assert families == {"mu": "logistic", "sigma": "inv_gamma", "phi": "weibull", "shape": "chi_square",
                        "rate": "lognormal", "w": "lognormal", "k": "neg_binomial_2_log", "m": "neg_binomial_2",
                        "z": "double_exponential", "u": "student_t"}
    assert check_translation(found).max_rel_error <= 1e-8


@pytest.mark.parametrize("data,message", [
    ({"N": 2, "x": [0.1, 1.0]}, "y (line 4): missing from the data; the program declares int values of shape (2,)"),
    ({"N": 2, "x": [0.1], "y": [0, 1]}, "x (line 3): the data has shape (1,); the program declares real values of shape (2,)"),
    ({"N": 2, "x": [0.1, 1.0], "y": [0, 2]}, "y (line 4): the program declares upper=1; the data has 2"),
    ({"N": 2, "x": [0.1, 1.0], "y": [0, 0.5]}, "y (line 4): the program declares int, the data holds non-integers"),
])
def test_data_that_do_not_fit_the_declarations(tmp_path, data, message):
    program, data_path = write_program(tmp_path, REGRESSION, data)
    with pytest.raises(UserError, match=f"^{data_path}: " + message.replace("(", r"\(").replace(")", r"\)")):
        stan_program(program, data_path)


USER_FUNCTION = "functions {\n  real twice(real x) {\n    return 2 * lambert_w0(x);\n  }\n}\n" + REGRESSION.replace(
    "beta * x", "twice(beta) * x")


def test_unsupported_construct_names_its_line(tmp_path):
    """A user function is inlined where it is called; a function outside the subset in its
    body names the body's line."""
    program, data = write_program(tmp_path, USER_FUNCTION, {"N": 2, "x": [0.1, 1.0], "y": [0, 1]})
    support = check_support(program, data)
    assert (support.supported, support.line, support.construct) == (
        False, 3, "lambert_w0 is not supported for PyMC and NumPyro")
    with pytest.raises(UserError, match=r"line 3: lambert_w0 is not supported for PyMC and NumPyro "
                       r"\(`--backends stan` still runs the program as it is\)"):
        stan_program(program, data)


def test_a_program_stan_rejects_gets_stans_message(tmp_path):
    program, data = write_program(tmp_path, REGRESSION.replace("normal(0, 2);\n  beta", "normall(0, 2);\n  beta"),
                           {"N": 2, "x": [0.1, 1.0], "y": [0, 1]})
    with pytest.raises(UserError, match=r"line 11, column \d+: Stan rejects this program .*normall"):
        stan_program(program, data)


def test_cli_exit_2_without_traceback(tmp_path):
    program, data = write_program(tmp_path, REGRESSION, {"N": 2, "x": [0.1, 1.0]})
    result = subprocess.run([sys.executable, "-m", "polyppl.cli", "show", str(program), "--data", str(data)],
                            capture_output=True, text=True)
    assert result.returncode == 2, result.stderr
    assert "missing from the data" in result.stderr and "Traceback" not in result.stderr


def test_example_program_shows():
    result = subprocess.run([sys.executable, "-m", "polyppl.cli", "show", str(EXAMPLES / "eight_schools.stan"),
                             "--data", str(EXAMPLES / "eight_schools.json")], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    assert "theta_trans" in result.stdout and "theta" in result.stdout


def test_spec_model_keeps_its_source_through_json():
    from polyppl.spec.serialize import model_from_json, model_hash, model_to_json

    model = problem("eight_schools_noncentered", "eight_schools").model
    again = model_from_json(json.loads(json.dumps(model_to_json(model))))
    assert again.source == model.source and model_hash(again) == model_hash(model)
    assert isinstance(again["theta"], s.Deterministic)


def test_a_wrong_translation_stops_naming_the_quantity():
    """A lowered model whose prior on mu differs from the program's (normal(0, 4) for the
    program's normal(0, 5)): the check refuses it, naming mu's gradient."""
    from dataclasses import replace

    from polyppl.studies.translation import check_translation

    found = problem("eight_schools_centered", "eight_schools")
    nodes = tuple(replace(n, dist=s.Normal(0.0, 4.0)) if n.name == "mu" else n for n in found.model.nodes)
    wrong = replace(found, model=replace(found.model, nodes=nodes))
    with pytest.raises(UserError, match=r"the translation check failed: on (pymc|numpyro), the gradient of mu "
                       r"differs from Stan's by .* at the unconstrained point \{mu=.*; theta=\[.*\]\}; not sampling"):
        check_translation(wrong)


@pytest.mark.slow
def test_compare_runs_the_program_on_stan_and_the_lowered_model_elsewhere(tmp_path):
    """The example end to end, briefly: three columns named as the program names its
    quantities, and the translation check in the comparison's JSON."""
    from polyppl.inference.methods import SamplerSettings
    from polyppl.studies.compare import compare

    found = stan_program(EXAMPLES / "eight_schools.stan", EXAMPLES / "eight_schools.json")
    comparison = compare(found, settings=SamplerSettings(chains=2, draws=200, tune=200, seed=3), out=tmp_path)
    saved = comparison.to_json()
    assert saved["translation"]["points"] == 20 and saved["translation"]["max_rel_error"] <= 1e-8
    for backend in ("pymc", "numpyro", "stan"):
        assert saved["backends"][backend]["status"] == "ok"
        assert {"theta[1]", "theta_trans[8]", "mu", "tau"} <= set(saved["backends"][backend]["posterior"])


def test_generated_quantities_outside_the_subset_are_left_out_by_name(tmp_path):
    """A draw (``_rng``) is a conditional draw (tests/test_stan_loops.py); a statement outside
    the subset leaves out what it assigns, and what depends on it, by name."""
    program_text = REGRESSION + "generated quantities {\n  real ab = alpha + beta;\n" \
        "  real y_new = bernoulli_logit_rng(alpha);\n  real w = lambert_w0(alpha);\n  real twice_w = 2 * w;\n}\n"
    program, data = write_program(tmp_path, program_text, {"N": 2, "x": [0.1, 1.0], "y": [0, 1]})
    model = stan_program(program, data).model
    assert isinstance(model["ab"], s.Deterministic) and isinstance(model["y_new"], s.Conditional)
    assert "w" not in model.output_names and "twice_w" not in model.output_names
    assert "left out of the comparison: w (line 18: lambert_w0" in model.description
    assert "left out of the comparison: twice_w (line 19:" in model.description
