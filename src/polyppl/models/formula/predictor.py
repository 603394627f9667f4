"""The cells' linear predictor: the population part and each group term's effect per cell.

Written one of two ways by size (see :func:`_linear_predictor`): one dense design of the
population columns and the group effects, or the group effects gathered per cell. A module
of its own so that a test can move the threshold (:data:`DENSE_GROUP_EFFECTS`) and check
that both ways give the same density.
"""

from __future__ import annotations

from typing import Callable

import numpy as np

from polyppl import spec as s


#: Largest design, cells x (design columns + group effects), written as one dense matrix.
DENSE_DESIGN_ENTRIES = 1_000_000
#: Most group effects written as columns of the dense design.
DENSE_GROUP_EFFECTS = 64


def _linear_predictor(population: tuple[np.ndarray, str, s.Expr] | None,
                      group_columns: list[tuple[str, np.ndarray, np.ndarray]], coords: dict[str, tuple],
                      coefficient: str, n_cells: int, add_data: Callable[[s.Data, np.ndarray], s.Var]) -> s.Expr:
    """The cells' linear predictor: ``X b`` plus, for each group term, its effect in each
    cell's level times the term's covariate.

    A small model (the usual A/B test: a few cells and a few dozen group effects) gets one
    dense design of the population columns and one column per group effect, ``XZ *
    concat(b, r)``: a product of a data matrix by a vector, whose gradient costs a few
    floating-point operations per entry, where each gathered effect costs an operation of
    automatic differentiation per cell (on Stan the seed's model drops from 7% above the
    built-in model's instructions per gradient to 3% below). A larger one keeps the
    gathers, ``X b + r[J_1] + Z_2 .* r[J_2] + ...``, whose cost grows with the cells alone."""
    n_effects = len(coords.get("group_effect", ()))
    n_population = population[0].shape[1] if population is not None else 0
    if group_columns and n_effects <= DENSE_GROUP_EFFECTS \
            and n_cells * (n_population + n_effects) <= DENSE_DESIGN_ENTRIES:
        design = np.zeros((n_cells, n_population + n_effects))
        for _, effect, value in group_columns:
            np.add.at(design, (np.arange(n_cells), n_population + effect), value)
        if population is None:  # the columns are the group effects themselves
            return s.matmul(add_data(s.Data("XZ", "real", ("cell", "group_effect")), design), s.Var(coefficient))
        values, dim, coefficients = population
        design[:, :n_population] = values
        coords["design"] = (*(f"b[{c}]" for c in coords[dim]), *(f"{coefficient}[{e}]" for e in coords["group_effect"]))
        return s.matmul(add_data(s.Data("XZ", "real", ("cell", "design")), design),
                        s.concat("design", coefficients, s.Var(coefficient)))
    eta = None
    if population is not None:
        values, dim, coefficients = population
        eta = s.matmul(add_data(s.Data("X", "real", ("cell", dim)), values), coefficients)
    for name, effect, value in group_columns:
        term = s.Var(coefficient)[add_data(s.Data(f"J_{name}", "int", ("cell",), index_of="group_effect"), effect)]
        if not np.all(value == 1.0):  # an intercept term needs no covariate
            term = add_data(s.Data(f"Z_{name}", "real", ("cell",)), value) * term
        eta = term if eta is None else eta + term
    if eta is None:
        raise AssertionError("a formula has a population or a group part")
    return eta
