"""A Stan program's text as a tree of small dataclasses, each statement and expression with
its line, read by lark with ``grammar.lark``.

Stan's own compiler checks the program before this runs (``stanc.py``): the tree is built
for programs Stan accepts, so this module does not repeat Stan's type checks.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from functools import lru_cache
from pathlib import Path
from typing import Union

import lark
from lark import Transformer, v_args

from polyppl.errors import UserError

# --------------------------------------------------------------------------- expressions


@dataclass(frozen=True)
class Num:
    value: float
    is_int: bool
    line: int


@dataclass(frozen=True)
class Name:
    name: str
    line: int


@dataclass(frozen=True)
class Slice:
    """``a:b``, ``a:``, ``:b`` or ``:`` (the whole axis) in an index."""

    lower: StanExpr | None
    upper: StanExpr | None
    line: int


@dataclass(frozen=True)
class Indexed:
    base: StanExpr
    indexes: tuple[StanExpr | Slice, ...]
    line: int


@dataclass(frozen=True)
class Op:
    """A binary operator by Stan's spelling (``+``, ``.*``, ``==``, ``&&``...), or a unary one
    (``neg``, ``!``, ``'``) with one operand."""

    op: str
    args: tuple[StanExpr, ...]
    line: int


@dataclass(frozen=True)
class FnCall:
    """``f(a, b)``; ``normal_lpdf(y | mu, sigma)`` has ``conditional`` set and ``y`` first."""

    name: str
    args: tuple[StanExpr, ...]
    line: int
    conditional: bool = False


@dataclass(frozen=True)
class Ternary:
    condition: StanExpr
    if_true: StanExpr
    if_false: StanExpr
    line: int


@dataclass(frozen=True)
class ArrayExpr:
    """``{a, b}`` (an array) or ``[a, b]`` (a row vector)."""

    items: tuple[StanExpr, ...]
    row_vector: bool
    line: int


StanExpr = Union[Num, Name, Indexed, Op, FnCall, Ternary, ArrayExpr]

# --------------------------------------------------------------------------- types and statements


@dataclass(frozen=True)
class StanType:
    """``array[sizes] base<bounds>[shape]``: ``base`` is int, real, vector, row_vector, matrix
    or a constrained type (simplex, cholesky_factor_corr, ...)."""

    base: str
    shape: tuple[StanExpr, ...] = ()
    array_sizes: tuple[StanExpr, ...] = ()
    bounds: tuple[tuple[str, StanExpr], ...] = ()

    #: Where the base type's keyword (``real``, ``vector``...) ends in the program's text: where
    #: a ``<...>`` constraint starts, so that a program can be rewritten with other bounds
    #: (``stan_program.reparametrize``); None where not read from a program's text.
    keyword_end: int | None = field(default=None, compare=False)

    def bound(self, kind: str) -> StanExpr | None:
        return dict(self.bounds).get(kind)


@dataclass(frozen=True)
class Decl:
    type: StanType
    name: str
    value: StanExpr | None
    line: int
    #: Declared inside a nested ``{ ... }``: a local variable, never one of the block's outputs.
    nested: bool = False
    #: Where the declaration starts and ends in the program's text (None: not read from one).
    span: tuple[int, int] | None = field(default=None, compare=False)


@dataclass(frozen=True)
class Assign:
    target: StanExpr
    op: str  # =, +=, -=, *=, /=, .*=, ./=
    value: StanExpr
    line: int


@dataclass(frozen=True)
class Tilde:
    value: StanExpr
    distribution: str
    args: tuple[StanExpr, ...]
    truncation: tuple[StanExpr | None, StanExpr | None] | None
    line: int


@dataclass(frozen=True)
class TargetIncrement:
    value: StanExpr
    line: int


@dataclass(frozen=True)
class For:
    variable: str
    start: StanExpr
    end: StanExpr | None  # None: a foreach over the elements of ``start``
    body: tuple[Statement, ...]
    line: int


@dataclass(frozen=True)
class While:
    condition: StanExpr
    body: tuple[Statement, ...]
    line: int


@dataclass(frozen=True)
class If:
    condition: StanExpr
    then: tuple[Statement, ...]
    otherwise: tuple[Statement, ...]
    line: int


@dataclass(frozen=True)
class Other:
    """A statement polyppl's lowering does not take (print, reject, break, a function's
    ``return``, a call as a statement): kept with its kind and line so that the lowering
    can name it."""

    kind: str
    line: int


@dataclass(frozen=True)
class Return:
    """``return expr;`` in a user function's body (``value`` None: ``return;``)."""

    value: StanExpr | None
    line: int


Statement = Union[Decl, Assign, Tilde, TargetIncrement, For, While, If, Return, Other]


@dataclass(frozen=True)
class FunctionDef:
    """A user function: its return type and arguments as Stan writes them (``real``,
    ``array[] vector``), and its body (None: a forward declaration)."""

    name: str
    line: int
    return_type: str = ""
    args: tuple[tuple[str, str], ...] = ()  # (type, name)
    body: tuple[Statement, ...] | None = None


@dataclass(frozen=True)
class Program:
    functions: tuple[FunctionDef, ...] = ()
    data: tuple[Decl, ...] = ()
    transformed_data: tuple[Statement, ...] = ()
    parameters: tuple[Decl, ...] = ()
    transformed_parameters: tuple[Statement, ...] = ()
    model: tuple[Statement, ...] = ()
    generated_quantities: tuple[Statement, ...] = ()
    text: str = field(default="", repr=False)


# --------------------------------------------------------------------------- the transformer

_BINARY = {
    "or_": "||", "and_": "&&", "eq": "==", "ne": "!=", "lt": "<", "le": "<=", "gt": ">", "ge": ">=",
    "add": "+", "sub": "-", "mul": "*", "div": "/", "elt_mul": ".*", "elt_div": "./", "mod": "%",
    "int_div": "%/%", "left_div": "\\", "pow": "^", "elt_pow": ".^",
}


def _line(meta) -> int:
    return getattr(meta, "line", 0)


def _keyword_end(meta, keyword: str) -> int | None:
    start = getattr(meta, "start_pos", None)
    return None if start is None else start + len(keyword)


def _body(statement) -> tuple:
    """A statement's body as a tuple of statements (a block's own, or the one statement)."""
    return _flatten(statement if isinstance(statement, tuple) else (statement,))


@v_args(meta=True)
class _ToTree(Transformer):
    # ----- expressions
    def int_literal(self, meta, children):
        return Num(float(children[0].replace("_", "")), True, _line(meta) or children[0].line)

    def real_literal(self, meta, children):
        return Num(float(children[0].replace("_", "")), False, _line(meta) or children[0].line)

    def imag_literal(self, meta, children):
        return FnCall("complex_literal", (), children[0].line)

    def name(self, meta, children):
        return Name(str(children[0]), children[0].line)

    def call(self, meta, children):
        name, args = children
        return FnCall(str(name), tuple(args or ()), name.line)

    def conditional_call(self, meta, children):
        name, first, rest = children
        return FnCall(str(name), (first, *(rest or ())), name.line, conditional=True)

    def expr_list(self, meta, children):
        return tuple(children)

    def indexes(self, meta, children):
        return tuple(children)

    def slice(self, meta, children):
        return Slice(children[0], children[1], _line(meta))

    def all_index(self, meta, children):
        return Slice(None, None, _line(meta))

    def indexed(self, meta, children):
        return Indexed(children[0], children[1], _line(meta))

    def transposed(self, meta, children):
        return Op("'", (children[0],), _line(meta))

    def neg(self, meta, children):
        return Op("neg", (children[0],), _line(meta))

    def not_(self, meta, children):
        return Op("!", (children[0],), _line(meta))

    def conditional_op(self, meta, children):
        return Ternary(*children, _line(meta))

    def array_expr(self, meta, children):
        return ArrayExpr(children[0], False, _line(meta))

    def row_vector_expr(self, meta, children):
        return ArrayExpr(children[0], True, _line(meta))

    # ----- types
    def bound(self, meta, children):
        return (str(children[0].children[0]), children[1])

    def range(self, meta, children):
        return tuple(children)

    constraint = range

    def int_type(self, meta, children):
        return StanType("int", (), (), children[0] if children else ())

    def real_type(self, meta, children):
        return StanType("real", (), (), children[0] if children else (), _keyword_end(meta, "real"))

    def _sized(self, base, children, meta):
        bounds = children[0] if children and isinstance(children[0], tuple) and children[0] \
            and isinstance(children[0][0], tuple) else ()
        shape = tuple(c for c in children if not (isinstance(c, tuple)))
        return StanType(base, shape, (), bounds, _keyword_end(meta, base))

    def vector_type(self, meta, children):
        return self._sized("vector", children, meta)

    def row_vector_type(self, meta, children):
        return self._sized("row_vector", children, meta)

    def matrix_type(self, meta, children):
        return self._sized("matrix", children, meta)

    def special_type(self, meta, children):
        return StanType(str(children[0].children[0]), tuple(children[1:]))

    def type(self, meta, children):
        if len(children) == 2:
            sizes, base = children
            return StanType(base.base, base.shape, tuple(sizes), base.bounds, base.keyword_end)
        return children[0]

    # ----- statements
    def var_decl(self, meta, children):
        value = children[2] if len(children) > 2 else None
        span = (meta.start_pos, meta.end_pos) if hasattr(meta, "start_pos") else None
        return Decl(children[0], str(children[1]), value, _line(meta), span=span)

    def assign(self, meta, children):
        target, op, value = children
        return Assign(target, str(op.children[0]), value, _line(meta))

    def tilde(self, meta, children):
        value, name, args, truncation = (children + [None])[:4]
        return Tilde(value, str(name), tuple(args or ()), truncation, _line(meta))

    def truncation(self, meta, children):
        return (children[0], children[1])

    def target_increment(self, meta, children):
        return TargetIncrement(children[0], _line(meta))

    def for_stmt(self, meta, children):
        if len(children) == 4:
            name, start, end, body = children
        else:
            (name, start, body), end = children, None
        return For(str(name), start, end, _body(body), _line(meta))

    def while_stmt(self, meta, children):
        return While(children[0], _body(children[1]), _line(meta))

    def if_stmt(self, meta, children):
        otherwise = _body(children[2]) if len(children) > 2 else ()
        return If(children[0], _body(children[1]), otherwise, _line(meta))

    def block(self, meta, children):
        return tuple(children)

    def _other(kind):  # noqa: N805 (a factory of methods)
        def method(self, meta, children):
            return Other(kind, _line(meta))
        return method

    print_stmt = _other("print")
    reject_stmt = _other("reject")
    break_stmt = _other("break")
    continue_stmt = _other("continue")

    def return_stmt(self, meta, children):
        return Return(children[0] if children else None, _line(meta))

    call_stmt = _other("a function call as a statement")
    empty_stmt = _other("empty")

    def fundef(self, meta, children):
        return_type, name, *rest = children
        args = tuple(c for c in rest if isinstance(c, tuple) and len(c) == 2 and isinstance(c[1], str))
        bodies = [c for c in rest if isinstance(c, tuple) and not any(c is a for a in args)]
        return FunctionDef(str(name), _line(meta), return_type, args, _flatten(bodies[0]) if bodies else None)

    def return_type(self, meta, children):
        return str(children[0]) if children else "void"

    def unsized_type(self, meta, children):
        """The base type (``real``, ``vector``...); an array's brackets are not kept."""
        return str(children[-1].children[0]) if hasattr(children[-1], "children") else str(children[-1])

    def fun_arg(self, meta, children):
        return (children[-2], str(children[-1]))

    # ----- blocks
    def functions_block(self, meta, children):
        return ("functions", tuple(children))

    def data_block(self, meta, children):
        return ("data", tuple(children))

    def tdata_block(self, meta, children):
        return ("transformed_data", _flatten(children))

    def params_block(self, meta, children):
        return ("parameters", tuple(children))

    def tparams_block(self, meta, children):
        return ("transformed_parameters", _flatten(children))

    def model_block(self, meta, children):
        return ("model", _flatten(children))

    def gq_block(self, meta, children):
        return ("generated_quantities", _flatten(children))

    def start(self, meta, children):
        return Program(**dict(children))


def _binary_method(op: str):
    def method(self, meta, children):
        return Op(op, (children[0], children[1]), _line(meta))
    return method


for _rule, _op in _BINARY.items():
    setattr(_ToTree, _rule, v_args(meta=True)(_binary_method(_op)))


def _flatten(statements) -> tuple:
    """A block's statements; a nested ``{ ... }`` keeps its statements in order (its local
    scope does not matter to the lowering, which names every local by its declaration)."""
    out = []
    for statement in statements:
        if isinstance(statement, tuple):
            out.extend(replace(s, nested=True) if isinstance(s, Decl) else s for s in _flatten(statement))
        elif not (isinstance(statement, Other) and statement.kind == "empty"):
            out.append(statement)
    return tuple(out)


@lru_cache(maxsize=1)
def _parser() -> lark.Lark:
    grammar = (Path(__file__).parent / "grammar.lark").read_text()
    return lark.Lark(grammar, parser="lalr", propagate_positions=True)


def parse_program(text: str, source: str = "program") -> Program:
    """The tree of a Stan program; a text that does not parse is a UserError naming the line."""
    try:
        tree = _parser().parse(text)
    except lark.exceptions.UnexpectedInput as exc:
        raise UserError(f"{source}: line {exc.line}: the Stan front end cannot read this program here "
                        f"(column {exc.column})") from None
    program = _ToTree().transform(tree)
    return Program(**{**program.__dict__, "text": text})
