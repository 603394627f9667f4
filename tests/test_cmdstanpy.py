"""What is particular to the cmdstanpy engine: compiled executables are cached by program,
CmdStan version and C++ compiler, so a second run in a new process does not compile; its
runs do not share output folders; and CmdStan's CSV files are read back exactly. (Every
other Stan test runs on both engines.)"""

import subprocess
import sys

import numpy as np
import pytest

from conftest import HAVE_CMDSTAN
from polyppl.backends.stan import compiler


PROGRAM = """
import json
from polyppl.backends import get_backend
from polyppl.models import get_model
builtin = get_model("eight-schools")
dataset = builtin.dataset()
compiled = get_backend("stan").compile(builtin.spec(None, dataset), dataset, engine="cmdstanpy")
print(json.dumps({"cached": compiled.compile_cached, "seconds": compiled.compile_seconds}))
"""


@pytest.mark.cmdstan
@pytest.mark.skipif(not HAVE_CMDSTAN, reason="no CmdStan install found (set CMDSTAN)")
def test_a_second_process_reuses_the_compiled_executable(tmp_path):
    env_cache = {"POLYPPL_CACHE": str(tmp_path / "cache")}
    import json
    import os

    runs = []
    for _ in range(2):
        proc = subprocess.run([sys.executable, "-c", PROGRAM], capture_output=True, text=True, timeout=900,
                              env={**os.environ, **env_cache})
        assert proc.returncode == 0, proc.stderr[-2000:]
        runs.append(json.loads(proc.stdout.strip().splitlines()[-1]))
    assert runs[0]["cached"] is False and runs[1]["cached"] is True
    assert runs[1]["seconds"] < runs[0]["seconds"] / 5, runs
    executables = list((tmp_path / "cache" / "cmdstan").glob("*/model"))
    assert len(executables) == 1


def _write_sampler_csv(path, rng, names, tune, draws):
    """A file laid out as CmdStan writes one with save_warmup: comments, the header, warm-up
    rows, the adaptation's comments, sampling rows, the timing comments."""
    rows = rng.normal(size=(tune + draws, len(names)))
    rows[:, names.index("n_leapfrog__")] = rng.integers(1, 64, size=tune + draws)
    text = lambda block: "".join(",".join(repr(float(v)) for v in row) + "\n" for row in block)
    path.write_text("# stan_version_major = 2\n# method = sample (Default)\n" + ",".join(names) + "\n"
                    + text(rows[:tune]) + "# Adaptation terminated\n# Step size = 0.5\n# Diagonal elements:\n# 1, 1\n"
                    + text(rows[tune:]) + "#\n#  Elapsed Time: 0.01 seconds (Warm-up)\n#\n")
    return rows


@pytest.mark.parametrize("batch_bytes", [10, 2**25])
def test_sampler_csvs_are_read_exactly_whatever_the_batches(tmp_path, monkeypatch, batch_bytes):
    """Sampling rows to the last bit, by column (chain, draw), and the warm-up's leapfrog
    steps, whether the chains are parsed one at a time or together."""
    monkeypatch.setattr(compiler, "_CSV_BATCH_BYTES", batch_bytes)
    names = ("lp__", "n_leapfrog__", "mu", "theta[1]", "theta[2]")
    rng = np.random.default_rng(3)
    paths = [tmp_path / f"chain-{k}.csv" for k in range(3)]
    written = [_write_sampler_csv(path, rng, ["lp__", "n_leapfrog__", "mu", "theta.1", "theta.2"], 7, 5)
               for path in paths]
    columns, warmup_steps = compiler._read_sampler_csvs([str(p) for p in paths], names, tune=7)
    assert warmup_steps == sum(int(rows[:7, 1].sum()) for rows in written)
    for i, name in enumerate(names):
        np.testing.assert_array_equal(columns[name], np.stack([rows[7:, i] for rows in written]))


def test_sampler_csvs_of_unequal_chains_are_refused(tmp_path):
    names = ["lp__", "n_leapfrog__", "mu"]
    rng = np.random.default_rng(4)
    paths = [tmp_path / "a.csv", tmp_path / "b.csv"]
    _write_sampler_csv(paths[0], rng, names, 2, 5)
    _write_sampler_csv(paths[1], rng, names, 2, 4)
    with pytest.raises(RuntimeError, match="4 draws; the first chain has 5"):
        compiler._read_sampler_csvs([str(p) for p in paths], tuple(names), tune=2)
