"""Inference methods and their settings: one set of names for every backend.

A method is a name in :data:`METHODS` with one settings class that validates itself
(as cmdstanpy has one per method). Backends declare which methods each of their engines
runs; a request for a method an engine lacks is refused before anything starts.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, fields
from typing import Any

from polyppl.errors import UserError, unknown

INITS = ("default", "advi", "uniform")
#: How chains share the CPU: ``auto`` is each backend's measured-fastest default
#: (benchmarks/RESULTS.md); not every engine has every method.
CHAIN_METHODS = ("auto", "sequential", "parallel", "vectorized")


@dataclass(frozen=True)
class SamplerSettings:
    """NUTS settings, named the same for PyMC, NumPyro and Stan.

    ``init``: ``default`` is each engine's own default (PyMC jitter+adapt_diag, NumPyro and
    Stan uniform(-2, 2) on the unconstrained scale); ``advi`` initialises NUTS from an ADVI
    fit where the engine can (PyMC; Stan through cmdstanpy); ``uniform`` asks all for
    uniform(-2, 2) on the unconstrained scale.

    ``chain_method``: ``sequential`` one chain after another in one process; ``parallel``
    one process (PyMC, Stan) or one host device (NumPyro) per chain; ``vectorized`` all
    chains in one batched loop (NumPyro).
    """

    chains: int = 4
    draws: int = 1000
    tune: int = 1000
    seed: int = 1
    #: 0.9 rather than the libraries' 0.8: the hierarchical models here diverge now and then
    #: at 0.8 (measured on the seed data), and one value for all keeps the comparison fair.
    target_accept: float = 0.9
    max_tree_depth: int = 10
    init: str = "default"
    chain_method: str = "auto"

    def __post_init__(self) -> None:
        for name in ("chains", "draws"):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise UserError(f"{name} must be a positive whole number, got {value!r}")
        if not isinstance(self.tune, int) or self.tune < 0:
            raise UserError(f"tune must be a whole number >= 0, got {self.tune!r}")
        if not isinstance(self.seed, int) or not 0 <= self.seed < 2**31:
            raise UserError(f"seed must be a whole number in 0..2^31-1, got {self.seed!r}")
        if not 0 < self.target_accept < 1:
            raise UserError(f"target_accept must lie strictly between 0 and 1, got {self.target_accept!r}")
        if not isinstance(self.max_tree_depth, int) or self.max_tree_depth < 1:
            raise UserError(f"max_tree_depth must be a positive whole number, got {self.max_tree_depth!r}")
        if self.init not in INITS:
            raise unknown("init", self.init, INITS)
        if self.chain_method not in CHAIN_METHODS:
            raise unknown("chain method", self.chain_method, CHAIN_METHODS)

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> SamplerSettings:
        known = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in values.items() if k in known})


@dataclass(frozen=True)
class Method:
    name: str
    settings: type
    description: str


#: The registry: a new method is a line here plus the engines that implement it.
METHODS: dict[str, Method] = {
    "nuts": Method("nuts", SamplerSettings, "the No-U-Turn Sampler (adaptive HMC), each engine's own"),
}


def get_method(name: str) -> Method:
    if name not in METHODS:
        raise unknown("method", name, METHODS)
    return METHODS[name]
