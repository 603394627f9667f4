"""`polyppl run` on every built-in model and backend: one result shape for all."""

import json
import subprocess
import sys

import pytest

from polyppl import SamplerSettings, run
from polyppl.backends import STAT_NAMES
from polyppl.models import MODELS

SMALL = SamplerSettings(chains=2, draws=200, tune=200, seed=4)


@pytest.mark.parametrize("backend", ["pymc", "numpyro", "stan"])
@pytest.mark.parametrize("model", list(MODELS))
def test_same_names_dims_and_coords_on_every_backend(model, backend, tmp_path):
    result = run(model, backend, settings=SMALL, out=tmp_path)
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
    record = json.loads((tmp_path / f"{model}-{builtin.default_scenario}-{backend}.json").read_text())
    assert record["backend"] == backend and record["status"] == "ok" and record["seed"] == 4
    package = {"pymc": "pymc", "numpyro": "numpyro", "stan": "httpstan"}[backend]
    assert record["engine"] and record["versions"]["polyppl"] and record["versions"][package]
    assert set(record["timings"]) >= {"compile_seconds", "warmup_seconds", "sampling_seconds"}
    assert set(record["diagnostics"]) >= {"rhat_max", "ess_bulk_min", "ess_tail_min", "divergences", "gradient_evaluations"}
    assert (tmp_path / f"{model}-{builtin.default_scenario}-{backend}.nc").exists()


def test_cli_run_writes_the_json_record(tmp_path):
    out, record_path = tmp_path / "out", tmp_path / "record.json"
    proc = subprocess.run(
        [sys.executable, "-m", "polyppl.cli", "run", "multilevel-logistic", "--backend", "stan",
         "--draws", "300", "--tune", "300", "--seed", "2", "--out", str(out), "--json", str(record_path)],
        capture_output=True, text=True, timeout=600,
    )
    assert proc.returncode == 0, proc.stderr
    assert "P(treatment better than control)" in proc.stdout
    record = json.loads(record_path.read_text())
    assert set(record) >= {"model", "scenario", "backend", "engine", "status", "seed", "versions", "timings",
                           "diagnostics", "posterior", "decisions"}
    assert {"a[China]", "a[Canada]", "mu_a", "fin[China]"} <= set(record["posterior"])
    assert set(record["posterior"]["mu_a"]) == {"mean", "sd", "mcse_mean", "q05", "q50", "q95"}
    china = record["decisions"]["prob_treatment_better"]["China"]
    assert 0.5 < china["estimate"] < 1 and 0 < china["mcse"] < 0.05
    assert record["engine"] in ("pystan", "cmdstanpy")
