"""Errors a user can fix. The CLI prints their message and exits with code 2, no traceback."""

from __future__ import annotations

from typing import Iterable


class UserError(Exception):
    """Bad input: a file, an option or a name. The message says what and where."""


def unknown(kind: str, value: object, valid: Iterable[str]) -> UserError:
    return UserError(f"unknown {kind} {value!r}; expected one of: {', '.join(valid)}")
