"""float32-jax: NumPyro in JAX's default float32 rounds the log density and NUTS stalls.

Both precisions run in child processes: JAX's precision is a process-wide setting."""

from __future__ import annotations

from typing import Any

import numpy as np

from polyppl import spec as s
from polyppl.execution.child import call_in_child
from polyppl.inference.diagnostics import ess, rhat
from polyppl.studies.repro.base import NOT_REPRODUCED, REPRODUCED, BackendResult, RunOptions, Scenario, versions


def big_counts_model() -> s.Model:
    return s.Model(
        "big-counts",
        (s.Param("log_rate", s.Normal(0.0, 20.0)), s.Observed("y", s.Poisson(s.exp(s.Var("log_rate"))), ("obs",))),
        description="Poisson counts of about two million.",
    )


def big_counts_dataset() -> s.Dataset:
    rng = np.random.default_rng(0)
    return s.Dataset({"y": rng.poisson(2e6, size=20)}, {"obs": tuple(range(20))}, source="simulated, 20 counts near 2e6")


def numpyro_precision_run(precision: str) -> dict[str, Any]:
    """NumPyro's NUTS on the big-counts model in ``precision`` (the NumPyro backend's option),
    and the log density's rounding near the mode. Run in a child process."""
    import jax.numpy as jnp

    from polyppl.backends import get_backend
    from polyppl.inference.methods import SamplerSettings

    dataset = big_counts_dataset()
    compiled = get_backend("numpyro").compile(big_counts_model(), dataset, options={"precision": precision})
    result = compiled.run("nuts", SamplerSettings(chains=2, draws=200, tune=200, seed=1))
    draws = np.asarray(result.posterior["log_rate"], dtype=float)
    # The log density near the mode, at points 1e-4 apart: float64 gives a smooth parabola,
    # float32 rounds it to steps of a few units.
    mode = float(np.log(np.mean(dataset.values["y"])))
    density = compiled.log_density()
    logp = [density({"log_rate": np.asarray(v)})[0] for v in mode + 1e-4 * np.arange(-3, 4)]
    return {
        "dtype": str(jnp.asarray(1.0).dtype),
        "log_rate_mean": float(draws.mean()),
        "log_rate_sd": float(draws.std()),
        "rhat": rhat(draws),
        "ess_bulk": ess(draws),
        "divergences": int(np.asarray(result.stats["diverging"]).sum()),
        "step_size": float(np.mean(np.asarray(result.stats["step_size"]))),
        "exact_log_rate": mode,
        "logp_near_mode": [float(v) for v in logp],
    }


def _precision_line(label: str, run: dict[str, Any]) -> str:
    steps = np.diff(run["logp_near_mode"])
    return (f"{label} ({run['dtype']}): log_rate {run['log_rate_mean']:.4f} ± {run['log_rate_sd']:.2g} "
            f"(exact mode {run['exact_log_rate']:.4f}), R-hat {run['rhat']:.2f}, bulk ESS {run['ess_bulk']:.0f}, "
            f"adapted step size {run['step_size']:.2g}, {run['divergences']} divergences; log density changes "
            f"over steps of 1e-4 near the mode: {', '.join(f'{d:+.3g}' for d in steps)}")


def _float32(opts: RunOptions) -> BackendResult:
    float32, _ = call_in_child(f"{__name__}:numpyro_precision_run", {"precision": "float32"})
    float64, _ = call_in_child(f"{__name__}:numpyro_precision_run", {"precision": "float64"})
    return BackendResult(
        backend="numpyro",
        outcome=REPRODUCED if float32["rhat"] > 1.1 and float64["rhat"] < 1.05 else NOT_REPRODUCED,
        evidence=[_precision_line("JAX's default precision", float32)],
        cause=(
            "JAX computes in float32 unless told otherwise, which keeps about 7 significant digits. Each term of the "
            "Poisson log density (y log rate, rate, log y!) is about 3e7, so the sum is rounded to steps of several "
            "units: the energy NUTS compares is noise, step size adaptation collapses, and the chains stay where "
            "they started."
        ),
        fix="enable 64-bit floats before any JAX array is made: jax.config.update('jax_enable_x64', True) or "
        "JAX_ENABLE_X64=1 (polyppl's NumPyro backend does this when it compiles a model, unless asked for "
        "precision float32), or reparametrize so the log density is small",
        fix_evidence=[_precision_line("jax_enable_x64", float64)],
        fix_works=float64["rhat"] < 1.05,
        measurements={"float32": float32, "float64": float64},
        versions=versions("numpyro", opts),
    )


SCENARIO = Scenario(
    "float32-jax",
    "NumPyro in JAX's default float32: the log density is rounded and NUTS stalls",
    "Poisson counts of about two million, log rate with a Normal prior, run by NumPyro in float32 (JAX's "
    "default, in a child process) and in float64.",
    (
        "https://github.com/HajimeKawahara/exojax/issues/268 (divergences with FP32 in NumPyro, gone with "
        "jax_enable_x64)",
        "https://github.com/pyro-ppl/numpyro/issues/77 (float64 support)",
    ),
    {"numpyro": _float32},
    {
        "pymc": "PyTensor computes in float64 by default (floatX); the failure is JAX's float32 default",
        "stan": "Stan computes in double precision only",
    },
)
