"""``polyppl posteriordb``: posteriordb's posteriors on every backend, each checked against
the reference draws; or ``--list`` what the snapshot holds."""

from __future__ import annotations

import argparse
from pathlib import Path

from polyppl.backends import BACKENDS
from polyppl.cli.common import (
    add_engine_arguments, add_grid_arguments, column_list, engines_from, non_negative_int, positive_int, progress,
    remedy_list,
)
from polyppl.errors import UserError

DEFAULT_OUT = Path("polyppl-posteriordb")
STATUS_CODES = ("exit code 0 every posterior run passes or is unsupported, 1 some posterior fails or a fit errs, "
                "3 some posterior is inconclusive (and none fails), 2 bad input")


def register(sub: argparse._SubParsersAction) -> None:
    parser = sub.add_parser(
        "posteriordb", help="posteriordb's posteriors on every backend, checked against its reference draws",
        description="Fit posteriors of posteriordb (https://github.com/stan-dev/posteriordb, BSD licence) on every "
        "backend and test each against the reference draws (mean, sd, 5%% and 95%% quantiles of every quantity, "
        f"MCSE-aware, 1%% family-wise false alarms per posterior) and against the others; {STATUS_CODES}. Fits run on "
        "a Dask cluster (a local one by default) and are kept in a ledger: a run started again runs only what is "
        "missing.")
    parser.add_argument("names", nargs="*", metavar="NAME", help="posteriors by name (see --list)")
    which = parser.add_mutually_exclusive_group()
    which.add_argument("--all", action="store_true", help="every posterior of the snapshot")
    which.add_argument("--reference-only", action="store_true", help="the posteriors with reference draws")
    which.add_argument("--list", action="store_true",
                       help="list the posteriors, whether each has reference draws and whether its program imports")
    parser.add_argument("--path", type=Path, metavar="DIR",
                        help="a posteriordb checkout or its posterior_database folder (default: $POLYPPL_POSTERIORDB)")
    parser.add_argument("--backends", type=column_list,
                        help=f"comma-separated columns: {','.join(BACKENDS)} (default: all), each optionally BACKEND:ENGINE")
    parser.add_argument("--chains", type=positive_int, default=4, help="chains per fit (default 4)")
    parser.add_argument("--draws", type=positive_int, default=1000, help="draws per chain after warm-up (default 1000)")
    parser.add_argument("--tune", type=non_negative_int, default=1000, help="warm-up iterations per chain (default 1000)")
    parser.add_argument("--seed", type=non_negative_int, default=1, help="the sampler seed of every fit (default 1)")
    add_engine_arguments(parser)
    parser.add_argument("--remedies", type=remedy_list, metavar="RUNGS",
                        help="what a posterior tries when a backend's fit is flagged, every backend again at each rung, "
                        "each rung's fits kept in the ledger (default: target,draws: divergences -> target acceptance "
                        "0.95, then 0.99, then 0.999; R-hat or ESS without divergences -> longer chains from the ESS per draw, at most "
                        "10 x --draws; 'none' turns the ladder off). Not the other parametrization: the reference draws "
                        "are of the program as written")
    add_grid_arguments(parser, "fits")
    parser.add_argument("--timeout", type=float, help="seconds allowed per fit (default: none)")
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT, help=f"folder for the ledger and results (default {DEFAULT_OUT})")
    parser.add_argument("--json", type=Path, metavar="FILE", help="also write the JSON result to this file")
    parser.add_argument("--report", type=Path, metavar="FILE.html",
                        help="HTML report to write (default OUT/posteriordb-report.html)")
    parser.set_defaults(func=cmd_posteriordb)


def cmd_posteriordb(args: argparse.Namespace) -> int:
    from polyppl.inference.idata import save_json
    from polyppl.inference.methods import SamplerSettings
    from polyppl.render.posteriordb_report import posteriordb_text, write_posteriordb_report, write_speed_png
    from polyppl.render.text import table
    from polyppl.studies.posteriordb import listing, run_posteriordb

    if args.list:
        if args.names:
            raise UserError("--list lists the whole snapshot; leave out the names")
        rows = listing(args.path)
        print(table(["posterior", "reference", "program", "why"],
                    [[r["name"], "yes" if r["reference"] else "no", r["program"], r["why"]] for r in rows]))
        with_reference = sum(r["reference"] for r in rows)
        supported = sum(r["program"] == "supported" for r in rows)
        print(f"\n{len(rows)} posteriors, {with_reference} with reference draws, {supported} importable")
        return 0
    if args.timeout is not None and args.timeout <= 0:
        raise UserError(f"--timeout must be positive, got {args.timeout}")
    selection = "all" if args.all else "reference-only" if args.reference_only else "names"
    settings = SamplerSettings(chains=args.chains, draws=args.draws, tune=args.tune, seed=args.seed)
    run = run_posteriordb(
        args.path, args.names, selection, [c.label for c in args.backends] if args.backends else None,
        settings=settings, engines=engines_from(args), out=args.out, scheduler=args.scheduler, workers=args.workers,
        timeout=args.timeout, retries=args.retries, remedies=args.remedies, progress=progress)
    print(posteriordb_text(run))
    result = run.to_json()
    saved = args.out / "posteriordb.json"
    save_json(result, saved)
    print(f"\nsaved: {saved} (ledger {run.ledger})")
    if args.json:
        save_json(result, args.json)
        print(f"saved: {args.json}")
    print(f"report: {write_posteriordb_report(run, args.report)}")
    png = write_speed_png(run)
    if png is not None:
        print(f"speed plot: {png}")
    return run.exit_code
