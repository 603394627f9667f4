"""Rewrites of a model into an equivalent one that samples better."""

from __future__ import annotations

from dataclasses import replace
from typing import Sequence

from polyppl.spec.expr import Var
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
