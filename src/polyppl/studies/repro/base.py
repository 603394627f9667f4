"""What every reproduction shares: its result types, run sizes and the helpers that run a
fit and describe its diagnostics the same way for every backend."""

from __future__ import annotations

import json
import textwrap
from dataclasses import asdict, dataclass, field
from typing import Any, Callable, Mapping, Sequence

import numpy as np

from polyppl.backends import get_backend
from polyppl.execution.fit import FitResult, fit
from polyppl.execution.request import FitRequest
from polyppl.inference.methods import SamplerSettings
from polyppl.models import get_model
from polyppl.spec import Dataset, Model

REPRODUCED, NOT_REPRODUCED, NOT_APPLICABLE = "reproduced", "not reproduced", "not applicable"
DEFAULT_SEEDS = 20

Progress = Callable[[str], None]


@dataclass
class BackendResult:
    """What one backend does with one scenario, and whether the fix works there."""

    backend: str
    outcome: str  # REPRODUCED, NOT_REPRODUCED or NOT_APPLICABLE
    evidence: list[str]
    cause: str
    fix: str = ""
    fix_evidence: list[str] = field(default_factory=list)
    #: Whether the fix, run, removed the failure; None where no fix was run.
    fix_works: bool | None = None
    #: The numbers behind the evidence (failure counts, divergences, ESS), for tests and JSON.
    measurements: dict[str, Any] = field(default_factory=dict)
    #: Why the scenario does not apply to this backend (only with NOT_APPLICABLE).
    reason: str = ""
    versions: dict[str, str] = field(default_factory=dict)


@dataclass
class ReproReport:
    scenario: str
    title: str
    description: str
    sources: list[str]
    settings: dict[str, Any]
    results: list[BackendResult]

    def result(self, backend: str) -> BackendResult:
        return next(r for r in self.results if r.backend == backend)

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)

    def to_json(self) -> str:
        return json.dumps(self.as_dict(), indent=2, default=_json_default)

    def text(self) -> str:
        width = 100
        lines = [f"{self.scenario}: {self.title}", ""]
        lines += textwrap.wrap(self.description, width)
        lines += ["", "Reported in:"] + [f"  {source}" for source in self.sources]
        lines.append(f"Settings: {', '.join(f'{k}={_setting(v)}' for k, v in self.settings.items())}")
        for r in self.results:
            versions = ", ".join(f"{k} {v}" for k, v in r.versions.items())
            lines += ["", f"== {r.backend}{f' ({versions})' if versions else ''}: {r.outcome.upper()}"]
            if r.outcome == NOT_APPLICABLE:
                lines += _indented(f"reason: {r.reason}", width)
            if r.evidence:
                lines.append("  evidence:")
                lines += [line for item in r.evidence for line in _indented(item, width, "    ")]
            if r.cause:
                lines += _indented(f"cause: {r.cause}", width)
            if r.fix:
                lines += _indented(f"fix: {r.fix}", width)
                verdict = {True: "the fix works", False: "THE FIX DID NOT WORK", None: "not run"}[r.fix_works]
                lines.append(f"  fix, run ({verdict}):")
                lines += [line for item in r.fix_evidence for line in _indented(item, width, "    ")]
        return "\n".join(lines)


def _setting(value: Any) -> str:
    """A setting as the report prints it: a mapping (each backend's engine) as ``stan:cmdstanpy pymc:pymc``."""
    if isinstance(value, dict):
        return " ".join(f"{k}:{v}" for k, v in value.items()) or "-"
    return str(value)


def _indented(text: str, width: int, prefix: str = "  ") -> list[str]:
    out = []
    for paragraph in text.splitlines() or [""]:
        out += textwrap.wrap(paragraph, width, initial_indent=prefix, subsequent_indent=prefix + "  ") or [prefix]
    return out


def _json_default(value: object) -> object:
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, np.ndarray):
        return value.tolist()
    raise TypeError(f"cannot write {type(value).__name__} as JSON")


@dataclass(frozen=True)
class RunOptions:
    """How big the runs are, and which engine runs each backend (``None``: the backend's
    choice here). ``seeds`` only matters where the failure depends on the seed."""

    seeds: int = DEFAULT_SEEDS
    chains: int = 2
    draws: int = 200
    tune: int = 200
    engines: tuple[tuple[str, str], ...] = ()

    def settings(self, **overrides: Any) -> SamplerSettings:
        return SamplerSettings(**{"chains": self.chains, "draws": self.draws, "tune": self.tune, "seed": 1, **overrides})

    def engine(self, backend: str) -> str:
        """The engine that runs ``backend`` in this report (resolved, never ``auto``)."""
        return get_backend(backend).engine(dict(self.engines).get(backend)).name

    def as_dict(self) -> dict[str, Any]:
        out = asdict(self)
        out["engines"] = dict(self.engines)
        return out


@dataclass(frozen=True)
class Scenario:
    name: str
    title: str
    description: str
    sources: tuple[str, ...]
    #: backend -> function running the scenario there; backends it does not concern are
    #: answered by ``not_applicable`` (or, for a backend it never heard of, a generic reason).
    runners: Mapping[str, Callable[[RunOptions], BackendResult]]
    not_applicable: Mapping[str, str] = field(default_factory=dict)


def per_backend(run: Callable[[str, RunOptions], BackendResult], backends: Sequence[str] = ("pymc", "numpyro", "stan")
                ) -> dict[str, Callable[[RunOptions], BackendResult]]:
    """The same runner for each backend (a scenario about the model, not one library)."""
    return {b: (lambda opts, b=b: run(b, opts)) for b in backends}


def versions(backend: str, opts: RunOptions) -> dict[str, str]:
    return {"engine": opts.engine(backend), **get_backend(backend).versions(opts.engine(backend))}


def run(model: Model, dataset: Dataset, backend: str, settings: SamplerSettings, opts: RunOptions) -> FitResult:
    """Sample in this process through the normal fit (same diagnostics on every backend)."""
    return fit(FitRequest.make(model, dataset, backend, opts.engine(backend), "nuts", settings))


def builtin(name: str, parametrization: str, scenario: str | None = None) -> tuple[Model, Dataset]:
    model = get_model(name)
    dataset = model.dataset(scenario)
    return model.spec(parametrization, dataset), dataset


def first_line(message: str, limit: int = 240) -> str:
    line = " ".join(message.strip().split())
    return line if len(line) <= limit else line[: limit - 3] + "..."


def share(count: int, total: int) -> str:
    return f"{count} of {total} ({100 * count / total:.0f}%)"


def diagnostics_line(label: str, result: FitResult, keys: Sequence[str] = ()) -> str:
    d = result.diagnostics
    parts = [
        f"{d.divergences} divergences ({100 * d.divergence_rate:.1f}% of draws)",
        f"tree depth at max in {100 * d.tree_depth_saturation:.0f}% of draws",
        f"max R-hat {d.rhat_max:.3f}",
        f"min bulk ESS {d.ess_bulk_min:.0f}",
    ]
    for key in keys:
        q = result.summaries[key]
        parts.append(f"{key} mean {q.mean:.3g} [5% {q.q05:.3g}, 95% {q.q95:.3g}] (bulk ESS {q.ess_bulk:.0f})")
    return f"{label}: " + "; ".join(parts)


def measure(result: FitResult, keys: Sequence[str] = ()) -> dict[str, Any]:
    d = result.diagnostics
    out: dict[str, Any] = {
        "divergences": d.divergences,
        "divergence_rate": d.divergence_rate,
        "tree_depth_saturation": d.tree_depth_saturation,
        "max_tree_depth_reached": int(result.idata.sample_stats["tree_depth"].values.max()),
        "rhat_max": d.rhat_max,
        "ess_bulk_min": d.ess_bulk_min,
        "ess_tail_min": d.ess_tail_min,
        "gradients_per_draw": d.gradients_per_draw,
        "ess_bulk_per_second": d.ess_bulk_per_second,
    }
    for key in keys:
        q = result.summaries[key]
        out[key] = {m: getattr(q, m) for m in ("mean", "mcse_mean", "q05", "q50", "q95", "ess_bulk", "rhat")}
    return out
