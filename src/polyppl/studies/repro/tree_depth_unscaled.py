"""tree-depth-unscaled: a badly scaled predictor puts the chains on a ridge."""

from __future__ import annotations

import numpy as np

from polyppl import spec as s
from polyppl.execution.fit import FitResult
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


PREDICTOR_OFFSET = 5000.0


def regression_model() -> s.Model:
    """y ~ Normal(alpha + beta * x, sigma), with priors wide enough not to matter."""
    return s.Model(
        "linear-regression",
        (
            s.Data("x", "real", ("obs",)),
            s.Param("alpha", s.Normal(0.0, 10000.0)),
            s.Param("beta", s.Normal(0.0, 10.0)),
            s.Param("sigma", s.HalfNormal(5.0)),
            s.Observed("y", s.Normal(s.Var("alpha") + s.Var("beta") * s.Var("x"), s.Var("sigma")), ("obs",)),
        ),
        description="Linear regression with one predictor.",
    )


def regression_dataset(centered: bool) -> s.Dataset:
    """50 points with x in 5000..5010 (a year, a price): the intercept, at x = 0, lies far
    outside the data. ``centered`` subtracts the mean of x, which changes only the data."""
    rng = np.random.default_rng(20240)
    x = PREDICTOR_OFFSET + rng.uniform(0.0, 10.0, size=50)
    y = 1.0 + 0.5 * (x - PREDICTOR_OFFSET) + rng.normal(0.0, 1.0, size=50)
    return s.Dataset(
        {"x": x - x.mean() if centered else x, "y": y},
        {"obs": tuple(range(50))},
        source="simulated, x centered" if centered else "simulated, x in 5000..5010",
    )


TREE_DEPTH_LIMIT = 8


def _stuck_on_ridge(result: FitResult) -> bool:
    """Chains that disagree (R-hat far above 1) and trajectories that stop short: at the
    maximum tree depth, or diverging. Stan and NumPyro saturate on most draws; PyMC's
    adaptation lands on a larger step on some seeds and CPUs (measured here, seeds 1-5:
    saturation 0-57%, divergences 0-18% of draws, R-hat 1.7-2.7 on every seed), so either
    symptom counts."""
    d = result.diagnostics
    return d.rhat_max > 1.1 and (d.tree_depth_saturation > 0.25 or d.divergence_rate > 0.05)


def _tree_depth(backend: str, opts: RunOptions) -> BackendResult:
    model = regression_model()
    # A lower cap than the usual 10 keeps PyMC's saturated run short; the unscaled model
    # needs more than 2^10 steps per draw, so it saturates either cap.
    settings = opts.settings(max_tree_depth=TREE_DEPTH_LIMIT)
    raw = run(model, regression_dataset(centered=False), backend, settings, opts)
    centered = run(model, regression_dataset(centered=True), backend, settings, opts)
    return BackendResult(
        backend=backend,
        outcome=REPRODUCED if _stuck_on_ridge(raw) else NOT_REPRODUCED,
        evidence=[diagnostics_line(f"x around {PREDICTOR_OFFSET:.0f}, max tree depth {TREE_DEPTH_LIMIT}", raw, ("beta",))],
        cause=(
            "With x around 5000 the intercept and slope are almost perfectly correlated (|r| > 0.99999): the "
            "posterior is a long thin ridge. A diagonal mass matrix cannot rotate it, so the step size is set by the "
            "ridge's width and a trajectory needs thousands of steps to cross its length: draws hit the maximum "
            "tree depth, the chains crawl along the ridge, disagree (R-hat far above 1) and miss the slope. A step "
            "size adapted where the chain happened to be can also exceed what the ridge's narrow direction "
            "tolerates: those trajectories diverge instead (PyMC, on some seeds)."
        ),
        fix="center the predictor (x - mean(x)); the model is the same, the intercept becomes the mean of y at the "
        "mean of x, and the two parameters are nearly independent",
        fix_evidence=[diagnostics_line("x centered", centered, ("beta",))],
        fix_works=centered.diagnostics.tree_depth_saturation == 0 and centered.diagnostics.rhat_max < 1.05,
        measurements={"raw": measure(raw, ("beta",)), "centered": measure(centered, ("beta",)),
                      "max_tree_depth": TREE_DEPTH_LIMIT},
        versions=versions(backend, opts),
    )


SCENARIO = Scenario(
    "tree-depth-unscaled",
    "Maximum tree depth and stuck chains from an uncentered predictor",
    "Linear regression with x around 5000: intercept and slope nearly collinear. The chains crawl along "
    "the ridge and disagree on every backend; Stan and NumPyro saturate the maximum tree depth, PyMC "
    "saturates or diverges depending on the seed. Centering x (a change of data only) removes it.",
    (
        "https://github.com/bambinos/bambi/pull/697 (Bambi centers predictors because it mitigates posterior "
        "correlation and speeds up sampling)",
        "https://github.com/stan-dev/posterior/issues/77 (tree depth warnings and what they mean)",
    ),
    per_backend(_tree_depth),
)
