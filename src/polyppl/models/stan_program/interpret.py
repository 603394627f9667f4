"""Stan statements and expressions run with NumPy, on data only: the sizes of declarations,
the ``transformed data`` block (run once, loops and conditionals included), and the
conditions and loop bounds of the other blocks, which must depend on data alone.

Values follow Stan's: ints are Python ints (or int64 arrays), reals floats, vectors and
matrices float arrays; indexing is 1-based. What this interpreter cannot run is a
:class:`Unsupported` naming the construct and its line.
"""

from __future__ import annotations

import math
from typing import Callable, Mapping

import numpy as np
from scipy import special

from polyppl.models.stan_program.parse import (
    ArrayExpr, Assign, Decl, FnCall, For, If, Indexed, Name, Num, Op, Slice, StanExpr, StanType, Statement, Ternary,
    While,
)


class Unsupported(Exception):
    """A construct outside what polyppl lowers for PyMC and NumPyro, with its line."""

    def __init__(self, line: int, what: str) -> None:
        super().__init__(f"line {line}: {what}")
        self.line, self.what = line, what


def _sd(x):
    return float(np.std(np.asarray(x, dtype=float), ddof=1))


#: Stan's functions of data, by name.
FUNCTIONS: dict[str, Callable] = {
    "mean": lambda x: float(np.mean(x)), "sd": _sd, "variance": lambda x: float(np.var(np.asarray(x, float), ddof=1)),
    "sum": lambda x: np.sum(x).item(), "prod": lambda x: np.prod(x).item(),
    "min": lambda *a: np.min(a[0]).item() if len(a) == 1 else min(a), "max": lambda *a: np.max(a[0]).item() if len(a) == 1 else max(a),
    "log": np.log, "exp": np.exp, "sqrt": np.sqrt, "square": np.square, "log1p": np.log1p, "expm1": np.expm1,
    "inv_logit": special.expit, "logit": special.logit, "inv": lambda x: 1.0 / np.asarray(x, float),
    "fabs": np.abs, "abs": np.abs, "pow": np.power, "log10": np.log10, "log2": np.log2, "floor": np.floor,
    "ceil": np.ceil, "round": np.round, "lgamma": special.gammaln, "tanh": np.tanh, "sin": np.sin, "cos": np.cos,
    "size": lambda x: int(np.shape(x)[0]) if np.ndim(x) else 1, "num_elements": lambda x: int(np.size(x)),
    "rows": lambda x: int(np.shape(x)[0]), "cols": lambda x: int(np.shape(x)[1]) if np.ndim(x) > 1 else int(np.size(x)),
    "to_vector": lambda x: np.ravel(np.asarray(x, float), order="F"), "to_row_vector": lambda x: np.ravel(np.asarray(x, float), order="F"),
    "to_array_1d": lambda x: np.ravel(x), "to_int": lambda x: np.asarray(x).astype(np.int64),
    "rep_vector": lambda v, n: np.full(int(n), float(v)), "rep_row_vector": lambda v, n: np.full(int(n), float(v)),
    "rep_array": lambda v, *n: np.full(tuple(int(k) for k in n), v), "rep_matrix": lambda v, m, n: np.full((int(m), int(n)), float(v)),
    "dot_product": lambda a, b: float(np.dot(a, b)), "dot_self": lambda a: float(np.dot(a, a)),
    "append_row": lambda a, b: np.concatenate([np.atleast_1d(a), np.atleast_1d(b)]) if np.ndim(a) < 2 else np.vstack([a, b]),
    "append_col": lambda a, b: np.column_stack([a, b]), "cumulative_sum": np.cumsum, "log_sum_exp": special.logsumexp,
    "sort_asc": np.sort, "sort_desc": lambda x: -np.sort(-np.asarray(x)), "int_step": lambda x: int(x > 0),
    "is_inf": lambda x: int(np.isinf(x)), "is_nan": lambda x: int(np.isnan(x)),
    "negative_infinity": lambda: -math.inf, "positive_infinity": lambda: math.inf, "not_a_number": lambda: math.nan,
    "pi": lambda: math.pi, "e": lambda: math.e, "machine_precision": lambda: float(np.finfo(float).eps),
    "diag_matrix": np.diag, "diagonal": np.diag, "identity_matrix": lambda n: np.eye(int(n)),
    "linspaced_vector": lambda n, a, b: np.linspace(a, b, int(n)), "one_hot_int_array": None,
    "col": lambda m, j: np.asarray(m)[:, int(j) - 1], "row": lambda m, i: np.asarray(m)[int(i) - 1],
    "transpose": np.transpose, "log_inv_logit": lambda x: -np.logaddexp(0, -np.asarray(x, float)),
}


def _is_int(value) -> bool:
    return isinstance(value, (int, np.integer)) or (isinstance(value, np.ndarray) and value.dtype.kind in "iub")


def _binary(op: str, a, b, line: int):
    if op in ("+", "-", ".*", "./", "%", "^", ".^", "==", "!=", "<", "<=", ">", ">=", "&&", "||", "%/%"):
        if op == "/" or op == "./":
            pass
        result = {
            "+": lambda: np.add(a, b), "-": lambda: np.subtract(a, b), ".*": lambda: np.multiply(a, b),
            "./": lambda: np.divide(a, b), "%": lambda: np.fmod(a, b), "%/%": lambda: int(a / b),
            "^": lambda: np.power(np.asarray(a, float), b), ".^": lambda: np.power(np.asarray(a, float), b),
            "==": lambda: np.equal(a, b), "!=": lambda: np.not_equal(a, b), "<": lambda: np.less(a, b),
            "<=": lambda: np.less_equal(a, b), ">": lambda: np.greater(a, b), ">=": lambda: np.greater_equal(a, b),
            "&&": lambda: np.logical_and(a, b), "||": lambda: np.logical_or(a, b),
        }[op]()
        if op in ("==", "!=", "<", "<=", ">", ">=", "&&", "||"):
            return np.asarray(result).astype(np.int64) if np.ndim(result) else int(result)
        return result.item() if isinstance(result, np.ndarray) and result.ndim == 0 else result
    if op == "*":
        if np.ndim(a) == 0 or np.ndim(b) == 0:
            return np.multiply(a, b)
        if np.ndim(a) == 1 and np.ndim(b) == 1:
            raise Unsupported(line, "a product of two vectors in data (row or column is not tracked); use dot_product")
        return np.asarray(a, float) @ np.asarray(b, float)
    if op == "/":
        if _is_int(a) and _is_int(b) and np.ndim(a) == 0 and np.ndim(b) == 0:
            return int(a / b)  # Stan's integer division truncates
        return np.divide(a, b)
    raise Unsupported(line, f"the operator {op} in data")


def index_position(value, line: int) -> int:
    """A 1-based Stan index as a 0-based position."""
    if not _is_int(value) or np.ndim(value):
        raise Unsupported(line, "an index that is not a single integer")
    return int(value) - 1


def _positions(index, env, line: int):
    if isinstance(index, Slice):
        lower = 0 if index.lower is None else int(evaluate(index.lower, env)) - 1
        upper = None if index.upper is None else int(evaluate(index.upper, env))
        return slice(lower, upper)
    value = evaluate(index, env)
    if np.ndim(value):
        return np.asarray(value, dtype=np.int64) - 1  # a multi-index
    return index_position(value, line)


def evaluate(expr: StanExpr, env: Mapping[str, object]):
    """The value of an expression of data (``env``: name -> value)."""
    if isinstance(expr, Num):
        return int(expr.value) if expr.is_int else expr.value
    if isinstance(expr, Name):
        if expr.name not in env:
            raise Unsupported(expr.line, f"{expr.name} is not data here (this needs a value known before sampling)")
        return env[expr.name]
    if isinstance(expr, Indexed):
        base = np.asarray(evaluate(expr.base, env))
        positions = tuple(_positions(i, env, expr.line) for i in expr.indexes)
        out = base[positions]
        return out.item() if isinstance(out, np.ndarray) and out.ndim == 0 else out
    if isinstance(expr, Op):
        if len(expr.args) == 1:
            value = evaluate(expr.args[0], env)
            return {"neg": lambda v: -v, "!": lambda v: int(not v), "'": np.transpose}[expr.op](value)
        return _binary(expr.op, evaluate(expr.args[0], env), evaluate(expr.args[1], env), expr.line)
    if isinstance(expr, Ternary):
        return evaluate(expr.if_true if evaluate(expr.condition, env) else expr.if_false, env)
    if isinstance(expr, ArrayExpr):
        return np.array([evaluate(i, env) for i in expr.items])
    if isinstance(expr, FnCall):
        function = FUNCTIONS.get(expr.name)
        if function is None:
            raise Unsupported(expr.line, f"{expr.name} is not supported in data")
        return function(*(evaluate(a, env) for a in expr.args))
    raise Unsupported(getattr(expr, "line", 0), f"{type(expr).__name__} in data")


def shape_of(stan_type: StanType, env: Mapping[str, object]) -> tuple[int, ...]:
    """The shape of a declared type: array sizes, then the vector or matrix shape."""
    sizes = tuple(int(evaluate(e, env)) for e in stan_type.array_sizes)
    shape = tuple(int(evaluate(e, env)) for e in stan_type.shape)
    if stan_type.base in ("cholesky_factor_corr", "corr_matrix", "cov_matrix") or (
            stan_type.base == "cholesky_factor_cov" and len(shape) == 1):
        shape = (shape[0], shape[0])
    return sizes + shape


def initial_value(stan_type: StanType, env: Mapping[str, object]):
    """A declared variable before assignment: NaN for reals (as Stan), 0 for ints (Stan leaves them unset)."""
    shape = shape_of(stan_type, env)
    if stan_type.base == "int":
        return np.zeros(shape, dtype=np.int64) if shape else 0
    return np.full(shape, np.nan) if shape else math.nan


def run(statements: tuple[Statement, ...], env: dict[str, object]) -> None:
    """Run statements on data, updating ``env`` in place."""
    for statement in statements:
        _run_one(statement, env)


def _run_one(statement: Statement, env: dict[str, object]) -> None:
    if isinstance(statement, Decl):
        env[statement.name] = (_cast(evaluate(statement.value, env), statement.type) if statement.value is not None
                               else initial_value(statement.type, env))
    elif isinstance(statement, Assign):
        _assign(statement, env)
    elif isinstance(statement, For):
        if statement.end is None:
            for item in np.asarray(evaluate(statement.start, env)):
                env[statement.variable] = item.item()
                run(statement.body, env)
        else:
            for i in range(int(evaluate(statement.start, env)), int(evaluate(statement.end, env)) + 1):
                env[statement.variable] = i
                run(statement.body, env)
        env.pop(statement.variable, None)
    elif isinstance(statement, While):
        while evaluate(statement.condition, env):
            run(statement.body, env)
    elif isinstance(statement, If):
        run(statement.then if evaluate(statement.condition, env) else statement.otherwise, env)
    else:
        kind = getattr(statement, "kind", type(statement).__name__)
        raise Unsupported(statement.line, f"{kind} in transformed data")


def _cast(value, stan_type: StanType):
    # A copy: a later element assignment must not change the variable it was copied from.
    if stan_type.base == "int":
        return np.array(value, dtype=np.int64) if np.ndim(value) else int(value)
    return np.array(value, dtype=float) if np.ndim(value) else float(value)


def _assign(statement: Assign, env: dict[str, object]) -> None:
    target, line = statement.target, statement.line
    value = evaluate(statement.value, env)
    if statement.op != "=":
        current = evaluate(target, env)
        value = _binary(statement.op[:-1], current, value, line)
    if isinstance(target, Name):
        old = env.get(target.name)
        is_int = _is_int(old)
        env[target.name] = (np.asarray(value).astype(np.int64) if np.ndim(value) else int(value)) if is_int else (
            np.asarray(value, dtype=float) if np.ndim(value) else float(value))
        return
    if isinstance(target, Indexed) and isinstance(target.base, Name):
        array = env[target.base.name]
        positions = tuple(_positions(i, env, line) for i in target.indexes)
        array[positions] = value
        return
    raise Unsupported(line, "an assignment to this kind of expression")
