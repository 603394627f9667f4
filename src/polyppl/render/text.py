"""Plain-text tables for the terminal: no colour codes, so logs and pipes stay readable."""

from __future__ import annotations

import math
from typing import Any, Sequence


def fmt(value: Any, digits: int = 3) -> str:
    if value is None:
        return "-"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        if math.isnan(value):
            return "nan"
        if math.isinf(value):
            return "inf" if value > 0 else "-inf"
        if value != 0 and (abs(value) >= 1e5 or abs(value) < 10 ** -(digits)):
            return f"{value:.{max(digits - 1, 0)}e}"  # digits 0 (whole numbers): one significant digit
        return f"{value:.{digits}f}"
    return str(value)


def table(headers: Sequence[str], rows: Sequence[Sequence[Any]], title: str | None = None) -> str:
    cells = [[fmt(c) for c in row] for row in rows]
    widths = [max([len(h)] + [len(r[i]) for r in cells]) for i, h in enumerate(headers)]

    def line(values: Sequence[str]) -> str:
        first = values[0].ljust(widths[0])
        rest = [v.rjust(w) for v, w in zip(values[1:], widths[1:])]
        return "  ".join([first, *rest]).rstrip()

    out = [title, "=" * len(title)] if title else []
    out += [line(list(headers)), line(["-" * w for w in widths])]
    out += [line(r) for r in cells]
    return "\n".join(out)


def plus_minus(estimate: float, error: float) -> str:
    return f"{estimate:.3f} ± {error:.3f}"
