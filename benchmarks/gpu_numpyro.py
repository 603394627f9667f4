"""NumPyro's NUTS on a GPU against this machine's CPU: the same generated model, data, seed
and settings, through polyppl's NumPyro compiler (no ArviZ needed, so it runs on the lent
GPU machine's own Python with ``PYTHONPATH=src``).

    python benchmarks/gpu_numpyro.py OUT_DIR [--quick | --cases 1,2]

Writes ``OUT_DIR/gpu_numpyro-<platform>.json`` (timings, gradient counts) and, per case, an
``.npz`` of the draws of the hyperparameters and of 64 group effects, whose ESS is computed
afterwards with ArviZ (``--ess OUT_DIR``), where ArviZ is installed.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np

#: (label, sizes, form, chains): the multilevel model's counts at many groups, the same as
#: row-level data, and many vectorized chains, where a GPU can pay for its launches.
CASES = [
    ("2,048 groups, counts, 4 chains", {"groups": 2048, "rows_per_cell": 1000}, "counts", 4),
    ("8 groups, 25,000 rows per cell row-level (400,000 rows), 4 chains", {"groups": 8, "rows_per_cell": 25_000}, "rows", 4),
    ("128 groups, counts, 64 chains", {"groups": 128, "rows_per_cell": 1000}, "counts", 64),
]
SAVED_GROUPS = 64


def run(out: Path, quick: bool, cases: list[int] | None = None) -> None:
    import jax

    from polyppl.backends import get_backend
    from polyppl.inference.methods import SamplerSettings
    from polyppl.models import get_model

    platform = jax.default_backend()
    builtin = get_model("multilevel-logistic")
    rows = []
    chosen = [CASES[i] for i in cases] if cases else CASES[:1] if quick else CASES
    for label, sizes, form, chains in chosen:
        dataset = builtin.sweeps.synthetic(sizes, form)
        model = builtin.spec(None, dataset)
        settings = SamplerSettings(chains=chains, draws=1000, tune=1000, seed=1)
        start = time.perf_counter()
        compiled = get_backend("numpyro").compile(model, dataset)
        draws = compiled.run("nuts", settings)
        wall = time.perf_counter() - start
        t = draws.timings
        gradients = int(np.asarray(draws.stats["n_steps"]).sum())
        stem = f"{platform}-{len(rows)}"
        keep = {k: np.asarray(v) for k, v in draws.posterior.items() if np.ndim(v) == 2}
        keep |= {f"{k}_first{SAVED_GROUPS}": np.asarray(v)[..., :SAVED_GROUPS] for k, v in draws.posterior.items()
                 if k in ("a_z", "b_z")}
        np.savez_compressed(out / f"{stem}.npz", **{k: v.astype(np.float32) for k, v in keep.items()})
        rows.append({"case": label, "platform": platform, "device": str(jax.devices()[0]), "chains": chains,
                     "compile_seconds": t.compile_seconds, "warmup_seconds": t.warmup_seconds,
                     "sampling_seconds": t.sampling_seconds, "wall_seconds": wall, "gradients": gradients,
                     # As in every record: sampling seconds over gradient evaluations of all chains.
                     "seconds_per_gradient": t.sampling_seconds / gradients,
                     "divergences": int(np.asarray(draws.stats["diverging"]).sum()), "draws_file": f"{stem}.npz",
                     "engine": draws.engine, "jax": jax.__version__})
        print(json.dumps(rows[-1]), flush=True)
        # After each case: a run cut short by the device's time limit keeps what finished.
        (out / f"gpu_numpyro-{platform}.json").write_text(json.dumps(rows, indent=1))


def ess(out: Path) -> None:
    """Bulk ESS min and ESS per second of sampling for each measured case (ArviZ)."""
    from polyppl.inference.diagnostics import ess as arviz_ess

    for path in sorted(out.glob("gpu_numpyro-*.json")):
        rows = json.loads(path.read_text())
        for row in rows:
            saved = np.load(out / row["draws_file"])
            # Each saved array as (chain, draw, quantity): a scalar's has one quantity.
            arrays = [saved[k].reshape(*saved[k].shape[:2], -1) for k in saved.files]
            row["ess_bulk_min_of_saved"] = min(arviz_ess(a[..., i], method="bulk") for a in arrays for i in range(a.shape[-1]))
            row["ess_bulk_per_second"] = row["ess_bulk_min_of_saved"] / row["sampling_seconds"]
        path.write_text(json.dumps(rows, indent=1))
        for row in rows:
            print(f"{row['platform']:>4} {row['case']}: sampling {row['sampling_seconds']:.2f} s, "
                  f"{1e6 * row['seconds_per_gradient']:.1f} µs per gradient, "
                  f"ESS/s {row['ess_bulk_per_second']:.1f}")


if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument("out", type=Path)
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--cases", help="comma-separated indices into CASES (default: all; --quick: the first)")
    parser.add_argument("--ess", action="store_true", help="compute ESS of the saved draws (needs ArviZ)")
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    cases = [int(i) for i in args.cases.split(",")] if args.cases else None
    ess(args.out) if args.ess else run(args.out, args.quick, cases)
    sys.exit(0)
