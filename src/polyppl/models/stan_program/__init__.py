"""A user's Stan program as a spec model: ``polyppl compare PROGRAM.stan --data DATA.json``.

The program is checked by Stan's own compiler (``stanc.py``), read with lark
(``grammar.lark``, ``parse.py``), its data read and checked against the ``data`` block
(``data.py``), ``transformed data`` run with NumPy (``interpret.py``), and the rest lowered
to the spec, vectorized (``lower.py``). The model carries the program and its data
(:class:`~polyppl.spec.SourceProgram`), so the Stan backend runs the program unchanged while
PyMC and NumPyro run the lowered spec.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, fields, is_dataclass, replace
from pathlib import Path

import numpy as np

from polyppl import spec as s
from polyppl.errors import UserError
from polyppl.models.base import Labels, Problem
from polyppl.models.stan_program.data import check_data, read_stan_json
from polyppl.models.stan_program.interpret import Unsupported
from polyppl.models.stan_program.lower import BACKENDS_WORDS, lower
from polyppl.models.stan_program.parse import Name, Program, parse_program
from polyppl.models.stan_program.reparametrize import form_of, rewritten
from polyppl.models.stan_program.stanc import check_with_stanc

#: What the message of a construct outside the subset adds.
HINT = "`--backends stan` still runs the program as it is"


def is_stan_program(text: str | Path) -> bool:
    return str(text).endswith(".stan")


def read_program(path: Path) -> Program:
    """The program's tree, after Stan's own compiler accepted it."""
    path = Path(path)
    if not path.is_file():
        raise UserError(f"{path}: no such file (expected a Stan program, PROGRAM.stan)")
    text = path.read_text()
    check_with_stanc(text, str(path))
    return parse_program(text, str(path))


@dataclass(frozen=True)
class Support:
    """Whether a program (on its data) lowers for PyMC and NumPyro, and if not, the first
    construct that does not, with its line."""

    supported: bool
    line: int | None = None
    construct: str | None = None

    @property
    def message(self) -> str:
        return "supported" if self.supported else f"line {self.line}: {self.construct}"


def check_support(program_path: Path, data_path: Path) -> Support:
    """Is this program, on this data, in the subset polyppl lowers? (For studies over many
    programs: no exception for a construct outside the subset.)"""
    try:
        stan_program(program_path, data_path)
    except _UnsupportedProgram as exc:
        return Support(False, exc.line, exc.what)
    return Support(True)


class _UnsupportedProgram(UserError):
    def __init__(self, path: Path, error: Unsupported) -> None:
        line = f"line {error.line}: " if error.line else ""
        super().__init__(f"{path}: {line}{error.what} ({HINT})")
        self.line, self.what = error.line, error.what


def stan_program(path: str | Path, data: str | Path | dict) -> Problem:
    """A Stan program and its data (a Stan JSON file, ``.json`` or ``.json.zip``, or the
    variables as a dict) as a :class:`Problem`: the lowered spec model, carrying the program
    for the Stan backend, and its dataset. Quantities keep Stan's names (``theta[1]``).

    Its parametrization is the program's form (``reparametrize.form_of``): ``centered`` where
    a group-level Normal effect could be declared ``<offset, multiplier>``, ``noncentered``
    where one is; the problem's other form is the program rewritten so, lowered again."""
    path = Path(path)
    program = read_program(path)
    raw = read_stan_json(Path(data)) if not isinstance(data, dict) else data
    source = str(data) if not isinstance(data, dict) else "data"
    values = check_data(program, raw, source)
    return _problem(path, program, values, source, form_of(program))


def _problem(path: Path, program: Program, values: dict, source: str, form: str | None) -> Problem:
    """The problem of a program already read and its checked data, in the form named."""
    try:
        lowered = lower(program, values, path.stem)
    except Unsupported as exc:
        raise _UnsupportedProgram(path, exc) from None
    stan_data = {d.name: _jsonable(values[d.name]) for d in program.data}
    model = replace(lowered.model, source=s.SourceProgram(
        "stan", program.text, json.dumps(stan_data, sort_keys=True), tuple(d.name for d in program.parameters),
        tuple(len(d.type.array_sizes) for d in program.parameters), lowered.loose_gradients))

    def other_form(form: str) -> Problem:
        text = rewritten(program, form)
        if text is None:
            raise UserError(f"{path}: nothing to write in the {form} form")
        check_with_stanc(text, f"{path} ({form})")
        return _problem(path, parse_program(text, str(path)), values, source, form)

    scenario = Path(source).name.removesuffix(".zip").removesuffix(".json")  # eight_schools.json.zip: eight_schools
    return Problem(model, replace(lowered.dataset, source=f"file {source}"), Labels(path.stem, scenario, form),
                   None, rebuild=other_form if form is not None else None)


def check_simulable(model: s.Model) -> None:
    """Refuse, naming the variable, a model lowered from a Stan program whose observed data
    cannot be simulated for its program (simulation-based calibration): the Stan backend runs
    the program with simulated values of the data block's observed variables, and the lowered
    spec holds what ``transformed data`` computed from the program's own data, so an observed
    variable must be one of the data block's and ``transformed data`` must not read it."""
    if model.source is None or model.source.language != "stan":
        return
    program = parse_program(model.source.text)
    declared = {d.name for d in program.data}
    read = _names(program.transformed_data)
    for node in model.of_type(s.Observed):
        if node.name not in declared:
            raise UserError(f"{model.name}.stan: the observed {node.name!r} is computed in transformed data, so it "
                            "cannot be simulated; observe a variable of the data block instead")
        if node.name in read:
            raise UserError(f"{model.name}.stan: transformed data reads the observed {node.name!r}, so the lowered "
                            f"model keeps what it computed from the given {node.name!r} while the program recomputes "
                            "it from each simulated one; compute it in the model block instead")


def _names(tree: object) -> set[str]:
    """Every variable a part of a program's tree reads or writes."""
    if isinstance(tree, Name):
        return {tree.name}
    if isinstance(tree, (tuple, list)):
        return set().union(*(_names(item) for item in tree))
    if is_dataclass(tree):
        return set().union(*(_names(getattr(tree, f.name)) for f in fields(tree)))
    return set()


def _jsonable(value: object) -> object:
    return np.asarray(value).tolist()


__all__ = ["BACKENDS_WORDS", "HINT", "Support", "check_simulable", "check_support", "is_stan_program", "read_program", "stan_program"]
