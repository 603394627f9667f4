"""A user's Stan program wherever a model is accepted (issue #25): ``sbc`` (the program run on
each simulated dataset), ``bench`` (each backend timed on the program's data), ``compare
--methods``, and ``report`` rebuilding an SBC report. Real backends (Stan through CmdStan where
installed, else PyStan), fixed seeds, exact exit codes.

Time on the shared 2-core machine (2026-12-07, load about 14): 8 min 9 s in all, 40 s to 2 min 14 s
per CLI test (the SBC one the longest), most of it CmdStan's compiles of the test programs, the
CLI's start-up in each subprocess and the load; the unit tests take seconds.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from conftest import HAVE_CMDSTAN
from polyppl import spec as s
from polyppl.backends import get_backend
from polyppl.inference import numpy_model as nm
from polyppl.models.stan_program import stan_program
from polyppl.studies.sbc import simulation_rng

ROOT = Path(__file__).resolve().parents[1]
PROGRAM, DATA = ROOT / "examples" / "eight_schools.stan", ROOT / "examples" / "eight_schools.json"
#: Stan's engine here: CmdStan where installed (seconds to compile), else PyStan.
ENGINE = "cmdstanpy" if HAVE_CMDSTAN else "pystan"
STAN = f"stan:{ENGINE}"
SHORT = ["--chains", "2", "--draws", "100", "--tune", "200"]

#: mu has no prior: flat on the real line, so the program cannot be simulated from its prior.
FLAT_MU = """
data { int<lower=1> N; vector[N] y; }
parameters { real mu; real<lower=0> sigma; }
model { sigma ~ exponential(1); y ~ normal(mu, sigma); }
"""
#: Transformed data reads the observed y: the lowered model keeps its mean from the given y.
READS_Y = """
data { int<lower=1> N; vector[N] y; }
transformed data { real m = mean(y); }
parameters { real mu; real<lower=0> sigma; }
model { mu ~ normal(m, 1); sigma ~ exponential(1); y ~ normal(mu, sigma); }
"""


def polyppl(*args, cwd, timeout=1800):
    return subprocess.run([sys.executable, "-m", "polyppl.cli", *map(str, args)], capture_output=True, text=True,
                          cwd=cwd, env=dict(os.environ), timeout=timeout)


def _write(tmp_path: Path, program: str) -> tuple[Path, Path]:
    path, data = tmp_path / "normal.stan", tmp_path / "normal.json"
    path.write_text(program)
    data.write_text(json.dumps({"N": 5, "y": [0.3, -1.2, 2.0, 0.8, 1.1]}))
    return path, data


def test_the_stan_backend_runs_the_program_on_each_datasets_observed_values():
    """The program compiled once takes a simulated dataset's observed y (SBC's with_data): its log
    density moves by exactly the log-likelihood's change between the two datasets (priors and
    Jacobian are the same), at a point of the unconstrained space."""
    problem = stan_program(PROGRAM, DATA)
    model = problem.model.density_model()
    simulated = nm.simulate(model, problem.dataset, simulation_rng(1, 0)).dataset
    assert not np.allclose(simulated.values["y"], problem.dataset.values["y"])
    given = get_backend("stan").compile(model, problem.dataset, ENGINE, {})
    other = given.with_data(simulated)
    assert other.data["y"] == simulated.values["y"].tolist() and other.data["sigma"] == given.data["sigma"]
    point = {"theta_trans": np.linspace(-1, 1, 8), "mu": np.array(0.5), "tau": np.array(0.2)}  # tau = exp(0.2)
    values = {"theta_trans": point["theta_trans"], "mu": 0.5, "tau": np.exp(0.2)}
    change = given.log_density()(point)[0] - other.log_density()(point)[0]
    expected = nm.log_likelihood(model, problem.dataset, values) - nm.log_likelihood(model, simulated, values)
    assert change == pytest.approx(float(expected), rel=1e-9, abs=1e-9)


def test_sbc_of_a_stan_program_and_its_report_rebuilt(tmp_path):
    """``polyppl sbc PROGRAM.stan --data DATA.json``: three simulations on Stan, every fit with
    ranks, a calibrated verdict that says how little three simulations can tell (exit 0); then
    ``polyppl report`` writes the SBC report again from the folder alone."""
    out = tmp_path / "out"
    proc = polyppl("sbc", PROGRAM, "--data", DATA, "--backends", STAN, "--simulations", "3", *SHORT,
                   "--scheduler", "in-process", "--out", out, cwd=tmp_path)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert ": CALIBRATED\n  - only 3 simulations: the test finds gross miscalibration at most" in proc.stdout
    saved = json.loads((out / "eight_schools-eight_schools-sbc.json").read_text())
    column = saved["backends"][STAN]
    assert column["fits"]["ok"] == 3 and column["engines_seen"] == [ENGINE]
    assert {"mu", "tau", "theta[8]", "log_likelihood"} <= set(column["parameters"])
    report = out / "eight_schools-eight_schools-sbc-report.html"
    report.unlink()
    rebuilt = polyppl("report", "--out", out, cwd=tmp_path)
    assert rebuilt.returncode == 0, rebuilt.stderr[-2000:]
    assert f"report: {report}" in rebuilt.stdout and "only 3 simulations" in report.read_text()


def test_an_improper_prior_in_a_stan_program_is_refused_then_substituted(tmp_path):
    """A parameter without a prior (flat) is refused before anything runs, naming it, with the
    CLI's --substitute (exit 2); with the substitute, Stan runs the program regenerated from the
    model with that prior (the user's has none), and the run finishes (exit 0)."""
    program, data = _write(tmp_path, FLAT_MU)
    refused = polyppl("sbc", program, "--data", data, "--backends", STAN, "--out", tmp_path / "out", cwd=tmp_path)
    assert refused.returncode == 2, refused.stderr[-2000:]
    assert "parameter 'mu' has an improper prior (flat)" in refused.stderr
    assert "--substitute 'mu ~ normal(0, 10)'" in refused.stderr and "Traceback" not in refused.stderr
    assert not (tmp_path / "out").exists()
    ran = polyppl("sbc", program, "--data", data, "--backends", STAN, "--substitute", "mu ~ normal(0, 10)",
                  "--simulations", "2", *SHORT, "--scheduler", "in-process", "--out", tmp_path / "out", cwd=tmp_path)
    saved = json.loads((tmp_path / "out" / "normal-normal-sbc.json").read_text())
    # Two simulations decide little (seed 1's first puts all five y above mu: rank 0); the exit
    # code is the verdict's, whichever it is.
    assert ran.returncode == {"calibrated": 0, "miscalibrated": 1}[saved["verdict"]], ran.stderr[-3000:]
    assert saved["substitutes"] == {"mu": "normal(mu=0.0, sigma=10.0)"} and saved["backends"][STAN]["fits"]["ok"] == 2


def test_a_stan_program_whose_transformed_data_reads_the_observed_variable_is_refused(tmp_path):
    program, data = _write(tmp_path, READS_Y)
    proc = polyppl("sbc", program, "--data", data, "--backends", STAN, "--out", tmp_path / "out", cwd=tmp_path)
    assert proc.returncode == 2, proc.stderr[-2000:]
    assert "transformed data reads the observed 'y'" in proc.stderr and "Traceback" not in proc.stderr


def test_bench_times_each_backend_on_a_stan_programs_data(tmp_path):
    """``polyppl bench PROGRAM.stan --data DATA.json``: one point per backend at the data's size,
    its measures in scaling.json (exit 0); run again, the finished point is reused. Without
    --data, exit 2."""
    out = tmp_path / "bench"
    proc = polyppl("bench", PROGRAM, "--data", DATA, "--backends", STAN, "--out", out, cwd=tmp_path)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    rows = json.loads((out / "scaling.json").read_text())["points"]
    assert len(rows) == 1 and rows[0]["status"] == "ok" and rows[0]["form"] == "program"
    assert rows[0]["backend"] == STAN and rows[0]["seconds_per_gradient"] > 0 and rows[0]["ess_bulk_per_second"] > 0
    assert f"eight_schools  {STAN}      ok" in proc.stdout
    again = polyppl("bench", PROGRAM, "--data", DATA, "--backends", STAN, "--out", out, cwd=tmp_path)
    assert again.returncode == 0 and "polyppl bench: [1/1]" not in again.stderr
    missing = polyppl("bench", PROGRAM, "--out", out, cwd=tmp_path)
    assert missing.returncode == 2 and "needs its data: --data DATA.json" in missing.stderr


def test_compare_methods_on_a_stan_program(tmp_path):
    """``compare PROGRAM.stan --methods nuts,advi``: Stan's ADVI runs on the user's program and is
    scored against its NUTS (one column: nothing to compare the NUTS column with, so
    inconclusive, exit 3)."""
    out = tmp_path / "out"
    proc = polyppl("compare", PROGRAM, "--data", DATA, "--backends", STAN, "--methods", "nuts,advi", "--draws", "300",
                   "--tune", "300", "--remedies", "none", "--out", out, cwd=tmp_path)
    assert proc.returncode == 3, proc.stdout[-3000:] + proc.stderr[-3000:]
    # A comparison of one column has its own file name (not the every-backend comparison's).
    [path] = out.glob("eight_schools-eight_schools-*-comparison.json")
    saved = json.loads(path.read_text())
    assert saved["translation"] is None  # checked where PyMC or NumPyro run the lowered spec beside it
    cell = saved["methods"][f"{STAN}/advi"]
    assert cell["status"] == "ok" and cell["method"] == "advi"
    assert "Approximations against NUTS" in proc.stdout and f"{STAN}/advi" in proc.stdout


def test_the_improper_prior_hint_speaks_the_clis_words():
    model = s.Model("m", (s.Param("a", s.HalfFlat()), s.Observed("y", s.Normal(0.0, s.Var("a")), ("row",))))
    dataset = s.Dataset({"y": np.zeros(3)}, {"row": (1, 2, 3)})
    with pytest.raises(nm.ImproperPriorError) as err:
        nm.simulate(model, dataset, np.random.default_rng(0))
    assert "--substitute 'a ~ half_normal(10)'" in str(err.value) and "substitutes={'a': s.HalfNormal(10.0)}" in str(err.value)


def test_a_decision_title_reads_with_its_label_in_place():
    decision = s.prob("prob_positive", s.Var("b") > 0, ("predictor",), "P(b[{label}] > 0)")
    assert decision.reads("x") == "P(b[x] > 0)" and decision.heading() == "P(b[predictor] > 0)"
    plain = s.prob("p", s.Var("b") > 0, ("predictor",), "P(b > 0)")
    assert plain.reads("x") == "P(b > 0): x" and plain.heading() == "P(b > 0)"
