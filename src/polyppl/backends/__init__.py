"""Backends, by name: ``get_backend("stan")``. A column of a comparison may name an engine
too, ``stan:pystan``; :func:`parse_column` splits it.

Adding a backend is a package beside these three (a ``Backend`` declaration in its
``__init__`` and a compiler module) and a line in :data:`BACKENDS`. A backend that lives
outside polyppl is added without editing it by naming its declaration in the
``POLYPPL_BACKENDS`` environment variable (``module:attribute``, comma-separated); child
processes inherit it, so it runs everywhere a built-in backend does.
"""

from __future__ import annotations

import importlib
import os
from dataclasses import dataclass

from polyppl.backends import numpyro, pymc, stan
from polyppl.backends.base import Backend, CompiledModel, Engine
from polyppl.errors import UserError, unknown

BACKENDS: dict[str, Backend] = {b.name: b for b in (pymc.BACKEND, numpyro.BACKEND, stan.BACKEND)}


def _plugins(text: str) -> list[Backend]:
    found = []
    for entry in filter(None, (part.strip() for part in text.split(","))):
        module, _, attribute = entry.partition(":")
        try:
            backend = getattr(importlib.import_module(module), attribute)
        except (ImportError, AttributeError) as exc:
            raise UserError(f"POLYPPL_BACKENDS: cannot load {entry!r} ({exc}); expected module:attribute") from None
        if not isinstance(backend, Backend):
            raise UserError(f"POLYPPL_BACKENDS: {entry!r} is a {type(backend).__name__}, not a polyppl Backend")
        found.append(backend)
    return found


BACKENDS.update({b.name: b for b in _plugins(os.environ.get("POLYPPL_BACKENDS", ""))})


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
