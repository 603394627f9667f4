"""Deliberately broken backends: test doubles for ``polyppl selftest``'s power claims.

Each :class:`Break` is a real backend's compiler handed a deliberately changed spec (a prior
scale, a prior's location, the likelihood's scale), declared as a backend of its own name
(``break-theta-z-scale``) so that the agreement test and SBC run it exactly as they run a
real one, on the grid, in their own worker processes. They exist for selftest alone: they
are in the backend registry only inside :func:`doubles_registered` (selftest plans its
tasks there, and each task runs there on its worker through :func:`run_with_doubles`), so
no other command ever lists, offers or runs them.
"""

from __future__ import annotations

import contextlib
import importlib
from dataclasses import dataclass, replace
from typing import Any, Callable, Iterator, Mapping

from polyppl import spec as s
from polyppl.backends import BACKENDS, get_backend
from polyppl.backends.base import Backend, CompiledModel
from polyppl.spec import Dataset, Model


@dataclass(frozen=True)
class Break:
    """A named change to the spec that a real backend (``base``) then compiles as usual."""

    name: str
    base: str
    what: str  # the change in words
    change: Callable[[Model], Model]

    @property
    def backend(self) -> str:
        return f"break-{self.name}"


def _with_node(model: Model, name: str, rebuild: Callable[[Any], Any]) -> Model:
    """``model`` with node ``name`` rebuilt; a model without the node is a bug of the break's
    declaration (it names the node the change needs)."""
    if name not in {node.name for node in model.nodes}:
        raise ValueError(f"a selftest break needs node {name!r}; model {model.name!r} has none")
    return replace(model, nodes=tuple(rebuild(node) if node.name == name else node for node in model.nodes))


def _move_normal(name: str, shift: float = 0.0, factor: float = 1.0) -> Callable[[Model], Model]:
    """A change of the model: node ``name``'s Normal (a prior or the likelihood) moved by
    ``shift`` and its sd scaled by ``factor``."""
    def change(model: Model) -> Model:
        def rebuild(node):
            mu, sigma = node.dist.kwargs["mu"], node.dist.kwargs["sigma"]
            return replace(node, dist=s.Normal(mu + shift if shift else mu, sigma * factor if factor != 1.0 else sigma))
        return _with_node(model, name, rebuild)
    return change


#: The breaks selftest measures, by name (eight schools' nodes; NumPyro compiles each).
BREAKS = {b.name: b for b in (
    # The agreement test's skew (tests/skewed_backend.py does the same to PyMC): mu's prior
    # sd 5 becomes 3.25, which moves mu by about half a posterior sd.
    Break("mu-prior-scale", "numpyro", "mu ~ Normal(0, 3.25) instead of Normal(0, 5)", _move_normal("mu", factor=0.65)),
    # SBC's breaks, one of each kind: a prior's scale, a prior's location, the likelihood's scale.
    Break("theta-z-scale", "numpyro", "theta_z ~ Normal(0, 2) instead of Normal(0, 1) (the schools' standardised "
          "effects)", _move_normal("theta_z", factor=2.0)),
    Break("mu-prior-shift", "numpyro", "mu ~ Normal(5, 5) instead of Normal(0, 5)", _move_normal("mu", shift=5.0)),
    Break("y-sd-scale", "numpyro", "y ~ Normal(theta, 1.5 sigma) instead of Normal(theta, sigma)",
          _move_normal("y", factor=1.5)),
)}
_BY_BACKEND = {b.backend: b for b in BREAKS.values()}


def double(brk: Break) -> Backend:
    """The broken backend's declaration: the base backend's engines and options, this module
    as its compiler, and the break's name as an option only it has (so that :func:`compile`
    knows which change to make)."""
    base = get_backend(brk.base)
    return replace(base, name=brk.backend, compiler=__name__, options={"break": (brk.name,), **base.options},
                   prepare_worker=None)


def compile(model: Model, dataset: Dataset, engine: str, options: Mapping[str, str]) -> CompiledModel:
    """The base backend's compiler on the changed model (``Backend.compile``'s contract)."""
    options = dict(options)
    brk = BREAKS[options.pop("break")]
    compiler = importlib.import_module(get_backend(brk.base).compiler)
    return compiler.compile(brk.change(model), dataset, engine, options)


@contextlib.contextmanager
def doubles_registered() -> Iterator[None]:
    """The broken backends in the registry while the block runs, and gone after it (only those
    this call added: a nested call leaves its caller's in place)."""
    added = [name for name in _BY_BACKEND if name not in BACKENDS]
    BACKENDS.update({name: double(_BY_BACKEND[name]) for name in added})
    try:
        yield
    finally:
        for name in added:
            BACKENDS.pop(name, None)


def run_with_doubles(argument: tuple[str, Any]) -> dict[str, Any]:
    """A grid task (``module:function`` and its argument) run with the broken backends
    registered in this worker: replications and SBC find a double by its name there as
    they find a real backend."""
    function, inner = argument
    module, _, name = function.partition(":")
    with doubles_registered():
        return getattr(importlib.import_module(module), name)(inner)


__all__ = ["BREAKS", "Break", "compile", "double", "doubles_registered", "run_with_doubles"]
