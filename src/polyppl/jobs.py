"""Resolving what the user asked for (model, data, parametrization, backend) into a job.

Light on purpose (no ArviZ, no backend): bad input fails here, in a fraction of a second,
before anything is sampled or written.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

from polyppl.backends import BACKENDS
from polyppl.errors import unknown
from polyppl.models import BuiltinModel, get_model
from polyppl.spec import Dataset, Model, check_dataset


@dataclass(frozen=True)
class Job:
    """A built-in model with its data and parametrization resolved."""

    builtin: BuiltinModel
    scenario: str  # the scenario name, or the CSV file's stem
    parametrization: str
    dataset: Dataset
    spec: Model

    @property
    def model(self) -> str:
        return self.builtin.name

    def labels(self) -> dict[str, str]:
        return {"scenario": self.scenario, "parametrization": self.parametrization}


def resolve(
    model: str,
    scenario: str | None = None,
    data: str | Path | None = None,
    parametrization: str | None = None,
) -> Job:
    builtin = get_model(model)
    dataset = builtin.dataset(scenario, Path(data) if data is not None else None)
    parametrization = parametrization or builtin.default_parametrization
    spec = builtin.spec(parametrization, dataset)
    check_dataset(spec, dataset)
    label = scenario or (Path(data).stem if data is not None else builtin.default_scenario)
    return Job(builtin, label, parametrization, dataset, spec)


def check_backends(backends: Sequence[str] | None) -> list[str]:
    """The backends asked for (all of them for None or an empty list), checked."""
    backends = list(backends) if backends else list(BACKENDS)
    for backend in backends:
        if backend not in BACKENDS:
            raise unknown("backend", backend, BACKENDS)
    if len(set(backends)) != len(backends):
        raise unknown("backend list (a backend appears twice)", ",".join(backends), BACKENDS)
    return backends
