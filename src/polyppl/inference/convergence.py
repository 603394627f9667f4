"""Bulk ESS, tail ESS and rank-normalised split R-hat of many quantities at once, compiled
by Numba: ArviZ's definitions (arviz-stats' ``ess`` bulk and tail, ``rhat`` rank; Vehtari et al.
2021), to the last few bits.

Simulation-based calibration computes them for every quantity of every fit, hundreds of
fits per backend. ArviZ loops over quantities in Python, and even vectorised NumPy spent
about 10 ms a fit of eight schools (19 quantities: two argsorts, three FFTs, partitions,
a dozen passes over temporaries), a tenth of nutpie's whole fit. Here it is under 2 ms:

* one NumPy argsort of every quantity's split draws (SIMD, twice as fast as Numba's sort)
  gives the ranks, the quantiles and the median; the folded draws' order is merged from it
  (the draws below the median walked down, those above walked up) rather than sorted;
* normal scores are looked up, not computed: an average rank is a multiple of 1/2;
* autocovariances are summed lag by lag only as far as Geyer's initial positive sequence
  reads them (a few lags for a well-mixing chain) instead of at every lag by FFT.

Numba compiles the kernels on first use and caches them on disk (seconds, once per
installation; then tens of milliseconds per process).
"""

from __future__ import annotations

import functools
import time

import numba
import numpy as np

#: ArviZ's test for a constant quantity (``np.finfo(float).resolution``).
_RESOLUTION = float(np.finfo(np.float64).resolution)
_JIT = {"cache": True, "nogil": True, "error_model": "numpy"}  # numpy: x / 0 is inf or nan, as in NumPy


def convergence(draws: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Bulk ESS, tail ESS and rank R-hat of every quantity of ``draws`` (chain, draw,
    quantity). As ArviZ: NaN for a quantity with a NaN draw or for chains of under 4
    draws, and R-hat NaN for a single chain; a constant quantity's ESS is its number of
    split draws (its R-hat NaN)."""
    x = np.ascontiguousarray(np.moveaxis(np.asarray(draws, dtype=float), -1, 0))  # (quantity, chain, draw)
    quantities, chains, n = x.shape
    half = n // 2
    split = np.concatenate([x[:, :, :half], x[:, :, n - half:]], axis=1)  # each chain's halves
    # NumPy sorts all quantities in one call, with SIMD: twice as fast as Numba's quicksort.
    order = np.argsort(split.reshape(quantities, -1), axis=1)
    # Tail ESS reads the quantiles of all draws, an odd chain's middle draw included.
    everything = (np.take_along_axis(split.reshape(quantities, -1), order, axis=1) if 2 * half == n
                  else np.sort(x.reshape(quantities, -1), axis=1))
    return _convergence(x, split, order, everything, _normal_scores(2 * chains * half))


def prepare() -> float:
    """Compile the kernels, or load them from Numba's cache, in this process; the seconds it
    took (0 once done). A grid's task counts them with its compiles, not as per-fit overhead."""
    global _PREPARED
    if _PREPARED:
        return 0.0
    started = time.perf_counter()
    convergence(np.zeros((2, 4, 1)))
    _PREPARED = True
    return time.perf_counter() - started


_PREPARED = False


@functools.lru_cache(maxsize=16)
def _normal_scores(size: int) -> np.ndarray:
    """The rank-normalised value of every possible average rank r among ``size`` values,
    at index 2r: ``ndtri((r - 3/8) / (size + 1/4))`` (Blom), as ArviZ's ``_z_scale``."""
    from scipy import special

    ranks = np.arange(2 * size + 1) / 2.0
    return special.ndtri((ranks - 3 / 8) / (size - 2 * 3 / 8 + 1))


@numba.njit(**_JIT)
def _convergence(x, split, order, everything, scores):
    # x: (quantity, chain, draw); split: its split chains, order: what sorts them; everything: x sorted
    quantities, chains, n = x.shape
    bulk = np.full(quantities, np.nan)
    tail = np.full(quantities, np.nan)
    rhat = np.full(quantities, np.nan)
    if n < 4:
        return bulk, tail, rhat
    for k in range(quantities):
        if _has_nan(x[k]):
            continue
        ordered = split[k].ravel()[order[k]]
        z = _rank_normalised(split[k], order[k], scores)
        bulk[k] = _ess(z)
        tail[k] = min(_ess(_at_most(split[k], _quantile(everything[k], 0.05))),
                      _ess(_at_most(split[k], _quantile(everything[k], 0.95))))
        if chains > 1:
            median = _median(ordered)  # of the split draws, as ArviZ folds them
            folded_order = _folded_order(ordered, order[k], median)
            rhat[k] = max(_rhat(z), _rhat(_rank_normalised(_distance(split[k], median), folded_order, scores)))
    return bulk, tail, rhat


# Element-wise work is written as loops: Numba compiles an array expression such as
# ``out[c] = x[c] - m`` in seconds each, loops in a fraction of one, the same machine code.


@numba.njit(**_JIT)
def _has_nan(x):
    for value in x.ravel():
        if np.isnan(value):
            return True
    return False


@numba.njit(**_JIT)
def _at_most(x, threshold):
    """1.0 where ``x <= threshold``, else 0.0."""
    out = np.empty(x.shape)
    for c in range(x.shape[0]):
        for i in range(x.shape[1]):
            out[c, i] = 1.0 if x[c, i] <= threshold else 0.0
    return out


@numba.njit(**_JIT)
def _distance(x, centre):
    """``|x - centre|``."""
    out = np.empty(x.shape)
    for c in range(x.shape[0]):
        for i in range(x.shape[1]):
            out[c, i] = abs(x[c, i] - centre)
    return out


@numba.njit(**_JIT)
def _squares_about(values, centre):
    total = 0.0
    for value in values:
        total += (value - centre) ** 2
    return total


@numba.njit(**_JIT)
def _folded_order(ordered, order, median):
    """The order that sorts ``|values - median|``, from the order that sorts the values: the
    draws below the median, walked down, merged with those above it, walked up (no sort)."""
    size = ordered.size
    out = np.empty(size, dtype=np.int64)
    below = np.searchsorted(ordered, median) - 1
    above = below + 1
    for i in range(size):
        if above >= size or (below >= 0 and median - ordered[below] <= ordered[above] - median):
            out[i] = order[below]
            below -= 1
        else:
            out[i] = order[above]
            above += 1
    return out


@numba.njit(**_JIT)
def _rank_normalised(values, order, scores):
    """Normal scores of the average ranks of ``values`` (ties share their mean rank), given
    the order that sorts them."""
    flat = values.ravel()
    size = flat.size
    out = np.empty(size)
    i = 0
    while i < size:
        j = i
        while j + 1 < size and flat[order[j + 1]] == flat[order[i]]:
            j += 1
        score = scores[i + j + 2]  # ranks i + 1 .. j + 1: twice their mean is i + j + 2
        for k in range(i, j + 1):
            out[order[k]] = score
        i = j + 1
    return out.reshape(values.shape)


@numba.njit(**_JIT)
def _quantile(ordered, prob):
    """NumPy's default (linear) quantile of sorted values, in its arithmetic."""
    virtual = (ordered.size - 1) * prob
    below = int(np.floor(virtual))
    above = min(below + 1, ordered.size - 1)
    gamma = virtual - below
    difference = ordered[above] - ordered[below]
    if gamma >= 0.5:
        return ordered[above] - difference * (1 - gamma)
    return ordered[below] + difference * gamma


@numba.njit(**_JIT)
def _median(ordered):
    """NumPy's median of sorted values, in its arithmetic."""
    middle = ordered.size // 2
    if ordered.size % 2:
        return ordered[middle]
    return (ordered[middle - 1] + ordered[middle]) / 2


@numba.njit(**_JIT)
def _rhat(x):
    chains, n = x.shape
    means = np.empty(chains)
    within = 0.0
    for c in range(chains):
        means[c] = x[c].mean()
        within += _squares_about(x[c], means[c]) / (n - 1)
    within /= chains
    between = n * _squares_about(means, means.mean()) / (chains - 1)
    return np.sqrt((between / within + n - 1) / n)


@numba.njit(**_JIT)
def _mean_autocovariance(centered, lag):
    chains, n = centered.shape
    total = 0.0
    for c in range(chains):
        products = 0.0
        for i in range(n - lag):
            products += centered[c, i] * centered[c, i + lag]
        total += products / n
    return total / chains


@numba.njit(**_JIT)
def _ess(x):
    """ESS of (chain, draw) draws: ArviZ's ``_ess`` step for step (Geyer's initial positive
    and monotone sequences), its autocovariances summed only at the lags it reads."""
    chains, n = x.shape
    lowest = highest = x[0, 0]
    for value in x.ravel():
        lowest, highest = min(lowest, value), max(highest, value)
    if highest - lowest < _RESOLUTION:
        return float(x.size)
    means = np.empty(chains)
    centered = np.empty(x.shape)
    for c in range(chains):
        means[c] = x[c].mean()
        for i in range(n):
            centered[c, i] = x[c, i] - means[c]
    mean_var = _mean_autocovariance(centered, 0) * n / (n - 1.0)
    var_plus = mean_var * (n - 1.0) / n
    if chains > 1:
        var_plus += _squares_about(means, means.mean()) / (chains - 1)
    rho = np.zeros(n)
    even = 1.0
    rho[0] = even
    odd = 1.0 - (mean_var - _mean_autocovariance(centered, 1)) / var_plus
    rho[1] = odd
    t = 1
    while t < n - 3 and even + odd > 0.0:
        even = 1.0 - (mean_var - _mean_autocovariance(centered, t + 1)) / var_plus
        odd = 1.0 - (mean_var - _mean_autocovariance(centered, t + 2)) / var_plus
        if even + odd >= 0:
            rho[t + 1] = even
            rho[t + 2] = odd
        t += 2
    last = t - 2
    if even > 0:
        rho[last + 1] = even
    t = 1
    while t <= last - 2:
        if rho[t + 1] + rho[t + 2] > rho[t - 1] + rho[t]:
            rho[t + 1] = (rho[t - 1] + rho[t]) / 2.0
            rho[t + 2] = rho[t + 1]
        t += 2
    if _has_nan(rho):
        return np.nan
    total = chains * n
    tau = -1.0 + 2.0 * np.sum(rho[: last + 1]) + np.sum(rho[last + 1: last + 2])
    return total / max(tau, 1 / np.log10(total))
