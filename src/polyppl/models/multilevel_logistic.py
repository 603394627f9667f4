"""Varying-intercept, varying-slope multilevel logistic regression (the seed's second model).

    mu_a, mu_b ~ StudentT(3, 0, 1)        sigma_a, sigma_b ~ HalfNormal(1)
    a[g] ~ Normal(mu_a, sigma_a)          b[g] ~ Normal(mu_b, sigma_b)
    success ~ Bernoulli(inv_logit(a[g] + b[g] * treated))
    a_inv = inv_logit(a),  fin = inv_logit(a + b)

Parametrizations: ``noncentered`` (the default: a = mu_a + sigma_a * a_z) and ``centered``
(the seed's). With two groups the centered form is a funnel: thousands of divergences and
unconverged chains on every backend (`polyppl repro centered-funnel`).

Every row of one (group, treated) cell has the same success probability, so row-level
data compresses to counts per cell with a Binomial likelihood: the same posterior (the
Bernoulli and Binomial likelihoods differ by a constant) at the cost of four terms
instead of one per row. Row-level data keeps the Bernoulli form when asked.
"""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING, Mapping

import numpy as np

from polyppl import spec as s
from polyppl.errors import UserError
from polyppl.models import csvdata
from polyppl.models.base import BuiltinModel, Problem, Scenario, ShrinkagePanel, SweepLine, Sweeps, rates_panel, stack_draws

if TYPE_CHECKING:
    import xarray as xr

ROW_COLUMNS = ("group", "treated", "success")
CELL_COLUMNS = ("group", "treated", "trials", "successes")


def build(parametrization: str, dataset: s.Dataset) -> s.Model:
    row_level = "success" in dataset.values
    dim = "obs" if row_level else "cell"
    a, b, group, treated = s.Var("a"), s.Var("b"), s.Var("group_idx"), s.Var("treated")
    logit_p = a[group] + b[group] * treated
    if row_level:
        data = [s.Data("group_idx", "int", (dim,), index_of="group"), s.Data("treated", "int", (dim,), 0, 1)]
        likelihood = s.Observed("success", s.BernoulliLogit(logit_p), (dim,))
    else:
        data = [
            s.Data("group_idx", "int", (dim,), index_of="group"),
            s.Data("treated", "int", (dim,), 0, 1),
            s.Data("trials", "int", (dim,), lower=1),
        ]
        likelihood = s.Observed("successes", s.BinomialLogit(s.Var("trials"), logit_p), (dim,))
    model = s.Model(
        "multilevel-logistic",
        (
            *data,
            s.Param("mu_a", s.StudentT(3.0, 0.0, 1.0)),
            s.Param("sigma_a", s.HalfNormal(1.0)),
            s.Param("mu_b", s.StudentT(3.0, 0.0, 1.0)),
            s.Param("sigma_b", s.HalfNormal(1.0)),
            s.Param("a", s.Normal(s.Var("mu_a"), s.Var("sigma_a")), ("group",)),
            s.Param("b", s.Normal(s.Var("mu_b"), s.Var("sigma_b")), ("group",)),
            s.Deterministic("a_inv", s.inv_logit(a), ("group",)),
            s.Deterministic("fin", s.inv_logit(a + b), ("group",)),
            likelihood,
            s.prob("prob_treatment_better", s.Var("fin") > s.Var("a_inv"), ("group",),
                   "P(treatment better than control)"),
        ),
        description="Varying-intercept, varying-slope logistic regression: group x treated.",
    )
    if parametrization == "noncentered":
        # The model asks for target acceptance 0.95: at the default 0.9, PyMC's NUTS diverged
        # on the seed's data at 14 of 30 seeds (PyMC 5.28) and at 3 of 4 (PyMC 6.3; seed 1:
        # 112 divergences, one chain stuck, R-hat 1.10); at 0.95 seed 1 is clean on every
        # backend (2026-12-07). The cost is about a third more gradients per draw.
        model = replace(s.noncentered(model, ["a", "b"]), target_accept=0.95)
    return model


def cells_dataset(groups, group_index, treated, trials, successes, source: str) -> s.Dataset:
    return s.Dataset(
        values={
            "group_idx": np.asarray(group_index, dtype=np.int64),
            "treated": np.asarray(treated, dtype=np.int64),
            "trials": np.asarray(trials, dtype=np.int64),
            "successes": np.asarray(successes, dtype=np.int64),
        },
        coords={"group": tuple(groups), "cell": tuple(f"{groups[g]}:{t}" for g, t in zip(group_index, treated))},
        source=source,
    )


def rows_dataset(groups, group_index, treated, success, source: str) -> s.Dataset:
    return s.Dataset(
        values={
            "group_idx": np.asarray(group_index, dtype=np.int64),
            "treated": np.asarray(treated, dtype=np.int64),
            "success": np.asarray(success, dtype=np.int64),
        },
        coords={"group": tuple(groups), "obs": tuple(range(len(group_index)))},
        source=source,
    )


def aggregate(rows: s.Dataset) -> s.Dataset:
    """Compress row-level data to successes and trials per (group, treated) cell."""
    g, t, y = (np.asarray(rows.values[k]) for k in ("group_idx", "treated", "success"))
    return _cells_from_rows(rows.coords["group"], g, t, y, rows.source)


def _cells_from_rows(groups, g: np.ndarray, t: np.ndarray, y: np.ndarray, source: str) -> s.Dataset:
    cell = g * 2 + t
    trials = np.bincount(cell, minlength=2 * len(groups))
    successes = np.bincount(cell, weights=y, minlength=2 * len(groups)).astype(np.int64)
    present = np.flatnonzero(trials)
    return cells_dataset(groups, present // 2, present % 2, trials[present], successes[present], source)


def _read_rows_fast(path: Path, row_level: bool) -> s.Dataset | None:
    """Whole-column reading of a clean row-level file: ten million rows in seconds, where the
    line-by-line reader takes minutes. Returns None at the first sign of trouble, so that the
    careful reader below finds the offending line and names it."""
    import pandas as pd

    try:
        frame = pd.read_csv(path, dtype=str, keep_default_na=False, na_filter=False, encoding="utf-8-sig")
    except (ValueError, UnicodeDecodeError, pd.errors.ParserError):
        return None
    if len(frame.columns) != len(ROW_COLUMNS) or set(frame.columns) != set(ROW_COLUMNS):
        return None
    treated, success, group = frame["treated"], frame["success"], frame["group"]
    if not (len(frame) and treated.isin(("0", "1")).all() and success.isin(("0", "1")).all() and (group != "").all()):
        return None
    codes, labels = pd.factorize(group)  # labels in order of first appearance
    g = codes.astype(np.int64)
    t = (treated == "1").to_numpy(np.int64)
    y = (success == "1").to_numpy(np.int64)
    if len(labels) < 2 or len(np.unique(g * 2 + t)) != 2 * len(labels):
        return None  # fewer than two groups, or a group without both arms
    if row_level:
        return rows_dataset(list(labels), g, t, y, f"file {path}")
    return _cells_from_rows(tuple(labels), g, t, y, f"file {path}")


def read_csv(path: Path, row_level: bool = False) -> s.Dataset:
    """Read row-level (``group,treated,success``) or aggregated data. Row-level data is
    compressed to counts per cell unless ``row_level``."""
    if Path(path).is_file() and (fast := _read_rows_fast(Path(path), row_level)) is not None:
        return fast
    table = csvdata.read_table(path, [ROW_COLUMNS, CELL_COLUMNS])
    group_names: dict[str, int] = {}
    group_index, treated, arms = [], [], {}
    cell_lines: dict[tuple[int, int], int] = {}
    for row in table.rows:
        name = csvdata.label(row["group"])
        g = group_names.setdefault(name, len(group_names))
        t = csvdata.integer(row["treated"], what="0 (control) or 1 (treated)")
        if t not in (0, 1):
            raise row["treated"].error("is not 0 or 1; expected 0 (control) or 1 (treated)")
        if table.columns == CELL_COLUMNS:
            if (g, t) in cell_lines:
                raise row["group"].error(f"with treated={t} repeats the cell of line {cell_lines[g, t]}; each cell must appear once")
            cell_lines[g, t] = row["group"].line
        group_index.append(g)
        treated.append(t)
        arms.setdefault(name, set()).add(t)
    if len(group_names) < 2:
        raise UserError(f"{path}: {len(group_names)} group; a multilevel model needs at least two groups")
    for name, seen in arms.items():
        if seen != {0, 1}:
            missing = "treated (1)" if 1 not in seen else "control (0)"
            raise UserError(f"{path}: group {name!r} has no {missing} rows; every group needs both arms")
    groups = list(group_names)
    if table.columns == ROW_COLUMNS:
        success = [csvdata.integer(r["success"], what="0 or 1") for r in table.rows]
        for row, value in zip(table.rows, success):
            if value not in (0, 1):
                raise row["success"].error("is not 0 or 1; expected 0 (failure) or 1 (success)")
        rows = rows_dataset(groups, group_index, treated, success, f"file {path}")
        return rows if row_level else aggregate(rows)
    trials, successes = [], []
    for row in table.rows:
        n = csvdata.integer(row["trials"], minimum=0, what="a non-negative whole number of trials")
        if n == 0:
            raise row["trials"].error("is zero; every cell needs at least one trial")
        k = csvdata.integer(row["successes"], minimum=0, what="a non-negative whole number of successes")
        if k > n:
            raise row["successes"].error(f"is above the {n} trials of line {row['trials'].line}")
        trials.append(n)
        successes.append(k)
    return cells_dataset(groups, group_index, treated, trials, successes, f"file {path}")


def seed_rows(n: int = 100, successes=(30, 50, 55, 60)) -> s.Dataset:
    """The seed's data frame: Canada control/treated, China control/treated, n rows each."""
    group_index = np.repeat([0, 0, 1, 1], n)
    treated = np.tile(np.repeat([0, 1], n), 2)
    success = np.concatenate([(np.arange(n) < k).astype(np.int64) for k in successes])
    return rows_dataset(["Canada", "China"], group_index, treated, success, "scenario seed")


def shrinkage(problem: Problem, posteriors: Mapping[str, xr.Dataset]) -> ShrinkagePanel:
    """A cell's success probability is a_inv (control) or fin (treated) of its group."""
    cells = aggregate(problem.dataset) if "success" in problem.dataset.values else problem.dataset
    group_idx, treated = (np.asarray(cells.values[k]) for k in ("group_idx", "treated"))
    groups = [str(g) for g in cells.coords["group"]]
    labels = [f"{groups[g]} {'treated' if t else 'control'}" for g, t in zip(group_idx, treated)]
    draws = {name: np.where(treated == 1, stack_draws(p["fin"])[:, group_idx], stack_draws(p["a_inv"])[:, group_idx])
             for name, p in posteriors.items()}
    return rates_panel(labels, cells.values["trials"], cells.values["successes"], draws, "cells")


def synthetic(sizes: dict[str, int], form: str = "counts", seed: int = 0) -> s.Dataset:
    """Counts per (group, treated) cell: intercepts ~ N(-0.5, 0.5), effects ~ N(0.3, 0.3).
    ``form="rows"``: the same data as one row per trial (successes first in each cell)."""
    groups, rows_per_cell = sizes["groups"], sizes["rows_per_cell"]
    rng = np.random.default_rng(seed)
    a, b = rng.normal(-0.5, 0.5, groups), rng.normal(0.3, 0.3, groups)
    group_index, treated = np.repeat(np.arange(groups), 2), np.tile([0, 1], groups)
    p = 1 / (1 + np.exp(-(a[group_index] + b[group_index] * treated)))
    trials = np.full(2 * groups, rows_per_cell)
    successes = rng.binomial(trials, p)
    names = [f"g{i}" for i in range(groups)]
    source = f"synthetic, {groups} groups x {rows_per_cell} rows per cell"
    if form == "rows":
        success = np.concatenate([np.arange(n) < k for n, k in zip(trials, successes)]).astype(np.int64)
        return rows_dataset(names, np.repeat(group_index, trials), np.repeat(treated, trials), success, source)
    return cells_dataset(names, group_index, treated, trials, successes, source)


def _line(groups: int, rows_per_cell: int, form: str = "counts") -> SweepLine:
    return SweepLine({"groups": groups, "rows_per_cell": rows_per_cell}, form)


MODEL = BuiltinModel(
    name="multilevel-logistic",
    description="Varying-intercept, varying-slope logistic regression (group x treated)",
    parametrizations=("noncentered", "centered"),
    scenarios={
        "seed": Scenario(
            "Canada/China, 100 rows per cell: 30, 50, 55, 60 successes (control/treated), as counts per cell",
            lambda: aggregate(seed_rows()),
        ),
        "seed-rows": Scenario("the seed's 400 rows, one Bernoulli term per row", seed_rows),
    },
    build=build,
    read_csv=read_csv,
    csv_layouts=(",".join(ROW_COLUMNS), ",".join(CELL_COLUMNS)),
    shrinkage=shrinkage,
    sweeps=Sweeps(
        size_names=("groups", "rows_per_cell"),
        synthetic=synthetic,
        quick=tuple(_line(g, 1000) for g in (2, 16, 128)),
        full=(
            *(_line(g, 1000) for g in (2, 8, 32, 128, 512, 2048)),
            *(_line(8, n) for n in (100, 10_000, 100_000)),
            # The row-level model costs one term per row: PyMC took 12.5 minutes at 3,000
            # rows per cell (48,000 rows); 10,000 per cell would take about 40, 100,000 hours.
            *(_line(8, n, "rows") for n in (100, 300, 1_000, 3_000)),
        ),
    ),
)
