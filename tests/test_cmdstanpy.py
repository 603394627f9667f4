"""What is particular to the cmdstanpy engine: compiled executables are cached by program,
CmdStan version and C++ compiler, so a second run in a new process does not compile; and
its runs do not share output folders. (Every other Stan test runs on both engines.)"""

import subprocess
import sys

import pytest

from conftest import HAVE_CMDSTAN

pytestmark = [pytest.mark.cmdstan, pytest.mark.skipif(not HAVE_CMDSTAN, reason="no CmdStan install found (set CMDSTAN)")]

PROGRAM = """
import json
from polyppl.backends import get_backend
from polyppl.models import get_model
builtin = get_model("eight-schools")
dataset = builtin.dataset()
compiled = get_backend("stan").compile(builtin.spec(None, dataset), dataset, engine="cmdstanpy")
print(json.dumps({"cached": compiled.compile_cached, "seconds": compiled.compile_seconds}))
"""


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
