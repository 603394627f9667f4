"""``polyppl repro``: reproduce failures that users of PyMC, NumPyro and Stan report,
explain them, and run the fix.

Each scenario is a module of its own, declared through the specification wherever the
failure is about the model, and run on every backend it concerns. For each backend the
report gives the outcome (``reproduced``, ``not reproduced``, ``not applicable`` with the
reason), the evidence (the error as the backend printed it, or the diagnostics that show
the failure), the cause, the fix, and the evidence that the fix works, measured by running
it. A new scenario is a module with a ``SCENARIO`` and a line in :data:`SCENARIOS`.
"""

from __future__ import annotations

from typing import Sequence

from polyppl.backends import get_backend, parse_columns
from polyppl.errors import UserError, unknown
from polyppl.studies.repro import (
    advi_init,
    beta_binomial_funnel,
    centered_funnel,
    float32_jax,
    improper_flat_scale,
    logit_gradient,
    pytensor_no_compiler,
    tree_depth_unscaled,
)
from polyppl.studies.repro.base import (
    DEFAULT_SEEDS,
    NOT_APPLICABLE,
    NOT_REPRODUCED,
    REPRODUCED,
    BackendResult,
    Progress,
    ReproReport,
    RunOptions,
    Scenario,
)

SCENARIOS: dict[str, Scenario] = {
    module.SCENARIO.name: module.SCENARIO
    for module in (advi_init, beta_binomial_funnel, centered_funnel, improper_flat_scale, tree_depth_unscaled,
                   float32_jax, pytensor_no_compiler, logit_gradient)
}


def run_repro(
    name: str,
    backends: Sequence[str] | None = None,
    seeds: int = DEFAULT_SEEDS,
    progress: Progress | None = None,
) -> ReproReport:
    """Run one scenario on the given backends (all by default; ``stan:pystan`` names an
    engine) and report what happened. ``seeds``: how many seeds a seed-dependent failure is
    run over."""
    if name not in SCENARIOS:
        raise unknown("scenario", name, SCENARIOS)
    columns = parse_columns(list(backends) if backends else None)
    if len({c.backend for c in columns}) != len(columns):
        raise UserError("a repro report runs each backend once; name one engine per backend")
    if not isinstance(seeds, int) or seeds < 1:
        raise UserError(f"seeds must be a positive whole number, got {seeds!r}")
    scenario = SCENARIOS[name]
    # Every backend's engine resolved (``stan`` -> cmdstanpy or pystan), so that the report says what ran.
    opts = RunOptions(seeds=seeds, engines=tuple((c.backend, get_backend(c.backend).engine(c.engine).name)
                                                 for c in columns))
    results = []
    for column in columns:
        backend = column.backend
        if backend in scenario.runners:
            if progress:
                progress(f"{name}: running on {backend} ({opts.engine(backend)})")
            results.append(scenario.runners[backend](opts))
        else:
            reason = scenario.not_applicable.get(backend, f"this scenario has no reproduction for {backend}")
            results.append(BackendResult(backend, NOT_APPLICABLE, [], "", reason=reason))
    return ReproReport(scenario.name, scenario.title, scenario.description, list(scenario.sources), opts.as_dict(),
                       results)


__all__ = ["DEFAULT_SEEDS", "NOT_APPLICABLE", "NOT_REPRODUCED", "REPRODUCED", "BackendResult", "ReproReport",
           "RunOptions", "SCENARIOS", "Scenario", "run_repro"]
