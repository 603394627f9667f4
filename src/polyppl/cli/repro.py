"""``polyppl repro``: list the reproductions, or run one on each backend."""

from __future__ import annotations

import argparse
from pathlib import Path

from polyppl.backends import BACKENDS
from polyppl.cli.common import column_list, positive_int, progress


def register(sub: argparse._SubParsersAction) -> None:
    parser = sub.add_parser(
        "repro", help="reproduce failures users report, explain them, and run the fix",
        description="Without a name: list the scenarios. With one: run it on each backend.",
    )
    parser.add_argument("name", nargs="?", help="scenario to run (omit to list them)")
    parser.add_argument("--backends", type=column_list,
                        help=f"comma-separated subset of {','.join(BACKENDS)}, each optionally BACKEND:ENGINE")
    parser.add_argument("--seed-count", type=positive_int, default=20, metavar="N",
                        help="how many seeds a seed-dependent failure is tried on")
    parser.add_argument("--json", type=Path, help="also write the report as JSON to this file")
    parser.set_defaults(func=cmd_repro)


def cmd_repro(args: argparse.Namespace) -> int:
    from polyppl.errors import unknown
    from polyppl.studies.repro import SCENARIOS, run_repro

    if args.name is None:
        for scenario in SCENARIOS.values():
            print(f"{scenario.name}: {scenario.title} [{', '.join(scenario.runners)}]")
        return 0
    if args.name not in SCENARIOS:
        raise unknown("scenario", args.name, SCENARIOS)
    report = run_repro(args.name, [c.label for c in args.backends] if args.backends else None, seeds=args.seed_count,
                       progress=progress)
    print(report.text())
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(report.to_json() + "\n")
        print(f"\nsaved: {args.json}")
    return 0
