"""``polyppl report``: the HTML report of a finished comparison, without sampling."""

from __future__ import annotations

import argparse
from pathlib import Path

from polyppl.cli.common import DEFAULT_OUT, column_list


def register(sub: argparse._SubParsersAction) -> None:
    parser = sub.add_parser("report", help="write the HTML report of a finished comparison or SBC run (no sampling)",
                            description="Write the HTML report of a comparison that `polyppl compare` finished, or of "
                            "an SBC run that `polyppl sbc` finished, from its --out folder, without sampling again.")
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT,
                        help="the --out folder of `polyppl compare` or `polyppl sbc`")
    parser.add_argument("--sbc", action="store_true",
                        help="the SBC run's report (the default where OUT holds SBC results and no comparison)")
    parser.add_argument("--report", type=Path, metavar="FILE.html",
                        help="HTML report to write (default OUT/<model>-<scenario>-report.html, "
                        "OUT/<model>-<scenario>-sbc-report.html for an SBC run)")
    parser.add_argument("--model", help="which comparison, when OUT holds several")
    parser.add_argument("--scenario", help="which comparison, when OUT holds several")
    parser.add_argument("--backends", type=column_list,
                        help="which comparison, by its columns (as given to `polyppl compare --backends`), "
                        "when OUT holds several of one model and scenario")
    parser.set_defaults(func=cmd_report)


def cmd_report(args: argparse.Namespace) -> int:
    out = args.out
    if args.sbc or (out.is_dir() and any(out.glob("*-sbc.json")) and not any(out.glob("*-comparison.json"))):
        return _sbc_report(args)
    from polyppl.render.report import default_report_path, write_report
    from polyppl.studies.compare import load_comparison

    backends = [c.label for c in args.backends] if args.backends else None
    comparison = load_comparison(args.out, args.model, args.scenario, backends)
    path = args.report or default_report_path(args.out, comparison)
    print(f"report: {write_report(comparison, path)}")
    return 0


def _sbc_report(args: argparse.Namespace) -> int:
    from polyppl.render.sbc_report import write_sbc_report
    from polyppl.studies.sbc import load_sbc_run

    run = load_sbc_run(args.out, args.model, args.scenario)
    report, *figures = write_sbc_report(run, args.report, figures=args.out)
    print(f"report: {report}" + (f"; figures: {', '.join(map(str, figures))}" if figures else ""))
    return 0
