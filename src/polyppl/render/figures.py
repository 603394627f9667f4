"""Matplotlib as every figure of polyppl's uses it: headless, and without importing JAX."""

from __future__ import annotations

import sys


def prepare_matplotlib() -> None:
    """The Agg backend (no display, no GUI window), and no lazy placeholder of JAX left in
    ``sys.modules``: ArviZ registers ``jax`` and ``numpyro`` there as lazy modules, and
    matplotlib's unit conversion asks ``sys.modules["jax"].Array`` of every value it plots,
    which imports JAX for real (1.6-1.9 s on 2 cores, in a process that never runs JAX).
    Dropping the placeholders is safe here: a later ``import jax`` imports it normally, and
    ArviZ's own NumPyro converter, the only user of its placeholder, is not used by polyppl."""
    import matplotlib

    matplotlib.use("Agg")
    for name in ("jax", "numpyro"):
        if type(sys.modules.get(name)).__name__ == "_LazyModule":  # importlib.util's, not loaded yet
            del sys.modules[name]
