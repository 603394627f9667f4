"""The ``polyppl`` command: a thin layer over the Python API, one module per command.

Exit codes: 0 success (for ``compare``: the backends agree), 1 a run failed (``compare``:
they disagree), 2 bad input (the message says what and where), 3 ``compare`` could not
decide (a backend failed or did not converge), 4 an internal error of polyppl (one line on
stderr, the traceback in a log file in ``--out``), 130 interrupted (Ctrl-C), 143 terminated
(SIGTERM). A crash never reads as a verdict.
"""

from __future__ import annotations

import argparse
import datetime
import os
import signal
import sys
import tempfile
import threading
import traceback
from pathlib import Path
from typing import Sequence

from polyppl import __version__
from polyppl.cli import bench, compare, models, posteriordb, repro, report, run, sbc, selftest, show
from polyppl.cli.parser import Parser
from polyppl.cli.terminal import quiet_libraries
from polyppl.errors import UserError
from polyppl.execution.child import use_forkserver
from polyppl.spec import SpecError

#: Each adds its subcommand with ``register(subparsers)`` and imports what its handler
#: needs (ArviZ, backends) only when it runs, so the CLI starts and checks input fast.
COMMANDS = (models, run, compare, show, repro, bench, report, sbc, posteriordb, selftest)
#: Exit code of an internal error (a bug of polyppl or of a library under it).
INTERNAL_ERROR = 4


class Terminated(BaseException):
    """SIGTERM, raised in the main thread so that every ``finally`` runs: child processes and
    a local cluster are ended, finished results kept."""


def _terminate(signum, frame) -> None:
    signal.signal(signal.SIGTERM, signal.SIG_IGN)  # a second one must not cut the clean-up short
    raise Terminated()


def build_parser() -> argparse.ArgumentParser:
    parser = Parser(prog="polyppl", description="One Bayesian model on PyMC, NumPyro and Stan: compare their "
                    "posteriors, diagnostics and speed. `polyppl COMMAND --help` describes each command.")
    parser.add_argument("--version", action="version", version=f"polyppl {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
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
    previous = signal.signal(signal.SIGTERM, _terminate) if threading.current_thread() is threading.main_thread() else None
    try:
        with quiet_libraries():  # what matters to a result, polyppl says in its own words
            return args.func(args)
    except (UserError, SpecError) as exc:
        print(f"polyppl {args.command}: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("polyppl: interrupted; finished results are kept", file=sys.stderr)
        return 130
    except Terminated:
        print("polyppl: terminated; finished results are kept", file=sys.stderr)
        return 143
    except BrokenPipeError:
        # The reader went away (`polyppl repro | head`): stop writing, quietly.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0
    except Exception as exc:  # a bug: say so in one line, keep the traceback for the report
        log = _write_traceback(getattr(args, "out", None) or getattr(args, "out_dir", None))
        print(f"polyppl: internal error: {type(exc).__name__}: {exc}".splitlines()[0][:300]
              + f" (traceback in {log}; please report it)", file=sys.stderr)
        return INTERNAL_ERROR
    finally:
        if previous is not None:
            signal.signal(signal.SIGTERM, previous)


def _write_traceback(folder: Path | None) -> Path:
    """The current exception's traceback in ``FOLDER/polyppl-error-TIME-PID.log`` (the
    temporary folder where ``FOLDER`` cannot be written)."""
    text = f"polyppl {' '.join(sys.argv[1:])}\n\n{traceback.format_exc()}"
    name = f"polyppl-error-{datetime.datetime.now():%Y%m%d-%H%M%S}-{os.getpid()}.log"
    for where in ([Path(folder)] if folder else []) + [Path(tempfile.gettempdir())]:
        try:
            where.mkdir(parents=True, exist_ok=True)
            (where / name).write_text(text)
            return where / name
        except OSError:
            continue
    return Path(os.devnull)
