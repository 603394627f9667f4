"""The record of one fit: typed, frozen, with a JSON round trip.

Finished, failed, crashed and timed-out fits share this one shape (``status`` says which);
``polyppl run --json`` writes it, ``compare`` saves one beside each ``.nc`` file, and a
re-run reads it back to decide whether the finished fit can be reused (``request_hash``).
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field, fields, replace
from pathlib import Path
from typing import Any

from polyppl.inference.diagnostics import Estimate, RunDiagnostics, Summary
from polyppl.inference.draws import Timings

STATUSES = ("ok", "error", "crashed", "timeout")


@dataclass(frozen=True)
class ApproximationSummary:
    """An approximation's fit (ADVI, Pathfinder): its family, the optimisation's iterations
    and gradient evaluations (None where the library does not say), whether it met its
    stopping rule, and the number of raw draws from it behind the posterior draws."""

    family: str
    iterations: int
    gradient_evaluations: int | None
    converged: bool
    raw_draws: int
    notes: tuple[str, ...] = ()

    def as_dict(self) -> dict[str, Any]:
        return {**asdict(self), "notes": list(self.notes)}

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> ApproximationSummary:
        return cls(**{**values, "notes": tuple(values.get("notes", ()))})


@dataclass(frozen=True)
class FitRecord:
    model: str
    scenario: str
    parametrization: str | None
    backend: str
    engine: str
    method: str
    status: str
    seed: int
    settings: dict[str, Any]
    versions: dict[str, str] = field(default_factory=dict)
    request_hash: str = ""
    #: One hash per input (model, data, backend, method, versions): says what changed.
    request_parts: dict[str, str] = field(default_factory=dict)
    data_source: str = ""
    timings: Timings | None = None
    #: NUTS's convergence and cost; None for an approximation, which has no chains to judge.
    diagnostics: RunDiagnostics | None = None
    #: What an approximation's fit reports; None for NUTS.
    approximation: ApproximationSummary | None = None
    #: Every scalar quantity, keyed ``rates[A]``, ``a[China]``, ``mu_a``.
    posterior: dict[str, Summary] = field(default_factory=dict)
    #: Decision probabilities: {"prob_beats": {"B>C": Estimate}}.
    decisions: dict[str, dict[str, Estimate]] = field(default_factory=dict)
    error: str | None = None
    traceback: str | None = None
    output_tail: str | None = None
    wall_seconds: float | None = None
    #: Seconds its process waited for its turn to sample (the fits of a comparison import and
    #: compile at once, and sample one at a time); not in ``wall_seconds``. None: it did not wait.
    turn_wait_seconds: float | None = None
    peak_memory_mb: float | None = None
    #: SHA-256 of the fit's draws file (``STEM.nc``), written after it; checked before reuse.
    netcdf_sha256: str | None = None

    @property
    def ok(self) -> bool:
        return self.status == "ok"

    def failed(self, status: str, error: str, output_tail: str | None = None, wall_seconds: float | None = None) -> FitRecord:
        """This request's record for a run that ended in ``status`` (error, crashed, timeout)."""
        return replace(self, status=status, error=error, output_tail=output_tail, wall_seconds=wall_seconds,
                       netcdf_sha256=None, timings=None, diagnostics=None, approximation=None, posterior={}, decisions={})

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {}
        for f in fields(self):
            value = getattr(self, f.name)
            if f.name == "timings" and value is not None:
                value = {"compile_seconds": value.compile_seconds, "compile_cached": bool(value.compile_cached),
                         "warmup_seconds": value.warmup_seconds, "sampling_seconds": value.sampling_seconds,
                         "phase_split": value.split}
            elif f.name in ("diagnostics", "approximation") and value is not None:
                value = value.as_dict()
            elif f.name == "posterior":
                value = {k: s.as_dict() for k, s in value.items()}
            elif f.name == "decisions":
                value = {g: {label: {"estimate": e.estimate, "mcse": e.mcse} for label, e in items.items()}
                         for g, items in value.items()}
            out[f.name] = value
        return out

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> FitRecord:
        known = {f.name for f in fields(cls)}
        values = {k: v for k, v in data.items() if k in known}
        if values.get("timings"):
            t = values["timings"]
            values["timings"] = Timings(t["compile_seconds"], t["warmup_seconds"], t["sampling_seconds"],
                                        t.get("phase_split", ""), bool(t.get("compile_cached", False)))
        if values.get("diagnostics"):
            values["diagnostics"] = RunDiagnostics.from_dict(values["diagnostics"])
        if values.get("approximation"):
            values["approximation"] = ApproximationSummary.from_dict(values["approximation"])
        values["posterior"] = {k: Summary(**s) for k, s in values.get("posterior", {}).items()}
        values["decisions"] = {g: {label: Estimate(**e) for label, e in items.items()}
                               for g, items in values.get("decisions", {}).items()}
        return cls(**values)

    @classmethod
    def load(cls, path: Path) -> FitRecord:
        return cls.from_json(json.loads(Path(path).read_text()))
