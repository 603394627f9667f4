"""Multilevel models written as lme4/brms formulas, compiled to an ordinary spec model.

``success ~ treated + (1 + treated | country)`` with a family and a CSV becomes a
:class:`~polyppl.models.base.Problem`: a spec ``Model`` and its ``Dataset``. Every
compiler, check, report and study then applies unchanged; no backend code is written here.

What is parsed where. The formula library ``formulae`` parses the fixed part and the terms
inside each group block and builds the design columns (treatment coding, interactions,
``0 +``/``- 1``, ``offset()``, nesting ``g1/g2`` and ``g1:g2``). Around it, this module fills
what formulae lacks: the response forms ``cbind(s, n - s)`` and ``s | trials(n)``, the
uncorrelated ``(1 + x || g)`` (formulae reads ``||`` as nothing), which group terms share a
block (formulae keeps terms, not blocks, and lme4 correlates the terms of one block), and
offsets, which are evaluated per row so that rows can be collapsed around them.

The model (names as brms prints them, one name per class):

* ``b`` over the design columns (``b[Intercept]``, ``b[treated]``, ``b[period[p2]]``);
* ``sd`` over every group term (``sd[country:Intercept]``), ``cor`` over the pairs of terms
  of each correlated block (``cor[country:Intercept,treated]``), and ``r`` over every group
  level and term (``r[country:Canada,Intercept]``): per block, ``r = (diag(sd) L z)'`` with
  ``z`` a term x level matrix of standard normals and ``L ~ LKJCholesky(eta)`` (``L`` is the
  identity for an uncorrelated block, and left out); with no correlated block, one vector
  ``z`` over every effect and ``r = sd[its term] * z``. Centered (uncorrelated terms only),
  hierarchically centered as the built-in models are: a group term whose column is also a
  design column (``1`` and ``treated`` in ``treated + (1 + treated || country)``) samples
  the level's own coefficient ``br ~ Normal(b[column], sd)``, with ``r = br - b[column]``,
  and the column leaves ``X``; other terms ``br ~ Normal(0, sd)``, ``r = br``. (Centering
  ``r`` at zero instead leaves the intercept and the levels' effects a ridge that big data
  make a needle: the sampler then runs at its maximum tree depth.)
* ``sigma`` for the Gaussian family; the likelihood ``y`` on the cells below.

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
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Mapping, Sequence

import numpy as np

from polyppl import spec as s
from polyppl.errors import UserError, unknown
from polyppl.models.base import Labels, Problem

#: Family -> (link, what the response is).
FAMILIES: dict[str, tuple[str, str]] = {
    "bernoulli": ("logit", "0 or 1 per row"),
    "binomial": ("logit", "successes out of trials: cbind(s, n - s) or s | trials(n)"),
    "poisson": ("log", "a count per row, with offset(log(exposure)) where rows differ in exposure"),
    "gaussian": ("identity", "a real number per row; the residual scale is sigma"),
}
PARAMETRIZATIONS = ("noncentered", "centered")
#: Prior classes, and what each holds.
PRIOR_CLASSES: dict[str, str] = {
    "b": "population-level effects, one per design column: b, b[Intercept], b[treated]",
    "sd": "group-level standard deviations: sd, sd[country], sd[country:treated]",
    "cor": "the LKJ prior of each correlated block's correlation matrix: cor, cor[country]",
    "sigma": "the residual standard deviation of the gaussian family",
}
#: Transforms whose values depend on every row (formulae's stateful transforms): the design
#: is then built on the rows themselves, not on their distinct patterns.
_STATEFUL = ("center", "scale", "standardize")
#: Names the formula may call besides the data's columns (formulae also knows C, center, ...).
NAMESPACE: dict[str, object] = {"log": np.log, "exp": np.exp, "sqrt": np.sqrt, "log1p": np.log1p}
#: Node names and dims of the model: a grouping factor's level dim is renamed around them.
_TAKEN = {"X", "b", "sd", "r", "cor", "sigma", "y", "trials", "offsets", "b_predictor", "sd_effect",
          "cell", "coef", "group_term", "group_effect", "group_pair", "predictor",
          "br", "br_column", "br_absorbed", "b_free", "coef_free", "z", "XZ", "design"}


# --------------------------------------------------------------------------- priors


#: Families a prior may name, with the spec's constructor; ``lkj`` is LKJCholesky.
_PRIOR_FAMILIES = {
    "normal": s.Normal, "student_t": s.StudentT, "cauchy": s.Cauchy, "flat": s.Flat,
    "half_normal": s.HalfNormal, "half_student_t": s.HalfStudentT, "half_cauchy": s.HalfCauchy,
    "exponential": s.Exponential, "gamma": s.Gamma, "lkj": s.LKJCholesky, "lkj_corr_cholesky": s.LKJCholesky,
}
#: brms writes a prior on a standard deviation as the full family, truncated at zero.
_HALF = {"normal": ("half_normal", 1), "student_t": ("half_student_t", 1), "cauchy": ("half_cauchy", 1)}
_PRIOR_TEXT = re.compile(r"^\s*([A-Za-z_]+)\s*(?:\[(.+)\])?\s*~\s*([A-Za-z_]+)\s*\((.*)\)\s*$")
_TARGET = re.compile(r"^\s*([A-Za-z_]+)\s*(?:\[(.+)\])?\s*$")


@dataclass(frozen=True)
class Prior:
    """A prior for a class (``sd``) or one of its elements (``sd[country:treated]``,
    ``sd[country]`` for every term of a grouping factor)."""

    target: str
    dist: s.Dist

    @property
    def parts(self) -> tuple[str, str | None]:
        name, _, rest = self.target.partition("[")
        return name, rest[:-1] if rest else None


def parse_prior(text: str) -> Prior:
    """``"sd ~ half_normal(1)"``, ``"b[treated] ~ normal(0, 2.5)"``, ``"cor ~ lkj(2)"``. A
    prior on ``sd`` or ``sigma`` written as brms writes it (``student_t(3, 0, 2.5)``) is
    the half family."""
    found = _PRIOR_TEXT.match(text)
    if not found:
        raise UserError(f"prior {text!r}: expected CLASS ~ FAMILY(ARGS) or CLASS[ELEMENT] ~ FAMILY(ARGS), "
                        "e.g. 'sd ~ half_normal(1)' or 'b[treated] ~ normal(0, 2.5)'")
    cls, element, family, arg_text = found.groups()
    target = _target(cls, element)
    try:
        args = [float(a) for a in arg_text.split(",")] if arg_text.strip() else []
    except ValueError:
        raise UserError(f"prior {text!r}: the arguments must be numbers, got ({arg_text})") from None
    return Prior(target, _prior_dist(cls, family, args, text))


def _target(cls: str, element: str | None) -> str:
    if cls not in PRIOR_CLASSES:
        raise unknown("prior class", cls, PRIOR_CLASSES)
    return f"{cls}[{element.strip()}]" if element else cls


def _prior_dist(cls: str, family: str, args: list[float], text: str) -> s.Dist:
    if cls in ("sd", "sigma") and family in _HALF:
        half, location = _HALF[family]
        if len(args) > location and args[location] != 0:
            raise UserError(f"prior {text!r}: a standard deviation's prior is a half family at 0; "
                            f"{family} with location {args[location]:g} is not (use {half})")
        family, args = half, args[:location] + args[location + 1:]
    if family not in _PRIOR_FAMILIES:
        raise unknown(f"prior family in {text!r}", family, _PRIOR_FAMILIES)
    try:
        dist = _PRIOR_FAMILIES[family](*args)
    except (TypeError, ValueError) as exc:
        raise UserError(f"prior {text!r}: {exc}") from None
    support = dist.info.support
    wanted = {"b": "real", "sd": "positive", "sigma": "positive", "cor": "corr_cholesky"}[cls]
    if support != wanted:
        raise UserError(f"prior {text!r}: {cls} needs a prior on {_SUPPORT_WORDS[wanted]}, "
                        f"and {dist.family} is on {_SUPPORT_WORDS.get(support, support)}")
    return dist


_SUPPORT_WORDS = {"real": "the real line", "positive": "the positive half-line",
                  "corr_cholesky": "correlation matrices (lkj)"}


def _as_priors(priors: Mapping[str, str | s.Dist] | Sequence[str] | None) -> list[Prior]:
    """Priors as the user gave them: ``["sd ~ half_normal(1)"]`` or ``{"sd": "half_normal(1)"}``
    or ``{"sd": s.HalfNormal(1.0)}``."""
    if priors is None:
        return []
    if isinstance(priors, Mapping):
        out = []
        for target, value in priors.items():
            if not isinstance(value, s.Dist):
                out.append(parse_prior(f"{target} ~ {value}"))
                continue
            found = _TARGET.match(target)
            if not found:
                raise UserError(f"prior target {target!r}: expected CLASS or CLASS[ELEMENT], e.g. sd or b[treated]")
            args = [a.value for _, a in value.args if isinstance(a, s.Const)]
            if len(args) != len(value.args):
                raise UserError(f"prior for {target}: its arguments must be numbers")
            cls = found.group(1)
            text = f"{target} ~ {_describe_dist(value)}"
            out.append(Prior(_target(cls, found.group(2)), _prior_dist(cls, value.family, args, text)))
        return out
    return [parse_prior(text) for text in priors]


def _describe_dist(dist: s.Dist) -> str:
    args = ", ".join(f"{a.value:g}" if isinstance(a, s.Const) else "?" for _, a in dist.args)
    return f"{'lkj' if dist.family == 'lkj_corr_cholesky' else dist.family}({args})"


# --------------------------------------------------------------------------- the formula's text


@dataclass(frozen=True)
class GroupBlock:
    """One parenthesised group term, ``(expr | factor)`` or ``(expr || factor)``."""

    expr: str
    factor: str
    correlated: bool

    @property
    def text(self) -> str:
        return f"({self.expr} | {self.factor})"


@dataclass(frozen=True)
class ParsedFormula:
    response: str
    #: The right-hand side for formulae: ``||`` as ``|``, offsets removed.
    rhs: str
    blocks: tuple[GroupBlock, ...]
    offsets: tuple[str, ...]


def _top_level_split(text: str, separator: str) -> list[str]:
    """Split at ``separator`` where no parenthesis is open."""
    parts, depth, start = [], 0, 0
    for i, char in enumerate(text):
        depth += {"(": 1, ")": -1}.get(char, 0)
        if depth < 0:
            raise UserError(f"formula: unbalanced parentheses in {text!r}")
        if char == separator and depth == 0:
            parts.append(text[start:i])
            start = i + 1
    if depth != 0:
        raise UserError(f"formula: unbalanced parentheses in {text!r}")
    parts.append(text[start:])
    return parts


def _wrapped(piece: str) -> str | None:
    """The inside of ``(...)`` when the parentheses enclose all of ``piece``."""
    piece = piece.strip()
    if not (piece.startswith("(") and piece.endswith(")")):
        return None
    depth = 0
    for i, char in enumerate(piece):
        depth += {"(": 1, ")": -1}.get(char, 0)
        if depth == 0 and i < len(piece) - 1:
            return None
    return piece[1:-1]


def parse_formula(formula: str) -> ParsedFormula:
    """Split a formula into what formulae parses and what this module handles around it."""
    sides = _top_level_split(formula, "~")
    if len(sides) != 2 or not sides[0].strip() or not sides[1].strip():
        raise UserError(f"formula {formula!r}: expected RESPONSE ~ TERMS, e.g. 'success ~ treated + (1 | country)'")
    response, rhs = sides[0].strip(), sides[1]
    pieces, blocks, offsets = [], [], []
    for piece in _top_level_split(rhs, "+"):
        inside = _wrapped(piece)
        call = re.match(r"^\s*offset\s*\((.*)\)\s*$", piece, re.S)
        if inside is not None and _has_bar(inside):
            expr, bar, factor = _split_bar(inside, piece)
            block = GroupBlock(expr, factor, correlated=bar == "|")
            blocks.append(block)
            pieces.append(block.text)
        elif call and _wrapped(piece[piece.index("offset") + len("offset"):]) is not None:
            offsets.append(call.group(1).strip())
        elif piece.strip():
            pieces.append(piece.strip())
        else:
            raise UserError(f"formula {formula!r}: an empty term (two '+' in a row, or one at an end)")
    if any(_has_bar(piece) for piece in pieces):
        raise UserError(f"formula {formula!r}: a group term must be in parentheses, e.g. (1 | country)")
    return ParsedFormula(response, " + ".join(pieces) if pieces else "1", tuple(blocks), tuple(offsets))


def _has_bar(text: str) -> bool:
    depth = 0
    for char in text:
        depth += {"(": 1, ")": -1}.get(char, 0)
        if char == "|" and depth == 0:
            return True
    return False


def _split_bar(inside: str, piece: str) -> tuple[str, str, str]:
    depth = 0
    for i, char in enumerate(inside):
        depth += {"(": 1, ")": -1}.get(char, 0)
        if char == "|" and depth == 0:
            double = inside[i + 1: i + 2] == "|"
            expr, factor = inside[:i].strip(), inside[i + (2 if double else 1):].strip()
            if not expr or not factor or "|" in factor:
                break
            return expr, "||" if double else "|", factor
    raise UserError(f"group term {piece.strip()!r}: expected (TERMS | FACTOR) or (TERMS || FACTOR), "
                    "e.g. (1 + treated | country)")


# --------------------------------------------------------------------------- data


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


# --------------------------------------------------------------------------- formulae


def _formulae_call(fn, *args, **kwargs):
    """formulae, with its errors as the user's: they are about the formula or the data."""
    import formulae

    try:
        with np.errstate(all="ignore"):  # log(0) and the like: checked, with the row, afterwards
            return fn(*args, **kwargs)
    except UserError:
        raise
    except (formulae.parser.ParseError, formulae.scanner.ScanError) as exc:
        raise UserError(f"formula: unsupported syntax: {exc}") from None
    except (ValueError, KeyError, TypeError, NameError, AttributeError) as exc:
        raise UserError(f"formula: {type(exc).__name__}: {exc}") from None


def _variables(formula_text: str) -> set[str]:
    import formulae

    # formulae lists literals (x**2's 2) as an empty name.
    return {name for name in _formulae_call(formulae.model_description, formula_text).var_names if name}


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


# --------------------------------------------------------------------------- cells


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


# --------------------------------------------------------------------------- group units


@dataclass
class _Unit:
    """The terms of one block for one grouping factor: correlated with each other (a
    correlated block of two or more terms) or not."""

    factor: str  # as written: country, g1:g2
    uid: str  # identifier: country, g1_g2, country_2
    level_dim: str
    levels: list[str]
    level_of_pattern: np.ndarray
    terms: list[str]
    columns: list[np.ndarray]  # per term, its value in each pattern
    correlated: bool
    offset: int = 0  # position of its first effect in r

    @property
    def term_dim(self) -> str:
        return f"term_{self.uid}"


def _identifier(text: str) -> str:
    name = re.sub(r"[^A-Za-z0-9]+", "_", text).strip("_") or "group"
    return name if name[0].isalpha() else f"g_{name}"


def _group_units(parsed: ParsedFormula, design, patterns, frame: _Frame) -> list[_Unit]:
    import formulae
    import pandas as pd

    units: list[_Unit] = []
    group_terms = design.group.terms if design.group else {}
    claimed: dict[str, str] = {}
    level_cache: dict[str, tuple[list[str], np.ndarray]] = {}
    for block in parsed.blocks:
        description = _formulae_call(formulae.model_description, f"polyppl_response ~ 0 + {block.text}")
        by_factor: dict[str, list[str]] = {}
        for term in description.group_terms:
            if term.name in claimed:
                raise UserError(f"group term {term.name!r} appears in both {claimed[term.name]} and {block.text}")
            claimed[term.name] = block.text
            by_factor.setdefault(term.factor.name, []).append(term.name)
        for factor, names in by_factor.items():
            terms, columns = [], []
            for name in names:
                term = group_terms[name]
                values = np.asarray(term.expr.data, dtype=float)
                values = values.reshape(len(values), -1)
                labels = term.expr.labels if hasattr(term.expr, "labels") else ["Intercept"]
                for j, label in enumerate(labels):
                    terms.append(str(label))
                    columns.append(values[:, j])
            variables = [c.name for c in group_terms[names[0]].factor.components]
            if any(v not in patterns.columns for v in variables):
                raise UserError(f"group term {block.text}: a grouping factor must be columns of the data joined by ':' "
                                f"(e.g. (1 | herd) or (1 | site:herd)), not {factor!r}")
            if factor not in level_cache:
                keys = patterns[variables]
                distinct = keys.drop_duplicates().sort_values(variables).reset_index(drop=True)
                labels = [":".join(str(v) for v in row) for row in distinct.itertuples(index=False)]
                lookup = pd.MultiIndex.from_frame(distinct)
                level = lookup.get_indexer(pd.MultiIndex.from_frame(keys))
                if len(labels) < 2:
                    raise UserError(f"grouping factor {factor!r} has a single level ({labels[0]!r}) in {frame.where}; "
                                    "group-level effects need at least two levels")
                level_cache[factor] = labels, level.astype(np.int64)
            labels, level = level_cache[factor]
            units.append(_Unit(factor, _identifier(factor), _identifier(factor), labels, level, terms, columns,
                               block.correlated and len(terms) > 1))
    unclaimed = sorted(set(group_terms) - set(claimed))
    if unclaimed:
        raise UserError(f"formula: the group term {unclaimed[0]!r} is not written as (TERMS | FACTOR) between "
                        "'+' signs; unsupported syntax")
    # Identifiers: one level dim per factor; units of a factor numbered when there are several.
    seen: dict[str, int] = {}
    used: set[str] = set()
    for unit in units:
        base = unit.uid if unit.uid not in _TAKEN else f"{unit.uid}_level"
        unit.level_dim = base
        count = sum(1 for u in units if u.factor == unit.factor)
        seen[unit.factor] = seen.get(unit.factor, 0) + 1
        unit.uid = base if count == 1 else f"{base}_{seen[unit.factor]}"
        while unit.uid in used:
            unit.uid += "_"
        used.add(unit.uid)
    offset = 0
    for unit in units:
        unit.offset = offset
        offset += len(unit.levels) * len(unit.terms)
    return units


# --------------------------------------------------------------------------- checks


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


# --------------------------------------------------------------------------- priors resolved


def default_priors(family: str, y: np.ndarray, x_columns: list[str], x_sds: list[float]) -> dict[str, s.Dist]:
    """Default priors by element (``b[treated]``) or class (``sd``, ``cor``, ``sigma``).

    brms's recipe: ``b[Intercept] ~ student_t(3, location, scale)`` with location and scale
    the median and MAD of the response on the link scale (location 0 and scale 2.5 for the
    logit link), the scale at least 2.5; group sds and sigma ``half_student_t(3, scale)``
    with the same scale; ``cor ~ lkj(1)``. Where brms puts an improper flat prior on the
    other columns of b, they get ``student_t(3, 0, 2.5 s_y / s_x)`` (s_x the column's sd over
    the rows, s_y the response's sd for the gaussian family and 1 otherwise): proper, so
    that separated logistic data cannot make the posterior improper, and scaled to the
    predictor as rstanarm's autoscaling does. Unlike brms, the intercept is that of the
    columns as given, not of centered columns.
    """
    link = FAMILIES[family][0]
    if link == "logit":
        location, scale, s_y = 0.0, 2.5, 1.0
    else:
        on_link = np.log(np.where(y == 0, y + 0.1, y)) if link == "log" else y
        location = round(float(np.median(on_link)), 1)
        mad = 1.4826 * float(np.median(np.abs(on_link - np.median(on_link))))
        scale = max(round(mad, 1), 2.5)
        s_y = float(np.std(y)) if link == "identity" else 1.0
    out: dict[str, s.Dist] = {}
    for column, sd in zip(x_columns, x_sds):
        if column == "Intercept":
            out["b[Intercept]"] = s.StudentT(3.0, location, scale)
        else:
            out[f"b[{column}]"] = s.StudentT(3.0, 0.0, round(2.5 * s_y / (sd if sd > 0 else 1.0), 3))
    out["sd"] = s.HalfStudentT(3.0, scale)
    out["cor"] = s.LKJCholesky(1.0)
    out["sigma"] = s.HalfStudentT(3.0, scale)
    return out


def _resolve(element: str, cls: str, group: str | None, given: list[Prior],
             defaults: dict[str, s.Dist]) -> tuple[s.Dist, bool]:
    """The most specific prior for an element (its own, its group's, its class's, the
    default), and whether the user gave it."""
    for target in (element, f"{cls}[{group}]" if group else None, cls):
        for prior in reversed(given):  # the last given wins
            if target is not None and prior.target == target:
                return prior.dist, True
    return defaults.get(element, defaults.get(cls)), False


def _class_prior(cls: str, dim: str, dists: list[s.Dist], elements: list[str], nodes: list, values: dict) -> s.Dist:
    """One Dist for a vector parameter whose elements may have different arguments of the
    same family: an argument that differs becomes a data vector ``prior_<class>_<arg>``."""
    families = {d.family for d in dists}
    if len(families) > 1:
        listing = "; ".join(f"{e} ~ {_describe_dist(d)}" for e, d in zip(elements, dists))
        raise UserError(f"the elements of {cls} need priors of one family (they are one vector parameter): {listing}")
    first = dists[0]
    args = {}
    for name, _ in first.args:
        column = [d.kwargs[name].value for d in dists]
        if len(set(column)) == 1:
            args[name] = column[0]
        else:
            data_name = f"prior_{cls}_{name}"
            nodes.append(s.Data(data_name, "real", (dim,)))
            values[data_name] = np.asarray(column, dtype=float)
            args[name] = s.Var(data_name)
    return s.Dist(first.family, tuple((name, s.as_expr(value)) for name, value in args.items()))


# --------------------------------------------------------------------------- the model


@dataclass
class FormulaModel:
    """A formula compiled: the spec model, its data, and what it was made from."""

    model: s.Model
    dataset: s.Dataset
    formula: str
    family: str
    parametrization: str
    priors: dict[str, str] = field(default_factory=dict)


def compile_formula(formula: str, data: object, family: str = "bernoulli",
                    priors: Mapping[str, str | s.Dist] | Sequence[str] | None = None,
                    parametrization: str = "noncentered", collapse: bool = True) -> FormulaModel:
    """The formula as a spec model with its dataset; see :func:`formula`. ``collapse=False``
    keeps one likelihood term per row (the same posterior, at the cost of every row)."""
    import formulae

    if family not in FAMILIES:
        raise unknown("family", family, FAMILIES)
    if parametrization not in PARAMETRIZATIONS:
        raise unknown("parametrization of a formula", parametrization, PARAMETRIZATIONS)
    given = _as_priors(priors)
    parsed = parse_formula(formula)
    frame = _read(data)
    rhs_formula = f"polyppl_response ~ {parsed.rhs}"
    variables = _variables(rhs_formula) - {"polyppl_response"}
    response_variables = _variables(f"polyppl_response ~ 1 + {' + '.join(f'offset({o})' for o in parsed.offsets)}"
                                    if parsed.offsets else "polyppl_response ~ 1") - {"polyppl_response"}
    # The response's columns: its names other than the functions it may call.
    lhs_names = {name for name in re.findall(r"[A-Za-z_][A-Za-z0-9_.]*", parsed.response)
                 if "." not in name and name not in {"cbind", "trials", *NAMESPACE}}
    _check_complete(frame, sorted(variables | response_variables | lhs_names, key=str))
    response = _response(parsed, family, frame)
    columns = sorted(variables, key=list(frame.data.columns).index)
    by_rows = not collapse or any(re.search(rf"\b{name}\s*\(", parsed.rhs) for name in _STATEFUL)
    cells = _cells(frame, columns, response, family, by_rows)
    patterns = cells.patterns.copy()
    patterns["polyppl_response"] = 0.0
    design = _formulae_call(formulae.design_matrices, rhs_formula, patterns, na_action="error",
                            extra_namespace=NAMESPACE)
    if design.common is not None:
        X_patterns = np.asarray(design.common.design_matrix, dtype=float)
        x_columns = [str(c) for c in design.common.as_dataframe().columns]
    else:
        X_patterns, x_columns = np.zeros((len(patterns), 0)), []
    _check_finite(X_patterns, x_columns, cells, frame)
    _check_rank(X_patterns, x_columns, f"formula {formula!r} on {frame.where}")
    units = _group_units(parsed, design, patterns, frame)
    for u in units:
        _check_finite(np.column_stack(u.columns), [f"{t} (in a group term of {u.factor})" for t in u.terms], cells, frame)
    if not x_columns and not units:
        raise UserError(f"formula {formula!r}: no terms (no intercept, no predictors, no group terms)")
    correlated = [u for u in units if u.correlated]
    if parametrization == "centered" and correlated:
        raise UserError(f"the centered form is offered for uncorrelated group terms only; "
                        f"{', '.join(u.factor for u in correlated)} has correlated terms (use || for uncorrelated "
                        "terms, or the default non-centered form)")
    x_sds = [_weighted_sd(X_patterns[:, j], cells.rows_per_pattern) for j in range(len(x_columns))]
    defaults = default_priors(family, response.successes, x_columns, x_sds)
    _check_targets(given, x_columns, units)
    return _build(formula, family, parametrization, frame, cells, X_patterns, x_columns, units, given, defaults)


def _absorbed_terms(units: list[_Unit], X_patterns: np.ndarray, x_columns: list[str]) -> dict[tuple[int, int], int]:
    """For the centered form: the group terms (unit, term) that take over a design column,
    the same values in every pattern (each column by the first such term)."""
    taken: dict[tuple[int, int], int] = {}
    for i, u in enumerate(units):
        for t, (term, values) in enumerate(zip(u.terms, u.columns)):
            j = x_columns.index(term) if term in x_columns else None
            if j is not None and j not in taken.values() and np.array_equal(values, X_patterns[:, j]):
                taken[(i, t)] = j
    return taken


def _check_targets(given: list[Prior], x_columns: list[str], units: list[_Unit]) -> None:
    groups = {u.factor for u in units}
    sd_elements = {f"{u.factor}:{t}" for u in units for t in u.terms}
    correlated = {u.factor for u in units if u.correlated}
    for prior in given:
        cls, element = prior.parts
        if cls == "b" and element is not None and element not in x_columns:
            raise unknown("column of b", element, x_columns)
        if cls == "sd" and element is not None and element not in groups | sd_elements:
            raise unknown("element of sd (a grouping factor or factor:term)", element, sorted(groups) + sorted(sd_elements))
        if cls == "cor" and element is not None and element not in correlated:
            raise unknown("correlated grouping factor", element, sorted(correlated) or ["(none: no correlated block)"])


#: Largest design, cells x (design columns + group effects), written as one dense matrix.
DENSE_DESIGN_ENTRIES = 1_000_000
#: Most group effects written as columns of the dense design.
DENSE_GROUP_EFFECTS = 64


def _linear_predictor(population: tuple[np.ndarray, str, s.Expr] | None,
                      group_columns: list[tuple[str, np.ndarray, np.ndarray]], coords: dict[str, tuple],
                      coefficient: str, n_cells: int, add_data: Callable[[s.Data, np.ndarray], s.Var]) -> s.Expr:
    """The cells' linear predictor: ``X b`` plus, for each group term, its effect in each
    cell's level times the term's covariate.

    A small model (the usual A/B test: a few cells and a few dozen group effects) gets one
    dense design of the population columns and one column per group effect, ``XZ *
    concat(b, r)``: a product of a data matrix by a vector, whose gradient costs a few
    floating-point operations per entry, where each gathered effect costs an operation of
    automatic differentiation per cell (on Stan the seed's model drops from 7% above the
    built-in model's instructions per gradient to 3% below). A larger one keeps the
    gathers, ``X b + r[J_1] + Z_2 .* r[J_2] + ...``, whose cost grows with the cells alone."""
    n_effects = len(coords.get("group_effect", ()))
    n_population = population[0].shape[1] if population is not None else 0
    if group_columns and n_effects <= DENSE_GROUP_EFFECTS \
            and n_cells * (n_population + n_effects) <= DENSE_DESIGN_ENTRIES:
        design = np.zeros((n_cells, n_population + n_effects))
        for _, effect, value in group_columns:
            np.add.at(design, (np.arange(n_cells), n_population + effect), value)
        if population is None:  # the columns are the group effects themselves
            return s.matmul(add_data(s.Data("XZ", "real", ("cell", "group_effect")), design), s.Var(coefficient))
        values, dim, coefficients = population
        design[:, :n_population] = values
        coords["design"] = (*(f"b[{c}]" for c in coords[dim]), *(f"{coefficient}[{e}]" for e in coords["group_effect"]))
        return s.matmul(add_data(s.Data("XZ", "real", ("cell", "design")), design),
                        s.concat("design", coefficients, s.Var(coefficient)))
    eta = None
    if population is not None:
        values, dim, coefficients = population
        eta = s.matmul(add_data(s.Data("X", "real", ("cell", dim)), values), coefficients)
    for name, effect, value in group_columns:
        term = s.Var(coefficient)[add_data(s.Data(f"J_{name}", "int", ("cell",), index_of="group_effect"), effect)]
        if not np.all(value == 1.0):  # an intercept term needs no covariate
            term = add_data(s.Data(f"Z_{name}", "real", ("cell",)), value) * term
        eta = term if eta is None else eta + term
    if eta is None:
        raise AssertionError("a formula has a population or a group part")
    return eta


def _build(formula: str, family: str, parametrization: str, frame: _Frame, cells: _Cells, X_patterns: np.ndarray,
           x_columns: list[str], units: list[_Unit], given: list[Prior], defaults: dict[str, s.Dist]) -> FormulaModel:
    n_cells = len(cells.cell_pattern)
    nodes: list = []
    values: dict[str, np.ndarray] = {}
    coords: dict[str, tuple] = {"cell": tuple(range(n_cells))}
    described: dict[str, tuple[str, bool]] = {}  # element -> (prior, given by the user)
    population = None  # (design columns, their dim, the coefficients' expression)
    group_columns: list[tuple[str, np.ndarray, np.ndarray]] = []  # per group term: (name, each cell's effect, covariate)

    def add_data(node: s.Data, value: np.ndarray) -> s.Var:
        nodes.append(node)
        values[node.name] = value
        return s.Var(node.name)

    # The centered form's absorbed terms: (unit index, term index) -> design column.
    absorbed = _absorbed_terms(units, X_patterns, x_columns) if parametrization == "centered" else {}
    free = [j for j in range(len(x_columns)) if j not in absorbed.values()]
    # Population-level effects.
    if x_columns:
        coords["coef"] = tuple(x_columns)
        resolved = [_resolve(f"b[{c}]", "b", None, given, defaults) for c in x_columns]
        dists = [d for d, _ in resolved]
        b_prior = _class_prior("b", "coef", dists, [f"b[{c}]" for c in x_columns], nodes, values)
        described.update({f"b[{c}]": (_describe_dist(d), mine) for c, (d, mine) in zip(x_columns, resolved)})
        b_node = s.Param("b", b_prior, ("coef",))
        if len(free) == len(x_columns):
            population = (X_patterns[cells.cell_pattern], "coef", s.Var("b"))
        elif free:  # the columns no group term took
            coords["coef_free"] = tuple(x_columns[j] for j in free)
            population = (X_patterns[cells.cell_pattern][:, free], "coef_free",
                          s.Var("b")[add_data(s.Data("b_free", "int", ("coef_free",), index_of="coef"), np.asarray(free))])
    # Group-level effects: sd over every (factor, term); r over every (factor, level, term).
    group_nodes: list = []
    if units:
        sd_labels = [f"{u.factor}:{t}" for u in units for t in u.terms]
        coords["group_term"] = tuple(sd_labels)
        resolved = [_resolve(f"sd[{u.factor}:{t}]", "sd", u.factor, given, defaults) for u in units for t in u.terms]
        sd_dists = [d for d, _ in resolved]
        sd_prior = _class_prior("sd", "group_term", sd_dists, [f"sd[{e}]" for e in sd_labels], nodes, values)
        described.update({f"sd[{e}]": (_describe_dist(d), mine) for e, (d, mine) in zip(sd_labels, resolved)})
        group_nodes.append(s.Param("sd", sd_prior, ("group_term",)))
        r_labels = [f"{u.factor}:{level},{t}" for u in units for level in u.levels for t in u.terms]
        coords["group_effect"] = tuple(r_labels)
        # Without a correlated block every effect is its own sd times its own standard
        # normal: one vector each, r = sd[sd_effect] * z, fewer operations per gradient
        # than a scaled matrix per block.
        elementwise = parametrization == "centered" or not any(u.correlated for u in units)
        # Each effect's (unit, term), in the order of r_labels.
        effect_terms = [(i, t) for i, u in enumerate(units) for _ in u.levels for t in range(len(u.terms))]
        if elementwise:
            first_term = np.cumsum([0] + [len(u.terms) for u in units])
            scale = s.Var("sd")[add_data(s.Data("sd_effect", "int", ("group_effect",), index_of="group_term"),
                                         np.array([first_term[i] + t for i, t in effect_terms]))]
        position = 0
        parts, pairs = [], []
        for u in units:
            coords[u.level_dim] = tuple(u.levels)
            coords[u.term_dim] = tuple(u.terms)
            if elementwise:
                continue
            sd_index = add_data(s.Data(f"sd_{u.uid}", "int", (u.term_dim,), index_of="group_term"),
                                np.arange(position, position + len(u.terms)))
            position += len(u.terms)
            if parametrization == "noncentered":
                scale = s.diag_pre_multiply(s.Var("sd")[sd_index], s.Var(f"L_{u.uid}")) if u.correlated \
                    else s.Var("sd")[sd_index]
                z_dims = (f"component_{u.uid}" if u.correlated else u.term_dim, u.level_dim)
                if u.correlated:
                    coords[z_dims[0]] = tuple(u.terms)
                    lkj_prior, mine = _resolve(f"cor[{u.factor}]", "cor", None, given, defaults)
                    described[f"cor[{u.factor}]"] = (_describe_dist(lkj_prior), mine)
                    group_nodes.append(s.Param(f"L_{u.uid}", lkj_prior, (u.term_dim, z_dims[0])))
                group_nodes.append(s.Param(f"z_{u.uid}", s.Normal(0.0, 1.0), z_dims))
                product = s.matmul(scale, s.Var(f"z_{u.uid}")) if u.correlated \
                    else s.diag_pre_multiply(scale, s.Var(f"z_{u.uid}"))
                parts.append(s.transpose(product))
            if u.correlated:
                j, k = np.tril_indices(len(u.terms), -1)
                pair_dim = f"pair_{u.uid}"
                coords[pair_dim] = tuple(f"{u.terms[a]},{u.terms[b_]}" for b_, a in zip(j, k))
                first = add_data(s.Data(f"cor_{u.uid}_1", "int", (pair_dim,), index_of=u.term_dim), k)
                second = add_data(s.Data(f"cor_{u.uid}_2", "int", (pair_dim,), index_of=u.term_dim), j)
                pairs.append(s.rows_dot(s.Var(f"L_{u.uid}")[first], s.Var(f"L_{u.uid}")[second]))
        if parametrization == "noncentered" and elementwise:
            group_nodes.append(s.Param("z", s.Normal(0.0, 1.0), ("group_effect",)))
            group_nodes.append(s.Deterministic("r", scale * s.Var("z"), ("group_effect",)))
        elif parametrization == "noncentered":
            group_nodes.append(s.Deterministic("r", s.concat("group_effect", *parts), ("group_effect",)))
        else:
            if not absorbed:
                group_nodes.append(s.Param("r", s.Normal(0.0, scale), ("group_effect",)))
            else:
                # Each effect's mean: b[its column] for an absorbed term, 0 for the others.
                column_of_effect = np.array([absorbed.get(k, 0) for k in effect_terms])
                is_absorbed = np.array([float(k in absorbed) for k in effect_terms])
                mean = s.Var("b")[add_data(s.Data("br_column", "int", ("group_effect",), index_of="coef"),
                                           column_of_effect)] * add_data(
                    s.Data("br_absorbed", "real", ("group_effect",)), is_absorbed)
                group_nodes.append(s.Param("br", s.Normal(mean, scale), ("group_effect",)))
                group_nodes.append(s.Deterministic("r", s.Var("br") - mean, ("group_effect",)))
        for u in units:
            level = u.level_of_pattern[cells.cell_pattern]
            for t, column in enumerate(u.columns):
                group_columns.append((f"{u.uid}_{t + 1}", u.offset + level * len(u.terms) + t, column[cells.cell_pattern]))
        if pairs:
            pair_labels = [f"{u.factor}:{label}" for u in units if u.correlated for label in coords[f"pair_{u.uid}"]]
            coords["group_pair"] = tuple(pair_labels)
            group_nodes.append(s.Deterministic("cor", s.concat("group_pair", *pairs), ("group_pair",)))
    eta = _linear_predictor(population, group_columns, coords, "br" if absorbed else "r", n_cells, add_data)
    if cells.offset is not None:
        eta = eta + add_data(s.Data("offsets", "real", ("cell",)), cells.offset)
    # The likelihood.
    observed_nodes: list = []
    if family == "gaussian":
        sigma, mine = _resolve("sigma", "sigma", None, given, defaults)
        described["sigma"] = (_describe_dist(sigma), mine)
        observed_nodes.append(s.Param("sigma", sigma))
        likelihood = s.Normal(eta, s.Var("sigma"))
        values["y"] = cells.successes
    elif family == "poisson":
        likelihood = s.PoissonLog(eta)
        values["y"] = cells.successes.astype(np.int64)
    elif cells.trials is not None and np.all(cells.trials == 1):
        likelihood = s.BernoulliLogit(eta)
        values["y"] = cells.successes.astype(np.int64)
    else:
        trials = add_data(s.Data("trials", "int", ("cell",), lower=0), cells.trials.astype(np.int64))
        likelihood = s.BinomialLogit(trials, eta)
        values["y"] = cells.successes.astype(np.int64)
    observed_nodes.append(s.Observed("y", likelihood, ("cell",)))
    decisions = []
    predictors = [i for i, c in enumerate(x_columns) if c != "Intercept"]
    if predictors:
        coords["predictor"] = tuple(x_columns[i] for i in predictors)
        index = add_data(s.Data("b_predictor", "int", ("predictor",), index_of="coef"), np.asarray(predictors))
        decisions.append(s.prob("prob_positive", s.Var("b")[index] > 0, ("predictor",), "P(b[{label}] > 0)"))
    # A predictor's effect in each level of a grouping factor that varies it: the seed's
    # question, "did the treatment help in China?", is P(b[treated] + r[country:China,treated] > 0).
    for u in units:
        for t, term in enumerate(u.terms):
            if term == "Intercept" or term not in x_columns:
                continue
            name = f"prob_positive_{u.uid}_{_identifier(term)}"
            column = add_data(s.Data(f"{name}_b", "int", (u.level_dim,), index_of="coef"),
                              np.full(len(u.levels), x_columns.index(term)))
            effect = add_data(s.Data(f"{name}_r", "int", (u.level_dim,), index_of="group_effect"),
                              u.offset + np.arange(len(u.levels)) * len(u.terms) + t)
            decisions.append(s.prob(name, s.Var("b")[column] + s.Var("r")[effect] > 0, (u.level_dim,),
                                    f"P(b[{term}] + r[{u.factor}:{{label}},{term}] > 0)"))
    params = [b_node] if x_columns else []
    model_nodes = (*nodes, *params, *group_nodes, *observed_nodes, *decisions)
    source = (f"file {frame.where}" if frame.file else "a data frame") + (
        f", {cells.rows} rows as {n_cells} cells" if n_cells != cells.rows else f", {cells.rows} rows")
    description = _description(formula, family, parametrization, source, described)
    try:
        model = s.Model("formula", model_nodes, description)
        dataset = s.Dataset(values, coords, source)
        s.check_dataset(model, dataset)
    except s.SpecError as exc:
        raise UserError(f"formula {formula!r}: {exc}") from None
    return FormulaModel(model, dataset, formula, family, parametrization, {k: v for k, (v, _) in described.items()})


def _description(formula: str, family: str, parametrization: str, source: str,
                 priors: dict[str, tuple[str, bool]]) -> str:
    """The formula, family, form and data, and every prior: one line for a class whose
    elements share it, else a line per element; each marked given or default."""
    link = FAMILIES[family][0]
    lines = [f"{formula}, family {family} ({link} link), {parametrization.replace('non', 'non-')}; {source}",
             "priors (default: polyppl's defaults, brms's recipe; given: by the user):"]
    classes: dict[str, list[tuple[str, tuple[str, bool]]]] = {}
    for element, described in priors.items():
        classes.setdefault(element.partition("[")[0], []).append((element, described))
    rows = []
    for cls, items in classes.items():
        if len({d for _, d in items}) == 1 and len(items) > 1:
            rows.append((f"{cls} ~ {items[0][1][0]}", items[0][1][1]))
        else:
            rows += [(f"{element} ~ {text}", mine) for element, (text, mine) in items]
    width = max(len(text) for text, _ in rows)
    lines += [f"  {text:<{width}}  {'given' if mine else 'default'}" for text, mine in rows]
    return "\n".join(lines)


# --------------------------------------------------------------------------- public


def formula(formula: str, data: object, family: str = "bernoulli",
            priors: Mapping[str, str | s.Dist] | Sequence[str] | None = None,
            parametrization: str = "noncentered", collapse: bool = True) -> tuple[s.Model, s.Dataset]:
    """An lme4/brms formula with its data as a spec ``(Model, Dataset)``.

    ``formula``: e.g. ``"success ~ treated + (1 + treated | country)"``; ``data``: a CSV
    path or a pandas DataFrame; ``family``: ``bernoulli``, ``binomial``, ``poisson`` or
    ``gaussian``; ``priors``: ``["sd ~ half_normal(1)", "b[treated] ~ normal(0, 1)"]`` or
    ``{"sd": "half_normal(1)"}`` or ``{"sd": s.HalfNormal(1.0)}`` (defaults: see
    :func:`default_priors`); ``parametrization``: ``noncentered`` or ``centered``;
    ``collapse=False`` keeps one likelihood term per row. The model's description states
    the formula, the family and every prior.
    """
    compiled = compile_formula(formula, data, family, priors, parametrization, collapse)
    return compiled.model, compiled.dataset


def formula_problem(formula: str, data: object, family: str = "bernoulli",
                    priors: Mapping[str, str | s.Dist] | Sequence[str] | None = None,
                    parametrization: str | None = None) -> Problem:
    """The formula as a :class:`Problem` for ``run``, ``compare`` and the other studies,
    labelled ``formula`` with the data file's name as its scenario."""
    compiled = compile_formula(formula, data, family, priors, parametrization or "noncentered")
    scenario = Path(data).stem if isinstance(data, (str, Path)) else "data"
    return Problem(compiled.model, compiled.dataset, Labels("formula", scenario, compiled.parametrization),
                   rebuild=lambda other: formula_problem(formula, data, family, priors, other))


__all__ = ["FAMILIES", "PARAMETRIZATIONS", "PRIOR_CLASSES", "FormulaModel", "Prior", "compile_formula",
           "default_priors", "formula", "formula_problem", "parse_formula", "parse_prior"]
