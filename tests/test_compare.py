"""`polyppl compare` end to end, as a user runs it: real backends in their own processes."""

import json
import os
import subprocess
import sys

import pytest

FAST = ["--chains", "4", "--draws", "1000", "--tune", "1000"]


def polyppl(*args, cwd, env=None, timeout=900):
    return subprocess.run([sys.executable, "-m", "polyppl.cli", *args], capture_output=True, text=True,
                          cwd=cwd, env={**os.environ, **(env or {})}, timeout=timeout)


@pytest.fixture(scope="module")
def exact_comparison(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("compare")
    proc = polyppl("compare", "beta-binomial", "--scenario", "four-variants", "--reference", "exact",
                   *FAST, "--seed", "3", "--out", str(tmp / "out"), "--json", str(tmp / "cmp.json"), cwd=tmp)
    return tmp, proc


def test_compare_prints_tables_and_writes_json(exact_comparison):
    tmp, proc = exact_comparison
    assert proc.returncode == 0, proc.stderr[-3000:]
    for heading in ("Decisions", "Diagnostics", "Speed", "Agreement", "VERDICT"):
        assert heading in proc.stdout
    assert "prob_beats[B>C]" in proc.stdout and "exact" in proc.stdout
    report = json.loads((tmp / "cmp.json").read_text())
    assert set(report) >= {"model", "scenario", "settings", "backends", "agreement"}
    assert set(report["backends"]) == {"pymc", "numpyro", "stan"}
    agreement = report["agreement"]
    assert agreement["family_alpha"] == 0.01
    assert {"quantity", "backends", "statistic", "z", "agree"} <= set(agreement["pairs"][0])
    # The backends run the same model as the exact posterior: they must not "disagree".
    assert agreement["verdict"] in ("agree", "inconclusive"), agreement["reasons"]
    judged = {tuple(p["backends"]) for p in agreement["pairs"]}
    assert {("pymc", "exact"), ("numpyro", "exact"), ("stan", "exact")} <= judged
    for backend in ("pymc", "numpyro", "stan"):
        assert (tmp / "out" / f"beta-binomial-four-variants-{backend}.nc").exists()
        record = report["backends"][backend]
        assert record["status"] == "ok" and record["versions"]
        assert record["timings"]["sampling_seconds"] > 0
        assert record["diagnostics"]["ess_bulk_per_second"] > 0


def test_second_run_reuses_finished_runs(exact_comparison):
    tmp, _ = exact_comparison
    proc = polyppl("compare", "beta-binomial", "--scenario", "four-variants", "--reference", "exact",
                   *FAST, "--seed", "3", "--out", str(tmp / "out"), cwd=tmp, timeout=300)
    assert proc.returncode == 0
    assert proc.stderr.count("reusing the finished run") == 3


def test_crashed_and_hung_backends_are_recorded_and_others_kept(tmp_path):
    # A real crash: JAX aborts on an unknown XLA flag before NumPyro can sample.
    # A real hang, as far as the harness can tell: PyMC given far less time than it needs.
    out = tmp_path / "out"
    proc = polyppl("compare", "eight-schools", "--backends", "numpyro,stan,pymc", "--timeout", "60",
                   *FAST, "--out", str(out), cwd=tmp_path, env={"XLA_FLAGS": "--no_such_xla_flag"})
    assert proc.returncode == 1
    assert "crashed" in proc.stdout and "VERDICT: INCONCLUSIVE" in proc.stdout
    numpyro = json.loads((out / "eight-schools-classic-numpyro.json").read_text())
    assert numpyro["status"] == "crashed" and "no_such_xla_flag" in numpyro["output_tail"]
    assert (out / "eight-schools-classic-stan.nc").exists()
    assert json.loads((out / "eight-schools-classic-stan.json").read_text())["status"] == "ok"

    hung = polyppl("compare", "eight-schools", "--backends", "pymc", "--timeout", "1", "--force",
                   *FAST, "--out", str(out), cwd=tmp_path)
    assert hung.returncode == 1
    assert json.loads((out / "eight-schools-classic-pymc.json").read_text())["status"] == "timeout"
    assert (out / "eight-schools-classic-stan.nc").exists(), "other backends' results stay on disk"


def test_interrupted_comparison_resumes_where_it_stopped(tmp_path):
    """Ctrl-C while the second backend samples: the first run stays on disk, the running
    child is stopped, and the same command afterwards reuses the finished run."""
    import signal
    import time

    out = tmp_path / "out"
    args = [sys.executable, "-m", "polyppl.cli", "compare", "eight-schools", "--backends", "stan,pymc",
            *FAST, "--out", str(out)]
    proc = subprocess.Popen(args, cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    first = out / "eight-schools-classic-stan.nc"
    deadline = time.monotonic() + 600
    while not first.exists() and time.monotonic() < deadline and proc.poll() is None:
        time.sleep(0.2)
    assert first.exists(), "the first backend never finished"
    time.sleep(1.0)  # the second backend's worker is running now
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 130, err[-2000:]
    assert "interrupted; finished results are kept" in err
    assert first.exists() and not (out / "eight-schools-classic-pymc.nc").exists()

    again = polyppl("compare", "eight-schools", "--backends", "stan,pymc", *FAST, "--out", str(out), cwd=tmp_path)
    assert again.returncode == 0, again.stderr[-2000:]
    assert "stan: reusing the finished run" in again.stderr
    assert (out / "eight-schools-classic-pymc.nc").exists()
