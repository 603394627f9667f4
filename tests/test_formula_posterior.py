"""Formula models sampled: the seed's model as a formula is the built-in model, and two
classic data sets land near lme4's published fits (the correlated ``(Days | Subject)``'s
variance components too).

Both sample on NumPyro only: the three backends compile the same log density
(test_formula_density.py), so one backend shows what the formula means.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest

from polyppl.backends import get_backend
from polyppl.inference.methods import SamplerSettings
from polyppl.models import MODELS
from polyppl.models.formula import compile_formula
from polyppl.models.multilevel_logistic import seed_rows
from polyppl.studies.agreement import QuantityDraws, holm, pair_tests
from stat_tolerance import FAMILY_ALPHA, t_threshold

DATA = Path(__file__).parent / "data" / "lme4"


def _draws(model, dataset, settings: SamplerSettings) -> dict[str, np.ndarray]:
    return get_backend("numpyro").compile(model, dataset).run("nuts", settings).posterior


@pytest.mark.false_alarm(FAMILY_ALPHA)
@pytest.mark.parametrize("parametrization", ["noncentered", "centered"])
def test_the_seeds_model_as_a_formula_has_the_builtin_posterior(tmp_path, parametrization):
    """``success ~ treated + (1 + treated || group)`` with the built-in model's priors is the
    built-in model: b[Intercept] = mu_a, b[treated] = mu_b, sd = (sigma_a, sigma_b),
    b + r = (a[g], b[g]), in the formula's non-centered and (hierarchically) centered forms.
    Both are sampled (4 chains x 500 after 500 warm-up, different
    seeds) and every matched quantity is compared with the agreement test of
    ``polyppl compare`` (means and 5%/95% quantiles by z tests on their MCSEs, referred to
    Student's t with 4 x chains - 1 = 15 degrees of freedom; ESS-adjusted KS), Holm over
    all of them: family-wise false-alarm rate FAMILY_ALPHA (the declared rate) when the
    posteriors are the same."""
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
#: The same fit's variance components (fm1's "Random effects"): the correlated formula's
#: sd, cor and sigma, against an implementation polyppl did not write.
SLEEPSTUDY_COMPONENTS = {"sd[Subject:Intercept]": 24.741, "sd[Subject:Days]": 5.922,
                         "cor[Subject:Intercept,Days]": 0.066, "sigma": 25.592}
#: "Near": within GAP_SD posterior sds plus the Monte Carlo error. A posterior mean
#: under weakly informative priors is not a (RE)ML estimate: it averages over the
#: group-level variances instead of plugging in their estimates, and the priors pull a
#: little; with 15 or 18 groups such gaps are of order 1/sqrt(groups), about a quarter of a
#: posterior sd. The Monte Carlo part is the t threshold of the declared rate (Bonferroni
#: over the test's comparisons, t with 4 x chains - 1 degrees of freedom) times the MCSE.
#: Measured (4 x 500 draws): gaps of at most 0.13 posterior sd (cbpp, period 4).
GAP_SD = 0.25
#: Variance components: REML maximises the likelihood with the fixed effects integrated out,
#: which is the marginal posterior's mode under flat priors; the test compares the posterior
#: median, which for a right-skewed scale posterior from 18 groups lies above the mode by a
#: fraction of a posterior sd (the skewness of a scaled inverse chi with 17 degrees of freedom
#: puts mode and median about 0.2 sd apart), plus the half-Student-t and LKJ(1) priors' pull.
#: So the fair check is the median within COMPONENT_GAP_SD posterior sds of REML: a gap of
#: order 1/sqrt(groups) is what a correct posterior shows; what it catches is a component
#: misplaced by more than half its posterior sd (sd(Days) 5.9 read as sd(Intercept) 24.7 is
#: 4 sds away; a correlation of the wrong sign is not: cor's posterior sd is about 0.3).
#: Measured (NumPyro, 4 x 1000 draws, seed 3; 2026-12-07): medians sd(Intercept) 25.85
#: (+0.16 sd), sd(Days) 6.29 (+0.26 sd), cor 0.092 (+0.09 sd), sigma 25.84 (+0.16 sd), all
#: above REML as the skewness predicts (4 x 500 draws: 0.17, 0.25, 0.08, 0.20); the limit is
#: about twice the largest.
COMPONENT_GAP_SD = 0.5


@pytest.mark.false_alarm(FAMILY_ALPHA)
@pytest.mark.parametrize("formula,family,data,reference,components", [
    ("cbind(incidence, size - incidence) ~ C(period) + (1 | herd)", "binomial", "cbpp.csv", CBPP, {}),
    ("Reaction ~ Days + (Days | Subject)", "gaussian", "sleepstudy.csv", SLEEPSTUDY, SLEEPSTUDY_COMPONENTS),
])
def test_population_effects_land_near_lme4(formula, family, data, reference, components):
    """Population effects (posterior means) near lme4's estimates; for the correlated
    ``(Days | Subject)`` also the variance components (posterior medians of sd, cor and sigma)
    near lme4's REML ones (measured gaps, in posterior sds: see COMPONENT_GAP_SD)."""
    compiled = compile_formula(formula, DATA / data, family)
    # The correlation mixes slowest (R-hat 1.015 at 4 x 500 draws): twice the draws where it is judged.
    settings = SamplerSettings(chains=4, draws=1000 if components else 500, tune=500, seed=3)
    posterior = _draws(compiled.model, compiled.dataset, settings)
    draws = posterior["b"]
    columns = compiled.dataset.coords["coef"]
    assert set(columns) == set(reference)
    z_max = t_threshold(FAMILY_ALPHA, len(reference) + len(components), settings.chains)
    for j, column in enumerate(columns):
        values = draws[..., j]
        summary = QuantityDraws(values).summary
        assert summary.ess_bulk >= 400 and summary.rhat < 1.01, (column, summary)
        gap = abs(summary.mean - reference[column])
        assert gap < GAP_SD * summary.sd + z_max * summary.mcse_mean, (column, summary.mean, reference[column],
                                                                       gap / summary.sd)
    if not components:
        return
    terms = compiled.dataset.coords["group_term"]
    pairs = compiled.dataset.coords["group_pair"]
    named = {f"sd[{term}]": posterior["sd"][..., i] for i, term in enumerate(terms)}
    named |= {f"cor[{pair}]": posterior["cor"][..., i] for i, pair in enumerate(pairs)}
    named["sigma"] = posterior["sigma"]
    assert set(named) == set(components)
    for name, values in named.items():
        summary = QuantityDraws(values).summary
        assert summary.ess_bulk >= 400 and summary.rhat < 1.01, (name, summary)
        # The sample median's Monte Carlo sd, for a roughly normal posterior: sqrt(pi / 2)
        # sd / sqrt(ESS).
        mcse_median = math.sqrt(math.pi / 2) * summary.sd / math.sqrt(summary.ess_bulk)
        gap = abs(summary.q50 - components[name])
        print(f"{name}: posterior median {summary.q50:.3f}, REML {components[name]:.3f}, gap {gap / summary.sd:.2f} sd")
        assert gap < COMPONENT_GAP_SD * summary.sd + z_max * mcse_median, (
            name, summary.q50, components[name], gap / summary.sd)
