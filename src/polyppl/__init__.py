"""polyppl: declare a Bayesian model once; run it on PyMC, NumPyro and Stan.

The public API is imported lazily, so that ``polyppl --help`` and input errors answer
without loading ArviZ or any backend.
"""

from __future__ import annotations

import importlib
from typing import Any

__version__ = "0.1.0"

_API = {
    "run": "polyppl.runner",
    "sample": "polyppl.runner",
    "RunResult": "polyppl.runner",
    "SamplerSettings": "polyppl.settings",
    "compare": "polyppl.compare",
    "Comparison": "polyppl.compare",
    "run_repro": "polyppl.repro",
}

__all__ = ["__version__", *_API]


def __getattr__(name: str) -> Any:
    if name in _API:
        return getattr(importlib.import_module(_API[name]), name)
    raise AttributeError(f"module 'polyppl' has no attribute {name!r}")
