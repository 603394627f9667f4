"""`polyppl compare` end to end, as a user runs it: real backends in their own processes.

Each verdict is produced by a real comparison and sets its exit code: ``agree`` (0) for
correct backends, ``disagree`` (1) for a backend given a subtly different model, and
``inconclusive`` (3) for backends that did not converge or did not finish. A finished fit
is reused only when its whole request is unchanged: editing the data or the model between
two runs gives the new answer.

Correct backends are compared at the family-wise false-alarm rate that each such test
declares (``--alpha`` FAMILY_ALPHA, tests/stat_tolerance.py): each ``agree``
assertion here fails by chance with probability at most that (Holm over every test of the
comparison; measured calibration in test_agreement.py). Every exit code asserted is the
one expected, never a choice of two.
"""

import json
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from conftest import HAVE_CMDSTAN, STAN_ENGINES
from stat_tolerance import FAMILY_ALPHA

#: Enough for the convergence checks (bulk and tail ESS of 100 a chain) on every model here;
#: the verdicts' false-alarm rates do not depend on the run length (they use the MCSEs).
FAST = ["--chains", "4", "--draws", "500", "--tune", "500"]
#: Short runs for what is not about convergence; the remedies ladder, which would lengthen
#: their chains, is tested in test_remedies.py.
SMALL = ["--chains", "2", "--draws", "300", "--tune", "300", "--remedies", "none"]
STRICT = ["--alpha", repr(FAMILY_ALPHA)]
TESTS = Path(__file__).resolve().parent


def polyppl(*args, cwd, env=None, timeout=1200):
    return subprocess.run([sys.executable, "-m", "polyppl.cli", *map(str, args)], capture_output=True, text=True,
                          cwd=cwd, env={**os.environ, **(env or {})}, timeout=timeout)


@pytest.fixture(scope="module")
def exact_comparison(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("compare")
    proc = polyppl("compare", "beta-binomial", "--scenario", "four-variants", "--reference", "exact",
                   *FAST, *STRICT, "--seed", "3", "--out", tmp / "out", "--json", tmp / "cmp.json", cwd=tmp)
    return tmp, proc


@pytest.mark.false_alarm(FAMILY_ALPHA)
def test_correct_backends_agree_with_each_other_and_the_exact_posterior(exact_comparison):
    tmp, proc = exact_comparison
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    for heading in ("Decisions", "Diagnostics", "Speed", "Agreement", "VERDICT: AGREE"):
        assert heading in proc.stdout
    assert "P(B beats A)" in proc.stdout and "exact" in proc.stdout
    report = json.loads((tmp / "cmp.json").read_text())
    assert set(report) >= {"model", "scenario", "settings", "backends", "agreement", "problem"}
    assert set(report["backends"]) == {"pymc", "numpyro", "stan"}
    agreement = report["agreement"]
    assert agreement["family_alpha"] == FAMILY_ALPHA and agreement["verdict"] == "agree", agreement["reasons"]
    judged = {tuple(p["backends"]) for p in agreement["pairs"]}
    assert {("pymc", "exact"), ("numpyro", "exact"), ("stan", "exact")} <= judged
    for backend in ("pymc", "numpyro", "stan"):
        assert (tmp / "out" / f"beta-binomial-four-variants-{backend}-nuts.nc").exists()
        record = report["backends"][backend]
        assert record["status"] == "ok" and record["versions"] and record["request_hash"]
        assert record["diagnostics"]["divergences"] == 0, (backend, record["diagnostics"])
        assert record["timings"]["sampling_seconds"] > 0
        assert record["diagnostics"]["ess_bulk_per_second"] > 0
    assert report["backends"]["stan"]["engine"] == ("cmdstanpy" if HAVE_CMDSTAN else "pystan")


# The verdict is the previous test's, recomputed from the same fits: no chance of its own.
@pytest.mark.false_alarm(0)
def test_second_run_reuses_finished_fits(exact_comparison):
    tmp, _ = exact_comparison
    proc = polyppl("compare", "beta-binomial", "--scenario", "four-variants", "--reference", "exact",
                   *FAST, *STRICT, "--seed", "3", "--out", tmp / "out", cwd=tmp, timeout=300)
    assert proc.returncode == 0
    assert proc.stderr.count("reusing the finished run") == 3
    assert "same model, data, settings and versions" in proc.stderr


def test_edited_data_is_never_answered_from_an_old_run(tmp_path):
    """The user's report: edit the CSV between two runs, get the old posterior. Now the
    second run says the data changed and answers from the new data. One column and no
    reference: nothing to compare, so each run's verdict is inconclusive (exit 3) for that
    reason alone (at 4 x 500 draws the fit converges: no other reason), and its fit finished."""
    data, out = tmp_path / "ab.csv", tmp_path / "out"
    data.write_text("variant,trials,successes\nA,100,30\nB,100,50\n")
    first = polyppl("compare", "beta-binomial", "--data", data, "--backends", "stan", *FAST, "--out", out,
                    "--json", tmp_path / "first.json", cwd=tmp_path)
    assert first.returncode == 3 and "fewer than two finished sources" in first.stdout, \
        first.stdout[-2000:] + first.stderr[-2000:]
    data.write_text("variant,trials,successes\nA,100,90\nB,100,10\n")
    second = polyppl("compare", "beta-binomial", "--data", data, "--backends", "stan", *FAST, "--out", out,
                     "--json", tmp_path / "second.json", cwd=tmp_path)
    assert second.returncode == 3 and "fewer than two finished sources" in second.stdout, \
        second.stdout[-2000:] + second.stderr[-2000:]
    assert "reusing" not in second.stderr
    assert "running again: the data changed since the earlier run" in second.stderr
    reports = {name: json.loads((tmp_path / f"{name}.json").read_text()) for name in ("first", "second")}
    assert all(r["backends"]["stan"]["status"] == "ok" for r in reports.values())
    rates = {name: r["backends"]["stan"]["posterior"]["rates[A]"]["mean"] for name, r in reports.items()}
    assert rates["first"] < 0.45 and rates["second"] > 0.8, rates


EXAMPLE = Path(__file__).resolve().parents[1] / "examples" / "hierarchical_poisson.py"


@pytest.mark.false_alarm(FAMILY_ALPHA)
def test_a_user_model_from_a_file_goes_through_compare_and_a_changed_prior_reruns(tmp_path):
    """The README's hierarchical Poisson (examples/hierarchical_poisson.py) on all three
    backends with a report; then its prior edited: the backend runs again."""
    path = tmp_path / "models.py"
    shutil.copy(EXAMPLE, path)
    out = tmp_path / "out"
    proc = polyppl("compare", f"{path}:hierarchical_poisson", *FAST, *STRICT, "--out", out, cwd=tmp_path)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert "VERDICT: AGREE" in proc.stdout and "P(rate > 3): south" in proc.stdout
    assert (out / "hierarchical-poisson-data-report.html").exists()
    path.write_text(path.read_text().replace("s.Normal(0.0, 2.0)", "s.Normal(0.0, 0.5)"))
    again = polyppl("compare", f"{path}:hierarchical_poisson", "--backends", "stan", *FAST, "--out", out, cwd=tmp_path)
    assert "running again: the model changed since the earlier run" in again.stderr, again.stderr[-2000:]


# Missed when mu's gap of about 10 MCSEs falls under its Holm threshold (about 5): P(t_15 <
# 5 - 10) = 8e-5.
@pytest.mark.power(1e-4)
def test_a_subtly_different_backend_is_called_a_disagreement(tmp_path):
    """A backend whose compiler moves mu by about half a posterior sd (tests/skewed_backend.py),
    loaded as a plugin, against PyMC: compare says disagree, names mu, exits 1. Power at
    this shift: 30 of 30 comparisons at 4 x 1000 draws (test_agreement.py,
    POLYPPL_STAT_REPS=30); at 4 x 500 the shift of mu's mean is still about 10 MCSEs."""
    env = {"POLYPPL_BACKENDS": "skewed_backend:BACKEND", "PYTHONPATH": os.pathsep.join([str(TESTS), os.environ.get("PYTHONPATH", "")])}
    proc = polyppl("compare", "eight-schools", "--backends", "pymc,skewed", *FAST, "--out", tmp_path / "out",
                   cwd=tmp_path, env=env)
    assert proc.returncode == 1, proc.stdout[-3000:] + proc.stderr[-2000:]
    assert "VERDICT: DISAGREE" in proc.stdout
    assert "disagreement beyond Monte Carlo error: mu (pymc vs skewed)" in proc.stdout


def test_unconverged_backends_make_the_comparison_inconclusive(tmp_path):
    """Centered eight schools without warm-up does not converge (R-hat and ESS flags): no
    evidence either way, exit 3 (without remedies: they are tested in test_remedies.py)."""
    proc = polyppl("compare", "eight-schools", "--parametrization", "centered", "--backends", "stan",
                   "--chains", "4", "--tune", "0", "--draws", "100", "--remedies", "none", "--out", tmp_path / "out",
                   cwd=tmp_path)
    assert proc.returncode == 3, proc.stdout[-3000:] + proc.stderr[-2000:]
    assert "VERDICT: INCONCLUSIVE" in proc.stdout and "did not converge" in proc.stdout


@pytest.mark.skipif(not HAVE_CMDSTAN, reason="needs CmdStan for the cmdstanpy engine")
@pytest.mark.cmdstan
@pytest.mark.false_alarm(FAMILY_ALPHA)
def test_the_two_stan_engines_agree(tmp_path):
    """The same program run by PyStan and by CmdStan with the same seed: a check of the
    harness itself, which must say agree."""
    proc = polyppl("compare", "multilevel-logistic", "--backends", "stan:pystan,stan:cmdstanpy", *FAST, *STRICT,
                   "--out", tmp_path / "out", cwd=tmp_path)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-2000:]
    assert "stan:pystan" in proc.stdout and "stan:cmdstanpy" in proc.stdout and "VERDICT: AGREE" in proc.stdout


@pytest.mark.parametrize("stan_engine", STAN_ENGINES)
def test_crashed_and_hung_backends_are_recorded_and_others_kept(tmp_path, stan_engine):
    # A real crash: JAX aborts on an unknown XLA flag before NumPyro can sample.
    # A real hang, as far as the harness can tell: PyMC given far less time than it needs.
    out = tmp_path / "out"
    proc = polyppl("compare", "eight-schools", "--backends", "numpyro,stan", "--stan-engine", stan_engine,
                   "--timeout", "300", *SMALL, "--out", out, cwd=tmp_path, env={"XLA_FLAGS": "--no_such_xla_flag"})
    assert proc.returncode == 3
    assert "crashed" in proc.stdout and "VERDICT: INCONCLUSIVE" in proc.stdout
    numpyro = json.loads((out / "eight-schools-classic-numpyro-nuts.json").read_text())
    assert numpyro["status"] == "crashed" and "no_such_xla_flag" in numpyro["output_tail"]
    assert (out / "eight-schools-classic-stan-nuts.nc").exists()
    stan = json.loads((out / "eight-schools-classic-stan-nuts.json").read_text())
    assert stan["status"] == "ok" and stan["engine"] == stan_engine

    hung = polyppl("compare", "eight-schools", "--backends", "pymc", "--timeout", "1", "--force",
                   *SMALL, "--out", out, cwd=tmp_path)
    assert hung.returncode == 3
    assert json.loads((out / "eight-schools-classic-pymc-nuts.json").read_text())["status"] == "timeout"
    assert (out / "eight-schools-classic-stan-nuts.nc").exists(), "other backends' results stay on disk"


@pytest.mark.false_alarm(FAMILY_ALPHA)
def test_interrupted_comparison_resumes_where_it_stopped(tmp_path):
    """Ctrl-C while the second backend samples: the first fit stays on disk, the running
    child is stopped, and the same command afterwards reuses the finished fit."""
    out = tmp_path / "out"
    # As a terminal runs it: a test runner started in the background ignores SIGINT, and a
    # child would inherit that.
    as_in_a_terminal = ("import runpy, signal, sys; signal.signal(signal.SIGINT, signal.default_int_handler); "
                        "sys.argv[0] = 'polyppl'; runpy.run_module('polyppl.cli', run_name='__main__')")
    args = [sys.executable, "-c", as_in_a_terminal, "compare", "eight-schools", "--backends", "stan,pymc",
            *FAST, "--out", str(out)]
    proc = subprocess.Popen(args, cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    lines: list[str] = []
    reader = threading.Thread(target=lambda: lines.extend(iter(proc.stderr.readline, "")), daemon=True)
    reader.start()
    first = out / "eight-schools-classic-stan-nuts.nc"
    deadline = time.monotonic() + 900
    # Interrupt once the second backend's turn to sample has come (its progress line is out):
    # the first fit is on disk by then (a turn comes once every other fit waits or has ended).
    while not any("[2/2] pymc: running nuts" in line for line in lines) and time.monotonic() < deadline \
            and proc.poll() is None:
        time.sleep(0.2)
    assert first.exists(), "the first backend never finished"
    time.sleep(2.0)
    proc.send_signal(signal.SIGINT)
    proc.wait(timeout=120)
    reader.join(timeout=10)
    err = "".join(lines)
    proc.stdout.close()
    assert proc.returncode == 130, err[-2000:]
    assert "interrupted; finished results are kept" in err
    assert first.exists() and not (out / "eight-schools-classic-pymc-nuts.nc").exists()

    again = polyppl("compare", "eight-schools", "--backends", "stan,pymc", *FAST, *STRICT, "--out", out, cwd=tmp_path)
    # Both fits finish and converge at 4 x 500 draws; correct backends agree.
    assert again.returncode == 0, again.stdout[-2000:] + again.stderr[-2000:]
    assert json.loads((out / "eight-schools-classic-pymc-nuts.json").read_text())["status"] == "ok"
    assert "stan: reusing the finished run" in again.stderr
    assert (out / "eight-schools-classic-pymc-nuts.nc").exists()


def test_bad_input_names_what_is_wrong_and_writes_nothing(tmp_path):
    cases = [
        (["compare", "eight-schools", "--backends", "stan:jags"], "backend 'stan' has no engine 'jags'; it offers: cmdstanpy, pystan"),
        (["compare", "eight-schools", "--backends", "pymc:nutpie", "--chain-method", "vectorized"],
         "pymc (engine nutpie) cannot run chains 'vectorized'; it offers: auto, sequential, parallel"),
        (["compare", "multilevel-logistic", "--reference", "exact"], "--reference exact needs a model with an exact posterior"),
        (["compare", "no_such_file.py:model"], "no_such_file.py: no such file"),
    ]
    for args, message in cases:
        proc = polyppl(*args, "--out", tmp_path / "out", cwd=tmp_path, timeout=300)
        assert proc.returncode == 2 and message in proc.stderr and "Traceback" not in proc.stderr, (args, proc.stderr)
    assert not (tmp_path / "out").exists()


PROGRAM = Path(__file__).resolve().parents[1] / "examples" / "eight_schools.stan"


@pytest.mark.false_alarm(FAMILY_ALPHA)
def test_a_comparison_ends_with_a_recommendation_and_a_narrower_one_keeps_its_own_files(tmp_path):
    """A user's Stan program on NumPyro and Stan: the fits prepare at once and sample one at a
    time (no fit's turn to sample begins before the other's has ended); the last lines name
    the backend with the most bulk ESS per second, one fit and repeated fits, computed from
    the records as the JSON says, with its margin and noise; the report shows it first. A
    one-backend comparison into the same --out writes files of its own, the two-backend
    comparison and report stay as they were, and ``report`` finds either by its columns."""
    stan = "stan:cmdstanpy" if HAVE_CMDSTAN else "stan:pystan"
    out = tmp_path / "out"
    data = PROGRAM.with_suffix(".json")
    proc = polyppl("compare", PROGRAM, "--data", data, "--backends", f"numpyro,{stan}", *FAST, *STRICT,
                   "--remedies", "none", "--out", out, cwd=tmp_path)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    lines = proc.stderr.splitlines()
    assert "still running" not in proc.stderr
    # Both start (import, compile) before either samples; each turn ends before the next begins.
    turns = [next(i for i, line in enumerate(lines) if f"] {column}: running nuts" in line) for column in ("numpyro", stan)]
    ends = [next(i for i, line in enumerate(lines) if f"] {column}: ok: compile" in line) for column in ("numpyro", stan)]
    starts = [next(i for i, line in enumerate(lines) if f"] {column}: starting" in line) for column in ("numpyro", stan)]
    assert max(starts) < min(turns), lines
    first, second = sorted(range(2), key=lambda k: turns[k])
    assert turns[first] < ends[first] < turns[second] < ends[second], lines
    assert lines.index(next(line for line in lines if "numpyro: tracing the model" in line)) > turns[0]

    stem = f"eight_schools-eight_schools-numpyro+{stan.replace(':', '-')}"  # <program>-<data>-<columns>
    saved = json.loads((out / f"{stem}-comparison.json").read_text())
    recommendation = saved["recommendation"]
    rates = {r["column"]: r for r in recommendation["eligible"]}
    assert set(rates) == {"numpyro", stan} and not recommendation["excluded"]
    for column, rate in rates.items():
        record = saved["backends"][column]
        t, ess = record["timings"], record["diagnostics"]["ess_bulk_min"]
        assert rate["repeated_ess_per_second"] == pytest.approx(ess / (t["warmup_seconds"] + t["sampling_seconds"]))
        assert rate["one_fit_ess_per_second"] == pytest.approx(
            ess / (t["compile_seconds"] + t["warmup_seconds"] + t["sampling_seconds"]))
        assert 0 < rate["relative_se"] < 1
        assert record["turn_wait_seconds"] is not None and record["turn_wait_seconds"] >= 0
    for way, key in (("one_fit", "one_fit_ess_per_second"), ("repeated", "repeated_ess_per_second")):
        pick = recommendation["picks"][way]
        best, other = pick["best"], pick["runner_up"]
        assert rates[best][key] >= rates[other][key]
        assert pick["margin"] == pytest.approx(rates[best][key] / rates[other][key])
        assert pick["noise_factor"] >= 1.5 and pick["beyond_noise"] == (pick["margin"] > pick["noise_factor"])
    tail = proc.stdout.rstrip().splitlines()[-4:]  # the heading, two ways, the noise: the last lines
    assert tail[0].startswith("RECOMMENDATION (") and tail[-1].startswith("  noise: per-chain ESS spread"), tail
    assert tail[1].startswith(f"  one fit, compile included: {recommendation['picks']['one_fit']['best']} (")
    assert tail[2].startswith(f"  repeated fits, compile paid once: {recommendation['picks']['repeated']['best']} (")
    page = (out / f"{stem}-report.html").read_text()
    assert page.index("<h2>Recommendation</h2>") < page.index("<h2>Verdict</h2>")

    kept = {p.name: p.read_bytes() for p in out.glob(f"{stem}-*")}
    narrow = polyppl("compare", PROGRAM, "--data", data, "--backends", "numpyro", *FAST, "--remedies", "none",
                     "--out", out, cwd=tmp_path)
    assert narrow.returncode == 3 and "numpyro: reusing the finished run" in narrow.stderr, narrow.stderr[-2000:]
    assert "the only backend eligible" in narrow.stdout
    assert (out / "eight_schools-eight_schools-numpyro-comparison.json").exists()
    assert (out / "eight_schools-eight_schools-numpyro-report.html").exists()
    assert {p.name: p.read_bytes() for p in out.glob(f"{stem}-*")} == kept

    which = polyppl("report", "--out", out, cwd=tmp_path, timeout=300)
    assert which.returncode == 2 and f"--backends numpyro,{stan}" in which.stderr, which.stderr
    assert any(f"--backends numpyro{end}" in which.stderr for end in (";", "\n")), which.stderr
    rebuilt = polyppl("report", "--out", out, "--backends", f"{stan},numpyro", "--report", tmp_path / "r.html",
                      cwd=tmp_path, timeout=300)
    assert rebuilt.returncode == 0, rebuilt.stderr[-2000:]
    assert "<h2>Recommendation</h2>" in (tmp_path / "r.html").read_text()

    # A backend with divergent transitions or a failed fit is left out, with why.
    from dataclasses import replace

    from polyppl.studies.compare import load_comparison, recommend

    comparison = load_comparison(out, backends=["numpyro", stan])
    fit = comparison.outcomes["numpyro"]
    comparison.outcomes["numpyro"] = replace(fit, record=replace(
        fit.record, diagnostics=replace(fit.record.diagnostics, divergences=3)))
    left = recommend(comparison)
    assert left.excluded == {"numpyro": "3 divergent transitions"}
    assert [(p.best, p.runner_up) for p in left.picks] == [(stan, None), (stan, None)]
    comparison.outcomes[stan] = replace(comparison.outcomes[stan], record=comparison.outcomes[stan].record.failed(
        "timeout", "no result after 1 s"))
    assert recommend(comparison).lines()[0].startswith("RECOMMENDATION: none: no backend converged and agreed")
