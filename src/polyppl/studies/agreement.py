"""Do two sets of MCMC draws describe the same posterior? Statistics that know Monte Carlo error.

For each scalar quantity and each pair of sources (backends, or a backend and the exact
posterior), four statistics:

* ``mean``, ``q05``, ``q95``: the gap between the two estimates divided by its Monte Carlo
  standard error, z = (x1 - x2) / sqrt(mcse1^2 + mcse2^2), with MCSEs that account for
  autocorrelation (ArviZ, Vehtari et al. 2021). Since the MCSEs are estimated too, z is
  referred to Student's t with 4 x chains - 1 degrees of freedom (batch means with four
  batches per chain), not N(0, 1): with N(0, 1), 3 of 90 comparisons of correct samplers
  raised a false alarm at a nominal 1%, all on tail quantiles of skewed quantities.
* ``ks``: the Kolmogorov-Smirnov distance between the two empirical distributions, tested
  with effective sample sizes in place of the raw draw counts (the ESS of the indicator
  I(draw <= t) where the distance is attained). A plain KS test on raw, autocorrelated
  draws treats thousands of correlated draws as independent and raises false alarms far
  above its nominal level (measured in tests/test_agreement.py). The ESS is estimated too,
  so the statistic is studentized like z: Kolmogorov's tail is averaged over the
  chi-square uncertainty of the estimated variance, with the same degrees of freedom
  (without it, a run whose mean test gave p = 0.001, unremarkable among 288 tests, had a
  KS p-value of 3e-6 for the same quantity and shift).

``sd``, the same z with the sd's MCSE, is not among ``compare``'s statistics (KS covers
the spread there) but is asked of ``posteriordb``'s tests against reference draws, which
are made from each source's summaries alone (:func:`summary_pair_tests`: mean, sd, q05,
q95), so that a fit's typed record is all a comparison needs.

Decision probabilities (P(B beats C)) are means of 0/1 indicators: only ``mean`` applies.

Family-wise error: all p-values of a comparison are adjusted together with Holm's method,
so the chance of any false alarm when every source is correct is at most ``family_alpha``
(default 1%). A practical floor keeps negligible gaps from being called disagreements:
a gap below ``floor`` posterior standard deviations (KS distance below 0.4 * floor, the
KS distance of two normals ``floor`` sd apart) is never a disagreement. The floor is
printed with every verdict.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from itertools import combinations

import numpy as np
from scipy import stats

from polyppl.inference.diagnostics import Summary, ess, scalar_summary

FAMILY_ALPHA = 0.01
PRACTICAL_FLOOR = 0.1
#: KS distance between N(0, 1) and N(d, 1) is 2 * Phi(d / 2) - 1, about 0.4 d for small d.
KS_PER_SD = 2 * stats.norm.cdf(0.5) - 1
#: Where the studentized Kolmogorov tail is integrated: log W on [-30, 6] holds chi2(df)/df
#: for every df >= 3 (the fewest ``_degrees_of_freedom`` gives) but a mass below 1e-19.
_LOG_W_GRID = np.linspace(-30.0, 6.0, 4001)


@dataclass
class PairTest:
    quantity: str
    backends: tuple[str, str]
    statistic: str  # mean, sd, q05, q95, ks
    estimates: tuple[float, float]
    gap: float
    z: float  # signed for mean/quantiles; for ks, the normal quantile of its p-value
    p_value: float
    floor: float  # the gap below which no disagreement is declared
    agree: bool = True
    #: The posterior sd the floor is scaled by (pooled over the two sources): a gap in sds is gap / sd.
    sd: float = math.nan

    def as_dict(self) -> dict:
        out = asdict(self)
        out["backends"] = list(self.backends)
        out["estimates"] = list(self.estimates)
        return out

    @classmethod
    def from_dict(cls, values: dict) -> PairTest:
        return cls(**{**values, "backends": tuple(values["backends"]), "estimates": tuple(values["estimates"])})


@dataclass
class QuantityDraws:
    """Draws (chain, draw) of one scalar quantity from one source, with its summary."""

    draws: np.ndarray
    is_probability: bool = False

    def __post_init__(self) -> None:
        self.summary = scalar_summary(self.draws)


#: Each z statistic's estimate and its MCSE in a :class:`Summary`.
_Z_STATISTICS = {"mean": ("mean", "mcse_mean"), "sd": ("sd", "mcse_sd"), "q05": ("q05", "mcse_q05"),
                 "q95": ("q95", "mcse_q95")}
#: What ``summary_pair_tests`` tests by default: everything a summary holds an MCSE for.
SUMMARY_STATISTICS = ("mean", "sd", "q05", "q95")


def _z_test(quantity: str, pair: tuple[str, str], statistic: str, x: Summary, y: Summary, chains: int,
            floor_scale: float, floor: float) -> PairTest:
    key, mcse = _Z_STATISTICS[statistic]
    a, b = getattr(x, key), getattr(y, key)
    se = math.hypot(getattr(x, mcse), getattr(y, mcse))
    gap = a - b
    if se > 0:
        z = gap / se
    else:
        z = 0.0 if gap == 0 else math.copysign(math.inf, gap)
    p = float(2 * stats.t.sf(abs(z), _degrees_of_freedom(chains)))
    return PairTest(quantity, pair, statistic, (a, b), gap, float(z), p, floor * floor_scale, sd=floor_scale)


def _degrees_of_freedom(chains: int) -> int:
    """The MCSEs in z are estimates themselves, so z has heavier tails than N(0, 1): refer it
    to Student's t with the degrees of freedom of batch means over four batches per chain
    (``chains``: the fewer of the two sources')."""
    return max(4 * chains - 1, 3)


def _chains(x: QuantityDraws, y: QuantityDraws) -> int:
    return min(np.shape(x.draws)[0], np.shape(y.draws)[0])


def _pooled_sd(x: Summary, y: Summary) -> float:
    """The practical floor's scale: the posterior sd pooled over the two sources."""
    return math.sqrt((x.sd ** 2 + y.sd ** 2) / 2)


def _ks_test(quantity, pair, x, y, floor) -> PairTest:
    a, b = np.sort(np.ravel(x.draws)), np.sort(np.ravel(y.draws))
    grid = np.concatenate([a, b])
    gaps = np.searchsorted(a, grid, side="right") / a.size - np.searchsorted(b, grid, side="right") / b.size
    at = grid[np.argmax(np.abs(gaps))]
    d = float(np.max(np.abs(gaps)))
    # Effective sample sizes of the indicator I(draw <= t) at the threshold where the
    # distance is attained: the CDF estimate there is a mean of that indicator.
    n_x, n_y = _indicator_ess(x.draws, at), _indicator_ess(y.draws, at)
    n = n_x * n_y / (n_x + n_y) if n_x > 0 and n_y > 0 else 0.0
    p = studentized_kolmogorov_sf(d * math.sqrt(n), _degrees_of_freedom(_chains(x, y))) if n > 0 else 1.0
    z = float(stats.norm.isf(p / 2)) if p > 0 else math.inf
    return PairTest(quantity, pair, "ks", (math.nan, math.nan), d, z, p, floor * KS_PER_SD,
                    sd=_pooled_sd(x.summary, y.summary))


def studentized_kolmogorov_sf(statistic: float, degrees_of_freedom: int) -> float:
    """P(sqrt(n) D > statistic) when n is estimated: sqrt(n_hat) D = sqrt(n) D / sqrt(W) with
    W ~ chi2(df) / df (the relative error of the variance behind n_hat), so the tail is
    E_W[K(statistic sqrt(W))], K Kolmogorov's tail: the analogue of Student's t for z, and
    Kolmogorov's own tail as df grows."""
    if statistic <= 0:
        return 1.0
    # E_W[K(statistic sqrt(W))] by the trapezoid rule in log W, which converges fast for an
    # integrand that is smooth and vanishes at both ends in that variable.
    # The grid resolves chi2(df)/df up to df = 1000; more is treated as 1000, the cautious side.
    shape = min(degrees_of_freedom, 1000) / 2
    log_w = _LOG_W_GRID
    density = np.exp(stats.gamma.logpdf(np.exp(log_w), shape, scale=1 / shape) + log_w)
    tail = stats.kstwobign.sf(statistic * np.exp(log_w / 2))
    return float(min(max(np.sum(density * tail) * (log_w[1] - log_w[0]), 0.0), 1.0))


def _indicator_ess(draws: np.ndarray, threshold: float) -> float:
    indicator = (np.asarray(draws) <= threshold).astype(float)
    if np.ptp(indicator) == 0:
        return float(indicator.size)
    return ess(indicator, "mean")


def pair_tests(
    sources: dict[str, dict[str, QuantityDraws]],
    floor: float = PRACTICAL_FLOOR,
    pairs: list[tuple[str, str]] | None = None,
) -> list[PairTest]:
    """All statistics for every quantity that both members of each pair have."""
    pairs = pairs if pairs is not None else list(combinations(sources, 2))
    out: list[PairTest] = []
    for first, second in pairs:
        common = [q for q in sources[first] if q in sources[second]]
        for quantity in common:
            x, y = sources[first][quantity], sources[second][quantity]
            # The practical floor scales with the posterior sd (pooled over the two sources).
            sd = _pooled_sd(x.summary, y.summary)
            statistics = ("mean",) if x.is_probability else ("mean", "q05", "q95")
            for statistic in statistics:
                out.append(_z_test(quantity, (first, second), statistic, x.summary, y.summary, _chains(x, y), sd, floor))
            if not x.is_probability and sd > 0:
                out.append(_ks_test(quantity, (first, second), x, y, floor))
    return out


@dataclass(frozen=True)
class SummarySource:
    """One source's summaries by quantity and the number of chains behind them: what
    :func:`summary_pair_tests` needs of a fit (its record) or of reference draws."""

    summaries: dict[str, Summary]
    chains: int


def not_finite(summaries: dict[str, Summary]) -> list[str]:
    """The quantities whose mean or sd is not a finite number (infinite or missing draws,
    saved as null): a summary test cannot be computed for them."""
    return [q for q, x in summaries.items()
            if not all(isinstance(v, (int, float)) and math.isfinite(v) for v in (x.mean, x.sd))]


def summary_pair_tests(
    sources: dict[str, SummarySource],
    pairs: list[tuple[str, str]],
    floor: float = PRACTICAL_FLOOR,
    statistics: tuple[str, ...] = SUMMARY_STATISTICS,
    quantities: dict[tuple[str, str], list[str]] | None = None,
) -> list[PairTest]:
    """The z tests of ``statistics`` for every quantity both members of each pair have (or,
    for a pair in ``quantities``, those named there), from summaries alone."""
    out: list[PairTest] = []
    for first, second in pairs:
        x, y = sources[first], sources[second]
        names = (quantities or {}).get((first, second)) or [q for q in x.summaries if q in y.summaries]
        chains = min(x.chains, y.chains)
        skipped = set(not_finite(x.summaries)) | set(not_finite(y.summaries))  # the caller says why
        for quantity in (q for q in names if q not in skipped):
            a, b = x.summaries[quantity], y.summaries[quantity]
            sd = _pooled_sd(a, b)
            for statistic in statistics:
                out.append(_z_test(quantity, (first, second), statistic, a, b, chains, sd, floor))
    return out


def holm(tests: list[PairTest], family_alpha: float = FAMILY_ALPHA) -> list[PairTest]:
    """Mark disagreements: Holm-rejected at ``family_alpha`` and above the practical floor."""
    order = sorted(range(len(tests)), key=lambda i: tests[i].p_value)
    m = len(tests)
    rejecting = True
    for rank, i in enumerate(order):
        rejecting = rejecting and tests[i].p_value <= family_alpha / (m - rank)
        test = tests[i]
        test.agree = not (rejecting and abs(test.gap) > test.floor)
    return tests


