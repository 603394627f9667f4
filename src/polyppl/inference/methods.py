"""Inference methods and their settings: one set of names for every backend.

A method is a name in :data:`METHODS` with one settings class that validates itself
(as cmdstanpy has one per method). Backends declare which methods each of their engines
runs; a request for a method an engine lacks is refused before anything starts.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, fields, replace
from typing import Any

from polyppl.errors import UserError, unknown

INITS = ("default", "advi", "pathfinder", "uniform")
#: How chains share the CPU: ``auto`` is each backend's measured-fastest default
#: (benchmarks/RESULTS.md); not every engine has every method.
CHAIN_METHODS = ("auto", "sequential", "parallel", "vectorized")
#: 0.9 rather than the libraries' 0.8: the hierarchical models here diverge now and then at
#: 0.8 (measured on the seed data). A model may ask for more (``Model.target_accept``).
DEFAULT_TARGET_ACCEPT = 0.9


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
    #: None: the model's own target (``Model.target_accept``), else DEFAULT_TARGET_ACCEPT;
    #: every backend gets the same value, which keeps the comparison fair.
    target_accept: float | None = None
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
        if self.target_accept is not None and not 0 < self.target_accept < 1:
            raise UserError(f"target_accept must lie strictly between 0 and 1, got {self.target_accept!r}")
        if not isinstance(self.max_tree_depth, int) or self.max_tree_depth < 1:
            raise UserError(f"max_tree_depth must be a positive whole number, got {self.max_tree_depth!r}")
        if self.init not in INITS:
            raise unknown("init", self.init, INITS)
        if self.chain_method not in CHAIN_METHODS:
            raise unknown("chain method", self.chain_method, CHAIN_METHODS)

    def for_model(self, model: Any) -> SamplerSettings:
        """These settings with the target acceptance decided: the user's, else what ``model``
        asks for, else DEFAULT_TARGET_ACCEPT."""
        if self.target_accept is not None:
            return self
        return replace(self, target_accept=getattr(model, "target_accept", None) or DEFAULT_TARGET_ACCEPT)

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> SamplerSettings:
        known = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in values.items() if k in known})


#: Defaults of ``VariationalSettings.iterations`` and ``.tolerance`` per method: Stan's ADVI
#: defaults (``iter``, ``tol_rel_obj``); for Pathfinder, Stan's and pymc-extras' L-BFGS
#: iteration limit and pymc-extras' and BlackJAX's relative tolerance (Stan's own default,
#: 1e4 machine epsilons, is about 2.2e-12).
VARIATIONAL_DEFAULTS = {
    "advi": {"iterations": 10_000, "tolerance": 0.01},
    "fullrank": {"iterations": 10_000, "tolerance": 0.01},
    "pathfinder": {"iterations": 1000, "tolerance": 1e-5},
}


@dataclass(frozen=True)
class VariationalSettings:
    """Settings of the approximations (``advi``, ``fullrank``, ``pathfinder``), named the same
    for PyMC, NumPyro and Stan; each backend maps them onto its library's arguments.

    ``draws``: draws from the approximation (Pathfinder: draws from each path; the paths'
    draws are pooled and as many draws resampled by Pareto-smoothed importance weights).
    ``iterations``: at most this many optimisation steps (ADVI: stochastic gradient steps;
    Pathfinder: L-BFGS iterations per path). ``tolerance``: the relative change that stops
    the optimisation. ADVI: of the ELBO, estimated every 100 steps, by Stan's rule (the mean
    or median of the recent relative changes below it: CmdStan's ``tol_rel_obj``, and NumPyro
    here, which has no rule of its own); PyMC applies it to the relative and absolute change
    of the approximation's parameters over 100 steps, the check ``pm.sample(init="advi")``
    uses. Pathfinder: of log p between L-BFGS iterations (CmdStan takes it in units of machine
    epsilon). ``None`` is the method's default (``VARIATIONAL_DEFAULTS``).
    ``paths``: Pathfinder's independent single paths, each from its own uniform(-2, 2)
    start on the unconstrained scale. ``gradient_draws``: ADVI's Monte Carlo draws per
    gradient of the ELBO (Stan's ``grad_samples``, PyMC's ``obj_n_mc``, NumPyro's
    ``num_particles``; 1 is each library's default).
    """

    draws: int = 1000
    iterations: int | None = None
    tolerance: float | None = None
    paths: int = 4
    gradient_draws: int = 1
    seed: int = 1

    def __post_init__(self) -> None:
        for name in ("draws", "paths", "gradient_draws"):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise UserError(f"{name} must be a positive whole number, got {value!r}")
        if self.iterations is not None and (not isinstance(self.iterations, int) or self.iterations < 1):
            raise UserError(f"iterations must be a positive whole number, got {self.iterations!r}")
        if self.tolerance is not None and not 0 < self.tolerance < 1:
            raise UserError(f"tolerance must lie strictly between 0 and 1, got {self.tolerance!r}")
        if not isinstance(self.seed, int) or not 0 <= self.seed < 2**31:
            raise UserError(f"seed must be a whole number in 0..2^31-1, got {self.seed!r}")

    def resolved(self, method: str) -> VariationalSettings:
        """These settings with the method's defaults in place of ``None``."""
        defaults = VARIATIONAL_DEFAULTS[method]
        return replace(self, iterations=self.iterations or defaults["iterations"],
                       tolerance=self.tolerance or defaults["tolerance"])

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> VariationalSettings:
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
    "advi": Method("advi", VariationalSettings, "mean-field ADVI: independent Gaussians on the unconstrained scale"),
    "fullrank": Method("fullrank", VariationalSettings, "full-rank ADVI: one correlated Gaussian on the unconstrained scale"),
    "pathfinder": Method("pathfinder", VariationalSettings,
                         "multi-path Pathfinder: Gaussians along L-BFGS paths, pooled by importance resampling"),
}


def get_method(name: str) -> Method:
    if name not in METHODS:
        raise unknown("method", name, METHODS)
    return METHODS[name]


def is_approximation(method: str) -> bool:
    """Whether ``method`` draws from an approximation rather than sampling the posterior."""
    return get_method(method).settings is VariationalSettings


def settings_for(method: str, values: dict[str, Any] | None = None) -> SamplerSettings | VariationalSettings:
    """The method's settings class filled from ``values`` (its defaults for None)."""
    return get_method(method).settings.from_dict(values or {})
