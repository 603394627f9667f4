"""Group units: the ``(TERMS | FACTOR)`` blocks as the units the model's group effects come in.

A unit is the terms of one block for one grouping factor (``(1 + x | g1/g2)`` is a unit per
factor), with its levels, each pattern's level, and each term's covariate per pattern. The
terms of a correlated unit share a correlation matrix; a unit's effects take consecutive
positions in ``r``. Each unit gets identifiers for its dims that do not clash with the
model's own node names (:data:`_TAKEN`). For the centered form, :func:`_absorbed_terms`
says which group terms take over a design column.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

import numpy as np

from polyppl.errors import UserError
from polyppl.models.formula.data import _Frame
from polyppl.models.formula.text import ParsedFormula, _formulae_call


#: Node names and dims of the model: a grouping factor's level dim is renamed around them.
_TAKEN = {"X", "b", "sd", "r", "cor", "sigma", "y", "trials", "offsets", "b_predictor", "sd_effect",
          "cell", "coef", "group_term", "group_effect", "group_pair", "predictor",
          "br", "br_column", "br_absorbed", "b_free", "coef_free", "z", "XZ", "design"}


@dataclass
class _Unit:
    """The terms of one block for one grouping factor: correlated with each other (a
    correlated block of two or more terms) or not."""

    factor: str  # as written: country, g1:g2
    uid: str  # identifier: country, g1_g2, country_2
    level_dim: str
    levels: list[str]
    level_of_pattern: np.ndarray
    terms: list[str]
    columns: list[np.ndarray]  # per term, its value in each pattern
    correlated: bool
    offset: int = 0  # position of its first effect in r

    @property
    def term_dim(self) -> str:
        return f"term_{self.uid}"


def _identifier(text: str) -> str:
    name = re.sub(r"[^A-Za-z0-9]+", "_", text).strip("_") or "group"
    return name if name[0].isalpha() else f"g_{name}"


def _group_units(parsed: ParsedFormula, design, patterns, frame: _Frame) -> list[_Unit]:
    import formulae
    import pandas as pd

    units: list[_Unit] = []
    group_terms = design.group.terms if design.group else {}
    claimed: dict[str, str] = {}
    level_cache: dict[str, tuple[list[str], np.ndarray]] = {}
    for block in parsed.blocks:
        description = _formulae_call(formulae.model_description, f"polyppl_response ~ 0 + {block.text}")
        by_factor: dict[str, list[str]] = {}
        for term in description.group_terms:
            if term.name in claimed:
                raise UserError(f"group term {term.name!r} appears in both {claimed[term.name]} and {block.text}")
            claimed[term.name] = block.text
            by_factor.setdefault(term.factor.name, []).append(term.name)
        for factor, names in by_factor.items():
            terms, columns = [], []
            for name in names:
                term = group_terms[name]
                values = np.asarray(term.expr.data, dtype=float)
                values = values.reshape(len(values), -1)
                labels = term.expr.labels if hasattr(term.expr, "labels") else ["Intercept"]
                for j, label in enumerate(labels):
                    terms.append(str(label))
                    columns.append(values[:, j])
            variables = [c.name for c in group_terms[names[0]].factor.components]
            if any(v not in patterns.columns for v in variables):
                raise UserError(f"group term {block.text}: a grouping factor must be columns of the data joined by ':' "
                                f"(e.g. (1 | herd) or (1 | site:herd)), not {factor!r}")
            if factor not in level_cache:
                keys = patterns[variables]
                distinct = keys.drop_duplicates().sort_values(variables).reset_index(drop=True)
                labels = [":".join(str(v) for v in row) for row in distinct.itertuples(index=False)]
                lookup = pd.MultiIndex.from_frame(distinct)
                level = lookup.get_indexer(pd.MultiIndex.from_frame(keys))
                if len(labels) < 2:
                    raise UserError(f"grouping factor {factor!r} has a single level ({labels[0]!r}) in {frame.where}; "
                                    "group-level effects need at least two levels")
                level_cache[factor] = labels, level.astype(np.int64)
            labels, level = level_cache[factor]
            units.append(_Unit(factor, _identifier(factor), _identifier(factor), labels, level, terms, columns,
                               block.correlated and len(terms) > 1))
    unclaimed = sorted(set(group_terms) - set(claimed))
    if unclaimed:
        raise UserError(f"formula: the group term {unclaimed[0]!r} is not written as (TERMS | FACTOR) between "
                        "'+' signs; unsupported syntax")
    # Identifiers: one level dim per factor; units of a factor numbered when there are several.
    seen: dict[str, int] = {}
    used: set[str] = set()
    for unit in units:
        base = unit.uid if unit.uid not in _TAKEN else f"{unit.uid}_level"
        unit.level_dim = base
        count = sum(1 for u in units if u.factor == unit.factor)
        seen[unit.factor] = seen.get(unit.factor, 0) + 1
        unit.uid = base if count == 1 else f"{base}_{seen[unit.factor]}"
        while unit.uid in used:
            unit.uid += "_"
        used.add(unit.uid)
    offset = 0
    for unit in units:
        unit.offset = offset
        offset += len(unit.levels) * len(unit.terms)
    return units


def _absorbed_terms(units: list[_Unit], X_patterns: np.ndarray, x_columns: list[str]) -> dict[tuple[int, int], int]:
    """For the centered form: the group terms (unit, term) that take over a design column,
    the same values in every pattern (each column by the first such term)."""
    taken: dict[tuple[int, int], int] = {}
    for i, u in enumerate(units):
        for t, (term, values) in enumerate(zip(u.terms, u.columns)):
            j = x_columns.index(term) if term in x_columns else None
            if j is not None and j not in taken.values() and np.array_equal(values, X_patterns[:, j]):
                taken[(i, t)] = j
    return taken
