"""The formula front end: parsing, names, row collapse, priors, and bad input.

No sampling here (seconds): the log densities are checked in test_formula_density.py, the
posteriors in test_formula_posterior.py.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

import polyppl
from polyppl.cli import main
from polyppl.errors import UserError
from polyppl.inference.numpy_model import log_likelihood
from polyppl.models.formula import compile_formula, parse_formula, parse_prior
from polyppl.models.multilevel_logistic import seed_rows


@pytest.fixture
def ab() -> pd.DataFrame:
    """The seed's 400 rows: Canada and China, control and treated, 100 rows per cell."""
    rows = seed_rows()
    return pd.DataFrame({"country": np.array(["Canada", "China"])[rows.values["group_idx"]],
                         "treated": rows.values["treated"], "success": rows.values["success"]})


@pytest.fixture
def mixed() -> pd.DataFrame:
    rng = np.random.default_rng(5)
    n = 200
    size = rng.integers(1, 8, n)
    return pd.DataFrame({
        "g": rng.choice(["a", "b", "c"], n), "h": rng.choice(["u", "v"], n), "x": rng.integers(0, 3, n).astype(float),
        "period": rng.choice(["p1", "p2", "p3"], n), "k": rng.binomial(size, 0.3), "size": size,
        "count": rng.poisson(4.0, n), "exposure": rng.uniform(0.5, 3.0, n), "y": rng.normal(5, 2, n),
        "yes": rng.integers(0, 2, n),
    })


# --------------------------------------------------------------------------- parsing


def test_group_blocks_bars_and_offsets_are_split_around_formulae():
    parsed = parse_formula("cbind(s, n - s) ~ x * w + offset(log(e)) + (1 + x | g) + (1 + w || h)")
    assert parsed.response == "cbind(s, n - s)"
    assert parsed.offsets == ("log(e)",)
    assert [(b.expr, b.factor, b.correlated) for b in parsed.blocks] == [("1 + x", "g", True), ("1 + w", "h", False)]
    assert parsed.rhs == "x * w + (1 + x | g) + (1 + w | h)"


def test_names_are_brms_names_with_formulae_columns(mixed):
    compiled = compile_formula("yes ~ x + period + (1 + x | g) + (1 | g:h)", mixed, "bernoulli")
    coords = compiled.dataset.coords
    assert coords["coef"] == ("Intercept", "x", "period[p2]", "period[p3]")
    assert coords["group_term"] == ("g:Intercept", "g:x", "g:h:Intercept")
    assert coords["group_pair"] == ("g:Intercept,x",)
    assert coords["group_effect"][:3] == ("g:a,Intercept", "g:a,x", "g:b,Intercept")
    assert "g:h:a:u,Intercept" in coords["group_effect"]
    assert {"b", "sd", "r", "cor"} <= set(compiled.model.output_names)
    decision = compiled.model["prob_positive"]
    assert compiled.dataset.coords[decision.dims[0]] == ("x", "period[p2]", "period[p3]")


def test_public_api_returns_model_and_dataset(ab):
    model, dataset = polyppl.formula("success ~ treated + (1 + treated | country)", ab, family="bernoulli")
    assert model.name == "formula" and "b" in model.output_names
    assert dataset.coords["country"] == ("Canada", "China")


# --------------------------------------------------------------------------- collapse


def test_bernoulli_rows_collapse_to_the_seeds_cells(ab):
    compiled = compile_formula("success ~ treated + (1 + treated || country)", ab)
    values = compiled.dataset.values
    assert len(compiled.dataset.coords["cell"]) == 4
    assert sorted(zip(values["trials"].tolist(), values["y"].tolist())) == [(100, 30), (100, 50), (100, 55), (100, 60)]
    assert "400 rows as 4 cells" in compiled.dataset.source


@pytest.mark.parametrize("formula,family", [
    ("yes ~ x + (1 + x | g)", "bernoulli"),
    ("cbind(k, size - k) ~ period + (1 | g) + (1 | h)", "binomial"),
    ("count ~ x + offset(log(exposure)) + (1 | g)", "poisson"),
    ("count ~ period + (1 | g:h)", "poisson"),
])
def test_collapsed_cells_have_the_rows_likelihood(mixed, formula, family):
    """Collapsing changes the log-likelihood by a constant only (the binomial coefficients,
    and for Poisson counts the multinomial split of each cell's total among its rows), so
    the posterior is the same: the difference is checked constant at random parameters."""
    cells = compile_formula(formula, mixed, family)
    rows = compile_formula(formula, mixed, family, collapse=False)
    assert len(cells.dataset.coords["cell"]) < len(rows.dataset.coords["cell"]) == len(mixed)
    rng = np.random.default_rng(1)
    differences = []
    for _ in range(4):
        point = {p.name: rng.uniform(0.2, 1.5, cells.dataset.shape(p.dims)) for p in cells.model.params}
        differences.append(log_likelihood(rows.model, rows.dataset, point)
                           - log_likelihood(cells.model, cells.dataset, point))
    assert np.ptp(differences) < 1e-9 * max(1.0, abs(differences[0]))


def test_gaussian_rows_stay_rows(mixed):
    compiled = compile_formula("y ~ x + (1 | g)", mixed, "gaussian")
    assert len(compiled.dataset.coords["cell"]) == len(mixed)
    np.testing.assert_array_equal(compiled.dataset.values["y"], mixed["y"].to_numpy())


def test_trials_and_cbind_responses_are_the_same_model(mixed):
    a = compile_formula("cbind(k, size - k) ~ x + (1 | g)", mixed, "binomial")
    b = compile_formula("k | trials(size) ~ x + (1 | g)", mixed, "binomial")
    assert a.dataset.values.keys() == b.dataset.values.keys()
    for name, value in a.dataset.values.items():
        np.testing.assert_array_equal(value, b.dataset.values[name], err_msg=name)


# --------------------------------------------------------------------------- priors


def test_default_priors_are_printed_with_the_model(ab):
    description = compile_formula("success ~ treated + (1 + treated | country)", ab).model.description
    assert "b[Intercept] ~ student_t(3, 0, 2.5)" in description
    assert "sd ~ half_student_t(3, 2.5)" in description
    assert "cor[country] ~ lkj(1)" in description


def test_priors_by_class_and_element_from_text_and_python(ab):
    compiled = compile_formula("success ~ treated + (1 + treated | country)", ab, priors=[
        "b ~ normal(0, 1)", "b[treated] ~ normal(0, 3)", "sd ~ student_t(3, 0, 1)", "cor ~ lkj(2)"])
    assert compiled.priors["b[Intercept]"] == "normal(0, 1)" and compiled.priors["b[treated]"] == "normal(0, 3)"
    assert compiled.priors["sd[country:treated]"] == "half_student_t(3, 1)"  # brms's way of writing it
    assert compiled.priors["cor[country]"] == "lkj(2)"
    from polyppl import spec as s

    again = compile_formula("success ~ treated + (1 + treated | country)", ab,
                            priors={"sd[country]": s.HalfNormal(0.5), "sigma": "half_normal(1)"})
    assert again.priors["sd[country:Intercept]"] == "half_normal(0.5)"


def test_a_prior_parsed():
    prior = parse_prior("sd[country:treated] ~ half_normal(1)")
    assert prior.target == "sd[country:treated]" and prior.dist.family == "half_normal"


# --------------------------------------------------------------------------- bad input


@pytest.mark.parametrize("formula,family,data_change,words", [
    ("success ~ treatment + (1 | country)", "bernoulli", None, "no column 'treatment'"),
    ("success ~ treated + (1 | country)", "bernoulli", ("success", 3, 2), "line 5"),
    ("cbind(k, size - k) ~ treated + (1 | country)", "binomial", ("k", 2, 9), "9 successes are above the 3 trials"),
    ("k ~ treated + (1 | country)", "poisson", ("k", 0, -1), "poisson needs a count"),
    ("success ~ treated + (1 | country)", "bernoulli", ("treated", 7, np.nan), "line 9 of .*: column 'treated' is empty"),
    ("success ~ treated + (1 | one)", "bernoulli", None, "grouping factor 'one' has a single level"),
    ("success ~ treated + constant + (1 | country)", "bernoulli", None, "'constant' is constant"),
    ("success ~ treated + twice + (1 | country)", "bernoulli", None, "column 'twice' is a linear combination of 'treated'"),
    ("success ~ treated + (1 | country", "bernoulli", None, r"unbalanced parentheses"),
    ("success ~ treated + 1 | country", "bernoulli", None, "must be in parentheses"),
    ("success ~ treated + (1 | country)", "binomal", None, "unknown family 'binomal'"),
    ("word ~ treated + (1 | country)", "bernoulli", None, "line 2 .*column 'word' of the response is 'yes', not a number"),
    ("success ~ log(zero) + (1 | country)", "bernoulli", None, "line 2 .*the design column 'log.zero.' is -inf"),
    ("success ~ treated + (1 | country)[2]", "bernoulli", None, "group term '1|country' is not written as"),
])
def test_bad_input_names_what_and_where(tmp_path, formula, family, data_change, words):
    frame = pd.DataFrame({"success": [0, 1, 1, 0, 1, 0, 1, 1], "treated": [0, 0, 1, 1, 0, 0, 1, 1],
                          "country": list("aabbaabb"), "k": [1, 2, 0, 3, 1, 0, 2, 1], "size": [3] * 8,
                          "one": ["x"] * 8, "constant": [2.0] * 8, "twice": [0, 0, 2, 2, 0, 0, 2, 2],
                          "word": ["yes", "no"] * 4, "zero": [0.0] * 8})
    if data_change:
        column, row, value = data_change
        frame[column] = frame[column].astype(float if isinstance(value, float) else frame[column].dtype)
        frame.loc[row, column] = value
    path = tmp_path / "data.csv"
    frame.to_csv(path, index=False)
    with pytest.raises(UserError, match=words):
        compile_formula(formula, path, family)


def test_unknown_prior_class_and_mixed_families(ab):
    with pytest.raises(UserError, match="unknown prior class 'slope'"):
        compile_formula("success ~ treated + (1 | country)", ab, priors=["slope ~ normal(0, 1)"])
    with pytest.raises(UserError, match="of one family"):
        compile_formula("success ~ treated + (1 | country)", ab, priors=["b[treated] ~ cauchy(0, 1)"])
    with pytest.raises(UserError, match="half family at 0; normal with location 1"):
        compile_formula("success ~ treated + (1 | country)", ab, priors=["sd ~ normal(1, 1)"])
    with pytest.raises(UserError, match="b needs a prior on the real line, and half_normal is on the positive"):
        compile_formula("success ~ treated + (1 | country)", ab, priors=["b ~ half_normal(1)"])


def test_cli_bad_input_exits_2_without_traceback_or_files(tmp_path, capsys, ab):
    path = tmp_path / "ab.csv"
    ab.to_csv(path, index=False)
    out = tmp_path / "results"
    code = main(["run", "--formula", "success ~ treated + (1 | county)", "--data", str(path), "--backends", "numpyro",
                 "--out", str(out)])
    err = capsys.readouterr().err
    assert code == 2 and "no column 'county'" in err and "Traceback" not in err
    assert not out.exists()
    assert main(["compare", "--formula", "success ~ treated", "--data", str(path), "--family", "gaussian",
                 "--prior", "tau ~ normal(0, 1)", "--out", str(out)]) == 2
    assert "unknown prior class 'tau'" in capsys.readouterr().err
    assert main(["run", "multilevel-logistic", "--formula", "y ~ x", "--backends", "stan"]) == 2


def test_show_prints_the_spec_and_the_stan_program(tmp_path, capsys, ab):
    path = tmp_path / "ab.csv"
    ab.to_csv(path, index=False)
    assert main(["show", "--formula", "success ~ treated + (1 + treated | country)", "--data", str(path)]) == 0
    text = capsys.readouterr().out
    assert "param         L_country[term_country, component_country] ~ lkj_corr_cholesky(1)" in text
    assert "cholesky_factor_corr[N_term_country] L_country;" in text
    assert "y ~ binomial_logit_glm(trials, XZ, 0, append_row(b, r));" in text


def test_data_dependent_transforms_use_every_row(mixed):
    """scale(x) is computed over the rows, not over their distinct patterns (which collapsing
    would give): the design is built on every row then."""
    compiled = compile_formula("yes ~ scale(x) + I(x**2) + (1 | g)", mixed, "bernoulli")
    x = mixed["x"].to_numpy()
    values = compiled.dataset.values
    X = values["XZ"] if "XZ" in values else values["X"]  # the population columns come first
    np.testing.assert_allclose(X[:, 1], (x - x.mean()) / x.std(), rtol=1e-12)  # formulae: the sd over n
    np.testing.assert_allclose(X[:, 2], x**2)
    assert compiled.dataset.coords["coef"] == ("Intercept", "scale(x)", "I(x ** 2)")
