"""``_rng`` calls of generated quantities as the spec's conditional draws.

``real y_new = normal_rng(mu, sigma);`` is a :class:`~polyppl.spec.Conditional` ``y_new``:
drawn once per posterior draw after sampling, from the family with the posterior draw's
arguments, the same way for every backend (``polyppl.inference.posterior``). Inside a loop,
or with vector arguments, one draw per element (``y_rep[n] = poisson_log_rng(eta[n])`` over
the rows is one node over the rows). A quantity computed from a draw is a deterministic of it,
also computed after sampling.
"""

from __future__ import annotations

from dataclasses import replace

from polyppl import spec as s
from polyppl.models.stan_program import loops
from polyppl.models.stan_program.loops import substitute
from polyppl.models.stan_program.parse import FnCall
from polyppl.models.stan_program.symbols import Sym, unsupported



def is_draw(lw, name: str) -> bool:
    return name.endswith("_rng") and lw.block == "generated quantities"


def draw(lw, call: FnCall, distributions: dict[str, tuple[str, tuple[str, ...]]]) -> Sym:
    """A ``family_rng(...)`` call: a new conditional node, and its value. ``distributions``:
    Stan's families as the spec names them, with their arguments (``lower.DISTRIBUTIONS``)."""
    stan_family = call.name[: -len("_rng")]
    if stan_family not in distributions:
        raise unsupported(call.line, call.name)
    family, names = distributions[stan_family]
    args = [lw._expr(a) for a in call.args]
    stand_ins = {r.stand_in for loop in lw.loops for r in loop.recursions.values()}
    if any(stand_ins & s.free_vars(a.expr) for a in args):
        raise unsupported(call.line, f"{call.name} inside a recursion (a draw that the next step reads)")
    if len(args) != len(names):
        raise unsupported(call.line, f"{call.name} with {len(args)} arguments")
    if lw.loops:
        # One draw per iteration, whether or not the arguments vary along the loops.
        nloop = len(lw.loops)
        dims = tuple(loops.loop_dim(lw, loop) for loop in lw.loops)
        args = [loops._spread(lw, a, nloop, call.line) if 0 < a.nloop < nloop else a for a in args]
    else:
        nloop = 0
        dims = next((a.dims for a in args if a.dims), ())
    if any(a.dims not in ((), dims) or (a.dims and a.nloop != nloop) for a in args):
        raise unsupported(call.line, f"{call.name} of values of different dims")
    name = _fresh(lw, f"{stan_family}_draw_line{call.line}")
    dist = lw._dist(family, tuple(zip(names, args)), dims, call.line)
    lw.drawn.append(s.Conditional(name, dist, dims))
    return Sym(s.Var(name), dims, "scalar" if not dims or lw.loops else "array", nloop=nloop)


def _fresh(lw, stem: str) -> str:
    taken = set(lw.values) | set(lw.syms) | set(lw.types) | {c.name for c in lw.drawn}
    name, i = stem, 1
    while name in taken:
        i += 1
        name = f"{stem}_{i}"
    return name


def with_draws(lw, generated: list[s.Deterministic]) -> list:
    """The generated quantities' nodes: the conditional draws first (their arguments are the
    sampled quantities and data), each renamed as the quantity it is all of
    (``y_new = normal_rng(...)``: the conditional ``y_new``), then the deterministics."""
    renames: dict[str, str] = {}
    for node in generated:
        for c in lw.drawn:
            if isinstance(node.expr, s.Var) and node.expr.name == c.name and c.dims == node.dims \
                    and c.name not in renames:
                renames[c.name] = node.name

    def renamed(expr: s.Expr) -> s.Expr:
        for old, new in renames.items():
            expr = substitute(expr, old, s.Var(new))
        return expr

    drawn = [replace(c, name=renames.get(c.name, c.name),
                     dist=replace(c.dist, args=tuple((k, renamed(e)) for k, e in c.dist.args))) for c in lw.drawn]
    kept = [replace(g, expr=renamed(g.expr)) for g in generated if g.name not in renames.values()]
    # A draw no quantity kept uses (its statement was left out of the comparison) goes too.
    used = set().union(*(s.references(n) for n in drawn + kept)) if drawn or kept else set()
    return [c for c in drawn if c.name in renames.values() or c.name in used] + kept
