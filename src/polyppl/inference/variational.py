"""What every backend's approximations share: Stan's ADVI stopping rule, and Pareto-smoothed
importance sampling (PSIS) of draws from an approximation.

* :class:`ElboConvergence` is Stan's rule (``stan/variational/advi.hpp``), so that PyMC's and
  NumPyro's ADVI stop where Stan's would: every 100 steps an ELBO estimate; its relative
  change from the previous one enters a circular buffer of max(0.1 x iterations / 100, 2)
  entries (the first entry is 1); the optimisation stops when the mean or the median of the
  buffer falls below the tolerance. Stan estimates the ELBO from 100 fresh draws; PyMC and
  NumPyro here use the mean of the 100 single-draw estimates their steps computed anyway.
* :func:`psis` smooths the log importance ratios log p - log q (Vehtari, Simpson, Gelman,
  Yao and Gabry 2024, ArviZ's ``psislw``) and returns Pareto k, the shape of the ratios'
  tail (Yao, Vehtari, Simpson and Gelman 2018).
* :func:`psis_resample`: Pathfinder's draws as Stan and pymc-extras return them by default,
  resampled with replacement from the pooled paths' draws by their PSIS weights.
"""

from __future__ import annotations

import numpy as np

#: Steps between ELBO estimates (Stan's ``eval_elbo``).
ELBO_EVERY = 100


class ElboConvergence:
    """Stan's ADVI stopping rule, fed one ELBO estimate every :data:`ELBO_EVERY` steps."""

    def __init__(self, tolerance: float, max_iterations: int) -> None:
        self.tolerance = tolerance
        self.size = max(int(0.1 * max_iterations / ELBO_EVERY), 2)
        self.changes: list[float] = []
        self.previous: float | None = None

    def update(self, elbo: float) -> bool:
        """Record an ELBO estimate; whether the optimisation has converged."""
        change = 1.0 if self.previous is None else abs((elbo - self.previous) / elbo)
        self.previous = elbo
        self.changes = (self.changes + [change])[-self.size:]
        ordered = sorted(self.changes)
        # Stan's median of an even-sized buffer is its upper middle value.
        return float(np.mean(self.changes)) < self.tolerance or ordered[len(ordered) // 2] < self.tolerance


def psis(log_ratios: np.ndarray) -> tuple[np.ndarray, float]:
    """Pareto-smoothed, normalised log weights of ``log_ratios`` (any shape, pooled) and
    Pareto k. Draws where the target has no density (log p = -inf or NaN, outside its
    support) get weight zero; k is estimated from the others."""
    from arviz_stats.base import array_stats

    ratios = np.ravel(np.asarray(log_ratios, dtype=float))
    finite = np.isfinite(ratios)
    log_weights = np.full(ratios.shape, -np.inf)
    if finite.sum() < 2:
        return log_weights.reshape(np.shape(log_ratios)), float("inf")
    if np.ptp(ratios[finite]) == 0:
        # q equals p up to a constant: equal weights, no tail (Pareto k <= 0; reported as 0).
        log_weights[finite] = -np.log(finite.sum())
        return log_weights.reshape(np.shape(log_ratios)), 0.0
    # arviz-stats takes log-likelihood values, as PSIS-LOO uses them (its log ratios are their
    # negatives), so it is given the negated log ratios.
    smoothed, k = array_stats.psislw(-(ratios[finite] - ratios[finite].max()), r_eff=1.0)
    log_weights[finite] = smoothed
    return log_weights.reshape(np.shape(log_ratios)), float(np.asarray(k).reshape(-1)[0])


def psis_resample(log_p: np.ndarray, log_q: np.ndarray, draws: int, seed: int) -> np.ndarray:
    """Indices (into the flattened raw draws) of ``draws`` draws resampled with replacement by
    their PSIS weights."""
    log_weights, _ = psis(np.asarray(log_p) - np.asarray(log_q))
    weights = np.exp(np.ravel(log_weights))
    rng = np.random.default_rng([seed, _RESAMPLE_STREAM])
    return rng.choice(weights.size, size=draws, replace=True, p=weights / weights.sum())


#: Mixed into the run's seed, so resampling never reuses a library's random stream.
_RESAMPLE_STREAM = 0x9A7F


def uniform_starts(rng: np.random.Generator, count: int, size: int) -> np.ndarray:
    """``count`` starting points of ``size`` unconstrained coordinates, uniform(-2, 2) as
    Stan's and NumPyro's NUTS start."""
    return rng.uniform(-2.0, 2.0, size=(count, size))
