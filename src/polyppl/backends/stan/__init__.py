"""Stan: the spec becomes a Stan program (``program.py``), run by CmdStan through cmdstanpy
when an install is found, else by PyStan 3 (httpstan ships Stan; nothing is downloaded).

Finding CmdStan here does not import cmdstanpy: it follows cmdstanpy's own rules (the
``CMDSTAN`` variable, else the newest ``~/.cmdstan/cmdstan-*``), so that the CLI can choose
and check the engine in a fraction of a second.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from functools import lru_cache
from pathlib import Path

from polyppl.backends.base import Backend, Engine


def cmdstan_path() -> Path | None:
    """The CmdStan install cmdstanpy would use, or None. Never downloads."""
    candidates = []
    if os.environ.get("CMDSTAN"):
        candidates.append(Path(os.environ["CMDSTAN"]))
    else:
        home = Path.home() / ".cmdstan"
        if home.is_dir():
            candidates += sorted(home.glob("cmdstan-*"), key=_version_key, reverse=True)
        if os.environ.get("CONDA_PREFIX"):
            candidates.append(Path(os.environ["CONDA_PREFIX"]) / "bin" / "cmdstan")
    return next((p for p in candidates if (p / "makefile").is_file()), None)


def _version_key(path: Path) -> tuple[int, ...]:
    return tuple(int(x) for x in re.findall(r"\d+", path.name)[:3])


def cmdstan_version() -> str | None:
    path = cmdstan_path()
    if path is None:
        return None
    found = re.search(r"CMDSTAN_VERSION\s*:=\s*(\S+)", (path / "makefile").read_text(errors="replace"))
    return found.group(1) if found else path.name.removeprefix("cmdstan-")


@lru_cache(maxsize=None)
def cxx_version() -> str:
    """The first line of the C++ compiler's ``--version``: CmdStan's executables depend on it."""
    cxx = shutil.which(os.environ.get("CXX", "g++")) or shutil.which("c++")
    if cxx is None:
        return "none"
    return subprocess.run([cxx, "--version"], capture_output=True, text=True).stdout.partition("\n")[0]


def _cmdstan_missing() -> str | None:
    if cmdstan_path() is None:
        return ("no CmdStan install was found: set CMDSTAN to one, or install one with "
                "`uv run python -c 'import cmdstanpy; cmdstanpy.install_cmdstan()'`")
    return None


def _cmdstan_tools() -> dict[str, str]:
    return {"cmdstan": cmdstan_version() or "none", "cxx": cxx_version()}


def choose_engine() -> str:
    """``auto``: cmdstanpy where CmdStan is installed, else PyStan."""
    return "cmdstanpy" if cmdstan_path() else "pystan"


BACKEND = Backend(
    name="stan",
    engines=(
        Engine("cmdstanpy", "CmdStan through cmdstanpy (draws in CSV files): NUTS, ADVI, Pathfinder",
               methods=("nuts", "advi", "fullrank", "pathfinder"), packages=("cmdstanpy",),
               inits=("default", "advi", "pathfinder", "uniform"), unavailable=_cmdstan_missing, tools=_cmdstan_tools),
        # PyStan 3 exposes NUTS only: httpstan has no variational or Pathfinder service, and it
        # always runs chains in its own process pool.
        Engine("pystan", "PyStan 3 / httpstan (Stan inside the wheel)", packages=("pystan", "httpstan"),
               chain_methods=("auto", "parallel"), single_core_chains="auto"),
    ),
    compiler="polyppl.backends.stan.compiler",
    choose_auto=choose_engine,
)
