"""Independent references for eight schools and the seed's multilevel logistic model, and
every backend judged against them (the agreement tests compare backends with each other
only, so a fault all three share would go unseen there).

Eight schools: the exact posterior by quadrature over tau (``eight_schools_exact``), checked
against scipy's adaptive quadrature, against its own exact draws, and against posteriordb's
published reference posterior (``tests/data/posteriordb_eight_schools_noncentered.json``).
Multilevel logistic: the checked-in long Stan run, cross-checked by a long NumPyro run
(``polyppl/models/references/multilevel-logistic-seed.json``), both of polyppl's spec, and
checked here against a long CmdStan run of a program written by hand
(``benchmarks/handwritten/stan/``), which a fault in the spec would not share.

Every statistical test builds z = (estimate - reference) / sqrt(mcse^2 + mcse_ref^2); where
an MCSE is estimated, z is referred to Student's t with 4 x chains - 1 degrees of freedom
(as ``polyppl.agreement`` does), where it is known (independent exact draws), to N(0, 1).
Each test's threshold is Bonferroni over all its comparisons, across its parametrized
backends too, for the false-alarm rate each test declares; the thresholds are computed
below and printed in the assertion messages. Fixed seeds make each outcome repeatable.

Time: the tests without sampling take about 10 s; the six default runs about
2.5 minutes on 2 quiet cores with Stan's programs compiled cold (README's timings), 12 min
measured on 2 cores shared with three other workloads (load average 7.5).
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
from scipy import integrate, stats

from conftest import REPO
from polyppl import SamplerSettings, run
from polyppl.backends.stan import cmdstan_path
from polyppl.inference.diagnostics import scalar_summary
from polyppl.models import MODELS
from polyppl.models import eight_schools, eight_schools_exact as exact
from polyppl.models.reference_summaries import bonferroni_threshold, degrees_of_freedom, load_reference, z_score
from stat_tolerance import FAMILY_ALPHA, t_threshold

BACKENDS = ("pymc", "numpyro", "stan")
POSTERIORDB = Path(__file__).parent / "data" / "posteriordb_eight_schools_noncentered.json"


@pytest.fixture(scope="module")
def classic():
    return MODELS["eight-schools"].dataset("classic")


@pytest.fixture(scope="module")
def exact_summary(classic) -> dict[str, dict[str, float]]:
    """Exact mean, sd and quantiles keyed like the runs' summaries: ``theta[Choate]``."""
    g = exact.grid(classic)
    means, quantiles = exact.posterior_means(classic, g), exact.posterior_quantiles(classic, (0.05, 0.5, 0.95), g)
    out = {}
    for name in ("mu", "tau"):
        out[name] = {"mean": means[name], "sd": means[f"{name}_sd"], **dict(zip(("q05", "q50", "q95"), quantiles[name]))}
    for name in ("theta", "theta_z"):
        for j, school in enumerate(classic.coords["school"]):
            out[f"{name}[{school}]"] = {"mean": means[name][j], "sd": means[f"{name}_sd"][j],
                                        **dict(zip(("q05", "q50", "q95"), quantiles[name][:, j]))}
    return out


# --- eight schools: the quadrature itself ---------------------------------------------

def _joint(classic):
    """log p(mu, tau | y) up to a constant with theta integrated out (y_j ~ N(mu, sigma_j^2 +
    tau^2)), written from the model afresh rather than from eight_schools_exact."""
    y = [float(v) for v in classic.values["y"]]
    s = [float(v) for v in classic.values["sigma"]]

    def log_p(mu: float, tau: float) -> float:
        lp = -0.5 * (mu / 5) ** 2 - math.log1p((tau / 5) ** 2)
        for yj, sj in zip(y, s):
            v = sj * sj + tau * tau
            lp -= 0.5 * (math.log(v) + (yj - mu) ** 2 / v)
        return lp

    return y, s, log_p


#: Another data set, to check that nothing assumes eight schools or the classic data.
THREE_SCHOOLS = eight_schools.make_dataset(("A", "B", "C"), (-20.0, 3.5, 40.0), (4.0, 30.0, 12.0), "test")


@pytest.mark.parametrize("data", ["classic", "three"])
def test_quadrature_matches_adaptive_integration(data, classic):
    """E[tau] and E[theta_1] by scipy's adaptive 2-D quadrature over (mu, tau), to 1e-6
    relative (measured on the classic data: 2.5e-11 and 6.5e-12); the mass the grid leaves
    off beyond its two ends, integrated the same way, is below 1e-9 and as Grid.tail_mass
    says (2.5e-11 on the classic data)."""
    dataset = classic if data == "classic" else THREE_SCHOOLS
    y, s, log_p = _joint(dataset)
    shift = -log_p(float(np.mean(y)), float(np.std(y)))  # keeps exp() in range

    def integral(f, tau_lo=0.0, tau_hi=math.inf, epsabs=0.0):
        return integrate.dblquad(lambda mu, tau: math.exp(log_p(mu, tau) + shift) * f(mu, tau), tau_lo, tau_hi,
                                 -math.inf, math.inf, epsabs=epsabs, epsrel=1e-9)[0]

    mass = integral(lambda mu, tau: 1.0)
    e_tau = integral(lambda mu, tau: tau) / mass
    # E[theta_1 | mu, tau, y] is the precision-weighted mean of y_1 and mu.
    e_theta1 = integral(lambda mu, tau: (y[0] * tau**2 + mu * s[0] ** 2) / (s[0] ** 2 + tau**2)) / mass
    g = exact.grid(dataset)
    means = exact.posterior_means(dataset, g)
    assert means["tau"] == pytest.approx(e_tau, rel=1e-6)
    assert means["theta"][0] == pytest.approx(e_theta1, rel=1e-6)

    tau_lo, tau_hi = float(np.exp(g.u[0])), float(np.exp(g.u[-1]))
    # The upper tail holds about 1e-50 of the mass: ask for absolute, not relative, accuracy.
    left_out = (integral(lambda mu, tau: 1.0, 0.0, tau_lo) + integral(lambda mu, tau: 1.0, tau_hi, epsabs=1e-15 * mass)) / mass
    assert left_out < 1e-9
    assert g.tail_mass == pytest.approx(left_out, rel=0.01)


def test_quadrature_has_converged_in_grid_size(classic):
    """The trapezoid rule on u = log tau: a grid of a quarter as many nodes gives the same
    means and sds to 1e-10 (relative), so the default grid's discretization error is below."""
    fine, coarse = exact.posterior_means(classic), exact.posterior_means(classic, exact.grid(classic, 2001))
    for key in fine:
        np.testing.assert_allclose(coarse[key], fine[key], rtol=1e-10, atol=0)


@pytest.mark.false_alarm(FAMILY_ALPHA)
def test_exact_draws_match_exact_moments_and_quantiles(classic, exact_summary):
    """Independent draws from ``draws``: the sample mean of each of the 18 quantities is within
    the threshold of the exact mean in units of sd / sqrt(n) (known exactly, so N(0, 1)), and
    the share of draws below each exact 5%, 50% and 95% quantile is within the threshold of
    p in units of sqrt(p (1 - p) / n) (binomial, so N(0, 1) for n = 200,000): 72 comparisons,
    |z| < 4.34 each for a 0.1% false-alarm rate in all."""
    n = 200_000
    d = exact.draws(classic, n, seed=11)
    np.testing.assert_allclose(d["theta"], d["mu"][:, None] + d["tau"][:, None] * d["theta_z"], rtol=1e-12, atol=1e-12)
    columns = {"mu": d["mu"], "tau": d["tau"]}
    for j, school in enumerate(classic.coords["school"]):
        columns[f"theta[{school}]"] = d["theta"][:, j]
        columns[f"theta_z[{school}]"] = d["theta_z"][:, j]
    threshold = float(stats.norm.isf(FAMILY_ALPHA / (4 * len(columns)) / 2))
    for key, x in columns.items():
        ref = exact_summary[key]
        z = (x.mean() - ref["mean"]) / (ref["sd"] / math.sqrt(n))
        assert abs(z) < threshold, f"{key} mean: draws {x.mean():.4f}, exact {ref['mean']:.4f}, z = {z:.2f} (|z| < {threshold:.2f})"
        for stat, p in (("q05", 0.05), ("q50", 0.5), ("q95", 0.95)):
            z = (np.mean(x <= ref[stat]) - p) / math.sqrt(p * (1 - p) / n)
            assert abs(z) < threshold, f"{key} {stat}: share below the exact quantile z = {z:.2f} (|z| < {threshold:.2f})"


@pytest.mark.false_alarm(FAMILY_ALPHA)
def test_exact_posterior_matches_posteriordb_reference(classic, exact_summary):
    """posteriordb's reference posterior (Stan, 10 chains x 1000 thinned draws, summarized in
    tests/data) has the same model and data; each of its means and 5%/50%/95% quantiles of
    mu, tau, theta and theta_z lies within the threshold of the exact value in units of its
    MCSE, z referred to t with 39 degrees of freedom: 72 comparisons, |z| < 4.97 each for a
    0.1% false-alarm rate in all (measured: largest |z| 3.1, theta_z[Phillips Exeter]'s 5% quantile)."""
    reference = json.loads(POSTERIORDB.read_text())
    assert reference["data"]["y"] == list(classic.values["y"]) and reference["data"]["sigma"] == list(classic.values["sigma"])
    assert reference["data"]["school"] == list(classic.coords["school"])
    quantities = reference["quantities"]
    assert set(quantities) == set(exact_summary)
    stats_compared = ("mean", "q05", "q50", "q95")
    threshold = bonferroni_threshold(len(quantities) * len(stats_compared), FAMILY_ALPHA, degrees_of_freedom(reference["chains"]))
    for key, ref in quantities.items():
        for stat in stats_compared:
            z = z_score(exact_summary[key][stat], 0.0, ref[stat], ref[f"mcse_{stat}"])
            assert abs(z) < threshold, f"{key} {stat}: exact {exact_summary[key][stat]:.4f}, posteriordb {ref[stat]:.4f}, z = {z:.2f} (|z| < {threshold:.2f})"


# --- the multilevel reference itself ----------------------------------------------------

# Re-reads what scripts/make_multilevel_reference.py wrote: no chance of its own.
@pytest.mark.false_alarm(0)
def test_multilevel_reference_is_complete_and_cross_checked():
    """The checked-in reference covers every quantity with its MCSEs, converged (R-hat below
    1.001, no divergences), and its two long runs (Stan, NumPyro) agreed: every |z| below the
    Bonferroni threshold recomputed here for the file's number of comparisons."""
    reference = load_reference("multilevel-logistic-seed")
    quantities = reference["quantities"]
    groups = ("Canada", "China")
    expected = {"mu_a", "sigma_a", "mu_b", "sigma_b"} | {f"{v}[{g}]" for v in ("a", "b", "a_z", "b_z", "a_inv", "fin") for g in groups}
    decisions = {f"prob_treatment_better[{g}]" for g in groups}
    assert set(quantities) == expected | decisions
    for key, q in quantities.items():
        stats_here = ("mean",) if key in decisions else ("mean", "q05", "q50", "q95")
        assert all(q[f"mcse_{s}"] > 0 for s in stats_here) and q["rhat"] < 1.001, (key, q)
    runs = reference["provenance"]["runs"]
    assert runs["reference (stan)"]["divergences"] == 0 and runs["cross-check (numpyro)"]["divergences"] == 0
    check = reference["cross_check"]
    assert check["comparisons"] == len(check["z"]) == 4 * len(expected) + len(decisions)
    threshold = bonferroni_threshold(check["comparisons"], check["family_alpha"], degrees_of_freedom(reference["chains"]))
    assert check["threshold_abs_z"] == pytest.approx(threshold)
    assert max(abs(z) for z in check["z"].values()) < threshold


#: A Stan program written by hand (benchmarks/handwritten/stan/), not generated by polyppl:
#: the reference above is polyppl's own spec sampled long, so a fault in the spec (a prior,
#: a link, an index) that every backend shares would be in it too; this twin would not.
HANDWRITTEN_MULTILEVEL = REPO / "benchmarks" / "handwritten" / "stan" / "multilevel_logistic_noncentered.stan"
#: As the reference's long runs: a target acceptance of 0.99, which leaves no divergence
#: (at Stan's default 0.8: 5 in 40,000 draws, seed 20261207).
HANDWRITTEN_SETTINGS = {"chains": 4, "iter_warmup": 1000, "iter_sampling": 10_000, "adapt_delta": 0.99,
                        "seed": 20261207}


@pytest.mark.cmdstan
@pytest.mark.skipif(cmdstan_path() is None, reason="no CmdStan install found (set CMDSTAN)")
@pytest.mark.false_alarm(FAMILY_ALPHA)
def test_multilevel_reference_matches_a_handwritten_stan_program():
    """The seed's data run through the hand-written program by CmdStan directly (4 chains x
    10,000 draws after 1,000 warm-up; about 1 minute to compile once, seconds to sample): the
    means of every scalar quantity of the reference and both decision probabilities agree,
    z = (mean - ref) / sqrt(mcse^2 + mcse_ref^2) referred to t with 15 degrees of freedom,
    Bonferroni over the comparisons at the declared rate."""
    from polyppl.backends.stan.compiler import CmdStanPyEngine

    reference = load_reference("multilevel-logistic-seed")["quantities"]
    dataset = MODELS["multilevel-logistic"].dataset("seed")
    values, groups = dataset.values, dataset.coords["group"]
    data = {"N": len(values["group_idx"]), "J": len(groups), "group": (np.asarray(values["group_idx"]) + 1).tolist(),
            "treated": np.asarray(values["treated"], float).tolist(), "trials": np.asarray(values["trials"]).tolist(),
            "successes": np.asarray(values["successes"]).tolist()}
    # CmdStan compiles and runs the hand-written text as it is (cached by the program's hash).
    model = CmdStanPyEngine(HANDWRITTEN_MULTILEVEL.read_text()).model
    fit = model.sample(data=data, show_progress=False, show_console=False, **HANDWRITTEN_SETTINGS)
    assert fit.divergences.sum() == 0
    chains = HANDWRITTEN_SETTINGS["chains"]
    draws = {}
    for name in ("mu_a", "sigma_a", "mu_b", "sigma_b", "a_z", "b_z", "a", "b", "a_inv", "fin"):
        values_ = fit.stan_variable(name).reshape(chains, -1, *fit.stan_variable(name).shape[1:])
        if values_.ndim == 2:
            draws[name] = values_
        else:
            draws |= {f"{name}[{g}]": values_[..., j] for j, g in enumerate(groups)}
    draws |= {f"prob_treatment_better[{g}]": (draws[f"b[{g}]"] > 0).astype(float) for g in groups}
    assert set(draws) == set(reference)
    threshold = t_threshold(FAMILY_ALPHA, len(draws), chains)
    for key, values_ in draws.items():
        summary = scalar_summary(values_)
        assert summary.rhat < 1.01, (key, summary)
        z = z_score(summary.mean, summary.mcse_mean, reference[key]["mean"], reference[key]["mcse_mean"])
        assert abs(z) < threshold, (f"{key}: hand-written {summary.mean:.4f} ± {summary.mcse_mean:.4f}, reference "
                                    f"{reference[key]['mean']:.4f} ± {reference[key]['mcse_mean']:.4f}, z = {z:.2f} "
                                    f"(|z| < {threshold:.2f})")


# --- every backend against the references -----------------------------------------------

#: Means compared per eight-schools run: mu, tau, theta[8], theta_z[8].
EIGHT_SCHOOLS_QUANTITIES = 18
#: df: the smaller run has 4 chains (default settings), so t with 15 degrees of freedom.
DEFAULT_DF = degrees_of_freedom(SamplerSettings().chains)
#: 54 comparisons over the three backends: |z| < 6.15 each (t(15) has heavy tails).
EIGHT_SCHOOLS_THRESHOLD = bonferroni_threshold(len(BACKENDS) * EIGHT_SCHOOLS_QUANTITIES, FAMILY_ALPHA, DEFAULT_DF)


def _converged(result, backend):
    """Unconverged chains are no evidence either way: R-hat and ESS first."""
    d = result.diagnostics
    assert d.converged, f"{backend}: {d.flags}"


# The threshold is Bonferroni over the three backends: each case has a third of the rate.
@pytest.mark.false_alarm(FAMILY_ALPHA / len(BACKENDS))
@pytest.mark.parametrize("backend", BACKENDS)
def test_backend_eight_schools_means_match_exact(backend, exact_summary):
    """Default settings (4 chains x 1000 + 1000, seed 1), non-centered: the posterior means of
    mu, tau, theta and theta_z against the exact ones (mcse_ref = 0), t(15), 54 comparisons
    over the three backends, |z| < 6.15 each for a 0.1% false-alarm rate in all (measured,
    largest |z|: PyMC 2.37, NumPyro 2.51, Stan 2.81; PyMC had 8 divergent transitions)."""
    result = run("eight-schools", backend, scenario="classic", settings=SamplerSettings(seed=1))
    _converged(result, backend)
    compared = [k for k in result.summaries if k in exact_summary]
    assert len(compared) == EIGHT_SCHOOLS_QUANTITIES
    for key in compared:
        s = result.summaries[key]
        z = z_score(s.mean, s.mcse_mean, exact_summary[key]["mean"])
        assert abs(z) < EIGHT_SCHOOLS_THRESHOLD, (
            f"{backend} {key}: mean {s.mean:.4f} ± {s.mcse_mean:.4f}, exact {exact_summary[key]['mean']:.4f}, "
            f"z = {z:.2f} (|z| < {EIGHT_SCHOOLS_THRESHOLD:.2f})")


@pytest.fixture(scope="module")
def multilevel_reference():
    return load_reference("multilevel-logistic-seed")


@pytest.mark.false_alarm(FAMILY_ALPHA / len(BACKENDS))
@pytest.mark.parametrize("backend", BACKENDS)
def test_backend_multilevel_means_match_reference(backend, multilevel_reference):
    """Default settings, non-centered, seed data: the posterior means of all 16 scalar
    quantities and both decision probabilities against the long reference run,
    z = (mean - ref) / sqrt(mcse^2 + mcse_ref^2), t with 15 degrees of freedom (the smaller
    run's 4 chains), 54 comparisons over the three backends, |z| < 6.15 each for a 0.1%
    false-alarm rate in all (measured, largest |z|: PyMC 2.59, NumPyro 2.13, Stan 3.12)."""
    reference = multilevel_reference["quantities"]
    threshold = bonferroni_threshold(len(BACKENDS) * len(reference), FAMILY_ALPHA, DEFAULT_DF)
    result = run("multilevel-logistic", backend, scenario="seed", settings=SamplerSettings(seed=1))
    _converged(result, backend)
    estimates = {k: (s.mean, s.mcse_mean) for k, s in result.summaries.items()}
    for group, values in result.decisions.items():
        estimates |= {f"{group}[{label}]": (v.estimate, v.mcse) for label, v in values.items()}
    assert set(estimates) == set(reference)
    for key, (mean, mcse) in estimates.items():
        ref = reference[key]
        z = z_score(mean, mcse, ref["mean"], ref["mcse_mean"])
        assert abs(z) < threshold, (
            f"{backend} {key}: mean {mean:.4f} ± {mcse:.4f}, reference {ref['mean']:.4f} ± {ref['mcse_mean']:.4f}, "
            f"z = {z:.2f} (|z| < {threshold:.2f})")
