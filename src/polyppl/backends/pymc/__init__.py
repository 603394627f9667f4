"""PyMC: the spec becomes a ``pm.Model``; PyMC's own NUTS, nutpie's or NumPyro's runs it."""

import os
import sys
from pathlib import Path

from polyppl.backends.base import Backend, Engine

_PYMC = ("pymc", "pytensor")


def _own_compiledir(directory: Path) -> None:
    """PyTensor's C modules go to a cache directory of this worker's own. Processes sharing
    one take turns on its lock for whole compiles, and one that waits longer than
    ``compile__timeout`` (120 s; several compiles of a loaded machine) fails. The directory
    starts as a copy of the shared cache (``~/.pytensor`` or PYTENSOR_FLAGS' base_compiledir),
    so a worker compiles only what that lacked. Only before PyTensor is imported (it reads
    the setting once)."""
    if "pytensor" in sys.modules:
        return
    flags = os.environ.get("PYTENSOR_FLAGS", "")
    own = directory / "pytensor"
    if not own.exists():
        _copy_cache(_shared_compiledir(flags), own)
    os.environ["PYTENSOR_FLAGS"] = ",".join(filter(None, [flags, f"base_compiledir={own}"]))


def _shared_compiledir(flags: str) -> Path:
    for flag in flags.split(","):
        name, _, value = flag.partition("=")
        if name.strip() == "base_compiledir" and value.strip():
            return Path(value.strip())
    return Path.home() / ".pytensor"


def _copy_cache(source: Path, target: Path) -> None:
    """Copy ``source`` to ``target`` through a temporary folder renamed at the end; files
    that vanish or fail to copy (another process at work in the cache) are left out, and
    PyTensor compiles again whatever is missing or unreadable."""
    import shutil
    import tempfile

    partial = Path(tempfile.mkdtemp(prefix=".pytensor-copy-", dir=target.parent))
    if source.is_dir():
        try:
            shutil.copytree(source, partial, dirs_exist_ok=True, ignore=shutil.ignore_patterns("lock_dir", "*.lock"))
        except shutil.Error:
            pass
    partial.rename(target)


BACKEND = Backend(
    name="pymc",
    engines=(
        Engine("pymc", "PyMC's own NUTS (chains in processes); ADVI (pm.fit) and Pathfinder (pymc-extras)",
               methods=("nuts", "advi", "fullrank", "pathfinder"), packages=(*_PYMC, "pymc-extras"),
               inits=("default", "advi", "pathfinder", "uniform"),
               # Optional, so that installing polyppl never moves a user's PyMC: pymc-extras
               # releases cap the PyMC they accept (0.15: below 6.4). uv.lock installs it.
               optional={"pathfinder": ("pymc-extras", "its releases accept only some PyMC versions")}),
        Engine("nutpie", "nutpie's NUTS (Rust) on the model compiled by Numba", packages=(*_PYMC, "nutpie", "numba"),
               inits=("default",)),
        Engine("numpyro", "NumPyro's NUTS on the model compiled to JAX", packages=(*_PYMC, "numpyro", "jax", "jaxlib"),
               chain_methods=("auto", "parallel", "vectorized"), single_core_chains="vectorized"),
    ),
    compiler="polyppl.backends.pymc.compiler",
    prepare_worker=_own_compiledir,
)
