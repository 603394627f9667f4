"""The ``polyppl`` command: a thin layer over the Python API, one module per command.

Exit codes: 0 success (for ``compare``: the backends agree), 1 a run failed (``compare``:
they disagree), 2 bad input (the message says what and where), 3 ``compare`` could not
decide (a backend failed or did not converge), 130 interrupted.
"""

from __future__ import annotations

import argparse
import os
import sys
from typing import Sequence

from polyppl.cli import bench, compare, models, posteriordb, repro, report, run, sbc, show
from polyppl.errors import UserError
from polyppl.execution.child import use_forkserver
from polyppl.spec import SpecError

#: Each adds its subcommand with ``register(subparsers)`` and imports what its handler
#: needs (ArviZ, backends) only when it runs, so the CLI starts and checks input fast.
COMMANDS = (models, run, compare, show, repro, bench, report, sbc, posteriordb)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="polyppl", description="One Bayesian model on PyMC, NumPyro and Stan.")
    sub = parser.add_subparsers(dest="command", required=True)
    for command in COMMANDS:
        command.register(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as exc:  # argparse has printed usage and the error (or --help)
        return int(exc.code or 0)
    use_forkserver()
    try:
        return args.func(args)
    except (UserError, SpecError) as exc:
        print(f"polyppl: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("polyppl: interrupted; finished results are kept", file=sys.stderr)
        return 130
    except BrokenPipeError:
        # The reader went away (`polyppl repro | head`): stop writing, quietly.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0
