"""Reading user CSV files with errors that name the file, line, column and value.

The csv module rather than pandas: line numbers must be exact and nothing may be
silently coerced (a "3.0" count, an empty cell read as NaN).
"""

from __future__ import annotations

import csv
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Sequence

from polyppl.errors import UserError


@dataclass(frozen=True)
class Cell:
    """One value of a CSV file and where it was read."""

    path: Path
    line: int
    column: str
    text: str

    def where(self) -> str:
        return f"{self.path}, line {self.line}, column {self.column!r}"

    def error(self, what: str) -> UserError:
        return UserError(f"{self.where()}: value {self.text!r} {what}")


@dataclass(frozen=True)
class Table:
    path: Path
    columns: tuple[str, ...]
    rows: list[dict[str, Cell]]


def read_table(path: Path, layouts: Sequence[Sequence[str]]) -> Table:
    """Read a CSV whose header is exactly one of ``layouts`` (in any order)."""
    path = Path(path)
    if not path.is_file():
        raise UserError(f"{path}: no such file")
    try:
        with path.open(newline="", encoding="utf-8-sig") as handle:
            lines = list(csv.reader(handle))
    except (UnicodeDecodeError, csv.Error) as exc:
        raise UserError(f"{path}: not a readable CSV file ({exc})") from None
    expected = " or ".join(",".join(layout) for layout in layouts)
    if not lines or not any(cell.strip() for cell in lines[0]):
        raise UserError(f"{path}: the file is empty; expected a header line {expected}")
    header = tuple(cell.strip() for cell in lines[0])
    layout = next((tuple(l) for l in layouts if set(l) == set(header) and len(l) == len(header)), None)
    if layout is None:
        known = set().union(*map(set, layouts))
        extra = [c for c in header if c not in known]
        if extra:
            raise UserError(f"{path}, line 1: unknown column {extra[0]!r}; expected columns {expected}")
        dupes = [c for c in header if header.count(c) > 1]
        if dupes:
            raise UserError(f"{path}, line 1: column {dupes[0]!r} appears twice; expected columns {expected}")
        closest = min(layouts, key=lambda l: len(set(l) - set(header)))
        missing = [c for c in closest if c not in header]
        raise UserError(f"{path}, line 1: missing column {missing[0]!r}; expected columns {expected}")
    rows: list[dict[str, Cell]] = []
    for number, cells in enumerate(lines[1:], start=2):
        if not any(c.strip() for c in cells):
            continue  # blank lines carry no data
        if len(cells) != len(header):
            raise UserError(f"{path}, line {number}: {len(cells)} fields, expected {len(header)} ({','.join(header)})")
        rows.append({col: Cell(path, number, col, text.strip()) for col, text in zip(header, cells)})
    if not rows:
        raise UserError(f"{path}: no data rows after the header")
    return Table(path, layout, rows)


def label(cell: Cell) -> str:
    if not cell.text:
        raise cell.error("is empty; expected a label")
    return cell.text


def integer(cell: Cell, minimum: int | None = None, what: str = "a count") -> int:
    if not cell.text:
        raise cell.error(f"is empty; expected {what}")
    try:
        value = int(cell.text)
    except ValueError:
        try:
            number = float(cell.text)
        except ValueError:
            raise cell.error(f"is not a number; expected {what}") from None
        if math.isnan(number):
            raise cell.error(f"is NaN; expected {what}") from None
        raise cell.error(f"is not a whole number; expected {what}") from None
    if minimum is not None and value < minimum:
        raise cell.error(f"is below {minimum}; expected {what}")
    return value


def real(cell: Cell, check: Callable[[float], bool] = math.isfinite, what: str = "a finite number") -> float:
    if not cell.text:
        raise cell.error(f"is empty; expected {what}")
    try:
        value = float(cell.text)
    except ValueError:
        raise cell.error(f"is not a number; expected {what}") from None
    if math.isnan(value) or not check(value):
        raise cell.error(f"is not {what}")
    return value


def unique_labels(cells: Sequence[Cell], what: str) -> list[str]:
    """Labels in order of first appearance; a repeat is an error."""
    seen: dict[str, Cell] = {}
    for cell in cells:
        name = label(cell)
        if name in seen:
            raise cell.error(f"repeats the {what} of line {seen[name].line}; each {what} must appear once")
        seen[name] = cell
    return list(seen)
