"""SBC statistics and figures: polyppl.studies.sbc_stats and polyppl.render.sbc_plots.

No backend: ranks come from the discrete uniform (the null), from a normal-normal conjugate
model whose exact posterior is known (calibrated, or made too narrow / shifted on purpose),
and from AR(1) chains whose stationary law is that exact posterior (autocorrelated draws).

Rate checks compare a count of rejections with its exact binomial distribution: the count
must lie in the central 1 - 1e-4 interval of Binomial(trials, rate) (``_binomial_ok``), so
each such check raises a false alarm with probability at most 1e-4. Every random input is
drawn from a fixed seed, so the file is deterministic; the stated rates say how often the
checks would fail over seeds. About 30 s of CPU (66 s wall on a loaded 2-core machine).
"""

from __future__ import annotations

import io
import json
import math

import numpy as np
import pytest
from scipy import stats
from scipy.signal import lfilter

from polyppl.render.sbc_plots import ecdf_difference_figure, rank_histogram_figure
from polyppl.studies import sbc_stats as sbc

L = 99
S = 200
ALPHA = 0.05
#: The false-alarm rate of each rate check, and of each uniformity check of ranks.
CHECK_ALARM = 1e-4
#: Central probability of the acceptance interval of every rate check.
RATE_CHECK = 1 - CHECK_ALARM


def _binomial_ok(count: int, trials: int, rate: float) -> bool:
    low, high = stats.binom.interval(RATE_CHECK, trials, rate)
    return low <= count <= high


def _gammas(rank_sets: np.ndarray, L: int) -> np.ndarray:
    """The band statistic of many rank sets at once, computed here from scipy's binomial
    (independently of the module's cached tables): min_j min(1, 2 P(Bin <= X_j), 2 P(Bin >= X_j))."""
    n = rank_sets.shape[1]
    counts = np.stack([np.bincount(r, minlength=L + 1) for r in rank_sets]).cumsum(axis=1)[:, :-1]
    z = np.arange(1, L + 1) / (L + 1)
    pointwise = np.minimum(2 * stats.binom.cdf(counts, n, z), 2 * stats.binom.sf(counts - 1, n, z))
    return np.minimum(pointwise.min(axis=1), 1.0)


def _normal_toy(rng: np.random.Generator, sims: int, draws: int, scale: float = 1.0, shift: float = 0.0, k: int = 5):
    """mu ~ N(0, 1), y_1..y_k ~ N(mu, 1): the exact posterior is N(m, v), v = 1 / (1 + k).
    Returns the true mu and ``draws`` iid draws per simulation from N(m + shift sqrt(v), (scale^2) v):
    the exact posterior when scale = 1 and shift = 0."""
    mu = rng.normal(0.0, 1.0, sims)
    y = rng.normal(mu[:, None], 1.0, (sims, k))
    v = 1.0 / (1 + k)
    m = v * y.sum(axis=1)
    return mu, rng.normal(m[:, None] + shift * math.sqrt(v), scale * math.sqrt(v), (sims, draws))


# --------------------------------------------------------------------------- the exact null distribution


def _compositions(n: int, cells: int):
    if cells == 1:
        yield (n,)
        return
    for first in range(n + 1):
        for rest in _compositions(n - first, cells - 1):
            yield (first, *rest)


@pytest.mark.false_alarm(0)
@pytest.mark.parametrize("n, L_small", [(8, 3), (6, 5), (10, 1)])
def test_p_value_is_exact_by_enumeration(n, L_small):
    """For tiny S and L, every possible rank histogram is enumerated with its multinomial
    probability: the p-value must be the total probability of histograms whose statistic is
    at most the observed one (up to floating point at exact ties)."""
    cells = L_small + 1
    table = []
    for counts in _compositions(n, cells):
        ranks = np.repeat(np.arange(cells), counts)
        probability = math.factorial(n) / math.prod(math.factorial(c) for c in counts) / cells**n
        table.append((_gammas(ranks[None], L_small)[0], probability, ranks))
    assert sum(p for _, p, _ in table) == pytest.approx(1.0, abs=1e-12)
    for gamma, _, ranks in table:
        statistic, p_value = sbc.band_p_value(ranks, L_small)
        assert statistic == pytest.approx(gamma, rel=1e-12)
        expected = sum(p for g, p, _ in table if g <= gamma * (1 + 1e-12))
        assert p_value == pytest.approx(expected, rel=1e-9, abs=1e-15)


@pytest.mark.false_alarm(0)
def test_band_matches_the_papers_binomial_recursion():
    """The band's exact size, recomputed with the recursion of Säilynoja et al. (2022) as
    written in the paper (given X_{j-1} = x, X_j - x ~ Bin(S - x, (z_j - z_{j-1}) / (1 - z_{j-1}))),
    (ArviZ 0.x implemented the paper's optimisation method too, and the band matched it count
    for count; ArviZ 1 keeps only the simulation method, so the recursion is the reference.)"""
    band = sbc.simultaneous_band(S, L, 0.95)
    inside = np.zeros(S + 1)
    inside[0] = 1.0
    x = np.arange(S + 1)
    for j in range(1, L + 1):
        step = stats.binom.pmf(x[None, :] - x[:, None], S - x[:, None], 1 / (L + 2 - j))
        inside = inside @ step
        inside[(x < band.lower[j]) | (x > band.upper[j])] = 0.0
    assert band.size == pytest.approx(1 - inside.sum(), rel=1e-9)
    assert 0.045 < band.size <= 0.05


# --------------------------------------------------------------------------- (a) false alarms under the null


@pytest.fixture(scope="module")
def null_ranks() -> np.ndarray:
    return np.random.default_rng(20240601).integers(0, L + 1, size=(20_000, S))


@pytest.mark.false_alarm(2 * CHECK_ALARM)  # two levels checked
def test_false_alarm_rate_per_quantity(null_ranks):
    """20,000 rank sets from the discrete uniform: the band test rejects as often as its exact
    size (at most alpha, a little less because counts are discrete). The fast route (gamma <=
    adjusted gamma) is the p-value test exactly: checked on 300 sets."""
    gammas = _gammas(null_ranks, L)
    for alpha in (0.05, 0.01):
        band = sbc.simultaneous_band(S, L, 1 - alpha)
        rejected = int(np.count_nonzero(gammas <= band.gamma))
        assert band.size <= alpha
        assert _binomial_ok(rejected, gammas.size, band.size), (alpha, rejected / gammas.size, band.size)
    band = sbc.simultaneous_band(S, L, 1 - ALPHA)
    for ranks, gamma in zip(null_ranks[:300], gammas[:300]):
        statistic, p_value = sbc.band_p_value(ranks, L)
        assert statistic == pytest.approx(gamma, rel=1e-12)
        assert (p_value <= ALPHA) == (statistic <= band.gamma)


@pytest.mark.false_alarm(CHECK_ALARM)
def test_holm_keeps_the_family_wise_rate(null_ranks):
    """2,000 families of 10 calibrated quantities (independent here; Holm needs no independence):
    Holm rejects anything in a family exactly when its smallest p-value is <= alpha / 10, so the
    family-wise false-alarm rate is 1 - (1 - size(alpha / 10))^10 <= alpha. ``judge`` agrees with
    that route on 40 families."""
    families = null_ranks.reshape(2_000, 10, S)
    smallest = _gammas(null_ranks, L).reshape(2_000, 10).min(axis=1)
    band = sbc.simultaneous_band(S, L, 1 - ALPHA / 10)
    expected = 1 - (1 - band.size) ** 10
    flagged = smallest <= band.gamma
    assert expected <= ALPHA
    assert _binomial_ok(int(flagged.sum()), flagged.size, expected), (flagged.mean(), expected)
    for family, any_flag in zip(families[:40], flagged[:40]):
        verdicts = sbc.judge({f"q{i}": list(r) for i, r in enumerate(family)}, L, ALPHA)
        assert any(v.verdict == "miscalibrated" for v in verdicts.values()) == any_flag


@pytest.mark.false_alarm(0)
def test_holm_adjustment():
    assert sbc.holm([0.01, 0.04, 0.03, 0.5]) == pytest.approx([0.04, 0.09, 0.09, 0.5])
    assert sbc.holm([0.3, 0.3]) == pytest.approx([0.6, 0.6])
    assert sbc.holm([]) == []


# --------------------------------------------------------------------------- (b) power


def _flagged_among_ten(gamma_bad: np.ndarray, gamma_good: np.ndarray, family_alpha: float) -> np.ndarray:
    """Whether Holm at ``family_alpha`` flags the one miscalibrated quantity of a family of 10:
    p-values are a non-decreasing function of gamma, so the step-down runs on gammas against
    the adjusted gammas of levels alpha / 10, alpha / 9, ..."""
    thresholds = np.array([sbc.simultaneous_band(S, L, 1 - family_alpha / (10 - k)).gamma for k in range(10)])
    family = np.column_stack([gamma_bad, gamma_good])
    order = np.argsort(family, axis=1, kind="stable")
    ordered = np.take_along_axis(family, order, axis=1)
    passing = np.cumprod(ordered <= thresholds, axis=1).astype(bool)  # step-down: stop at the first failure
    position = np.argmax(order == 0, axis=1)
    return passing[np.arange(len(family)), position]


@pytest.mark.parametrize("name, scale, shift, floor_single, floor_family", [
    ("20% too narrow", 0.8, 0.0, 0.75, 0.35),
    ("shifted by 0.3 sd", 1.0, 0.3, 0.85, 0.6),
])
# Each floor sits more than 5 binomial sd under its measured rate: under 3e-7 each.
@pytest.mark.false_alarm(1e-6)
def test_power_at_200_simulations(name, scale, shift, floor_single, floor_family, null_ranks):
    """A posterior 20% too narrow, or shifted by 0.3 posterior sd, in the conjugate toy with S =
    200 simulations and L = 99: the share of 600 SBC runs flagged, alone at alpha = 5% and as the
    one bad quantity among 10 under Holm at family levels 5% and 1%. Measured (seed below):
    narrow 0.83 alone, 0.48 / 0.28 among ten; shift 0.95 alone, 0.80 / 0.61 among ten. The
    floors sit more than 5 binomial sd (at most 0.02) below those rates."""
    rng = np.random.default_rng(7)
    rank_sets = []
    for _ in range(600):
        mu, draws = _normal_toy(rng, S, L, scale=scale, shift=shift)
        rank_sets.append(np.count_nonzero(draws < mu[:, None], axis=1))  # continuous: no ties
    gamma_bad = _gammas(np.array(rank_sets), L)
    gamma_good = _gammas(null_ranks[: 600 * 9], L).reshape(600, 9)
    single = float(np.mean(gamma_bad <= sbc.simultaneous_band(S, L, 1 - ALPHA).gamma))
    family5 = float(_flagged_among_ten(gamma_bad, gamma_good, 0.05).mean())
    family1 = float(_flagged_among_ten(gamma_bad, gamma_good, 0.01).mean())
    print(f"\npower, {name}, S={S}, L={L}: alone at 5% {single:.3f}; among 10, Holm 5% {family5:.3f}, Holm 1% {family1:.3f}")
    assert single >= floor_single
    assert family5 >= floor_family
    assert family1 < family5  # the reason FAMILY_ALPHA is 5% rather than the agreement tests' 1%


# --------------------------------------------------------------------------- (c) ranks and thinning on the toy


@pytest.mark.false_alarm(CHECK_ALARM)
def test_exact_posterior_ranks_are_uniform():
    """Exact posterior draws (iid from the conjugate posterior), 2,000 simulations: ``rank``
    gives ranks that pass the band test and the chi-square test. Under calibration the two
    checks fail for CHECK_ALARM of seeds (each at half of it)."""
    rng = np.random.default_rng(11)
    mu, draws = _normal_toy(rng, 2_000, L)
    ranks = [sbc.rank(t, d, rng) for t, d in zip(mu, draws)]
    assert min(ranks) >= 0 and max(ranks) <= L
    _, p_value = sbc.band_p_value(ranks, L)
    _, chi2_p, bins = sbc.chi_square(ranks, L)
    assert bins == 20
    assert p_value > CHECK_ALARM / 2 and chi2_p > CHECK_ALARM / 2


@pytest.mark.false_alarm(CHECK_ALARM)
def test_ties_are_broken_at_random():
    """An indicator quantity, 1{mu > 0}: the true value ties with about half the draws. With
    random tie-breaking its ranks are uniform (band test at CHECK_ALARM); counting
    only draws strictly below puts every rank at 0 or near L/2, and the band test sees it."""
    rng = np.random.default_rng(12)
    mu, draws = _normal_toy(rng, 1_000, L)
    truth, indicator = (mu > 0).astype(float), (draws > 0).astype(float)
    ranks = [sbc.rank(t, d, rng) for t, d in zip(truth, indicator)]
    strict = [int(np.count_nonzero(d < t)) for t, d in zip(truth, indicator)]
    assert sbc.band_p_value(ranks, L)[1] > CHECK_ALARM
    assert sbc.band_p_value(strict, L)[1] < 1e-6
    assert sbc.rank(1.0, np.ones(5), np.random.default_rng(0)) in range(6)
    with pytest.raises(ValueError):
        sbc.rank(math.nan, np.zeros(3), rng)


def _ar1_chains(rng: np.random.Generator, mean: np.ndarray, sd: float, rho: float, chains: int, length: int) -> np.ndarray:
    """(sims, chains, length) AR(1) draws started in, and keeping, the law N(mean, sd^2)."""
    noise = rng.normal(0.0, 1.0, (mean.size, chains, length))
    noise[..., 0] /= math.sqrt(1 - rho**2)
    return mean[:, None, None] + sd * lfilter([math.sqrt(1 - rho**2)], [1, -rho], noise, axis=-1)


@pytest.mark.false_alarm(CHECK_ALARM + 7e-6)
def test_thinning_to_the_ess_restores_uniform_ranks():
    """4 AR(1) chains of 250 draws (rho = 0.97, ESS = 1000 (1 - rho) / (1 + rho) = 15) whose
    stationary law is the exact posterior. Ranks among all 1,000 draws are overdispersed: of
    100 SBC runs of 200 simulations, 41 are flagged at alpha = 5%. Thinned to the L that
    ``choose_L`` picks from that ESS (9), 3 are: the band's size (4.9%) is the rate expected.
    The thinned count is checked against Binomial(100, size) with false alarm 1e-4; the
    overdispersed rate only has to exceed 20% (P(Bin(100, 0.41) <= 20) = 7e-6)."""
    rng = np.random.default_rng(13)
    rho, chains, length, k = 0.97, 4, 250, 5
    thinned_L = sbc.choose_L([chains * length * (1 - rho) / (1 + rho)])
    assert thinned_L == 9
    full, thinned = [], []
    for _ in range(100):
        mu = rng.normal(0.0, 1.0, S)
        y = rng.normal(mu[:, None], 1.0, (S, k))
        v = 1.0 / (1 + k)
        draws = _ar1_chains(rng, v * y.sum(axis=1), math.sqrt(v), rho, chains, length)
        full.append([sbc.rank(t, d, rng) for t, d in zip(mu, draws)])
        thinned.append([sbc.rank(t, sbc.thin_to(d, thinned_L, rng), rng) for t, d in zip(mu, draws)])
    full_rate = np.mean(_gammas(np.array(full), chains * length) <= sbc.simultaneous_band(S, chains * length).gamma)
    band = sbc.simultaneous_band(S, thinned_L)
    thinned_flags = int(np.count_nonzero(_gammas(np.array(thinned), thinned_L) <= band.gamma))
    print(f"\nAR(1) rho={rho}: flagged at 5%: all draws {full_rate:.2f}, "
          f"thinned to L={thinned_L} {thinned_flags / 100:.2f} (size {band.size:.3f})")
    assert full_rate > 0.2
    assert _binomial_ok(thinned_flags, 100, band.size), thinned_flags


@pytest.mark.false_alarm(10 * CHECK_ALARM)  # ten positions checked
def test_thin_to_keeps_evenly_spaced_draws_without_favouring_any():
    draws = np.arange(4 * 1000, dtype=float).reshape(4, 1000)  # a draw's value is its position
    rng = np.random.default_rng(14)
    for L_kept in (1, 3, 99, 101, 4000):
        kept = sbc.thin_to(draws, L_kept, rng)
        assert kept.size == L_kept and np.unique(kept).size == L_kept
        per_chain = np.bincount((kept // 1000).astype(int), minlength=4)
        assert per_chain.max() - per_chain.min() <= 1
        for chain in range(4):
            gaps = np.diff(np.sort(kept[kept // 1000 == chain]))
            assert gaps.size == 0 or gaps.max() - gaps.min() <= 1  # as even as integers allow
    # Every position equally likely to be kept: 2,000 thinnings of one 10-draw chain to 3.
    hits = np.bincount(np.concatenate([sbc.thin_to(np.arange(10.0), 3, rng) for _ in range(2_000)]).astype(int), minlength=10)
    assert all(_binomial_ok(int(h), 2_000, 0.3) for h in hits), hits
    with pytest.raises(ValueError):
        sbc.thin_to(draws, 4001, rng)


def test_choosing_L_and_counting_short_ess():
    assert sbc.choose_L([150.0, 300.0]) == 99
    assert sbc.choose_L([150.0, 300.0], default=199) == 99
    assert sbc.choose_L([450.0], default=199) == 199
    assert sbc.choose_L([60.0, 98.5]) == 49
    assert sbc.choose_L([12.0, 30.0]) == 9
    for too_short in ([5.0], [math.nan, 300.0]):  # a non-finite ESS counts as 0
        with pytest.raises(ValueError):
            sbc.choose_L(too_short)
    assert sbc.count_below([120.0, 98.9, math.nan, 99.0], 99) == 2
    draws = np.random.default_rng(1).normal(size=(4, 500))
    assert sbc.thin_to_ess(draws, 57.9, np.random.default_rng(2)).size == 57
    assert sbc.thin_to_ess(draws, 1e9, np.random.default_rng(2)).size == 2000
    assert sbc.thin_to_ess(draws, 0.3, np.random.default_rng(2)).size == 1


@pytest.mark.false_alarm(0)
def test_judge_output_shape():
    rng = np.random.default_rng(15)
    ranks = {"mu": list(rng.integers(0, L + 1, S)), "log_lik": list(rng.integers(0, 30, 150))}
    results = sbc.judge(ranks, L)
    assert list(results) == ["mu", "log_lik"]
    bad = results["log_lik"].as_dict()
    assert bad["verdict"] == "miscalibrated" and bad["n_simulations"] == 150
    good = json.loads(json.dumps(results["mu"].as_dict()))
    assert good["ranks"] == [int(r) for r in ranks["mu"]]
    assert {"ranks", "verdict", "statistic", "p_value", "adjusted_p_value", "L", "chi2"} <= set(good)
    assert good["verdict"] in sbc.VERDICTS
    assert results["mu"].adjusted_p_value >= results["mu"].p_value
    with pytest.raises(ValueError):
        sbc.judge({"x": [0, L + 1]}, L)


# --------------------------------------------------------------------------- (d) figures


@pytest.mark.false_alarm(0)
def test_figures_build_for_three_backends_and_six_quantities():
    rng = np.random.default_rng(16)
    quantities = ["mu", "tau", "theta[0]", "theta[1]", "p_positive", "log_lik"]
    ranks = {b: {q: list(rng.integers(0, L + 1, S)) for q in quantities} for b in ("pymc", "numpyro", "stan")}
    ranks["stan"]["tau"] = list(rng.integers(0, 20, S))  # miscalibrated: the panel names it
    results = {b: sbc.judge(r, L) for b, r in ranks.items()}
    assert results["stan"]["tau"].verdict == "miscalibrated"

    ecdf = ecdf_difference_figure(ranks, L, results=results)
    assert len(ecdf.axes) == 6
    assert [ax.get_title() for ax in ecdf.axes] == quantities
    assert any("stan: miscalibrated" in t.get_text() for t in ecdf.axes[1].texts)
    histograms = rank_histogram_figure(ranks, L)
    assert len(histograms.axes) == 18
    ranks["numpyro"] = {q: r[:150] for q, r in ranks["numpyro"].items() if q != "log_lik"}  # fewer fits; one quantity missing
    uneven = ecdf_difference_figure(ranks, L, columns=4)
    assert len(uneven.axes) == 6
    uneven_histograms = rank_histogram_figure(ranks, L)
    assert len(uneven_histograms.axes) == 18
    for figure in (ecdf, uneven_histograms):  # drawing is the slow part: one figure of each kind
        buffer = io.BytesIO()
        figure.savefig(buffer, format="png", dpi=40)  # Agg canvas; no pyplot, no display
        assert buffer.getvalue()[:8] == b"\x89PNG\r\n\x1a\n"

