"""Simulation-based calibration (SBC): from posterior draws to ranks, and from ranks to verdicts.

SBC (Talts, Betancourt, Simpson, Vehtari and Gelman 2018, "Validating Bayesian inference
algorithms with simulation-based calibration"; Modrák, Moon, Kim, Bürkner, Huurre,
Faltejsková, Gelman and Vehtari 2023, "Simulation-based calibration checking for Bayesian
computation: the choice of test quantities shapes sensitivity") draws a true value from the
prior, data from the likelihood, fits the model, and records the rank of the true value
among L posterior draws. If the fit is exact, the rank is uniform on 0..L. This module is
the part after the fits: thinning, ranks, a test of uniformity with a family-wise level,
and the verdict per quantity. It needs no backend.

Thinning. Autocorrelated draws make ranks non-uniform even for an exact sampler (the count
of draws below the true value is overdispersed, so ranks pile up at 0 and L). Talts et al.
thin to about the effective sample size; :func:`thin_to` keeps L draws evenly spaced within
each chain, :func:`choose_L` fixes one L for a whole SBC run (ranks with different L are
not comparable) and :func:`count_below` counts the simulations whose ESS fell short of it.

The test (Säilynoja, Bürkner and Vehtari 2022, "Graphical test for discrete uniformity and
its applications in goodness-of-fit evaluation and multiple sample comparison", Statistics
and Computing 32). With S ranks on 0..L, let X_j = #{ranks < j} for j = 1..L: the
ECDF of the fractional ranks (r + 1) / (L + 1) at z_j = j / (L + 1), times S. Under
uniformity X_j ~ Binomial(S, z_j), and the ECDF's pointwise two-sided tail probability is

    p_j = min(1, 2 min(P(Bin(S, z_j) <= X_j), P(Bin(S, z_j) >= X_j))).

The statistic is gamma = min_j p_j: the quantity whose quantile the paper's simulation
method takes, and Modrák et al.'s gamma statistic (the SBC R package's ``log_gamma`` is its
log). The ECDF leaves the simultaneous band of level 1 - alpha exactly when gamma <= gamma*,
the paper's "adjusted gamma", and the p-value is the null probability of a gamma at most the
one observed:

    p = P_0(min_j p_j <= gamma_observed) = 1 - P_0(X_j inside {x: p_j(x) > gamma_obs}, all j).

Computation (the paper's optimisation method, done exactly). The probability that
the whole ECDF path stays inside per-point count intervals is the paper's recursion over the
evaluation points: given X_{j-1} = x, X_j - x ~ Bin(S - x, (z_j - z_{j-1}) / (1 - z_{j-1})).
Here the same recursion runs in an equivalent, cheaper form: the counts of the L + 1 rank
values are multinomial with equal cells, i.e. independent Poisson(S / (L + 1)) counts
conditioned on their sum being S, so each step is a convolution with one fixed Poisson
kernel, and the probability of leaving the band is accumulated, first exit by first exit,
as P(inside up to j - 1, X_j = x outside) x P(remaining counts sum to S - x), divided by
P(all counts sum to S). All terms are positive, so small p-values keep their relative
precision (no 1 - (1 - p)). Nothing is simulated: p-values and bands are deterministic,
exact up to floating point, and need no seed. Instead of the paper's numerical optimiser on
the (step-shaped) coverage function, the adjusted gamma is found by bisection over the finite
set of values the pointwise tail probabilities can take: the largest such value whose exact
exit probability is <= alpha. The band's actual size (its exact false-alarm probability,
at most alpha because counts are discrete) is reported with it.

Cost: one p-value is one pass over the L evaluation points, each a convolution restricted to
the in-band states: O(L x w x k) with w the band width in counts (at most S + 1) and k about
S / (L + 1) + 12 sqrt(S / (L + 1)) + 30 the kernel length; 1-3 ms for S = 200, L = 99. Three
tables of L x (S + 1) values (binomial tails, Poisson remainders) are computed once per
(S, L) and cached. A band (bisection: about log2(L x S) passes) takes 0.05-0.3 s for S up to
1,000 and is cached.

Family-wise level. Each quantity's p-value is one test; the p-values of one backend are
adjusted together with Holm's method (valid under any dependence between quantities, which
SBC quantities of one simulation have). A quantity is ``miscalibrated`` when its Holm-adjusted
p-value is at most ``family_alpha``, so with every quantity calibrated the chance of any
false ``miscalibrated`` in a backend is at most ``family_alpha``. A chi-square test on
binned ranks (the Stan User's Guide's) is reported alongside; it does not decide.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from functools import lru_cache
from typing import Iterable, Mapping, Sequence

import numpy as np
from scipy import special, stats

#: L of an SBC run when the ESS allows: 100 possible ranks, rank histograms of 10, 20, 25 or 50 bins.
DEFAULT_L = 99
#: Values of L tried from the largest down when the ESS is short of the default; L + 1 is
#: round so that the rank histogram has equal bins.
L_LADDER = (9, 19, 49, 99, 199, 499, 999)
#: Family-wise false-alarm rate per backend (Holm over that backend's quantities).
#: 5%, not the 1% of ``polyppl.studies.agreement``: SBC's power is bounded by the number of
#: simulations (each one a full fit). At S = 200 and L = 99, a quantity whose posterior is
#: 20% too narrow, among ten quantities, is flagged in 48% of SBC runs at 5% and in 28% at 1%
#: (tests/test_sbc_stats.py). A ``miscalibrated`` verdict is a prompt to look at the ECDF
#: plot, not a proof.
FAMILY_ALPHA = 0.05
#: Level of the simultaneous ECDF band drawn in the plots.
BAND_LEVEL = 0.95
#: Largest number of bins of the rank histogram and of the chi-square test.
MAX_BINS = 20
#: Expected count per bin below which the chi-square approximation is not trusted.
MIN_EXPECTED_PER_BIN = 5
VERDICTS = ("calibrated", "miscalibrated")
#: One line for the JSON: what decided the verdicts.
METHOD = ("ECDF of fractional ranks against the simultaneous band of Säilynoja, Bürkner and Vehtari (2022); "
          "exact p-value of gamma = min pointwise binomial tail probability; Holm over quantities per backend")


# --------------------------------------------------------------------------- thinning and ranks


def _chains(draws: np.ndarray) -> np.ndarray:
    draws = np.asarray(draws, dtype=float)
    if draws.ndim == 1:
        draws = draws[np.newaxis]
    if draws.ndim != 2 or draws.size == 0:
        raise ValueError(f"draws must be a non-empty (chain, draw) array, got shape {draws.shape}")
    return draws


def thin_to(draws: np.ndarray, L: int, rng: np.random.Generator) -> np.ndarray:
    """Exactly ``L`` of the (chain, draw) ``draws``, evenly spaced within each chain.

    Each chain gives ``L // chains`` draws, and ``L % chains`` chains chosen at random one
    more. A chain of D draws giving m keeps draws ``floor((t + k D) / m)``, k = 0..m-1, with
    ``t`` uniform on 0..D-1: gaps are floor(D / m) or ceil(D / m), as even as integers allow,
    and every draw is kept with probability m / D (the values t + k D run once over 0..mD-1),
    so no part of a chain is favoured. A 1-D array is one chain.
    """
    draws = _chains(draws)
    chains, length = draws.shape
    if not 1 <= L <= draws.size:
        raise ValueError(f"cannot keep L={L} of {draws.size} draws")
    per_chain = np.full(chains, L // chains)
    per_chain[rng.permutation(chains)[: L % chains]] += 1
    kept = []
    for chain, m in enumerate(per_chain):
        if m == 0:
            continue
        start = int(rng.integers(0, length))
        kept.append(draws[chain, (start + np.arange(m) * length) // m])
    return np.concatenate(kept)


def thin_to_ess(draws: np.ndarray, ess: float, rng: np.random.Generator) -> np.ndarray:
    """``draws`` thinned to L = floor(``ess``) draws (at least 1, at most all of them), evenly
    spaced per chain (:func:`thin_to`). For one SBC run use :func:`choose_L` and
    :func:`thin_to` instead, so that every simulation has the same L."""
    if not math.isfinite(ess):
        raise ValueError(f"ess must be finite, got {ess!r}")
    size = _chains(draws).size
    return thin_to(draws, min(max(int(math.floor(ess)), 1), size), rng)


def choose_L(pilot_ess: Iterable[float], default: int = DEFAULT_L) -> int:
    """One L for a whole SBC run: ``default`` if the smallest ESS of a pilot reaches it, else
    the largest value of :data:`L_LADDER` at most that ESS (a non-finite ESS counts as 0).

    Raises ``ValueError`` when even the smallest rung (9) exceeds the pilot's ESS: such fits
    carry too little information to rank anything.
    """
    values = [e if math.isfinite(e) else 0.0 for e in pilot_ess]
    if not values:
        raise ValueError("choose_L needs at least one pilot ESS")
    if default < 1:
        raise ValueError(f"default L must be positive, got {default}")
    smallest = min(values)
    if smallest >= default:
        return default
    fitting = [rung for rung in L_LADDER if rung <= min(smallest, default)]
    if not fitting:
        raise ValueError(f"the pilot's smallest ESS, {smallest:.1f}, is below the smallest L considered ({L_LADDER[0]})")
    return fitting[-1]


def count_below(ess: Iterable[float], L: int) -> int:
    """How many simulations had an ESS below ``L`` (a non-finite ESS counts): their ranks
    come from draws more autocorrelated than L suggests, and may be overdispersed."""
    return sum(1 for e in ess if not (math.isfinite(e) and e >= L))


def rank(true_value: float, draws: np.ndarray, rng: np.random.Generator) -> int:
    """Rank of ``true_value`` among ``draws`` (any shape): the number of draws below it, plus
    a uniform random share of the draws equal to it, so the rank is uniform on 0..L under
    calibration even for discrete or indicator quantities with ties."""
    values = np.asarray(draws, dtype=float).reshape(-1, 1)
    return int(column_ranks(np.array([true_value], dtype=float), values, rng)[0])


def column_ranks(true_values: np.ndarray, draws: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """:func:`rank` of each quantity at once: ``true_values`` (q,) among the columns of
    ``draws`` (L, q), ties broken by one uniform draw per quantity."""
    truth, values = np.asarray(true_values, dtype=float), np.asarray(draws, dtype=float)
    if not np.isfinite(truth).all() or not np.isfinite(values).all():
        raise ValueError("rank needs a finite true value and finite draws")
    below = np.count_nonzero(values < truth, axis=0)
    ties = np.count_nonzero(values == truth, axis=0)
    return below + rng.integers(0, ties + 1)


# --------------------------------------------------------------------------- the band test


def _checked_ranks(ranks: Sequence[int] | np.ndarray, L: int) -> np.ndarray:
    values = np.asarray(ranks)
    if values.ndim != 1 or values.size == 0:
        raise ValueError("ranks must be a non-empty 1-D sequence")
    if not np.issubdtype(values.dtype, np.integer):
        if not np.all(np.isfinite(values)) or not np.all(values == np.round(values)):
            raise ValueError("ranks must be integers")
    if L < 1 or values.min() < 0 or values.max() > L:
        raise ValueError(f"ranks must lie in 0..L={L}")
    return values.astype(np.int64)


def ecdf_counts(ranks: Sequence[int] | np.ndarray, L: int) -> np.ndarray:
    """X_j = #{ranks < j} for j = 0..L+1 (X_0 = 0, X_{L+1} = S): S times the ECDF of the
    fractional ranks (r + 1) / (L + 1) at z_j = j / (L + 1)."""
    values = _checked_ranks(ranks, L)
    return np.concatenate([[0], np.cumsum(np.bincount(values, minlength=L + 1))])


@lru_cache(maxsize=4)
def _tail_tables(n: int, L: int) -> tuple[np.ndarray, np.ndarray]:
    """Twice the lower and upper binomial tails, 2 P(Bin(n, z_j) <= x) and 2 P(Bin(n, z_j) >= x),
    for j = 1..L (rows) and x = 0..n (columns). Read-only: shared by every caller.

    The upper table is the lower one mirrored, P(Bin(n, z_j) >= x) = P(Bin(n, z_{L+1-j}) <= n - x),
    so that mirror-image ECDFs get bit-identical statistics: computed separately they differ in
    the last bits, and a p-value P(gamma <= observed) would then drop the mirror image's half
    of an exact tie (it halved p-values in the enumeration test)."""
    z = np.arange(1, L + 1)[:, np.newaxis] / (L + 1)
    lower = 2 * stats.binom.cdf(np.arange(n + 1)[np.newaxis, :], n, z)
    lower.flags.writeable = False
    upper = lower[::-1, ::-1]
    return lower, upper


def gamma_statistic(ranks: Sequence[int] | np.ndarray, L: int) -> float:
    """gamma = min_j min(1, 2 P(Bin(S, z_j) <= X_j), 2 P(Bin(S, z_j) >= X_j)), j = 1..L: the
    smallest pointwise two-sided tail probability of the rank ECDF. Small is non-uniform."""
    counts = ecdf_counts(ranks, L)
    lower, upper = _tail_tables(int(counts[-1]), L)
    counts, rows = counts[1:-1], np.arange(L)
    return float(min(1.0, lower[rows, counts].min(), upper[rows, counts].min()))


def _inside(n: int, L: int, gamma: float) -> tuple[np.ndarray, np.ndarray]:
    """Per evaluation point j = 1..L, the counts x with min(2 lower tail, 2 upper tail) > gamma:
    the interval [lo_j, hi_j] (lower tail rises with x, upper tail falls, so it is one interval)."""
    lower, upper = _tail_tables(n, L)
    return np.count_nonzero(lower <= gamma, axis=1), np.count_nonzero(upper > gamma, axis=1) - 1


@lru_cache(maxsize=4)
def _poisson_tables(n: int, L: int) -> tuple[np.ndarray, np.ndarray, float]:
    """For n ranks on 0..L seen as L + 1 independent Poisson(n / (L + 1)) cell counts: the
    kernel (one cell's pmf, cut at rate + 12 sqrt(rate) + 30, beyond which the Poisson tail
    is below 1e-32 for any rate up to 1e5), the table
    P(the L + 1 - j cells after X_j sum to n - x) for j = 1..L (rows) and x = 0..n, and
    P(all cells sum to n)."""
    rate = n / (L + 1)
    log_factorial = special.gammaln(np.arange(n + 1) + 1.0)
    width = min(n, int(math.ceil(rate + 12 * math.sqrt(rate) + 30)))
    kernel = np.exp(np.arange(width + 1) * math.log(rate) - rate - log_factorial[: width + 1])
    means = (L + 1 - np.arange(1, L + 1))[:, np.newaxis] * rate
    left_over = n - np.arange(n + 1)[np.newaxis, :]
    remaining = np.exp(left_over * np.log(means) - means - log_factorial[left_over])
    kernel.flags.writeable = False
    remaining.flags.writeable = False
    return kernel, remaining, math.exp(n * math.log(n) - n - log_factorial[n])


def _exit_probability(n: int, L: int, lo: np.ndarray, hi: np.ndarray) -> float:
    """Null probability that X_j leaves [lo_j, hi_j] for some j = 1..L (S = n ranks on 0..L).

    The L + 1 cell counts are independent Poisson(n / (L + 1)) conditioned on summing to n;
    ``state`` holds P(path inside so far, X_j = x) for x in ``first..first + len - 1``
    (unconditioned), and each first exit at x is weighted by P(the cells left sum to n - x).
    """
    kernel, remaining, total = _poisson_tables(n, L)
    state, first = np.ones(1), 0
    left = 0.0
    for j in range(L):
        state = np.convolve(state, kernel)[: n - first + 1]  # counts above n cannot sum to n
        last = first + state.size - 1
        low, high = int(lo[j]), int(hi[j])
        if low > first:  # the path exits below the band
            k = min(low, last + 1) - first
            left += float(state[:k] @ remaining[j, first: first + k])
        if high < last:  # or above it
            start = max(high + 1, first)
            left += float(state[start - first:] @ remaining[j, start: last + 1])
        start, stop = max(low, first), min(high, last)
        if start > stop:
            break
        state, first = state[start - first: stop - first + 1], start
    return min(1.0, left / total)


def band_p_value(ranks: Sequence[int] | np.ndarray, L: int) -> tuple[float, float]:
    """(gamma, p): the statistic of :func:`gamma_statistic` and its exact null p-value,
    P(gamma <= observed) for S uniform ranks on 0..L. p <= alpha exactly when the rank ECDF
    leaves the simultaneous 1 - alpha band of :func:`simultaneous_band`."""
    values = _checked_ranks(ranks, L)
    gamma = gamma_statistic(values, L)
    if gamma >= 1.0:
        return gamma, 1.0
    n = values.size
    lo, hi = _inside(n, L, gamma)
    return gamma, _exit_probability(n, L, lo, hi)


@dataclass(frozen=True, eq=False)
class EcdfBand:
    """The simultaneous band for the ECDF of S uniform ranks on 0..L, at the L + 2 points
    z_j = j / (L + 1), j = 0..L+1, in counts (divide by S for the ECDF)."""

    n: int
    L: int
    level: float
    gamma: float  # the adjusted gamma: the ECDF leaves the band iff its gamma <= this
    size: float  # exact probability that a uniform sample's ECDF leaves the band (<= 1 - level)
    lower: np.ndarray
    upper: np.ndarray

    @property
    def z(self) -> np.ndarray:
        return np.arange(self.L + 2) / (self.L + 1)


@lru_cache(maxsize=32)
def simultaneous_band(n: int, L: int, level: float = BAND_LEVEL) -> EcdfBand:
    """The 1 - alpha = ``level`` simultaneous band of Säilynoja et al. (2022) for ``n`` ranks
    on 0..L: the adjusted gamma is the largest attainable pointwise tail probability whose
    exact exit probability is at most alpha (bisection over the attainable values)."""
    if not 0 < level < 1:
        raise ValueError(f"level must lie strictly between 0 and 1, got {level}")
    if n < 1 or L < 1:
        raise ValueError(f"need n >= 1 ranks and L >= 1, got n={n}, L={L}")
    alpha = 1 - level
    lower, upper = _tail_tables(n, L)
    candidates = np.unique(np.minimum(lower, upper))
    candidates = candidates[candidates < 1.0]
    # exit(c) rises with c; find the last candidate with exit <= alpha (none: gamma 0, band = everything).
    low, high, best, best_size = 0, candidates.size - 1, 0.0, 0.0
    while low <= high:
        middle = (low + high) // 2
        size = _exit_probability(n, L, *_inside(n, L, float(candidates[middle])))
        if size <= alpha:
            best, best_size, low = float(candidates[middle]), size, middle + 1
        else:
            high = middle - 1
    lo, hi = _inside(n, L, best)
    lower_counts = np.concatenate([[0], lo, [n]])
    upper_counts = np.concatenate([[0], hi, [n]])
    lower_counts.flags.writeable = False
    upper_counts.flags.writeable = False
    return EcdfBand(n, L, level, best, best_size, lower_counts, upper_counts)


# --------------------------------------------------------------------------- binned ranks


def histogram_bins(n: int, L: int) -> int:
    """Bins for the rank histogram and the chi-square test: the largest divisor of L + 1 (equal
    bins) that is at most :data:`MAX_BINS` and leaves at least :data:`MIN_EXPECTED_PER_BIN`
    expected ranks per bin; 1 when none does."""
    cap = min(MAX_BINS, n // MIN_EXPECTED_PER_BIN)
    return max((d for d in range(1, cap + 1) if (L + 1) % d == 0), default=1)


def binned_counts(ranks: Sequence[int] | np.ndarray, L: int, bins: int) -> np.ndarray:
    """Counts of ranks in ``bins`` equal bins of 0..L (``bins`` must divide L + 1)."""
    if bins < 1 or (L + 1) % bins:
        raise ValueError(f"{bins} bins do not divide the {L + 1} possible ranks equally")
    values = _checked_ranks(ranks, L)
    return np.bincount(values // ((L + 1) // bins), minlength=bins)


def chi_square(ranks: Sequence[int] | np.ndarray, L: int) -> tuple[float, float, int]:
    """(X^2, p, bins): Pearson's chi-square on the ranks in :func:`histogram_bins` equal bins,
    p from chi-square(bins - 1) (the Stan User's Guide's test). NaNs when only one bin fits."""
    values = _checked_ranks(ranks, L)
    bins = histogram_bins(values.size, L)
    if bins < 2:
        return math.nan, math.nan, bins
    result = stats.chisquare(binned_counts(values, L, bins))
    return float(result.statistic), float(result.pvalue), bins


# --------------------------------------------------------------------------- verdicts


def holm(p_values: Sequence[float]) -> list[float]:
    """Holm-adjusted p-values: p_(i) -> max over k <= i of min(1, (m - k + 1) p_(k)) in
    increasing order; rejecting adjusted p <= alpha is Holm's step-down test at alpha."""
    order = np.argsort(p_values, kind="stable")
    m = len(p_values)
    adjusted = [0.0] * m
    running = 0.0
    for position, index in enumerate(order):
        running = max(running, min(1.0, (m - position) * float(p_values[index])))
        adjusted[index] = running
    return adjusted


@dataclass(frozen=True)
class SbcQuantityResult:
    """One quantity of one backend: its ranks and the band test's verdict."""

    quantity: str
    ranks: tuple[int, ...]
    L: int
    statistic: float  # gamma: the smallest pointwise two-sided tail probability of the rank ECDF
    p_value: float  # exact null probability of a gamma this small
    adjusted_p_value: float  # Holm over the backend's quantities
    family_alpha: float  # miscalibrated iff adjusted_p_value <= family_alpha
    verdict: str  # "calibrated" or "miscalibrated"
    chi2_statistic: float
    chi2_p_value: float
    chi2_bins: int

    @property
    def n_simulations(self) -> int:
        return len(self.ranks)

    def as_dict(self) -> dict:
        """JSON-ready; the shape of ``backends.<backend>.parameters.<quantity>``."""
        def number(x: float) -> float | None:
            return x if math.isfinite(x) else None

        return {
            "ranks": list(self.ranks),
            "L": self.L,
            "n_simulations": self.n_simulations,
            "verdict": self.verdict,
            "statistic": self.statistic,
            "p_value": self.p_value,
            "adjusted_p_value": self.adjusted_p_value,
            "family_alpha": self.family_alpha,
            "chi2": {"statistic": number(self.chi2_statistic), "p_value": number(self.chi2_p_value), "bins": self.chi2_bins},
        }


def judge(
    ranks_by_quantity: Mapping[str, Sequence[int]], L: int, family_alpha: float = FAMILY_ALPHA
) -> dict[str, SbcQuantityResult]:
    """Verdicts for one backend: each quantity's band-test p-value, Holm-adjusted over all of
    ``ranks_by_quantity``; ``miscalibrated`` where the adjusted p-value is <= ``family_alpha``.
    Quantities may have different numbers of ranks (simulations whose fit failed have none)."""
    if not 0 < family_alpha < 1:
        raise ValueError(f"family_alpha must lie strictly between 0 and 1, got {family_alpha}")
    names = list(ranks_by_quantity)
    checked = {name: _checked_ranks(ranks_by_quantity[name], L) for name in names}
    tests = {name: band_p_value(checked[name], L) for name in names}
    adjusted = holm([tests[name][1] for name in names])
    out = {}
    for name, adjusted_p in zip(names, adjusted):
        statistic, p_value = tests[name]
        chi2, chi2_p, bins = chi_square(checked[name], L)
        out[name] = SbcQuantityResult(
            quantity=name, ranks=tuple(int(r) for r in checked[name]), L=L, statistic=statistic, p_value=p_value,
            adjusted_p_value=adjusted_p, family_alpha=family_alpha, verdict=VERDICTS[adjusted_p <= family_alpha],
            chi2_statistic=chi2, chi2_p_value=chi2_p, chi2_bins=bins,
        )
    return out
