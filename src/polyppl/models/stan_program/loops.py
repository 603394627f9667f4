"""Loops beyond "all of a vector, from 1": what ``lower.py`` hands over to this module.

Still vectorized, never unrolled:

* **A loop over part of a range** (``for (t in (K+1):T)``) gets a dim of its own
  (``from6_T``, of size T - K); its variable stands for every iteration at once, as in a
  loop over all of a vector.
* **Index arithmetic on data** (``y[t - k]``, ``y[t]`` in a partial loop, ``beta[k]`` in an
  inner loop) is run once with NumPy over the grid of the loops' values: a data array
  indexed so becomes a new data array (the lagged ``y`` as a (T - K) x K matrix), a
  parameter an :class:`~polyppl.spec.Index` by an index array.
* **A sum over an inner loop** (``mu = mu + beta[k] * y[t-k]`` or ``mu += ...``) is the
  sum of the loop's values along its dim (a product with a vector of ones).
* **Part of a vector assigned** (``nu[1] = ...``, then ``nu[t] = ...`` for t in 2:T):
  the pieces are kept and joined (:class:`~polyppl.spec.Concat`) when the whole vector is
  read.
* **A recursion**, a loop that reads ``x[t-1]`` of the ``x`` it writes (ARMA's errors,
  GARCH's volatility): the loop is lowered once with ``x[t-1]`` as a stand-in vector; then
  the part of ``x[t]``'s value that depends on the stand-in becomes the body of a
  :class:`~polyppl.spec.Scan` (each backend's own loop: PyTensor's and JAX's scan, a Stan
  ``for``), and everything else in the loop (terms of data and parameters alone) is
  computed vectorized, outside it, as the scan's sequences. What else the loop wrote (ARMA's
  ``nu``) is then vectorized on the scan's states.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace

import numpy as np

from polyppl import spec as s
from polyppl.models.stan_program import interpret
from polyppl.models.stan_program.interpret import Unsupported
from polyppl.models.stan_program.parse import (
    Assign, Decl, For, If, Indexed, Name, Num, Op, Slice, TargetIncrement, Tilde, While,
)
from polyppl.models.stan_program.symbols import Sym, assigned_names, element_kind, names, unsupported


@dataclass
class Segment:
    """Positions ``start..end`` (1-based, inclusive) of a vector: one scalar, or a value
    over a loop's dim."""

    start: int
    end: int
    value: object  # a Sym: dims () for one position, (dim,) for a loop's
    #: The loop that assigned it (a recursion reads it back, once that loop has run).
    loop: object = None


@dataclass
class LoopState:
    """What the lowering keeps for loops beyond the plain case."""

    #: Vectors assigned part by part, until they are read whole.
    partial: dict[str, list[Segment]] = field(default_factory=dict)
    #: The int data arrays the lowering gathered (``y[t-k]`` of int data).
    synthetic_int: set[str] = field(default_factory=set)
    #: Two-dimensional arrays assigned row by row (``vector_recursions.py``).
    rows: dict = field(default_factory=dict)
    counter: int = 0


@dataclass
class Recursion:
    """A loop that reads ``x[t-1]`` of a vector it writes: the stand-in for ``x[t-1]``."""

    variable: str
    stand_in: str


# --------------------------------------------------------------------------- helpers



def _fresh(lw, stem: str) -> str:
    """A node name no variable of the program or the lowering uses."""
    state: LoopState = lw.loop_state
    taken = set(lw.values) | set(lw.syms) | set(lw.index_nodes) | set(lw.types) | set(lw.dim_sizes)
    taken |= {d.name for d in lw.program.parameters}
    while True:
        state.counter += 1
        name = f"{stem}_{state.counter}"
        if name not in taken:
            return name


def loop_dim(lw, loop) -> str:
    """The dim a loop's variable runs along; a loop over all of a range that has not indexed
    anything yet takes the dim named by its end (``1:K`` -> ``K``)."""
    if loop.dim is None:
        loop.dim = loop.default_dim
    return loop.dim


def partial_loop_dim(lw, end_expr, start: int, end: int) -> str:
    """The dim of a loop over ``start..end`` (start > 1): ``from6_T`` for ``(K+1):T``."""
    end_name = end_expr.name if isinstance(end_expr, Name) else f"n{end}"
    name = f"from{start}_{end_name}"
    size = end - start + 1
    if lw.dim_sizes.setdefault(name, size) != size:
        name = f"from{start}_to{end}"
        lw.dim_sizes.setdefault(name, size)
    return name


def _loop_arrays(lw, m: int) -> dict[str, np.ndarray]:
    """Each of the first ``m`` loops' variable as an array of its values along its own axis."""
    out = {}
    for i, loop in enumerate(lw.loops[:m]):
        shape = [1] * m
        shape[i] = loop.size
        out[loop.variable] = np.arange(loop.start, loop.start + loop.size).reshape(shape)
    return out


def _loops_read(lw, expr) -> list[int]:
    read = names(expr)
    return [i for i, loop in enumerate(lw.loops) if loop.variable in read]


def _index_node(lw, dims: tuple[str, ...], index_of: str, positions: np.ndarray, stem: str) -> str:
    """An index node (0-based ``positions`` over ``dims`` into ``index_of``), shared by equal ones."""
    for name, node in lw.index_nodes.items():
        if node.dims == dims and node.index_of == index_of and np.array_equal(lw.index_values[name], positions):
            return name
    name = _fresh(lw, stem)
    lw.index_nodes[name] = s.Data(name, "int", dims, index_of=index_of)
    lw.index_values[name] = positions
    return name


def _gathered(lw, base_name: str, values: np.ndarray, dims: tuple[str, ...]) -> str:
    """A data array of values the lowering took from ``base_name`` (``y[t-k]`` for every t, k)."""
    name = _fresh(lw, f"{base_name}_at")
    lw.values[name] = values
    lw.synthetic_dims[name] = dims
    if values.dtype.kind in "iub":
        lw.loop_state.synthetic_int.add(name)
    return name


def _ones(lw, dims: tuple[str, ...]) -> str:
    name = "ones_" + "_".join(dims)
    lw.values[name] = np.ones(tuple(lw.dim_sizes[d] for d in dims))
    lw.synthetic_dims[name] = dims
    return name


def _one_dim(lw) -> str:
    lw.dim_sizes.setdefault("n1", 1)
    return "n1"


def _as_one_vector(lw, value) -> s.Expr:
    """A scalar as a vector of one element (dim ``n1``), for a :class:`~polyppl.spec.Concat`."""
    return s.Binary("+", value.expr, s.Var(lw._zeros((_one_dim(lw),))))


# --------------------------------------------------------------------------- indexing


def index(lw, expr: Indexed):
    """``expr`` lowered where this module takes it (a Sym), else None (``lower.py`` goes on):
    an element of a vector assigned part by part, or of the vector a recursion writes; an
    index that is arithmetic on loop variables and data, or a loop variable of a loop over
    part of a range or of an inner loop."""
    if len(expr.indexes) == 1 and isinstance(expr.indexes[0], Slice):
        return _slice(lw, expr, expr.indexes[0])
    if len(expr.indexes) != 1:
        return None
    position = expr.indexes[0]
    if isinstance(expr.base, Name):
        name = expr.base.name
        writer = _writing_loop(lw, name)
        if writer is not None and not (name in lw.syms and name not in lw.loop_state.partial):
            return _read_in_writing_loop(lw, name, position, writer, expr.line)
        if name in lw.loop_state.partial and name not in lw.syms:
            if not _loops_read(lw, position):
                return _read_part(lw, name, position, expr.line)
            whole(lw, name, expr.line)  # then indexed as any vector
    read = _loops_read(lw, position)
    if not read:
        return None
    first = lw.loops[0]
    if first.start == 1 and read == [0] and _runs_over_all_of(lw, expr.base, position, first):
        return None  # lower.py's own vectorized index: y[n], alpha[county[n]]
    return _grid_index(lw, expr, position, read)


def _runs_over_all_of(lw, base, position, loop) -> bool:
    """``y[n]`` or ``alpha[county[n]]`` in a loop over all of ``y`` or ``county`` (lower.py's
    own case: the loop's variable stands for the whole vector)."""
    if isinstance(position, Name) and position.name == loop.variable:
        value = lw._expr(base)
        own = value.dims[value.nloop:]
        return bool(own) and lw.dim_sizes.get(own[0]) == loop.size
    if isinstance(position, Indexed) and isinstance(position.base, Name) and len(position.indexes) == 1 \
            and isinstance(position.indexes[0], Name) and position.indexes[0].name == loop.variable:
        data = lw.values.get(position.base.name)
        return data is not None and bool(np.ndim(data)) and np.shape(data)[0] == loop.size
    return False


def _slice(lw, expr: Indexed, bounds: Slice):
    """``y[a:b]`` with data bounds, outside loops: a data array's part as new data, a
    parameter's as an index, along a dim named by its length (``n4``), as Stan's sizes go."""
    if any(_loops_read(lw, e) for e in (bounds.lower, bounds.upper) if e is not None):
        return None
    base = lw._expr(expr.base)
    own = base.dims[base.nloop:]
    if base.nloop or not own:
        return None
    size = lw.dim_sizes[own[0]]
    lo = 1 if bounds.lower is None else lw._data_value_of(bounds.lower, "a slice's bound")
    hi = size if bounds.upper is None else lw._data_value_of(bounds.upper, "a slice's bound")
    if np.ndim(lo) or np.ndim(hi) or not 1 <= int(lo) <= int(hi) <= size:
        raise unsupported(expr.line, f"a slice {lo}:{hi} of a dimension of size {size}")
    lo, hi = int(lo), int(hi)
    if (lo, hi) == (1, size):
        return replace(base, whole=None)
    dim = f"n{hi - lo + 1}"
    lw.dim_sizes.setdefault(dim, hi - lo + 1)
    positions = np.arange(lo - 1, hi)
    if isinstance(base.expr, s.Var) and base.expr.name in lw.values and base.expr.name not in lw.index_nodes:
        values = np.asarray(lw.values[base.expr.name])[positions]
        name = _gathered(lw, base.expr.name, values, (dim,) + own[1:])
        return Sym(s.Var(name), (dim,) + own[1:], base.kind, int_data=name if values.dtype.kind in "iu" else None)
    node = _index_node(lw, (dim,), own[0], positions, f"{own[0]}_idx")
    return Sym(s.Index(base.expr, s.Var(node)), (dim,) + own[1:], base.kind)


def _grid_index(lw, expr: Indexed, position, read: list[int]):
    m = max(read) + 1
    env = {**lw.values, **_loop_arrays(lw, m)}
    try:
        positions = np.asarray(interpret.evaluate(position, env))
    except (Unsupported, KeyError, IndexError, ValueError, TypeError):
        raise unsupported(expr.line, "an index that is not arithmetic on loop variables and integer data") from None
    if positions.dtype.kind not in "iu":
        raise unsupported(expr.line, "an index that is not an integer")
    base = lw._expr(expr.base)
    own = base.dims[base.nloop:]
    if base.nloop or not own:
        raise unsupported(expr.line, "indexing, inside a loop, a value that already varies along a loop")
    dims = tuple(loop_dim(lw, loop) for loop in lw.loops[:m])
    positions = np.broadcast_to(positions, tuple(lw.dim_sizes[d] for d in dims)) - 1
    if positions.size and (positions.min() < 0 or positions.max() >= lw.dim_sizes[own[0]]):
        raise Unsupported(expr.line, f"an index outside 1..{lw.dim_sizes[own[0]]}")
    kind = element_kind(base.kind, own)
    if isinstance(base.expr, s.Var) and base.expr.name in lw.values and base.expr.name not in lw.index_nodes:
        values = np.asarray(lw.values[base.expr.name])[positions]
        name = _gathered(lw, base.expr.name, values, dims + own[1:])
        int_data = name if values.dtype.kind in "iu" else None
        return Sym(s.Var(name), dims + own[1:], kind, nloop=m, int_data=int_data)
    if len(own) > 1 and m > 1:
        raise unsupported(expr.line, "rows of a matrix picked along two loops at once")
    node = _index_node(lw, dims, own[0], np.ascontiguousarray(positions), f"{own[0]}_idx")
    return Sym(s.Index(base.expr, s.Var(node)), dims + own[1:], kind, nloop=m)


def align(lw, a, b, line: int):
    """Two values of loops nested in each other (``mu`` of the loop over t, ``beta[k]`` of
    the loops over t and k): the one of fewer loops repeated along the others."""
    if not a.nloop or not b.nloop or a.nloop == b.nloop:
        return a, b
    if a.nloop < b.nloop:
        return _spread(lw, a, b.nloop, line), b
    return a, _spread(lw, b, a.nloop, line)


def _spread(lw, value, m: int, line: int):
    if value.nloop != 1 or value.dims[1:]:
        raise unsupported(line, "a value of nested loops combined with one of more loops")
    dims = tuple(loop_dim(lw, loop) for loop in lw.loops[:m])
    if dims[0] != value.dims[0]:
        raise unsupported(line, "combining values of different loops")
    sizes = tuple(lw.dim_sizes[d] for d in dims)
    positions = np.ascontiguousarray(np.broadcast_to(np.arange(sizes[0]).reshape((-1,) + (1,) * (m - 1)), sizes))
    node = _index_node(lw, dims, dims[0], positions, f"{dims[0]}_idx")
    return replace(value, expr=s.Index(value.expr, s.Var(node)), dims=dims, nloop=m, whole=None, int_data=None)


# --------------------------------------------------------------------------- sums over an inner loop


def reduce(lw, st: Assign) -> bool:
    """``mu = mu + e`` (or ``mu += e``, ``-``) inside a loop that does not own ``mu``: ``mu``
    plus the sum of ``e`` over the loop. False where the statement is not of that form."""
    target = st.target.name
    owner = next((i + 1 for i, loop in enumerate(lw.loops) if target in loop.locals), 0)
    if owner != len(lw.loops) - 1:
        return False
    increment, sign = _increment(st, target)
    if increment is None:
        raise unsupported(st.line, f"a loop in which {target} depends on an earlier iteration (a recursion "
                                     "other than a sum)")
    for other in _statements_reading(lw.loops[-1].body, target):
        if other is not st:
            raise unsupported(other.line, f"{target} read inside the loop that sums into it")
    value = lw._expr(increment)
    own = value.dims[value.nloop:]
    if own:
        raise unsupported(st.line, f"a sum of values that are not scalars into {target}")
    depth = len(lw.loops)
    loop = lw.loops[-1]
    if value.nloop < depth:
        total = replace(value, expr=s.Binary("*", value.expr, s.Const(float(loop.size))), whole=None, int_data=None,
                        int_value=None)
    else:
        dims = value.dims
        k = dims[-1]
        if depth == 1:
            ones = _ones(lw, (_one_dim(lw), k))
            row = s.matmul(s.Var(ones), value.expr)
            node = _index_node(lw, (), "n1", np.asarray(0), "n1_idx")
            total = Sym(s.Index(row, s.Var(node)), (), "scalar")
        elif depth == 2:
            total = Sym(s.matmul(value.expr, s.Var(_ones(lw, (k,)))), dims[:1], "scalar", nloop=1)
        else:
            raise unsupported(st.line, "a sum over a loop nested three deep")
    current = lw._expr(Name(target, st.line))
    new = lw._binary("+" if sign > 0 else "-", current, total, st.line)
    if owner:
        lw._set_loop_local(target, new, st.line)
    else:
        lw.syms[target] = lw._value_for(target, new, current.dims, st.line)
    return True


def _increment(st: Assign, target: str):
    """The added term of ``t = t + e``, ``t = e + t``, ``t = t - e``, ``t += e``, ``t -= e``."""
    if st.op in ("+=", "-="):
        return (None, 0) if target in names(st.value) else (st.value, 1 if st.op == "+=" else -1)
    if st.op != "=" or not isinstance(st.value, Op) or st.value.op not in ("+", "-") or len(st.value.args) != 2:
        return None, 0
    left, right = st.value.args
    if isinstance(left, Name) and left.name == target and target not in names(right):
        return right, 1 if st.value.op == "+" else -1
    if st.value.op == "+" and isinstance(right, Name) and right.name == target and target not in names(left):
        return left, 1
    return None, 0


def _statements_reading(statements, name: str) -> list:
    """The statements (nested ones included) whose expressions read ``name``."""
    out = []
    for st in statements:
        if isinstance(st, (For, While, If)):
            exprs = [getattr(st, a) for a in ("start", "end", "condition") if getattr(st, a, None) is not None]
            if any(name in names(e) for e in exprs):
                out.append(st)
            bodies = (st.then + st.otherwise) if isinstance(st, If) else st.body
            out += _statements_reading(bodies, name)
            continue
        exprs = []
        if isinstance(st, Decl) and st.value is not None:
            exprs = [st.value]
        elif isinstance(st, Assign):
            exprs = [st.value] + (list(st.target.indexes) if isinstance(st.target, Indexed) else [])
            if st.op != "=":
                exprs.append(st.target)
        elif isinstance(st, Tilde):
            exprs = [st.value, *st.args]
        elif isinstance(st, TargetIncrement):
            exprs = [st.value]
        if any(name in names(e) for e in exprs):
            out.append(st)
    return out


# --------------------------------------------------------------------------- vectors assigned part by part


def assign_part(lw, st: Assign) -> bool:
    """``x[c] = ...`` outside loops, or ``x[t] = ...`` in a loop over part of x (or over x
    when x already has parts): a piece of x. False where ``lower.py``'s own rule applies."""
    target = st.target
    if not (isinstance(target, Indexed) and isinstance(target.base, Name) and len(target.indexes) == 1
            and not isinstance(target.indexes[0], Slice)):
        return False
    name, position = target.base.name, target.indexes[0]
    state: LoopState = lw.loop_state
    if name in lw.syms and name not in state.partial:
        return False
    if name not in lw.declared and name not in state.partial:
        return False
    dims = lw._declared_dims(name, st.line)
    if len(dims) != 1:
        return False
    if not lw.loops:
        if st.op != "=":
            raise unsupported(st.line, f"{st.op} on part of {name}")
        at = lw._data_value_of(position, "an index")
        if np.ndim(at) or not 1 <= int(at) <= lw.dim_sizes[dims[0]]:
            raise unsupported(st.line, f"assigning part of {name} at an index that is not one integer")
        value = lw._expr(st.value)
        if value.dims:
            raise unsupported(st.line, f"a value of dims {value.dims} for one element of {name}")
        _add_segment(lw, name, Segment(int(at), int(at), replace(value, whole=None, int_data=None)), st.line)
        return True
    loop = lw.loops[-1]
    if not (isinstance(position, Name) and position.name == loop.variable):
        raise unsupported(st.line, f"assigning part of {name} (x[t] = ... inside a loop over t)")
    if len(lw.loops) > 1:
        raise unsupported(st.line, f"assigning part of {name} inside nested loops")
    if loop.start == 1 and loop.size == lw.dim_sizes[dims[0]] and name not in state.partial:
        return False  # all of x, in lower.py's own way
    if st.op != "=":
        raise unsupported(st.line, f"{st.op} on part of {name}")
    value = lw._expr(st.value)
    ldim = loop_dim(lw, loop)
    if value.dims[value.nloop:] or value.nloop > 1:
        raise unsupported(st.line, f"a value that is not a scalar for {name}[{loop.variable}]")
    if not value.nloop:
        value = Sym(s.Binary("+", value.expr, s.Var(lw._zeros((ldim,)))), (ldim,), "scalar", nloop=1)
    loop.assigned.add(name)
    segments = state.partial.setdefault(name, [])
    mine = [seg for seg in segments if seg.loop is loop]
    if mine:
        raise unsupported(st.line, f"{name}[{loop.variable}] assigned twice in one loop")
    segment = Segment(loop.start, loop.start + loop.size - 1, replace(value, whole=None, int_data=None), loop)
    _add_segment(lw, name, segment, st.line)
    return True


def _add_segment(lw, name: str, segment: Segment, line: int) -> None:
    segments = lw.loop_state.partial.setdefault(name, [])
    for other in segments:
        if segment.start <= other.end and other.start <= segment.end:
            raise unsupported(line, f"assigning {name}[{segment.start}..{segment.end}] again")
    segments.append(segment)
    segments.sort(key=lambda seg: seg.start)
    lw.syms.pop(name, None)


def _segment_at(lw, name: str, at: int, line: int):
    for segment in lw.loop_state.partial.get(name, []):
        if segment.start <= at <= segment.end:
            return segment
    raise unsupported(line, f"{name}[{at}] before it has a value")


def _element(lw, segment: Segment, at: int):
    """Position ``at`` of a segment as a scalar Sym."""
    if not segment.value.dims:
        return segment.value
    ldim = segment.value.dims[0]
    node = _index_node(lw, (), ldim, np.asarray(at - segment.start), f"{ldim}_idx")
    return Sym(s.Index(segment.value.expr, s.Var(node)), (), "scalar")


def _read_part(lw, name: str, position, line: int):
    at = lw._data_value_of(position, "an index")
    if np.ndim(at):
        raise unsupported(line, f"part of {name} read at several indexes")
    return _element(lw, _segment_at(lw, name, int(at), line), int(at))


def whole(lw, name: str, line: int):
    """A vector assigned part by part, read as a whole: its parts joined, once every
    position has a value."""
    segments = lw.loop_state.partial[name]
    if _writing_loop(lw, name) is not None:
        raise unsupported(line, f"all of {name} read inside the loop that writes it")
    dims = lw._declared_dims(name, line)
    size = lw.dim_sizes[dims[0]]
    covered = 1
    for segment in segments:
        if segment.start != covered:
            break
        covered = segment.end + 1
    if covered != size + 1:
        raise unsupported(line, f"{name} read whole, but {name}[{covered}] has no value")
    parts = [seg.value.expr if seg.value.dims else _as_one_vector(lw, seg.value) for seg in segments]
    expr = parts[0] if len(parts) == 1 and segments[0].value.dims else s.Concat(dims[0], tuple(parts))
    value = Sym(expr, dims, "vector")
    del lw.loop_state.partial[name]
    lw.syms[name] = value
    return value


def complete(lw) -> None:
    """Every vector assigned part by part, joined (the end of a block)."""
    for name in list(lw.loop_state.partial):
        try:
            whole(lw, name, 0)
        except Unsupported:
            lw.loop_state.partial.pop(name, None)


# --------------------------------------------------------------------------- recursions


def _writing_loop(lw, name: str):
    """The innermost loop whose body assigns part of ``name`` (a recursion may read it)."""
    for loop in reversed(lw.loops):
        if name in loop.writes and name not in loop.locals and name in (set(lw.declared) | set(lw.loop_state.partial)):
            return loop
    return None


def _read_in_writing_loop(lw, name: str, position, loop, line: int):
    """``x[t]`` (this iteration's value, once assigned) or ``x[t-1]`` (the previous
    iteration's: the recursion's stand-in) inside the loop that writes ``x``."""
    t = loop.variable
    if isinstance(position, Name) and position.name == t:
        segment = next((seg for seg in lw.loop_state.partial.get(name, []) if seg.loop is loop), None)
        if segment is None:
            raise unsupported(line, f"{name}[{t}] read before it is assigned in the loop")
        return segment.value
    lag = isinstance(position, Op) and position.op == "-" and len(position.args) == 2 and isinstance(
        position.args[0], Name) and position.args[0].name == t and isinstance(position.args[1], Num)
    if not lag or position.args[1].value != 1:
        raise unsupported(line, f"{name} read at an index other than {t} or {t} - 1 in the loop that writes it "
                                  "(a recursion of one lag is lowered to a scan)")
    if loop is not lw.loops[-1] or len(lw.loops) > 1:
        raise unsupported(line, f"a recursion on {name} inside nested loops")
    if loop.start < 2:
        raise unsupported(line, f"{name}[{t} - 1] in a loop from {loop.start}")
    recursion = loop.recursions.get(name)
    if recursion is None:
        recursion = Recursion(name, _fresh(lw, f"{name}_prev"))
        loop.recursions[name] = recursion
    return Sym(s.Var(recursion.stand_in), (loop_dim(lw, loop),), "scalar", nloop=1)


def finish(lw, loop, terms_before: int, scalar_terms_before: int) -> None:
    """After a loop's body ran: a recursion becomes a scan, and what the loop computed from
    its stand-in is computed from the scan's states."""
    if not loop.recursions:
        return
    if len(loop.recursions) > 1:
        raise unsupported(loop.line, "a recursion carrying several variables "
                                       f"({', '.join(sorted(loop.recursions))})")
    (recursion,) = loop.recursions.values()
    name, stand_in = recursion.variable, recursion.stand_in
    segments = lw.loop_state.partial.get(name, [])
    mine = next((seg for seg in segments if seg.loop is loop), None)
    if mine is None:
        raise unsupported(loop.line, f"{name}[{loop.variable} - 1] read in a loop that does not assign {name}")
    init = _element(lw, _segment_at(lw, name, loop.start - 1, loop.line), loop.start - 1)
    ldim = loop_dim(lw, loop)
    shapes = _Shapes(lw, {stand_in: (ldim,)})
    sequences: list[tuple[str, s.Expr]] = []
    body = _hoist(mine.value.expr, stand_in, ldim, shapes, sequences, loop.line)
    if not sequences:  # a step of parameters alone: a sequence of zeros gives the scan its length
        sequences.append((f"{stand_in}_step", s.Var(lw._zeros((ldim,)))))
    scan = s.Scan(ldim, init.expr, stand_in, tuple(sequences), body)
    mine.value = Sym(scan, (ldim,), "scalar", nloop=1)
    # x[t-1] for every t of the loop: the initial state, then the states but the last.
    joined = f"{ldim}_and_before"
    lw.dim_sizes.setdefault(joined, lw.dim_sizes[ldim] + 1)
    states = s.Concat(joined, (_as_one_vector(lw, init), scan))
    shift = _index_node(lw, (ldim,), joined, np.arange(lw.dim_sizes[ldim]), f"{ldim}_lag")
    previous = s.Index(states, s.Var(shift))
    _substitute_everywhere(lw, stand_in, previous, terms_before, scalar_terms_before)


class _Shapes:
    """The lowering's nodes as :func:`polyppl.spec.expr_dims` reads a model: by name, with dims."""

    def __init__(self, lw, local: dict[str, tuple[str, ...]]) -> None:
        self.lw, self.local = lw, local
        self.declared = {d.name: d for d in lw.program.parameters + tuple(
            st for st in lw.program.transformed_parameters if isinstance(st, Decl))}

    def __getitem__(self, name: str):
        lw = self.lw
        if name in self.local:
            return s.Data(name, "real", self.local[name])
        if name in lw.index_nodes:
            return lw.index_nodes[name]
        if name in lw.synthetic_dims:
            return s.Data(name, "real", lw.synthetic_dims[name])
        if name in self.declared:
            return s.Data(name, "real", lw._dims(self.declared[name].type))
        if name in lw.values:
            return s.Data(name, "real", lw._dims(lw.types[name]) if np.ndim(lw.values[name]) else ())
        for drawn in lw.drawn:
            if drawn.name == name:
                return s.Data(name, "real", drawn.dims)
        raise KeyError(name)


def _hoist(expr: s.Expr, stand_in: str, ldim: str, shapes: _Shapes, sequences: list, line: int) -> s.Expr:
    """The scan's body: ``expr`` (a value over the loop's dim) with each largest part that
    does not read the stand-in, and varies along the loop, made a sequence (computed once,
    vectorized); scalars stay in the body as they are."""
    if stand_in not in s.free_vars(expr):
        try:
            dims = s.expr_dims(shapes, expr)
        except (KeyError, s.SpecError):
            raise unsupported(line, "a recursion's step on values of unknown dims") from None
        if not dims:
            return expr
        if dims != (ldim,):
            raise unsupported(line, f"a value of dims {dims} in a recursion's step")
        name = f"{stand_in}_in{len(sequences) + 1}"
        sequences.append((name, expr))
        return s.Var(name)
    if isinstance(expr, s.Var):
        return expr
    if isinstance(expr, s.Binary):
        return s.Binary(expr.op, _hoist(expr.left, stand_in, ldim, shapes, sequences, line),
                        _hoist(expr.right, stand_in, ldim, shapes, sequences, line))
    if isinstance(expr, s.Call) and expr.fn not in s.MATRIX_FUNCTIONS:
        return s.Call(expr.fn, tuple(_hoist(a, stand_in, ldim, shapes, sequences, line) for a in expr.args))
    raise unsupported(line, "a recursion whose step is not elementwise in the previous value")


def substitute(expr: s.Expr, name: str, by: s.Expr) -> s.Expr:
    """``expr`` with every ``Var(name)`` replaced by ``by``."""
    if isinstance(expr, s.Var):
        return by if expr.name == name else expr
    if isinstance(expr, s.Const):
        return expr
    if name not in s.free_vars(expr):
        return expr
    if isinstance(expr, s.Binary):
        return s.Binary(expr.op, substitute(expr.left, name, by), substitute(expr.right, name, by))
    if isinstance(expr, s.Call):
        return s.Call(expr.fn, tuple(substitute(a, name, by) for a in expr.args))
    if isinstance(expr, s.Index):
        return s.Index(substitute(expr.base, name, by), substitute(expr.index, name, by))
    if isinstance(expr, s.Concat):
        return s.Concat(expr.dim, tuple(substitute(p, name, by) for p in expr.parts))
    if isinstance(expr, s.LogPdf):
        return s.LogPdf(expr.family, tuple((k, substitute(e, name, by)) for k, e in expr.args),
                        substitute(expr.value, name, by))
    if isinstance(expr, s.Scan):
        return s.Scan(expr.dim, substitute(expr.init, name, by), expr.carry,
                      tuple((k, substitute(e, name, by)) for k, e in expr.sequences),
                      expr.body if name in expr.local_names else substitute(expr.body, name, by))
    raise TypeError(expr)


def _substitute_everywhere(lw, name: str, by: s.Expr, terms_before: int, scalar_terms_before: int) -> None:
    def sub(sym):
        return replace(sym, expr=substitute(sym.expr, name, by)) if name in s.free_vars(sym.expr) else sym

    for segments in lw.loop_state.partial.values():
        for segment in segments:
            segment.value = sub(segment.value)
    for key, sym in list(lw.syms.items()):
        lw.syms[key] = sub(sym)
    lw.terms[terms_before:] = [replace(t, value=sub(t.value), args=tuple((k, sub(v)) for k, v in t.args))
                               for t in lw.terms[terms_before:]]
    lw.scalar_terms[scalar_terms_before:] = [(line, substitute(e, name, by))
                                             for line, e in lw.scalar_terms[scalar_terms_before:]]


__all__ = ["LoopState", "align", "assign_part", "complete", "finish", "index", "partial_loop_dim", "reduce", "whole"]



# --------------------------------------------------------------------------- while loops on data


def run_while(lw, st: While) -> None:
    """A ``while`` loop whose condition and body touch only data (and integers or reals known
    now): run once with NumPy, here, as ``transformed data`` is; what it assigns is then data."""
    if lw.loops:
        raise unsupported(st.line, "a while loop inside a for loop outside transformed data")
    read = _names_in((st,))
    env = dict(lw.values)
    for name in read:
        value = lw.syms.get(name)
        if value is None:
            continue
        if value.int_value is not None:
            env[name] = value.int_value
        elif isinstance(value.expr, s.Const) and not value.dims:
            env[name] = value.expr.value
        else:
            raise unsupported(st.line, f"a while loop on {name}, which is not data")
    assigned = assigned_names(st)
    for name in assigned:
        if name not in env and name in lw.declared:
            env[name] = interpret.initial_value(lw.declared[name].type, env)
    try:
        interpret.run((st,), env)
    except Unsupported as error:
        raise unsupported(error.line, f"a while loop on values that are not data ({error.what})") from None
    for name in assigned:
        value = env[name]
        if np.ndim(value):
            lw.values[name] = value
            lw.types[name] = lw.declared[name].type
            lw.syms.pop(name, None)
        elif isinstance(value, (int, np.integer)):
            lw.syms[name] = lw._const(int(value))
        else:
            lw.syms[name] = Sym(s.Const(float(value)), (), "scalar")


def _names_in(statements) -> set[str]:
    """Every variable a block of statements reads or assigns (loop variables included)."""
    out: set[str] = set()
    for st in statements:
        if isinstance(st, (For, While, If)):
            for attr in ("start", "end", "condition"):
                if getattr(st, attr, None) is not None:
                    out |= names(getattr(st, attr))
            out |= _names_in((st.then + st.otherwise) if isinstance(st, If) else st.body)
        elif isinstance(st, Decl):
            out |= {st.name} | (names(st.value) if st.value is not None else set())
        elif isinstance(st, Assign):
            out |= names(st.target) | names(st.value)
        elif isinstance(st, (Tilde, TargetIncrement)):
            out |= names(st.value)
    return out
