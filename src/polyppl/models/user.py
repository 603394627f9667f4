"""A user's own model, from a Python file: ``path/to/file.py:NAME``.

``NAME`` is either

* a function of no arguments returning ``(Model, Dataset)``, or
* a :class:`~polyppl.spec.Model` whose data and observed nodes are columns of the CSV file
  given with ``--data``: one row per element of the model's one data dim; a data node with
  ``index_of`` holds group labels, which become the labels of that dim (in order of first
  appearance).

The file is imported as a module of its own; what it raises is reported with its file name.
"""

from __future__ import annotations

import importlib.util
import inspect
import math
import sys
from pathlib import Path

import numpy as np

from polyppl.errors import UserError, did_you_mean
from polyppl.models import csvdata
from polyppl.models.base import Labels, Problem
from polyppl.spec import Data, Dataset, Model, Observed, SpecError, check_dataset


def is_user_model(text: str) -> bool:
    """``FILE.py:NAME``, or ``FILE.py`` alone (answered with the file's candidates for NAME)."""
    path, sep, name = text.rpartition(":")
    return (bool(sep) and path.endswith(".py") and bool(name)) or text.endswith(".py")


def load_user_model(text: str, data: Path | None = None) -> Problem:
    path_text, sep, name = text.rpartition(":") if not text.endswith(".py") else (text, "", "")
    path = Path(path_text)
    if not path.is_file():
        raise UserError(f"{path}: no such file (expected FILE.py:NAME, e.g. models.py:hierarchical_poisson)")
    module = _import(path)
    target = getattr(module, name, None) if name else None
    if target is None:
        candidates = model_candidates(module)
        what = f"{path} defines no {name!r}{did_you_mean(name, candidates)}" if name else f"{path}: name the model, FILE.py:NAME"
        if not candidates:
            raise UserError(f"{what}; the file defines no function and no Model "
                            "(NAME: a function returning (Model, Dataset), or a Model)")
        raise UserError(f"{what}; NAME can be: {', '.join(candidates)} (e.g. {path}:{candidates[0]})")
    if isinstance(target, Model):
        if data is None:
            raise UserError(f"{text} is a Model without data: give its data with --data FILE.csv "
                            f"(columns: {', '.join(n.name for n in _columns(target))})")
        model, dataset, scenario = target, read_model_csv(target, data), data.stem
    elif callable(target):
        if data is not None:
            raise UserError(f"{text} is a function that returns its own data; --data applies to a Model")
        model, dataset = _call(target, text)
        scenario = "data"
    else:
        raise UserError(f"{text} is a {type(target).__name__}; expected a function returning (Model, Dataset), or a Model")
    try:
        check_dataset(model, dataset)
    except SpecError as exc:
        raise UserError(f"{text}: {exc}") from None
    return Problem(model, dataset, Labels(model.name, scenario), None)


def model_candidates(module) -> list[str]:
    """What ``NAME`` can be in ``module``: its own public functions and its Model objects
    (not called here: a function may be expensive)."""
    return [name for name, value in vars(module).items() if not name.startswith("_")
            and (isinstance(value, Model) or (inspect.isfunction(value) and value.__module__ == module.__name__))]


def _import(path: Path):
    module_name = f"polyppl_user_{abs(hash(str(path.resolve())))}"
    spec = importlib.util.spec_from_file_location(module_name, path)
    if spec is None or spec.loader is None:
        raise UserError(f"{path}: not an importable Python file")
    module = importlib.util.module_from_spec(spec)
    sys.modules[module_name] = module
    try:
        spec.loader.exec_module(module)
    except SystemExit as exc:  # sys.exit() in their file: their input's error, not polyppl's exit
        raise UserError(f"{path}: importing it called sys.exit({exc.code!r}); a model file must not exit "
                        "(put script code under `if __name__ == \"__main__\":`)") from None
    except Exception as exc:  # the user's code: report it as their input's error
        raise UserError(f"{path}: importing it raised {type(exc).__name__}: {exc}") from None
    return module


def _call(function, text: str) -> tuple[Model, Dataset]:
    try:
        value = function()
    except SystemExit as exc:
        raise UserError(f"{text}() called sys.exit({exc.code!r}); it must return (Model, Dataset)") from None
    except Exception as exc:  # the user's code
        raise UserError(f"{text}() raised {type(exc).__name__}: {exc}") from None
    if not (isinstance(value, tuple) and len(value) == 2 and isinstance(value[0], Model) and isinstance(value[1], Dataset)):
        raise UserError(f"{text}() returned {type(value).__name__}; expected a tuple (Model, Dataset)")
    return value


def _columns(model: Model) -> list[Data | Observed]:
    return [n for n in model.nodes if isinstance(n, (Data, Observed))]


def read_model_csv(model: Model, path: Path) -> Dataset:
    """A CSV with one column per data and observed node of ``model``, one row per element of
    its one data dim; index columns hold group labels."""
    columns = _columns(model)
    row_dims = {d for n in columns for d in n.dims}
    if len(row_dims) != 1 or any(len(n.dims) != 1 for n in columns):
        raise UserError(f"model {model.name!r}: reading it from a CSV needs every data and observed node on one "
                        f"dim (found dims {sorted(row_dims)}); write a function returning (Model, Dataset) instead")
    (row_dim,) = row_dims
    table = csvdata.read_table(path, [[n.name for n in columns]])
    values: dict[str, np.ndarray] = {}
    coords: dict[str, tuple] = {row_dim: tuple(range(len(table.rows)))}
    for node in columns:
        cells = [row[node.name] for row in table.rows]
        if isinstance(node, Data) and node.index_of:
            labels = list(dict.fromkeys(csvdata.label(c) for c in cells))
            coords[node.index_of] = tuple(labels)
            lookup = {label: i for i, label in enumerate(labels)}
            values[node.name] = np.array([lookup[c.text] for c in cells], dtype=np.int64)
        elif node.dtype == "int":
            lower = 0 if isinstance(node, Observed) else (None if node.lower is None else math.ceil(node.lower))
            values[node.name] = np.array([csvdata.integer(c, minimum=lower, what="a whole number") for c in cells],
                                         dtype=np.int64)
        else:
            values[node.name] = np.array([csvdata.real(c) for c in cells], dtype=float)
    return Dataset(values, coords, f"file {path}")
