"""A model that exists nowhere in src/, declared here and run on all three backends.

Gamma-Poisson with fixed hyperparameters is conjugate: rates[k] ~ Gamma(2, 1) and
y[k] ~ Poisson(exposure[k] * rates[k]) give rates[k] | y ~ Gamma(2 + y[k], 1 + exposure[k]).
A hierarchical version (log-normal rates) has no closed form; there the backends are
compared with each other.
"""

import numpy as np
import pytest

from polyppl import SamplerSettings, sample
from polyppl import spec as s
from conftest import COLUMNS
from polyppl.inference.diagnostics import flatten, scalar_summary

BACKENDS = ["pymc", "numpyro", "stan"]
Z_MAX = 4.0  # per comparison 6e-5 two-sided; over the 9 comparisons of a test, about 6e-4

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


@pytest.mark.parametrize("column", COLUMNS)
def test_conjugate_gamma_poisson_matches_closed_form(column):
    backend, engine = column
    idata = sample(conjugate_model(), DATASET, backend, SETTINGS, engine=engine)
    assert list(idata.posterior["rates"].coords["site"].values) == list(COORDS["site"])
    exact_mean = (2 + COUNTS) / (1 + EXPOSURE)
    for k, site in enumerate(COORDS["site"]):
        summary = scalar_summary(idata.posterior["rates"].sel(site=site).values)
        z = (summary.mean - exact_mean[k]) / summary.mcse_mean
        assert abs(z) < Z_MAX, (column, site, summary.mean, exact_mean[k])


def test_hierarchical_poisson_agrees_across_backends():
    runs = {b: flatten(sample(hierarchical_model(), DATASET, b, SETTINGS).posterior) for b in BACKENDS}
    for key in ("mu", "rates[north]", "rates[centre]"):
        s0 = {b: scalar_summary(runs[b][key]) for b in BACKENDS}
        for other in ("numpyro", "stan"):
            gap = s0[other].mean - s0["pymc"].mean
            se = np.hypot(s0[other].mcse_mean, s0["pymc"].mcse_mean)
            assert abs(gap / se) < Z_MAX, (key, other, s0)
