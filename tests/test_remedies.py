"""The remedies ladder climbed by real backends, as a user meets it in ``polyppl compare``
and ``polyppl run``: a centered funnel rescued by the non-centered form, an improper
posterior that no rung rescues, a short run given longer chains, ``--remedies none`` as
before, and a ladder resumed half-way. Seeds are fixed; each run is deterministic on a
given set of package versions, so the rungs climbed are those asserted.

The decisions alone (which rung follows which findings) are tested without sampling in
test_remedies_ladder.py.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys

from conftest import HAVE_CMDSTAN, REPO

#: Stan's engine here: CmdStan where installed (seconds to compile), else PyStan.
STAN = "stan:cmdstanpy" if HAVE_CMDSTAN else "stan:pystan"
STAN_FILE = STAN.replace(":", "-")
#: Long enough that the non-centered eight schools is clean on every backend.
FAST = ["--chains", "4", "--draws", "500", "--tune", "500"]
STRICT = ["--alpha", "0.001"]


def polyppl(*args, cwd, timeout=1800):
    return subprocess.run([sys.executable, "-m", "polyppl.cli", *map(str, args)], capture_output=True, text=True,
                          cwd=cwd, env=dict(os.environ), timeout=timeout)


def test_a_centered_funnel_climbs_the_ladder_to_the_noncentered_form_agrees_and_resumes(tmp_path):
    """Centered eight schools diverges on NumPyro and Stan at target 0.9, still at 0.95 and
    0.99; the non-centered form at 0.99 is clean and the backends agree (exit 0). Every
    rung's fits stay on disk under their own names; with the last rung's Stan fit deleted
    (a ladder stopped half-way), the same command reuses the seven other fits and runs that
    one again, to the same verdict."""
    out = tmp_path / "out"
    args = ["compare", "eight-schools", "--parametrization", "centered", "--backends", f"numpyro,{STAN}", *FAST,
            *STRICT, "--out", out]
    proc = polyppl(*args, cwd=tmp_path)
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-3000:]
    assert "VERDICT: AGREE\n  - after remedies: at target 0.9: numpyro " in proc.stdout
    assert "-> all backends at target 0.99, non-centered: no divergences, converged -> AGREE" in proc.stdout
    saved = json.loads((out / f"eight-schools-classic-numpyro+{STAN_FILE}-comparison.json").read_text())
    rungs = saved["remedies"]
    assert [r["rung"] for r in rungs] == ["at target 0.9", "at target 0.95", "at target 0.99",
                                          "at target 0.99, non-centered"]
    assert [r["verdict"] for r in rungs] == ["inconclusive", "inconclusive", "inconclusive", "agree"]
    assert rungs[0]["reason"] is None and "divergent transition" in rungs[1]["reason"]
    assert all(r["backends"] == ["numpyro", STAN] for r in rungs)
    assert saved["remedies_stopped"] is None and saved["parametrization"] == "noncentered"
    assert saved["settings"]["target_accept"] == 0.99 and saved["agreement"]["verdict"] == "agree"
    for record in saved["backends"].values():
        assert record["diagnostics"]["divergences"] == 0 and not record["diagnostics"]["flags"]
    stems = [f"eight-schools-classic-{column}-nuts{suffix}" for column in ("numpyro", STAN_FILE)
             for suffix in ("", "-target95", "-target99", "-noncentered-target99")]
    assert all((out / f"{stem}.nc").exists() for stem in stems), sorted(p.name for p in out.iterdir())
    assert saved["files"] == {"numpyro": stems[3], STAN: stems[7]}

    for suffix in (".nc", ".json"):
        (out / f"{stems[7]}{suffix}").unlink()
    again = polyppl(*args, cwd=tmp_path)
    assert again.returncode == 0, again.stdout[-3000:] + again.stderr[-3000:]
    assert again.stderr.count("reusing the finished run") == 7, again.stderr[-3000:]
    assert f"[2/2] {STAN}: running nuts" in again.stderr and "VERDICT: AGREE" in again.stdout


def test_an_improper_posterior_is_not_rescued_and_the_verdict_names_the_last_rung(tmp_path):
    """Two groups with a flat prior on their scale: an improper posterior, which samples
    without error. No rung can fix it: the comparison is inconclusive, and says which rung
    was tried last and which backend failed it."""
    path = tmp_path / "improper.py"
    path.write_text(IMPROPER)
    out = tmp_path / "out"
    # One backend keeps it cheap: the verdict's reason about the ladder is what is tested.
    proc = polyppl("compare", f"{path}:two_groups", "--backends", STAN, "--chains", "2", "--draws", "200",
                   "--tune", "200", "--out", out, cwd=tmp_path)
    assert proc.returncode == 3, proc.stdout[-4000:] + proc.stderr[-3000:]
    assert "VERDICT: INCONCLUSIVE" in proc.stdout and "no remedy rescued it: the last rung tried (at target" in proc.stdout
    saved = json.loads((out / f"two-groups-data-{STAN_FILE}-comparison.json").read_text())
    last = saved["remedies"][-1]
    assert len(saved["remedies"]) > 1 and saved["remedies_stopped"]
    reasons = " ".join(saved["agreement"]["reasons"])
    assert f"the last rung tried ({last['rung']}) left {STAN} " in reasons and f"a finding about {STAN}" in reasons


IMPROPER = '''
import numpy as np

from polyppl import spec as s


def two_groups():
    model = s.Model("two-groups", (
        s.Data("sigma", "real", ("school",), lower=0.0),
        s.Param("mu", s.Normal(0.0, 10.0)),
        s.Param("tau", s.HalfFlat()),
        s.Param("theta", s.Normal(s.Var("mu"), s.Var("tau")), ("school",)),
        s.Observed("y", s.Normal(s.Var("theta"), s.Var("sigma")), ("school",)),
    ))
    return s.noncentered(model, ["theta"]), s.Dataset({"y": np.array([28.0, 8.0]), "sigma": np.array([15.0, 10.0])},
                                                      {"school": ("A", "B")})
'''


def test_remedies_none_keeps_a_flagged_run_as_it_was(tmp_path):
    """Without remedies, centered eight schools with no warm-up stays one rung: inconclusive
    (R-hat and ESS), no other fit written; the ladder's would-be next step is named."""
    out = tmp_path / "out"
    proc = polyppl("compare", "eight-schools", "--parametrization", "centered", "--backends", STAN, "--chains", "4",
                   "--tune", "0", "--draws", "100", "--remedies", "none", "--out", out, cwd=tmp_path)
    assert proc.returncode == 3, proc.stdout[-3000:] + proc.stderr[-2000:]
    assert "VERDICT: INCONCLUSIVE" in proc.stdout and "did not converge" in proc.stdout
    assert "after remedies" not in proc.stdout and "no remedy rescued it" not in proc.stdout
    assert "stopped: remedies off (--remedies none)" in proc.stdout
    assert sorted(p.name for p in out.glob("*.nc")) == [f"eight-schools-classic-{STAN_FILE}-nuts.nc"]
    saved = json.loads((out / f"eight-schools-classic-{STAN_FILE}-comparison.json").read_text())
    assert len(saved["remedies"]) == 1 and saved["remedies_enabled"] is False


def test_a_short_run_gets_longer_chains_sized_from_its_ess(tmp_path):
    """``polyppl run`` with 100 draws a chain: too few effective draws (ESS flags, no
    divergences) -> one rung of longer chains, sized from the ESS per draw observed, which
    is clean. Without remedies, the same run names the draws it would need."""
    out = tmp_path / "out"
    short = ["run", "eight-schools", "--backends", STAN, "--chains", "4", "--tune", "500", "--draws", "100",
             "--out", out]
    proc = polyppl(*short, cwd=tmp_path)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-2000:]
    assert "1. at target 0.95: stan" in proc.stdout and "ESS" in proc.stdout and "< 400 (100 per chain)" in proc.stdout
    assert "2. again at target 0.95, 4 chains x " in proc.stdout and "no divergences, converged -> CLEAN" in proc.stdout
    draws = int(proc.stdout.split("4 chains x ")[1].split(" draws")[0])
    assert 200 <= draws <= 1000
    assert (out / f"eight-schools-classic-{STAN_FILE}-nuts-draws{draws}.nc").exists()
    assert (out / f"eight-schools-classic-{STAN_FILE}-nuts.nc").exists()

    off = polyppl(*short, "--remedies", "none", cwd=tmp_path)
    assert off.returncode == 0
    assert f"the ESS per draw observed asks for about {draws} draws per chain (--draws {draws})" in off.stdout


def test_a_centered_stan_program_climbs_to_its_offset_multiplier_form(tmp_path):
    """posteriordb's centered eight schools as a Stan program diverges at target 0.9 on
    NumPyro and Stan; its other form is the program rewritten with ``<offset, multiplier>``,
    checked against Stan's own log density before it samples, and run by Stan as text: clean
    on both, AGREE (exit 0). Without the NumPyro replay of parameter-bounded supports its theta
    draws were off by several sds and this ended DISAGREE."""
    data = REPO / "tests" / "data" / "posteriordb"
    out = tmp_path / "out"
    proc = polyppl("compare", data / "eight_schools_centered.stan", "--data", data / "eight_schools.json.zip",
                   "--remedies", "parametrization", "--backends", f"numpyro,{STAN}", *FAST, *STRICT, "--out", out,
                   cwd=tmp_path)
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-3000:]
    assert "checking the translation of the noncentered program" in proc.stderr
    assert "-> all backends at target 0.9, non-centered: no divergences, converged -> AGREE" in proc.stdout
    saved = json.loads((out / f"eight_schools_centered-eight_schools-numpyro+{STAN_FILE}-comparison.json").read_text())
    assert [r["rung"] for r in saved["remedies"]] == ["at target 0.9", "at target 0.9, non-centered"]
    assert saved["parametrization"] == "noncentered" and saved["agreement"]["verdict"] == "agree"
    assert saved["files"][STAN] == f"eight_schools_centered-eight_schools-{STAN_FILE}-nuts-noncentered"
