"""A parameter's Stan type and constraint as the spec distribution it is flat on.

Stan samples each constrained type through a transform of its own (``ordered``: the first
value, then the log of each difference; ``simplex``: stick-breaking of K - 1 values;
``<lower=L>``: ``L + exp(u)``; ``<offset=o, multiplier=m>``: ``o + m u``; ...). The spec
has a flat family for each (``FlatOrdered``, ``FlatSimplex``, ``FlatLower``, ...) that every
backend samples through the same transform, so the lowered model and the program share one
unconstrained space. A parameter of such a type takes that family; its ``~`` statements are
factors. Bounds and offsets may be expressions of data and of other parameters.

The plain cases keep the families they had: no bounds (Flat, or the prior's own family),
``<lower=0>`` (HalfFlat, or a half or positive family), two constant bounds (Uniform, or a
Beta on (0, 1)).
"""

from __future__ import annotations

from typing import Callable

import numpy as np

from polyppl import spec as s
from polyppl.models.stan_program.interpret import Unsupported
from polyppl.models.stan_program.parse import Decl, StanExpr, StanType

#: Stan's vector types -> the spec family flat on them.
VECTOR_TYPES = {"ordered": s.FlatOrdered, "positive_ordered": s.FlatPositiveOrdered, "simplex": s.FlatSimplex}
#: Stan's square matrix types -> the spec family flat on them (dims: K and its column dim).
MATRIX_TYPES = {"cholesky_factor_corr": s.FlatCorrCholesky, "cholesky_factor_cov": s.FlatCholeskyFactorCov,
                "cov_matrix": s.FlatCovMatrix, "corr_matrix": s.FlatCorrMatrix}
#: The parameter types the lowering takes: these and real, vector, row_vector, matrix.
PARAMETER_TYPES = frozenset({"real", "vector", "row_vector", "matrix"}) | frozenset(VECTOR_TYPES) \
    | frozenset(MATRIX_TYPES)
#: Stan's matrix types of one size (K x K).
SQUARE_TYPES = frozenset({"cholesky_factor_corr", "cholesky_factor_cov", "corr_matrix", "cov_matrix"})
#: A Stan type -> the kind of value it holds, where it is not its own name.
KINDS = {**{t: "vector" for t in VECTOR_TYPES}, **{t: "matrix" for t in SQUARE_TYPES}}
#: Priors a constrained type keeps as its parameter's own (proper) family: Stan's density -> its family.
PROPER_ON = {"cholesky_factor_corr": {"lkj_corr_cholesky": s.LKJCholesky}}


def square_dims(stan_type: StanType, dims: tuple[str, ...], column_dim: Callable[[str], str]) -> tuple[str, ...]:
    """The dims of a value of ``stan_type``: a square matrix (``cholesky_factor_corr[K]``,
    ``matrix[K, K]``) has its second dim named apart from its first (xarray refuses one dim
    twice), by ``column_dim`` (which also sizes it)."""
    if stan_type.base in SQUARE_TYPES and len(stan_type.shape) == 1:
        dims = dims + dims[-1:]
    if len(stan_type.shape) and len(dims) >= 2 and dims[-1] == dims[-2]:
        dims = dims[:-1] + (column_dim(dims[-1]),)
    return dims


def constrained_dist(decl: Decl, constant: Callable[[StanExpr], object | None],
                     expression: Callable[[StanExpr], s.Expr]) -> s.Dist | None:
    """The flat family of a parameter whose type or constraint is not one of the plain cases,
    or None for the plain cases. ``constant(e)`` is the value of a data-only expression (None
    where it depends on parameters); ``expression(e)`` its spec expression."""
    stan_type = decl.type
    if stan_type.base in MATRIX_TYPES:
        if stan_type.array_sizes:
            raise Unsupported(decl.line, f"an array of {stan_type.base} ({decl.name}) is not supported for "
                              "PyMC and NumPyro")
        if len(stan_type.shape) == 2 and constant(stan_type.shape[0]) != constant(stan_type.shape[1]):
            raise Unsupported(decl.line, f"a {stan_type.base} of more rows than columns ({decl.name}) is not "
                              "supported for PyMC and NumPyro")
        return MATRIX_TYPES[stan_type.base]()
    if stan_type.base in VECTOR_TYPES:
        if stan_type.bounds:
            raise Unsupported(decl.line, f"bounds on a {stan_type.base} ({decl.name})")
        if len(stan_type.array_sizes) > 1:
            raise Unsupported(decl.line, f"an array of more than one dim of {stan_type.base} ({decl.name}) is not "
                              "supported for PyMC and NumPyro")
        return VECTOR_TYPES[stan_type.base]()  # of an array: each vector (the last dim) through the transform
    offset, multiplier = stan_type.bound("offset"), stan_type.bound("multiplier")
    if offset is not None or multiplier is not None:
        return s.FlatAffine(s.Const(0.0) if offset is None else expression(offset),
                            s.Const(1.0) if multiplier is None else expression(multiplier))
    lower, upper = stan_type.bound("lower"), stan_type.bound("upper")
    if lower is None and upper is None:
        return None
    lo = None if lower is None else constant(lower)
    hi = None if upper is None else constant(upper)
    plain_lower = lower is None or (lo is not None and np.ndim(lo) == 0)
    plain_upper = upper is None or (hi is not None and np.ndim(hi) == 0)
    if plain_lower and plain_upper and ((upper is None and lo == 0) or (lower is not None and upper is not None)):
        return None  # HalfFlat or Uniform and their proper kin: lower.py's plain cases
    if upper is None:
        return s.FlatLower(expression(lower))
    if lower is None:
        return s.FlatUpper(expression(upper))
    return s.FlatInterval(expression(lower), expression(upper))
