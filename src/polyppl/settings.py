"""Sampler settings: one set of names for every backend."""

from __future__ import annotations

from dataclasses import asdict, dataclass

from polyppl.errors import UserError, unknown

STAN_ENGINES = ("auto", "cmdstanpy", "pystan")
INITS = ("default", "advi", "uniform")
#: How chains share the CPU: ``auto`` is each backend's measured-fastest default
#: (benchmarks/RESULTS.md); not every backend has every method.
CHAIN_METHODS = ("auto", "sequential", "parallel", "vectorized")
PYMC_SAMPLERS = ("pymc", "numpyro", "nutpie")


@dataclass(frozen=True)
class SamplerSettings:
    """NUTS settings, named the same for PyMC, NumPyro and Stan.

    ``init``: ``default`` is each backend's own default (PyMC jitter+adapt_diag, NumPyro and
    Stan uniform(-2, 2) on the unconstrained scale); ``advi`` initialises NUTS from an ADVI
    fit where the backend can (PyMC; Stan through cmdstanpy); ``uniform`` asks all for
    uniform(-2, 2) on the unconstrained scale.

    ``chain_method``: ``sequential`` one chain after another in one process; ``parallel``
    one process (PyMC, Stan) or one host device (NumPyro) per chain; ``vectorized`` all
    chains in one batched loop (NumPyro only). ``pymc_sampler``: the NUTS that runs a PyMC
    model (PyMC's own, or NumPyro's or nutpie's on the model compiled to JAX or Numba).
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
    stan_engine: str = "auto"
    chain_method: str = "auto"
    pymc_sampler: str = "pymc"

    def __post_init__(self) -> None:
        for name in ("chains", "draws"):
            value = getattr(self, name)
            if not isinstance(value, int) or value < 1:
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
        if self.stan_engine not in STAN_ENGINES:
            raise unknown("Stan engine", self.stan_engine, STAN_ENGINES)
        if self.chain_method not in CHAIN_METHODS:
            raise unknown("chain method", self.chain_method, CHAIN_METHODS)
        if self.pymc_sampler not in PYMC_SAMPLERS:
            raise unknown("PyMC sampler", self.pymc_sampler, PYMC_SAMPLERS)

    def as_dict(self) -> dict:
        return asdict(self)
