"""The agreement test works both ways: few false alarms, and real differences are caught.

Three levels:
1. Synthetic AR(1) chains (autocorrelation 0.9, like a sticky sampler), where the truth is
   known: each statistic's false-alarm rate at a nominal 5%, against a plain KS test on
   the raw draws.
2. Real samplers, same model, different seeds: how often a whole comparison (every
   quantity, four statistics, Holm at 1%) says "disagree" although nothing differs.
3. Real samplers, a subtly different model (eight schools with the prior scale of mu
   changed from 5 to 3.25, which moves mu by about half a posterior sd): how often the
   comparison catches it.

Levels 2 and 3 are marked slow. CI runs them at a small scale (POLYPPL_STAT_REPS unset:
4 replications per case); POLYPPL_STAT_REPS=30 gives the numbers quoted in the README.
"""

import dataclasses
import os

import numpy as np
import pytest
from scipy import stats

from polyppl import SamplerSettings, sample
from polyppl import spec as s
from polyppl.models import get_model
from polyppl.studies.agreement import QuantityDraws, holm, pair_tests
from polyppl.studies.compare import quantities

REPS = int(os.environ.get("POLYPPL_STAT_REPS", "4"))


def ar1(rng, rho, chains=4, n=1000):
    x = np.empty((chains, n))
    x[:, 0] = rng.standard_normal(chains)
    noise = rng.standard_normal((chains, n)) * np.sqrt(1 - rho**2)
    for t in range(1, n):
        x[:, t] = rho * x[:, t - 1] + noise[:, t]
    return x


def test_statistics_are_calibrated_on_autocorrelated_chains():
    rng = np.random.default_rng(2026)
    reps = 200
    rejections = {"mean": 0, "q05": 0, "q95": 0, "ks": 0, "plain ks": 0}
    for _ in range(reps):
        a, b = ar1(rng, 0.9), ar1(rng, 0.9)
        for t in pair_tests({"x": {"q": QuantityDraws(a)}, "y": {"q": QuantityDraws(b)}}, floor=0.0):
            rejections[t.statistic] += t.p_value < 0.05
        rejections["plain ks"] += stats.ks_2samp(a.ravel(), b.ravel()).pvalue < 0.05
    rates = {k: v / reps for k, v in rejections.items()}
    # Binomial sd of a 5% rate over 200 replications is 1.5 points: [1%, 10%] is +-3 sd.
    for statistic in ("mean", "q05", "q95"):
        assert 0.01 <= rates[statistic] <= 0.10, rates
    # The ESS-adjusted KS test is conservative under strong autocorrelation, never liberal.
    assert rates["ks"] <= 0.10, rates
    # A plain KS test on autocorrelated draws is useless: most identical pairs "differ".
    assert rates["plain ks"] >= 0.5, rates


def test_holm_keeps_the_family_wise_rate():
    """Ten quantities x four statistics per family; any false alarm counts against the family."""
    rng = np.random.default_rng(7)
    families, alarms = 100, 0
    for _ in range(families):
        x = {f"q{i}": QuantityDraws(ar1(rng, 0.5, n=500)) for i in range(10)}
        y = {f"q{i}": QuantityDraws(ar1(rng, 0.5, n=500)) for i in range(10)}
        alarms += any(not t.agree for t in holm(pair_tests({"x": x, "y": y}, floor=0.0), 0.05))
    # At most 5% in theory; P(more than 11 of 100 | 5%) < 0.5%.
    assert alarms <= 11, alarms


def _quantities(idata, model, dataset):
    return quantities(model, dataset, {n: idata.posterior[n].values for n in model.output_names})


def _disagrees(first, second, model, dataset) -> bool:
    tests = holm(pair_tests({"x": _quantities(first, model, dataset), "y": _quantities(second, model, dataset)}), 0.01)
    return any(not t.agree for t in tests)


@pytest.mark.slow
@pytest.mark.parametrize("name", ["multilevel-logistic", "beta-binomial", "eight-schools"])
def test_false_alarm_rate_on_correct_samplers(name):
    """Stan against Stan with other seeds. Each comparison has a false-alarm rate of at most
    1%; over REPS comparisons, two or more alarms happen with probability < 0.6% (REPS=4)."""
    builtin = get_model(name)
    dataset = builtin.dataset()
    model = builtin.spec(None, dataset)
    runs = [sample(model, dataset, "stan", SamplerSettings(seed=seed)) for seed in range(1, 2 * REPS + 1)]
    alarms = sum(_disagrees(runs[2 * i], runs[2 * i + 1], model, dataset) for i in range(REPS))
    assert alarms <= max(1, round(0.03 * REPS)), f"{alarms} false alarms in {REPS} comparisons of {name}"


@pytest.mark.slow
def test_power_against_a_subtly_different_model():
    builtin = get_model("eight-schools")
    dataset = builtin.dataset()
    model = builtin.spec("noncentered", dataset)
    nodes = tuple(s.Param("mu", s.Normal(0.0, 3.25)) if n.name == "mu" else n for n in model.nodes)
    altered = dataclasses.replace(model, nodes=nodes)
    detected, shifts = 0, []
    for seed in range(1, REPS + 1):
        right = sample(model, dataset, "stan", SamplerSettings(seed=seed))
        wrong = sample(altered, dataset, "stan", SamplerSettings(seed=1000 + seed))
        mu = right.posterior["mu"].values
        shifts.append((wrong.posterior["mu"].values.mean() - mu.mean()) / mu.std())
        detected += _disagrees(right, wrong, model, dataset)
    assert 0.35 < -np.mean(shifts) < 0.65, f"the altered prior should move mu by about half an sd: {shifts}"
    assert detected >= max(REPS - 1, round(0.8 * REPS)), f"caught {detected} of {REPS}"
