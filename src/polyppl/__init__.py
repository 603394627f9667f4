"""polyppl: declare a Bayesian model once; run it on PyMC, NumPyro and Stan.

The public API is imported lazily, so that ``polyppl --help`` and input errors answer
without loading ArviZ or any backend.
"""

from __future__ import annotations

import importlib
from typing import Any

__version__ = "0.1.0"

_API = {
    "sample": "polyppl.execution.fit",
    "run": "polyppl.execution.fit",
    "fit": "polyppl.execution.fit",
    "FitResult": "polyppl.execution.fit",
    "FitRequest": "polyppl.execution.request",
    "FitRecord": "polyppl.execution.record",
    "SamplerSettings": "polyppl.inference.methods",
    "VariationalSettings": "polyppl.inference.methods",
    "Problem": "polyppl.models",
    "resolve": "polyppl.models",
    "formula": "polyppl.models.formula",
    "stan_program": "polyppl.models.stan_program",
    "compare": "polyppl.studies.compare",
    "Comparison": "polyppl.studies.compare",
    "run_repro": "polyppl.studies.repro",
    "run_sbc": "polyppl.studies.sbc",
    "run_replications": "polyppl.studies.replications",
    "run_selftest": "polyppl.studies.selftest",
}

__all__ = ["__version__", *_API]


def __getattr__(name: str) -> Any:
    if name in _API:
        return getattr(importlib.import_module(_API[name]), name)
    raise AttributeError(f"module 'polyppl' has no attribute {name!r}")
