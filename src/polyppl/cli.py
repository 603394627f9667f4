"""The ``polyppl`` command: a thin layer over the Python API.

Exit codes: 0 success, 1 a run failed, 2 bad input (the message says what and where).
"""

from __future__ import annotations

import argparse
import importlib
import os
import sys
from pathlib import Path
from typing import Sequence

from polyppl.backends import BACKENDS
from polyppl.errors import UserError
from polyppl.jobs import check_backends, resolve
from polyppl.models import MODELS
from polyppl.settings import CHAIN_METHODS, PYMC_SAMPLERS, STAN_ENGINES, SamplerSettings
from polyppl.spec import SpecError
from polyppl.tables import plus_minus, table

DEFAULT_OUT = Path("polyppl-results")

DECISION_TITLES = {
    "prob_beats": "P(X beats Y), as X>Y",
    "prob_best": "P(variant is best)",
    "prob_treatment_better": "P(treatment better than control)",
    "prob_effect_positive": "P(effect > 0)",
}


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"{text!r} must be at least 1")
    return value


def _non_negative_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number") from None
    if value < 0:
        raise argparse.ArgumentTypeError(f"{text!r} must be at least 0")
    return value


def backend_list(text: str) -> list[str]:
    """``--backends pymc,stan``: comma-separated, checked against the valid names."""
    try:
        return check_backends([part.strip() for part in text.split(",") if part.strip()])
    except UserError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def add_model_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("model", help=f"built-in model: {', '.join(MODELS)}")
    source = parser.add_mutually_exclusive_group()
    source.add_argument("--scenario", help="built-in data set (see `polyppl models`)")
    source.add_argument("--data", type=Path, help="CSV file with your data (see `polyppl models` for columns)")
    parser.add_argument("--parametrization", help="e.g. centered or noncentered (see `polyppl models`)")
    parser.add_argument("--chains", type=_positive_int, default=4)
    parser.add_argument("--draws", type=_positive_int, default=1000, help="draws per chain after warm-up")
    parser.add_argument("--tune", type=_non_negative_int, default=1000, help="warm-up iterations per chain")
    parser.add_argument("--seed", type=_non_negative_int, default=1)
    parser.add_argument("--target-accept", type=float, default=0.9, help="NUTS target acceptance, all backends (default 0.9)")
    parser.add_argument("--stan-engine", choices=STAN_ENGINES, default="auto", help="auto: cmdstanpy if CmdStan is installed, else PyStan")
    parser.add_argument("--chain-method", choices=CHAIN_METHODS, default="auto",
                        help="how chains share the CPU (auto: each backend's measured-fastest)")
    parser.add_argument("--pymc-sampler", choices=PYMC_SAMPLERS, default="pymc", help="the NUTS that runs PyMC models")
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT, help=f"folder for results (default {DEFAULT_OUT})")
    parser.add_argument("--json", type=Path, help="also write the JSON record to this file")


def settings_from(args: argparse.Namespace) -> SamplerSettings:
    return SamplerSettings(
        chains=args.chains, draws=args.draws, tune=args.tune, seed=args.seed,
        target_accept=args.target_accept, stan_engine=args.stan_engine,
        chain_method=args.chain_method, pymc_sampler=args.pymc_sampler,
    )


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


def posterior_table(record: dict) -> str:
    rows = [[k, s["mean"], s["sd"], s["mcse_mean"], s["q05"], s["q50"], s["q95"]] for k, s in record["posterior"].items()]
    return table(["quantity", "mean", "sd", "mcse", "5%", "50%", "95%"], rows)


def decisions_text(decisions: dict) -> str:
    blocks = []
    for group, values in decisions.items():
        rows = [[label, plus_minus(v["estimate"], v["mcse"])] for label, v in values.items()]
        blocks.append(table([DECISION_TITLES.get(group, group), "estimate ± MCSE"], rows))
    return "\n\n".join(blocks)


def progress(line: str) -> None:
    print(f"polyppl: {line}", file=sys.stderr, flush=True)


def cmd_run(args: argparse.Namespace) -> int:
    check_backends([args.backend])
    job = resolve(args.model, args.scenario, args.data, args.parametrization)
    settings = settings_from(args)

    from polyppl.diagnostics import FLAG_MEANINGS
    from polyppl.inference import save_json
    from polyppl.runner import run_job, run_path

    result = run_job(job, args.backend, settings, out=args.out, progress=progress)
    record = result.record()
    d, t = record["diagnostics"], record["timings"]
    print(f"{record['model']} ({record['parametrization']}), data: {result.attrs['data_source']}, backend {record['backend']} via {record['engine']}")
    print()
    print(posterior_table(record))
    print()
    print(decisions_text(record["decisions"]))
    print()
    print(f"R-hat max {d['rhat_max']:.3f}, bulk ESS min {d['ess_bulk_min']:.0f}, tail ESS min {d['ess_tail_min']:.0f}, "
          f"divergences {d['divergences']}, E-BFMI min {d['ebfmi_min']:.2f}")
    for flag in d["flags"]:
        print(f"  warning: {FLAG_MEANINGS[flag]}")
    print(f"time: compile {t['compile_seconds']:.2f} s{' (cached)' if t['compile_cached'] else ''}, "
          f"warm-up {t['warmup_seconds']:.2f} s, sampling {t['sampling_seconds']:.2f} s; "
          f"{d['gradient_evaluations']} gradient evaluations")
    stem = run_path(args.out, job, args.backend)
    print(f"saved: {stem}.nc (InferenceData), {stem}.json (record)")
    if args.json:
        save_json(record, args.json)
        print(f"saved: {args.json}")
    return 0


def cmd_stan_programs(args: argparse.Namespace) -> int:
    from polyppl.models import builtin_stan_programs

    programs = builtin_stan_programs()
    if args.write is None:
        for name, text in programs.items():
            print(f"// ===== {name}\n{text}")
        return 0
    args.write.mkdir(parents=True, exist_ok=True)
    for name, text in programs.items():
        (args.write / name).write_text(text)
    print(f"wrote {len(programs)} programs to {args.write}")
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="polyppl", description="One Bayesian model on PyMC, NumPyro and Stan.")
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("models", help="list built-in models, scenarios and CSV layouts").set_defaults(func=cmd_models)
    run_parser = sub.add_parser("run", help="sample one model on one backend")
    add_model_arguments(run_parser)
    run_parser.add_argument("--backend", required=True, help=f"one of {', '.join(BACKENDS)}")
    run_parser.set_defaults(func=cmd_run)
    stan_parser = sub.add_parser("stan-programs", help="print (or --write) the Stan programs of the built-in models")
    stan_parser.add_argument("--write", type=Path, metavar="DIR", help="write them to DIR (the repo keeps them in stan_models/)")
    stan_parser.set_defaults(func=cmd_stan_programs)
    for module in COMMAND_MODULES:
        importlib.import_module(module).register(sub)
    return parser


#: Modules that add a subcommand through ``register(subparsers)``; each keeps its heavy
#: imports inside its handler so that the CLI starts fast.
COMMAND_MODULES = ("polyppl.compare", "polyppl.repro", "polyppl.bench", "polyppl.report")


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as exc:  # argparse has printed usage and the error (or --help)
        return int(exc.code or 0)
    try:
        return args.func(args)
    except (UserError, SpecError) as exc:
        print(f"polyppl: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("polyppl: interrupted; finished results are kept", file=sys.stderr)
        return 130
    except BrokenPipeError:
        # The reader went away (`polyppl repro | head`): stop writing, quietly.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0


if __name__ == "__main__":
    sys.exit(main())
