"""improper-flat-scale: a flat prior on a group scale with two groups gives an improper
posterior that samples without error."""

from __future__ import annotations

import numpy as np

from polyppl import spec as s
from polyppl.studies.repro.base import (
    NOT_REPRODUCED,
    REPRODUCED,
    BackendResult,
    RunOptions,
    Scenario,
    diagnostics_line,
    measure,
    per_backend,
    run,
    versions,
)


TWO_SCHOOLS = {"school": ("A", "B"), "y": (28.0, 8.0), "sigma": (15.0, 10.0)}


def two_groups_model(scale_prior: str) -> s.Model:
    """Two groups, flat prior on the mean; the group scale flat (``flat``: improper
    posterior) or half-Cauchy (``half-cauchy``: proper). Non-centered, so that no funnel
    hides the problem."""
    tau_prior = s.HalfFlat() if scale_prior == "flat" else s.HalfCauchy(5.0)
    model = s.Model(
        f"two-groups-{scale_prior}-scale",
        (
            s.Data("sigma", "real", ("school",), lower=0.0),
            s.Param("mu", s.Flat()),
            s.Param("tau", tau_prior),
            s.Param("theta", s.Normal(s.Var("mu"), s.Var("tau")), ("school",)),
            s.Observed("y", s.Normal(s.Var("theta"), s.Var("sigma")), ("school",)),
        ),
        description=f"Two groups, mu flat, tau {scale_prior}.",
    )
    return s.noncentered(model, ["theta"])


def two_groups_dataset() -> s.Dataset:
    return s.Dataset(
        {"y": np.asarray(TWO_SCHOOLS["y"]), "sigma": np.asarray(TWO_SCHOOLS["sigma"])},
        {"school": TWO_SCHOOLS["school"]},
        source="the first two of the eight schools",
    )


def _improper(backend: str, opts: RunOptions) -> BackendResult:
    dataset = two_groups_dataset()
    settings = opts.settings(draws=max(opts.draws, 500), tune=max(opts.tune, 500))
    flat = run(two_groups_model("flat"), dataset, backend, settings, opts)
    proper = run(two_groups_model("half-cauchy"), dataset, backend, settings, opts)
    tau_flat, tau_proper = flat.summaries["tau"], proper.summaries["tau"]
    # The posterior of tau has a tail like 1/tau: the draws wander to ever larger values,
    # the chains disagree, and the 95% quantile is nowhere near the data's scale (tens).
    # Judged against the proper prior's run on the same data and settings: how far the
    # chains wander in a run of this length varies by backend and seed (PyMC, seed 1: a 95%
    # quantile of 345 against 34 with the proper prior, R-hat 1.03, bulk ESS 35).
    reproduced = tau_flat.q95 > max(5 * tau_proper.q95, 100) or tau_flat.rhat > 1.05
    return BackendResult(
        backend=backend,
        outcome=REPRODUCED if reproduced else NOT_REPRODUCED,
        evidence=[diagnostics_line("tau ~ HalfFlat", flat, ("tau",))],
        cause=(
            "With a flat prior on mu, integrating mu out leaves a likelihood for tau that falls like tau^-(J-1); with "
            "J = 2 groups that is 1/tau, so a flat prior on tau gives a posterior whose integral diverges. There is "
            "no posterior to sample: the chains drift to ever larger tau and disagree, and no warning says why."
        ),
        fix="a proper prior on the group scale, tau ~ HalfCauchy(5) (or more groups: a flat prior on tau needs at "
        "least 3 groups with mu flat)",
        fix_evidence=[diagnostics_line("tau ~ HalfCauchy(5)", proper, ("tau",))],
        fix_works=tau_proper.rhat < 1.05 and tau_proper.q95 < 1000,
        measurements={"flat": measure(flat, ("tau",)), "half_cauchy": measure(proper, ("tau",))},
        versions=versions(backend, opts),
    )


SCENARIO = Scenario(
    "improper-flat-scale",
    "A flat prior on a group scale with two groups: an improper posterior that samples without error",
    "Two groups (the first two of the eight schools), mu flat, tau HalfFlat, non-centered: the posterior "
    "does not exist, yet every backend returns draws. The fix is a proper prior on tau.",
    (
        "https://github.com/maxisi/ringdown/pull/13 (a Flat prior makes the posterior improper: 'the sampler "
        "will diverge to infinity')",
        "https://github.com/pymc-devs/pymc/issues/3294 (HalfFlat prior on a rate)",
        "Gelman (2006), Prior distributions for variance parameters in hierarchical models",
    ),
    per_backend(_improper),
)
