"""``polyppl report``: the HTML report of a finished comparison, without sampling."""

from __future__ import annotations

import argparse
from pathlib import Path


def register(sub: argparse._SubParsersAction) -> None:
    parser = sub.add_parser("report", help="write the HTML report of a finished comparison (no sampling)")
    parser.add_argument("out_dir", type=Path, metavar="OUT_DIR", help="the --out folder of `polyppl compare`")
    parser.add_argument("--output", type=Path, metavar="FILE.html",
                        help="where to write it (default OUT_DIR/<model>-<scenario>-report.html)")
    parser.add_argument("--model", help="which comparison, when OUT_DIR holds several")
    parser.add_argument("--scenario", help="which comparison, when OUT_DIR holds several")
    parser.set_defaults(func=cmd_report)


def cmd_report(args: argparse.Namespace) -> int:
    from polyppl.render.report import default_report_path, write_report
    from polyppl.studies.compare import load_comparison

    comparison = load_comparison(args.out_dir, args.model, args.scenario)
    path = args.output or default_report_path(args.out_dir, comparison)
    print(f"report: {write_report(comparison, path)}")
    return 0
