"""What a built-in model is: a specification, scenarios, a CSV reader and its decisions."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Callable, Mapping

import numpy as np

from polyppl.errors import UserError, unknown
from polyppl.spec import Dataset, Model

if TYPE_CHECKING:
    import xarray as xr

#: Decision quantities as draws: {"prob_beats": {"B>C": indicator array (chain, draw)}}.
DecisionDraws = dict[str, dict[str, np.ndarray]]


@dataclass(frozen=True)
class Scenario:
    description: str
    dataset: Callable[[], Dataset]


@dataclass(frozen=True)
class BuiltinModel:
    name: str
    description: str
    parametrizations: tuple[str, ...]  # the first is the default
    scenarios: Mapping[str, Scenario]  # the first is the default
    #: Build the specification for a parametrization and a dataset (the likelihood's
    #: form can depend on the data: counts per cell, or one row per trial).
    build: Callable[[str, Dataset], Model]
    read_csv: Callable[[Path], Dataset]
    csv_layouts: tuple[str, ...]
    decisions: Callable[["xr.Dataset"], DecisionDraws]

    @property
    def default_scenario(self) -> str:
        return next(iter(self.scenarios))

    @property
    def default_parametrization(self) -> str:
        return self.parametrizations[0]

    def dataset(self, scenario: str | None = None, data: Path | None = None) -> Dataset:
        if scenario is not None and data is not None:
            raise UserError("give either a scenario or a data file, not both")
        if data is not None:
            return self.read_csv(Path(data))
        scenario = scenario or self.default_scenario
        if scenario not in self.scenarios:
            raise unknown(f"scenario of {self.name}", scenario, self.scenarios)
        return self.scenarios[scenario].dataset()

    def spec(self, parametrization: str | None, dataset: Dataset) -> Model:
        parametrization = parametrization or self.default_parametrization
        if parametrization not in self.parametrizations:
            raise unknown(f"parametrization of {self.name}", parametrization, self.parametrizations)
        return self.build(parametrization, dataset)
