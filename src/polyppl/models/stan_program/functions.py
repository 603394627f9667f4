"""A program's own functions (its ``functions`` block), inlined where they are called.

A call ``f(a, b)`` lowers ``f``'s body once, there, with its arguments standing for the
values passed (their spec expressions, vectors included): local variables, loops and
assignments as anywhere else, an ``if`` on arguments that are data (or integers known now)
taken at lowering time, and the value of the first ``return`` reached. A user density
``foo_lpdf`` is a term wherever it is used (``y ~ foo(...)``, ``target += foo_lpdf(y | ...)``).
What the body does beyond the subset (an ODE solver, a recursive call) names its own line.
"""

from __future__ import annotations


import numpy as np

from polyppl import spec as s
from polyppl.models.stan_program.interpret import Unsupported
from polyppl.models.stan_program.parse import FnCall, FunctionDef, If, Name, Return, Statement
from polyppl.models.stan_program.symbols import unsupported



def definitions(program) -> dict[str, FunctionDef]:
    """The program's functions with a body, by name (a forward declaration adds nothing)."""
    return {f.name: f for f in program.functions if f.body is not None}


def is_user_density(lw, name: str) -> bool:
    """``name`` (``foo`` of ``y ~ foo(...)``, or ``foo_lpdf``) is a density the program defines."""
    functions = lw.user_functions
    return name in functions and name.endswith(("_lpdf", "_lpmf", "_lupdf", "_lupmf")) or any(
        f"{name}{suffix}" in functions for suffix in ("_lpdf", "_lpmf"))


def density_call(lw, name: str, value, args: tuple, line: int) -> FnCall:
    """``y ~ foo(a, b)`` as the call ``foo_lpdf(y | a, b)`` of the program's own density."""
    for suffix in ("_lpdf", "_lpmf"):
        if f"{name}{suffix}" in lw.user_functions:
            return FnCall(f"{name}{suffix}", (value, *args), line, conditional=True)
    raise unsupported(line, f"the distribution {name}")


def inline(lw, call: FnCall):
    """The value (a Sym) of a call of one of the program's functions."""
    definition = lw.user_functions[defined_name(lw, call.name)]
    if definition.name in lw.calling:
        raise unsupported(call.line, f"the recursive call of {definition.name}")
    if len(call.args) != len(definition.args):
        raise unsupported(call.line, f"{definition.name} called with {len(call.args)} arguments")
    values = [lw._expr(a) for a in call.args]
    names = [name for _, name in definition.args]
    saved_syms, saved_declared = lw.syms, dict(lw.declared)
    saved_values = {n: lw.values[n] for n in names if n in lw.values}
    lw.syms = dict(zip(names, values))
    for name, value in zip(names, values):
        known = _known(lw, value)
        if known is not None:
            lw.values[name] = known  # a data argument: conditions and loop bounds read it
        elif value.dims[value.nloop:]:
            lw.values[name] = ShapeOnly(tuple(lw.dim_sizes[d] for d in value.dims[value.nloop:]), name)
        else:
            lw.values.pop(name, None)
    lw.calling.append(definition.name)
    try:
        result = _run(lw, definition.body, definition)
    finally:
        lw.calling.pop()
        lw.syms, lw.declared = saved_syms, saved_declared
        for name in names:
            lw.values.pop(name, None)
        lw.values.update(saved_values)
    if result is None:
        raise unsupported(definition.line, f"{definition.name} returns no value")
    return replace_whole(result)


def defined_name(lw, name: str) -> str:
    """``foo_lupdf`` calls the program's ``foo_lpdf`` (Stan defines one, calls both)."""
    if name in lw.user_functions:
        return name
    for short, full in (("_lupdf", "_lpdf"), ("_lupmf", "_lpmf")):
        if name.endswith(short) and name[: -len(short)] + full in lw.user_functions:
            return name[: -len(short)] + full
    return name


#: Stan's solvers, which take a function as an argument: outside the subset, by name.
SOLVERS = ("ode_", "integrate_ode", "algebra_solver", "solve_", "integrate_1d", "map_rect", "reduce_sum", "dae")


def check_not_a_solver(name: str, line: int) -> None:
    if name.startswith(SOLVERS):
        raise unsupported(line, f"the solver {name}")


def check_no_solver(tree: object) -> None:
    """Refuse, by name and line, the first solver call anywhere in ``tree`` (a program's
    blocks): a solver is the reason such a program is outside the subset, whatever else in
    it would stop the lowering first (one_comp_mm_elim_abs packs the ODE's parameters into an
    array a line before it calls ``integrate_ode_bdf``)."""
    from dataclasses import fields, is_dataclass

    from polyppl.models.stan_program.parse import FnCall

    if isinstance(tree, FnCall):
        check_not_a_solver(tree.name, tree.line)
    if isinstance(tree, (tuple, list)):
        for item in tree:
            check_no_solver(item)
    elif is_dataclass(tree) and not isinstance(tree, type):
        for f in fields(tree):
            check_no_solver(getattr(tree, f.name))


def replace_whole(value):
    from dataclasses import replace

    return replace(value, whole=None)


def size_dim(lw, size_expr) -> str | None:
    """The dim a size such as ``rows(v)`` names, where ``v`` is a value of the lowering (a
    function's argument, a parameter): ``vector[rows(v)] out`` has ``v``'s dim."""
    if not (isinstance(size_expr, FnCall) and size_expr.name in ("rows", "size", "num_elements", "cols")
            and len(size_expr.args) == 1 and isinstance(size_expr.args[0], Name)):
        return None
    value = lw.syms.get(size_expr.args[0].name)
    if value is None:
        return None
    own = value.dims[value.nloop:]
    if size_expr.name == "cols":
        return own[1] if len(own) == 2 else (own[0] if len(own) == 1 else None)
    if size_expr.name == "num_elements" and len(own) != 1:
        return None
    return own[0] if own else None


class ShapeOnly:
    """A vector argument that is not data, as the data interpreter sees it: its sizes answer
    ``rows``, ``size``, ``num_elements`` (declarations and loop bounds of the body); any
    other use of its values is a parameter's, not data."""

    def __init__(self, shape: tuple[int, ...], name: str) -> None:
        self.shape, self.ndim, self.size, self.name = shape, len(shape), int(np.prod(shape)), name

    def __array__(self, *args, **kwargs):
        raise Unsupported(0, f"{self.name} is not data here (this needs a value known before sampling)")

    def __getitem__(self, item):
        self.__array__()


def _known(lw, value):
    """An argument's value now, where it is data (an integer, a data variable), else None."""
    if value.int_value is not None:
        return value.int_value
    if isinstance(value.expr, s.Const):
        return value.expr.value
    if isinstance(value.expr, s.Var) and value.expr.name in lw.values and not value.nloop \
            and value.expr.name not in lw.index_nodes:
        return lw.values[value.expr.name]
    return None


def _run(lw, statements: tuple[Statement, ...], definition: FunctionDef):
    """Run a body; the value of the first ``return`` reached (a Sym), or None."""
    for statement in statements:
        if isinstance(statement, Return):
            if statement.value is None:
                return None
            return lw._expr(statement.value)
        if isinstance(statement, If) and _returns(statement):
            condition = lw._data_value_of(statement.condition, "the condition of an if")
            if np.ndim(condition):
                raise unsupported(statement.line, "an if on a vector")
            result = _run(lw, statement.then if condition else statement.otherwise, definition)
            if result is not None:
                return result
            continue
        try:
            lw._statement(statement)
        except Unsupported as error:
            if "Return" in error.what:
                raise unsupported(statement.line, f"a return inside a loop of {definition.name}") from None
            raise
    return None


def _returns(statement: If) -> bool:
    return any(isinstance(st, Return) or (isinstance(st, If) and _returns(st))
               for st in statement.then + statement.otherwise)
