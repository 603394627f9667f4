"""``polyppl sbc``: simulation-based calibration of every backend on a grid of fits."""

from __future__ import annotations

import argparse
from pathlib import Path

from polyppl.backends import BACKENDS
from polyppl.cli.common import (
    add_engine_arguments, add_grid_arguments, add_model_arguments, column_list, engines_from, method_list, remedy_list,
    non_negative_int, positive_int, problem_from, progress,
)
from polyppl.inference.methods import METHODS

DEFAULT_OUT = Path("polyppl-sbc")
VERDICT_CODES = "exit code 0 calibrated, 1 miscalibrated, 3 a backend has no finished fits, 2 bad input"


def register(sub: argparse._SubParsersAction) -> None:
    parser = sub.add_parser(
        "sbc", help="simulation-based calibration: rank true values among posterior draws, on every backend",
        description="Draw parameters from the prior and data from the likelihood, fit every backend to each data set "
        f"and test that the ranks of the true values are uniform; {VERDICT_CODES}. Fits run on a Dask cluster "
        "(a local one by default) and are kept in a ledger: a run started again runs only what is missing.")
    add_model_arguments(parser)
    parser.add_argument("--backends", type=column_list,
                        help=f"comma-separated columns: {','.join(BACKENDS)} (default: all), each optionally BACKEND:ENGINE")
    parser.add_argument("--methods", type=method_list, default=["nuts"],
                        help=f"comma-separated inference methods of {', '.join(METHODS)} (default nuts)")
    parser.add_argument("--simulations", type=positive_int, default=200, help="simulations per backend (default 200)")
    parser.add_argument("--seed", type=non_negative_int, default=1,
                        help="simulation i of seed s always gets the same parameters, data and sampler seed")
    parser.add_argument("--substitute", action="append", default=[], metavar="'NAME ~ FAMILY(ARGS)'",
                        help="a proper prior in place of an improper one (e.g. 'a ~ gamma(2, 0.1)'), or "
                        "'NAME ~ none' to drop a factor; repeatable. The model with substitutes is simulated and fitted")
    parser.add_argument("--chains", type=positive_int, default=4, help="chains per fit")
    parser.add_argument("--draws", type=positive_int, default=250, help="draws per chain after warm-up (default 250)")
    parser.add_argument("--tune", type=non_negative_int, default=500, help="warm-up iterations per chain (default 500)")
    parser.add_argument("--target-accept", type=float,
                        help="NUTS target acceptance, all backends (default: 0.9, or what the model asks for)")
    add_engine_arguments(parser)
    parser.add_argument("--remedies", type=remedy_list, metavar="RUNGS",
                        help="what a flagged NUTS fit of a simulation tries before its ranks are taken (default: none, the "
                        "sampler as asked; target: divergences -> the same data and seed at target acceptance 0.95, then "
                        "0.99, then 0.999; draws: longer chains for R-hat or ESS). The ranks are the chosen rung's, by a rule that never "
                        "sees the true values: SBC then calibrates NUTS with the ladder, as compare and run deliver it "
                        "(docs/sbc.md)")
    add_grid_arguments(parser, "fits")
    parser.add_argument("--timeout", type=float, help="seconds allowed per fit (default: none)")
    parser.add_argument("--alpha", type=float, default=0.05,
                        help="family-wise false-alarm rate of the calibration tests, per backend")
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT, help=f"folder for the ledger and results (default {DEFAULT_OUT})")
    parser.add_argument("--json", type=Path, help="also write the JSON result to this file")
    parser.add_argument("--report", type=Path, metavar="FILE.html",
                        help="HTML report to write (default OUT/<model>-<scenario>-sbc-report.html)")
    parser.set_defaults(func=cmd_sbc)


def cmd_sbc(args: argparse.Namespace) -> int:
    from polyppl.inference.methods import SamplerSettings
    from polyppl.render.sbc_report import sbc_text, write_sbc_report
    from polyppl.studies.sbc import parse_substitute, run_sbc, save_json_result

    problem = problem_from(args)  # a built-in model, FILE.py:NAME or --formula, checked first
    substitutes = dict(parse_substitute(text) for text in args.substitute)
    settings = SamplerSettings(chains=args.chains, draws=args.draws, tune=args.tune, seed=args.seed,
                               target_accept=args.target_accept)
    run = run_sbc(
        problem, backends=[c.label for c in args.backends] if args.backends else None, methods=args.methods,
        simulations=args.simulations, seed=args.seed, settings=settings, substitutes=substitutes, engines=engines_from(args),
        out=args.out, scheduler=args.scheduler, workers=args.workers, timeout=args.timeout, retries=args.retries,
        family_alpha=args.alpha, remedies=args.remedies, progress=progress,
    )
    print(sbc_text(run))
    print(f"\nsaved: {save_json_result(run)} (ledger {run.ledger})")
    if args.json:
        print(f"saved: {save_json_result(run, args.json)}")
    report, *figures = write_sbc_report(run, args.report, figures=args.out)
    print(f"report: {report}" + (f"; figures: {', '.join(map(str, figures))}" if figures else ""))
    return run.exit_code
