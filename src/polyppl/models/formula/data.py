"""The data a formula is fitted to: the frame, its checks, the response, and the cells.

A CSV file or a pandas DataFrame is read into a :class:`_Frame`, which names a row in an
error (a file's line, a frame's row). Every column the formula names must be there and
filled in every row; the response (``y``, ``cbind(s, n - s)``, ``s | trials(n)``) and the
offsets are evaluated row by row and checked against the family (:data:`FAMILIES`); the
design must be finite and of full rank.

Rows collapse to cells. Bernoulli and binomial rows that share their covariates, group
levels and offset are one binomial cell (successes and trials summed); Poisson rows that
share covariates and group levels are one Poisson cell with the rates' exposures summed
(the sum of Poisson counts is Poisson, and the split of a total among rows does not depend
on the parameters). So a row-level CSV costs one term per distinct pattern, not per row.
Gaussian rows stay rows. Collapsing is done on the columns the formula names, before the
design is built, so ten million rows cost a pandas group-by (seconds); a formula with a
data-dependent transform (``center``, ``scale``, ``standardize``) is built on every row.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import numpy as np

from polyppl.errors import UserError
from polyppl.models.formula.text import NAMESPACE, ParsedFormula, _formulae_call, _top_level_split


#: Family -> (link, what the response is).
FAMILIES: dict[str, tuple[str, str]] = {
    "bernoulli": ("logit", "0 or 1 per row"),
    "binomial": ("logit", "successes out of trials: cbind(s, n - s) or s | trials(n)"),
    "poisson": ("log", "a count per row, with offset(log(exposure)) where rows differ in exposure"),
    "gaussian": ("identity", "a real number per row; the residual scale is sigma"),
}


@dataclass
class _Frame:
    """The data and how to name a row of it in an error."""

    data: object  # pandas.DataFrame
    where: str  # "ab.csv" or "the data frame"
    file: bool

    def row(self, index: int) -> str:
        return f"line {index + 2} of {self.where}" if self.file else f"row {index} of {self.where}"


def _read(data: object) -> _Frame:
    import pandas as pd

    if isinstance(data, pd.DataFrame):
        if data.empty:
            raise UserError("the data frame has no rows")
        return _Frame(data.reset_index(drop=True), "the data frame", False)
    path = Path(data)  # type: ignore[arg-type]
    if not path.is_file():
        raise UserError(f"{path}: no such file (expected a CSV file with a header line)")
    try:
        frame = pd.read_csv(path, skipinitialspace=True, encoding="utf-8-sig")
    except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError) as exc:
        raise UserError(f"{path}: not a readable CSV file ({exc})") from None
    if frame.empty:
        raise UserError(f"{path}: no data rows below the header line")
    return _Frame(frame, str(path), True)


def _first_bad(mask: np.ndarray) -> int:
    return int(np.flatnonzero(mask)[0])


def _check_complete(frame: _Frame, columns: Sequence[str]) -> None:
    """Every named column exists and has a value in every row."""
    data = frame.data
    missing = [c for c in columns if c not in data.columns]
    if missing:
        raise UserError(f"{frame.where}: no column {missing[0]!r}; the columns are: {', '.join(map(str, data.columns))}")
    for column in columns:
        empty = data[column].isna().to_numpy()
        if data[column].dtype == object:
            empty |= (data[column].astype(str).str.strip() == "").to_numpy()
        if empty.any():
            raise UserError(f"{frame.row(_first_bad(empty))}: column {column!r} is empty (or NaN); "
                            "every row needs a value in every column the formula uses")


@dataclass
class _Response:
    successes: np.ndarray  # y for poisson and gaussian
    trials: np.ndarray | None  # binomial and bernoulli
    offset: np.ndarray | None  # summed offsets per row


def _response(parsed: ParsedFormula, family: str, frame: _Frame) -> _Response:
    """The response and offsets, row by row (formulae on every row: fast for numbers)."""
    import formulae

    import pandas as pd

    text = parsed.response
    for name in re.findall(r"[A-Za-z_][A-Za-z0-9_]*", text):
        column = frame.data[name] if name in frame.data.columns else None
        if column is not None and not (pd.api.types.is_numeric_dtype(column) or pd.api.types.is_bool_dtype(column)):
            bad = pd.to_numeric(column, errors="coerce").isna().to_numpy()
            raise UserError(f"{frame.row(_first_bad(bad))}: column {name!r} of the response is {column[bad].iloc[0]!r}, "
                            f"not a number; {family} needs {FAMILIES[family][1]}")
    trials_form = re.match(r"^(.+?)\|\s*trials\s*\((.+)\)\s*$", text)
    cbind_form = re.match(r"^cbind\s*\((.+)\)\s*$", text)
    if trials_form:
        left = f"polyppl_pair({trials_form.group(1).strip()}, {trials_form.group(2).strip()})"
    elif cbind_form:
        parts = _top_level_split(cbind_form.group(1), ",")
        if len(parts) != 2:
            raise UserError(f"response {text!r}: cbind takes two columns, successes and failures: cbind(s, n - s)")
        left = f"polyppl_pair({parts[0].strip()}, ({parts[0].strip()}) + ({parts[1].strip()}))"
    else:
        left = text
    if (trials_form or cbind_form) and family != "binomial":
        raise UserError(f"response {text!r} gives successes out of trials: that is the binomial family "
                        f"(--family binomial), not {family}")
    terms = " + ".join(f"offset({o})" for o in parsed.offsets) or "1"
    namespace = {**NAMESPACE, "polyppl_pair": lambda a, b: np.column_stack([np.asarray(a, float), np.asarray(b, float)])}
    design = _formulae_call(formulae.design_matrices, f"{left} ~ {terms}", frame.data, na_action="error",
                            extra_namespace=namespace)
    values = np.asarray(design.response.design_matrix, dtype=float)
    offset = None
    if parsed.offsets:
        offset = np.asarray(design.common.design_matrix, dtype=float).sum(axis=1)
        bad = ~np.isfinite(offset)
        if bad.any():
            raise UserError(f"{frame.row(_first_bad(bad))}: the offset {' + '.join(parsed.offsets)} is "
                            f"{offset[bad][0]}; an offset must be a finite number (log of a positive exposure)")
    return _check_response(values, family, text, frame, offset)


def _check_response(values: np.ndarray, family: str, text: str, frame: _Frame, offset: np.ndarray | None) -> _Response:
    if values.ndim == 2 and values.shape[1] == 2:
        k, n = values[:, 0], values[:, 1]
        for what, v in (("successes", k), ("trials", n)):
            bad = (v < 0) | (v != np.floor(v)) | ~np.isfinite(v)
            if bad.any():
                raise UserError(f"{frame.row(_first_bad(bad))}: {what} of {text!r} is {v[bad][0]:g}; "
                                "expected a whole number >= 0")
        above = k > n
        if above.any():
            i = _first_bad(above)
            raise UserError(f"{frame.row(i)}: {k[i]:g} successes are above the {n[i]:g} trials ({text!r})")
        return _Response(k, n, offset)
    y = values.reshape(-1)
    if family in ("bernoulli", "binomial"):
        bad = (y != 0) & (y != 1)
        if bad.any():
            raise UserError(f"{frame.row(_first_bad(bad))}: the response {text!r} is {y[bad][0]:g}; {family} "
                            "needs 0 or 1 per row (successes out of trials: cbind(s, n - s) with --family binomial)")
        return _Response(y, np.ones_like(y), offset)
    if family == "poisson":
        bad = (y < 0) | (y != np.floor(y)) | ~np.isfinite(y)
        if bad.any():
            raise UserError(f"{frame.row(_first_bad(bad))}: the response {text!r} is {y[bad][0]:g}; "
                            "poisson needs a count (a whole number >= 0) per row")
        return _Response(y, None, offset)
    bad = ~np.isfinite(y)
    if bad.any():
        raise UserError(f"{frame.row(_first_bad(bad))}: the response {text!r} is {y[bad][0]}; gaussian needs a finite number")
    return _Response(y, None, offset)


@dataclass
class _Cells:
    """Distinct patterns of the formula's columns, and the likelihood's cells."""

    patterns: object  # pandas.DataFrame: one row per pattern, the formula's columns
    cell_pattern: np.ndarray  # each cell's pattern
    rows_per_pattern: np.ndarray  # for weighted column statistics
    successes: np.ndarray
    trials: np.ndarray | None
    offset: np.ndarray | None
    rows: int
    first_row: np.ndarray  # each pattern's first row, to name it in an error


def _cells(frame: _Frame, columns: list[str], response: _Response, family: str, by_rows: bool) -> _Cells:
    """Rows sharing every column the formula uses (and, for Bernoulli and binomial rows, the
    offset) as one pattern; the likelihood's cells per family (see the module docstring)."""
    import pandas as pd

    data, n = frame.data, len(frame.data)
    if by_rows:
        pattern, first = np.arange(n), np.arange(n)
    else:
        keys = [data[column] for column in columns]
        if response.offset is not None and family in ("bernoulli", "binomial"):
            keys.append(response.offset)  # rows with different offsets have different probabilities
        pattern, first = _patterns(keys, n)
    n_patterns = len(first)
    counts = np.bincount(pattern, minlength=n_patterns)
    patterns = data.iloc[first][columns].reset_index(drop=True) if columns else pd.DataFrame(index=range(n_patterns))
    if family == "gaussian":
        return _Cells(patterns, pattern, counts, response.successes, None, response.offset, n, first)
    successes = np.bincount(pattern, weights=response.successes, minlength=n_patterns)
    if family == "poisson":
        if response.offset is None:
            offset = np.log(counts) if counts.max() > 1 else None
        else:
            top = np.full(n_patterns, -np.inf)
            np.maximum.at(top, pattern, response.offset)
            offset = top + np.log(np.bincount(pattern, weights=np.exp(response.offset - top[pattern]), minlength=n_patterns))
        return _Cells(patterns, np.arange(n_patterns), counts, successes, None, offset, n, first)
    trials = np.bincount(pattern, weights=response.trials, minlength=n_patterns)
    offset = response.offset[first] if response.offset is not None else None
    return _Cells(patterns, np.arange(n_patterns), counts, successes, trials, offset, n, first)


def _patterns(keys: list, n: int) -> tuple[np.ndarray, np.ndarray]:
    """Each row's pattern of ``keys`` (numbered in order of first appearance) and each
    pattern's first row: one hash pass per column (pandas' factorize), no sorting."""
    import pandas as pd

    code = np.zeros(n, dtype=np.int64)
    size = 1
    for key in keys:
        column_code, uniques = pd.factorize(key)
        code = code * len(uniques) + column_code
        size *= len(uniques)
        if size > 2**31:  # keep the mixed-radix code far inside int64
            code, uniques = pd.factorize(code)
            size = len(uniques)
    code, uniques = pd.factorize(code)
    first = np.full(len(uniques), n, dtype=np.int64)
    np.minimum.at(first, code, np.arange(n))
    return code.astype(np.int64), first


def _check_finite(values: np.ndarray, columns: list[str], cells: _Cells, frame: _Frame) -> None:
    bad = ~np.isfinite(values)
    if bad.any():
        pattern, j = np.argwhere(bad)[0]
        raise UserError(f"{frame.row(int(cells.first_row[pattern]))}: the design column {columns[j]!r} is "
                        f"{values[pattern, j]}; every value of the design must be a finite number")


def _check_rank(X: np.ndarray, columns: list[str], where: str) -> None:
    """A design whose columns are linearly dependent has no unique coefficients: name the
    first column that depends on those before it."""
    if X.shape[1] == 0:
        return
    scale = np.abs(X).max(axis=0)
    scale[scale == 0] = 1.0
    Xs = X / scale
    tol = max(X.shape) * np.finfo(float).eps * 1e3
    for j in range(X.shape[1]):
        column = Xs[:, j]
        if np.ptp(column) == 0 and "Intercept" in columns[:j] + columns[j + 1:] and columns[j] != "Intercept":
            raise UserError(f"{where}: the column {columns[j]!r} is constant (the same value in every row), so it "
                            "duplicates the intercept; remove it or the intercept (0 + ...)")
        if j and np.linalg.matrix_rank(Xs[:, : j + 1], tol=tol * np.sqrt(len(column))) <= j:
            coef, *_ = np.linalg.lstsq(Xs[:, :j], column, rcond=None)
            involved = [columns[i] for i in np.flatnonzero(np.abs(coef) > 1e-8)]
            raise UserError(f"{where}: the design is rank-deficient: column {columns[j]!r} is a linear combination "
                            f"of {', '.join(repr(c) for c in involved) or 'earlier columns'} (collinear predictors); "
                            "remove one of them")


def _weighted_sd(values: np.ndarray, weights: np.ndarray) -> float:
    mean = np.average(values, weights=weights)
    return float(np.sqrt(np.average((values - mean) ** 2, weights=weights)))
