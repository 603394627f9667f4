"""``polyppl run``: one model on one backend, in this process."""

from __future__ import annotations

import argparse

from polyppl.backends import BACKENDS
from polyppl.cli.common import (
    add_model_arguments, add_remedies_argument, add_settings_arguments, add_variational_arguments, column_list, engines_from, problem_from,
    progress, settings_from, variational_from,
)
from polyppl.errors import UserError
from polyppl.execution.request import FitRequest
from polyppl.inference.methods import METHODS
from polyppl.render.text import fmt, plus_minus, table


def register(sub: argparse._SubParsersAction) -> None:
    parser = sub.add_parser("run", help="sample one model on one backend",
                            description="Sample one model on one backend, in this process, and print its posterior, "
                            "decisions, diagnostics and timings.")
    add_model_arguments(parser)
    parser.add_argument("--backends", type=column_list, metavar="BACKEND",
                        help=f"the backend: one of {', '.join(BACKENDS)} (or BACKEND:ENGINE, e.g. stan:pystan)")
    # The spelling of earlier versions, kept working; `--backends` is the name in every command.
    parser.add_argument("--backend", dest="backends", type=column_list, default=argparse.SUPPRESS, help=argparse.SUPPRESS)
    parser.add_argument("--method", choices=METHODS, default="nuts",
                        help="nuts (default), or an approximation: advi (mean-field), fullrank, pathfinder")
    add_settings_arguments(parser)
    add_remedies_argument(parser)
    add_variational_arguments(parser)
    parser.set_defaults(func=cmd_run)


def cmd_run(args: argparse.Namespace) -> int:
    if not args.backends:
        raise UserError(f"name the backend: --backends {'|'.join(BACKENDS)}")
    if len(args.backends) > 1:
        labels = ",".join(c.label for c in args.backends)
        raise UserError(f"run fits one backend; `polyppl compare MODEL --backends {labels}` runs several")
    backend = args.backends[0]
    problem = problem_from(args)
    engine = backend.engine or engines_from(args).get(backend.backend)
    settings = settings_from(args) if args.method == "nuts" else variational_from(args)
    request = FitRequest.make(problem.model, problem.dataset, backend.backend, engine, args.method,
                              settings, labels=problem.labels)  # checked before anything is written

    from polyppl.execution.fit import fit, result_stem
    from polyppl.inference.diagnostics import FLAG_MEANINGS
    from polyppl.inference.idata import save_json
    from polyppl.render.tables import flagged_cells, remedies_lines
    from polyppl.studies.remedies import climb
    from polyppl.studies.translation import LOWERED_BACKENDS, check_translation

    if problem.model.source is not None and backend.backend in LOWERED_BACKENDS:
        # A model lowered from the user's program: never sample a wrong translation.
        progress("checking the translation: log density and gradient against Stan's own ...")
        checked = check_translation(problem, stan_engine=engines_from(args).get("stan"))
        progress(checked.summary())

    stem = result_stem(args.out, problem.labels, backend.label, args.method)
    if args.method != "nuts":  # an approximation: no chains to diagnose, no ladder
        result, ladder = fit(request, progress), None
        result.save(stem)
    else:
        def attempt(rung):
            if rung.problem is not problem and rung.problem.model.source is not None \
                    and backend.backend in LOWERED_BACKENDS:  # a program in its other form: another program
                progress(f"checking the translation of the {rung.problem.parametrization} program ...")
                checked = check_translation(rung.problem, stan_engine=engines_from(args).get("stan"))
                progress(checked.summary())
            rung_request = request if rung.is_first else FitRequest.make(
                rung.problem.model, rung.problem.dataset, request.backend, request.engine, "nuts", rung.settings,
                labels=rung.problem.labels)
            done = fit(rung_request, progress)
            done.save(stem.with_name(stem.name + rung.suffix))  # every rung's fit stays on disk
            return done

        ladder = climb(problem, settings, attempt, lambda r: {backend.label: r.record},
                       lambda r: "clean" if r.record.diagnostics.converged and not r.record.diagnostics.divergences
                       else "flagged", args.remedies, progress)
        result, problem = ladder.final.result, ladder.final.rung.problem
        stem = stem.with_name(stem.name + ladder.final.rung.suffix)
    record = result.record
    d, t = record.diagnostics, record.timings
    print(f"{problem.describe()}, backend {record.backend} via {record.engine}")
    print()
    rows = [[k, s.mean, s.sd, s.mcse_mean, s.q05, s.q50, s.q95] for k, s in record.posterior.items()]
    print(table(["quantity", "mean", "sd", "mcse", "5%", "50%", "95%"], rows))
    titles = {node.name: node.heading() for node in problem.model.decisions}
    for group, values in record.decisions.items():
        print()
        print(table([titles.get(group, group), "estimate ± MCSE"],
                    [[label, plus_minus(v.estimate, v.mcse)] for label, v in values.items()]))
    print()
    if d is None:  # an approximation: no chains to diagnose
        a = record.approximation
        print(f"{a.family}: {a.iterations} iterations, "
              f"{'converged' if a.converged else 'stopped at the iteration limit'}; {a.raw_draws} raw draws"
              + "".join(f"; {note}" for note in a.notes))
        print(f"time: compile {t.compile_seconds:.2f} s{' (cached)' if t.compile_cached else ''}, "
              f"fitting {t.warmup_seconds:.2f} s, drawing {t.sampling_seconds:.2f} s; "
              f"{a.gradient_evaluations if a.gradient_evaluations is not None else 'unreported'} gradient evaluations")
        print("(`polyppl compare MODEL --methods nuts," + args.method + "` scores it against NUTS)")
    else:
        rhat, bulk, tail = flagged_cells(d, record.settings["chains"])
        print(f"R-hat max {fmt(rhat)}, bulk ESS min {fmt(bulk)}, tail ESS min {fmt(tail)}, "
              f"divergences {d.divergences}, E-BFMI min {d.ebfmi_min:.2f}")
        for flag in d.flags:
            print(f"  warning: {FLAG_MEANINGS[flag]}")
        print(f"time: compile {t.compile_seconds:.2f} s{' (cached)' if t.compile_cached else ''}, "
              f"warm-up {t.warmup_seconds:.2f} s, sampling {t.sampling_seconds:.2f} s; "
              f"{d.gradient_evaluations} gradient evaluations")
    lines = remedies_lines(ladder.summary() if ladder else None, again="again ")
    if lines:
        print()
        print("\n".join(lines))
    print(f"saved: {stem}.nc (ArviZ DataTree), {stem}.json (record)")
    if args.json:
        save_json(record.to_json(), args.json)
        print(f"saved: {args.json}")
    return 0
