"""Expressions: small trees built with ordinary Python operators; nothing is evaluated here.

``a[group] + b[group] * treated`` builds a tree of :class:`Var`, :class:`Index` and
:class:`Binary` nodes. Each compiler walks the same tree with its own array library
(:func:`evaluate` takes that library's function table).
"""

from __future__ import annotations

import math
import operator
from dataclasses import dataclass
from typing import Callable, Mapping, Union

import numpy as np


class Expr:
    """A node of an expression tree. Operators build new trees; nothing is evaluated."""

    def __add__(self, other: ExprLike) -> Expr:
        return Binary("+", self, as_expr(other))

    def __radd__(self, other: ExprLike) -> Expr:
        return Binary("+", as_expr(other), self)

    def __sub__(self, other: ExprLike) -> Expr:
        return Binary("-", self, as_expr(other))

    def __rsub__(self, other: ExprLike) -> Expr:
        return Binary("-", as_expr(other), self)

    def __mul__(self, other: ExprLike) -> Expr:
        return Binary("*", self, as_expr(other))

    def __rmul__(self, other: ExprLike) -> Expr:
        return Binary("*", as_expr(other), self)

    def __truediv__(self, other: ExprLike) -> Expr:
        return Binary("/", self, as_expr(other))

    def __rtruediv__(self, other: ExprLike) -> Expr:
        return Binary("/", as_expr(other), self)

    def __pow__(self, other: ExprLike) -> Expr:
        return Binary("**", self, as_expr(other))

    def __neg__(self) -> Expr:
        return Call("neg", (self,))

    def __getitem__(self, index: ExprLike) -> Expr:
        return Index(self, as_expr(index))

    # Comparisons build trees too (for `where` and decisions); `==` keeps identity semantics.
    def __le__(self, other: ExprLike) -> Expr:
        return Binary("<=", self, as_expr(other))

    def __lt__(self, other: ExprLike) -> Expr:
        return Binary("<", self, as_expr(other))

    def __ge__(self, other: ExprLike) -> Expr:
        return Binary(">=", self, as_expr(other))

    def __gt__(self, other: ExprLike) -> Expr:
        return Binary(">", self, as_expr(other))

    def __or__(self, other: ExprLike) -> Expr:
        return Binary("|", self, as_expr(other))

    __hash__ = object.__hash__


@dataclass(frozen=True, eq=False)
class Var(Expr):
    """A reference to a named node (data, parameter or deterministic)."""

    name: str


@dataclass(frozen=True, eq=False)
class Const(Expr):
    value: float


@dataclass(frozen=True, eq=False)
class Binary(Expr):
    op: str  # + - * / ** < <= > >= |
    left: Expr
    right: Expr


@dataclass(frozen=True, eq=False)
class Call(Expr):
    fn: str  # one of FUNCTIONS
    args: tuple[Expr, ...]


@dataclass(frozen=True, eq=False)
class Index(Expr):
    """``base[index]``: pick one element of a group-level vector per row, or one row of a
    group-level matrix (level x term) per row."""

    base: Expr
    index: Expr


@dataclass(frozen=True, eq=False)
class Concat(Expr):
    """The elements of each part, part after part, as one vector along the new dim ``dim``:
    a vector's elements in order, a matrix's row by row. Build with :func:`concat`."""

    dim: str
    parts: tuple[Expr, ...]


@dataclass(frozen=True, eq=False)
class LogPdf(Expr):
    """The log density (log mass for a discrete family) of ``value`` under a family, summed
    over its elements: a scalar, for a :class:`~polyppl.spec.Factor` (Stan's
    ``target += normal_lpdf(y | mu, sigma)`` on an expression, or on a parameter whose
    constraint is not its family's support). Build with :func:`polyppl.spec.lpdf`."""

    family: str  # one of FAMILIES
    args: tuple[tuple[str, Expr], ...]
    value: Expr


@dataclass(frozen=True, eq=False)
class Scan(Expr):
    """A recursion along the dim ``dim``, never unrolled: with ``state`` equal to ``init``
    before the first step, step ``i`` sets ``state = body`` and keeps it, where ``body`` is an
    expression of the previous state (named ``carry`` in it), of element ``i`` of each
    sequence (named as the sequence is), and of any other node. Its value is the states of
    every step, dims ``(dim,) + init's dims``; each sequence has dims ``(dim, ...)``, and
    there is at least one (its length is the number of steps).
    ``garch``'s ``sigma[t] = sqrt(a0 + a1 * e[t]^2 + b1 * sigma[t-1]^2)`` is
    ``Scan("t", sigma1, "s", (("e2", a0 + a1 * e**2),), sqrt(e2 + b1 * s**2))``. Each backend
    runs it as its own loop (PyTensor's and JAX's ``scan``, a Stan ``for``)."""

    dim: str
    init: Expr
    carry: str
    sequences: tuple[tuple[str, Expr], ...]
    body: Expr

    @property
    def local_names(self) -> set[str]:
        """The names the body gives the previous state and the sequences' elements."""
        return {self.carry} | {name for name, _ in self.sequences}


ExprLike = Union[Expr, float, int]

ARITHMETIC = ("+", "-", "*", "/", "**")
COMPARISONS = ("<", "<=", ">", ">=")
LOGICAL = ("|",)
#: Functions every compiler implements, with their arity: elementwise, then the linear
#: algebra of MATRIX_FUNCTIONS.
FUNCTIONS: dict[str, int] = {
    "neg": 1,
    "exp": 1,
    "log": 1,
    "log1p": 1,
    "erfc": 1,
    "atan": 1,
    "expm1": 1,
    "gamma_p": 2,
    "gamma_q": 2,
    "lgamma": 1,
    "sqrt": 1,
    "inv_logit": 1,
    "logit": 1,
    "where": 3,
    "log_sum_exp": 2,
    "sum": 1,
    "max": 1,
    "cholesky": 1,
    "solve_lower": 2,
    "diagonal": 1,
    "matmul": 2,
    "transpose": 1,
    "diag_pre_multiply": 2,
    "rows_dot": 2,
}
#: The functions that are not elementwise: their dims follow linear algebra (``expr_dims``).
MATRIX_FUNCTIONS = frozenset({"matmul", "transpose", "diag_pre_multiply", "rows_dot", "sum", "max", "cholesky", "solve_lower",
                              "diagonal"})


def as_expr(value: ExprLike) -> Expr:
    if isinstance(value, Expr):
        return value
    if isinstance(value, (int, float, np.integer, np.floating)) and not isinstance(value, bool):
        return Const(float(value))
    raise TypeError(f"cannot use {value!r} ({type(value).__name__}) in a model expression")


def _call(fn: str, *args: ExprLike) -> Expr:
    return Call(fn, tuple(as_expr(a) for a in args))


def exp(x: ExprLike) -> Expr:
    return _call("exp", x)


def log(x: ExprLike) -> Expr:
    return _call("log", x)


def log1p(x: ExprLike) -> Expr:
    return _call("log1p", x)


def erfc(x: ExprLike) -> Expr:
    """The complementary error function, 1 - erf(x), elementwise (normal cdfs are of it)."""
    return _call("erfc", x)


def atan(x: ExprLike) -> Expr:
    """The arctangent, elementwise (a Cauchy cdf is of it)."""
    return _call("atan", x)


def expm1(x: ExprLike) -> Expr:
    """``exp(x) - 1``, elementwise, without the cancellation near 0 (``log(1 - exp(-t))`` for a
    small ``t`` is ``log(-expm1(-t))``)."""
    return _call("expm1", x)


def gamma_p(a: ExprLike, x: ExprLike) -> Expr:
    """The regularized lower incomplete gamma function P(a, x), elementwise (Stan's
    ``gamma_p``; a gamma cdf is of it), with its gradient in both arguments on every backend."""
    return _call("gamma_p", a, x)


def gamma_q(a: ExprLike, x: ExprLike) -> Expr:
    """The regularized upper incomplete gamma function Q(a, x) = 1 - P(a, x), elementwise."""
    return _call("gamma_q", a, x)
def lgamma(x: ExprLike) -> Expr:
    """The log of the gamma function, elementwise (normalising terms of densities whose
    arguments are parameters: dirichlet's, lkj's)."""
    return _call("lgamma", x)


def sqrt(x: ExprLike) -> Expr:
    return _call("sqrt", x)


def inv_logit(x: ExprLike) -> Expr:
    return _call("inv_logit", x)


def logit(x: ExprLike) -> Expr:
    return _call("logit", x)


def log_sum_exp(a: ExprLike, b: ExprLike) -> Expr:
    """``log(exp(a) + exp(b))``, elementwise, computed without overflow (Stan's binary
    ``log_sum_exp``; a mixture's ``log_mix`` is built from it)."""
    return _call("log_sum_exp", a, b)


def sum_all(x: ExprLike) -> Expr:
    """The sum of every element of ``x``: a scalar (for a Factor of per-row terms)."""
    return _call("sum", x)


def max_all(x: ExprLike) -> Expr:
    """The largest element of ``x``: a scalar (the shift that keeps a log-sum-exp of a
    matrix's columns from overflowing)."""
    return _call("max", x)


def cholesky(a: Expr) -> Expr:
    """The lower Cholesky factor ``L`` of a symmetric positive definite matrix (i, i): ``L L' = a``."""
    return _call("cholesky", a)


def solve_lower(lower: Expr, b: Expr) -> Expr:
    """``L^-1 b`` for a lower triangular ``L`` (i, i) and a vector ``b`` (i,) or a matrix (i, k)
    (each column solved), by substitution."""
    return _call("solve_lower", lower, b)


def diagonal(a: Expr) -> Expr:
    """The diagonal of a square matrix (i, i): a vector (i,)."""
    return _call("diagonal", a)


def where(condition: Expr, if_true: ExprLike, if_false: ExprLike) -> Expr:
    """Elementwise choice; the compilers support it on scalars (Stan's ternary operator)."""
    return _call("where", condition, if_true, if_false)


def matmul(a: Expr, b: Expr) -> Expr:
    """Matrix product: a matrix (i, j) times a vector (j,) is a vector (i,); times a matrix
    (j, k), a matrix (i, k). A design matrix times its coefficients: ``matmul(X, b)``."""
    return _call("matmul", a, b)


def transpose(a: Expr) -> Expr:
    """A matrix (i, j) as (j, i)."""
    return _call("transpose", a)


def diag_pre_multiply(v: Expr, a: Expr) -> Expr:
    """``diag(v) @ a``: row i of the matrix ``a`` (i, j) times ``v[i]``, without the diagonal matrix."""
    return _call("diag_pre_multiply", v, a)


def rows_dot(a: Expr, b: Expr) -> Expr:
    """Dot product of each row of two matrices of the same dims (i, j): a vector (i,)."""
    return _call("rows_dot", a, b)


def concat(dim: str, *parts: Expr) -> Expr:
    """The elements of ``parts`` as one vector along ``dim`` (see :class:`Concat`); e.g. every
    grouping factor's level x term matrix of effects as one vector ``r``."""
    if not parts:
        raise TypeError("concat needs at least one part")
    return Concat(dim, tuple(as_expr(p) for p in parts))


NEG_INF = Const(-math.inf)


def free_vars(expr: Expr) -> set[str]:
    """Names of the nodes an expression refers to."""
    if isinstance(expr, Var):
        return {expr.name}
    if isinstance(expr, Const):
        return set()
    if isinstance(expr, Binary):
        return free_vars(expr.left) | free_vars(expr.right)
    if isinstance(expr, Call):
        return set().union(*(free_vars(a) for a in expr.args))
    if isinstance(expr, Index):
        return free_vars(expr.base) | free_vars(expr.index)
    if isinstance(expr, Concat):
        return set().union(*(free_vars(p) for p in expr.parts))
    if isinstance(expr, LogPdf):
        return free_vars(expr.value).union(*(free_vars(e) for _, e in expr.args))
    if isinstance(expr, Scan):
        outer = free_vars(expr.init).union(*(free_vars(e) for _, e in expr.sequences))
        return outer | (free_vars(expr.body) - expr.local_names)
    raise TypeError(f"not an expression: {expr!r}")


_PYTHON_OPERATORS: dict[str, Callable] = {
    "+": operator.add, "-": operator.sub, "*": operator.mul, "/": operator.truediv, "**": operator.pow,
    "<": operator.lt, "<=": operator.le, ">": operator.gt, ">=": operator.ge,
}


def evaluate(expr: Expr, env: Mapping[str, object], functions: Mapping[str, Callable]) -> object:
    """Evaluate an expression with an array library.

    ``env`` maps node names to that library's arrays; ``functions`` maps each name of
    FUNCTIONS (and ``"|"``, ``"concat"``, which takes the parts, and ``"lpdf"``, which
    takes the family, its evaluated arguments by name and the value, and ``"scan"``, which
    takes the step, a function of the previous state, the elements and the values of the
    other nodes the body reads, then the initial state, the sequences and those values) to the library's implementation. PyMC, NumPyro and NumPy share this walk and differ only in the table
    they pass.
    """
    if isinstance(expr, Const):
        return expr.value
    if isinstance(expr, Var):
        return env[expr.name]
    if isinstance(expr, Index):
        return functions.get("index", _index)(evaluate(expr.base, env, functions), evaluate(expr.index, env, functions))
    if isinstance(expr, Binary):
        left, right = evaluate(expr.left, env, functions), evaluate(expr.right, env, functions)
        if expr.op == "|":
            return functions["|"](left, right)
        return _PYTHON_OPERATORS[expr.op](left, right)
    if isinstance(expr, Call):
        return functions[expr.fn](*(evaluate(a, env, functions) for a in expr.args))
    if isinstance(expr, Concat):
        return functions["concat"](*(evaluate(p, env, functions) for p in expr.parts))
    if isinstance(expr, LogPdf):
        args = {k: evaluate(e, env, functions) for k, e in expr.args}
        return functions["lpdf"](expr.family, args, evaluate(expr.value, env, functions))
    if isinstance(expr, Scan):
        names = [name for name, _ in expr.sequences]
        outer = sorted(free_vars(expr.body) - expr.local_names)

        def step(carry, elements, outer_values):
            local = {expr.carry: carry, **dict(zip(names, elements)), **dict(zip(outer, outer_values))}
            return evaluate(expr.body, {**env, **local}, functions)

        sequences = [evaluate(e, env, functions) for _, e in expr.sequences]
        return functions["scan"](step, evaluate(expr.init, env, functions), sequences, [env[n] for n in outer])
    raise TypeError(expr)


def _index(base, index):
    return base[index]
