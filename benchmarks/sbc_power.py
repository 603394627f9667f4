"""Power of SBC against a deliberately broken NumPyro compiler, as tests/test_sbc.py states it.

    uv run python benchmarks/sbc_power.py --prior "theta_z ~ normal(0, 2)" --runs 10 \
        --simulations 40 --first-seed 2000 --out sbc-power.jsonl

NumPyro's compiler is made to build eight schools with the stated prior in place of the
spec's (data are still simulated from the spec), and ``--runs`` SBC runs of
``--simulations`` each (seeds ``--first-seed`` onwards) run in this process, one fit after
another, every fit's ranks appended to ``--out`` (a run started again skips what is there).
Then, for each number of simulations up to ``--simulations`` in the table below, the share
of runs whose first S simulations are judged miscalibrated (Holm per backend, ``--alpha``),
and on which quantities. Sampler settings are ``polyppl sbc``'s defaults.
"""

from __future__ import annotations

import argparse
import collections
import json
from dataclasses import replace
from pathlib import Path

import polyppl.backends.numpyro.compiler as numpyro_compiler
from polyppl.execution.grid import forget_compiled
from polyppl.execution.record import FitRecord
from polyppl.inference.numpy_model import substitute
from polyppl.studies import sbc_stats
from polyppl.studies.sbc import DEFAULT_SETTINGS, SbcFit, SbcJob, choose_run_L, parse_substitute, run_simulation
from polyppl.models import resolve


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--prior", required=True, help="the broken prior, NAME ~ FAMILY(ARGS)")
    parser.add_argument("--runs", type=int, default=10)
    parser.add_argument("--simulations", type=int, default=40)
    parser.add_argument("--first-seed", type=int, default=2000)
    parser.add_argument("--alpha", type=float, default=0.01)
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args()

    name, prior = parse_substitute(args.prior)
    honest = numpyro_compiler.model_of_data
    numpyro_compiler.model_of_data = lambda model, dataset: honest(substitute(model, {name: prior}), dataset)
    forget_compiled()
    problem = resolve("eight-schools")
    model = problem.model.density_model()
    settings = replace(DEFAULT_SETTINGS, chain_method="vectorized")
    ladder = tuple(L for L in sbc_stats.L_LADDER if L <= sbc_stats.DEFAULT_L)
    done = set()
    if args.out.exists():
        done = {(row["seed"], row["simulation"]) for row in map(json.loads, args.out.read_text().splitlines())}
    with args.out.open("a") as handle:
        for seed in range(args.first_seed, args.first_seed + args.runs):
            for simulation in range(args.simulations):
                if (seed, simulation) in done:
                    continue
                record = FitRecord(problem.name, problem.scenario, None, "numpyro", "numpyro", "nuts", "ok", seed,
                                   settings.as_dict())
                job = SbcJob(model, problem.dataset, "numpyro", "numpyro", "nuts", (), replace(settings, seed=seed),
                             "numpyro", simulation, seed, ladder, record)  # no remedies: the sampler's own power
                result = SbcFit.from_json(run_simulation(job))
                handle.write(json.dumps({"seed": seed, "simulation": simulation, "ranks": result.ranks,
                                         "ess": result.record.diagnostics.ess_bulk_min}) + "\n")
                handle.flush()
    rows = [json.loads(line) for line in args.out.read_text().splitlines()]
    by_seed = collections.defaultdict(list)
    for row in rows:
        by_seed[row["seed"]].append(row)
    for size in sorted({s for s in (10, 20, 30, 40) if s <= args.simulations} | {args.simulations}):
        flagged, quantities, runs = 0, collections.Counter(), 0
        for seed_rows in by_seed.values():
            first = sorted(seed_rows, key=lambda r: r["simulation"])[:size]
            if len(first) < size:
                continue
            L = choose_run_L([r["ess"] for r in first], ladder)
            results = sbc_stats.judge({q: [r["ranks"][str(L)][q] for r in first] for q in first[0]["ranks"][str(L)]},
                                      L, args.alpha)
            runs += 1
            miscalibrated = [q for q, r in results.items() if r.verdict == "miscalibrated"]
            flagged += bool(miscalibrated)
            quantities.update(miscalibrated)
        print(f"{size} simulations: flagged in {flagged} of {runs} runs; quantities {dict(quantities)}")


if __name__ == "__main__":
    main()
