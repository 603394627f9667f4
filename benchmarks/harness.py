"""One benchmark run: a built-in model on one backend, generated or hand-written.

The hand-written model replaces only the backend's compiler (``build`` for PyMC and
NumPyro, the program and data for Stan), so both implementations go through the same
sampler call, timers and conversion of draws: any difference is the model's code.
"""

from __future__ import annotations

import statistics
from contextlib import contextmanager, nullcontext
from pathlib import Path
from typing import Any, Iterator
from unittest import mock

import numpy as np

from polyppl.models import MODELS
from polyppl.settings import SamplerSettings
from polyppl.spec import Dataset

HERE = Path(__file__).resolve().parent
RESULTS = HERE / "results"
IMPLEMENTATIONS = ("generated", "handwritten")
#: The defaults of `polyppl run`: what a user gets.
SETTINGS = SamplerSettings(chains=4, draws=1000, tune=1000, seed=1)


def handwritten_stan_program(model_name: str, row_level: bool = False) -> str:
    stem = model_name.replace("-", "_") + ("_rows" if row_level else "")
    return (HERE / "handwritten" / "stan" / f"{stem}.stan").read_text()


def handwritten_stan_data(model_name: str, dataset: Dataset) -> dict:
    v = {k: np.asarray(x) for k, x in dataset.values.items()}
    if model_name == "multilevel-logistic":
        out = {"N": len(v["group_idx"]), "J": len(dataset.coords["group"]), "group": (v["group_idx"] + 1).tolist(),
               "treated": v["treated"].astype(float).tolist()}
        if "success" in v:
            return {**out, "success": v["success"].tolist()}
        return {**out, "trials": v["trials"].tolist(), "successes": v["successes"].tolist()}
    if model_name == "beta-binomial":
        return {"K": len(v["trials"]), "n": v["trials"].tolist(), "y": v["successes"].tolist()}
    return {"J": len(v["y"]), "y": v["y"].tolist(), "sigma": v["sigma"].tolist()}


@contextmanager
def handwritten(model_name: str, backend: str) -> Iterator[None]:
    """Within this block, ``backend`` samples the hand-written model instead of the generated one."""
    if backend == "pymc":
        from handwritten import pymc_models
        from polyppl.backends import pymc_backend

        with mock.patch.object(pymc_backend, "build", lambda model, dataset: pymc_models.MODELS[model_name](dataset)):
            yield
    elif backend == "numpyro":
        from handwritten import numpyro_models
        from polyppl.backends import numpyro_backend

        with mock.patch.object(numpyro_backend, "build", lambda model, dataset: numpyro_models.MODELS[model_name](dataset)):
            yield
    else:
        from polyppl.backends import stan_backend

        row_level = False

        def program(model):
            return handwritten_stan_program(model_name, row_level)

        def data(model, dataset):
            nonlocal row_level
            row_level = "success" in dataset.values
            return handwritten_stan_data(model_name, dataset)

        # stan_backend.sample asks for the program before the data: decide the form from the data first.
        def sample(model, dataset, settings):
            data(model, dataset)
            return original(model, dataset, settings)

        original = stan_backend.sample
        with mock.patch.object(stan_backend, "stan_program", program), mock.patch.object(stan_backend, "stan_data", data), \
                mock.patch.object(stan_backend, "sample", sample):
            yield


def clear_pystan_fits() -> None:
    """httpstan caches each fit by model, data and seed, and a repeated request returns the
    cached draws without sampling: remove them so every round samples."""
    import httpstan.cache

    for fit in (httpstan.cache.cache_directory() / "models").glob("*/fits/*.jsonlines.gz"):
        fit.unlink(missing_ok=True)


def run_once(model_name: str, backend: str, implementation: str, settings: SamplerSettings = SETTINGS,
             dataset: Dataset | None = None) -> dict[str, Any]:
    """Sample once; the timings, gradient counts and ESS of the run, flat."""
    from polyppl import runner

    builtin = MODELS[model_name]
    dataset = dataset or builtin.dataset()
    spec = builtin.spec(None, dataset)
    if backend == "stan":
        clear_pystan_fits()
    with handwritten(model_name, backend) if implementation == "handwritten" else nullcontext():
        idata = runner.sample(spec, dataset, backend, settings)
    record = runner.summarize(idata, builtin).record()
    t, d = record["timings"], record["diagnostics"]
    return {
        "engine": record["engine"],
        "compile_s": t["compile_seconds"],
        "compile_cached": t["compile_cached"],
        "warmup_s": t["warmup_seconds"],
        "sampling_s": t["sampling_seconds"],
        "gradients_per_draw": d["gradients_per_draw"],
        "seconds_per_gradient": d["seconds_per_gradient"],
        "ess_bulk_min": d["ess_bulk_min"],
        "ess_bulk_per_s": d["ess_bulk_per_second"],
        "posterior_means": {k: s["mean"] for k, s in record["posterior"].items()},
    }


def medians(records: list[dict[str, Any]]) -> dict[str, Any]:
    """Per-field medians over rounds (numbers), the first value otherwise."""
    out: dict[str, Any] = {}
    for key, first in records[0].items():
        values = [r[key] for r in records]
        numeric = isinstance(first, (int, float)) and not isinstance(first, bool) and None not in values
        out[key] = statistics.median(values) if numeric else first
    out["rounds"] = len(records)
    return out
