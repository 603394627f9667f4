"""``polyppl bench``: the scaling sweep (CSV, JSON, plots, growth exponents)."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from polyppl.backends import BACKENDS
from polyppl.cli.common import add_engine_arguments, column_list, labels_with_engines, positive_int
from polyppl.errors import UserError
from polyppl.models import MODELS
from polyppl.models.stan_program import is_stan_program

DEFAULT_OUT = Path("polyppl-bench")


def register(sub: argparse._SubParsersAction) -> None:
    parser = sub.add_parser("bench", help="scaling sweep: cost per backend as the data grow (CSV, JSON, PNG)",
                            description="Time every backend on built-in models as their data grow (groups, rows, "
                            "variants); write a CSV/JSON table, log-log plots and fitted growth exponents. Resumable: "
                            "each finished point is kept in --out.")
    parser.add_argument("models", nargs="*", metavar="MODEL",
                        help="built-in models to sweep (default: every model that has a sweep), or one PROGRAM.stan "
                        "with --data: each backend timed once on the program's own data (no sweep)")
    parser.add_argument("--data", type=Path, metavar="DATA.json",
                        help="for PROGRAM.stan, Stan's JSON data (.json or .json.zip)")
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

    programs = [m for m in args.models if is_stan_program(m)]
    if programs:
        return _bench_program(args, programs)
    if args.data is not None:
        raise UserError("--data goes with a Stan program: polyppl bench PROGRAM.stan --data DATA.json")
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


def _bench_program(args: argparse.Namespace, programs: list[str]) -> int:
    """``polyppl bench PROGRAM.stan --data DATA.json``: each backend on the program's data."""
    from polyppl.models.stan_program import stan_program
    from polyppl.render.bench import points_text
    from polyppl.studies.bench import FULL, QUICK, ProgramData, run_sweep

    if len(args.models) != 1:
        raise UserError(f"bench takes one Stan program, alone, got: {' '.join(args.models)}")
    if args.data is None:
        raise UserError(f"{programs[0]}: a Stan program needs its data: --data DATA.json")
    stan_program(programs[0], args.data)  # checked (Stan's compiler, the data, the lowering) before anything runs
    backends = labels_with_engines(args.backends, args)
    rows = run_sweep(args.out, FULL if args.full else QUICK, backends=backends, scheduler=args.scheduler,
                     workers=args.workers, program=ProgramData.of(programs[0], args.data))
    print(points_text(rows))
    print(f"saved: {args.out / 'scaling.csv'}, {args.out / 'scaling.json'}")
    failed = [r for r in rows if r["status"] != "ok"]
    for row in failed:
        print(f"point {row['key']}: {row['status']} {row.get('error', '')}", file=sys.stderr)
    return 1 if failed else 0
