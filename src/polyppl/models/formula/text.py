"""The formula's text: what this package reads itself, and how the rest is handed to formulae.

formulae parses the fixed part and the terms inside each group block. It lacks the
uncorrelated ``(1 + x || g)`` (it reads ``||`` as nothing), keeps terms rather than blocks
(lme4 correlates the terms of one block), and evaluates offsets with the fixed part; so
:func:`parse_formula` splits the text first, at the top-level ``~`` and ``+`` and at each
block's bar, into the right-hand side formulae gets, the group blocks and the offsets.
:func:`_formulae_call` is the one way formulae is called, so that its errors reach the user
as errors about the formula or the data.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

import numpy as np

from polyppl.errors import UserError


#: Names the formula may call besides the data's columns (formulae also knows C, center, ...).
NAMESPACE: dict[str, object] = {"log": np.log, "exp": np.exp, "sqrt": np.sqrt, "log1p": np.log1p}


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
