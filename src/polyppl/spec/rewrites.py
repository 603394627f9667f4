"""Rewrites of a model into an equivalent one that samples better."""

from __future__ import annotations

from dataclasses import replace
from typing import Sequence

from polyppl.spec.expr import Binary, Const, Expr, Var, free_vars
from polyppl.spec.families import Normal
from polyppl.spec.model import Deterministic, Model, Node, Param, SpecError


def noncentered(model: Model, names: Sequence[str], suffix: str = "_z") -> Model:
    """Rewrite ``x ~ Normal(mu, sigma)`` as ``x_z ~ Normal(0, 1)``, ``x = mu + sigma * x_z``.

    The posterior keeps ``x`` under its own name (now a deterministic), so results of the
    centered and non-centered forms line up variable by variable.
    """
    missing = set(names) - {n.name for n in model.nodes}
    if missing:
        raise SpecError(f"no such parameters: {sorted(missing)}")
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
    return replace(model, nodes=tuple(nodes))


def noncentered_effects(model: Model, suffix: str = "_z") -> dict[str, tuple[Expr, Expr]]:
    """The effects that :func:`noncentered` wrote: ``x = mu + sigma * x_z`` with
    ``x_z ~ Normal(0, 1)`` on the same dims, by name, each with its ``(mu, sigma)``."""
    params = {n.name: n for n in model.nodes if isinstance(n, Param)}
    found = {}
    for node in model.nodes:
        e = node.expr if isinstance(node, Deterministic) else None
        if not (isinstance(e, Binary) and e.op == "+" and isinstance(e.right, Binary) and e.right.op == "*"
                and isinstance(e.right.right, Var)):
            continue
        raw = params.get(e.right.right.name)
        if raw is None or raw.name != node.name + suffix or raw.dims != node.dims or raw.dist.family != "normal":
            continue
        mu, sigma = (raw.dist.kwargs[k] for k in ("mu", "sigma"))
        if isinstance(mu, Const) and mu.value == 0 and isinstance(sigma, Const) and sigma.value == 1:
            found[node.name] = (e.left, e.right.left)
    return found


def centered(model: Model, names: Sequence[str], suffix: str = "_z") -> Model:
    """The inverse of :func:`noncentered`: ``x_z ~ Normal(0, 1)``, ``x = mu + sigma * x_z``
    back to ``x ~ Normal(mu, sigma)``."""
    effects = noncentered_effects(model, suffix)
    missing = set(names) - set(effects)
    if missing:
        raise SpecError(f"not non-centered effects: {sorted(missing)}")
    raws = {name + suffix for name in names}
    nodes: list[Node] = []
    for node in model.nodes:
        if node.name in raws:
            continue
        if node.name in names:
            mu, sigma = effects[node.name]
            nodes.append(Param(node.name, Normal(mu, sigma), node.dims))
        else:
            nodes.append(node)
    return replace(model, nodes=tuple(nodes))


def group_effects(model: Model) -> list[str]:
    """Parameters ``x ~ Normal(mu, sigma)`` over a dim whose location or scale is itself a
    parameter: the group-level effects that non-centering applies to."""
    params = {n.name for n in model.nodes if isinstance(n, Param)}
    return [n.name for n in model.nodes if isinstance(n, Param) and n.dims and n.dist.family == "normal"
            and any(free_vars(v) & params for _, v in n.dist.args)]


def counterpart(model: Model) -> tuple[Model, str] | None:
    """The model in its other form, and the form's name: its non-centered effects centered
    (``centered``), else its group-level Normal effects non-centered (``noncentered``); None
    where it has neither."""
    effects = noncentered_effects(model)
    if effects:
        return centered(model, list(effects)), "centered"
    names = group_effects(model)
    if names:
        return noncentered(model, names), "noncentered"
    return None
