"""What a model is to the rest of polyppl: a :class:`Problem` (a spec model with its data and
labels), and, for a built-in model, what it knows beyond its spec (:class:`BuiltinModel`):
scenarios, a CSV reader, an exact reference, a shrinkage panel, synthetic data for sweeps."""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Mapping

import numpy as np

from polyppl.errors import UserError, unknown
from polyppl.spec import Dataset, Model, rewrites

if TYPE_CHECKING:
    import xarray as xr


#: A parametrization and its counterpart: what the remedies try when one diverges.
COUNTERPARTS = {"centered": "noncentered", "noncentered": "centered"}


@dataclass(frozen=True)
class Labels:
    """How a fit is named in files and shown; not an input of any result."""

    model: str
    scenario: str = "data"
    parametrization: str | None = None


@dataclass(frozen=True)
class Scenario:
    description: str
    dataset: Callable[[], Dataset]


@dataclass(frozen=True)
class ShrinkagePanel:
    """Observed rates (or effects) and their posteriors per variant, group cell or school."""

    labels: list[str]
    observed: np.ndarray
    draws: dict[str, np.ndarray]  # source -> (samples, len(labels))
    grand: float
    grand_label: str
    what: str  # the axis label


@dataclass(frozen=True)
class SweepLine:
    """Sizes along one line of a scaling sweep (``{"groups": 8, "rows_per_cell": n}``) and the
    data form (``counts`` or ``rows``)."""

    sizes: dict[str, int]
    form: str = "counts"


@dataclass(frozen=True)
class Sweeps:
    """A model's scaling sweeps: the size names, synthetic data of any size, and the quick
    and full lines of points."""

    size_names: tuple[str, ...]
    synthetic: Callable[[dict[str, int], str], Dataset]
    quick: tuple[SweepLine, ...]
    full: tuple[SweepLine, ...]


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
    #: Independent draws of the exact posterior, ``(dataset, n, seed) -> {name: (n, *shape)}``
    #: for ``compare --reference exact``; None where there is none.
    exact_draws: Callable[[Dataset, int, int], dict[str, np.ndarray]] | None = None
    #: Observed values beside their posteriors, for the report's shrinkage figure.
    shrinkage: Callable[[Problem, Mapping[str, xr.Dataset]], ShrinkagePanel | None] | None = None
    #: Scenarios whose side-by-side posteriors show shrinkage (the seed's boxplot), and the
    #: vector variable they are drawn for.
    scenario_contrast: tuple[str, ...] = ()
    contrast_variable: str = ""
    sweeps: Sweeps | None = None

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

    def problem(self, scenario: str | None = None, data: Path | None = None, parametrization: str | None = None) -> Problem:
        dataset = self.dataset(scenario, data)
        parametrization = parametrization or self.default_parametrization
        label = scenario or (Path(data).stem if data is not None else self.default_scenario)
        return Problem(self.spec(parametrization, dataset), dataset, Labels(self.name, label, parametrization), self)


@dataclass(frozen=True)
class Problem:
    """A model with its data, and how to name it: what a fit, a comparison or a study runs.
    ``builtin`` is the built-in model it came from, whose extra knowledge applies; None for
    a user's model or a formula."""

    model: Model
    dataset: Dataset
    labels: Labels
    builtin: BuiltinModel | None = field(default=None, compare=False)
    #: The same model and data in another parametrization, by name (a formula's; a built-in
    #: model's come from ``builtin``); None where the model has one form only.
    rebuild: Callable[[str], Problem] | None = field(default=None, compare=False)

    @property
    def name(self) -> str:
        return self.labels.model

    @property
    def scenario(self) -> str:
        return self.labels.scenario

    @property
    def parametrization(self) -> str | None:
        return self.labels.parametrization

    def counterpart(self) -> Problem | None:
        """The same model and data in the other of its centered and non-centered forms, where
        it offers one: a built-in model's or a formula's other form; for a user's model, its
        non-centered effects centered, else its group-level Normal effects non-centered
        (``spec.rewrites.counterpart``); for a Stan program, the program rewritten
        (``rebuild``: ``stan_program.reparametrize``), never its lowering alone. None otherwise."""
        if self.builtin is None and self.rebuild is None:  # a user's model: rewritten, once
            if self.model.source is not None:
                # A program's lowering: the program would run unchanged beside a rewritten spec.
                return None
            found = None if self.parametrization else rewrites.counterpart(self.model)
            if found is None:
                return None
            model, form = found
            return replace(self, model=model, labels=replace(self.labels, parametrization=form))
        other = COUNTERPARTS.get(self.parametrization or "")
        if other is None:
            return None
        if self.builtin is not None:
            if other not in self.builtin.parametrizations:
                return None
            return replace(self, model=self.builtin.spec(other, self.dataset),
                           labels=replace(self.labels, parametrization=other))
        if self.rebuild is None:
            return None
        try:
            return self.rebuild(other)
        except UserError:  # e.g. a formula's centered form, offered for uncorrelated terms only
            return None

    def describe(self) -> str:
        form = f" ({self.parametrization})" if self.parametrization else ""
        return f"{self.name}{form}, data: {self.dataset.source or self.scenario}"


def rates_panel(labels: list[str], trials: Any, successes: Any, draws: dict[str, np.ndarray], what: str) -> ShrinkagePanel:
    """Observed success rates against their posteriors, with the pooled rate as the line."""
    trials, successes = np.asarray(trials, float), np.asarray(successes, float)
    return ShrinkagePanel(labels, successes / trials, draws, float(successes.sum() / trials.sum()),
                          f"grand rate (all {what} pooled)", "success rate")


def stack_draws(values: xr.DataArray) -> np.ndarray:
    """(chain, draw, k) draws as (samples, k)."""
    array = values.values
    return array.reshape(-1, *array.shape[2:])
