"""Data in Stan's JSON format (as cmdstanpy and posteriordb write it: ``.json`` or a
``.json.zip`` holding one), checked against the program's ``data`` block: every declared
variable present, of the declared shape, integer where declared int, inside its bounds."""

from __future__ import annotations

import json
import math
import zipfile
from pathlib import Path
from typing import Any, Mapping

import numpy as np

from polyppl.errors import UserError
from polyppl.models.stan_program.interpret import Unsupported, evaluate, shape_of
from polyppl.models.stan_program.parse import Decl, Program

_INFINITIES = {"inf": math.inf, "+inf": math.inf, "infinity": math.inf, "-inf": -math.inf, "-infinity": -math.inf,
               "nan": math.nan}


def read_stan_json(path: Path) -> dict[str, Any]:
    """The variables of a Stan JSON data file (``.json``, or ``.json.zip`` with one JSON inside)."""
    path = Path(path)
    if not path.is_file():
        raise UserError(f"{path}: no such file (expected Stan's JSON data, .json or .json.zip)")
    try:
        if path.name.endswith(".zip"):
            with zipfile.ZipFile(path) as archive:
                names = [n for n in archive.namelist() if n.endswith(".json")]
                if len(names) != 1:
                    raise UserError(f"{path}: expected one .json file inside, found {len(names)}")
                text = archive.read(names[0]).decode("utf-8")
        else:
            text = path.read_text()
        value = json.loads(text)
    except (json.JSONDecodeError, zipfile.BadZipFile, UnicodeDecodeError) as exc:
        raise UserError(f"{path}: not Stan JSON data ({exc})") from None
    if not isinstance(value, dict):
        raise UserError(f"{path}: Stan JSON data is an object of variables, not a {type(value).__name__}")
    return value


def _as_array(value: Any) -> np.ndarray:
    def convert(v):
        if isinstance(v, list):
            return [convert(x) for x in v]
        if isinstance(v, str) and v.lower() in _INFINITIES:
            return _INFINITIES[v.lower()]
        return v

    return np.asarray(convert(value))


def _describe(decl: Decl, shape: tuple[int, ...]) -> str:
    kind = "int" if decl.type.base == "int" else "real"
    return f"{kind} values of shape {shape}" if shape else f"one {kind}"


def check_data(program: Program, raw: Mapping[str, Any], source: str) -> dict[str, object]:
    """The data block's variables as NumPy values (ints as int64), checked against their
    declarations; a mismatch is a UserError naming the variable and the declaration."""
    env: dict[str, object] = {}
    for decl in program.data:
        where = f"{source}: {decl.name} (line {decl.line})"
        try:
            shape = shape_of(decl.type, env)
        except Unsupported as exc:
            raise UserError(f"{source}: line {exc.line}: the size of {decl.name}: {exc.what}") from None
        if decl.name not in raw:
            if 0 in shape:
                env[decl.name] = np.zeros(shape, dtype=np.int64 if decl.type.base == "int" else float)
                continue
            raise UserError(f"{where}: missing from the data; the program declares {_describe(decl, shape)}")
        value = _as_array(raw[decl.name])
        if value.size == 0 and 0 in shape:
            value = value.reshape(shape)
        if value.shape != shape:
            raise UserError(f"{where}: the data has shape {value.shape}; the program declares {_describe(decl, shape)}")
        if value.dtype.kind not in "biuf":
            raise UserError(f"{where}: the data holds {value.dtype} values; the program declares numbers")
        if decl.type.base == "int":
            if value.size and not np.all(np.mod(value, 1) == 0):
                raise UserError(f"{where}: the program declares int, the data holds non-integers")
            value = value.astype(np.int64)
        else:
            value = value.astype(float)
        for kind, expr in decl.type.bounds:
            bound = evaluate(expr, env)
            if kind == "lower" and value.size and np.any(value < bound):
                raise UserError(f"{where}: the program declares lower={bound}; the data has {np.min(value)}")
            if kind == "upper" and value.size and np.any(value > bound):
                raise UserError(f"{where}: the program declares upper={bound}; the data has {np.max(value)}")
        env[decl.name] = value.item() if value.ndim == 0 else value
    return env
