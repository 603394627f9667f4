"""NUTS started from an approximation: does an ADVI or Pathfinder initialisation pay?

For one model, each backend runs NUTS from its default initialisation, from ADVI and from
Pathfinder (``SamplerSettings.init``; each chain starts at a draw from the approximation,
fitted with default ``VariationalSettings`` and the run's seed), each in its own process
like a comparison's fits. Measured per run: warm-up gradient evaluations, divergences,
convergence, bulk ESS per second of sampling, and the wall time of the whole fit (the
approximation's fit included). A backend or engine that cannot start NUTS from an init is
``n/a`` with the reason, decided before anything runs.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any, Callable, Sequence

from polyppl.backends import parse_columns
from polyppl.errors import UserError
from polyppl.execution.fit import result_stem
from polyppl.execution.request import FitRequest
from polyppl.execution.runner import run_fit
from polyppl.inference.diagnostics import convergence_failures
from polyppl.inference.methods import SamplerSettings
from polyppl.models import Problem
from polyppl.studies.compare import as_problem

INITS = ("default", "advi", "pathfinder")


@dataclass(frozen=True)
class InitRun:
    """One backend's NUTS from one initialisation."""

    column: str
    init: str
    status: str  # ok, n/a, error, crashed, timeout
    reason: str | None = None
    warmup_gradient_evaluations: int | None = None
    divergences: int | None = None
    converged: bool | None = None
    ess_bulk_min: float | None = None
    ess_bulk_per_second: float | None = None
    wall_seconds: float | None = None

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def init_study(model: str | Problem, backends: Sequence[str] | None = None, *, scenario: str | None = None,
               parametrization: str | None = None, inits: Sequence[str] = INITS,
               settings: SamplerSettings | None = None, out: str | Path = "polyppl-results/vi-init",
               timeout: float | None = None, engines: dict[str, str] | None = None,
               progress: Callable[[str], None] = lambda line: None) -> list[InitRun]:
    """NUTS from each of ``inits`` on each backend (``backends`` as in ``compare``)."""
    problem = as_problem(model, scenario=scenario, parametrization=parametrization)
    settings = settings or SamplerSettings()
    runs: list[InitRun] = []
    requests = {}
    for column in parse_columns(list(backends) if backends else None):
        engine = column.engine or (engines or {}).get(column.backend)
        for init in inits:
            try:
                requests[(column.label, init)] = FitRequest.make(
                    problem.model, problem.dataset, column.backend, engine, "nuts", replace(settings, init=init),
                    labels=problem.labels)
            except UserError as refusal:
                runs.append(InitRun(column.label, init, "n/a", str(refusal)))
    for (label, init), request in requests.items():
        stem = result_stem(Path(out), problem.labels, label, f"nuts-init-{init}")
        outcome = run_fit(request, stem, timeout=timeout, progress=progress, label=f"{label} init={init}")
        record = outcome.record
        if not record.ok:
            runs.append(InitRun(label, init, record.status, record.error, wall_seconds=record.wall_seconds))
            continue
        d = record.diagnostics
        runs.append(InitRun(label, init, "ok", None, d.warmup_gradient_evaluations, d.divergences,
                            not convergence_failures(d.flags), d.ess_bulk_min, d.ess_bulk_per_second,
                            record.wall_seconds))
        progress(f"{label} init={init}: {runs[-1].warmup_gradient_evaluations} warm-up gradients, "
                 f"{runs[-1].divergences} divergences")
    return runs
