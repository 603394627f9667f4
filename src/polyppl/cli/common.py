"""What the commands share: the model and settings arguments, progress lines, errors."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from polyppl.backends import BACKENDS, Column, get_backend, parse_columns
from polyppl.errors import UserError, unknown
from polyppl.inference.methods import CHAIN_METHODS, METHODS, SamplerSettings, VariationalSettings
from polyppl.models import MODELS, Problem, resolve

DEFAULT_OUT = Path("polyppl-results")
STAN_ENGINES = ("auto", *get_backend("stan").engine_names)
PYMC_SAMPLERS = get_backend("pymc").engine_names


def positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"{text!r} must be at least 1")
    return value


def non_negative_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number") from None
    if value < 0:
        raise argparse.ArgumentTypeError(f"{text!r} must be at least 0")
    return value


def column_list(text: str) -> list[Column]:
    """``--backends pymc,stan:pystan``: comma-separated columns, checked."""
    try:
        return parse_columns([part for part in text.split(",") if part.strip()])
    except UserError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def column(text: str) -> Column:
    return column_list(text)[0]


def add_model_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("model", nargs="?", help=f"a built-in model ({', '.join(MODELS)}), FILE.py:NAME, a function "
                        "returning (Model, Dataset) or a Model whose data come with --data, or PROGRAM.stan, a Stan "
                        "program whose data come with --data DATA.json; none with --formula")
    source = parser.add_mutually_exclusive_group()
    source.add_argument("--scenario", help="built-in data set (see `polyppl models`)")
    source.add_argument("--data", type=Path, help="CSV file with your data (see `polyppl models` for columns); "
                        "for PROGRAM.stan, Stan's JSON data (.json or .json.zip)")
    parser.add_argument("--parametrization", help="e.g. centered or noncentered (see `polyppl models`)")
    parser.add_argument("--formula", help="an lme4/brms formula instead of MODEL, with --data and --family, e.g. "
                        "'success ~ treated + (1 + treated | country)'")
    parser.add_argument("--family", help="with --formula: bernoulli (default), binomial, poisson or gaussian")
    parser.add_argument("--prior", action="append", default=[], metavar="'CLASS ~ FAMILY(ARGS)'",
                        help="with --formula, repeatable: e.g. 'sd ~ half_normal(1)', 'b[treated] ~ normal(0, 2.5)', "
                        "'cor ~ lkj(2)' (defaults: brms's recipe, printed with the model)")


def problem_from(args: argparse.Namespace) -> Problem:
    """The model the arguments name: a built-in model, FILE.py:NAME, or a formula with its
    data; checked, before anything runs."""
    if args.formula is None:
        if args.model is None:
            raise UserError("name a model (see `polyppl models`), FILE.py:NAME, or give --formula with --data")
        if args.family is not None or args.prior:
            raise UserError("--family and --prior go with --formula")
        return resolve(args.model, args.scenario, args.data, args.parametrization)
    if args.model is not None:
        raise UserError(f"give either a model ({args.model}) or --formula, not both")
    if args.data is None:
        raise UserError("--formula needs its data: --data FILE.csv")
    if args.scenario is not None:
        raise UserError("--formula takes --data FILE.csv, not --scenario")
    from polyppl.models.formula import formula_problem

    return formula_problem(args.formula, args.data, args.family or "bernoulli", args.prior, args.parametrization)


def add_settings_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--chains", type=positive_int, default=4, help="chains per backend")
    parser.add_argument("--draws", type=positive_int, default=1000, help="draws per chain after warm-up")
    parser.add_argument("--tune", type=non_negative_int, default=1000, help="warm-up iterations per chain")
    parser.add_argument("--seed", type=non_negative_int, default=1, help="sampler seed (the same seed gives the same draws)")
    parser.add_argument("--target-accept", type=float,
                        help="NUTS target acceptance, all backends (default: 0.9, or what the model asks for)")
    parser.add_argument("--chain-method", choices=CHAIN_METHODS, default="auto",
                        help="how chains share the CPU (auto: each backend's measured-fastest)")
    add_engine_arguments(parser)
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT, help=f"folder for results (default {DEFAULT_OUT})")
    parser.add_argument("--json", type=Path, help="also write the JSON record to this file")


def add_grid_arguments(parser: argparse.ArgumentParser, tasks: str) -> None:
    """Where a grid's ``tasks`` (``fits``, ``replications``) run: ``--scheduler`` or
    ``--workers``, and ``--retries`` after a worker died."""
    grid = parser.add_mutually_exclusive_group()
    grid.add_argument("--scheduler", metavar="ADDRESS",
                      help="a running Dask scheduler (tcp://HOST:PORT; start one with `uv run dask scheduler` and workers "
                      f"with `uv run dask worker ADDRESS`), or `in-process` to run the {tasks} here one after another "
                      "(no Dask); default: a local cluster started for this run")
    grid.add_argument("--workers", type=positive_int, help="worker processes of the local cluster (default: one per core)")
    parser.add_argument("--retries", type=non_negative_int, default=2,
                        help=f"runs of one of the {tasks} again after its worker died, before it counts as crashed (default 2)")


def add_engine_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--stan-engine", choices=STAN_ENGINES, default="auto",
                        help="auto: cmdstanpy where CmdStan is installed, else PyStan")
    parser.add_argument("--pymc-sampler", choices=PYMC_SAMPLERS, default="pymc",
                        help="the NUTS that runs PyMC models (pymc: PyMC's own)")


def add_remedies_argument(parser: argparse.ArgumentParser) -> None:
    """``--remedies``: the rungs of the ladder climbed when a NUTS fit is flagged (all by default)."""
    from polyppl.studies.remedies import REMEDIES

    rungs = "; ".join(f"{name}: {what}" for name, what in REMEDIES.items())
    parser.add_argument("--remedies", type=remedy_list, metavar="RUNGS",
                        help=f"what to try, in this order, when a NUTS fit diverges or does not converge "
                        f"(default: all; 'none' turns the ladder off): {rungs}. Each rung's fits are kept in --out "
                        "and reused; a clean run climbs none")


def remedy_list(text: str) -> tuple[str, ...]:
    """``--remedies target,draws`` or ``none``: the rungs, checked."""
    from polyppl.studies.remedies import check_remedies

    try:
        return check_remedies(text.split(","))
    except UserError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def method_list(text: str) -> list[str]:
    """``--methods nuts,advi,pathfinder``: comma-separated method names, checked."""
    names = [part.strip() for part in text.split(",") if part.strip()]
    for name in names:
        if name not in METHODS:
            raise argparse.ArgumentTypeError(str(unknown("method", name, METHODS)))
    return names


def positive_float(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number") from None
    if not value > 0:
        raise argparse.ArgumentTypeError(f"{text!r} must be positive")
    return value


def add_variational_arguments(parser: argparse.ArgumentParser) -> None:
    """The approximations' settings (``advi``, ``fullrank``, ``pathfinder``), named the same for
    every backend; the seed is ``--seed``."""
    group = parser.add_argument_group("approximations (advi, fullrank, pathfinder)")
    group.add_argument("--vi-draws", type=positive_int, default=1000,
                       help="draws from the approximation (Pathfinder: per path, then resampled to this many)")
    group.add_argument("--vi-iterations", type=positive_int,
                       help="optimisation steps at most (default: ADVI 10000, Pathfinder 1000 L-BFGS iterations per path)")
    group.add_argument("--vi-tolerance", type=positive_float,
                       help="relative change of the objective that stops the optimisation "
                       "(default: ADVI 0.01, Pathfinder 1e-5)")
    group.add_argument("--vi-paths", type=positive_int, default=4, help="Pathfinder's independent paths (default 4)")


def variational_from(args: argparse.Namespace) -> VariationalSettings:
    return VariationalSettings(draws=args.vi_draws, iterations=args.vi_iterations, tolerance=args.vi_tolerance,
                               paths=args.vi_paths, seed=args.seed)


def settings_from(args: argparse.Namespace) -> SamplerSettings:
    return SamplerSettings(chains=args.chains, draws=args.draws, tune=args.tune, seed=args.seed,
                           target_accept=args.target_accept, chain_method=args.chain_method)


def engines_from(args: argparse.Namespace) -> dict[str, str]:
    """The engine of each backend named without one (``--stan-engine``, ``--pymc-sampler``)."""
    return {"stan": args.stan_engine, "pymc": args.pymc_sampler}


def labels_with_engines(columns: list[Column] | None, args: argparse.Namespace) -> list[str]:
    """Column labels, each backend named without an engine given the one its option chose."""
    engines = {k: v for k, v in engines_from(args).items() if v not in ("auto", get_backend(k).engines[0].name)}
    return [c.label if c.engine or c.backend not in engines else f"{c.backend}:{engines[c.backend]}"
            for c in (columns or [Column(name) for name in BACKENDS])]


def progress(line: str) -> None:
    print(f"polyppl: {line}", file=sys.stderr, flush=True)


__all__ = ["BACKENDS", "DEFAULT_OUT", "add_engine_arguments", "add_model_arguments", "add_remedies_argument",
           "add_settings_arguments",
           "add_variational_arguments", "column", "column_list", "engines_from", "labels_with_engines", "method_list",
           "problem_from", "progress", "settings_from", "variational_from"]
