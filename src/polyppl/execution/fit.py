"""One fit in this process: compile the model on its backend, run the method, complete the
draws (conditional draws), and summarise them (diagnostics, decisions) into a record.

Every other way of running a fit (``polyppl run``, a comparison's child processes, the
worker of a grid, the benchmarks) ends here.
"""

from __future__ import annotations

import sys
from dataclasses import dataclass, replace
from pathlib import Path
from contextlib import nullcontext
from typing import Callable, ContextManager, Mapping

import xarray as xr

from polyppl.backends import CompiledModel, get_backend
from polyppl.errors import UserError
from polyppl.execution.record import ApproximationSummary, FitRecord
from polyppl.execution.request import FitRequest
from polyppl.execution.store import file_sha256
from polyppl.inference.diagnostics import Estimate, RunDiagnostics, Summary, flatten, probability, run_diagnostics, scalar_summary
from polyppl.inference.draws import Timings
from polyppl.inference.idata import load_netcdf, load_result_libraries, run_attrs, save_json, save_netcdf, stem_path, to_inference_data
from polyppl.inference.methods import SamplerSettings, VariationalSettings, is_approximation
from polyppl.inference.posterior import complete, decision_draws
from polyppl.inference.progress import listening, note
from polyppl.models import Labels, Problem, resolve
from polyppl.spec import Dataset, Model


@dataclass(frozen=True)
class FitResult:
    """A finished fit: its draws (an ArviZ DataTree) and its record (summaries, diagnostics,
    decisions, timings, versions)."""

    idata: xr.DataTree
    record: FitRecord

    @property
    def summaries(self) -> dict[str, Summary]:
        return self.record.posterior

    @property
    def diagnostics(self) -> RunDiagnostics:
        assert self.record.diagnostics is not None
        return self.record.diagnostics

    @property
    def decisions(self) -> dict[str, dict[str, Estimate]]:
        return self.record.decisions

    def save(self, stem: Path) -> FitRecord:
        """``STEM.nc`` (ArviZ DataTree) and ``STEM.json`` (record), each written atomically, the
        record last, with the checksum of the ``.nc`` file; the record as saved."""
        netcdf = stem_path(stem, ".nc")
        save_netcdf(self.idata, netcdf)
        record = replace(self.record, netcdf_sha256=file_sha256(netcdf))
        save_json(record.to_json(), stem_path(stem, ".json"))
        return record


def fit(request: FitRequest, progress: Callable[[str], None] | None = None,
        compiled: CompiledModel | None = None, turn: Callable[[], ContextManager[object]] = nullcontext) -> FitResult:
    """Run ``request`` here and now. ``compiled``: run on this compiled model instead of
    compiling the request's (the benchmarks time a hand-written model through the same
    path, from sampler call to record). ``turn``: entered around the method's run, after the
    compile (a comparison's fits wait there for their turn to sample, one at a time).
    ``progress`` hears each phase, and the backend's own notes (``inference.progress``)."""
    _refuse_while_bootstrapping()
    labels = request.labels
    with listening(progress):
        if compiled is None:
            note(f"importing {request.backend} and building the model ({request.engine})")
            compiled = get_backend(request.backend).compile(request.model, request.dataset, request.engine,
                                                            dict(request.options))
        load_result_libraries()
        with turn():
            if progress:
                s = request.settings
                what = (f"{request.method}, {s.draws} draws" if isinstance(s, VariationalSettings)
                        else f"{s.chains} chains x {s.tune} warm-up + {s.draws} draws")
                progress(f"running {request.method} on {labels.model} ({labels.parametrization or 'as declared'}, "
                         f"{labels.scenario}): {what}, seed {s.seed}")
            draws = compiled.run(request.method, request.settings)
        note("summarising the draws")
    posterior = complete(request.model, request.dataset, draws.posterior, request.settings.seed)
    attrs = {
        "model": labels.model,
        "scenario": labels.scenario,
        "parametrization": labels.parametrization,
        "backend": request.backend,
        "method": request.method,
        "data_source": request.dataset.source,
        "settings": request.settings.as_dict(),
        "seed": request.settings.seed,
        "versions": dict(request.versions),
        "request_hash": request.content_hash(),
    }
    idata = to_inference_data(request.model, request.dataset, draws, posterior, attrs)
    return FitResult(idata, summarize(idata, request))


def _refuse_while_bootstrapping() -> None:
    """A process started by spawn or a fork server imports the ``__main__`` script of its
    parent again; a fit called at that script's top level would run again in every such
    process (and multiprocessing refuses to start more). Say what to do instead."""
    import multiprocessing

    if getattr(multiprocessing.current_process(), "_inheriting", False):
        main = getattr(sys.modules.get("__mp_main__") or sys.modules.get("__main__"), "__file__", "your script")
        raise UserError(f"{main} runs a fit at its top level, and a process started for the sampler imports that "
                        f"script again: put the code that samples under `if __name__ == \"__main__\":`")


def base_record(request: FitRequest) -> FitRecord:
    """The record's identity: what was asked for, before anything ran."""
    labels = request.labels
    return FitRecord(
        model=labels.model, scenario=labels.scenario, parametrization=labels.parametrization,
        backend=request.backend, engine=request.engine, method=request.method, status="ok",
        seed=request.settings.seed, settings=request.settings.as_dict(), versions=dict(request.versions),
        request_hash=request.content_hash(), request_parts=request.hash_parts(), data_source=request.dataset.source,
    )


def summarize(idata: xr.DataTree, request: FitRequest) -> FitRecord:
    """Summaries, diagnostics and decisions of a finished fit, recomputed from its draws."""
    attrs = run_attrs(idata)
    summaries = {k: scalar_summary(v) for k, v in flatten(idata.posterior).items()}
    timings = _timings(attrs)
    diagnostics, approximation = None, None
    if is_approximation(request.method):
        approximation = ApproximationSummary.from_dict({**attrs["approximation"], "raw_draws": int(idata.approximation.log_p.size)})
    else:
        diagnostics = run_diagnostics(summaries, idata.sample_stats, request.settings.max_tree_depth,
                                      timings.sampling_seconds, int(attrs.get("warmup_gradient_evaluations", 0)))
    posterior = {name: idata.posterior[name].values for name in request.model.output_names}
    decisions = {
        group: {label: probability(indicator) for label, indicator in values.items()}
        for group, values in decision_draws(request.model, request.dataset, posterior).items()
    }
    return replace(base_record(request), engine=attrs["engine"], timings=timings, diagnostics=diagnostics,
                   approximation=approximation, posterior=summaries, decisions=decisions)


def _timings(attrs: dict) -> Timings:
    return Timings(attrs["compile_seconds"], attrs["warmup_seconds"], attrs["sampling_seconds"],
                   attrs["timing_split"], bool(attrs["compile_cached"]))


def load_result(stem: Path) -> FitResult:
    """A fit saved by :meth:`FitResult.save`."""
    return FitResult(load_netcdf(stem_path(stem, ".nc")), FitRecord.load(stem_path(stem, ".json")))


def sample(model: Model, dataset: Dataset, backend: str, settings: SamplerSettings | VariationalSettings | None = None, *,
           engine: str | None = None, method: str = "nuts", options: Mapping[str, str] | None = None,
           labels: Labels | None = None) -> xr.DataTree:
    """Compile ``model`` for ``backend``, run ``method``, return a normalised DataTree (ArviZ 1):
    the same variable names, dims, coords and sampler statistics on every backend."""
    return fit(FitRequest.make(model, dataset, backend, engine, method, settings, options, labels)).idata


def run(model: str | Problem, backend: str, *, scenario: str | None = None, data: str | Path | None = None,
        parametrization: str | None = None, settings: SamplerSettings | VariationalSettings | None = None,
        engine: str | None = None,
        method: str = "nuts", out: str | Path | None = None, progress: Callable[[str], None] | None = None) -> FitResult:
    """Run a built-in model (by name), a user's model (``FILE.py:NAME``) or a problem on one
    backend, in this process. With ``out``, the DataTree and the record are saved as
    ``OUT/<model>-<scenario>-<backend>-<method>.nc`` and ``.json``."""
    problem = model if isinstance(model, Problem) else resolve(model, scenario, data, parametrization)
    request = FitRequest.make(problem.model, problem.dataset, backend, engine, method, settings, labels=problem.labels)
    result = fit(request, progress)
    if out is not None:
        result.save(result_stem(Path(out), problem.labels, backend, method))
    return result


def result_stem(out: Path, labels: Labels, column: str, method: str) -> Path:
    """Where a fit's files go, without suffix: ``OUT/<model>-<scenario>-<column>-<method>``
    (a column ``stan:pystan`` is written ``stan-pystan``)."""
    return Path(out) / f"{labels.model}-{labels.scenario}-{column.replace(':', '-')}-{method}"
