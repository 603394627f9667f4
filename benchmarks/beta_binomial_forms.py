"""The Beta-Binomial's three forms on every scenario and backend: divergences, ESS, speed.

    uv run python benchmarks/beta_binomial_forms.py [--out benchmarks/results/beta-binomial-forms.json]

`marginal` (the default: rates integrated out, drawn afterwards), `positive` (a and b
positive, rates sampled jointly) and `seed` (the post's declaration), each at the defaults
of `polyppl run` (4 chains x 1000 warm-up + 1000 draws, seed 1, the model's own target
acceptance). Prints a Markdown table; each fit runs in this process, one after another.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from polyppl import SamplerSettings, run
from polyppl.execution.child import use_forkserver
from polyppl.models import MODELS

BACKENDS = ("pymc", "numpyro", "stan")


def measure(form: str, scenario: str, backend: str, seed: int) -> dict:
    result = run("beta-binomial", backend, scenario=scenario, parametrization=form, settings=SamplerSettings(seed=seed))
    d, t = result.diagnostics, result.record.timings
    return {
        "form": form, "scenario": scenario, "backend": backend, "engine": result.record.engine,
        "target_accept": result.record.settings["target_accept"],
        "divergences": d.divergences, "rhat_max": d.rhat_max,
        "ess_bulk_min": d.ess_bulk_min, "ess_tail_min": d.ess_tail_min,
        "ess_bulk_per_second": d.ess_bulk_per_second, "gradients_per_draw": d.gradients_per_draw,
        "sampling_seconds": t.sampling_seconds,
        "rates_A_mean": result.summaries["rates[A]"].mean,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, default=Path(__file__).parent / "results" / "beta-binomial-forms.json")
    parser.add_argument("--seed", type=int, default=1)
    args = parser.parse_args()
    use_forkserver()  # PyMC's chains must not fork this process once JAX runs in it
    builtin = MODELS["beta-binomial"]
    # Resumable: rows already in --out are kept, each new row is written as it arrives.
    rows = json.loads(args.out.read_text()) if args.out.exists() else []
    done = {(r["scenario"], r["form"], r["backend"]) for r in rows}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    for scenario in builtin.scenarios:
        for form in builtin.parametrizations:
            for backend in BACKENDS:
                if (scenario, form, backend) in done:
                    continue
                try:
                    rows.append(measure(form, scenario, backend, args.seed))
                except Exception as exc:  # a form a backend refuses is a result, recorded as such
                    rows.append({"form": form, "scenario": scenario, "backend": backend,
                                 "error": f"{type(exc).__name__}: {exc}".splitlines()[0][:200]})
                print(json.dumps(rows[-1]), flush=True)
                args.out.write_text(json.dumps(rows, indent=1) + "\n")
    print()
    print("| scenario | form | backend (engine) | divergences | R-hat max | bulk / tail ESS min | ESS/s | gradients per draw |")
    print("|---|---|---|---:|---:|---:|---:|---:|")
    for r in rows:
        if "error" in r:
            print(f"| {r['scenario']} | {r['form']} | {r['backend']} | {r['error']} | | | | |")
            continue
        print(f"| {r['scenario']} | {r['form']} | {r['backend']} ({r['engine']}) | {r['divergences']} | {r['rhat_max']:.3f} | "
              f"{r['ess_bulk_min']:.0f} / {r['ess_tail_min']:.0f} | {r['ess_bulk_per_second']:.0f} | {r['gradients_per_draw']:.1f} |")


if __name__ == "__main__":
    main()
