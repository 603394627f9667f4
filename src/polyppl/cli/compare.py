"""``polyppl compare``: one model on several backends; exit code by verdict."""

from __future__ import annotations

import argparse
from pathlib import Path

from polyppl.backends import BACKENDS
from polyppl.cli.common import (
    add_grid_arguments, add_model_arguments, add_remedies_argument, add_settings_arguments, add_variational_arguments, column_list, engines_from,
    method_list, positive_int, problem_from, progress, settings_from, variational_from,
)
from polyppl.errors import UserError
from polyppl.models import Problem

VERDICT_CODES = "exit code 0 agree, 1 disagree, 3 inconclusive (a backend failed or did not converge), 2 bad input"


def register(sub: argparse._SubParsersAction) -> None:
    parser = sub.add_parser("compare", help="run one model on several backends and compare them",
                            description=f"Run one model on several backends and judge their agreement; {VERDICT_CODES}.")
    add_model_arguments(parser)
    parser.add_argument("--backends", type=column_list,
                        help=f"comma-separated columns: {','.join(BACKENDS)} (default: all), each optionally "
                        "BACKEND:ENGINE, e.g. stan:pystan,stan:cmdstanpy")
    parser.add_argument("--methods", type=method_list, default=["nuts"],
                        help="comma-separated: nuts (default) and approximations scored against it: advi (mean-field), "
                        "fullrank, pathfinder; e.g. nuts,advi,pathfinder")
    parser.add_argument("--reference", choices=("exact",), help="exact: add the exact posterior (beta-binomial, eight-schools)")
    parser.add_argument("--timeout", type=float, help="seconds allowed per backend (default: none)")
    parser.add_argument("--force", action="store_true", help="redo fits already finished in --out")
    parser.add_argument("--alpha", type=float, default=0.01, help="family-wise false-alarm rate of the agreement tests")
    parser.add_argument("--report", type=Path, metavar="FILE.html",
                        help="HTML report to write (default OUT/<model>-<scenario>-report.html, with the columns "
                        "after the scenario unless every backend runs, e.g. OUT/eight-schools-classic-stan-report.html)")
    add_settings_arguments(parser)
    add_remedies_argument(parser)
    add_variational_arguments(parser)
    replications = parser.add_argument_group(
        "replications", "the same comparison again with other sampler seeds, on a Dask grid: how often it says "
        "'disagree' (its false-alarm rate for backends that are right, its power where they differ)")
    replications.add_argument("--replications", type=positive_int, metavar="N",
                              help="run N replications (NUTS only; --seed seeds them all; more later runs only the new ones)")
    add_grid_arguments(replications, "replications")
    parser.set_defaults(func=cmd_compare)


def cmd_compare(args: argparse.Namespace) -> int:
    problem = problem_from(args)  # bad input answers before anything heavy is imported
    if args.replications is not None:
        return cmd_replications(args, problem)
    if args.scheduler is not None or args.workers is not None:
        raise UserError("--scheduler and --workers run --replications on a grid; one comparison runs here")

    from polyppl.execution.store import folder_lock
    from polyppl.inference.idata import save_json
    from polyppl.render.report import default_report_path, write_report
    from polyppl.render.tables import comparison_text
    from polyppl.studies.compare import compare, comparison_path, lock_name

    # The lock of these fits in --out, held until the report has read them (another run takes turns).
    with folder_lock(args.out, lock_name(problem.labels), waiting=progress):
        comparison = compare(
            problem, backends=[c.label for c in args.backends] if args.backends else None,
            settings=settings_from(args), engines=engines_from(args), reference=args.reference, out=args.out,
            timeout=args.timeout, force=args.force, family_alpha=args.alpha, methods=args.methods,
            variational=variational_from(args), remedies=args.remedies, progress=progress,
        )
        print(comparison_text(comparison, recommendation=False))
        print(f"\nsaved: {comparison_path(args.out, comparison.problem.labels, list(comparison.outcomes))} (and one .nc/.json per backend in {args.out})")
        if args.json:
            save_json(comparison.to_json(), args.json)
            print(f"saved: {args.json}")
        report = write_report(comparison, args.report or default_report_path(args.out, comparison))
        print(f"report: {report}")
    if comparison.recommendation is not None:  # the choice the comparison was run for, last
        print("\n" + "\n".join(comparison.recommendation.lines()))
    return comparison.exit_code


def cmd_replications(args: argparse.Namespace, problem: Problem) -> int:
    """``compare --replications N``: the agreement test N times over, on the grid."""
    if args.methods != ["nuts"]:
        raise UserError(f"--replications repeats the NUTS comparison; drop --methods {','.join(args.methods)}")
    if args.reference is not None or args.report is not None or args.force or args.remedies is not None:
        raise UserError("--replications takes none of --reference, --report, --force, --remedies "
                        "(its ledger is reused only for the same model, data, settings and versions)")

    from polyppl.inference.idata import save_json
    from polyppl.render.tables import replications_text
    from polyppl.studies.replications import replications_path, run_replications

    backends = [c.label for c in args.backends] if args.backends else None
    run = run_replications(
        problem, backends, args.replications, args.seed, settings=settings_from(args), engines=engines_from(args),
        family_alpha=args.alpha, out=args.out, scheduler=args.scheduler, workers=args.workers,
        # --timeout is per backend; a replication fits every backend.
        timeout=args.timeout * len(backends or BACKENDS) if args.timeout else None, retries=args.retries,
        progress=progress,
    )
    print(replications_text(run))
    save_json(run.to_json(), replications_path(run))
    print(f"\nsaved: {replications_path(run)} (ledger {run.ledger})")
    if args.json:
        save_json(run.to_json(), args.json)
        print(f"saved: {args.json}")
    return run.exit_code
