"""A deliberately wrong backend for the tests: PyMC compiling every model with the prior
scale of ``mu`` multiplied by 0.65 (eight schools: 5 becomes 3.25, which moves mu by about
half a posterior sd). Loaded through ``POLYPPL_BACKENDS=skewed_backend:BACKEND``, it runs
through ``polyppl compare`` like any backend, in its own process, so the verdict logic is
tested end to end on a real disagreement."""

from __future__ import annotations

from dataclasses import replace

from polyppl import spec as s
from polyppl.backends import pymc
from polyppl.backends.pymc import compiler as pymc_compiler

SCALE = 0.65


def _skewed(model: s.Model) -> s.Model:
    nodes = []
    for node in model.nodes:
        if node.name == "mu" and isinstance(node, s.Param) and node.dist.family == "normal":
            kw = node.dist.kwargs
            node = s.Param("mu", s.Normal(kw["mu"], kw["sigma"] * SCALE), node.dims)
        nodes.append(node)
    return replace(model, nodes=tuple(nodes))


def compile(model, dataset, engine, options):
    return pymc_compiler.compile(_skewed(model), dataset, engine, options)


BACKEND = replace(pymc.BACKEND, name="skewed", compiler=__name__)
