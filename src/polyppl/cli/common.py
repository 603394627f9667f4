"""What the commands share: the model and settings arguments, progress lines, errors."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from polyppl.backends import BACKENDS, Column, get_backend, parse_columns
from polyppl.errors import UserError
from polyppl.inference.methods import CHAIN_METHODS, METHODS, SamplerSettings, VariationalSettings
from polyppl.models import MODELS

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
    parser.add_argument("model", help=f"a built-in model ({', '.join(MODELS)}) or FILE.py:NAME, a function "
                        "returning (Model, Dataset) or a Model whose data come with --data")
    source = parser.add_mutually_exclusive_group()
    source.add_argument("--scenario", help="built-in data set (see `polyppl models`)")
    source.add_argument("--data", type=Path, help="CSV file with your data (see `polyppl models` for columns)")
    parser.add_argument("--parametrization", help="e.g. centered or noncentered (see `polyppl models`)")


def add_settings_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--chains", type=positive_int, default=4)
    parser.add_argument("--draws", type=positive_int, default=1000, help="draws per chain after warm-up")
    parser.add_argument("--tune", type=non_negative_int, default=1000, help="warm-up iterations per chain")
    parser.add_argument("--seed", type=non_negative_int, default=1)
    parser.add_argument("--target-accept", type=float, default=0.9, help="NUTS target acceptance, all backends (default 0.9)")
    parser.add_argument("--chain-method", choices=CHAIN_METHODS, default="auto",
                        help="how chains share the CPU (auto: each backend's measured-fastest)")
    parser.add_argument("--stan-engine", choices=STAN_ENGINES, default="auto",
                        help="auto: cmdstanpy where CmdStan is installed, else PyStan")
    parser.add_argument("--pymc-sampler", choices=PYMC_SAMPLERS, default="pymc", help="the NUTS that runs PyMC models")
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT, help=f"folder for results (default {DEFAULT_OUT})")
    parser.add_argument("--json", type=Path, help="also write the JSON record to this file")


def method_list(text: str) -> list[str]:
    """``--methods nuts,advi,pathfinder``: comma-separated method names, checked."""
    names = [part.strip() for part in text.split(",") if part.strip()]
    for name in names:
        if name not in METHODS:
            raise argparse.ArgumentTypeError(f"unknown method {name!r}; expected one of: {', '.join(METHODS)}")
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


def progress(line: str) -> None:
    print(f"polyppl: {line}", file=sys.stderr, flush=True)


__all__ = ["BACKENDS", "DEFAULT_OUT", "add_model_arguments", "add_settings_arguments", "add_variational_arguments",
           "column", "column_list", "engines_from", "method_list", "progress", "settings_from", "variational_from"]
