"""``polyppl.run``: one model, one backend, one seed; InferenceData and a JSON record out."""

from __future__ import annotations

import platform
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import arviz as az

from polyppl import __version__
from polyppl.backends import load
from polyppl.diagnostics import RunDiagnostics, flatten, probability, run_diagnostics, scalar_summary
from polyppl.inference import run_attrs, save_json, save_netcdf, to_inference_data
from polyppl.jobs import Job, check_backends, resolve
from polyppl.models import BuiltinModel
from polyppl.settings import SamplerSettings
from polyppl.spec import Dataset, Model, check_dataset


def sample(model: Model, dataset: Dataset, backend: str, settings: SamplerSettings | None = None, **labels: Any) -> az.InferenceData:
    """Compile ``model`` for ``backend``, run NUTS, return normalised InferenceData.

    ``labels`` (model name, scenario, parametrization) go into the attributes as they are.
    """
    settings = settings or SamplerSettings()
    module = load(backend)  # checks the name first, listing the valid ones
    check_dataset(model, dataset)
    draws = module.sample(model, dataset, settings)
    attrs = {
        "model": model.name,
        **labels,
        "backend": backend,
        "data_source": dataset.source,
        "settings": settings.as_dict(),
        "seed": settings.seed,
        "versions": {"polyppl": __version__, "python": platform.python_version(), **module.versions()},
    }
    return to_inference_data(model, dataset, draws, attrs)


@dataclass
class RunResult:
    """A finished run: the draws (InferenceData), summaries, diagnostics and decisions."""

    idata: az.InferenceData
    summaries: dict[str, dict[str, float]]
    diagnostics: RunDiagnostics
    decisions: dict[str, dict[str, dict[str, float]]] = field(default_factory=dict)

    @property
    def attrs(self) -> dict[str, Any]:
        return run_attrs(self.idata)

    def record(self) -> dict[str, Any]:
        """The JSON record of `polyppl run --json`."""
        a = self.attrs
        compile_s, warmup_s, sampling_s = a["compile_seconds"], a["warmup_seconds"], a["sampling_seconds"]
        gradients = self.diagnostics.gradient_evaluations
        n_draws = self.idata.posterior.sizes["chain"] * self.idata.posterior.sizes["draw"]
        return {
            "model": a["model"],
            "scenario": a.get("scenario"),
            "parametrization": a.get("parametrization"),
            "backend": a["backend"],
            "engine": a["engine"],
            "status": "ok",
            "seed": a["seed"],
            "settings": a["settings"],
            "versions": a["versions"],
            "timings": {
                "compile_seconds": compile_s,
                "compile_cached": bool(a["compile_cached"]),
                "warmup_seconds": warmup_s,
                "sampling_seconds": sampling_s,
                "phase_split": a["timing_split"],
            },
            "diagnostics": {
                **self.diagnostics.as_dict(),
                "warmup_gradient_evaluations": a["warmup_gradient_evaluations"],
                "gradients_per_draw": gradients / n_draws,
                "ess_bulk_per_second": self.diagnostics.ess_bulk_min / sampling_s if sampling_s > 0 else None,
                "ess_bulk_per_1000_gradients": 1000 * self.diagnostics.ess_bulk_min / gradients if gradients else None,
                "seconds_per_gradient": sampling_s / gradients if gradients else None,
            },
            "posterior": {
                k: {m: s[m] for m in ("mean", "sd", "mcse_mean", "q05", "q50", "q95")} for k, s in self.summaries.items()
            },
            "decisions": self.decisions,
        }


def summarize(idata: az.InferenceData, builtin: BuiltinModel | None = None) -> RunResult:
    """Summaries, diagnostics and decisions of a finished run, recomputed from the draws."""
    settings = run_attrs(idata)["settings"]
    summaries = {k: scalar_summary(v) for k, v in flatten(idata.posterior).items()}
    diagnostics = run_diagnostics(summaries, idata.sample_stats, settings["max_tree_depth"])
    decisions = {}
    if builtin is not None:
        decisions = {
            group: {label: probability(ind) for label, ind in values.items()}
            for group, values in builtin.decisions(idata.posterior).items()
        }
    return RunResult(idata, summaries, diagnostics, decisions)


def run(
    model: str,
    backend: str,
    *,
    scenario: str | None = None,
    data: str | Path | None = None,
    parametrization: str | None = None,
    settings: SamplerSettings | None = None,
    out: str | Path | None = None,
    progress: Callable[[str], None] | None = None,
) -> RunResult:
    """Run a built-in model on one backend.

    ``scenario`` names built-in data, ``data`` a CSV file (one or the other). With ``out``,
    the InferenceData is saved as ``OUT/<model>-<scenario>-<backend>.nc`` and the record
    beside it as ``.json``. ``progress`` receives a line when sampling starts (the input
    has been checked by then).
    """
    check_backends([backend])
    job = resolve(model, scenario, data, parametrization)
    return run_job(job, backend, settings or SamplerSettings(), out, progress)


def run_job(
    job: Job,
    backend: str,
    settings: SamplerSettings,
    out: str | Path | None = None,
    progress: Callable[[str], None] | None = None,
) -> RunResult:
    if progress:
        progress(f"sampling {job.model} ({job.parametrization}, {job.scenario}) on {backend}: {settings.chains} chains x "
                 f"{settings.tune} warm-up + {settings.draws} draws, seed {settings.seed}")
    idata = sample(job.spec, job.dataset, backend, settings, **job.labels())
    result = summarize(idata, job.builtin)
    if out is not None:
        stem = run_path(out, job, backend)
        save_netcdf(idata, stem.with_suffix(".nc"))
        save_json(result.record(), stem.with_suffix(".json"))
    return result


def run_path(out: str | Path, job: Job, backend: str) -> Path:
    """Where a run's files go, without suffix: ``OUT/<model>-<scenario>-<backend>``."""
    return Path(out) / f"{job.model}-{job.scenario}-{backend}"
