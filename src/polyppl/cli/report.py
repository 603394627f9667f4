"""``polyppl report``: the HTML report of a finished comparison, without sampling."""

from __future__ import annotations

import argparse
from pathlib import Path

from polyppl.cli.common import DEFAULT_OUT


def register(sub: argparse._SubParsersAction) -> None:
    parser = sub.add_parser("report", help="write the HTML report of a finished comparison (no sampling)",
                            description="Write the HTML report of a comparison that `polyppl compare` finished, "
                            "from its --out folder, without sampling again.")
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT, help="the --out folder of `polyppl compare`")
    parser.add_argument("--report", type=Path, metavar="FILE.html",
                        help="HTML report to write (default OUT/<model>-<scenario>-report.html)")
    parser.add_argument("--model", help="which comparison, when OUT holds several")
    parser.add_argument("--scenario", help="which comparison, when OUT holds several")
    parser.set_defaults(func=cmd_report)


def cmd_report(args: argparse.Namespace) -> int:
    from polyppl.render.report import default_report_path, write_report
    from polyppl.studies.compare import load_comparison

    comparison = load_comparison(args.out, args.model, args.scenario)
    path = args.report or default_report_path(args.out, comparison)
    print(f"report: {write_report(comparison, path)}")
    return 0
