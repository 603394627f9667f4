"""The model specification: a Bayesian model declared once, as plain data.

A :class:`Model` is an ordered tuple of nodes. Each node names a quantity:

* :class:`Data`          an input array (covariates, trial counts, group indices);
* :class:`Param`         an unobserved random variable with a distribution;
* :class:`Deterministic` a named expression of other nodes (kept in the output);
* :class:`Factor`        an extra term added to the log density (``(a+b)^-2.5``);
* :class:`Observed`      a random variable whose value is data (the likelihood).

Expressions (:class:`Expr`) are small trees built with ordinary Python operators,
``a[group] + b[group] * treated``, and a few functions (:func:`inv_logit`, :func:`exp`,
:func:`log`, :func:`where`). Shapes are named dims (``("variant",)``); their sizes and
labels come with the data (:class:`Dataset`). Each backend compiler walks the same
nodes; nothing here knows about PyMC, NumPyro or Stan.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, replace
from typing import Literal, Mapping, Sequence, Union

import numpy as np

Support = Literal["real", "positive", "unit", "interval"]
DType = Literal["int", "real"]


# --------------------------------------------------------------------------- expressions


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

    # Comparisons build trees too (for `where`); `==` keeps identity semantics.
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
    """``base[index]``: pick one element of a group-level vector per row."""

    base: Expr
    index: Expr


ExprLike = Union[Expr, float, int]

ARITHMETIC = ("+", "-", "*", "/", "**")
COMPARISONS = ("<", "<=", ">", ">=")
LOGICAL = ("|",)
#: Elementwise functions every compiler implements, with their arity.
FUNCTIONS: dict[str, int] = {
    "neg": 1,
    "exp": 1,
    "log": 1,
    "log1p": 1,
    "sqrt": 1,
    "inv_logit": 1,
    "logit": 1,
    "where": 3,
}


def as_expr(value: ExprLike) -> Expr:
    if isinstance(value, Expr):
        return value
    if isinstance(value, (int, float, np.integer, np.floating)) and not isinstance(value, bool):
        return Const(float(value))
    raise TypeError(f"cannot use {value!r} ({type(value).__name__}) in a model expression")


def exp(x: ExprLike) -> Expr:
    return Call("exp", (as_expr(x),))


def log(x: ExprLike) -> Expr:
    return Call("log", (as_expr(x),))


def log1p(x: ExprLike) -> Expr:
    return Call("log1p", (as_expr(x),))


def sqrt(x: ExprLike) -> Expr:
    return Call("sqrt", (as_expr(x),))


def inv_logit(x: ExprLike) -> Expr:
    return Call("inv_logit", (as_expr(x),))


def logit(x: ExprLike) -> Expr:
    return Call("logit", (as_expr(x),))


def where(condition: Expr, if_true: ExprLike, if_false: ExprLike) -> Expr:
    """Elementwise choice; the compilers support it on scalars (Stan's ternary operator)."""
    return Call("where", (condition, as_expr(if_true), as_expr(if_false)))


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
    raise TypeError(f"not an expression: {expr!r}")


# --------------------------------------------------------------------------- distributions


@dataclass(frozen=True)
class Family:
    """What every compiler needs to know about a distribution family."""

    params: tuple[str, ...]
    support: Support | Literal["count", "binary"]
    discrete: bool = False


#: The vocabulary. Parameter names are polyppl's, the same for every backend.
#: Rates are rates (Gamma(alpha, beta) has mean alpha/beta; Exponential(rate)).
FAMILIES: dict[str, Family] = {
    "normal": Family(("mu", "sigma"), "real"),
    "half_normal": Family(("sigma",), "positive"),
    "student_t": Family(("nu", "mu", "sigma"), "real"),
    "half_student_t": Family(("nu", "sigma"), "positive"),
    "cauchy": Family(("mu", "sigma"), "real"),
    "half_cauchy": Family(("sigma",), "positive"),
    "beta": Family(("alpha", "beta"), "unit"),
    "gamma": Family(("alpha", "beta"), "positive"),
    "exponential": Family(("rate",), "positive"),
    "uniform": Family(("lower", "upper"), "interval"),
    "flat": Family((), "real"),
    "half_flat": Family((), "positive"),
    "binomial": Family(("n", "p"), "count", discrete=True),
    "binomial_logit": Family(("n", "logit_p"), "count", discrete=True),
    "bernoulli": Family(("p",), "binary", discrete=True),
    "bernoulli_logit": Family(("logit_p",), "binary", discrete=True),
    "poisson": Family(("rate",), "count", discrete=True),
}


@dataclass(frozen=True)
class Dist:
    family: str
    args: tuple[tuple[str, Expr], ...]

    @property
    def kwargs(self) -> dict[str, Expr]:
        return dict(self.args)

    @property
    def info(self) -> Family:
        return FAMILIES[self.family]


def _dist(family: str, **kwargs: ExprLike) -> Dist:
    expected = FAMILIES[family].params
    if tuple(kwargs) != expected:
        raise TypeError(f"{family} takes ({', '.join(expected)}), got ({', '.join(kwargs)})")
    return Dist(family, tuple((k, as_expr(v)) for k, v in kwargs.items()))


def Normal(mu: ExprLike, sigma: ExprLike) -> Dist:
    return _dist("normal", mu=mu, sigma=sigma)


def HalfNormal(sigma: ExprLike) -> Dist:
    return _dist("half_normal", sigma=sigma)


def StudentT(nu: ExprLike, mu: ExprLike, sigma: ExprLike) -> Dist:
    return _dist("student_t", nu=nu, mu=mu, sigma=sigma)


def HalfStudentT(nu: ExprLike, sigma: ExprLike) -> Dist:
    return _dist("half_student_t", nu=nu, sigma=sigma)


def Cauchy(mu: ExprLike, sigma: ExprLike) -> Dist:
    return _dist("cauchy", mu=mu, sigma=sigma)


def HalfCauchy(sigma: ExprLike) -> Dist:
    return _dist("half_cauchy", sigma=sigma)


def Beta(alpha: ExprLike, beta: ExprLike) -> Dist:
    return _dist("beta", alpha=alpha, beta=beta)


def Gamma(alpha: ExprLike, beta: ExprLike) -> Dist:
    """Shape ``alpha``, rate ``beta``."""
    return _dist("gamma", alpha=alpha, beta=beta)


def Exponential(rate: ExprLike) -> Dist:
    return _dist("exponential", rate=rate)


def Uniform(lower: float, upper: float) -> Dist:
    """Bounds are constants: they fix the support, hence the transform."""
    if not (isinstance(lower, (int, float)) and isinstance(upper, (int, float)) and lower < upper):
        raise TypeError(f"Uniform needs constant bounds lower < upper, got {lower!r}, {upper!r}")
    return _dist("uniform", lower=lower, upper=upper)


def Flat() -> Dist:
    """The improper flat density on the real line."""
    return _dist("flat")


def HalfFlat() -> Dist:
    """The improper flat density on the positive reals (sampled on the log scale)."""
    return _dist("half_flat")


def Binomial(n: ExprLike, p: ExprLike) -> Dist:
    return _dist("binomial", n=n, p=p)


def BinomialLogit(n: ExprLike, logit_p: ExprLike) -> Dist:
    return _dist("binomial_logit", n=n, logit_p=logit_p)


def Bernoulli(p: ExprLike) -> Dist:
    return _dist("bernoulli", p=p)


def BernoulliLogit(logit_p: ExprLike) -> Dist:
    return _dist("bernoulli_logit", logit_p=logit_p)


def Poisson(rate: ExprLike) -> Dist:
    return _dist("poisson", rate=rate)


# --------------------------------------------------------------------------- nodes


@dataclass(frozen=True)
class Data:
    """An input array. ``index_of`` marks a 0-based index into the dim of that name."""

    name: str
    dtype: DType = "real"
    dims: tuple[str, ...] = ()
    lower: float | None = None
    upper: float | None = None
    index_of: str | None = None


@dataclass(frozen=True)
class Param:
    name: str
    dist: Dist
    dims: tuple[str, ...] = ()

    @property
    def support(self) -> Support:
        support = self.dist.info.support
        assert support in ("real", "positive", "unit", "interval")
        return support  # type: ignore[return-value]

    @property
    def bounds(self) -> tuple[float | None, float | None]:
        """Bounds of the support, which fix each backend's transform."""
        if self.support == "positive":
            return 0.0, None
        if self.support == "unit":
            return 0.0, 1.0
        if self.support == "interval":
            kw = self.dist.kwargs
            return _const(kw["lower"]), _const(kw["upper"])
        return None, None


@dataclass(frozen=True)
class Deterministic:
    name: str
    expr: Expr
    dims: tuple[str, ...] = ()


@dataclass(frozen=True)
class Factor:
    """A scalar term added to the log density, e.g. an improper hyperprior."""

    name: str
    expr: Expr


@dataclass(frozen=True)
class Observed:
    """A random variable whose value is the data array of the same name."""

    name: str
    dist: Dist
    dims: tuple[str, ...] = ()

    @property
    def dtype(self) -> DType:
        return "int" if self.dist.info.discrete else "real"


Node = Union[Data, Param, Deterministic, Factor, Observed]

_NAME = re.compile(r"^[A-Za-z][A-Za-z0-9_]*$")
# Words that would break one of the generated programs (Stan's reserved words and
# the names polyppl's Stan compiler declares itself).
RESERVED = frozenset(
    """for in while repeat until if then else true false target functions model data
    parameters quantities transformed generated lower upper offset multiplier int real
    vector array matrix return void print reject profile struct typedef export extern
    static auto lp__ var fvar""".split()
)


class SpecError(ValueError):
    """A model specification that no compiler could build."""


@dataclass(frozen=True)
class Model:
    """A model: a name and its nodes, in an order where every reference comes first."""

    name: str
    nodes: tuple[Node, ...]
    description: str = ""

    def __post_init__(self) -> None:
        seen: dict[str, Node] = {}
        for node in self.nodes:
            if not _NAME.match(node.name) or node.name.endswith("__") or node.name in RESERVED:
                raise SpecError(f"model {self.name!r}: {node.name!r} is not a usable name")
            if node.name in seen:
                raise SpecError(f"model {self.name!r}: the name {node.name!r} is declared twice")
            for ref in sorted(_references(node)):
                if ref not in seen:
                    raise SpecError(
                        f"model {self.name!r}: node {node.name!r} uses {ref!r} before it is declared"
                    )
                if isinstance(seen[ref], (Factor, Observed)):
                    raise SpecError(f"model {self.name!r}: {node.name!r} refers to {ref!r}, which has no value")
            seen[node.name] = node
        clash = set(seen) & set(self.dims)
        if clash:
            raise SpecError(f"model {self.name!r}: {sorted(clash)[0]!r} names both a node and a dim")

    def __getitem__(self, name: str) -> Node:
        for node in self.nodes:
            if node.name == name:
                return node
        raise KeyError(name)

    def of_type(self, kind: type) -> list:
        return [n for n in self.nodes if isinstance(n, kind)]

    @property
    def params(self) -> list[Param]:
        return self.of_type(Param)

    @property
    def data_nodes(self) -> list[Data]:
        return self.of_type(Data)

    @property
    def observed(self) -> list[Observed]:
        return self.of_type(Observed)

    @property
    def deterministics(self) -> list[Deterministic]:
        return self.of_type(Deterministic)

    @property
    def dims(self) -> list[str]:
        """Every dim used, in order of first use."""
        out: list[str] = []
        for node in self.nodes:
            for d in getattr(node, "dims", ()) + ((node.index_of,) if isinstance(node, Data) and node.index_of else ()):
                if d not in out:
                    out.append(d)
        return out

    @property
    def output_names(self) -> list[str]:
        """Variables of the posterior, in declaration order: parameters and deterministics."""
        return [n.name for n in self.nodes if isinstance(n, (Param, Deterministic))]


def _references(node: Node) -> set[str]:
    if isinstance(node, Data):
        return set()
    if isinstance(node, (Param, Observed)):
        return set().union(*(free_vars(e) for _, e in node.dist.args))
    return free_vars(node.expr)


def _const(expr: Expr) -> float:
    if not isinstance(expr, Const):
        raise SpecError("this argument must be a constant")
    return expr.value


# --------------------------------------------------------------------------- data


@dataclass(frozen=True)
class Dataset:
    """Values for a model's data and observed nodes, and labels for its dims."""

    values: Mapping[str, np.ndarray]
    coords: Mapping[str, tuple]
    #: Where the data came from ("scenario four-variants", "file data.csv"), for records.
    source: str = ""

    def size(self, dim: str) -> int:
        return len(self.coords[dim])

    def shape(self, dims: Sequence[str]) -> tuple[int, ...]:
        return tuple(self.size(d) for d in dims)


def check_dataset(model: Model, dataset: Dataset) -> None:
    """Raise SpecError if the dataset does not fit the model's data nodes."""
    for dim in model.dims:
        if dim not in dataset.coords:
            raise SpecError(f"model {model.name!r} needs labels for dim {dim!r}")
    for node in model.nodes:
        if not isinstance(node, (Data, Observed)):
            continue
        if node.name not in dataset.values:
            raise SpecError(f"model {model.name!r} needs data {node.name!r}")
        value = np.asarray(dataset.values[node.name])
        expected = dataset.shape(node.dims)
        if value.shape != expected:
            raise SpecError(f"data {node.name!r} has shape {value.shape}, expected {expected} for dims {node.dims}")
        if node.dtype == "int" and not np.all(np.mod(value, 1) == 0):
            raise SpecError(f"data {node.name!r} must hold integers")
        if isinstance(node, Data) and node.index_of:
            n = dataset.size(node.index_of)
            if value.size and (value.min() < 0 or value.max() >= n):
                raise SpecError(f"index {node.name!r} must lie in 0..{n - 1} (dim {node.index_of!r})")


# --------------------------------------------------------------------------- shapes


def expr_dims(model: Model, expr: Expr) -> tuple[str, ...]:
    """The dims of an expression's value (scalars have none); raises on a mismatch."""
    if isinstance(expr, Const):
        return ()
    if isinstance(expr, Var):
        node = model[expr.name]
        return getattr(node, "dims", ())
    if isinstance(expr, Index):
        base, index = expr_dims(model, expr.base), expr_dims(model, expr.index)
        node = model[expr.index.name] if isinstance(expr.index, Var) else None
        if not isinstance(node, Data) or node.index_of is None:
            raise SpecError("only a Data node with index_of can index a vector")
        if base != (node.index_of,):
            raise SpecError(f"{node.name!r} indexes dim {node.index_of!r}, but the vector has dims {base}")
        return index
    if isinstance(expr, Binary):
        return _broadcast(expr_dims(model, expr.left), expr_dims(model, expr.right))
    if isinstance(expr, Call):
        out: tuple[str, ...] = ()
        for arg in expr.args:
            out = _broadcast(out, expr_dims(model, arg))
        return out
    raise TypeError(expr)


def expr_dtype(model: Model, expr: Expr) -> DType:
    """Integer only where every leaf is integer data and the operations keep it so."""
    if isinstance(expr, Const):
        return "int" if float(expr.value).is_integer() else "real"
    if isinstance(expr, Var):
        node = model[expr.name]
        return node.dtype if isinstance(node, Data) else "real"
    if isinstance(expr, Index):
        return expr_dtype(model, expr.base)
    if isinstance(expr, Binary) and expr.op in ("+", "-", "*"):
        return "int" if {expr_dtype(model, expr.left), expr_dtype(model, expr.right)} == {"int"} else "real"
    return "real"


def _broadcast(a: tuple[str, ...], b: tuple[str, ...]) -> tuple[str, ...]:
    if not a:
        return b
    if not b or a == b:
        return a
    raise SpecError(f"cannot combine values with dims {a} and {b}")


# --------------------------------------------------------------------------- rewrites


def noncentered(model: Model, names: Sequence[str], suffix: str = "_z") -> Model:
    """Rewrite ``x ~ Normal(mu, sigma)`` as ``x_z ~ Normal(0, 1)``, ``x = mu + sigma * x_z``.

    The posterior keeps ``x`` under its own name (now a deterministic), so results of the
    centered and non-centered forms line up variable by variable.
    """
    nodes: list[Node] = []
    for node in model.nodes:
        if node.name in names:
            if not (isinstance(node, Param) and node.dist.family == "normal"):
                raise SpecError(f"only Normal parameters can be non-centered, not {node.name!r}")
            kw = node.dist.kwargs
            raw = Param(node.name + suffix, Normal(0.0, 1.0), node.dims)
            nodes += [raw, Deterministic(node.name, kw["mu"] + kw["sigma"] * Var(raw.name), node.dims)]
        else:
            nodes.append(node)
    missing = set(names) - {n.name for n in model.nodes}
    if missing:
        raise SpecError(f"no such parameters: {sorted(missing)}")
    return replace(model, nodes=tuple(nodes))


def density_dependencies(model: Model) -> set[str]:
    """Names that the log density needs (so Stan must compute them before `model`)."""
    needed: set[str] = set()
    for node in reversed(model.nodes):
        if isinstance(node, (Param, Observed, Factor)) or node.name in needed:
            needed |= _references(node)
    return needed


__all__ = [
    "Beta", "Bernoulli", "BernoulliLogit", "Binomial", "BinomialLogit", "Cauchy", "Const", "Data",
    "Dataset", "Deterministic", "Dist", "Expr", "Exponential", "Factor", "Flat", "Gamma", "HalfCauchy",
    "HalfFlat", "HalfNormal", "HalfStudentT", "Model", "NEG_INF", "Normal", "Observed", "Param",
    "Poisson", "SpecError", "StudentT", "Uniform", "Var", "check_dataset", "exp", "expr_dims",
    "expr_dtype", "inv_logit", "log", "log1p", "logit", "noncentered", "sqrt", "where",
]



# --------------------------------------------------------------------------- evaluation


def evaluate(expr: Expr, env: Mapping[str, object], functions: Mapping[str, object]):
    """Evaluate an expression with an array library.

    ``env`` maps node names to that library's arrays; ``functions`` maps each name of
    FUNCTIONS (and ``"|"``) to the library's implementation. PyMC and NumPyro share this
    walk and differ only in the table they pass.
    """
    import operator

    if isinstance(expr, Const):
        return expr.value
    if isinstance(expr, Var):
        return env[expr.name]
    if isinstance(expr, Index):
        return evaluate(expr.base, env, functions)[evaluate(expr.index, env, functions)]
    if isinstance(expr, Binary):
        left, right = evaluate(expr.left, env, functions), evaluate(expr.right, env, functions)
        if expr.op == "|":
            return functions["|"](left, right)
        python_ops = {
            "+": operator.add, "-": operator.sub, "*": operator.mul, "/": operator.truediv,
            "**": operator.pow, "<": operator.lt, "<=": operator.le, ">": operator.gt, ">=": operator.ge,
        }
        return python_ops[expr.op](left, right)
    if isinstance(expr, Call):
        return functions[expr.fn](*(evaluate(a, env, functions) for a in expr.args))
    raise TypeError(expr)
