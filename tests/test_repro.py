"""`polyppl repro`: every scenario's expected outcome on every backend, run for real.

A new release of PyMC, NumPyro, JAX, PyTensor or Stan that changes one of these behaviours
fails a test here. Seeds are fixed, so each outcome is repeatable on one set of versions;
the margins on seed-dependent counts are stated where they are asserted. Most are empirical
margins on measured values (said so, with what they guard), not false-alarm bounds: a new
library version acts like new seeds, and where the chance of failing then is computable it
is given.
"""

from __future__ import annotations

import json

import numpy as np
import pytest

from conftest import HAVE_CMDSTAN, STAN_ENGINES
from polyppl.cli import main
from polyppl.errors import UserError
from polyppl.models import get_model
from polyppl.models.beta_binomial_exact import rate_means
from polyppl.studies.repro import NOT_APPLICABLE, NOT_REPRODUCED, REPRODUCED, SCENARIOS, run_repro
from polyppl.studies.repro.advi_init import DEFAULT_NUMPYRO_INIT, SEED_START
from stat_tolerance import FAMILY_ALPHA, t_threshold

#: Every backend, and Stan through both engines.
COLUMNS = ["pymc", "numpyro", *[pytest.param(f"stan:{p.values[0]}", id=f"stan-{p.id}", marks=p.marks) for p in STAN_ENGINES]]


#: The cheapest column to sample, for the scenarios the default run checks on Stan alone.
STAN_IN_CI = "stan:cmdstanpy" if HAVE_CMDSTAN else "stan:pystan"


def columns_in_ci(column: str) -> list:
    """Every column, all but ``column`` marked slow: the default run (and CI) checks each
    scenario's claims on one backend, turn about, and ``pytest -m slow`` on the others."""
    out = []
    for param in COLUMNS:
        value, marks, ident = (param, (), param) if isinstance(param, str) else (param.values[0], param.marks, param.id)
        extra = () if value == column else (pytest.mark.slow,)
        out.append(pytest.param(value, id=ident, marks=(*marks, *extra)))
    return out


#: Seeds for the seed-dependent ADVI failure (the CLI default is 20; fewer keep CI short).
TEST_SEEDS = 8


# --------------------------------------------------------------------------- input


def test_cli_lists_the_scenarios(capsys):
    assert main(["repro"]) == 0
    listed = [line.split(":")[0] for line in capsys.readouterr().out.splitlines() if line]
    assert listed == list(SCENARIOS)
    assert len(listed) >= 7 and "beta-binomial-funnel" in listed


def test_unknown_scenario_lists_the_valid_ones():
    with pytest.raises(UserError, match="unknown scenario 'nope'; expected one of: advi-init-inf-energy"):
        run_repro("nope")


def test_unknown_backend_lists_the_valid_ones():
    with pytest.raises(UserError, match=r"unknown backend 'pyro' \(did you mean 'numpyro'\?\); expected one of: pymc, numpyro, stan"):
        run_repro("centered-funnel", ["pyro"])


def test_a_backend_a_scenario_does_not_know_is_not_applicable(monkeypatch):
    """A fourth backend (here PyMC under another name) gets "not applicable" from a scenario
    written for three, rather than an error."""
    import dataclasses

    from polyppl import backends

    monkeypatch.setitem(backends.BACKENDS, "fourth", dataclasses.replace(backends.BACKENDS["pymc"], name="fourth"))
    result = run_repro("float32-jax", ["fourth"]).result("fourth")
    assert result.outcome == NOT_APPLICABLE and "no reproduction for fourth" in result.reason


def test_cli_bad_input_exits_2(capsys):
    assert main(["repro", "nope"]) == 2
    assert main(["repro", "centered-funnel", "--backends", "pymc,pyro"]) == 2
    assert "unknown backend 'pyro'" in capsys.readouterr().err


# --------------------------------------------------------------------------- advi-init-inf-energy


@pytest.fixture(scope="module")
def advi_pymc():
    return run_repro("advi-init-inf-energy", ["pymc"], seeds=TEST_SEEDS).result("pymc")


def test_advi_init_fails_with_bad_initial_energy_on_pymc(advi_pymc):
    runs = advi_pymc.measurements["runs"]
    two = runs["two variants, seed declaration"]
    four = runs["four variants, seed declaration"]
    fixed = runs["two variants, marginal form"]
    assert advi_pymc.outcome == REPRODUCED
    assert "Bad initial energy" in " ".join(advi_pymc.evidence)
    # Each chain starts at a draw from ADVI's Gaussian, 32-36% of which lies outside the
    # support with two variants (17-21% with four), so with 2 chains a run fails with
    # probability 0.54-0.59 (0.31-0.38). Measured with these fixed seeds: 7 of 8 against
    # 3 of 8. Empirical margins: "at least 3 of 8" guards that the failure has not vanished,
    # and "four variants fail less often" that the support explains it; at the theoretical
    # rates fresh seeds would fail the first with probability 0.06-0.10 and the second with
    # 0.20-0.34 (Binomial(8, p) counts), so a failure after an upgrade calls for a rerun
    # with more seeds (TEST_SEEDS), not a verdict.
    assert two["bad_initial_energy"] >= 3
    assert four["failures"] < two["failures"]
    # Structural: with an unconstrained (a, b) every point is inside the support. And the
    # marginal form has no funnel: measured, one of 8 of its short runs (200 warm-up
    # iterations from ADVI's start) had a divergence, against 1 to 5 runs of 8 (with 39 to
    # 131 divergences each) for the seed's declaration; at most 2 is an empirical margin.
    assert fixed["failures"] == 0 and fixed["divergent_runs"] <= 2
    assert advi_pymc.fix_works is True
    # 4000 draws per fit: each share has a binomial sd of at most 0.008, their difference
    # 0.010, and they differ by about 0.15; 0.05 leaves 10 sds.
    fit = advi_pymc.measurements["advi_fit"]
    assert fit["two-variants"]["share_outside_support"] > fit["four-variants"]["share_outside_support"] + 0.05


def test_advi_scenario_on_numpyro():
    numpyro = run_repro("advi-init-inf-energy", ["numpyro"], seeds=TEST_SEEDS).result("numpyro")
    seed_runs, fixed_runs = numpyro.measurements["seed"], numpyro.measurements["marginal"]
    assert numpyro.outcome == REPRODUCED
    # A uniform(-2, 2) start has a > 0 and b > 0 with probability 1/4, so a start fails with
    # probability 3/4: P(fewer than 3 of 8 fail) = 0.004.
    assert seed_runs[DEFAULT_NUMPYRO_INIT]["failures"] >= 3
    assert "Beta distribution got invalid" in seed_runs[DEFAULT_NUMPYRO_INIT]["first_error"]
    assert seed_runs["init_to_feasible"]["failures"] == 1  # deterministic: a = b = 0
    assert seed_runs[SEED_START]["failures"] == 0
    assert all(run["failures"] == 0 for run in fixed_runs.values())
    # Trajectories that cross a = 0 end in divergences; the marginal form has none.
    assert seed_runs[SEED_START]["divergences"] > 0 and fixed_runs[DEFAULT_NUMPYRO_INIT]["divergences"] == 0
    assert numpyro.fix_works is True


@pytest.mark.parametrize("engine", [pytest.param(p.values[0], id=p.id, marks=(*p.marks, *(() if p.values[0] == STAN_IN_CI.partition(":")[2] else (pytest.mark.slow,))))
                                    for p in STAN_ENGINES])
def test_advi_scenario_on_stan(engine):
    stan = run_repro("advi-init-inf-energy", [f"stan:{engine}"], seeds=TEST_SEEDS).result("stan")
    seed_run, fixed_run = stan.measurements["seed"], stan.measurements["marginal"]
    # Stan rejects the bad random inits and retries. Fixed seed: 2 of 2 chains drew a bad
    # first init (each does with probability 3/4).
    assert seed_run["rejected_initial_values"] >= 1
    assert "must be positive" in seed_run["first_rejection_reason"]
    assert fixed_run["rejected_initial_values"] == 0 and fixed_run["divergences"] == 0
    assert seed_run["divergences"] > 0
    assert stan.fix_works is True
    if engine == "pystan":  # PyStan 3 has no ADVI: the failure the seed asked about cannot happen
        assert stan.outcome == NOT_REPRODUCED and stan.measurements["advi_failures"] is None
    else:  # CmdStan's ADVI, then NUTS from its draws
        assert stan.measurements["advi_failures"] is not None


# --------------------------------------------------------------------------- per-backend scenarios


@pytest.mark.false_alarm(FAMILY_ALPHA)
@pytest.mark.parametrize("column", columns_in_ci(STAN_IN_CI))
def test_beta_binomial_funnel(column):
    """The joint form diverges on every backend; the marginal form has no divergence and
    R-hat under 1.01 on the same data and settings."""
    backend = column.partition(":")[0]
    result = run_repro("beta-binomial-funnel", [column]).result(backend)
    assert result.outcome == REPRODUCED, result.evidence
    assert result.fix_works is True, result.fix_evidence
    for scenario in ("two-variants", "small-a"):
        marginal = result.measurements[scenario]["marginal"]
        assert marginal["divergences"] == 0
        # And the clean run is right: rates[A] against the exact posterior mean, z referred to
        # Student's t with 15 df (4 chains), Bonferroni over the 2 scenarios at the declared rate.
        exact_mean = rate_means(get_model("beta-binomial").dataset(scenario))[0]
        rate = marginal["rates[A]"]
        z_max = t_threshold(FAMILY_ALPHA, 2, 4)
        assert abs(rate["mean"] - exact_mean) < z_max * rate["mcse_mean"], (scenario, rate, exact_mean)


@pytest.mark.parametrize("column", columns_in_ci(STAN_IN_CI))
def test_centered_funnel(column):
    backend = column.partition(":")[0]
    result = run_repro("centered-funnel", [column]).result(backend)
    assert result.outcome == REPRODUCED
    assert result.fix_works is True
    schools = result.measurements["eight-schools"]
    # The centered chains miss the funnel's neck: the lower tail of tau is cut off. Measured
    # 5% quantiles differ by a factor of 2 or more on every backend; 1.3 is an empirical
    # margin under that (not derived), guarding that the bias is still there and points down.
    assert schools["centered"]["tau"]["q05"] > 1.3 * schools["noncentered"]["tau"]["q05"]


@pytest.mark.parametrize("column", columns_in_ci("pymc"))
def test_improper_flat_scale(column):
    backend = column.partition(":")[0]
    result = run_repro("improper-flat-scale", [column]).result(backend)
    assert result.outcome == REPRODUCED
    assert result.fix_works is True


@pytest.mark.parametrize("column", columns_in_ci(STAN_IN_CI))
def test_tree_depth_unscaled(column):
    backend = column.partition(":")[0]
    result = run_repro("tree-depth-unscaled", [column]).result(backend)
    assert result.outcome == REPRODUCED
    raw = result.measurements["raw"]
    # Measured, seed 1: 76% (NumPyro, Stan) of draws at the maximum depth; PyMC 0-43%
    # depending on the CPU, with 18% of draws divergent where it does not saturate. R-hat
    # 1.9 to 2.6 everywhere. All three bounds are empirical margins under those values, not
    # derived; the PyMC one was loosened (from saturation > 0.25 to saturation plus
    # divergence rate > 0.1) after the test failed on another CPU. They guard that the
    # unscaled ridge still shows up as saturation or divergences, and as non-convergence.
    if backend == "pymc":
        assert raw["tree_depth_saturation"] + raw["divergence_rate"] > 0.1
    else:
        assert raw["tree_depth_saturation"] > 0.25
    assert raw["rhat_max"] > 1.1
    assert result.fix_works is True


def test_float32_jax(tmp_path):
    out = tmp_path / "float32.json"
    assert main(["repro", "float32-jax", "--json", str(out)]) == 0
    record = json.loads(out.read_text())
    outcomes = {r["backend"]: r for r in record["results"]}
    assert outcomes["pymc"]["outcome"] == NOT_APPLICABLE and outcomes["pymc"]["reason"]
    assert outcomes["stan"]["outcome"] == NOT_APPLICABLE
    numpyro = outcomes["numpyro"]
    assert numpyro["outcome"] == REPRODUCED
    float32, float64 = numpyro["measurements"]["float32"], numpyro["measurements"]["float64"]
    assert float32["dtype"] == "float32" and float64["dtype"] == "float64"
    # Empirical margins (the scenario's own criterion). For converged chains R-hat exceeds
    # 1.05 only if an F(3, 4(n - 1)) statistic exceeds (1.05^2 - 1) n + 1, n the ESS per
    # half chain (tests/test_diagnostics.py): probability 8.5e-7 at n = 100, 1.7% at n = 30.
    assert float32["rhat"] > 1.1 and float64["rhat"] < 1.05
    assert numpyro["fix_works"] is True


def test_pytensor_without_compiler():
    report = run_repro("pytensor-no-compiler")
    assert report.result("numpyro").outcome == report.result("stan").outcome == NOT_APPLICABLE
    pymc = report.result("pymc")
    assert pymc.measurements["without_compiler"]["cxx"] == ""
    if int(pymc.versions["pytensor"].split(".")[0]) >= 3:
        # PyTensor 3 compiles with Numba where it finds no C++ compiler: the failure is gone
        # (measured 2026-12-07: 486 against 704 µs per gradient, no warning). 5 is the same
        # empirical margin as below, guarding that no pure-Python fallback runs.
        assert pymc.outcome == NOT_REPRODUCED
        assert pymc.measurements["slowdown"] < 5
        return
    assert pymc.outcome == REPRODUCED
    assert "g++ not detected" in pymc.measurements["warning"]
    # Measured: about 75 times slower per gradient; 5 is an empirical margin (15 times under
    # the measurement), guarding that the pure-Python fallback is really what runs, not a
    # timing claim.
    assert pymc.measurements["slowdown"] > 5


def test_the_settings_line_names_each_backends_engine():
    """The report says which engine ran each backend, resolved (never ``engines={}``)."""
    from polyppl.backends import get_backend

    report = run_repro("float32-jax", ["stan"])  # not applicable to Stan: nothing runs
    engine = get_backend("stan").engine(None).name
    assert f"engines=stan:{engine}" in report.text() and "engines={}" not in report.text()
    assert report.settings["engines"] == {"stan": engine}


def test_logit_gradient():
    """PyMC's own logistic densities lose their gradient past log-odds 36 and NumPyro's are
    off by n/2 at exactly 0, while polyppl's compiled models are exact on every backend
    (and Stan's own, which polyppl compiles to, was never wrong here). Deterministic: no
    sampling. On a PyMC or NumPyro that fixes its density, the outcome flips to not
    reproduced and this test says so."""
    report = run_repro("logit-gradient")
    pymc, numpyro, stan = (report.result(b) for b in ("pymc", "numpyro", "stan"))
    assert pymc.outcome == REPRODUCED and pymc.fix_works
    exact = dict(zip(pymc.measurements["log_odds"], pymc.measurements["exact"]))
    library = dict(zip(pymc.measurements["log_odds"], pymc.measurements["library"]))
    assert library[40.0] == 0.0 and exact[40.0] == pytest.approx(-4.0)
    assert numpyro.outcome == REPRODUCED and numpyro.fix_works
    library = dict(zip(numpyro.measurements["log_odds"], numpyro.measurements["library"]))
    assert library[0.0] == pytest.approx(2.0) and exact[0.0] == pytest.approx(-1.0)
    assert stan.outcome == NOT_REPRODUCED
    for result in (pymc, numpyro, stan):
        np.testing.assert_allclose(result.measurements["polyppl"], result.measurements["exact"], atol=1e-8)
