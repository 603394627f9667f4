"""`polyppl run` on every built-in model and backend: one result shape for all."""

import json
import subprocess
import sys

import numpy as np
import pytest

from conftest import COLUMNS, columns_of_a_repeat
from polyppl import SamplerSettings, run
from polyppl.inference.draws import STAT_NAMES
from polyppl.models import MODELS
from stat_tolerance import FAMILY_ALPHA

SMALL = SamplerSettings(chains=2, draws=200, tune=200, seed=4)


@pytest.mark.parametrize("model,column", [
    pytest.param(model, column.values[0], id=f"{model}-{column.id}", marks=column.marks)
    for model in MODELS for column in columns_of_a_repeat(model == "multilevel-logistic")])
def test_same_names_dims_and_coords_on_every_backend(model, column, tmp_path):
    backend, engine = column
    result = run(model, backend, engine=engine, settings=SMALL, out=tmp_path)
    builtin = MODELS[model]
    dataset = builtin.dataset()
    spec = builtin.spec(None, dataset)
    posterior = result.idata.posterior
    assert list(posterior.data_vars) == spec.output_names
    for name in spec.output_names:
        dims = getattr(spec[name], "dims", ())
        assert posterior[name].dims == ("chain", "draw", *dims)
        for dim in dims:
            assert list(posterior[dim].values) == list(dataset.coords[dim])
    assert set(result.idata.sample_stats.data_vars) == set(STAT_NAMES)
    record = json.loads((tmp_path / f"{model}-{builtin.default_scenario}-{backend}-nuts.json").read_text())
    assert record["backend"] == backend and record["status"] == "ok" and record["seed"] == 4
    assert record["method"] == "nuts" and len(record["request_hash"]) == 64
    package = {"pymc": "pymc", "numpyro": "numpyro", "stan": "cmdstanpy" if engine == "cmdstanpy" else "httpstan"}[backend]
    assert record["engine"] and record["versions"]["polyppl"] and record["versions"][package]
    if engine == "cmdstanpy":
        assert record["engine"] == "cmdstanpy" and record["versions"]["cmdstan"] == "2.35.0" and record["versions"]["cxx"]
    assert set(record["timings"]) >= {"compile_seconds", "warmup_seconds", "sampling_seconds"}
    assert record["timings"]["sampling_seconds"] > 0 and record["timings"]["phase_split"] in ("engine", "measured", "gradients")
    assert set(record["diagnostics"]) >= {"rhat_max", "ess_bulk_min", "ess_tail_min", "divergences", "gradient_evaluations",
                                          "warmup_gradient_evaluations", "gradients_per_draw"}
    assert record["diagnostics"]["warmup_gradient_evaluations"] > 0
    assert (tmp_path / f"{model}-{builtin.default_scenario}-{backend}-nuts.nc").exists()


@pytest.mark.parametrize("column", COLUMNS)
def test_the_same_request_gives_the_same_draws(column):
    """A run is a function of its request: the same seed twice gives identical draws on every
    backend and engine (and another seed, other draws)."""
    backend, engine = column
    first, second, other = (run("eight-schools", backend, engine=engine, settings=SamplerSettings(chains=2, draws=100, tune=100, seed=seed))
                            for seed in (7, 7, 8))
    for name in first.idata.posterior.data_vars:
        np.testing.assert_array_equal(first.idata.posterior[name].values, second.idata.posterior[name].values, err_msg=name)
    np.testing.assert_array_equal(first.idata.sample_stats["diverging"].values, second.idata.sample_stats["diverging"].values)
    assert not np.array_equal(first.idata.posterior["mu"].values, other.idata.posterior["mu"].values)


@pytest.mark.false_alarm(FAMILY_ALPHA)
def test_conditional_draws_are_reproducible_and_the_same_for_every_backend():
    """The Beta-Binomial's rates are drawn after sampling from their exact conditional:
    the same seed gives the same rates; draws follow Beta(a + y, b + n - y) given each (a, b)."""
    from scipy import stats

    first = run("beta-binomial", "numpyro", settings=SamplerSettings(chains=2, draws=500, tune=300, seed=3))
    second = run("beta-binomial", "numpyro", settings=SamplerSettings(chains=2, draws=500, tune=300, seed=3))
    np.testing.assert_array_equal(first.idata.posterior["rates"].values, second.idata.posterior["rates"].values)
    post, data = first.idata.posterior, MODELS["beta-binomial"].dataset()
    a, b = post["a"].values.ravel(), post["b"].values.ravel()
    n, y = data.values["trials"], data.values["successes"]
    rates = post["rates"].values.reshape(-1, len(n))
    # Probability integral transform of each rate under its conditional Beta: uniform on
    # (0, 1) if the draws follow it. KS at the declared rate shared among the variants.
    for k in range(len(n)):
        pit = stats.beta.cdf(rates[:, k], a + y[k], b + n[k] - y[k])
        assert stats.kstest(pit, "uniform").pvalue > FAMILY_ALPHA / len(n), k


def test_cli_run_writes_the_json_record(tmp_path):
    out, record_path = tmp_path / "out", tmp_path / "record.json"
    proc = subprocess.run(
        [sys.executable, "-m", "polyppl.cli", "run", "multilevel-logistic", "--backends", "stan",
         "--draws", "300", "--tune", "300", "--seed", "2", "--out", str(out), "--json", str(record_path)],
        capture_output=True, text=True, timeout=600,
    )
    assert proc.returncode == 0, proc.stderr
    assert "P(treatment better than control)" in proc.stdout
    record = json.loads(record_path.read_text())
    assert set(record) >= {"model", "scenario", "backend", "engine", "status", "seed", "versions", "timings",
                           "diagnostics", "posterior", "decisions", "method", "request_hash"}
    assert {"a[China]", "a[Canada]", "mu_a", "fin[China]"} <= set(record["posterior"])
    assert set(record["posterior"]["mu_a"]) >= {"mean", "sd", "mcse_mean", "q05", "q50", "q95", "mcse_q05", "ess_bulk", "rhat"}
    china = record["decisions"]["prob_treatment_better"]["China"]
    # Sanity bounds, not a statistical test: the posterior probability is about 0.89 (the
    # reference), with an MCSE near 0.01 at these draws, so 0.5 lies some 40 MCSEs away.
    assert 0.5 < china["estimate"] < 1 and 0 < china["mcse"] < 0.05
    assert record["engine"] in ("pystan", "cmdstanpy")
