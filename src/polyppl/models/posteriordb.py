"""posteriordb as a front end: its posteriors (a Stan program with its data, and for some a
reference posterior), read from a local snapshot and imported as :class:`Problem` s.

posteriordb (Magnusson, Bürkner, Vehtari et al., https://github.com/stan-dev/posteriordb,
BSD 3-Clause licence, LICENCE.md in the snapshot) is the shared test suite of samplers: each
posterior (``posteriors/NAME.json``) names a model (``models/stan/MODEL.stan``), a data set
(``data/data/DATA.json.zip``) and, where one was computed, a reference posterior
(``reference_posteriors/draws/draws/NAME.json.zip``: a list of chains, each a mapping from
Stan's name of a scalar quantity, ``theta[1]``, to its draws; 10 chains of 1,000 draws
thinned from long rstan runs).

Importing a posterior turns its Stan program and data into a spec model
(:func:`import_posterior`) through the Stan front end (``models/stan_program``); a program
outside its subset is unsupported, naming the construct and its line.
"""

from __future__ import annotations

import json
import os
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from polyppl.errors import UserError
from polyppl.models.base import Labels, Problem
from polyppl.models.stan_program import stan_program

#: Where the snapshot is read when no path is given.
ENVIRONMENT_VARIABLE = "POLYPPL_POSTERIORDB"
#: The scenario label of every imported posterior (its data are posteriordb's).
SCENARIO = "posteriordb"


@dataclass(frozen=True)
class Posterior:
    """One posterior of the database: its name, the files of its program and data, and its
    reference draws' file (None where posteriordb has none)."""

    name: str
    model_name: str
    data_name: str
    program: Path
    data: Path
    reference: Path | None
    keywords: tuple[str, ...] = ()

    @property
    def has_reference(self) -> bool:
        return self.reference is not None


class UnsupportedPosterior(UserError):
    """A posterior whose program cannot be lowered to the spec (a construct outside the
    Stan front end's subset, or no front end for it yet): its backends are not run."""


# --------------------------------------------------------------------------- the snapshot


def locate(path: str | Path | None = None) -> Path:
    """The ``posterior_database`` folder of ``path`` (a posteriordb checkout or that folder
    itself), or of ``$POLYPPL_POSTERIORDB`` when ``path`` is None."""
    if path is None:
        path = os.environ.get(ENVIRONMENT_VARIABLE)
        if not path:
            raise UserError(f"where is posteriordb? give --path DIR (a posteriordb checkout or its posterior_database "
                            f"folder) or set {ENVIRONMENT_VARIABLE}")
    root = Path(path).expanduser()
    for candidate in (root / "posterior_database", root):
        if (candidate / "posteriors").is_dir():
            return candidate
    raise UserError(f"{root}: not a posteriordb checkout (expected {root / 'posterior_database' / 'posteriors'} "
                    f"or {root / 'posteriors'})")


def posteriors(root: Path) -> dict[str, Posterior]:
    """Every posterior of the database at ``root`` (see :func:`locate`), by name, sorted."""
    out = {}
    for path in sorted((root / "posteriors").glob("*.json")):
        try:
            entry = json.loads(path.read_text())
            name, model_name, data_name = entry["name"], entry["model_name"], entry["data_name"]
        except (json.JSONDecodeError, KeyError, TypeError) as exc:
            raise UserError(f"{path}: not a posteriordb posterior ({type(exc).__name__}: {exc}); expected JSON with "
                            "name, model_name and data_name") from None
        reference_name = entry.get("reference_posterior_name")
        reference = root / "reference_posteriors" / "draws" / "draws" / f"{reference_name}.json.zip"
        out[name] = Posterior(name, model_name, data_name, root / "models" / "stan" / f"{model_name}.stan",
                              root / "data" / "data" / f"{data_name}.json.zip",
                              reference if reference_name and reference.exists() else None,
                              tuple(entry.get("keywords") or ()))
    if not out:
        raise UserError(f"{root / 'posteriors'}: no posteriors (*.json) there")
    return out


def _read_zipped_json(path: Path) -> Any:
    """The one JSON file inside ``path`` (posteriordb zips each data set and draws file)."""
    try:
        with zipfile.ZipFile(path) as archive:
            names = [n for n in archive.namelist() if n.endswith(".json")]
            if len(names) != 1:
                raise UserError(f"{path}: expected one .json file inside, found {len(names)}")
            return json.loads(archive.read(names[0]))
    except FileNotFoundError:
        raise UserError(f"{path}: no such file") from None
    except (zipfile.BadZipFile, json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise UserError(f"{path}: unreadable ({type(exc).__name__}: {exc})") from None


def read_data(posterior: Posterior) -> dict[str, Any]:
    """The posterior's data in Stan's JSON data format (name -> number or nested lists)."""
    return _read_zipped_json(posterior.data)


def reference_draws(posterior: Posterior) -> dict[str, np.ndarray]:
    """The reference posterior's draws: Stan's name of each scalar quantity (``theta[1]``)
    -> a (chain, draw) array."""
    if posterior.reference is None:
        raise UserError(f"posteriordb has no reference draws for {posterior.name}")
    chains = _read_zipped_json(posterior.reference)
    if not isinstance(chains, list) or not chains or not all(isinstance(c, dict) for c in chains):
        raise UserError(f"{posterior.reference}: expected a list of chains, each mapping quantities to draws")
    names = list(chains[0])
    for i, chain in enumerate(chains, start=1):
        if list(chain) != names:
            raise UserError(f"{posterior.reference}: chain {i} has other quantities than chain 1")
    try:
        return {name: np.array([chain[name] for chain in chains], dtype=float) for name in names}
    except ValueError as exc:  # ragged chains, or not numbers
        raise UserError(f"{posterior.reference}: draws are not a (chain, draw) table of numbers ({exc})") from None


# --------------------------------------------------------------------------- importing


def import_posterior(posterior: Posterior) -> Problem:
    """The posterior as a :class:`Problem` whose quantities are named as Stan names them.

    Raises :class:`UnsupportedPosterior` (with the construct and its line, as the front end
    says) for a program outside the subset, and :class:`UserError` for unreadable files."""
    if not posterior.program.exists():
        raise UnsupportedPosterior(f"no Stan program ({posterior.program} is missing)")
    try:
        problem = stan_program(posterior.program, posterior.data)
    except UserError as exc:
        # posteriordb's programs and data are valid Stan: what the front end refuses is outside its
        # subset. (Its message starts with the program's path, which the posterior's name says.)
        raise UnsupportedPosterior(str(exc).removeprefix(f"{posterior.program}: ")) from None
    return Problem(problem.model, problem.dataset, Labels(posterior.name, SCENARIO))


def support(posterior: Posterior) -> tuple[str, str]:
    """Whether the posterior imports, for listings: ``(supported | unsupported | error, why)``.
    Imports it (the front end reads the program and the data)."""
    try:
        import_posterior(posterior)
    except UnsupportedPosterior as exc:
        return "unsupported", str(exc)
    except UserError as exc:
        return "error", str(exc)
    return "supported", ""


__all__ = ["ENVIRONMENT_VARIABLE", "Posterior", "UnsupportedPosterior", "import_posterior", "locate",
           "posteriors", "read_data", "reference_draws", "support"]
