"""A vector (or one-dimensional array of reals) declared inside a loop's body, filled by an
inner loop and used within the iteration: vectorized, never unrolled.

    for (n in 1:N) {
      array[K] real gamma;
      for (k in 1:K) gamma[k] = log(theta[doc[n], k]) + log(phi[k, w[n]]);
      target += log_sum_exp(gamma);
    }

The iterations of the outer loops are independent (the local is declared afresh in each),
so the local is one value over (the outer loops' dims, its own dim): ``gamma[k] = ...`` in
the inner loop over all of ``gamma`` defines all of it, an elementwise expression over
(N, K); ``gamma[k]`` read in such a loop is that value again; ``log_sum_exp(gamma)`` and
``sum(gamma)`` are reductions along its own dim, one value per outer iteration (log_sum_exp
as a fold of its columns, each a vector over the outer loop's dim: K nodes, not N x K).
"""

from __future__ import annotations

from dataclasses import dataclass, replace

import numpy as np

from polyppl import spec as s
from polyppl.models.stan_program import densities, loops
from polyppl.models.stan_program.parse import (
    Assign, Decl, For, If, Indexed, Name, Statement, TargetIncrement, Tilde, While,
)
from polyppl.models.stan_program.symbols import Sym, names, unsupported


@dataclass(frozen=True)
class LocalVector:
    """A vector declared at loop depth ``depth`` (the number of loops around it)."""

    depth: int
    dim: str  # its own dim
    kind: str  # vector or array


def declare(lw, st: Decl) -> bool:
    """Take a loop-local vector declaration; False where it is not one (a scalar)."""
    stan_type = st.type
    if not (stan_type.array_sizes or stan_type.shape):
        return False
    is_vector = not stan_type.array_sizes and stan_type.base == "vector" and len(stan_type.shape) == 1
    is_real_array = len(stan_type.array_sizes) == 1 and not stan_type.shape and stan_type.base == "real"
    if not (is_vector or is_real_array):
        raise unsupported(st.line, "a matrix, row vector, int array or array of vectors declared inside a loop")
    (dim,) = lw._dims(stan_type)
    lw.loops[-1].locals.add(st.name)
    lw.local_vectors[st.name] = LocalVector(len(lw.loops), dim, "vector" if is_vector else "array")
    lw.syms.pop(st.name, None)
    if st.value is not None:
        assign_whole(lw, st.name, lw._expr(st.value), st.line)
    return True


def assign_whole(lw, name: str, value: Sym, line: int) -> None:
    """``gamma = e`` in the iteration: ``e`` a vector of the local's size (per iteration)."""
    local = lw.local_vectors[name]
    own = value.dims[value.nloop:]
    if len(own) != 1 or lw.dim_sizes[own[0]] != lw.dim_sizes[local.dim] or value.nloop not in (0, local.depth):
        raise unsupported(line, f"assigning to {name} a value that is not a vector of its size in each iteration")
    if value.nloop == 0:  # the same vector in every iteration (vector[K] lp = log(theta)): one row per iteration
        if local.depth != 1:
            raise unsupported(line, f"assigning to {name}, inside nested loops, a vector the same in every iteration")
        dims = (loops.loop_dim(lw, lw.loops[0]), own[0])
        positions = np.broadcast_to(np.arange(lw.dim_sizes[own[0]]), tuple(lw.dim_sizes[d] for d in dims))
        node = loops._index_node(lw, dims, own[0], np.ascontiguousarray(positions), f"{own[0]}_idx")
        value = Sym(s.Index(value.expr, s.Var(node)), dims, value.kind, nloop=1)
    lw.syms[name] = Sym(value.expr, value.dims[:value.nloop] + (local.dim,), local.kind, nloop=value.nloop)


def assign_element(lw, st: Assign) -> bool:
    """``gamma[k] = e`` in a loop over all of ``gamma`` nested right inside the loops that
    own it: all of ``gamma``, over (outer dims, own dim). False where the target is not a
    loop-local vector."""
    target = st.target
    if not (isinstance(target, Indexed) and isinstance(target.base, Name)
            and target.base.name in lw.local_vectors and target.base.name in _in_scope(lw)):
        return False
    name, line = target.base.name, st.line
    local = lw.local_vectors[name]
    loop = _inner_loop(lw, local, target, f"assigning part of {name} (a vector declared inside a loop: "
                                              f"only {name}[k] = ... in a loop over all of it, right inside)")
    value = lw._expr(st.value)  # binds the inner loop to the dim the value indexes (of the local's size)
    if st.op != "=":  # gamma[k] += e: this iteration's gamma[k], plus e
        value = lw._binary(st.op[:-1], index(lw, target), value, line)
    if value.dims[value.nloop:]:
        raise unsupported(line, f"a value that is not a scalar for an element of {name}")
    if value.nloop != local.depth + 1:
        # Not varying along every loop (gamma[k] = 0, or of the inner loop alone): repeated along them.
        value = _over_all_loops(lw, value, local.depth + 1, line)
    # The value's own dims (the inner loop may run along a dim of the same size but another name).
    lw.syms[name] = Sym(value.expr, value.dims[:local.depth + 1], local.kind, nloop=local.depth)
    return True


def index(lw, expr: Indexed) -> Sym | None:
    """``gamma[k]`` in a loop over all of ``gamma`` right inside the loops that own it; None
    where the base is not a loop-local vector."""
    if not (isinstance(expr.base, Name) and expr.base.name in lw.local_vectors and expr.base.name in _in_scope(lw)):
        return None
    name = expr.base.name
    local = lw.local_vectors[name]
    if name not in lw.syms:
        raise unsupported(expr.line, f"reading {name} before it is assigned")
    loop = _inner_loop(lw, local, expr, f"reading part of {name} (a vector declared inside a loop: "
                                            f"only {name}[k] in a loop over all of it, right inside)")
    value = lw.syms[name]
    if loop.dim is None:
        loop.dim = value.dims[-1]
    return Sym(value.expr, value.dims, "scalar", nloop=local.depth + 1)


def check_whole_read(lw, name: str, line: int) -> None:
    """All of a loop-local vector is read in the iteration that owns it, not inside an inner
    loop (where Stan reads the elements a later iteration of that loop has not yet filled)."""
    if len(lw.loops) > lw.local_vectors[name].depth:
        raise unsupported(line, f"reading all of {name} inside an inner loop of the loop that declares it")


def reduce(lw, function: str, value: Sym) -> Sym | None:
    """``log_sum_exp(gamma)`` or ``sum(gamma)`` of a vector that varies along one loop: one
    value per iteration, a reduction along its own dim. ``sum`` is a product with a vector of
    ones; ``log_sum_exp`` folds the columns (each a vector over the loop's dim) with the
    binary log_sum_exp, which is stable row by row (a shift by the largest element of all rows
    would underflow a row far below the others: a mixture component's density far in a tail)."""
    own = value.dims[value.nloop:]
    if value.nloop != 1 or len(own) != 1:
        return None
    rows = value.dims[:1]
    if function == "sum":
        return Sym(s.matmul(value.expr, s.Var(loops._ones(lw, own))), rows, "scalar", nloop=1)
    size = lw.dim_sizes[own[0]]
    # Column k: the product with the k-th unit vector (as categorical_logit's rows do).
    columns = [s.matmul(value.expr, s.Var(lw._synthetic(f"unit_{own[0]}_{k + 1}", np.eye(size)[k], own)))
               for k in range(size)]
    return Sym(densities.log_sum_exp_of(columns), rows, "scalar", nloop=1)


def _in_scope(lw) -> set[str]:
    return set().union(*(loop.locals for loop in lw.loops)) if lw.loops else set()


def _inner_loop(lw, local: LocalVector, expr: Indexed, refusal: str):
    position = expr.indexes[0] if len(expr.indexes) == 1 else None
    loop = lw._loop_of(position) if isinstance(position, Name) else None
    if loop is None or len(lw.loops) != local.depth + 1 or lw.loops[local.depth] is not loop \
            or loop.start != 1 or loop.size != lw.dim_sizes[local.dim]:
        raise unsupported(expr.line, refusal)
    return loop


def _over_all_loops(lw, value: Sym, m: int, line: int) -> Sym:
    """A value of fewer loops (or none) over the dims of the first ``m`` loops."""
    dims = tuple(loops.loop_dim(lw, loop) for loop in lw.loops[:m])
    if value.nloop == 0:
        return Sym(s.Binary("+", value.expr, s.Var(lw._zeros(dims))), dims, "scalar", nloop=m)
    return loops.align(lw, value, Sym(s.Const(0.0), dims, "scalar", nloop=m), line)[0]  # y[n]: repeated along k


def scratch_vectors_into_loops(statements: tuple[Statement, ...]) -> tuple[Statement, ...]:
    """The model block with a scratch vector declared outside a loop but only used inside it,
    filled afresh in each iteration before it is read, declared inside the loop instead
    (posteriordb's normal_mixture_k: ``array[K] real ps;`` then, for each n,
    ``for (k in 1:K) ps[k] = ...; target += log_sum_exp(ps);``): the same program, since no
    iteration reads what an earlier one wrote. Strictly that form: a declaration without a
    value, one loop that mentions it, whose first statement mentioning it is an inner loop
    over k whose first statement is ``ps[k] = ...`` (each read before that is then refused)."""
    out = list(statements)
    for decl in statements:
        if not (isinstance(decl, Decl) and decl.value is None and _is_local_vector_type(decl)):
            continue
        users = [st for st in out if st is not decl and _mentions(st, decl.name)]
        if len(users) != 1 or not isinstance(users[0], For) or users[0].end is None:
            continue
        loop = users[0]
        first = next(st for st in loop.body if _mentions(st, decl.name))
        if not (isinstance(first, For) and first.end is not None and first.body
                and _fills(first.body[0], decl.name, first.variable)):
            continue
        out.remove(decl)
        out[out.index(loop)] = replace(loop, body=(replace(decl, nested=True),) + loop.body)
    return tuple(out)


def _is_local_vector_type(decl: Decl) -> bool:
    stan_type = decl.type
    return (not stan_type.array_sizes and stan_type.base == "vector" and len(stan_type.shape) == 1) or (
        len(stan_type.array_sizes) == 1 and not stan_type.shape and stan_type.base == "real")


def _fills(st: Statement, name: str, variable: str) -> bool:
    """``name[variable] = e``, with ``e`` not reading ``name``."""
    return isinstance(st, Assign) and st.op == "=" and isinstance(st.target, Indexed) \
        and isinstance(st.target.base, Name) and st.target.base.name == name and len(st.target.indexes) == 1 \
        and isinstance(st.target.indexes[0], Name) and st.target.indexes[0].name == variable \
        and name not in names(st.value)


def _mentions(st: Statement, name: str) -> bool:
    if isinstance(st, Decl):
        return st.name == name or (st.value is not None and name in names(st.value))
    if isinstance(st, Assign):
        return name in names(st.target) | names(st.value)
    if isinstance(st, Tilde):
        bounds = [b for b in (st.truncation or ()) if b is not None]
        return name in names(st.value).union(*(names(a) for a in (*st.args, *bounds)))
    if isinstance(st, TargetIncrement):
        return name in names(st.value)
    if isinstance(st, For):
        return name in names(st.start) | (names(st.end) if st.end is not None else set()) \
            or any(_mentions(b, name) for b in st.body)
    if isinstance(st, While):
        return name in names(st.condition) or any(_mentions(b, name) for b in st.body)
    if isinstance(st, If):
        return name in names(st.condition) or any(_mentions(b, name) for b in st.then + st.otherwise)
    return True  # a statement of another kind: taken to mention it (no move)
