"""The remedies ladder's decisions, without sampling (seconds): which rung follows which
findings, how many draws longer chains get, which models have another parametrization, and
how a flagged value prints beside its threshold. The ladder climbed by real backends is in
test_remedies.py."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from polyppl import spec as s
from polyppl.errors import UserError
from polyppl.inference.diagnostics import beside_threshold, convergence_details
from polyppl.inference.methods import SamplerSettings
from polyppl.models import get_model, resolve
from polyppl.models.formula import formula_problem
from polyppl.spec import rewrites
from polyppl.spec.serialize import model_hash
from polyppl.studies.remedies import (
    DRAWS_CAP_FACTOR, REMEDIES, Findings, Rung, check_remedies, draws_needed, next_rung,
)
from conftest import REPO


@pytest.mark.parametrize("value, threshold, decimals, text", [
    (1.0103, 1.01, 3, "1.0103"),       # the case: never "1.010" for a flagged R-hat
    (1.00996, 1.01, 3, "1.00996"),     # rounds to the threshold at 3, 4 decimals
    (1.014, 1.01, 3, "1.014"),
    (399.6, 400, 0, "399.6"),          # an ESS just under 400 never prints as 400
    (287.2, 400, 0, "287"),
])
def test_a_flagged_value_never_prints_as_its_threshold(value, threshold, decimals, text):
    assert beside_threshold(value, threshold, decimals) == text


def test_convergence_details_put_each_threshold_beside_its_value():
    assert convergence_details(1.0103, 399.6, 1000.0, 4) == ["R-hat 1.0103 > 1.01", "bulk ESS 399.6 < 400 (100 per chain)"]
    assert convergence_details(1.0, 1000.0, 1000.0, 4) == []


def test_remedies_are_checked_and_kept_in_ladder_order():
    assert check_remedies(None) == tuple(REMEDIES)
    assert check_remedies(["none"]) == ()
    assert check_remedies(["draws", "target"]) == ("target", "draws")
    with pytest.raises(UserError, match="unknown remedy 'adapt'.*none, target, parametrization, draws"):
        check_remedies(["adapt"])


def _first(parametrization: str = "centered", **settings) -> Rung:
    return Rung.first(get_model("eight-schools").problem(parametrization=parametrization),
                      SamplerSettings(**settings))


def _diverging(label: str = "pymc", n: int = 10) -> Findings:
    return Findings({label: n}, {})


def test_divergences_climb_the_targets_then_the_other_parametrization_at_the_highest():
    rung = _first()
    assert rung.settings.target_accept == 0.9 and rung.suffix == "" and rung.is_first
    seen = []
    while rung is not None:
        seen.append((rung.describe(), rung.suffix))
        rung, why = next_rung(rung, _diverging(), tuple(REMEDIES))
    assert seen == [("at target 0.9", ""), ("at target 0.95", "-target95"), ("at target 0.99", "-target99"),
                    ("at target 0.99, non-centered", "-noncentered-target99"),
                    ("at target 0.999, non-centered", "-noncentered-target999")]
    assert why == "no remedy for divergences left"


def test_the_last_target_is_climbed_on_the_form_with_fewer_flags():
    """After the other parametrization, divergences still left: target 0.999 on the form whose
    rung had fewer flags (the form asked for, here), and no second try of the other form."""
    declared = _first("noncentered", target_accept=0.99)
    other, _ = next_rung(declared, _diverging(n=1), tuple(REMEDIES))
    assert other.describe() == "at target 0.99, centered"
    last, _ = next_rung(other, _diverging(n=13), tuple(REMEDIES), best=declared)
    assert (last.describe(), last.suffix) == ("at target 0.999", "-target999")
    assert next_rung(last, _diverging(n=1), tuple(REMEDIES), best=last) == (None, "no remedy for divergences left")
    # Without a parametrization rung (posteriordb, SBC), 0.999 follows 0.99 directly.
    assert next_rung(declared, _diverging(), ("target",))[0].describe() == "at target 0.999"


def test_a_model_with_one_form_stops_after_the_highest_target():
    rung = Rung.first(get_model("beta-binomial").problem(), SamplerSettings(target_accept=0.99))
    following, _ = next_rung(rung, _diverging(), tuple(REMEDIES))
    assert following.describe() == "at target 0.999"
    assert next_rung(following, _diverging(), tuple(REMEDIES)) == (None, "no remedy for divergences left")


def test_a_users_model_is_rewritten_into_its_other_form_once():
    """The README's kind of model, declared non-centered (examples/varying_intercepts.py):
    its counterpart is the centered form, Param a ~ Normal(mu_a, sigma_a); a centered one
    (examples/hierarchical_poisson.py) is non-centered; rewriting back and forth gives the
    declared model again, and a rung's rewritten model is not rewritten again."""
    declared = resolve(str(REPO / "examples" / "varying_intercepts.py:varying_intercepts"))
    centered = declared.counterpart()
    assert centered.parametrization == "centered" and declared.parametrization is None
    a = centered.model["a"]
    assert isinstance(a, s.Param) and a.dims == ("county_name",)
    assert [str(v.name) for _, v in a.dist.args] == ["mu_a", "sigma_a"]
    assert "a_z" not in {n.name for n in centered.model.nodes}
    assert model_hash(rewrites.noncentered(centered.model, ["a"])) == model_hash(declared.model)
    assert centered.counterpart() is None
    rung = Rung.first(declared, SamplerSettings(target_accept=0.99))
    following, _ = next_rung(rung, _diverging(), tuple(REMEDIES))
    assert following.suffix == "-centered" and following.describe() == "at target 0.99, centered"
    poisson = resolve(str(REPO / "examples" / "hierarchical_poisson.py:hierarchical_poisson")).counterpart()
    assert poisson.parametrization == "noncentered" and "log_rates_z" in {n.name for n in poisson.model.nodes}


def test_only_the_rungs_asked_for_are_climbed():
    rung = _first()
    following, _ = next_rung(rung, _diverging(), ("parametrization",))
    assert following.problem.parametrization == "noncentered" and following.settings.target_accept == 0.9
    assert next_rung(rung, _diverging(), ("draws",)) == (None, "no remedy for divergences left")


def test_longer_chains_get_the_draws_the_ess_per_draw_asks_for_up_to_the_cap():
    rung = _first("noncentered", draws=300)
    # bulk ESS 150 from 4 x 300 draws: 0.125 a draw; 1.5 x 100 per chain needs 1200 a chain.
    findings = Findings({}, {"stan": ("bulk ESS 150 < 400 (100 per chain)",)}, {"stan": 150 / 1200})
    assert draws_needed(findings, 300) == 1200
    following, _ = next_rung(rung, findings, tuple(REMEDIES))
    target = rung.settings.target_accept  # the model's own (eight schools non-centered asks for 0.95)
    assert following.settings.draws == 1200 and following.describe() == f"at target {target:g}, 4 chains x 1200 draws"
    assert following.suffix == "-draws1200"
    # Far too few effective draws: the cap, 10 x the draws asked.
    hopeless = Findings({}, {"stan": ("bulk ESS 4 < 400 (100 per chain)",)}, {"stan": 4 / 1200})
    capped, _ = next_rung(rung, hopeless, tuple(REMEDIES))
    assert capped.settings.draws == DRAWS_CAP_FACTOR * 300
    stop, why = next_rung(capped, hopeless, tuple(REMEDIES))
    assert stop is None and "up to 3000 draws per chain (the cap: 3000)" in why and "about 45000" in why


def test_r_hat_alone_at_least_doubles_the_draws():
    findings = Findings({}, {"stan": ("R-hat 1.0140 > 1.01",)}, {"stan": 0.9})
    assert draws_needed(findings, 500) == 1000


def test_a_clean_rung_is_the_last():
    assert next_rung(_first(), Findings({}, {}), tuple(REMEDIES)) == (None, "clean")


def test_built_in_models_and_formulas_offer_their_counterpart():
    centered = get_model("eight-schools").problem(parametrization="centered")
    other = centered.counterpart()
    assert other.parametrization == "noncentered" and other.labels.scenario == centered.labels.scenario
    assert "theta_z" in {n.name for n in other.model.nodes}
    assert get_model("beta-binomial").problem().counterpart() is None  # marginal, positive, seed: no pair
    rng = np.random.default_rng(1)
    frame = pd.DataFrame({"g": rng.choice(["a", "b", "c"], 30), "y": rng.normal(size=30)})
    formula = formula_problem("y ~ 1 + (1 | g)", frame, "gaussian")
    assert formula.parametrization == "noncentered" and formula.counterpart().parametrization == "centered"
    correlated = formula_problem("y ~ 1 + x + (1 + x | g)", frame.assign(x=rng.normal(size=30)), "gaussian")
    assert correlated.counterpart() is None  # the centered form takes uncorrelated terms only


def test_an_unknown_remedy_is_bad_input(tmp_path, capsys):
    from polyppl.cli import main

    assert main(["compare", "eight-schools", "--remedies", "target,adapt", "--out", str(tmp_path / "out")]) == 2
    assert "unknown remedy 'adapt'; expected one of: none, target, parametrization, draws" in capsys.readouterr().err
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("tests_said", ["agree", "disagree"])
def test_divergences_no_rung_rescues_leave_the_verdict_inconclusive_naming_the_last_rung_and_backend(tests_said):
    """Issue #28: a verdict that no rung rescues stays inconclusive, naming the last rung tried and
    the backend that failed it (a finding about the backend), even where only divergences are left
    and the agreement tests said agree or disagree; what they said is kept beside it."""
    from polyppl.studies.compare import Comparison, conclude
    from polyppl.studies.remedies import Ladder, Step

    problem = get_model("eight-schools").problem(parametrization="noncentered")
    rung = Rung.first(problem, SamplerSettings(target_accept=0.999))
    comparison = Comparison(problem, rung.settings, {}, verdict=tests_said)
    findings = Findings({"pymc": 3}, {})
    following, why = next_rung(rung, findings, ("target",))
    assert following is None
    concluded = conclude(Ladder([Step(rung, comparison, findings, tests_said, None, ("pymc", "stan"))], ("target",), why))
    assert concluded.verdict == "inconclusive" and concluded.exit_code == 3 and concluded.tests_verdict == tests_said
    assert concluded.reasons[-1].startswith("no remedy rescued it: the last rung tried (at target 0.999) left pymc 3 "
                                            "divergent transitions (no remedy for divergences left); a finding about "
                                            "pymc on this model, not about its posterior")
    assert f"the agreement tests say {tests_said.upper()}" in concluded.reasons[-1]


def test_with_remedies_off_divergences_leave_the_tests_verdict_standing():
    from polyppl.studies.compare import Comparison, conclude
    from polyppl.studies.remedies import Ladder, Step

    problem = get_model("eight-schools").problem(parametrization="noncentered")
    rung = Rung.first(problem, SamplerSettings())
    findings = Findings({"pymc": 3}, {})
    ladder = Ladder([Step(rung, Comparison(problem, rung.settings, {}, verdict="agree"), findings, "agree", None,
                          ("pymc", "stan"))], (), "remedies off (--remedies none)")
    concluded = conclude(ladder)
    assert concluded.verdict == "agree" and concluded.tests_verdict is None and concluded.reasons == []


def test_a_stan_programs_other_form_is_the_program_with_offset_and_multiplier():
    """posteriordb's centered eight schools declares theta before mu and tau; its other form
    declares it after them, ``<offset=mu, multiplier=tau>`` (Stan reads a declaration's bounds
    from parameters declared before it), lowered again so that its theta samples through the
    affine map; rewriting back removes them. The Stan column runs the rewritten program: its
    model carries the new text. A program with no group-level Normal effect has one form."""
    data = REPO / "tests" / "data" / "posteriordb"
    centered = resolve(str(data / "eight_schools_centered.stan"), data=data / "eight_schools.json.zip")
    assert centered.parametrization == "centered" and centered.scenario == "eight_schools"
    other = centered.counterpart()
    assert other.parametrization == "noncentered" and other.scenario == "eight_schools"
    text = other.model.source.text
    assert "real<lower=0> tau; // hyper-parameter of sdv\n  array[J] real<offset=mu, multiplier=tau> theta;" in text
    assert text.count(" theta;") == 1 and other.model["theta"].dist.family == "flat_affine"
    back = other.counterpart()
    assert back.parametrization == "centered" and back.model["theta"].dist.family == "normal"
    assert "array[J] real theta;" in back.model.source.text
    noncentered = resolve(str(data / "eight_schools_noncentered.stan"), data=data / "eight_schools.json.zip")
    assert noncentered.parametrization is None and noncentered.counterpart() is None
