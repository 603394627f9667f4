"""``polyppl selftest``: the statistical claims users rely on (the agreement test's false
alarms and power, SBC's power and calibration, the VI scorecard), measured again on the grid."""

from __future__ import annotations

import argparse
import shlex
import sys
from pathlib import Path

from polyppl.cli.common import add_grid_arguments, non_negative_int, progress
from polyppl.errors import UserError

DEFAULT_OUT = Path("polyppl-selftest")
STATUS_CODES = "exit code 0 every claim holds, 1 a claim fails, 3 a claim could not be measured, 2 bad input"


def register(sub: argparse._SubParsersAction) -> None:
    parser = sub.add_parser(
        "selftest", help="measure again the statistical claims polyppl makes (false alarms, power, calibration)",
        description="Re-measure polyppl's statistical claims on real backends: the agreement test's false-alarm rate "
        "on backends that are right and its power against a skewed one, SBC's power against deliberately broken "
        "compilers and every backend's calibration, and the VI scorecard on posteriors with known verdicts. Each "
        "rate is printed with its 95% interval, the claim it checks and whether the claim holds; "
        f"{STATUS_CODES}. Tasks run on a Dask cluster (a local one by default) and are kept in a ledger: a run "
        "started again runs only what is missing.")
    size = parser.add_mutually_exclusive_group()
    size.add_argument("--quick", dest="profile", action="store_const", const="quick",
                      help="CI's size, minutes on 2 cores, with the power to catch a doubling of each stated rate "
                      "(the default)")
    size.add_argument("--full", dest="profile", action="store_const", const="full",
                      help="the sizes the README's numbers come from (hours on 2 cores; use a cluster)")
    parser.set_defaults(profile="quick")
    parser.add_argument("--seed", type=non_negative_int, default=1, help="the seed every claim's seeds derive from (default 1)")
    add_grid_arguments(parser, "tasks")
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT,
                        help=f"folder for the ledger, the JSON, the Markdown and the HTML page (default {DEFAULT_OUT})")
    parser.add_argument("--json", type=Path, metavar="FILE", help="also write the JSON result to this file")
    parser.set_defaults(func=cmd_selftest)


def cmd_selftest(args: argparse.Namespace) -> int:
    from polyppl.render.selftest_report import selftest_text, write_selftest_files
    from polyppl.studies.selftest import run_selftest, save_json, selftest_stem

    if args.out.exists() and not args.out.is_dir():
        raise UserError(f"--out {args.out}: a file, not a folder")
    if args.json is not None and (args.json.is_dir() or not args.json.parent.is_dir()):
        raise UserError(f"--json {args.json}: expected a file in an existing folder")
    command = "polyppl " + " ".join(shlex.quote(a) for a in sys.argv[1:]) if sys.argv[1:2] == ["selftest"] else None
    run = run_selftest(args.profile, seed=args.seed, out=args.out, scheduler=args.scheduler, workers=args.workers,
                       retries=args.retries, progress=progress, command=command)
    data = run.to_json()
    print(selftest_text(data))
    saved = save_json(run)
    markdown, page = write_selftest_files(data, selftest_stem(args.out, run.profile))
    print(f"\nsaved: {saved}, {markdown} (ledger {run.ledger})")
    if args.json:
        print(f"saved: {save_json(run, args.json)}")
    print(f"report: {page}")
    return run.exit_code
