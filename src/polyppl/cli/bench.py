"""``polyppl bench``: the scaling sweep (CSV, JSON, plots, growth exponents)."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from polyppl.backends import BACKENDS
from polyppl.cli.common import add_engine_arguments, column_list, labels_with_engines, positive_int
from polyppl.errors import UserError
from polyppl.models import MODELS

DEFAULT_OUT = Path("polyppl-bench")


def register(sub: argparse._SubParsersAction) -> None:
    parser = sub.add_parser("bench", help="scaling sweep: cost per backend as the data grow (CSV, JSON, PNG)",
                            description="Time every backend on built-in models as their data grow (groups, rows, "
                            "variants); write a CSV/JSON table, log-log plots and fitted growth exponents. Resumable: "
                            "each finished point is kept in --out.")
    parser.add_argument("models", nargs="*", metavar="MODEL",
                        help="built-in models to sweep (default: every model that has a sweep)")
    parser.add_argument("--backends", type=column_list, help=f"comma-separated subset of {','.join(BACKENDS)} (default: "
                        "all), each optionally BACKEND:ENGINE, e.g. stan:pystan,stan:cmdstanpy")
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT, help=f"folder for points and results (default {DEFAULT_OUT})")
    add_engine_arguments(parser)
    size = parser.add_mutually_exclusive_group()
    size.add_argument("--quick", action="store_true", help="the default: 3 sizes per model, 2 chains x 300 + 300 (minutes)")
    size.add_argument("--full", action="store_true", help="2-2,048 groups, 100-100,000 rows per cell (and 100-3,000 "
                      "row-level), 4-1,024 variants, 4 chains x 1000 + 1000 (about 2 hours on 2 cores; resumable)")
    grid = parser.add_mutually_exclusive_group()
    grid.add_argument("--scheduler", metavar="ADDRESS",
                      help="run the points on this Dask scheduler's workers (tcp://HOST:PORT); points that run at once "
                      "share their machine, so their timings are not a quiet machine's")
    grid.add_argument("--workers", type=positive_int,
                      help="run the points on a local Dask cluster of this many worker processes (default: one point "
                      "after another, without Dask)")
    parser.set_defaults(func=cmd_bench)


def cmd_bench(args: argparse.Namespace) -> int:
    from polyppl.render.bench import exponents_text, plot
    from polyppl.studies.bench import FULL, QUICK, growth_exponents, run_sweep, sweep_models

    swept = sweep_models()
    for model in args.models:
        if model not in swept:
            known = "" if model in MODELS else "no such model; "
            raise UserError(f"no scaling sweep for model {model!r} ({known}sweeps exist for: {', '.join(swept)})")
    backends = labels_with_engines(args.backends, args)
    rows = run_sweep(args.out, FULL if args.full else QUICK, args.models or swept, backends,
                     scheduler=args.scheduler, workers=args.workers)
    plot(rows, args.out)
    print(exponents_text(growth_exponents(rows)))
    print(f"saved: {args.out / 'scaling.csv'}, {args.out / 'scaling.json'}, plots {args.out}/scaling-*.png")
    failed = [r for r in rows if r["status"] != "ok"]
    for row in failed:
        print(f"point {row['key']}: {row['status']} {row.get('error', '')}", file=sys.stderr)
    return 1 if failed else 0
