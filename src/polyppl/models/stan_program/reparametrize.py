"""A Stan program's other parametrization, written as a Stan user would: ``<offset, multiplier>``.

A group-level effect ``vector[J] theta; theta ~ normal(mu, tau);`` samples as a funnel when the
data say little about each group; declaring it ``vector<offset=mu, multiplier=tau>[J] theta;``
samples ``(theta - mu) / tau`` instead (Stan's non-centered form, same posterior, same names), and
lowers to every backend through the same affine map (``FlatAffine``). The remedies' ladder tries
this after target acceptance 0.99; a program already written with ``<offset, multiplier>`` gets
its centered form by removing them. The rewrite is of the program's text, so that the Stan
column runs the rewritten program and the other columns its lowering: never a mixed comparison.
"""

from __future__ import annotations

from dataclasses import dataclass

from polyppl.models.stan_program.parse import (ArrayExpr, Decl, FnCall, Indexed, Name, Num, Op, Program, Slice,
                                               StanExpr, TargetIncrement, Ternary, Tilde)

#: The declared types Stan allows ``<offset, multiplier>`` on (also as array elements).
AFFINE_BASES = ("real", "vector", "row_vector", "matrix")


@dataclass(frozen=True)
class Effect:
    """A parameter ``name ~ normal(mu, sigma)``, declared on ``decl``, whose location or scale
    reads other parameters: a group-level effect that non-centering applies to."""

    decl: Decl
    mu: StanExpr
    sigma: StanExpr
    #: The parameters ``mu`` and ``sigma`` read.
    reads: frozenset[str]


def form_of(program: Program) -> str | None:
    """``noncentered`` where a parameter is declared with ``<offset, multiplier>``, else
    ``centered`` where a group-level Normal effect could be, else None (one form only)."""
    if _affine_declared(program):
        return "noncentered"
    return "centered" if group_effects(program) else None


def rewritten(program: Program, form: str) -> str | None:
    """The program's text in ``form`` (``noncentered``: its group-level Normal effects declared
    ``<offset=mu, multiplier=sigma>``; ``centered``: every ``<offset, multiplier>`` removed), or
    None where it has nothing to rewrite so."""
    text = program.text
    edits: list[tuple[int, int, str]] = []
    if form == "noncentered":
        order = [d.name for d in program.parameters]
        for effect in group_effects(program):
            decl, at = effect.decl, effect.decl.type.keyword_end
            bounds = f"<offset={stan_text(effect.mu)}, multiplier={stan_text(effect.sigma)}>"
            last = max((d for d in program.parameters if d.name in effect.reads), key=lambda d: order.index(d.name))
            if order.index(last.name) < order.index(decl.name):
                edits.append((at, at, bounds))
                continue
            # Stan reads a declaration's bounds from parameters declared before it: move it after them.
            start, end = decl.span
            moved = text[start:at] + bounds + text[at:end]
            line_end = text.find("\n", last.span[1])  # after the line's comment, if any
            line_end = len(text) if line_end < 0 else line_end
            edits += [(start, end, ""), (line_end, line_end, f"\n  {moved}")]
    elif form == "centered":
        for decl in _affine_declared(program):
            start, end = _constraint_span(text, decl.type.keyword_end)
            edits.append((start, end, ""))
    if not edits:
        return None
    for start, end, new in sorted(edits, reverse=True):
        text = text[:start] + new + text[end:]
    return text


def group_effects(program: Program) -> list[Effect]:
    """Parameters declared without bounds whose whole value has a Normal density at the model
    block's top level (``theta ~ normal(mu, tau)`` or ``target += normal_lpdf(theta | mu, tau)``)
    with a location or scale that reads other parameters and nothing but data (not transformed
    parameters: a declaration's bounds cannot read them)."""
    decls = {d.name: d for d in program.parameters if not d.nested}
    data = {d.name for d in program.data} | {s.name for s in program.transformed_data if isinstance(s, Decl)}
    found: dict[str, Effect] = {}
    for statement in program.model:
        normal = _whole_normal(statement)
        if normal is None or normal[0] not in decls or normal[0] in found:
            continue
        name, mu, sigma = normal
        decl = decls[name]
        if decl.type.base not in AFFINE_BASES or decl.type.bounds or decl.type.keyword_end is None or decl.span is None:
            continue
        params = set(decls) - {name}
        read = _names_read(mu) | _names_read(sigma)
        if read & params and read <= params | data:
            found[name] = Effect(decl, mu, sigma, frozenset(read & params))
    return list(found.values())


def _whole_normal(statement: object) -> tuple[str, StanExpr, StanExpr] | None:
    if isinstance(statement, Tilde) and statement.distribution == "normal" and statement.truncation is None:
        value, args = statement.value, statement.args
    elif (isinstance(statement, TargetIncrement) and isinstance(statement.value, FnCall)
          and statement.value.name in ("normal_lpdf", "normal_lupdf")):
        value, *args = statement.value.args
    else:
        return None
    if not isinstance(value, Name) or len(args) != 2:
        return None
    return value.name, args[0], args[1]


def _affine_declared(program: Program) -> list[Decl]:
    """Parameters declared with ``<offset, multiplier>`` and no other bound."""
    return [d for d in program.parameters if not d.nested and d.type.bounds and d.type.keyword_end is not None
            and {kind for kind, _ in d.type.bounds} <= {"offset", "multiplier"}]


def _constraint_span(text: str, keyword_end: int) -> tuple[int, int]:
    """Where the ``<...>`` after a type's keyword starts and ends (a bound holds no comparison,
    so the first ``>`` closes it)."""
    start = text.index("<", keyword_end)
    return start, text.index(">", start) + 1


def _names_read(expr: object) -> set[str]:
    if isinstance(expr, Name):
        return {expr.name}
    if isinstance(expr, (Indexed,)):
        return _names_read(expr.base) | set().union(*(_names_read(i) for i in expr.indexes))
    if isinstance(expr, Slice):
        return _names_read(expr.lower) | _names_read(expr.upper)
    if isinstance(expr, (Op, FnCall)):
        return set().union(*(_names_read(a) for a in expr.args))
    if isinstance(expr, Ternary):
        return _names_read(expr.condition) | _names_read(expr.if_true) | _names_read(expr.if_false)
    if isinstance(expr, ArrayExpr):
        return set().union(*(_names_read(i) for i in expr.items))
    return set()


def stan_text(expr: StanExpr | Slice | None) -> str:
    """An expression as Stan source, every operation parenthesized (so precedence never needs
    reading back)."""
    if expr is None:
        return ""
    if isinstance(expr, Num):
        return str(int(expr.value)) if expr.is_int else repr(expr.value)
    if isinstance(expr, Name):
        return expr.name
    if isinstance(expr, Slice):
        return f"{stan_text(expr.lower)}:{stan_text(expr.upper)}"
    if isinstance(expr, Indexed):
        return f"{stan_text(expr.base)}[{', '.join(stan_text(i) for i in expr.indexes)}]"
    if isinstance(expr, Op):
        if expr.op == "neg":
            return f"(-{stan_text(expr.args[0])})"
        if expr.op == "!":
            return f"(!{stan_text(expr.args[0])})"
        if expr.op == "'":
            return f"({stan_text(expr.args[0])})'"
        left, right = expr.args
        return f"({stan_text(left)} {expr.op} {stan_text(right)})"
    if isinstance(expr, FnCall):
        args = [stan_text(a) for a in expr.args]
        if expr.conditional:
            return f"{expr.name}({args[0]} | {', '.join(args[1:])})"
        return f"{expr.name}({', '.join(args)})"
    if isinstance(expr, Ternary):
        return f"({stan_text(expr.condition)} ? {stan_text(expr.if_true)} : {stan_text(expr.if_false)})"
    if isinstance(expr, ArrayExpr):
        inner = ", ".join(stan_text(i) for i in expr.items)
        return f"[{inner}]" if expr.row_vector else f"{{{inner}}}"
    raise TypeError(f"not a Stan expression: {expr!r}")
