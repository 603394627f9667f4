"""Arrays assigned row by row, and recursions whose state is a vector: what ``lower.py``
hands over to this module for a two-dimensional array (``array[K] simplex[K] theta``,
``array[N, K] real gamma``) assigned one row at a time.

* **A row assigned** (``theta[1] = theta1``, or ``gamma[1, k] = ...`` in a loop over all of
  k): the row is kept, and when the array is read whole its rows are joined
  (:class:`~polyppl.spec.Concat`) and read back as a matrix through an index array.
* **A recursion whose state is a row** (an HMM's forward algorithm): a loop over ``t`` whose
  body assigns ``x[t, k]`` in a loop over all of k, from ``x[t-1, j]`` (an inner loop over
  j, summed with ``sum`` or ``log_sum_exp`` through a local array), data at ``t`` and
  parameters. The body is lowered once, vectorized over k and j (a vector along k, a
  matrix along (j, k) inside the step), as the body of a :class:`~polyppl.spec.Scan` whose
  carry is the row ``x[t-1]``: each backend's own loop over t, never unrolled. The data read
  at ``t`` are the scan's sequences. ``log_sum_exp`` over j is shifted by the largest
  element (``max``), so that it neither overflows nor underflows; what does not vary along
  j is taken out of it first.

``loops.py`` keeps recursions of one scalar per step; this module those of a vector.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from polyppl import spec as s
from polyppl.models.stan_program import densities, interpret, loops
from polyppl.models.stan_program.interpret import Unsupported
from polyppl.models.stan_program.parse import Assign, FnCall, For, Indexed, Name, Num, Op, Slice
from polyppl.models.stan_program.symbols import Sym, names, unsupported

#: Stan's elementwise functions inside a step, by the spec's names.
_ELEMENTWISE = {"exp": "exp", "log": "log", "log1p": "log1p", "sqrt": "sqrt", "inv_logit": "inv_logit",
                "logit": "logit", "lgamma": "lgamma"}
_OPERATORS = {"+": "+", "-": "-", "*": "*", "/": "/", ".*": "*", "./": "/", "^": "**", ".^": "**"}


@dataclass
class Rows:
    """A two-dimensional array assigned row by row: the rows known so far, and the rows a
    recursion computed (``block``: first row, last row, the scan's states, the scan's dim)."""

    dims: tuple[str, str]
    rows: dict[int, Sym] = field(default_factory=dict)
    block: tuple[int, int, s.Expr, str] | None = None

    def has(self, at: int) -> bool:
        return at in self.rows or (self.block is not None and self.block[0] <= at <= self.block[1])


def _state(lw) -> dict[str, Rows]:
    return lw.loop_state.rows


def _two_dims(lw, name: str, line: int) -> tuple[str, str] | None:
    if name in _state(lw):
        return _state(lw)[name].dims
    if name not in lw.declared or name in lw.syms:
        return None
    dims = lw._declared_dims(name, line)
    return dims if len(dims) == 2 else None


def _constant_position(lw, expr, size: int, line: int) -> int | None:
    """An index of data alone (no loop variable) as one integer in 1..size, else None."""
    if names(expr) & {loop.variable for loop in lw.loops}:
        return None
    at = lw._constant_or_none(expr)
    if at is None or np.ndim(at):
        return None
    if not 1 <= int(at) <= size:
        raise Unsupported(line, f"index {int(at)} is outside 1..{size}")
    return int(at)


# --------------------------------------------------------------------------- rows


def assign_row(lw, st: Assign) -> bool:
    """``x[c] = v`` (a vector) outside loops, or ``x[c, k] = e`` in a loop over all of k:
    row ``c`` of a two-dimensional ``x``. False where the statement is not of that form."""
    target = st.target
    if not (isinstance(target, Indexed) and isinstance(target.base, Name) and target.indexes
            and not any(isinstance(i, Slice) for i in target.indexes)):
        return False
    name = target.base.name
    dims = _two_dims(lw, name, st.line)
    if dims is None:
        return False
    at = _constant_position(lw, target.indexes[0], lw.dim_sizes[dims[0]], st.line)
    if at is None:
        return False
    if st.op != "=":
        raise unsupported(st.line, f"{st.op} on a row of {name}")
    if len(target.indexes) == 1 and not lw.loops:
        value = lw._expr(st.value)
        if value.nloop or len(value.dims) != 1 or lw.dim_sizes[value.dims[0]] != lw.dim_sizes[dims[1]]:
            raise unsupported(st.line, f"a value of dims {value.dims or '()'} for a row of {name} (dims {dims[1:]})")
        value = Sym(renamed(lw, value.expr, value.dims, dims[1:]), dims[1:], "vector")
    elif len(target.indexes) == 2 and len(lw.loops) == 1 and isinstance(target.indexes[1], Name) \
            and target.indexes[1].name == lw.loops[0].variable:
        loop = lw.loops[0]
        if loop.start != 1 or loop.size != lw.dim_sizes[dims[1]]:
            raise unsupported(st.line, f"a loop over part of a row of {name}")
        loop.dim = loop.dim or dims[1]
        if lw.dim_sizes[loop.dim] != lw.dim_sizes[dims[1]]:
            raise unsupported(st.line, f"a loop variable indexing dims {loop.dim} and {dims[1]}")
        value = lw._expr(st.value)
        if value.dims[value.nloop:] or value.nloop > 1:
            raise unsupported(st.line, f"a value that is not a scalar for {name}[{at}, {loop.variable}]")
        loop.assigned.add(name)
    else:
        raise unsupported(st.line, f"assigning part of a row of {name}")
    expr = value.expr if value.nloop else s.Binary("+", value.expr, s.Var(lw._zeros(dims[1:])))
    rows = _state(lw).setdefault(name, Rows(dims))
    if rows.has(at):
        raise unsupported(st.line, f"assigning row {at} of {name} again")
    rows.rows[at] = Sym(expr, dims[1:], "vector")
    lw.syms.pop(name, None)
    return True


def _identity(lw, rows: str, cols: str) -> s.Expr:
    name = f"identity_{rows}_{cols}"
    lw.values[name] = np.eye(lw.dim_sizes[rows])
    lw.synthetic_dims[name] = (rows, cols)
    return s.Var(name)


def renamed(lw, expr: s.Expr, dims: tuple[str, ...], to: tuple[str, ...]) -> s.Expr:
    """``expr`` (a vector or matrix) over dims of the same sizes named ``to`` (``K_col`` for
    ``K``): a product with an identity matrix, exact."""
    if len(dims) == 1 and dims != to:
        return s.matmul(_identity(lw, to[0], dims[0]), expr)
    if len(dims) == 2:
        if dims[1] != to[1]:
            expr = s.matmul(expr, _identity(lw, dims[1], to[1]))
        if dims[0] != to[0]:
            expr = s.matmul(_identity(lw, to[0], dims[0]), expr)
    return expr


def _row(lw, name: str, at: int, line: int) -> Sym:
    rows = _state(lw)[name]
    if at in rows.rows:
        return rows.rows[at]
    if rows.block is None or not rows.block[0] <= at <= rows.block[1]:
        raise unsupported(line, f"{name}[{at}] before it has a value")
    first, last, states, ldim = rows.block
    # Row ``at`` of the scan's states: its elements, read from the states laid out row by row.
    size = lw.dim_sizes[rows.dims[1]]
    flat = _flat_dim(lw, f"{ldim}_by_{rows.dims[1]}", (last - first + 1) * size)
    node = loops._index_node(lw, rows.dims[1:], flat, np.arange(size) + (at - first) * size, f"{flat}_idx")
    return Sym(s.Index(s.Concat(flat, (states,)), s.Var(node)), rows.dims[1:], "vector")


def _flat_dim(lw, name: str, size: int) -> str:
    while lw.dim_sizes.setdefault(name, size) != size:
        name += "_"
    return name


def index(lw, expr: Indexed) -> Sym | None:
    """``x[c]`` or ``x[c, i]`` (constants) of an array assigned row by row; None where
    ``expr`` is not of such an array."""
    if not (isinstance(expr.base, Name) and expr.base.name in _state(lw)):
        return None
    name, rows = expr.base.name, _state(lw)[expr.base.name]
    at = _constant_position(lw, expr.indexes[0], lw.dim_sizes[rows.dims[0]], expr.line) \
        if not isinstance(expr.indexes[0], Slice) else None
    if at is None:
        if len(expr.indexes) == 2 and all(isinstance(i, Name) for i in expr.indexes):
            return lw._multi_loop_index(whole(lw, name, expr.line), expr)
        if len(expr.indexes) == 1 and isinstance(expr.indexes[0], Name):
            return None  # x[k] in a loop over k: lower.py's own way, on x read whole
        raise unsupported(expr.line, f"{name} read at an index that is not an integer known now")
    row = _row(lw, name, at, expr.line)
    if len(expr.indexes) == 1:
        return row
    if len(expr.indexes) == 2 and not isinstance(expr.indexes[1], Slice):
        position = _constant_position(lw, expr.indexes[1], lw.dim_sizes[rows.dims[1]], expr.line)
        if position is not None:
            node = lw._constant_index(rows.dims[1], position, expr.line)
            return Sym(s.Index(row.expr, s.Var(node)), (), "scalar")
    raise unsupported(expr.line, f"this index into {name}")


def whole(lw, name: str, line: int) -> Sym:
    """All of an array assigned row by row: its rows joined, read back as a matrix."""
    rows = _state(lw)[name]
    count, size = (lw.dim_sizes[d] for d in rows.dims)
    parts, at = [], 1
    while at <= count:
        if at in rows.rows:
            parts.append(rows.rows[at].expr)
            at += 1
        elif rows.block is not None and rows.block[0] == at:
            parts.append(rows.block[2])
            at = rows.block[1] + 1
        else:
            raise unsupported(line, f"{name} read whole, but {name}[{at}] has no value")
    flat = _flat_dim(lw, f"{name}_flat", count * size)
    node = loops._index_node(lw, rows.dims, flat, np.arange(count * size).reshape(count, size), f"{name}_rows")
    return Sym(s.Index(s.Concat(flat, tuple(parts)), s.Var(node)), rows.dims, "array")


def complete(lw) -> None:
    """Every array assigned row by row with every row known, as a whole (the end of a block)."""
    for name in list(_state(lw)):
        try:
            lw.syms[name] = whole(lw, name, 0)
        except Unsupported:
            pass
        del _state(lw)[name]


# --------------------------------------------------------------------------- recursions


def recursion(lw, st: For) -> bool:
    """A loop over t that assigns ``x[t, k]`` of an array assigned row by row, from
    ``x[t-1, ...]``: the rows ``t`` of ``x`` as a scan. False where the loop is not one."""
    written = [x for x in _rows_written_at(st.body, st.variable) if x in _state(lw)]
    if not written:
        return False
    if lw.loops:
        raise unsupported(st.line, "a recursion on rows inside another loop")
    if len(written) > 1:
        raise unsupported(st.line, f"a recursion carrying several arrays ({', '.join(sorted(written))})")
    (name,) = written
    rows = _state(lw)[name]
    start = lw._data_value_of(st.start, "a loop bound")
    end = lw._data_value_of(st.end, "a loop bound")
    if np.ndim(start) or np.ndim(end):
        raise unsupported(st.line, "a loop bound that is not one integer")
    start, end = int(start), int(end)
    if end < start:
        return True
    if start < 2 or not rows.has(start - 1) or end > lw.dim_sizes[rows.dims[0]] \
            or any(rows.has(t) for t in range(start, end + 1)):
        raise unsupported(st.line, f"a recursion on {name} from row {start} that does not follow its known rows")
    init = _row(lw, name, start - 1, st.line)
    ldim = loops.partial_loop_dim(lw, st.end, start, end)
    step = _Step(lw, name, rows.dims, st.variable, np.arange(start, end + 1), ldim, st.line)
    body = step.run(st.body)
    sequences = step.sequences or [(f"{step.carry}_step", s.Var(lw._zeros((ldim,))))]
    scan = s.Scan(ldim, init.expr, step.carry, tuple(sequences), body)
    rows.block = (start, end, scan, ldim)
    return True


def _rows_written_at(statements, t: str) -> set[str]:
    """The arrays whose element ``x[t, ...]`` the statements assign."""
    out: set[str] = set()
    for st in statements:
        if isinstance(st, For):
            out |= _rows_written_at(st.body, t)
        elif isinstance(st, Assign) and isinstance(st.target, Indexed) and isinstance(st.target.base, Name) \
                and len(st.target.indexes) == 2 and isinstance(st.target.indexes[0], Name) \
                and st.target.indexes[0].name == t:
            out.add(st.target.base.name)
    return out


@dataclass(frozen=True)
class _Value:
    """A value inside the step: a spec expression and the loops it varies along, in the
    order ("j", "k") (a matrix's rows are j, its columns k)."""

    expr: s.Expr
    axes: tuple[str, ...] = ()


class _Step:
    """The body of a loop over t, lowered once as the step of a scan whose carry is
    ``x[t-1]`` (k: the loop over a row's elements; j: a loop inside it)."""

    def __init__(self, lw, name: str, dims: tuple[str, str], t: str, ts: np.ndarray, ldim: str, line: int) -> None:
        self.lw, self.name, self.dims, self.t, self.ts, self.ldim, self.line = lw, name, dims, t, ts, ldim, line
        self.carry = loops._fresh(lw, f"{name}_prev")
        self.roles: dict[str, str] = {}  # loop variable -> "k" or "j"
        self.dim_of: dict[str, str] = {"k": dims[1]}
        self.locals: dict[str, list[tuple[int, _Value]]] = {}  # acc[j] = ...: its summands
        self.sequences: list[tuple[str, s.Expr]] = []
        self.new: _Value | None = None

    # -- statements

    def run(self, statements) -> s.Expr:
        self._statements(statements)
        if self.new is None:
            raise unsupported(self.line, f"a loop that does not assign {self.name}[{self.t}, k] in a loop over k")
        value = self.new
        if "j" in value.axes:
            raise unsupported(self.line, f"{self.name}[{self.t}, k] varying along an inner loop")
        if not value.axes:
            return s.Binary("+", value.expr, s.Var(self.lw._zeros(self.dims[1:])))
        return value.expr

    def _statements(self, statements) -> None:
        for st in statements:
            if isinstance(st, For):
                self._for(st)
            elif isinstance(st, Assign):
                self._assign(st)
            else:
                what = {"Decl": "a local variable declared", "If": "an if", "While": "a while loop"}.get(
                    type(st).__name__, "this statement")
                raise unsupported(st.line, f"{what} inside the step of a recursion on {self.name}")

    def _for(self, st: For) -> None:
        role = "k" if "k" not in self.roles.values() else "j" if "j" not in self.roles.values() else None
        if role is None or st.end is None:
            raise unsupported(st.line, f"a loop nested three deep in a recursion on {self.name}")
        start = self.lw._data_value_of(st.start, "a loop bound")
        end = self.lw._data_value_of(st.end, "a loop bound")
        if np.ndim(start) or np.ndim(end) or int(start) != 1:
            raise unsupported(st.line, "a loop over part of a range in a recursion's step")
        if role == "k" and int(end) != self.lw.dim_sizes[self.dims[1]]:
            raise unsupported(st.line, f"a loop over 1:{int(end)} for the {self.lw.dim_sizes[self.dims[1]]} "
                                       f"elements of a row of {self.name}")
        if role == "j":
            self.dim_of["j"] = self.lw._dim(st.end)
        self.roles[st.variable] = role
        try:
            self._statements(st.body)
        finally:
            del self.roles[st.variable]

    def _assign(self, st: Assign) -> None:
        target = st.target
        if st.op != "=" or not (isinstance(target, Indexed) and isinstance(target.base, Name)):
            raise unsupported(st.line, f"this assignment in a recursion on {self.name}")
        name, indexes = target.base.name, target.indexes
        if name == self.name:
            if not (len(indexes) == 2 and isinstance(indexes[0], Name) and indexes[0].name == self.t
                    and isinstance(indexes[1], Name) and self.roles.get(indexes[1].name) == "k"
                    and "j" not in self.roles.values()):
                raise unsupported(st.line, f"assigning {self.name} other than {self.name}[{self.t}, k] in a loop over k")
            if self.new is not None:
                raise unsupported(st.line, f"{self.name}[{self.t}, k] assigned twice")
            self.new = self._expr(st.value)
            return
        declared = self.lw.declared.get(name)
        if declared is None or len(indexes) != 1 or not isinstance(indexes[0], Name) \
                or self.roles.get(indexes[0].name) != "j" or len(self.lw._dims(declared.type)) != 1:
            raise unsupported(st.line, f"assigning {name} in a recursion on {self.name} "
                                       "(only a local array, element by element in the inner loop)")
        if self.lw.dim_sizes[self.lw._dims(declared.type)[0]] != self.lw.dim_sizes[self.dim_of["j"]]:
            raise unsupported(st.line, f"{name} of another size than the loop that assigns it")
        self.locals[name] = [(sign, self._expr(term)) for sign, term in _summands(st.value, 1)]

    # -- expressions

    def _expr(self, expr) -> _Value:
        line = getattr(expr, "line", self.line)
        read = names(expr)
        if not read & (set(self.roles) | {self.t, self.name} | set(self.locals)):
            value = self.lw._expr(expr)
            if value.dims or value.nloop:
                raise unsupported(line, f"a value of dims {value.dims} in a recursion's step")
            return _Value(value.expr)
        if isinstance(expr, Num):
            return _Value(s.Const(float(expr.value)))
        if isinstance(expr, Name):
            if expr.name in self.roles or expr.name == self.t:
                raise unsupported(line, f"the loop variable {expr.name} used as a value")
            raise unsupported(line, f"{expr.name} read whole in a recursion's step")
        if isinstance(expr, Indexed):
            return self._indexed(expr)
        if isinstance(expr, Op) and len(expr.args) == 1 and expr.op == "neg":
            value = self._expr(expr.args[0])
            return _Value(s.Call("neg", (value.expr,)), value.axes)
        if isinstance(expr, Op) and len(expr.args) == 2 and expr.op in _OPERATORS:
            a, b = self._aligned([self._expr(a) for a in expr.args])
            return _Value(s.Binary(_OPERATORS[expr.op], a.expr, b.expr), _union(a, b))
        if isinstance(expr, FnCall):
            return self._call(expr)
        raise unsupported(line, f"this expression in a recursion on {self.name}")

    def _indexed(self, expr: Indexed) -> _Value:
        base, indexes, line = expr.base, expr.indexes, expr.line
        if not isinstance(base, Name) or any(isinstance(i, Slice) for i in indexes):
            raise unsupported(line, f"this index in a recursion on {self.name}")
        if base.name == self.name:
            previous = isinstance(indexes[0], Op) and indexes[0].op == "-" and isinstance(indexes[0].args[0], Name) \
                and indexes[0].args[0].name == self.t and isinstance(indexes[0].args[1], Num) \
                and indexes[0].args[1].value == 1
            role = self.roles.get(indexes[1].name) if len(indexes) == 2 and isinstance(indexes[1], Name) else None
            if not previous or role is None:
                raise unsupported(line, f"{self.name} read other than at [{self.t} - 1, j] in the loop that writes it "
                                        "(a recursion of one lag)")
            return _Value(s.Var(self.carry), (role,))
        if self.t in names(indexes[0]) and len(indexes) == 1:
            return _Value(s.Var(self._sequence(base.name, indexes[0], line)))
        if self.t in set().union(*(names(i) for i in indexes)):
            raise unsupported(line, f"{base.name} indexed by {self.t} other than as one-dimensional data")
        roles = [self.roles.get(i.name) if isinstance(i, Name) else None for i in indexes]
        if None in roles or len(set(roles)) != len(roles):
            raise unsupported(line, f"{base.name} indexed other than by the step's loop variables")
        whole = self.lw._expr(base)
        if whole.nloop or len(whole.dims) != len(roles):
            raise unsupported(line, f"{base.name} (dims {whole.dims}) indexed by {len(roles)} loop variables")
        for role, dim in zip(roles, whole.dims):
            if self.lw.dim_sizes[dim] != self.lw.dim_sizes[self.dim_of[role]]:
                raise unsupported(line, f"a loop over 1:{self.lw.dim_sizes[self.dim_of[role]]} indexing "
                                        f"a dimension of size {self.lw.dim_sizes[dim]}")
        expr = renamed(self.lw, whole.expr, whole.dims, tuple(self.dim_of[r] for r in roles))
        if roles == ["k", "j"]:
            return _Value(s.transpose(expr), ("j", "k"))
        return _Value(expr, tuple(roles))

    def _sequence(self, name: str, position, line: int) -> str:
        """Data read at ``t`` (``y[t]``): a sequence of the scan, its values at every t."""
        if name not in self.lw.values or name in self.lw.syms:
            raise unsupported(line, f"{name}[{self.t}] of a value that is not data in a recursion's step")
        try:
            positions = np.asarray(interpret.evaluate(position, {**self.lw.values, self.t: self.ts}))
            values = np.asarray(self.lw.values[name])[positions - 1]
        except (Unsupported, KeyError, IndexError, ValueError, TypeError):
            raise unsupported(line, f"{name} indexed other than by arithmetic on {self.t}") from None
        if values.ndim != 1:
            raise unsupported(line, f"{name}[{self.t}] that is not a number")
        stored = loops._gathered(self.lw, name, values.astype(float), (self.ldim,))
        element = f"{stored}_t"
        self.sequences.append((element, s.Var(stored)))
        return element

    def _call(self, expr: FnCall) -> _Value:
        name, line = expr.name, expr.line
        if name in ("log_sum_exp", "sum") and len(expr.args) == 1 and isinstance(expr.args[0], Name) \
                and expr.args[0].name in self.locals:
            return self._reduce(name, self.locals[expr.args[0].name])
        args = [self._expr(a) for a in expr.args]
        if name in _ELEMENTWISE and len(args) == 1:
            return _Value(s.Call(_ELEMENTWISE[name], (args[0].expr,)), args[0].axes)
        aligned = self._aligned(args)
        axes = _union(*args)
        if name == "log_sum_exp" and len(args) == 2:
            return _Value(s.log_sum_exp(aligned[0].expr, aligned[1].expr), axes)
        if expr.conditional and name.endswith(("_lpdf", "_lupdf")):
            function = name.replace("_lupdf", "_lpdf")
            return _Value(densities.elementwise_lpdf(function, aligned[0].expr,
                                                     tuple(a.expr for a in aligned[1:]), line), axes)
        raise unsupported(line, f"{name} in a recursion on {self.name}")

    def _reduce(self, function: str, summands: list[tuple[int, _Value]]) -> _Value:
        """``sum`` or ``log_sum_exp`` over j of a local array assigned in the loop over j."""
        size = self.lw.dim_sizes[self.dim_of["j"]]
        varying = [(sign, v) for sign, v in summands if "j" in v.axes]
        fixed = [(sign, v) for sign, v in summands if "j" not in v.axes]
        if function == "sum":
            fixed = [(sign, _Value(s.Binary("*", v.expr, s.Const(float(size))), v.axes)) for sign, v in fixed]
            total = self._total(varying) if varying else None
            reduced = None if total is None else self._over_j(total, "sum")
        else:
            # log_sum_exp_j(a_j + b) = log_sum_exp_j(a_j) + b: b, constant in j, is taken out.
            total = self._total(varying) if varying else None
            reduced = _Value(s.Const(float(np.log(size)))) if total is None else self._over_j(total, "log_sum_exp")
        out = self._total([(1, reduced)] + fixed) if reduced is not None else self._total(fixed)
        return out

    def _over_j(self, value: _Value, function: str) -> _Value:
        ones = s.Var(loops._ones(self.lw, (self.dim_of["j"],)))
        if function == "log_sum_exp":
            shift = s.max_all(value.expr)
            inner = s.exp(value.expr - shift)
        else:
            shift, inner = None, value.expr
        if value.axes == ("j",):
            reduced = s.sum_all(inner)
        else:
            reduced = s.matmul(s.transpose(inner), ones)
        if shift is not None:
            reduced = shift + s.log(reduced)
        return _Value(reduced, tuple(a for a in value.axes if a != "j"))

    def _total(self, summands: list[tuple[int, _Value]]) -> _Value:
        values = self._aligned([v for _, v in summands])
        total: s.Expr | None = None
        for (sign, _), value in zip(summands, values):
            if total is None:
                total = value.expr if sign > 0 else s.Call("neg", (value.expr,))
            else:
                total = s.Binary("+" if sign > 0 else "-", total, value.expr)
        return _Value(total if total is not None else s.Const(0.0), _union(*values))

    def _aligned(self, values: list[_Value]) -> list[_Value]:
        """Values of one operation: along (j, k) all, where any is along both or they are
        along different loops (the spec combines equal dims, or a scalar with anything)."""
        axes = _union(*values)
        if len(axes) < 2:
            return values
        return [self._as_matrix(v) for v in values]

    def _as_matrix(self, value: _Value) -> _Value:
        if value.axes in ((), ("j", "k")):
            return value
        j, k = self.dim_of["j"], self.dim_of["k"]
        if value.axes == ("j",):
            return _Value(s.diag_pre_multiply(value.expr, s.Var(loops._ones(self.lw, (j, k)))), ("j", "k"))
        return _Value(s.transpose(s.diag_pre_multiply(value.expr, s.Var(loops._ones(self.lw, (k, j))))), ("j", "k"))


def _union(*values: _Value) -> tuple[str, ...]:
    axes = set().union(*(v.axes for v in values))
    return tuple(a for a in ("j", "k") if a in axes)


def _summands(expr, sign: int) -> list[tuple[int, object]]:
    if isinstance(expr, Op) and expr.op in ("+", "-") and len(expr.args) == 2:
        right = -sign if expr.op == "-" else sign
        return _summands(expr.args[0], sign) + _summands(expr.args[1], right)
    return [(sign, expr)]


__all__ = ["Rows", "assign_row", "complete", "index", "recursion", "whole"]
