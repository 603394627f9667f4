"""NUTS from its default initialisation, from ADVI and from Pathfinder, on every backend
(polyppl.studies.vi_init): warm-up gradients, divergences, bulk ESS per second of sampling
and the whole fit's wall time (the approximation's fit included). Prints a Markdown table.

    uv run python benchmarks/vi_init_study.py [--model beta-binomial] [--scenario two-variants]
        [--parametrization seed] [--seed 1] [--out polyppl-results/vi-init]

The defaults are the seed's question: the Beta-Binomial declared as the post did, two
variants, where PyMC's ADVI initialisation fails with "Bad initial energy"
(`polyppl repro advi-init-inf-energy`).
"""

from __future__ import annotations

import argparse

from polyppl.execution.child import use_forkserver
from polyppl.inference.methods import SamplerSettings
from polyppl.studies.vi_init import init_study


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="beta-binomial")
    parser.add_argument("--scenario", default="two-variants")
    parser.add_argument("--parametrization", default="seed")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--out", default="polyppl-results/vi-init")
    args = parser.parse_args()
    runs = init_study(args.model, scenario=args.scenario, parametrization=args.parametrization,
                      settings=SamplerSettings(seed=args.seed), out=args.out, progress=print)
    print(f"\n{args.model} ({args.parametrization}, {args.scenario}), 4 chains x 1000 + 1000, seed {args.seed}\n")
    print("| backend | init | status | warm-up gradients | divergences | converged | bulk ESS min | ESS/s | wall s |")
    print("|---|---|---|---:|---:|---|---:|---:|---:|")
    for r in runs:
        if r.status != "ok":
            print(f"| {r.column} | {r.init} | {r.status}: {(r.reason or '').splitlines()[0][:120]} | | | | | | |")
            continue
        print(f"| {r.column} | {r.init} | ok | {r.warmup_gradient_evaluations} | {r.divergences} | "
              f"{'yes' if r.converged else 'no'} | {r.ess_bulk_min:.0f} | {r.ess_bulk_per_second:.0f} | "
              f"{r.wall_seconds:.1f} |")


if __name__ == "__main__":
    use_forkserver()
    main()
