"""Stan's own compiler checks a program before polyppl reads it, so that a program Stan
rejects gets Stan's message and line, not the front end's guess.

stanc ships inside httpstan (a dependency) and with CmdStan (``bin/stanc``); the first found
is used. It is run only to check (its C++ goes to a temporary folder)."""

from __future__ import annotations

import os
import re
import subprocess
import tempfile
from pathlib import Path

from polyppl.errors import UserError

# "Semantic error in '/tmp/x.stan', line 3, column 8 to column 25:" / "Syntax error in ..., line 3, column 8 ..."
_WHERE = re.compile(r"(Semantic|Syntax) error in '[^']*', line (\d+), column (\d+)")


def stanc_path() -> Path | None:
    """httpstan's stanc, else CmdStan's (``$CMDSTAN/bin/stanc``); None where neither is installed."""
    try:
        import httpstan

        bundled = Path(httpstan.__file__).parent / "stanc"
        if bundled.is_file():
            return bundled
    except ImportError:
        pass
    cmdstan = os.environ.get("CMDSTAN")
    if cmdstan and (Path(cmdstan) / "bin" / "stanc").is_file():
        return Path(cmdstan) / "bin" / "stanc"
    return None


def check_with_stanc(text: str, source: str) -> None:
    """Raise a UserError with Stan's own message and line if Stan rejects the program."""
    stanc = stanc_path()
    if stanc is None:
        return  # no Stan installed: the front end's own parse is the only check
    with tempfile.TemporaryDirectory(prefix="polyppl-stanc-") as folder:
        program = Path(folder) / "program.stan"
        program.write_text(text)
        result = subprocess.run([str(stanc), str(program), "--o", str(Path(folder) / "program.hpp")],
                                capture_output=True, text=True, timeout=120)
    if result.returncode == 0:
        return
    message = (result.stderr or result.stdout).strip()
    where = _WHERE.search(message)
    lines = [line.strip() for line in message.splitlines() if line.strip()]
    reason = lines[-1] if lines else "stanc rejected it"
    if where:
        kind, line, column = where.groups()
        raise UserError(f"{source}: line {line}, column {column}: Stan rejects this program ({kind.lower()} error): "
                        f"{reason}")
    raise UserError(f"{source}: Stan rejects this program: {reason}")
