"""Formula models sampled: the seed's model as a formula is the built-in model, and two
classic data sets land near lme4's published fits.

Both sample on NumPyro only: the three backends compile the same log density
(test_formula_density.py), so one backend shows what the formula means.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from polyppl.backends import get_backend
from polyppl.inference.methods import SamplerSettings
from polyppl.models import MODELS
from polyppl.models.formula import compile_formula
from polyppl.models.multilevel_logistic import seed_rows
from polyppl.studies.agreement import QuantityDraws, holm, pair_tests

DATA = Path(__file__).parent / "data" / "lme4"
FAMILY_ALPHA = 0.01


def _draws(model, dataset, settings: SamplerSettings) -> dict[str, np.ndarray]:
    return get_backend("numpyro").compile(model, dataset).run("nuts", settings).posterior


@pytest.mark.parametrize("parametrization", ["noncentered", "centered"])
def test_the_seeds_model_as_a_formula_has_the_builtin_posterior(tmp_path, parametrization):
    """``success ~ treated + (1 + treated || group)`` with the built-in model's priors is the
    built-in model: b[Intercept] = mu_a, b[treated] = mu_b, sd = (sigma_a, sigma_b),
    b + r = (a[g], b[g]), in the formula's non-centered and (hierarchically) centered forms.
    Both are sampled (4 chains x 500 after 500 warm-up, different
    seeds) and every matched quantity is compared with the agreement test of
    ``polyppl compare`` (means and 5%/95% quantiles by z tests on their MCSEs, referred to
    Student's t with 4 x chains - 1 = 15 degrees of freedom; ESS-adjusted KS), Holm over
    all of them: family-wise false-alarm rate 1% when the posteriors are the same."""
    rows = seed_rows()
    path = tmp_path / "seed.csv"
    group = np.array(["Canada", "China"])[rows.values["group_idx"]]
    path.write_text("group,treated,success\n" + "".join(
        f"{g},{t},{y}\n" for g, t, y in zip(group, rows.values["treated"], rows.values["success"])))
    formula = compile_formula("success ~ treated + (1 + treated || group)", path, "bernoulli",
                              priors=["b ~ student_t(3, 0, 1)", "sd ~ half_normal(1)"], parametrization=parametrization)
    builtin = MODELS["multilevel-logistic"]
    dataset = builtin.dataset("seed")
    ours = _draws(formula.model, formula.dataset, SamplerSettings(chains=4, draws=500, tune=500, seed=11))
    theirs = _draws(builtin.spec("noncentered", dataset), dataset, SamplerSettings(chains=4, draws=500, tune=500, seed=12))

    effects = formula.dataset.coords["group_effect"]
    r = {label: ours["r"][..., i] for i, label in enumerate(effects)}
    b0, b1 = ours["b"][..., 0], ours["b"][..., 1]
    mine = {"mu_a": b0, "mu_b": b1, "sigma_a": ours["sd"][..., 0], "sigma_b": ours["sd"][..., 1]}
    reference = {name: theirs[name] for name in ("mu_a", "mu_b", "sigma_a", "sigma_b")}
    for g, country in enumerate(dataset.coords["group"]):
        mine[f"a[{country}]"] = b0 + r[f"group:{country},Intercept"]
        mine[f"b[{country}]"] = b1 + r[f"group:{country},treated"]
        mine[f"P(treatment better)[{country}]"] = (mine[f"b[{country}]"] > 0).astype(float)
        reference[f"a[{country}]"] = theirs["a"][..., g]
        reference[f"b[{country}]"] = theirs["b"][..., g]
        reference[f"P(treatment better)[{country}]"] = (theirs["b"][..., g] > 0).astype(float)
    sources = {name: {k: QuantityDraws(v, is_probability=k.startswith("P(")) for k, v in source.items()}
               for name, source in (("formula", mine), ("built-in", reference))}
    tests = holm(pair_tests(sources), FAMILY_ALPHA)
    assert {t.quantity for t in tests} == set(reference)
    assert all(t.agree for t in tests), [t.as_dict() for t in tests if not t.agree]


#: lme4's estimates of the population-level effects.
#: cbpp, glmer(cbind(incidence, size - incidence) ~ period + (1 | herd), binomial), Laplace:
#: the reference values of lme4's own test suite (github.com/lme4/lme4, tests/glmer-1.R,
#: ``coef_m1_lme4.0``), which lme4, glmmADMB and glmmML reproduce to 4e-5.
CBPP = {"Intercept": -1.39853505, "C(period)[2]": -0.99233471, "C(period)[3]": -1.12867541,
        "C(period)[4]": -1.58037390}
#: sleepstudy, lmer(Reaction ~ Days + (Days | Subject)), REML: Bates, Maechler, Bolker and
#: Walker (2015), "Fitting linear mixed-effects models using lme4", Journal of Statistical
#: Software 67(1), section 1 (the printed fit of fm1).
SLEEPSTUDY = {"Intercept": 251.405, "Days": 10.467}
#: "Near": within GAP_SD posterior sds plus 4 Monte Carlo standard errors. A posterior mean
#: under weakly informative priors is not a (RE)ML estimate: it averages over the
#: group-level variances instead of plugging in their estimates, and the priors pull a
#: little; with 15 or 18 groups such gaps are of order 1/sqrt(groups), about a quarter of a
#: posterior sd. The Monte Carlo part alone exceeds 4 MCSE with probability
#: 2 P(t_15 > 4) = 1.2e-3 per effect (the MCSE's Student t reference, 4 chains). Measured
#: (4 x 500 draws): gaps of at most 0.13 posterior sd (cbpp, period 4).
GAP_SD = 0.25


@pytest.mark.parametrize("formula,family,data,reference", [
    ("cbind(incidence, size - incidence) ~ C(period) + (1 | herd)", "binomial", "cbpp.csv", CBPP),
    ("Reaction ~ Days + (Days | Subject)", "gaussian", "sleepstudy.csv", SLEEPSTUDY),
])
def test_population_effects_land_near_lme4(formula, family, data, reference):
    compiled = compile_formula(formula, DATA / data, family)
    draws = _draws(compiled.model, compiled.dataset, SamplerSettings(chains=4, draws=500, tune=500, seed=3))["b"]
    columns = compiled.dataset.coords["coef"]
    assert set(columns) == set(reference)
    for j, column in enumerate(columns):
        values = draws[..., j]
        summary = QuantityDraws(values).summary
        assert summary.ess_bulk >= 400 and summary.rhat < 1.01, (column, summary)
        gap = abs(summary.mean - reference[column])
        assert gap < GAP_SD * summary.sd + 4 * summary.mcse_mean, (column, summary.mean, reference[column],
                                                                   gap / summary.sd)
