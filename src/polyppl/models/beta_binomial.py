"""Hierarchical Beta-Binomial model for a multi-variant A/B test (the seed's first model).

    p(a, b) proportional to (a + b)^-2.5      (Gelman et al., BDA3 section 5.3)
    rates[k] ~ Beta(a, b)
    successes[k] ~ Binomial(trials[k], rates[k])

Parametrizations:
  positive  a and b declared positive (sampled on the log scale); the hyperprior is a factor.
  seed      the seed's declaration: a and b flat on the whole real line, the hyperprior a
            density that is minus infinity where a <= 0 or b <= 0. Same posterior, but no
            transform keeps the sampler inside the support (see `polyppl repro`).
"""

from __future__ import annotations

from itertools import permutations
from pathlib import Path

from typing import TYPE_CHECKING

import numpy as np

from polyppl import spec as s
from polyppl.errors import UserError
from polyppl.models import csvdata
from polyppl.models.base import BuiltinModel, DecisionDraws, Scenario

if TYPE_CHECKING:
    import xarray as xr

COLUMNS = ("variant", "trials", "successes")


def build(parametrization: str, dataset: s.Dataset) -> s.Model:
    a, b = s.Var("a"), s.Var("b")
    if parametrization == "positive":
        hyper = [s.Param("a", s.HalfFlat()), s.Param("b", s.HalfFlat())]
        hyperprior = s.Factor("hyperprior", -2.5 * s.log(a + b))
    else:  # "seed"
        hyper = [s.Param("a", s.Flat()), s.Param("b", s.Flat())]
        hyperprior = s.Factor("hyperprior", s.where((a <= 0) | (b <= 0), s.NEG_INF, -2.5 * s.log(a + b)))
    return s.Model(
        "beta-binomial",
        (
            s.Data("trials", "int", ("variant",), lower=1),
            *hyper,
            hyperprior,
            s.Param("rates", s.Beta(a, b), ("variant",)),
            s.Observed("successes", s.Binomial(s.Var("trials"), s.Var("rates")), ("variant",)),
        ),
        description="Hierarchical Beta-Binomial: p(a, b) ~ (a+b)^-2.5, rates ~ Beta(a, b).",
    )


def dataset_from_counts(variants, trials, successes, source: str) -> s.Dataset:
    return s.Dataset(
        values={"trials": np.asarray(trials, dtype=np.int64), "successes": np.asarray(successes, dtype=np.int64)},
        coords={"variant": tuple(variants)},
        source=source,
    )


def read_csv(path: Path) -> s.Dataset:
    table = csvdata.read_table(path, [COLUMNS])
    rows = table.rows
    variants = csvdata.unique_labels([r["variant"] for r in rows], "variant")
    trials, successes = [], []
    for row in rows:
        n = csvdata.integer(row["trials"], minimum=0, what="a non-negative whole number of trials")
        if n == 0:
            raise row["trials"].error("is zero; every variant needs at least one trial")
        k = csvdata.integer(row["successes"], minimum=0, what="a non-negative whole number of successes")
        if k > n:
            raise row["successes"].error(f"is above the {n} trials of line {row['trials'].line}")
        trials.append(n)
        successes.append(k)
    if len(variants) < 2:
        raise UserError(f"{path}: {len(variants)} variant; a comparison needs at least two")
    return dataset_from_counts(variants, trials, successes, f"file {path}")


def decisions(posterior: "xr.Dataset") -> DecisionDraws:
    rates = posterior["rates"]
    labels = [str(v) for v in rates["variant"].values]
    values = rates.transpose("chain", "draw", "variant").values
    beats = {
        f"{labels[i]}>{labels[j]}": (values[..., i] > values[..., j]).astype(float)
        for i, j in permutations(range(len(labels)), 2)
    }
    best_index = values.argmax(axis=-1)
    best = {label: (best_index == i).astype(float) for i, label in enumerate(labels)}
    return {"prob_beats": beats, "prob_best": best}


def _seed(variants: str, trials: list[int], successes: list[int], name: str) -> Scenario:
    return Scenario(
        f"{', '.join(variants)} with {'/'.join(map(str, trials))} trials and {'/'.join(map(str, successes))} successes",
        lambda: dataset_from_counts(list(variants), trials, successes, f"scenario {name}"),
    )


MODEL = BuiltinModel(
    name="beta-binomial",
    description="Hierarchical Beta-Binomial for multi-variant A/B tests, hyperprior (a+b)^-2.5",
    parametrizations=("positive", "seed"),
    scenarios={
        "four-variants": _seed("ABCD", [100] * 4, [30, 50, 55, 60], "four-variants"),
        "small-a": _seed("ABCD", [10, 100, 100, 100], [3, 50, 55, 60], "small-a"),
        "two-variants": _seed("AB", [100, 100], [30, 50], "two-variants"),
    },
    build=build,
    read_csv=read_csv,
    csv_layouts=(",".join(COLUMNS),),
    decisions=decisions,
)
