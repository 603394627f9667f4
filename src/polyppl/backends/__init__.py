"""Backends, by name: ``get_backend("stan")``. A column of a comparison may name an engine
too, ``stan:pystan``; :func:`parse_column` splits it.

Adding a backend is a package beside these three (a ``Backend`` declaration in its
``__init__`` and a compiler module) and a line in :data:`BACKENDS`.
"""

from __future__ import annotations

from dataclasses import dataclass

from polyppl.backends import numpyro, pymc, stan
from polyppl.backends.base import Backend, CompiledModel, Engine
from polyppl.errors import UserError, unknown

BACKENDS: dict[str, Backend] = {b.name: b for b in (pymc.BACKEND, numpyro.BACKEND, stan.BACKEND)}


def get_backend(name: str) -> Backend:
    if name not in BACKENDS:
        raise unknown("backend", name, BACKENDS)
    return BACKENDS[name]


@dataclass(frozen=True)
class Column:
    """One column of a comparison: a backend and, optionally, the engine it must use.
    ``label`` is what the user wrote (``stan`` or ``stan:pystan``)."""

    backend: str
    engine: str | None = None

    @property
    def label(self) -> str:
        return f"{self.backend}:{self.engine}" if self.engine else self.backend


def parse_column(text: str) -> Column:
    """``pymc``, ``stan:cmdstanpy``: a backend name and an optional engine, both checked."""
    name, _, engine = text.strip().partition(":")
    backend = get_backend(name)
    if engine:
        backend.engine(engine)
    return Column(name, engine or None)


def parse_columns(texts: list[str] | None) -> list[Column]:
    """The columns asked for (every backend for None or an empty list), checked."""
    columns = [parse_column(t) for t in texts] if texts else [Column(name) for name in BACKENDS]
    labels = [c.label for c in columns]
    if len(set(labels)) != len(labels):
        raise UserError(f"a backend appears twice in {','.join(labels)}")
    return columns


__all__ = ["BACKENDS", "Backend", "Column", "CompiledModel", "Engine", "get_backend", "parse_column", "parse_columns"]
