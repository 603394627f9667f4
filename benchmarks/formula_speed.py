"""The seed's model written as a formula against the built-in model, per gradient, and a
10-million-row CSV from file to posterior.

    uv run python benchmarks/formula_speed.py gradients   # PyMC, NumPyro, Stan
    uv run python benchmarks/formula_speed.py rows [N]    # N rows (default 10,000,000)

Per gradient: PyMC's ``logp_dlogp_function`` and NumPyro's potential and gradient (1000
evaluations inside one compiled loop) near the initial point, timed in alternating blocks
so that a change of machine load hits both models alike (medians of 11 blocks); Stan:
Stan's own clock over a fixed number of gradients (CmdStan's static HMC, no adaptation),
alternating the two programs (median of 7 rounds), and, where valgrind is installed, the
machine instructions per gradient, which do not depend on the machine's load. The formula is
``success ~ treated + (1 + treated || group)`` with the built-in model's priors: the same
model, so the same posterior (``tests/test_formula_posterior.py``).
"""

from __future__ import annotations

import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from polyppl.inference.methods import SamplerSettings
from polyppl.models import MODELS
from polyppl.models.formula import formula_problem
from polyppl.models.multilevel_logistic import seed_rows

sys.path.insert(0, str(Path(__file__).resolve().parent))
from harness import interleaved_seconds  # noqa: E402  (the benchmarks' own timing loop)

SEED_FORMULA = "success ~ treated + (1 + treated || group)"
SEED_PRIORS = ["b ~ student_t(3, 0, 1)", "sd ~ half_normal(1)"]
SETTINGS = SamplerSettings(chains=4, draws=1000, tune=1000, seed=1)


def seed_csv(path: Path, n_per_cell: int = 100) -> Path:
    rows = seed_rows(n_per_cell)
    group = np.array(["Canada", "China"])[rows.values["group_idx"]]
    lines = ["group,treated,success"] + [f"{g},{t},{y}" for g, t, y in
                                         zip(group, rows.values["treated"], rows.values["success"])]
    path.write_text("\n".join(lines) + "\n")
    return path


def models():
    """(built-in spec, its dataset), (formula spec, its dataset): the seed's counts."""
    builtin = MODELS["multilevel-logistic"]
    dataset = builtin.dataset("seed")
    with tempfile.TemporaryDirectory() as folder:
        problem = formula_problem(SEED_FORMULA, seed_csv(Path(folder) / "seed.csv"), "bernoulli", SEED_PRIORS)
    return {"built-in": (builtin.spec("noncentered", dataset).density_model(), dataset),
            "formula": (problem.model.density_model(), problem.dataset)}


def gradient_calls(backend: str):
    calls = {}
    for name, (model, dataset) in models().items():
        if backend == "pymc":
            from polyppl.backends.pymc.compiler import build

            pymc_model = build(model, dataset)
            function = pymc_model.logp_dlogp_function(ravel_inputs=True)
            function.set_extra_values({})
            point = np.concatenate([np.ravel(v) for v in pymc_model.initial_point().values()])
            calls[name] = ((lambda f=function, p=point: f(p)), 1)
        else:
            import jax
            from numpyro.infer.util import initialize_model

            from polyppl.backends.numpyro.compiler import build, configure_jax

            configure_jax("float64")
            init = initialize_model(jax.random.PRNGKey(0), build(model, dataset))
            n = 1000
            shift = jax.numpy.linspace(-0.1, 0.1, n)
            points = jax.tree.map(lambda v: v + shift.reshape((n,) + (1,) * v.ndim), init.param_info.z)
            loop = jax.jit(lambda zs, f=init.potential_fn: jax.lax.map(jax.value_and_grad(f), zs))
            calls[name] = ((lambda lp=loop, zs=points: jax.block_until_ready(lp(zs))), n)
    return calls


def stan_seconds_per_gradient(rounds: int = 7) -> dict[str, float]:
    """Stan's own clock over a fixed number of gradients: CmdStan's static HMC (no
    adaptation, no tree building: 1000 leapfrog steps of 5e-4 per draw, 2000 draws, one
    of them written) from the origin, alternating the two programs; median of ``rounds``."""
    import json
    import subprocess

    from polyppl.backends import get_backend

    compiled = {name: get_backend("stan").compile(model, dataset, engine="cmdstanpy")
                for name, (model, dataset) in models().items()}
    samples = {name: [] for name in compiled}
    with tempfile.TemporaryDirectory() as folder:
        for name, model in compiled.items():
            Path(folder, f"{name}.json").write_text(json.dumps(model.data, default=lambda v: v.tolist()))
        for _ in range(rounds):
            for name, model in compiled.items():
                output = Path(folder, f"{name}.csv")
                subprocess.run([model.runner.model.exe_file, "sample", "num_warmup=0", "num_samples=2000", "thin=2000",
                                "adapt", "engaged=0", "algorithm=hmc", "engine=static", "int_time=0.5",
                                "stepsize=0.0005", "data", f"file={folder}/{name}.json", "init=0", "random", "seed=1",
                                "output", f"file={output}", "refresh=0"], check=True, capture_output=True)
                seconds = next(float(line.split()[1]) for line in output.read_text().splitlines()
                               if "seconds (Sampling)" in line)
                samples[name].append(seconds / (2000 * 1000))
    return {name: statistics.median(values) for name, values in samples.items()}


def stan_instructions_per_gradient() -> dict[str, float] | None:
    """Machine instructions per gradient of each program, counted by valgrind (None where
    valgrind is not installed): deterministic, so a difference of a few percent that this
    machine's timing noise (about 10% on a 2-3 us gradient) hides is seen exactly. The
    difference between 60 and 20 draws of 1000 leapfrog steps, so start-up cancels."""
    import json
    import re
    import shutil
    import subprocess

    from polyppl.backends import get_backend

    if shutil.which("valgrind") is None:
        return None
    counts = {}
    with tempfile.TemporaryDirectory() as folder:
        for name, (model, dataset) in models().items():
            compiled = get_backend("stan").compile(model, dataset, engine="cmdstanpy")
            Path(folder, f"{name}.json").write_text(json.dumps(compiled.data, default=lambda v: v.tolist()))
            totals = []
            for draws in (20, 60):
                run = subprocess.run(["valgrind", "--tool=cachegrind", "--cache-sim=no", "--cachegrind-out-file=/dev/null",
                                      compiled.runner.model.exe_file, "sample", "num_warmup=0", f"num_samples={draws}",
                                      f"thin={draws}", "adapt", "engaged=0", "algorithm=hmc", "engine=static",
                                      "int_time=0.5", "stepsize=0.0005", "data", f"file={folder}/{name}.json", "init=0",
                                      "random", "seed=1", "output", f"file={folder}/{name}.csv", "refresh=0"],
                                     check=True, capture_output=True, text=True)
                totals.append(int(re.search(r"I\s+refs:\s+([\d,]+)", run.stderr).group(1).replace(",", "")))
            counts[name] = (totals[1] - totals[0]) / (40 * 1000)
    return counts


def gradients() -> None:
    for backend in ("pymc", "numpyro"):
        seconds = interleaved_seconds(gradient_calls(backend), block_seconds=0.3)
        print(f"{backend}: built-in {seconds['built-in'] * 1e6:.2f} us, formula {seconds['formula'] * 1e6:.2f} us "
              f"per gradient; formula / built-in = {seconds['formula'] / seconds['built-in']:.3f}", flush=True)
    seconds = stan_seconds_per_gradient()
    print(f"stan (cmdstanpy): built-in {seconds['built-in'] * 1e6:.2f} us, formula {seconds['formula'] * 1e6:.2f} us "
          f"per gradient; formula / built-in = {seconds['formula'] / seconds['built-in']:.3f}", flush=True)
    counts = stan_instructions_per_gradient()
    if counts is not None:
        print(f"stan (cmdstanpy), valgrind: built-in {counts['built-in']:.0f}, formula {counts['formula']:.0f} "
              f"instructions per gradient; formula / built-in = {counts['formula'] / counts['built-in']:.3f}", flush=True)


def rows(n: int) -> None:
    """Write an n-row A/B CSV (2 groups x 2 arms, successes at the seed's rates), then time
    the formula front end (read, check, collapse, design) and a fit on each backend."""
    from polyppl.execution.fit import fit
    from polyppl.execution.request import FitRequest

    rng = np.random.default_rng(0)
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "rows.csv"
        group = rng.integers(0, 2, n)
        treated = rng.integers(0, 2, n)
        # The seed's rates (Canada 0.30 -> 0.50, China 0.55 -> 0.60). Not two groups with
        # one treatment effect: then sd[group:treated] may go to zero, and the centered form
        # (the built-in model's as well) has a funnel there.
        success = (rng.random(n) < np.array([[0.30, 0.50], [0.55, 0.60]])[group, treated]).astype(np.int64)
        start = time.perf_counter()
        import pandas as pd

        pd.DataFrame({"group": np.array(["Canada", "China"])[group], "treated": treated,
                      "success": success}).to_csv(path, index=False)
        print(f"wrote {n:,} rows in {time.perf_counter() - start:.1f} s ({path.stat().st_size / 1e6:.0f} MB)", flush=True)
        start = time.perf_counter()
        # Centered: with millions of rows per cell the likelihood pins every group, and the
        # non-centered form then saturates the tree depth (README, "Sufficient statistics").
        problem = formula_problem(SEED_FORMULA, path, "bernoulli", SEED_PRIORS, parametrization="centered")
        front = time.perf_counter() - start
        print(f"formula front end (read, check, collapse to {len(problem.dataset.coords['cell'])} cells): "
              f"{front:.1f} s", flush=True)
        for backend in ("pymc", "numpyro", "stan"):
            start = time.perf_counter()
            result = fit(FitRequest.make(problem.model, problem.dataset, backend, None, "nuts", SETTINGS,
                                         labels=problem.labels))
            t = result.record.timings
            print(f"  {backend}: fit {time.perf_counter() - start:.1f} s (compile {t.compile_seconds:.1f}, warm-up "
                  f"{t.warmup_seconds:.1f}, sampling {t.sampling_seconds:.1f}); CSV to posterior "
                  f"{front + time.perf_counter() - start:.1f} s; flags {result.record.diagnostics.flags or 'none'} "
                  f"({result.record.diagnostics.divergences} divergent transitions)",
                  flush=True)


if __name__ == "__main__":
    what = sys.argv[1] if len(sys.argv) > 1 else "gradients"
    if what == "gradients":
        gradients()
    else:
        rows(int(sys.argv[2]) if len(sys.argv) > 2 else 10_000_000)
