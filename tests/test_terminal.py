"""A quiet terminal: what a command prints on stderr is polyppl's own (progress, errors);
the libraries' warnings and log records (ArviZ's FutureWarning, PyMC's and cmdstanpy's
INFO lines, Dask's dashboard port) do not reach the user, unless they ask with -W or
PYTHONWARNINGS."""

import logging
import os
import subprocess
import sys
import warnings

from polyppl.cli.terminal import quiet_libraries


class Collect(logging.Handler):
    def __init__(self):
        super().__init__(logging.DEBUG)
        self.messages = []

    def emit(self, record):
        self.messages.append(record.getMessage())


def test_quiet_libraries_silences_warnings_and_logs_then_restores(monkeypatch):
    monkeypatch.delenv("PYTHONWARNINGS", raising=False)
    monkeypatch.setattr(sys, "warnoptions", [])
    library = logging.getLogger("some_library")
    library.setLevel(logging.INFO)  # as PyMC and cmdstanpy set theirs
    collect = Collect()
    library.addHandler(collect)
    with warnings.catch_warnings(record=True) as shown:
        warnings.simplefilter("always")
        with quiet_libraries():
            warnings.warn("deprecated", FutureWarning)
            library.warning("shape validation failed")
            library.error("this one matters")
            assert os.environ["PYTHONWARNINGS"] == "ignore"  # for the processes a command starts
        assert shown == []
        assert "PYTHONWARNINGS" not in os.environ
        assert collect.messages == ["this one matters"]
        warnings.warn("after", UserWarning)  # restored on the way out
        assert [str(w.message) for w in shown] == ["after"]
    library.info("after")
    assert collect.messages == ["this one matters", "after"]
    library.removeHandler(collect)


def test_pythonwarnings_shows_them(monkeypatch):
    monkeypatch.setenv("PYTHONWARNINGS", "default")
    with warnings.catch_warnings(record=True) as shown:
        warnings.simplefilter("always")
        with quiet_libraries():
            warnings.warn("deprecated", FutureWarning)
    assert len(shown) == 1


def test_a_run_prints_only_polyppl_lines_on_stderr(tmp_path):
    """A real in-process run (NumPyro: JAX, ArviZ and xarray loaded and used here)."""
    env = {k: v for k, v in os.environ.items() if k != "PYTHONWARNINGS"}
    proc = subprocess.run(
        [sys.executable, "-m", "polyppl.cli", "run", "eight-schools", "--backends", "numpyro", "--chains", "2",
         "--draws", "100", "--tune", "100", "--out", str(tmp_path / "out")],
        capture_output=True, text=True, cwd=tmp_path, env=env, timeout=600)
    assert proc.returncode == 0, proc.stderr
    foreign = [line for line in proc.stderr.splitlines() if line.strip() and not line.startswith("polyppl")]
    assert not foreign, f"lines on stderr that are not polyppl's: {foreign}"


LIBRARY_LIKE = '''
import logging, warnings
from polyppl import spec as s

def tiny():
    # What libraries do on import and on use: a FutureWarning, a WARNING log record.
    warnings.warn("this argument is deprecated", FutureWarning)
    logging.getLogger("arviz").warning("Shape validation failed")
    model = s.Model("tiny", (s.Param("mu", s.Normal(0.0, 1.0)), s.Observed("y", s.Normal(s.Var("mu"), 1.0), ("i",))))
    return model, s.Dataset(values={"y": [0.1, -0.3]}, coords={"i": (0, 1)})
'''


def test_library_warnings_stay_off_the_terminal_unless_asked_for(tmp_path):
    """Through the real CLI in a subprocess; PYTHONWARNINGS brings them back."""
    (tmp_path / "mine.py").write_text(LIBRARY_LIKE)
    env = {k: v for k, v in os.environ.items() if k != "PYTHONWARNINGS"}
    argv = [sys.executable, "-m", "polyppl.cli", "show", "mine.py:tiny"]
    quiet = subprocess.run(argv, capture_output=True, text=True, cwd=tmp_path, env=env, timeout=300)
    assert quiet.returncode == 0, quiet.stderr
    assert quiet.stderr == ""
    loud = subprocess.run(argv, capture_output=True, text=True, cwd=tmp_path, env={**env, "PYTHONWARNINGS": "default"},
                          timeout=300)
    assert "FutureWarning: this argument is deprecated" in loud.stderr
    assert "Shape validation failed" in loud.stderr
