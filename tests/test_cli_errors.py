"""Bad input gets a clear error: file, line, column and value; exit code 2; no traceback;
nothing written. These run the real CLI in a subprocess, as a user would."""

import subprocess
import sys

import pytest

BB = "variant,trials,successes\n"
ML = "group,treated,trials,successes\n"
ROWS = "group,treated,success\n"
ES = "school,effect,stderr\n"

# (model, CSV text, fragments the message must contain)
CSV_CASES = [
    ("beta-binomial", "variant,trials\nA,10\n", ["line 1", "missing column 'successes'"]),
    ("beta-binomial", "variant,trials,successes,extra\nA,1,1,1\n", ["unknown column 'extra'"]),
    ("beta-binomial", BB + "A,10,3\nB,ten,5\n", ["line 3", "'trials'", "'ten'", "not a number"]),
    ("beta-binomial", BB + "A,10,3.5\nB,10,5\n", ["line 2", "'successes'", "'3.5'", "whole number"]),
    ("beta-binomial", BB + "A,10,-1\nB,10,5\n", ["line 2", "'-1'", "below 0"]),
    ("beta-binomial", BB + "A,10,11\nB,10,5\n", ["line 2", "'11'", "above the 10 trials"]),
    ("beta-binomial", BB + "A,0,0\nB,10,5\n", ["line 2", "'trials'", "zero"]),
    ("beta-binomial", BB + "A,10,\nB,10,5\n", ["line 2", "'successes'", "empty"]),
    ("beta-binomial", BB + "A,10,nan\nB,10,5\n", ["line 2", "'nan'", "NaN"]),
    ("beta-binomial", BB + "A,10,3\nA,10,5\n", ["line 3", "'A'", "repeats", "line 2"]),
    ("beta-binomial", BB + "A,10,3\n", ["at least two"]),
    ("beta-binomial", "", ["empty"]),
    ("multilevel-logistic", ML + "X,0,10,3\nX,1,10,4\nY,2,10,3\nY,1,10,3\n", ["line 4", "'treated'", "'2'", "0 or 1"]),
    ("multilevel-logistic", ML + "X,0,10,3\nX,1,10,4\n", ["at least two groups"]),
    ("multilevel-logistic", ML + "X,0,10,3\nX,1,10,4\nY,0,10,3\n", ["'Y'", "no treated"]),
    ("multilevel-logistic", ROWS + "X,0,1\nX,1,0\nY,0,1\nY,1,3\n", ["line 5", "'success'", "'3'"]),
    ("multilevel-logistic", ML + "X,0,10,3\nX,0,10,4\nY,0,10,3\nY,1,10,3\n", ["line 3", "repeats"]),
    ("eight-schools", ES + "A,28,15\nB,8,0\n", ["line 3", "'stderr'", "'0'", "positive"]),
    ("eight-schools", ES + "A,28,15\nB,8,-2\n", ["line 3", "'-2'"]),
    ("eight-schools", ES + "A,x,15\nB,8,2\n", ["line 2", "'effect'", "'x'"]),
]


def polyppl(*args, cwd):
    return subprocess.run([sys.executable, "-m", "polyppl.cli", *args], capture_output=True, text=True, cwd=cwd, timeout=300)


def assert_clean_error(proc, fragments, out_dir):
    assert proc.returncode == 2, proc.stderr
    assert "Traceback" not in proc.stderr
    for fragment in fragments:
        assert fragment in proc.stderr, f"{fragment!r} not in {proc.stderr!r}"
    assert not out_dir.exists(), "nothing may be written on bad input"


@pytest.mark.parametrize("model,text,fragments", CSV_CASES)
def test_bad_csv(tmp_path, model, text, fragments):
    path = tmp_path / "data.csv"
    path.write_text(text)
    proc = polyppl("run", model, "--backends", "numpyro", "--data", str(path), "--out", str(tmp_path / "out"), cwd=tmp_path)
    assert_clean_error(proc, [str(path), *fragments], tmp_path / "out")


@pytest.mark.parametrize(
    "args,fragments",
    [
        (["run", "no-such-model", "--backends", "stan"], ["unknown model 'no-such-model'", "beta-binomial"]),
        (["run", "beta-binomial", "--backends", "jags"], ["unknown backend 'jags'", "pymc, numpyro, stan"]),
        (["run", "beta-binomial", "--backends", "stan", "--scenario", "five"], ["unknown scenario", "four-variants"]),
        (["run", "beta-binomial", "--backends", "stan", "--parametrization", "odd"], ["unknown parametrization", "positive"]),
        (["run", "beta-binomial", "--backends", "stan", "--chains", "0"], ["--chains", "at least 1"]),
        (["run", "beta-binomial", "--backends", "stan", "--draws", "-5"], ["--draws", "at least 1"]),
        (["run", "beta-binomial", "--backends", "stan", "--data", "missing.csv"], ["missing.csv", "no such file"]),
        (["run", "eight-schools", "--backends", "pymc", "--pymc-sampler", "nutpie", "--chain-method", "vectorized"],
         ["nutpie", "cannot run chains 'vectorized'"]),
    ],
)
def test_bad_options(tmp_path, args, fragments):
    proc = polyppl(*args, "--out", str(tmp_path / "out"), cwd=tmp_path)
    assert_clean_error(proc, fragments, tmp_path / "out")


def test_models_lists_models_and_scenarios(tmp_path):
    proc = polyppl("models", cwd=tmp_path)
    assert proc.returncode == 0
    for name in ("beta-binomial", "four-variants", "small-a", "two-variants", "multilevel-logistic", "eight-schools", "noncentered"):
        assert name in proc.stdout
