"""What the lowering of a Stan program and its helpers (``lower.py``, ``loops.py``,
``functions.py``, ``rng.py``) share: a value being lowered (:class:`Sym`), the error for a
construct outside the subset, and what a statement or expression reads and assigns."""

from __future__ import annotations

from dataclasses import dataclass

from polyppl import spec as s
from polyppl.models.stan_program.interpret import Unsupported
from polyppl.models.stan_program.parse import (
    ArrayExpr, Assign, Decl, FnCall, For, If, Indexed, Name, Op, Slice, Statement, Ternary, While,
)

BACKENDS_WORDS = "PyMC and NumPyro"


@dataclass(frozen=True)
class Sym:
    """A value of the program while it is lowered: a spec expression and its dims.

    ``nloop`` leading dims are loops' (the value of one iteration has the rest); ``kind`` is
    the Stan type of one iteration's value; ``whole`` names the Stan variable this value is
    all of (``y``, or ``y[n]`` inside a loop over all of ``y``), for ``~`` statements."""

    expr: s.Expr
    dims: tuple[str, ...]
    kind: str  # scalar, vector, row_vector, matrix, array
    nloop: int = 0
    whole: str | None = None
    int_value: int | None = None  # an integer known now (a constant, int data, an int expression of them)
    int_data: str | None = None  # the int data array this is all of, for indexing


def unsupported(line: int, what: str) -> Unsupported:
    return Unsupported(line, f"{what} is not supported for {BACKENDS_WORDS}")


def element_kind(kind: str, own: tuple[str, ...]) -> str:
    if kind == "matrix":
        return "row_vector"
    if kind == "array" and len(own) > 1:
        return "array"
    return "scalar"


def assigned_names(statement: Statement) -> set[str]:
    """The variables a statement declares or assigns (in its body too)."""
    if isinstance(statement, Decl):
        return {statement.name}
    if isinstance(statement, Assign):
        target = statement.target
        while isinstance(target, Indexed):
            target = target.base
        return {target.name} if isinstance(target, Name) else set()
    if isinstance(statement, (For, While)):
        return set().union(*(assigned_names(s_) for s_ in statement.body))
    if isinstance(statement, If):
        return set().union(*(assigned_names(s_) for s_ in statement.then + statement.otherwise))
    return set()


def names(expr) -> set[str]:
    """The variable names an expression reads (not function names)."""
    if isinstance(expr, Name):
        return {expr.name}
    if isinstance(expr, Indexed):
        return names(expr.base) | set().union(*(names(i) for i in expr.indexes))
    if isinstance(expr, Slice):
        return set().union(*(names(e) for e in (expr.lower, expr.upper) if e is not None))
    if isinstance(expr, (Op, FnCall, ArrayExpr)):
        items = expr.items if isinstance(expr, ArrayExpr) else expr.args
        return set().union(*(names(a) for a in items))
    if isinstance(expr, Ternary):
        return names(expr.condition) | names(expr.if_true) | names(expr.if_false)
    return set()
