"""Errors a user can fix. The CLI prints their message and exits with code 2, no traceback."""

from __future__ import annotations

import difflib
from typing import Iterable


class UserError(Exception):
    """Bad input: a file, an option or a name. The message says what and where."""


def did_you_mean(value: object, valid: Iterable[str]) -> str:
    """`` (did you mean 'eight-schools'?)`` for a near miss among ``valid``, else ``""``."""
    close = difflib.get_close_matches(str(value), [str(v) for v in valid], n=2, cutoff=0.6)
    if not close:
        return ""
    return f" (did you mean {' or '.join(repr(c) for c in close)}?)"


def unknown(kind: str, value: object, valid: Iterable[str]) -> UserError:
    valid = list(valid)
    return UserError(f"unknown {kind} {value!r}{did_you_mean(value, valid)}; expected one of: {', '.join(map(str, valid))}")
