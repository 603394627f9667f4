"""``polyppl posteriordb``: reading a posteriordb snapshot, and every backend checked against
its reference draws on the grid.

The data are posteriors of posteriordb in its own layout (tests/data/posteriordb_snapshot,
BSD licence there; its README lists them): the CI set below (three regressions, a Poisson GLM,
eight schools, a hierarchical radon model, an AR(5) time series; the mixture awaits the Stan
front end's ordered type, the brms-generated spline model is too slow for CI, the logistic
regression fails its translation check) and eight schools' centered program, which shares
the non-centered one's reference. Every one imports
through the Stan front end and its translation check.

Statistics: every test of a run is one Holm family per posterior at a family-wise
false-alarm rate of 1% (the study's default, ``studies.agreement``), so a run of correct
backends on one posterior fails with probability at most 1%; the CI set runs at 0.001% per
posterior (seven posteriors: 0.007% in all) at the study's default draws; the seeds are fixed, so each
outcome is repeatable.

Time: about 1 minute for the three backends on eight schools with Stan's program compiled
(a first PyStan build adds about 2 minutes), 40 s for the skewed backend on a one-worker
Dask cluster and its resumed run.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from polyppl.cli import main
from polyppl.errors import UserError
from polyppl.inference.methods import SamplerSettings
from polyppl.execution.grid import read_ledger
from polyppl.models import posteriordb as db
from polyppl.render.posteriordb_report import write_posteriordb_report
from polyppl.studies.posteriordb import run_posteriordb

TESTS = Path(__file__).resolve().parent
SNAPSHOT = TESTS / "data" / "posteriordb_snapshot"
EIGHT = "eight_schools-eight_schools_noncentered"
CENTERED = "eight_schools-eight_schools_centered"
GLM = "GLM_Poisson_Data-GLM_Poisson_model"
#: The CI set: diverse posteriors end to end on every backend (what each stands for).
CI_SET = {
    "kidiq-kidscore_momiq": "a linear regression (reference draws)",
    "mesquite-logmesquite_logvolume": "a log-log regression (reference draws)",
    EIGHT: "eight schools, non-centered (reference draws)",
    GLM: "a Poisson GLM (no reference: the backends against each other)",
    "kidiq-kidscore_momhs": "a regression on a binary predictor (reference draws)",
    "radon_mn-radon_variable_intercept_noncentered": "a hierarchical model, 85 counties (no reference)",
    "arK-arK": "a time series: AR(5), its loop from an offset (reference draws)",
    "low_dim_gauss_mix-low_dim_gauss_mix": "a mixture: ordered means, log_mix (reference draws)",
}
#: Posteriors of the set that the default run does not run, and why.
NOT_IN_CI = {
    "mcycle_splines-accel_splines": "the brms-generated program imports and runs, but too slowly for CI: measured "
                                    "2026-12-07 at 4 x 500 + 500 (load 10 on 2 cores), PyMC 696 divergent transitions "
                                    "and stuck chains, NumPyro and Stan a few divergences and 1 ESS/s, 6-8 min a backend, "
                                    "then the ladder; run `polyppl posteriordb mcycle_splines-accel_splines --path "
                                    "tests/data/posteriordb_snapshot`",
}
NOT_IN_CI["wells_data-wells_dist"] = (
    "a logistic regression whose translation check found PyMC's Bernoulli(logit_p) gradient NaN at log-odds past "
    "about 36 (2026-12-07; fixed in the PyMC compiler, tested in test_families.py); its time on CI's machine is not "
    "yet measured, so not yet in the default run")
#: The CI set's settings: the study's defaults (4 x 1000 + 1000; at 4 x 500 R-hat and ESS
#: flagged radon, the GLM and others and the ladder ran a second round of compiles, which
#: costs more than the draws), and a family-wise false-alarm rate of 0.001% per posterior (the
#: suite's flakiness budget of 2% is nearly spent; a real error such as the skewed backend's
#: is at z = -32, far beyond Holm's threshold at this rate, z of about 5.5).
CI_SETTINGS = SamplerSettings(chains=4, draws=1000, tune=1000, seed=1)
CI_FAMILY_ALPHA = 0.00001


def polyppl(*args, cwd, env=None, timeout=1200):
    return subprocess.run([sys.executable, "-m", "polyppl.cli", *map(str, args)], capture_output=True, text=True,
                          cwd=cwd, env={**os.environ, **(env or {})}, timeout=timeout)


# --- the snapshot ---------------------------------------------------------------------


def test_a_checkout_its_folder_and_the_environment_variable_locate_the_same_database(monkeypatch):
    root = SNAPSHOT / "posterior_database"
    assert db.locate(SNAPSHOT) == root and db.locate(root) == root
    monkeypatch.setenv(db.ENVIRONMENT_VARIABLE, str(SNAPSHOT))
    assert db.locate(None) == root
    with pytest.raises(UserError, match=r"nowhere: not a posteriordb checkout \(expected .*posteriors"):
        db.locate(SNAPSHOT / "nowhere")


def test_posteriors_their_reference_draws_and_stan_names():
    found = db.posteriors(db.locate(SNAPSHOT))
    assert sorted(found) == sorted([CENTERED, *CI_SET, *NOT_IN_CI])
    assert found[EIGHT].has_reference and found[CENTERED].has_reference and not found[GLM].has_reference
    assert found[CENTERED].reference == found[EIGHT].reference  # posteriordb names the same draws for both
    draws = db.reference_draws(found[EIGHT])
    assert sorted(draws) == sorted(["mu", "tau", *(f"theta[{j}]" for j in range(1, 9))])
    assert all(value.shape == (10, 1000) for value in draws.values())
    assert db.read_data(found[EIGHT]) == {"J": 8, "y": [28, 8, -3, 7, -1, 1, 18, 12],
                                          "sigma": [15, 10, 16, 11, 9, 11, 10, 18]}


def test_eight_schools_imports_through_the_stan_front_end_with_stans_names():
    found = db.posteriors(db.locate(SNAPSHOT))
    problem = db.import_posterior(found[EIGHT])
    assert problem.labels.model == EIGHT and problem.model.source is not None  # Stan runs the program itself
    assert list(problem.dataset.values["y"]) == [28, 8, -3, 7, -1, 1, 18, 12]
    assert db.support(found[EIGHT]) == ("supported", "")


def test_list_says_which_have_reference_draws_and_which_import(capsys):
    assert main(["posteriordb", "--list", "--path", str(SNAPSHOT)]) == 0
    out = capsys.readouterr().out
    lines = {line.split()[0]: line for line in out.splitlines() if line.startswith(("eight", "GLM", "low_dim"))}
    assert "yes" in lines[EIGHT] and "supported" in lines[EIGHT] and "unsupported" not in lines[EIGHT]
    assert "no" in lines[GLM].split() and "supported" in lines[GLM]
    mixture = lines["low_dim_gauss_mix-low_dim_gauss_mix"]
    assert "supported" in mixture and "unsupported" not in mixture
    importable = len(CI_SET) + len(NOT_IN_CI) + 1  # eight schools centered, and the rest
    assert f"11 posteriors, 7 with reference draws, {importable} importable" in out


@pytest.mark.parametrize("args, message", [
    (["--path", "nowhere", EIGHT], "nowhere: not a posteriordb checkout"),
    (["--path", str(SNAPSHOT)], "name posteriors (see `polyppl posteriordb --list`), or give --all or --reference-only"),
    (["--path", str(SNAPSHOT), "eight_schools"], "no posterior 'eight_schools' in"),
    (["--path", str(SNAPSHOT), EIGHT, "--backends", "pymc,pymc"], "a backend appears twice"),
    (["--path", str(SNAPSHOT), EIGHT, "--timeout", "0"], "--timeout must be positive"),
])
def test_bad_input_exits_2_with_one_line_and_writes_nothing(tmp_path, capsys, args, message):
    out = tmp_path / "out"
    assert main(["posteriordb", *args, "--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert message in err and "Traceback" not in err
    assert not out.exists()


def test_unsupported_posteriors_run_nothing_and_exit_0(tmp_path):
    """A posterior whose program is outside the subset: here the snapshot's mixture with a
    unit-vector parameter added (line 7), which the front end does not lower."""
    name = "low_dim_gauss_mix-low_dim_gauss_mix"
    snapshot = tmp_path / "snapshot"
    shutil.copytree(SNAPSHOT, snapshot)
    program = snapshot / "posterior_database" / "models" / "stan" / "low_dim_gauss_mix.stan"
    program.write_text(program.read_text().replace("  ordered[2] mu;\n", "  ordered[2] mu;\n  unit_vector[2] u;\n"))
    run = run_posteriordb(snapshot, [name], out=tmp_path / "out", scheduler="in-process")
    assert [r.status for r in run.results] == ["unsupported"]
    assert run.grid["fits_run"] == 0 and run.exit_code == 0
    saved = run.to_json()
    assert saved["summary"] == {"pass": 0, "fail": 0, "inconclusive": 0, "unsupported": 1, "error": 0}
    entry = saved["posteriors"][name]
    assert entry["status"] == "unsupported" and entry["reason"].startswith("line 7:"), entry["reason"]
    assert "unit_vector" in entry["reason"], entry["reason"]
    assert entry["reference"] is True and entry["backends"] == {} and entry["remedies"] == []


# --- the CI set: every backend against the reference draws and each other ---------------


@pytest.fixture(scope="module")
def ci_run(tmp_path_factory):
    """The CI set on a local Dask cluster of two workers, at :data:`CI_SETTINGS` with the
    remedies ladder on (the study's default), then the same command again (it must run
    nothing)."""
    out = tmp_path_factory.mktemp("posteriordb-ci")
    run = run_posteriordb(SNAPSHOT, list(CI_SET), out=out, workers=2, settings=CI_SETTINGS, family_alpha=CI_FAMILY_ALPHA)
    return run, out


@pytest.mark.false_alarm(CI_FAMILY_ALPHA)
@pytest.mark.parametrize("name", [*CI_SET, *(pytest.param(n, marks=pytest.mark.skip(reason=why))
                                            for n, why in NOT_IN_CI.items())])
def test_every_backend_agrees_with_the_reference_and_each_other_on_the_ci_set(ci_run, name):
    """PyMC, NumPyro and Stan (4 x 1000 + 1000, seed 1) on each posterior of the CI set: every
    quantity's mean, sd, q05 and q95 within Monte Carlo error of posteriordb's reference draws
    (where it has them) and of the other backends (Holm, 0.001% per posterior), every backend
    converged (after the remedies ladder where a fit was flagged); the JSON in the issue's
    format, each backend's record and speed. (Eight schools at the defaults, 4 x 1000: 336
    tests, smallest p before Holm 0.013, at 1% per posterior.)"""
    run, _ = ci_run
    result = next(r for r in run.results if r.name == name)
    assert result.status == "pass", result.reason
    entry = run.to_json()["posteriors"][name]
    assert entry["reference"] is db.posteriors(db.locate(SNAPSHOT))[name].has_reference
    assert entry["translation"]["max_rel_error"] < 1e-6
    assert set(entry["backends"]) == {"pymc", "numpyro", "stan"}
    for label, backend in entry["backends"].items():
        assert backend["status"] == "ok", (label, backend)
        assert backend["vs_reference"] == ("agree" if entry["reference"] else None), (label, backend)
        assert backend["worst"]["against"] == ("reference" if entry["reference"] else backend["worst"]["against"])
        assert backend["ess_per_s"] > 0 and backend["us_per_gradient"] > 0 and backend["gradients_per_draw"] >= 1
        assert backend["record"]["model"] == name and backend["record"]["backend"] == label
        assert not {"rhat", "ess_bulk", "ess_tail"} & set(backend["flags"])
    if name == EIGHT:  # 10 reference quantities x 4 statistics x 3 backends, 18 shared quantities x 4 x 3 pairs
        assert entry["tests"] == 10 * 4 * 3 + 18 * 4 * 3


# Arithmetic on the CI run's records (its statistical verdicts are the test above's).
@pytest.mark.false_alarm(0)
def test_the_ci_run_answers_which_backend_is_fastest_and_resumes_from_its_ledger(ci_run, tmp_path):
    """The speed answer (the fastest converged backend per posterior by ESS/s, each backend's
    ratio to it, the geometric mean) in the JSON, the terminal's table, the report and the PNG;
    the docs' table regenerated from the JSON by scripts/posteriordb_table.py; and the same
    run again reuses every fit of its ledger (nothing runs)."""
    import math

    from polyppl.render.posteriordb_report import fastest_table, write_speed_png

    run, out = ci_run
    saved = run.to_json()
    speed = saved["speed"]
    compared = [r.name for r in run.results if r.status == "pass"]
    assert sorted(speed["per_posterior"]) == sorted(compared) and speed["posteriors_compared"] == len(compared)
    for name, row in speed["per_posterior"].items():
        fastest = row["fastest"]
        assert row["over_fastest"][fastest] == 1.0
        assert max(row["ess_per_s"].values()) == row["ess_per_s"][fastest]
        assert all(0 < ratio <= 1 for ratio in row["over_fastest"].values())
    for label, mean in speed["ess_per_s_over_fastest_geometric_mean"].items():
        logs = [math.log(row["over_fastest"][label]) for row in speed["per_posterior"].values()]
        assert mean == pytest.approx(math.exp(sum(logs) / len(logs)))
    assert sum(speed["fastest_count"].values()) == len(compared)
    text = fastest_table(run).text()
    assert f"geometric mean over {len(compared)}" in text
    png = write_speed_png(run, tmp_path / "speed.png")
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    page = write_posteriordb_report(run, tmp_path / "report.html").read_text()
    assert page.count("data:image/png;base64") >= 2 and "The fastest backend per posterior" in page
    (tmp_path / "run.json").write_text(json.dumps(saved))
    document = tmp_path / "doc.md"
    document.write_text("before\n<!-- posteriordb-measured:begin -->\nold\n<!-- posteriordb-measured:end -->\nafter\n")
    script = subprocess.run([sys.executable, str(TESTS.parent / "scripts" / "posteriordb_table.py"), tmp_path / "run.json",
                             "--update", document], capture_output=True, text=True, timeout=120)
    assert script.returncode == 0, script.stderr
    written = document.read_text()
    assert written.startswith("before\n") and written.endswith("after\n") and "old" not in written
    assert f"| {EIGHT} | agree, " in written and f"| geometric mean over {len(compared)} |" in written
    readme = tmp_path / "readme.md"
    readme.write_text("<!-- posteriordb-summary:begin -->\n<!-- posteriordb-summary:end -->\n")
    script = subprocess.run([sys.executable, str(TESTS.parent / "scripts" / "posteriordb_table.py"), tmp_path / "run.json",
                             "--summary", "--update", readme], capture_output=True, text=True, timeout=120)
    assert script.returncode == 0, script.stderr
    rows = [line.split(" | ") for line in readme.read_text().splitlines() if line.startswith("| kidiq (2) |")]
    statuses = [r.status for r in run.results if r.name.startswith("kidiq-")]  # the CI set's two kidiq posteriors
    assert len(rows) == 1, readme.read_text()
    counted = {word: int(n) for n, word in (part.split(" ") for part in rows[0][1].split(", "))}
    assert counted == {status: statuses.count(status) for status in statuses}
    again = run_posteriordb(SNAPSHOT, list(CI_SET), out=out, workers=2, settings=CI_SETTINGS,
                            family_alpha=CI_FAMILY_ALPHA)
    assert again.grid["fits_run"] == 0 and again.grid["fits_reused"] == run.grid["fits_run"] + run.grid["fits_reused"]
    assert [r.status for r in again.results] == [r.status for r in run.results]


def test_a_skewed_backend_fails_naming_itself_and_the_quantity_and_a_rerun_resumes(tmp_path):
    """A backend whose compiler shrinks mu's prior scale (tests/skewed_backend.py; moves mu by
    about half a posterior sd) on a one-worker Dask cluster: the posterior fails, naming the
    backend and mu with its gap in sds, exit 1 (measured: mu's mean 0.56 sd below the
    reference, z = -32; its 95% quantile 0.89 sd, z = -21). Run again, the ledger's fit is
    reused and nothing runs."""
    env = {"POLYPPL_BACKENDS": "skewed_backend:BACKEND",
           "PYTHONPATH": os.pathsep.join([str(TESTS), os.environ.get("PYTHONPATH", "")])}
    out = tmp_path / "out"
    args = ["posteriordb", EIGHT, "--path", SNAPSHOT, "--backends", "skewed", "--workers", "1", "--out", out,
            "--json", tmp_path / "run.json"]
    proc = polyppl(*args, cwd=tmp_path, env=env)
    assert proc.returncode == 1, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert f"[1/1] {EIGHT} on skewed: ok" in proc.stderr
    saved = json.loads((tmp_path / "run.json").read_text())
    entry = saved["posteriors"][EIGHT]
    assert entry["status"] == "fail" and entry["reason"].startswith("skewed: mu ")
    skewed = entry["backends"]["skewed"]
    assert skewed["vs_reference"] == "disagree"
    assert skewed["worst"]["quantity"] == "mu" and skewed["worst"]["gap_sd"] < -0.2 and not skewed["worst"]["agree"]
    again = polyppl(*args, cwd=tmp_path, env=env)
    assert again.returncode == 1
    assert json.loads((tmp_path / "run.json").read_text())["grid"] | {"wall_seconds": 0} == {
        **saved["grid"], "fits_run": 0, "fits_reused": 1, "wall_seconds": 0, "where": "nothing to run", "workers": 0}


def test_a_failed_translation_check_makes_the_posterior_an_error_and_drops_its_fits(tmp_path):
    """The first phase's outcome applied to the plan: a posterior whose translation check
    ended in error runs none of its fits, and its reason carries the check's message."""
    from dataclasses import replace

    from polyppl.execution.grid import FitKey, GridRun, GridTask
    from polyppl.studies.posteriordb import TRANSLATION, plan_study

    plan = plan_study(db.locate(SNAPSHOT), [EIGHT], backends=["numpyro"], out=tmp_path)
    check = GridTask(FitKey(EIGHT, TRANSLATION, "check", db.SCENARIO, 1), "polyppl.studies.posteriordb:run_translation_check",
                     None, "config")
    plan = replace(plan, posteriors=[replace(plan.posteriors[0], check=check)])
    assert len(plan.tasks) == 1 and plan.checks == [check]
    message = "UserError: the translation differs: numpyro, gradient of mu at point 3, relative error 0.5"
    checks = GridRun({check.key: {"status": "error", "error": message}}, 0, 1, 0.0, 1, "in this process")
    checked = plan.without_translations_that_failed(checks)
    assert checked.tasks == [] and checked.posteriors[0].requests == {}
    assert checked.posteriors[0].status == "error" and checked.posteriors[0].reason == f"translation check: {message}"
    passed = GridRun({check.key: {"status": "ok", "result": {"points": 20, "max_rel_error": 1e-12}}}, 0, 1, 0.0, 1, "")
    assert plan.without_translations_that_failed(passed) is plan


# --- the remedies ladder ----------------------------------------------------------------


# Fixed seeds; what is asserted is the ladder's bookkeeping, not a statistical verdict.
@pytest.mark.false_alarm(0)
def test_a_flagged_posterior_climbs_the_ladder_and_a_rerun_reuses_every_rung(tmp_path):
    """Eight schools, centered (a funnel), on NumPyro and PyMC, short chains (4 x 200 + 200),
    in this process, the target rung only: a fit with divergent transitions at 0.9 sends
    every backend of the posterior to 0.95, 0.99 and 0.999, each rung's fits in the ledger under
    their own key; the reason and the JSON say the rungs taken. The same run again reuses
    every rung (nothing runs); ``--remedies none`` on the same folder reuses the first rung
    and says the ladder is off."""
    settings = SamplerSettings(chains=4, draws=200, tune=200, seed=1)
    common = dict(backends=["numpyro", "pymc"], out=tmp_path, scheduler="in-process", settings=settings)
    lines: list[str] = []
    run = run_posteriordb(SNAPSHOT, [CENTERED], remedies=["target"], progress=lines.append, **common)
    entry = run.to_json()["posteriors"][CENTERED]
    rungs = entry["remedies"]
    assert [r["rung"] for r in rungs] == ["at target 0.9", "at target 0.95", "at target 0.99", "at target 0.999"][:len(rungs)]
    assert len(rungs) >= 2 and "divergent transition" in rungs[0]["findings"], rungs
    assert all(r["backends"] == ["numpyro", "pymc"] for r in rungs)  # every backend at every rung
    assert rungs[1]["reason"].startswith("at target 0.9: ") and entry["remedies_enabled"] is True
    assert entry["reason"].startswith("at target 0.9: ") and " -> all backends at target 0.9" in entry["reason"]
    assert any(line.startswith(f"{CENTERED}: remedies: at target 0.9: ") for line in lines)
    assert any(f"{CENTERED} on numpyro (target95): ok" in line for line in lines)
    keys = {key.split("|")[3] for key, _ in read_ledger(tmp_path / "posteriordb-ledger.jsonl").entries}
    assert {db.SCENARIO, f"{db.SCENARIO}-target95"} <= keys
    assert run.grid["rounds"] == len(rungs) and run.grid["fits_run"] == 2 * len(rungs)

    again = run_posteriordb(SNAPSHOT, [CENTERED], remedies=["target"], **common)
    assert again.grid["fits_run"] == 0 and again.grid["fits_reused"] == 2 * len(rungs)
    assert again.to_json()["posteriors"][CENTERED]["remedies"] == rungs

    off = run_posteriordb(SNAPSHOT, [CENTERED], remedies=["none"], **common)
    saved = off.to_json()["posteriors"][CENTERED]
    assert off.grid["fits_run"] == 0 and len(saved["remedies"]) == 1 and saved["remedies_enabled"] is False
    assert saved["remedies_stopped"].startswith("remedies off (--remedies none); the ladder would try at target 0.95")
    assert saved["status"] == "inconclusive" or saved["status"] == entry["status"]
    with pytest.raises(UserError, match="--remedies parametrization does not apply to posteriordb"):
        run_posteriordb(SNAPSHOT, [CENTERED], remedies=["parametrization"], **common)
