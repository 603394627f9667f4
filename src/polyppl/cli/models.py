"""``polyppl models`` and ``polyppl stan-programs``."""

from __future__ import annotations

import argparse
from pathlib import Path

from polyppl.models import MODELS


def register(sub: argparse._SubParsersAction) -> None:
    sub.add_parser("models", help="list built-in models, scenarios and CSV layouts",
                   description="List the built-in models with their parametrizations, scenarios (built-in data "
                   "sets) and the CSV columns that --data FILE.csv takes.").set_defaults(func=cmd_models)
    parser = sub.add_parser("stan-programs", help="print (or --write) the Stan programs of the built-in models",
                            description="Print the Stan programs generated for the built-in models, or write them "
                            "to a folder (the repository keeps them in stan_models/; a test compares).")
    parser.add_argument("--write", type=Path, metavar="DIR", help="write them to DIR (the repo keeps them in stan_models/)")
    parser.set_defaults(func=cmd_stan_programs)


def cmd_models(args: argparse.Namespace) -> int:
    for model in MODELS.values():
        print(f"{model.name}: {model.description}")
        print(f"  parametrizations: {', '.join(model.parametrizations)} (default {model.default_parametrization})")
        print(f"  CSV columns: {' or '.join(model.csv_layouts)}")
        print("  scenarios:")
        for name, scenario in model.scenarios.items():
            default = " (default)" if name == model.default_scenario else ""
            print(f"    {name}{default}: {scenario.description}")
        print()
    return 0


def cmd_stan_programs(args: argparse.Namespace) -> int:
    from polyppl.backends.stan.program import builtin_programs

    programs = builtin_programs()
    if args.write is None:
        for name, text in programs.items():
            print(f"// ===== {name}\n{text}")
        return 0
    args.write.mkdir(parents=True, exist_ok=True)
    for name, text in programs.items():
        (args.write / name).write_text(text)
    print(f"wrote {len(programs)} programs to {args.write}")
    return 0
