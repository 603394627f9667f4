"""Convergence diagnostics, recomputed from the draws with ArviZ (arviz-stats) for every backend.

One definition for all: a backend's own summary is never used. Thresholds follow
Vehtari, Gelman, Simpson, Carpenter and Bürkner (2021), "Rank-normalization, folding, and
localization: an improved R-hat", and Stan's defaults.
"""

from __future__ import annotations

import itertools
from dataclasses import asdict, dataclass
from typing import Mapping, Sequence

import numpy as np
import xarray as xr
from arviz_stats.base import array_stats

RHAT_MAX = 1.01
#: Bulk and tail ESS below 100 per chain make R-hat and MCSE themselves unreliable.
ESS_PER_CHAIN_MIN = 100
EBFMI_MIN = 0.3
#: Flags that make a run's draws no evidence about its posterior (MCSEs unreliable).
CONVERGENCE_FLAGS = ("rhat", "ess_bulk", "ess_tail")

FLAG_MEANINGS = {
    "rhat": f"rank-normalised split R-hat above {RHAT_MAX}: the chains disagree, so they have not converged to one distribution",
    "ess_bulk": f"bulk ESS below {ESS_PER_CHAIN_MIN} per chain: too few effective draws for reliable means and R-hat",
    "ess_tail": f"tail ESS below {ESS_PER_CHAIN_MIN} per chain: the 5% and 95% quantiles are poorly estimated",
    "divergences": "divergent transitions: the sampler met curvature it cannot integrate (often a funnel); the posterior may be biased",
    "tree_depth": "draws hit the maximum tree depth: trajectories were cut short, so exploration is inefficient",
    "ebfmi": f"E-BFMI below {EBFMI_MIN} in some chain: momentum resampling barely moves the energy; heavy tails or a poor metric",
}


def convergence_flags(rhat_max: float, ess_bulk_min: float, ess_tail_min: float, chains: int) -> list[str]:
    """The convergence flags (:data:`CONVERGENCE_FLAGS`) of a run's largest R-hat and
    smallest bulk and tail ESS; NaN fails."""
    flags = []
    if not rhat_max <= RHAT_MAX:
        flags.append("rhat")
    if not ess_bulk_min >= ESS_PER_CHAIN_MIN * chains:
        flags.append("ess_bulk")
    if not ess_tail_min >= ESS_PER_CHAIN_MIN * chains:
        flags.append("ess_tail")
    return flags


def beside_threshold(value: float, threshold: float, decimals: int = 3) -> str:
    """``value`` with as many decimals as it takes not to print as ``threshold`` (R-hat
    1.0103 against 1.01 prints ``1.0103``, not ``1.010``; bulk ESS 399.6 against 400 prints
    ``399.6``); ``decimals`` is the fewest shown."""
    if not np.isfinite(value):
        return str(value)
    for places in range(decimals, 12):
        text = f"{value:.{places}f}"
        if text != f"{threshold:.{places}f}":
            return text
    return repr(value)


def convergence_details(rhat_max: float, ess_bulk_min: float, ess_tail_min: float, chains: int) -> list[str]:
    """Each convergence flag of a run in words, the flagged value beside its threshold:
    ``R-hat 1.0140 > 1.01``, ``bulk ESS 287 < 400 (100 per chain)``."""
    minimum = ESS_PER_CHAIN_MIN * chains
    details = []
    for flag in convergence_flags(rhat_max, ess_bulk_min, ess_tail_min, chains):
        if flag == "rhat":
            details.append(f"R-hat {beside_threshold(rhat_max, RHAT_MAX)} > {RHAT_MAX}")
        else:
            value = ess_bulk_min if flag == "ess_bulk" else ess_tail_min
            details.append(f"{'bulk' if flag == 'ess_bulk' else 'tail'} ESS {beside_threshold(value, minimum, 0)} "
                           f"< {minimum} ({ESS_PER_CHAIN_MIN} per chain)")
    return details


def convergence_failures(flags: Sequence[str]) -> list[str]:
    """The flags among ``flags`` that mean the chains did not converge."""
    return [f for f in flags if f in CONVERGENCE_FLAGS]


def element_keys(values: xr.DataArray) -> list[str]:
    """``rates[A]`` for each element of a variable, ``r[Canada,Intercept]`` for each of a
    matrix (row by row); the bare name for a scalar."""
    extra = [d for d in values.dims if d not in ("chain", "draw")]
    if not extra:
        return [str(values.name)]
    labels = [[str(label) for label in values[d].values] for d in extra]
    return [f"{values.name}[{','.join(combination)}]" for combination in itertools.product(*labels)]


def flatten(posterior: xr.Dataset) -> dict[str, np.ndarray]:
    """Every scalar quantity of a posterior as (chain, draw) draws, keyed like ``rates[A]``
    (``r[Canada,Intercept]`` for a matrix)."""
    out = {}
    for name, values in posterior.data_vars.items():
        extra = [d for d in values.dims if d not in ("chain", "draw")]
        arr = values.transpose("chain", "draw", *extra).values
        keys = element_keys(values)
        if not extra:
            out[keys[0]] = arr
        else:
            flat = arr.reshape(arr.shape[:2] + (-1,))
            for i, key in enumerate(keys):
                out[key] = flat[..., i]
    return out


def _chains(draws: np.ndarray) -> np.ndarray:
    """A (chain, draw) array; one chain's draws as one row."""
    draws = np.asarray(draws, dtype=float)
    return draws[None, :] if draws.ndim == 1 else draws


def ess(draws: np.ndarray, method: str = "bulk") -> float:
    """ArviZ's effective sample size of one (chain, draw) array: ``bulk``, ``tail`` (of the 5%
    and 95% quantiles, the smaller), ``mean`` or any other method ArviZ names."""
    prob = 0.05 if method == "tail" else None
    return float(array_stats.ess(_chains(draws), method=method, prob=prob))


def rhat(draws: np.ndarray, method: str = "rank") -> float:
    """ArviZ's R-hat of one (chain, draw) array (rank-normalised split R-hat by default)."""
    return float(array_stats.rhat(_chains(draws), method=method))


def mcse(draws: np.ndarray, method: str = "mean", prob: float | None = None) -> float:
    """ArviZ's Monte Carlo standard error of the mean, the sd (``sd``), or the quantile ``prob``."""
    return float(array_stats.mcse(_chains(draws), method=method, prob=prob))


@dataclass(frozen=True)
class Summary:
    """One scalar quantity's posterior: estimates with their Monte Carlo standard errors, and
    its convergence numbers."""

    mean: float
    sd: float
    mcse_mean: float
    #: The sd's own Monte Carlo error: what a test of the sd against a reference needs.
    mcse_sd: float
    q05: float
    q50: float
    q95: float
    mcse_q05: float
    mcse_q95: float
    ess_bulk: float
    ess_tail: float
    rhat: float

    def as_dict(self) -> dict[str, float]:
        return asdict(self)


def scalar_summary(draws: np.ndarray) -> Summary:
    """Mean, sd, MCSE and quantiles of one (chain, draw) array, with its convergence numbers."""
    draws = np.asarray(draws, dtype=float)
    constant = np.ptp(draws) == 0
    return Summary(
        mean=float(draws.mean()),
        sd=float(draws.std(ddof=1)) if draws.size > 1 else 0.0,
        mcse_mean=0.0 if constant else mcse(draws),
        mcse_sd=0.0 if constant else mcse(draws, "sd"),
        q05=float(np.quantile(draws, 0.05)),
        q50=float(np.quantile(draws, 0.50)),
        q95=float(np.quantile(draws, 0.95)),
        mcse_q05=0.0 if constant else mcse(draws, "quantile", 0.05),
        mcse_q95=0.0 if constant else mcse(draws, "quantile", 0.95),
        ess_bulk=float(draws.size) if constant else ess(draws, "bulk"),
        ess_tail=float(draws.size) if constant else ess(draws, "tail"),
        rhat=1.0 if constant else rhat(draws),
    )


@dataclass(frozen=True)
class Estimate:
    """A posterior probability (or any mean) with its Monte Carlo standard error."""

    estimate: float
    mcse: float


def probability(indicator: np.ndarray) -> Estimate:
    """A posterior probability as the mean of a 0/1 indicator, with its Monte Carlo error."""
    indicator = np.asarray(indicator, dtype=float)
    constant = np.ptp(indicator) == 0
    return Estimate(float(indicator.mean()), 0.0 if constant else mcse(indicator))


@dataclass(frozen=True)
class RunDiagnostics:
    """Convergence of one run (one definition for every backend), and its cost in gradients
    and seconds of sampling."""

    rhat_max: float
    ess_bulk_min: float
    ess_tail_min: float
    divergences: int
    divergence_rate: float
    tree_depth_saturation: float  # share of draws at the maximum depth
    ebfmi_min: float
    gradient_evaluations: int
    flags: tuple[str, ...]
    warmup_gradient_evaluations: int = 0
    gradients_per_draw: float = 0.0
    ess_bulk_per_second: float | None = None
    ess_bulk_per_1000_gradients: float | None = None
    seconds_per_gradient: float | None = None

    def as_dict(self) -> dict:
        out = asdict(self)
        out["flags"] = list(self.flags)
        return out

    @classmethod
    def from_dict(cls, values: dict) -> RunDiagnostics:
        return cls(**{**values, "flags": tuple(values["flags"])})

    @property
    def converged(self) -> bool:
        """Whether comparing this run's draws is evidence of anything (R-hat and ESS)."""
        return not convergence_failures(self.flags)


def bfmi(energy: np.ndarray) -> np.ndarray:
    """E-BFMI of each chain of ``energy`` (chain, draw): ArviZ's ``bfmi`` (Betancourt 2016),
    without its dispatch, which costs 40 times the arithmetic (2 ms a call; SBC calls it per fit)."""
    energy = np.atleast_2d(np.asarray(energy, dtype=float))
    return np.square(np.diff(energy, axis=1)).mean(axis=1) / np.var(energy, axis=1, ddof=1)


def run_diagnostics(summaries: dict[str, Summary], sample_stats: xr.Dataset, max_tree_depth: int,
                    sampling_seconds: float | None = None, warmup_gradient_evaluations: int = 0) -> RunDiagnostics:
    """Flags and cost of a run from its summaries and sampler statistics; with the sampling
    time, also the speed (bulk ESS per second and per gradient)."""
    rhat = max((s.rhat for s in summaries.values()), default=1.0)
    ess_bulk = min((s.ess_bulk for s in summaries.values()), default=np.inf)
    ess_tail = min((s.ess_tail for s in summaries.values()), default=np.inf)
    stats = {name: sample_stats[name].values for name in ("diverging", "tree_depth", "energy", "n_steps")}
    return diagnose(rhat, ess_bulk, ess_tail, stats, max_tree_depth, sampling_seconds, warmup_gradient_evaluations)


def diagnose(rhat_max: float, ess_bulk_min: float, ess_tail_min: float, stats: Mapping[str, np.ndarray],
             max_tree_depth: int, sampling_seconds: float | None = None,
             warmup_gradient_evaluations: int = 0) -> RunDiagnostics:
    """Flags and cost of a run from its largest R-hat, smallest bulk and tail ESS and its
    sampler statistics (``diverging``, ``tree_depth``, ``energy``, ``n_steps``, each (chain,
    draw)): the one definition of the flags, for :func:`run_diagnostics` and for studies that
    compute R-hat and ESS their own faster way (SBC)."""
    diverging = np.asarray(stats["diverging"]).astype(bool)
    chains, n_draws = diverging.shape[:2]
    depth = np.asarray(stats["tree_depth"])
    energy = np.asarray(stats["energy"], dtype=float)
    rhat, ess_bulk, ess_tail = float(rhat_max), float(ess_bulk_min), float(ess_tail_min)
    ebfmi = float(np.min(bfmi(energy))) if energy.shape[1] > 1 else float("nan")
    flags = convergence_flags(rhat, ess_bulk, ess_tail, chains)
    if diverging.any():
        flags.append("divergences")
    saturation = float((depth >= max_tree_depth).mean())
    if saturation > 0:
        flags.append("tree_depth")
    if ebfmi < EBFMI_MIN:
        flags.append("ebfmi")
    gradients = int(np.asarray(stats["n_steps"]).sum())
    timed = sampling_seconds is not None and sampling_seconds > 0
    return RunDiagnostics(
        rhat_max=rhat,
        ess_bulk_min=ess_bulk,
        ess_tail_min=ess_tail,
        divergences=int(diverging.sum()),
        divergence_rate=float(diverging.mean()),
        tree_depth_saturation=saturation,
        ebfmi_min=ebfmi,
        gradient_evaluations=gradients,
        flags=tuple(flags),
        warmup_gradient_evaluations=warmup_gradient_evaluations,
        gradients_per_draw=gradients / (chains * n_draws),
        ess_bulk_per_second=ess_bulk / sampling_seconds if timed else None,
        ess_bulk_per_1000_gradients=1000 * ess_bulk / gradients if gradients else None,
        seconds_per_gradient=sampling_seconds / gradients if timed and gradients else None,
    )
