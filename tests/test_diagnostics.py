"""``polyppl.diagnostics`` against synthetic draws whose answers are known.

Every flag of ``run_diagnostics`` is triggered and left untriggered by draws or sampler
statistics built for it: independent chains, a chain shifted by half an sd, a stuck chain
(R-hat); stationary Gaussian AR(1) chains, whose effective sample sizes and MCSE follow
from their autocorrelation rho^k (bulk and tail ESS, MCSE, ``probability``); divergent and
maximum-depth transitions placed by hand; AR(1) energies, whose E-BFMI is 2 (1 - rho).

Each tolerance is derived in a comment next to it, at a family false-alarm rate of
``FAMILY_ALPHA`` per test (tests/stat_tolerance.py; one test states its own): from the statistic's exact or asymptotic law where one is
known (F, noncentral chi^2 and chi^2 laws for R-hat), else from a standard deviation that is
known (a closed form, or an asymptotic formula checked by simulation) with the normal
thresholds of ``stat_tolerance.z_threshold``. Each design also asserts that the flag's
threshold lies beyond that tolerance from the known answer, on the side intended. Where an
estimator's tails are heavier than normal, the margin added is called empirical and the
simulation behind it is quoted. Seeds are fixed.
"""

from __future__ import annotations

import dataclasses
import math

import numpy as np
import pytest
import xarray as xr
from scipy import integrate, signal, stats
from scipy.linalg import toeplitz

from polyppl.inference.diagnostics import (
    CONVERGENCE_FLAGS,
    EBFMI_MIN,
    ESS_PER_CHAIN_MIN,
    Estimate,
    RHAT_MAX,
    RunDiagnostics,
    convergence_failures,
    probability,
    rhat,
    run_diagnostics,
    scalar_summary,
)
from stat_tolerance import (
    FAMILY_ALPHA,
    allowed_count,
    family_false_alarm,
    required_count,
    t_threshold,
    z_threshold,
)

CHAINS, DRAWS = 4, 1000
MAX_TREE_DEPTH = 10
#: Split chains as R-hat and ESS see them: each chain cut in two halves.
HALVES, HALF = 2 * CHAINS, DRAWS // 2


# --------------------------------------------------------------------------- synthetic draws


def ar1(rng: np.random.Generator, rho: float, chains: int = CHAINS, draws: int = DRAWS) -> np.ndarray:
    """Stationary Gaussian AR(1) chains, (chain, draw): x_t = rho x_{t-1} + e_t, Var(x_t) = 1.
    The first draw comes from the stationary N(0, 1), so there is no transient."""
    noise = rng.standard_normal((chains, draws)) * math.sqrt(1 - rho**2)
    noise[:, 0] = rng.standard_normal(chains)
    return signal.lfilter([1.0], [1.0, -rho], noise, axis=1)


def sampler_stats(
    chains: int = CHAINS,
    draws: int = DRAWS,
    *,
    diverging: np.ndarray | None = None,
    tree_depth: np.ndarray | None = None,
    energy: np.ndarray | None = None,
    n_steps: np.ndarray | None = None,
) -> xr.Dataset:
    """A ``sample_stats`` group as the backends write it; unset statistics raise no flag:
    no divergences, depth 3, independent energies (E-BFMI 2), 7 leapfrog steps per draw."""
    shape = (chains, draws)
    values = {
        "diverging": np.zeros(shape, bool) if diverging is None else diverging,
        "tree_depth": np.full(shape, 3) if tree_depth is None else tree_depth,
        "energy": np.random.default_rng(0).standard_normal(shape) if energy is None else energy,
        "n_steps": np.full(shape, 7) if n_steps is None else n_steps,
    }
    return xr.Dataset({k: (("chain", "draw"), np.asarray(v)) for k, v in values.items()})


def diagnose(draws: np.ndarray, stats_group: xr.Dataset | None = None) -> RunDiagnostics:
    chains, n = np.shape(draws)
    return run_diagnostics({"x": scalar_summary(draws)}, stats_group or sampler_stats(chains, n), MAX_TREE_DEPTH)


# --------------------------------------------------------------------------- known answers


def split_rhat_f_threshold() -> float:
    """The F statistic at which split R-hat reaches RHAT_MAX. ArviZ computes R-hat^2 =
    (n - 1)/n + Var(half means)/W over m halves of n draws; for independent normal scores
    F = n Var(half means) / W is F(m - 1, m (n - 1)) distributed, so R-hat > RHAT_MAX
    exactly when F > n (RHAT_MAX^2 - 1) + 1."""
    return HALF * (RHAT_MAX**2 - 1) + 1


def exact_mean_variance(rho: float, draws: int, autocorrelation=None) -> float:
    """Var of the mean of ``draws`` consecutive values of a stationary unit-variance series
    with autocorrelation ``autocorrelation(rho^k)`` at lag k (rho^k itself by default):
    (1 + 2 sum_k (1 - k/n) r_k) / n, exact for finite n."""
    k = np.arange(1, draws)
    r = rho**k if autocorrelation is None else autocorrelation(rho**k)
    return float((1 + 2 * np.sum((1 - k / draws) * r)) / draws)


def tail_autocorrelation(r: float, p: float) -> float:
    """Autocorrelation of the indicator I(x <= q_p) for a bivariate normal pair with
    correlation r: dP(X <= q, Y <= q)/dr is the bivariate density at (q, q) (Plackett 1954),
    so the covariance is the integral of that density from 0 to r."""
    q = stats.norm.ppf(p)

    def density(s: float) -> float:
        return math.exp(-q * q / (1 + s)) / (2 * math.pi * math.sqrt(1 - s * s))

    return integrate.quad(density, 0, r)[0] / (p * (1 - p))


def tail_ess_per_draw(rho: float) -> float:
    """True ESS per draw of ArviZ's tail ESS (indicators at the 5% and 95% quantiles, equal by
    symmetry) for a Gaussian AR(1): 1 / (1 + 2 sum_k corr_k)."""
    tau, k = 1.0, 1
    while (corr := tail_autocorrelation(rho**k, 0.05)) > 1e-12:
        tau += 2 * corr
        k += 1
    return 1 / tau


#: ESS estimates are not quite normal: N / tau-hat has a heavier left tail (Geyer's sequence
#: now and then sums a few noisy lags more; the MCSE, sd / sqrt(ESS), a heavier right one),
#: and the tail indicators' ESS varies about 15% more than ``ess_relative_sd`` (a formula
#: for Gaussian series) says. Tolerances on ESS and MCSE use this multiple of that sd: an
#: empirical margin. Measured at 4 x 40000 draws, rho = 0.5: over 800 seeds the indicator's
#: MCSE deviated once by 5.1 of its sds (a normal tail would put that at 3e-7), which a
#: factor 1.5 would have failed; with 2, over 300 further seeds, the largest deviations used
#: 0.47 (bulk ESS), 0.61 (tail ESS), 0.48 (MCSE) and 0.56 (indicator MCSE) of the tolerance.
ESS_SD_FACTOR = 2.0


def ess_relative_sd(rho: float, total_draws: int) -> float:
    """Relative sd of an ESS estimate for a Gaussian AR(1). Madras and Sokal (1988): an
    integrated autocorrelation time summed up to lag M has relative variance 2 (2M + 1) / N.
    ArviZ (Geyer's initial monotone sequence) stops about where the autocorrelation rho^M
    falls to its noise level 1/sqrt(N). Checked over 200 seeds of 4 x 1000 draws: predicted
    0.081, 0.200, 0.370 at rho = 0.5, 0.9, 0.97; bulk ESS measured 0.075, 0.195, 0.360 (tail
    ESS 0.083, 0.212, 0.351). At 4 x 40000 draws, rho = 0.5 (300 seeds): predicted 0.0151,
    bulk 0.0146, each tail quantile 0.0173, MCSE 0.0084 (half the ESS's, 0.0076, predicted)."""
    window = math.log(total_draws**-0.5) / math.log(rho)
    return math.sqrt(2 * (2 * window + 1) / total_draws)


def ebfmi_mean_and_sd(rho: float, draws: int) -> tuple[float, float]:
    """Mean and sd of ArviZ's E-BFMI, mean(diff(E)^2) / var(E, ddof=1), for one stationary
    AR(1) chain of energies. Numerator and denominator are Gaussian quadratic forms x'Ax and
    x'Bx with x ~ N(0, S), S_ij = rho^|i-j|: E = tr(AS), Var = 2 tr(ASAS), Cov = 2 tr(ASBS);
    the ratio's sd by the delta method. (Its mean tends to 2 (1 - rho).)"""
    cov = toeplitz(rho ** np.arange(draws))
    diff = np.diff(np.eye(draws), axis=0)
    a = diff.T @ diff / (draws - 1) @ cov
    b = (np.eye(draws) - 1.0 / draws) / (draws - 1) @ cov
    mean_a, mean_b = np.trace(a), np.trace(b)
    var_a, var_b, cov_ab = 2 * np.sum(a * a.T), 2 * np.sum(b * b.T), 2 * np.sum(a * b.T)
    ratio = mean_a / mean_b
    return float(ratio), float(math.sqrt(var_a - 2 * ratio * cov_ab + ratio**2 * var_b) / mean_b)


# --------------------------------------------------------------------------- R-hat


@pytest.mark.false_alarm(FAMILY_ALPHA)
def test_rhat_stays_below_its_threshold_for_independent_chains():
    draws = np.random.default_rng(11).standard_normal((CHAINS, DRAWS))
    dof = (HALVES - 1, HALVES * (HALF - 1))
    # Rank-normalised draws are normal scores, so bulk and folded R-hat each follow the F law
    # of split_rhat_f_threshold (checked over 2000 seeds: the 50%, 90% and 99% quantiles of
    # n R^2 - (n - 1) within 5% of F(7, 3992)'s, the 99.9% ones within 9%, both below it
    # for the folded R-hat). ArviZ reports the larger of the two, so the
    # flag is raised with probability at most twice F's tail beyond the threshold: 1.3e-13.
    p_flag = 2 * stats.f.sf(split_rhat_f_threshold(), *dof)
    assert p_flag < 1e-9, p_flag
    diagnostics = diagnose(draws)
    assert "rhat" not in diagnostics.flags
    # Known answer: R-hat^2 = (n - 1 + F)/n for bulk and folded alike. Their larger value
    # exceeds the F quantile at alpha/4 with probability at most 2 x alpha/4, and falls below
    # the quantile at alpha/2 only if the bulk value does (alpha/2): alpha = 0.1% in all.
    low = math.sqrt((HALF - 1 + stats.f.ppf(FAMILY_ALPHA / 2, *dof)) / HALF)
    high = math.sqrt((HALF - 1 + stats.f.isf(FAMILY_ALPHA / 4, *dof)) / HALF)
    assert low < diagnostics.rhat_max < high, (low, diagnostics.rhat_max, high)


@pytest.mark.false_alarm(FAMILY_ALPHA)
def test_rhat_flags_a_chain_shifted_by_half_an_sd():
    shift = 0.5
    draws = np.random.default_rng(12).standard_normal((CHAINS, DRAWS))
    draws[0] += shift
    # Both halves of chain 0 are shifted: with half means mu_j (in within-chain sds), the
    # statistic (m - 1) n Var(half means) / W is noncentral chi^2 with m - 1 degrees of freedom
    # and noncentrality lam = n sum_j (mu_j - mean mu)^2 = 500 x 1.5 x 0.25 = 187.5, and
    # R-hat^2 = (n - 1)/n + chi^2 / ((m - 1) n): about 1.0264 on average. Rank normalisation
    # of this mixture is affine to first order (by quadrature it changes lam by 0.1%). Over
    # 3000 seeds ArviZ's R-hat had mean 1.02639 and sd 0.00386 (1.02641 and 0.00385 from
    # these formulas) and 5 fell outside the 0.1% band below (3 expected).
    half_means = np.repeat([shift] + [0.0] * (CHAINS - 1), 2)
    lam = HALF * np.sum((half_means - half_means.mean()) ** 2)
    df = HALVES - 1

    def rhat(chi2: float) -> float:
        return math.sqrt((HALF - 1) / HALF + chi2 / (df * HALF))

    low = rhat(stats.ncx2.ppf(FAMILY_ALPHA / 2, df, lam))  # 1.0151
    high = rhat(stats.ncx2.isf(FAMILY_ALPHA / 2, df, lam))  # 1.0403
    # The flag is missed only if the noncentral chi^2 falls below (m - 1) x the F threshold:
    # probability 1.2e-7 (W's own noise, relative sd 2%, moves this by little).
    assert stats.ncx2.cdf(df * split_rhat_f_threshold(), df, lam) < 1e-6
    assert low > RHAT_MAX
    diagnostics = diagnose(draws)
    assert "rhat" in diagnostics.flags
    assert low < diagnostics.rhat_max < high, (low, diagnostics.rhat_max, high)


def stuck_chain_rhat(chains: int, draws: int) -> tuple[float, float]:
    """R-hat of ``chains`` chains of continuous draws of which one is stuck at the median,
    as (value for draws -> infinity, its sampling coefficient c). Folded around the median
    the stuck chain is all zeros: tied at the lowest rank, its normal score is
    z0 = Phi^-1(1/(2 chains)); the other scores are Phi^-1(U), U uniform on (1/chains, 1),
    with mean mu = phi(a)/(1 - 1/chains) and second moment (a phi(a) + 1 - 1/chains)/(1 - 1/chains),
    a = Phi^-1(1/chains) (truncated normal moments). Two halves with mean z0 and no spread,
    2 (chains - 1) halves with mean mu and variance v: R-hat^2 = 1 + V0 / W0, V0 the variance
    of the half means, W0 = v (chains - 1)/chains.

    Sampling: the other chains' scores are one fixed set (ranks 1 + n/chains, ..., N), so
    their half means deviate by d_j with sum d_j = 0 and sum d_j^2 = (v / n) chi^2 with
    2 chains - 3 degrees of freedom (n draws per half). To first order these cancel; to
    second order V rises by sum d_j^2 / (m - 1) and W falls by sum d_j^2 / m (m halves), so
    R-hat rises by c chi^2 with c = (1/((m - 1) W0) + V0/(m W0^2)) v / (2 n R-hat)."""
    a = stats.norm.ppf(1 / chains)
    upper = 1 - 1 / chains
    mu = stats.norm.pdf(a) / upper
    variance = (a * stats.norm.pdf(a) + upper) / upper - mu**2
    z0 = stats.norm.ppf(1 / (2 * chains))
    half_means = np.array([z0, z0] + [mu] * (2 * chains - 2))
    v0, w0 = half_means.var(ddof=1), variance * (chains - 1) / chains
    rhat = math.sqrt(1 + v0 / w0)
    halves, n = 2 * chains, draws // 2
    coefficient = (1 / ((halves - 1) * w0) + v0 / (halves * w0**2)) * variance / (2 * n * rhat)
    return rhat, coefficient


@pytest.mark.false_alarm(FAMILY_ALPHA)
def test_rhat_flags_a_stuck_chain_even_at_the_median():
    draws = np.random.default_rng(13).standard_normal((CHAINS, DRAWS))
    draws[0] = 0.0  # stuck where the others' median lies: the hardest case for R-hat
    expected, coefficient = stuck_chain_rhat(CHAINS, DRAWS)  # 1.5244, 2.7e-4
    # The bulk R-hat sees four chains with one mean, so alone it would not flag this: the
    # folded (tail) R-hat does, through the stuck chain's missing spread.
    assert rhat(draws, method="z_scale") < RHAT_MAX
    diagnostics = diagnose(draws)
    assert "rhat" in diagnostics.flags
    assert convergence_failures(diagnostics.flags) == ["rhat"]
    # Upper bound: expected + c x the chi^2 quantile at FAMILY_ALPHA (one-sided; 20.5 for 5
    # degrees of freedom: + 0.0055). Lower bound: the only terms that lower R-hat are the
    # O(1/n) ones (the (n - 1)/n in ArviZ's R-hat^2, -1/(2 n R-hat) = -0.0007, and the
    # offsets of the rank scores); allowed: three times the first. Over 400 seeds: mean
    # 1.5247, sd 0.0009, range 1.5235 to 1.5303.
    low = expected - 3 / (2 * HALF * expected)
    high = expected + coefficient * stats.chi2.isf(FAMILY_ALPHA, 2 * CHAINS - 3)
    assert low < diagnostics.rhat_max < high, (low, diagnostics.rhat_max, high)


def test_rhat_that_cannot_be_computed_is_a_flag():
    summary = scalar_summary(np.random.default_rng(14).standard_normal((CHAINS, DRAWS)))
    summary = dataclasses.replace(summary, rhat=math.nan)
    diagnostics = run_diagnostics({"x": summary}, sampler_stats(), MAX_TREE_DEPTH)
    assert diagnostics.flags == ("rhat",) and not diagnostics.converged


# --------------------------------------------------------------------------- ESS and MCSE


#: This design's own rate: at 4 x 1000 draws the estimated ESS of the rho = 0.98 chains has a
#: relative sd of 0.9, so the threshold of 100 a chain lies only 3.5 such sds above the true
#: 23 (tail); at FAMILY_ALPHA (z = 3.9) the design check below would fail.
ESS_FLAG_ALPHA = 1e-3


@pytest.mark.false_alarm(ESS_FLAG_ALPHA)
@pytest.mark.parametrize("rho,flagged", [(0.5, False), (0.98, True)], ids=["rho=0.5", "rho=0.98"])
def test_ess_flags_follow_the_autocorrelation(rho, flagged):
    """True ESS per chain: bulk N (1 - rho)/(1 + rho) (333 at rho 0.5, 10 at 0.98); tail from
    the indicators' autocorrelation (593 and 23)."""
    bulk, tail = DRAWS * (1 - rho) / (1 + rho), DRAWS * tail_ess_per_draw(rho)
    relative_sd = ESS_SD_FACTOR * ess_relative_sd(rho, CHAINS * DRAWS)
    z = z_threshold(ESS_FLAG_ALPHA, 2)
    for true_ess in (bulk, tail):
        # The threshold, 100 per chain, lies z (3.5) widened relative sds beyond the true
        # ESS, on the side that gives the intended answer.
        if flagged:
            assert true_ess * (1 + z * relative_sd) < ESS_PER_CHAIN_MIN, (true_ess, relative_sd)
        else:
            assert true_ess * (1 - z * relative_sd) > ESS_PER_CHAIN_MIN, (true_ess, relative_sd)
    diagnostics = diagnose(ar1(np.random.default_rng(21), rho))
    assert ("ess_bulk" in diagnostics.flags) is flagged
    assert ("ess_tail" in diagnostics.flags) is flagged
    if flagged:
        assert not diagnostics.converged


@pytest.mark.false_alarm(FAMILY_ALPHA)
def test_ess_and_mcse_match_the_ar1_formulas():
    """Bulk and tail ESS and the MCSE of the mean of 4 x 40000 AR(1) draws, rho = 0.5:
    relative tolerances 10.8% (ESS) and 5.4% (MCSE)."""
    rho, draws = 0.5, 40_000
    x = ar1(np.random.default_rng(22), rho, draws=draws)
    summary = scalar_summary(x)
    total = CHAINS * draws
    relative_sd = ESS_SD_FACTOR * ess_relative_sd(rho, total)  # 2 x 0.0151
    # Three comparisons, 3.59 sds each: false-alarm rate 0.1% were the errors normal with
    # these sds; ESS_SD_FACTOR covers their measured excess over normal.
    z = z_threshold(FAMILY_ALPHA, 3)
    true_bulk = total * (1 - rho) / (1 + rho)  # 53333
    assert abs(summary.ess_bulk / true_bulk - 1) < z * relative_sd, (summary.ess_bulk, true_bulk)
    # Tail ESS is the smaller of two nearly independent estimates (5% and 95%): biased low by
    # about sd / sqrt(pi), and its lower tail has twice one estimate's probability, which is
    # what a two-sided threshold allows for; its upper tail needs both (negligible).
    true_tail = total * tail_ess_per_draw(rho)  # 94874
    assert abs(summary.ess_tail / true_tail - 1) < z * relative_sd, (summary.ess_tail, true_tail)
    # MCSE = sd / sqrt(ESS), so its relative error is half the ESS's. The true value is the
    # exact sd of the mean of four independent chains, each Var = (1 + 2 sum (1 - k/n) rho^k)/n.
    true_mcse = math.sqrt(exact_mean_variance(rho, draws) / CHAINS)  # 0.00433
    assert abs(summary.mcse_mean / true_mcse - 1) < z * relative_sd / 2, (summary.mcse_mean, true_mcse)


@pytest.mark.false_alarm(FAMILY_ALPHA)
def test_probability_of_an_indicator():
    """P(x > 0) = 1/2 for a zero-mean AR(1); the indicator's lag-k autocorrelation is
    (2/pi) arcsin(rho^k) (the orthant probability of a bivariate normal)."""
    rho, draws = 0.5, 40_000
    x = ar1(np.random.default_rng(23), rho, draws=draws)
    result = probability(x > 0)

    def arcsine(r: np.ndarray) -> np.ndarray:
        return 2 / math.pi * np.arcsin(r)

    true_se = math.sqrt(0.25 * exact_mean_variance(rho, draws, arcsine) / CHAINS)  # 0.0018
    z = z_threshold(FAMILY_ALPHA, 2)  # two comparisons: 3.48 sd each
    # The estimate's sd is known (true_se), and over 160000 draws it is normal (CLT): N(0, 1).
    assert abs(result.estimate - 0.5) < z * true_se, (result, true_se)
    # The MCSE's relative error is half the indicator ESS's, with the ESS's widened sd.
    relative_sd = ESS_SD_FACTOR * ess_relative_sd(rho, CHAINS * draws)
    assert abs(result.mcse / true_se - 1) < z * relative_sd / 2, (result, true_se)
    # A certain event: estimate 1 with no Monte Carlo error.
    assert probability(np.ones((CHAINS, draws), bool)) == Estimate(1.0, 0.0)


# --------------------------------------------------------------------------- sampler statistics


def test_divergences_are_counted_and_any_one_is_a_flag():
    draws = np.random.default_rng(31).standard_normal((CHAINS, DRAWS))
    clean = diagnose(draws)
    assert "divergences" not in clean.flags
    assert clean.divergences == 0 and clean.divergence_rate == 0.0
    diverging = np.zeros((CHAINS, DRAWS), bool)
    diverging[1, 17] = diverging[3, [0, 999]] = True
    one_chain = diagnose(draws, sampler_stats(diverging=diverging))
    assert one_chain.flags == ("divergences",)
    assert one_chain.divergences == 3
    assert one_chain.divergence_rate == 3 / (CHAINS * DRAWS)
    assert one_chain.converged  # divergences bias a posterior; they are not non-convergence


def test_tree_depth_saturation_is_the_share_at_the_maximum_depth():
    draws = np.random.default_rng(32).standard_normal((CHAINS, DRAWS))
    below = np.full((CHAINS, DRAWS), MAX_TREE_DEPTH - 1)
    assert diagnose(draws, sampler_stats(tree_depth=below)).tree_depth_saturation == 0.0
    assert "tree_depth" not in diagnose(draws, sampler_stats(tree_depth=below)).flags
    saturated = below.copy()
    saturated[0, :30] = MAX_TREE_DEPTH
    saturated[2, :10] = MAX_TREE_DEPTH + 1  # a sampler that counts depth from 1 still saturates
    diagnostics = diagnose(draws, sampler_stats(tree_depth=saturated))
    assert diagnostics.flags == ("tree_depth",)
    assert diagnostics.tree_depth_saturation == 40 / (CHAINS * DRAWS)


def test_gradient_evaluations_are_the_leapfrog_steps():
    steps = np.arange(CHAINS * DRAWS).reshape(CHAINS, DRAWS) % 13 + 1
    draws = np.random.default_rng(33).standard_normal((CHAINS, DRAWS))
    assert diagnose(draws, sampler_stats(n_steps=steps)).gradient_evaluations == int(steps.sum())


@pytest.mark.false_alarm(FAMILY_ALPHA)
def test_ebfmi_of_ar1_energies():
    """E-BFMI = E[(E_t - E_{t-1})^2] / Var(E) = 2 (1 - rho) for stationary AR(1) energies:
    1.0 at rho = 0.5 (no flag), 0.1 at rho = 0.95 (flag); location and scale do not matter."""
    draws = np.random.default_rng(41).standard_normal((CHAINS, DRAWS))
    good_mean, good_sd = ebfmi_mean_and_sd(0.5, DRAWS)  # 1.002, 0.055
    bad_mean, bad_sd = ebfmi_mean_and_sd(0.95, DRAWS)  # 0.104, 0.020
    assert abs(good_mean - 1.0) < 0.01 and abs(bad_mean - 0.1) < 0.01  # 2 (1 - rho), up to O(1/n)
    # Compared on the log scale, where the ratio is close to normal: the sd of log E-BFMI is
    # sd / mean by the delta method. Measured over 4000 chains: standardised log E-BFMI has
    # mean 0.02 and 0.12, sd 1.00 and 0.97, skewness 0.00 and 0.04 at rho = 0.5 and 0.95 (on
    # the linear scale the skewness at 0.95 is 0.6, too much for a normal threshold).
    # Four chains in each case, each compared once: Bonferroni over 4, 3.48 sds each.
    z = z_threshold(FAMILY_ALPHA, CHAINS)
    good_log_sd, bad_log_sd = good_sd / good_mean, bad_sd / bad_mean

    def within(ebfmi: float, mean: float, log_sd: float) -> bool:
        return abs(math.log(ebfmi / mean)) < z * log_sd

    assert good_mean * math.exp(-z * good_log_sd) > EBFMI_MIN > bad_mean * math.exp(z * bad_log_sd)

    rng = np.random.default_rng(42)
    energy = 250.0 + 12.0 * ar1(rng, 0.5)
    good = diagnose(draws, sampler_stats(energy=energy))
    assert "ebfmi" not in good.flags
    # The smallest of four chains, each within z sds of good_mean.
    assert within(good.ebfmi_min, good_mean, good_log_sd), (good.ebfmi_min, good_mean, good_sd)

    energy[2] = 250.0 + 12.0 * ar1(rng, 0.95, chains=1)[0]
    bad = diagnose(draws, sampler_stats(energy=energy))
    assert bad.flags == ("ebfmi",)
    assert within(bad.ebfmi_min, bad_mean, bad_log_sd), (bad.ebfmi_min, bad_mean, bad_sd)
    assert bad.converged


# --------------------------------------------------------------------------- flags together


def test_only_rhat_and_ess_flags_mean_non_convergence():
    assert set(CONVERGENCE_FLAGS) == {"rhat", "ess_bulk", "ess_tail"}
    assert convergence_failures(["divergences", "rhat", "tree_depth", "ess_tail", "ebfmi"]) == ["rhat", "ess_tail"]
    assert convergence_failures(["divergences", "tree_depth", "ebfmi"]) == []

    rng = np.random.default_rng(51)
    draws = rng.standard_normal((CHAINS, DRAWS))
    # R-hat 1.026, as in test_rhat_flags_a_chain_shifted_by_half_an_sd. The shift also enters
    # ESS's estimate of the variance, so the bulk and tail ESS may be flagged as well.
    draws[0] += 0.5
    diverging = np.zeros((CHAINS, DRAWS), bool)
    diverging[0, 5] = True
    depth = np.full((CHAINS, DRAWS), MAX_TREE_DEPTH)
    energy = ar1(rng, 0.95)  # E-BFMI about 0.1 in every chain
    everything = diagnose(draws, sampler_stats(diverging=diverging, tree_depth=depth, energy=energy))
    assert "rhat" in convergence_failures(everything.flags)
    assert [f for f in everything.flags if f not in CONVERGENCE_FLAGS] == ["divergences", "tree_depth", "ebfmi"]
    assert not everything.converged
    assert everything.tree_depth_saturation == 1.0
    as_dict = everything.as_dict()
    assert as_dict["flags"] == list(everything.flags) and as_dict["divergences"] == 1


# --------------------------------------------------------------------------- the tolerance helper


# Arithmetic on distributions: no chance.
@pytest.mark.false_alarm(0)
def test_stat_tolerance_thresholds_give_their_stated_rates():
    """tests/stat_tolerance.py, which the statistical tests derive their thresholds from."""
    for comparisons, chains in ((1, 4), (4, 4), (16, 4), (6, 2)):
        threshold = t_threshold(FAMILY_ALPHA, comparisons, chains)
        assert family_false_alarm(threshold, comparisons, chains) == pytest.approx(FAMILY_ALPHA, rel=1e-9)
    # Rates quoted in the tests' comments: |z| > 4 is 6.3e-5 two-sided under N(0, 1) but
    # 1.16e-3 under t(15), the reference for an MCSE estimated from four chains.
    assert 2 * stats.norm.sf(4.0) == pytest.approx(6.33e-5, rel=1e-3)
    assert family_false_alarm(4.0, 1, 4) == pytest.approx(1.159e-3, rel=1e-3)
    assert z_threshold(1e-3, 1) == pytest.approx(3.29, abs=0.005)
    # Binomial counts: the bounds hold at the stated rate and are the tightest that do.
    for trials, rate in ((4, 0.01), (30, 0.01), (100, 0.05), (200, 0.05)):
        allowed = allowed_count(FAMILY_ALPHA, trials, rate)
        assert stats.binom.sf(allowed, trials, rate) <= FAMILY_ALPHA < stats.binom.sf(allowed - 1, trials, rate)
        required = required_count(FAMILY_ALPHA, trials, rate)
        assert stats.binom.cdf(required - 1, trials, rate) <= FAMILY_ALPHA < stats.binom.cdf(required, trials, rate)
    assert allowed_count(1e-3, 4, 0.01) == 1 and allowed_count(1e-3, 30, 0.01) == 3
    # The false-alarm test of test_agreement.py: its comparisons at FAMILY_ALPHA / REPS allow none.
    assert allowed_count(FAMILY_ALPHA, 4, FAMILY_ALPHA / 4) == 0
