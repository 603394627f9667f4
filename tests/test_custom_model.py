"""A model that exists nowhere in src/, declared here and run on all three backends.

Gamma-Poisson with fixed hyperparameters is conjugate: rates[k] ~ Gamma(2, 1) and
y[k] ~ Poisson(exposure[k] * rates[k]) give rates[k] | y ~ Gamma(2 + y[k], 1 + exposure[k]).
A hierarchical version (log-normal rates) has no closed form; there the backends are
compared with each other.

Tolerances: each z has an estimated MCSE in its denominator, so it is referred to Student's
t with 4 x chains - 1 = 15 degrees of freedom (as in the agreement study), and each test's
threshold is the Bonferroni one for its comparisons at the family false-alarm rate the test declares (FAMILY_ALPHA):
|z| < 4.88 for the 5 sites of a conjugate test, |z| < 4.97 for the 6 comparisons of the
hierarchical one.
"""

import numpy as np
import pytest

from polyppl import SamplerSettings, sample
from polyppl import spec as s
from conftest import columns_of_a_repeat
from polyppl.inference.diagnostics import flatten, scalar_summary
from stat_tolerance import FAMILY_ALPHA, t_threshold

BACKENDS = ["pymc", "numpyro", "stan"]

COUNTS = np.array([3, 11, 0, 7, 25])
EXPOSURE = np.array([1.0, 2.0, 0.5, 1.5, 4.0])
COORDS = {"site": ("north", "south", "east", "west", "centre")}


def conjugate_model() -> s.Model:
    return s.Model(
        "gamma-poisson",
        (
            s.Data("exposure", "real", ("site",), lower=0),
            s.Param("rates", s.Gamma(2.0, 1.0), ("site",)),
            s.Observed("y", s.Poisson(s.Var("exposure") * s.Var("rates")), ("site",)),
        ),
    )


def hierarchical_model() -> s.Model:
    mu, sigma = s.Var("mu"), s.Var("sigma")
    return s.Model(
        "hierarchical-poisson",
        (
            s.Data("exposure", "real", ("site",), lower=0),
            s.Param("mu", s.Normal(0.0, 2.0)),
            s.Param("sigma", s.HalfStudentT(3.0, 1.0)),
            s.Param("z", s.Normal(0.0, 1.0), ("site",)),
            s.Deterministic("rates", s.exp(mu + sigma * s.Var("z")), ("site",)),
            s.Observed("y", s.Poisson(s.Var("exposure") * s.Var("rates")), ("site",)),
        ),
    )


DATASET = s.Dataset(values={"exposure": EXPOSURE, "y": COUNTS}, coords=COORDS)
SETTINGS = SamplerSettings(chains=4, draws=1000, tune=1000, seed=5)


@pytest.mark.false_alarm(FAMILY_ALPHA)
@pytest.mark.parametrize("column", columns_of_a_repeat(False))
def test_conjugate_gamma_poisson_matches_closed_form(column):
    backend, engine = column
    idata = sample(conjugate_model(), DATASET, backend, SETTINGS, engine=engine)
    assert list(idata.posterior["rates"].coords["site"].values) == list(COORDS["site"])
    exact_mean = (2 + COUNTS) / (1 + EXPOSURE)
    z_max = t_threshold(FAMILY_ALPHA, len(COORDS["site"]), SETTINGS.chains)  # 4.88
    for k, site in enumerate(COORDS["site"]):
        summary = scalar_summary(idata.posterior["rates"].sel(site=site).values)
        z = (summary.mean - exact_mean[k]) / summary.mcse_mean
        assert abs(z) < z_max, (column, site, summary.mean, exact_mean[k], z)


@pytest.mark.false_alarm(FAMILY_ALPHA)
def test_hierarchical_poisson_agrees_across_backends():
    runs = {b: flatten(sample(hierarchical_model(), DATASET, b, SETTINGS).posterior) for b in BACKENDS}
    keys, others = ("mu", "rates[north]", "rates[centre]"), ("numpyro", "stan")
    # Both comparisons of a quantity share PyMC's draws, so they are correlated; Bonferroni's
    # bound holds whatever the dependence.
    z_max = t_threshold(FAMILY_ALPHA, len(keys) * len(others), SETTINGS.chains)  # 4.97
    for key in keys:
        s0 = {b: scalar_summary(runs[b][key]) for b in BACKENDS}
        for other in others:
            gap = s0[other].mean - s0["pymc"].mean
            se = np.hypot(s0[other].mcse_mean, s0["pymc"].mcse_mean)
            assert abs(gap / se) < z_max, (key, other, s0, gap / se)
