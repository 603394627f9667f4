"""Nodes, models and datasets.

A :class:`Model` is an ordered tuple of nodes. Each node names a quantity:

* :class:`Data`          an input array (covariates, trial counts, group indices);
* :class:`Param`         an unobserved random variable with a distribution;
* :class:`Deterministic` a named expression of other nodes (kept in the output);
* :class:`Factor`        an extra term added to the log density (``(a+b)^-2.5``);
* :class:`Observed`      a random variable whose value is data (the likelihood);
* :class:`Conditional`   a quantity drawn after sampling from its exact conditional
  distribution given the sampled parameters and the data (a conditionally conjugate piece);
* :class:`Decision`      a question the user came for, answered as a posterior probability.

Shapes are named dims (``("variant",)``); their sizes and labels come with the data
(:class:`Dataset`). Every node is checked when the model is declared: names, order of
references, and that the dims of each expression fit the node's dims.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, replace
from typing import Literal, Mapping, Sequence, Union

import numpy as np

from polyppl.spec.expr import MATRIX_FUNCTIONS, Binary, Call, Concat, Const, Expr, Index, LogPdf, Scan, Var, free_vars
from polyppl.spec.families import Dist, Support

DType = Literal["int", "real"]


class SpecError(ValueError):
    """A model specification that no compiler could build, or data that does not fit it."""


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
        return self.dist.info.support

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
    """A scalar term added to the log density, e.g. an improper hyperprior or a Jacobian."""

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


@dataclass(frozen=True)
class Conditional:
    """A quantity drawn after sampling, once per posterior draw, from its exact conditional
    distribution given the sampled parameters and the data; e.g. the rates of a
    Beta-Binomial model integrated out of the density and drawn back as
    ``rates[k] | a, b, y ~ Beta(a + y_k, b + n_k - y_k)``. No backend sees it: every
    backend's draws are completed the same way, with a seeded generator
    (``polyppl.inference.posterior``), so the output keeps the quantity's name and dims."""

    name: str
    dist: Dist
    dims: tuple[str, ...] = ()


DecisionKind = Literal["probability", "beats", "best"]


@dataclass(frozen=True)
class Decision:
    """A posterior probability a user came for, computed from the draws the same way for
    every backend. Build with :func:`prob`, :func:`prob_beats` or :func:`prob_best`."""

    name: str
    kind: DecisionKind
    expr: Expr
    #: ``probability``: the dims of the condition; ``beats``/``best``: the one dim compared over.
    dims: tuple[str, ...] = ()
    #: How it reads; ``{label}`` stands for each element's label (``P(b[{label}] > 0)``).
    title: str = ""

    def heading(self) -> str:
        """The title for all elements at once, ``{label}`` read as the dims (``P(b[predictor] > 0)``);
        the name where there is no title."""
        return (self.title or self.name).replace("{label}", ",".join(self.dims))

    def reads(self, label: str) -> str:
        """How one element reads: the title with its label in place (``P(b[x] > 0)``), else
        ``title: label``."""
        if "{label}" in self.title:
            return self.title.replace("{label}", label)
        return f"{self.title or self.name}: {label}" if label else (self.title or self.name)


def prob(name: str, condition: Expr, dims: Sequence[str] = (), title: str = "") -> Decision:
    """P(condition), elementwise over ``dims``: e.g. ``prob("prob_effect_positive", theta > 0, ("school",))``."""
    return Decision(name, "probability", condition, tuple(dims), title)


def prob_beats(name: str, quantity: Expr, dim: str, title: str = "") -> Decision:
    """P(x_i > x_j) for every ordered pair of labels of ``dim``, labelled ``i>j``."""
    return Decision(name, "beats", quantity, (dim,), title)


def prob_best(name: str, quantity: Expr, dim: str, title: str = "") -> Decision:
    """P(x_i is the largest of the labels of ``dim``), labelled by the label."""
    return Decision(name, "best", quantity, (dim,), title)


Node = Union[Data, Param, Deterministic, Factor, Observed, Conditional, Decision]

_NAME = re.compile(r"^[A-Za-z][A-Za-z0-9_]*$")
# Words that would break one of the generated programs (Stan's reserved words and
# the names polyppl's Stan compiler declares itself).
RESERVED = frozenset(
    """for in while repeat until if then else true false target functions model data
    parameters quantities transformed generated lower upper offset multiplier int real
    vector array matrix return void print reject profile struct typedef export extern
    static auto lp__ var fvar""".split()
)


@dataclass(frozen=True)
class LooseGradient:
    """A function of a source program whose gradient its language's own implementation
    computes by an approximation, not as the derivative of its value (Stan's ``normal_lcdf``):
    a check of a translation against that implementation compares gradients through it to
    ``rtol``, for ``reason``, and values still exactly."""

    function: str
    rtol: float
    reason: str


@dataclass(frozen=True)
class SourceProgram:
    """The program a model was lowered from, in its own language, with its data in that
    language's format: a backend of that language runs it unchanged instead of a program
    generated from the nodes (whose names, shapes and parameter constraints it shares)."""

    language: str  # "stan"
    text: str
    #: The program's data as canonical JSON text (sorted keys).
    data_json: str
    #: The parameters in the program's declaration order (its unconstrained vector's order).
    parameters: tuple[str, ...]
    #: How many leading dims of each parameter (in ``parameters``' order) are array dims: Stan's
    #: unconstrained vector holds an array element after element, a matrix column by column.
    array_ranks: tuple[int, ...] = ()
    #: The functions the program calls on parameters whose gradient its language approximates.
    loose_gradients: tuple[LooseGradient, ...] = ()

    def array_rank(self, name: str) -> int:
        return self.array_ranks[self.parameters.index(name)] if self.array_ranks else 0


@dataclass(frozen=True)
class Model:
    """A model: a name and its nodes, in an order where every reference comes first."""

    name: str
    nodes: tuple[Node, ...]
    description: str = ""
    #: The NUTS target acceptance this model's geometry needs where the usual default is not
    #: enough (None: the default); a target the user sets overrides it.
    target_accept: float | None = None
    #: The program this model was lowered from (a user's Stan program), or None.
    source: SourceProgram | None = None

    def __post_init__(self) -> None:
        if self.target_accept is not None and not 0 < self.target_accept < 1:
            raise SpecError(f"model {self.name!r}: target_accept must lie strictly between 0 and 1, "
                            f"got {self.target_accept!r}")
        seen: dict[str, Node] = {}
        after_sampling: set[str] = set()  # conditionals and what depends on them
        for node in self.nodes:
            if not _NAME.match(node.name) or node.name.endswith("__") or node.name in RESERVED:
                raise SpecError(f"model {self.name!r}: {node.name!r} is not a usable name")
            if node.name in seen:
                raise SpecError(f"model {self.name!r}: the name {node.name!r} is declared twice")
            refs = references(node)
            for ref in sorted(refs):
                if ref not in seen:
                    raise SpecError(f"model {self.name!r}: node {node.name!r} uses {ref!r} before it is declared")
                target = seen[ref]
                if isinstance(target, (Factor, Decision)) or (
                    isinstance(target, Observed) and not isinstance(node, (Conditional, Decision))
                ):
                    raise SpecError(f"model {self.name!r}: {node.name!r} refers to {ref!r}, which has no value")
            late = refs & after_sampling
            if late and isinstance(node, (Param, Observed, Factor)):
                raise SpecError(f"model {self.name!r}: {node.name!r} enters the density but uses "
                                f"{sorted(late)[0]!r}, which is drawn only after sampling")
            if isinstance(node, Conditional) or (isinstance(node, Deterministic) and late):
                after_sampling.add(node.name)
            seen[node.name] = node
            _check_dims(self, node)
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
    def decisions(self) -> list[Decision]:
        return self.of_type(Decision)

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
        """Variables of the posterior, in declaration order: parameters, deterministics and
        conditional draws."""
        return [n.name for n in self.nodes if isinstance(n, (Param, Deterministic, Conditional))]

    def post_sampling_names(self) -> list[str]:
        """Conditionals and the deterministics that use them: computed after sampling."""
        late: set[str] = set()
        for node in self.nodes:
            if isinstance(node, Conditional) or (isinstance(node, Deterministic) and references(node) & late):
                late.add(node.name)
        return [n.name for n in self.nodes if n.name in late]

    def density_model(self) -> Model:
        """The part a backend compiles: without conditionals, what depends on them, and
        decisions (all computed from the draws afterwards), nor the data only they use."""
        skip = set(self.post_sampling_names()) | {d.name for d in self.decisions}
        if not skip:
            return self
        kept = [n for n in self.nodes if n.name not in skip]
        used = set().union(*(references(n) for n in kept))
        return replace(self, nodes=tuple(n for n in kept if not isinstance(n, Data) or n.name in used))


def references(node: Node) -> set[str]:
    if isinstance(node, Data):
        return set()
    if isinstance(node, (Param, Observed, Conditional)):
        return set().union(*(free_vars(e) for _, e in node.dist.args))
    return free_vars(node.expr)


def _const(expr: Expr) -> float:
    if not isinstance(expr, Const):
        raise SpecError("this argument must be a constant")
    return expr.value


def _check_dims(model: Model, node: Node) -> None:
    """The dims of each expression of ``node`` must fit its own dims (a scalar fits any)."""
    where = f"model {model.name!r}: {node.name!r}"

    def dims_of(expr: Expr) -> tuple[str, ...]:
        try:
            return expr_dims(model, expr)
        except SpecError as exc:
            raise SpecError(f"{where}: {exc}") from None

    def fail(what: str, got: tuple[str, ...], expected: tuple[str, ...]) -> SpecError:
        return SpecError(f"{where}: {what} has dims {got or '()'}, expected {expected or '()'}")

    if isinstance(node, (Param, Observed, Conditional)):
        event_dims = node.dist.info.event_dims
        # Leading dims are an array of values of a flat family on a Stan vector type
        # (``array[J] simplex[K]``), each through the transform.
        batched = isinstance(node, Param) and node.dist.info.improper and event_dims == 1 and len(node.dims) == 2
        if event_dims and len(node.dims) != event_dims and not batched:
            raise SpecError(f"{where}: a {node.dist.family} value has {event_dims} dims (term, term), "
                            f"not {node.dims or '()'}")
        for arg, expr in node.dist.args:
            got = dims_of(expr)
            if got not in ((), node.dims) or (event_dims and got):
                raise fail(f"argument {arg}", got, () if event_dims else node.dims)
    elif isinstance(node, Deterministic):
        got = dims_of(node.expr)
        if not same_dims(got, node.dims):
            raise fail("its expression", got, node.dims)
    elif isinstance(node, Factor):
        got = dims_of(node.expr)
        if got:
            raise SpecError(f"{where}: a factor must be a scalar; its expression has dims {got}")
    elif isinstance(node, Decision):
        got = dims_of(node.expr)
        if got != node.dims and not (node.kind == "probability" and got == ()):
            raise fail("its expression", got, node.dims)
        if node.kind != "probability" and len(node.dims) != 1:
            raise SpecError(f"{where}: a decision of kind {node.kind!r} compares over exactly one dim")


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
    for param in model.params:
        if param.dist.info.event_dims == 2 and len(set(dataset.shape(param.dims))) != 1:
            raise SpecError(f"{param.name!r} ({param.dist.family}) is a square matrix, but its dims "
                            f"{param.dims} have sizes {dataset.shape(param.dims)}")


def unconstrained_shape(param: Param, dataset: Dataset) -> tuple[int, ...]:
    """The shape of a parameter on the unconstrained scale every sampler works on: its own
    shape, except for the Cholesky factor of a K x K correlation matrix, which has
    K (K - 1) / 2 free values (below the diagonal, row by row)."""
    shape = dataset.shape(param.dims)
    if param.support in ("corr_cholesky", "corr_matrix"):
        k = shape[0]
        return (k * (k - 1) // 2,)
    if param.support == "simplex":  # of each simplex of an array
        return shape[:-1] + (shape[-1] - 1,)
    if param.support in ("cholesky_factor_cov", "cov_matrix"):
        k = shape[0]
        return (k * (k + 1) // 2,)
    return shape


# --------------------------------------------------------------------------- shapes


#: The second dim of a square matrix: the first's name with this suffix (xarray refuses a
#: variable with one dim twice, as a K x K matrix would have it). Of the same size and coords.
_COLUMN = "_col"


def column_dim(dim: str) -> str:
    """The second dim of a square matrix whose first is ``dim``: ``K`` -> ``K_col``. Shapes
    match a dim with its column dim (``L @ z`` for ``L`` (K, K_col) and ``z`` (K, J))."""
    return dim + _COLUMN


def _square_base(dims: tuple[str, ...]) -> tuple[str, ...]:
    """Dims with each column dim read as its row dim, for matching shapes."""
    return tuple(d[: -len(_COLUMN)] if d.endswith(_COLUMN) else d for d in dims)


def same_dims(a: tuple[str, ...], b: tuple[str, ...]) -> bool:
    """Whether two values' dims match, a column dim (:func:`column_dim`) matching its row dim."""
    return a == b or _square_base(a) == _square_base(b)


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
        if base[:1] != (node.index_of,) or len(base) > 2 or (len(base) == 2 and len(index) != 1):
            raise SpecError(f"{node.name!r} indexes dim {node.index_of!r}, but the value indexed has dims {base} "
                            "(a vector of that dim, or a matrix whose rows are, indexed by a vector)")
        return index + base[1:]
    if isinstance(expr, Binary):
        return _broadcast(expr_dims(model, expr.left), expr_dims(model, expr.right))
    if isinstance(expr, Call):
        if expr.fn in MATRIX_FUNCTIONS:
            return _matrix_dims(expr.fn, [expr_dims(model, a) for a in expr.args])
        out: tuple[str, ...] = ()
        for arg in expr.args:
            out = _broadcast(out, expr_dims(model, arg))
        return out
    if isinstance(expr, Concat):
        for part in expr.parts:
            if len(expr_dims(model, part)) not in (1, 2):
                raise SpecError(f"concat joins vectors and matrices, not a value of dims {expr_dims(model, part) or '()'}")
        return (expr.dim,)
    if isinstance(expr, LogPdf):
        value = expr_dims(model, expr.value)
        for name, arg in expr.args:
            got = expr_dims(model, arg)
            if got not in ((), value):
                raise SpecError(f"{expr.family} argument {name} has dims {got}, for a value of dims {value or '()'}")
        return ()
    if isinstance(expr, Scan):
        return _scan_dims(model, expr)
    raise TypeError(expr)


class _Scope:
    """A model seen from inside a scan's body: its nodes, and the body's own names."""

    def __init__(self, model: Model, local: Mapping[str, tuple[str, ...]]) -> None:
        self.model, self.local = model, local

    def __getitem__(self, name: str) -> Node:
        if name in self.local:
            return Data(name, "real", self.local[name])
        return self.model[name]


def _scan_dims(model: Model, expr: Scan) -> tuple[str, ...]:
    """A scan's states: ``(dim,)`` + the state's dims, which its body must keep."""
    state = expr_dims(model, expr.init)
    if len(state) > 1:
        raise SpecError(f"a scan's state is a scalar or a vector, not a value of dims {state}")
    local = {expr.carry: state}
    if not expr.sequences:
        raise SpecError(f"a scan along {expr.dim!r} needs a sequence (its steps are a sequence's elements)")
    for name, sequence in expr.sequences:
        got = expr_dims(model, sequence)
        if got[:1] != (expr.dim,):
            raise SpecError(f"the scan's sequence {name} has dims {got or '()'}, expected ({expr.dim!r}, ...)")
        local[name] = got[1:]
    if expr.carry in {name for name, _ in expr.sequences}:
        raise SpecError(f"the scan names two of its values {expr.carry!r}")
    body = expr_dims(_Scope(model, local), expr.body)
    if body != state:
        raise SpecError(f"the scan's body has dims {body}, for a state of dims {state or '()'}")
    return (expr.dim,) + state


def _matrix_dims(fn: str, args: list[tuple[str, ...]]) -> tuple[str, ...]:
    """Dims of the linear algebra functions, or a SpecError saying what they take."""
    if fn in ("sum", "max"):
        return ()
    def square(a: tuple[str, ...]) -> bool:
        return len(a) == 2 and same_dims(a[:1], a[1:])

    if fn in ("cholesky", "diagonal") and square(args[0]):
        return args[0] if fn == "cholesky" else args[0][:1]
    if fn == "solve_lower":
        lower, b = args
        if square(lower) and len(b) in (1, 2) and same_dims(b[:1], lower[:1]):
            return b
    if fn == "transpose" and len(args[0]) == 2:
        return args[0][::-1]
    if fn == "matmul":
        a, b = args
        if len(a) == 2 and len(b) in (1, 2) and same_dims(a[1:], b[:1]):
            return a[:1] + b[1:]
    if fn == "diag_pre_multiply":
        v, a = args
        if len(v) == 1 and len(a) == 2 and same_dims(v, a[:1]):
            return a
    if fn == "rows_dot":
        a, b = args
        if len(a) == 2 and same_dims(a, b):
            return a[:1]
    takes = {
        "transpose": "a matrix (i, j)",
        "matmul": "a matrix (i, j) and a vector (j,) or a matrix (j, k)",
        "diag_pre_multiply": "a vector (i,) and a matrix (i, j)",
        "rows_dot": "two matrices of the same dims (i, j)",
        "sum": "any value",
        "max": "any value",
        "cholesky": "a square matrix (i, i)",
        "diagonal": "a square matrix (i, i)",
        "solve_lower": "a square matrix (i, i) and a vector (i,) or a matrix (i, k)",
    }[fn]
    raise SpecError(f"{fn} takes {takes}, not values of dims {', '.join(str(a) for a in args)}")


def expr_dtype(model: Model, expr: Expr) -> DType:
    """Integer only where every leaf is integer data and the operations keep it so."""
    if isinstance(expr, Const):
        return "int" if float(expr.value).is_integer() else "real"
    if isinstance(expr, Var):
        node = model[expr.name]
        if isinstance(node, Data):
            return node.dtype
        return node.dtype if isinstance(node, Observed) else "real"
    if isinstance(expr, Index):
        return expr_dtype(model, expr.base)
    if isinstance(expr, Binary) and expr.op in ("+", "-", "*"):
        return "int" if {expr_dtype(model, expr.left), expr_dtype(model, expr.right)} == {"int"} else "real"
    return "real"


def _broadcast(a: tuple[str, ...], b: tuple[str, ...]) -> tuple[str, ...]:
    if not a:
        return b
    if not b or same_dims(a, b):
        return a
    raise SpecError(f"cannot combine values with dims {a} and {b}")


def density_dependencies(model: Model) -> set[str]:
    """Names that the log density needs (so Stan must compute them before `model`)."""
    needed: set[str] = set()
    for node in reversed(model.nodes):
        if isinstance(node, (Param, Observed, Factor)) or node.name in needed:
            needed |= references(node)
    return needed
