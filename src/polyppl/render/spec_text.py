"""A spec model as text, one node a line, for ``polyppl show``."""

from __future__ import annotations

from polyppl.spec import (
    Binary, Call, Concat, Conditional, Const, Data, Dataset, Decision, Deterministic, Dist, Expr, Factor, Index, LogPdf,
    Model, Observed, Param, Scan, Var,
)

# Precedence of operators when written: higher binds tighter.
_PRECEDENCE = {"|": 1, "<": 2, "<=": 2, ">": 2, ">=": 2, "+": 3, "-": 3, "*": 4, "/": 4, "**": 5}
_ATOM = 10


def expr_text(expr: Expr) -> str:
    """An expression as a person would write it (``a[group] + b[group] * treated``)."""
    return _text(expr)[0]


def _text(expr: Expr) -> tuple[str, int]:
    if isinstance(expr, Const):
        return f"{expr.value:g}", _ATOM
    if isinstance(expr, Var):
        return expr.name, _ATOM
    if isinstance(expr, Index):
        return f"{_wrapped(expr.base, _ATOM)}[{expr_text(expr.index)}]", _ATOM
    if isinstance(expr, Binary):
        prec = _PRECEDENCE[expr.op]
        return f"{_wrapped(expr.left, prec)} {expr.op} {_wrapped(expr.right, prec + 1)}", prec
    if isinstance(expr, Call):
        if expr.fn == "neg":
            return f"-{_wrapped(expr.args[0], 6)}", 6
        return f"{expr.fn}({', '.join(expr_text(a) for a in expr.args)})", _ATOM
    if isinstance(expr, LogPdf):
        args = ", ".join(expr_text(e) for _, e in expr.args)
        return f"{expr.family}_lpdf({expr_text(expr.value)} | {args})", _ATOM
    if isinstance(expr, Concat):
        return f"concat({expr.dim}; {', '.join(expr_text(p) for p in expr.parts)})", _ATOM
    if isinstance(expr, Scan):
        sequences = "".join(f", {name} in {expr_text(e)}" for name, e in expr.sequences)
        return (f"scan({expr.dim}; {expr.carry} from {expr_text(expr.init)}{sequences}: "
                f"{expr.carry} = {expr_text(expr.body)})"), _ATOM
    raise TypeError(expr)


def _wrapped(expr: Expr, precedence: int) -> str:
    text, own = _text(expr)
    return text if own >= precedence else f"({text})"


def _dist_text(dist: Dist) -> str:
    return f"{dist.family}({', '.join(expr_text(e) for _, e in dist.args)})"


def _shaped(name: str, dims: tuple[str, ...]) -> str:
    return f"{name}[{', '.join(dims)}]" if dims else name


def model_text(model: Model, dataset: Dataset | None = None) -> str:
    """The model's description, its dims (with sizes and labels when ``dataset`` is given)
    and its nodes by kind, in declaration order."""
    lines = [f"model {model.name!r}"]
    lines += [f"  # {line}" for line in model.description.splitlines()]
    if dataset is not None:
        lines.append("dims:")
        for dim in model.dims:
            labels = [str(v) for v in dataset.coords[dim]]
            shown = ", ".join(labels[:6]) + (", ..." if len(labels) > 6 else "")
            lines.append(f"  {dim} ({len(labels)}): {shown}")
    for node in model.nodes:
        if isinstance(node, Data):
            kind = f"{node.dtype}" + (f", index into {node.index_of}" if node.index_of else "")
            lines.append(f"data          {_shaped(node.name, node.dims)}  ({kind})")
        elif isinstance(node, Param):
            lines.append(f"param         {_shaped(node.name, node.dims)} ~ {_dist_text(node.dist)}")
        elif isinstance(node, Deterministic):
            lines.append(f"deterministic {_shaped(node.name, node.dims)} = {expr_text(node.expr)}")
        elif isinstance(node, Factor):
            lines.append(f"factor        {node.name}: target += {expr_text(node.expr)}")
        elif isinstance(node, Observed):
            lines.append(f"observed      {_shaped(node.name, node.dims)} ~ {_dist_text(node.dist)}")
        elif isinstance(node, Conditional):
            lines.append(f"conditional   {_shaped(node.name, node.dims)} ~ {_dist_text(node.dist)}  (drawn after sampling)")
        elif isinstance(node, Decision):
            over = f" over {', '.join(node.dims)}" if node.dims else ""
            title = f"  ({node.heading()})" if node.title else ""
            lines.append(f"decision      {node.name}: {node.kind} of {expr_text(node.expr)}{over}{title}")
    return "\n".join(lines)
