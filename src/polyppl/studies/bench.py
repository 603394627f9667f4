"""``polyppl bench``: how the cost of sampling grows with the data, per backend.

A sweep is a list of points (model, backend, data size). Each point samples synthetic data
of that size in a fresh process, so compile caches and peak memory (the child's high-water
mark of resident memory) of one point do not leak into the next, and appends one JSON line to
``OUT/points.jsonl`` as soon as it finishes: a sweep that is interrupted and started again
skips the points already in that file. At the end the points are written as
``scaling.csv`` and ``scaling.json`` with the fitted growth exponent of each measure
(least squares slope on log-log axes), and plotted as ``scaling-<model>-<size>.png``.

A point's data form is ``counts`` (the built-in models' default: row-level A/B data
compressed to successes and trials per cell, so the cost does not grow with the rows) or
``rows`` (the row-level Bernoulli model users write by hand, one likelihood term per row):
the sweep along rows per cell shows both.
"""

from __future__ import annotations

import csv
import json
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable, Mapping, Sequence

import numpy as np

from polyppl.backends import BACKENDS, get_backend, parse_column
from polyppl.execution.request import FitRequest
from polyppl.execution.runner import run_fit
from polyppl.inference.methods import SamplerSettings
from polyppl.models import MODELS, Labels, get_model
from polyppl.models.base import SweepLine

DEFAULT_OUT = Path("polyppl-bench")
#: Measures of each point, with the label of their plot axis.
MEASURES = {
    "compile_seconds": "compile s",
    "seconds_per_gradient": "s per gradient",
    "gradients_per_draw": "gradients per draw",
    "ess_bulk_per_second": "bulk ESS per s",
    "peak_memory_mb": "peak memory MB",
}
#: How the data reach the likelihood: counts per cell (default) or one term per row.
FORMS = ("counts", "rows")


def sweep_models() -> list[str]:
    """The built-in models that declare scaling sweeps."""
    return [name for name, model in MODELS.items() if model.sweeps is not None]


def size_names(model: str) -> tuple[str, ...]:
    return get_model(model).sweeps.size_names


def words(name: str) -> str:
    return name.replace("_", " ")


@dataclass(frozen=True)
class ProgramData:
    """A user's Stan program and its data: measured at that one size (no sweep), each backend
    once. ``digest`` covers the program's text and the data, so that a finished point is
    reused only for the same program and data."""

    path: str
    data: str
    digest: str

    @classmethod
    def of(cls, path: str | Path, data: str | Path) -> ProgramData:
        import hashlib

        text = Path(path).read_bytes() + b"\0" + Path(data).read_bytes()
        return cls(str(path), str(data), hashlib.sha256(text).hexdigest()[:16])


@dataclass(frozen=True)
class Point:
    model: str
    backend: str  # a column: ``stan``, or ``stan:cmdstanpy`` to name the engine
    sizes: tuple[tuple[str, int], ...]  # (name, value), in the model's size order
    form: str = "counts"  # one of FORMS
    program: ProgramData | None = None  # a user's Stan program on its own data, in place of a sweep

    @property
    def key(self) -> str:
        if self.program is not None:
            return f"{self.model}|{self.backend}|program={self.program.digest}"
        parts = [self.model, self.backend, *(f"{k}={v}" for k, v in self.sizes)]
        return "|".join(parts if self.form == "counts" else [*parts, f"form={self.form}"])

    def describe(self) -> str:
        if self.program is not None:
            return f"{self.program.path} on {self.program.data} on {self.backend}"
        sizes = ", ".join(f"{words(k)} {v}" for k, v in self.sizes)
        return f"{self.model} {sizes}{' (row-level)' if self.form == 'rows' else ''} on {self.backend}"


@dataclass(frozen=True)
class Sweep:
    """The sampler settings of a sweep, and its lines: each model's own ``quick`` or ``full``
    lines (``name``), or lines given here by model."""

    name: str
    chains: int
    draws: int
    tune: int
    timeout_seconds: int
    lines: Mapping[str, tuple[SweepLine, ...]] | None = None

    def settings(self) -> SamplerSettings:
        return SamplerSettings(chains=self.chains, draws=self.draws, tune=self.tune, seed=1)

    def lines_for(self, model: str) -> tuple[SweepLine, ...]:
        if self.lines is not None:
            return self.lines[model]
        return getattr(get_model(model).sweeps, self.name)


QUICK = Sweep("quick", chains=2, draws=300, tune=300, timeout_seconds=600)
FULL = Sweep("full", chains=4, draws=1000, tune=1000, timeout_seconds=3600)


def engine_label(column: str) -> str:
    """``column`` with its engine named where the backend has more than one (``stan`` ->
    ``stan:cmdstanpy`` where CmdStan is installed, else ``stan:pystan``), so that a point's
    key says what ran it: a sweep resumed after CmdStan was installed must not take PyStan's
    rows for its own."""
    parsed = parse_column(column)
    backend = get_backend(parsed.backend)
    if parsed.engine or len(backend.engines) == 1:
        return column
    return f"{parsed.backend}:{backend.engine(None).name}"


def points(sweep: Sweep, models: Sequence[str], backends: Sequence[str]) -> list[Point]:
    backends = [engine_label(b) for b in backends]
    out = []
    for model in models:
        sweeps = get_model(model).sweeps
        for line in sweep.lines_for(model):
            sizes = tuple((name, line.sizes[name]) for name in sweeps.size_names)
            out += [Point(model, backend, sizes, line.form) for backend in backends]
    return out


def program_points(program: ProgramData, backends: Sequence[str]) -> list[Point]:
    """One point per backend: the program on its data (PyMC and NumPyro run the spec lowered
    from it, Stan the program itself)."""
    return [Point(Path(program.path).stem, engine_label(b), (), "counts", program) for b in backends]


def point_request(point: Point, sweep: Sweep) -> FitRequest:
    """The fit a point measures: the model's default form on synthetic data of that size, or
    a user's program on its data."""
    if point.program is not None:
        from polyppl.models.stan_program import stan_program

        problem = stan_program(point.program.path, point.program.data)
        column = parse_column(point.backend)
        return FitRequest.make(problem.model, problem.dataset, column.backend, column.engine,
                               settings=sweep.settings(), labels=problem.labels)
    builtin = get_model(point.model)
    dataset = builtin.sweeps.synthetic(dict(point.sizes), point.form)
    labels = Labels(point.model, point.key.replace("|", "_"), builtin.default_parametrization)
    column = parse_column(point.backend)
    return FitRequest.make(builtin.spec(None, dataset), dataset, column.backend, column.engine, settings=sweep.settings(),
                           labels=labels)


def _base_row(point: Point) -> dict[str, Any]:
    if point.program is not None:
        return {"key": point.key, "model": point.model, "backend": point.backend, "form": "program",
                "program": point.program.path, "data": point.program.data}
    return {"key": point.key, "model": point.model, "backend": point.backend, **dict(point.sizes), "form": point.form}


def run_point(point: Point, sweep: Sweep) -> dict[str, Any]:
    """One point in a child process (the fit runner); its row, or its status if it failed or
    ran too long. Fresh processes keep compile caches and peak memory of one point out of the
    next."""
    row = _base_row(point)
    with tempfile.TemporaryDirectory(prefix="polyppl-bench-") as folder:
        outcome = run_fit(point_request(point, sweep), Path(folder) / "point", timeout=sweep.timeout_seconds, force=True)
    record = outcome.record
    row["wall_seconds"] = record.wall_seconds
    if not record.ok:
        return {**row, "status": record.status, "error": record.error}
    t, d = record.timings, record.diagnostics
    return {**row, "status": "ok", "compile_seconds": t.compile_seconds, "compile_cached": t.compile_cached,
            "warmup_seconds": t.warmup_seconds, "sampling_seconds": t.sampling_seconds,
            "seconds_per_gradient": d.seconds_per_gradient, "gradients_per_draw": d.gradients_per_draw,
            "ess_bulk_min": d.ess_bulk_min, "ess_bulk_per_second": d.ess_bulk_per_second,
            "divergences": d.divergences, "engine": record.engine, "peak_memory_mb": record.peak_memory_mb}


def finished_points(path: Path) -> dict[str, dict[str, Any]]:
    """Rows already in ``points.jsonl`` by key; a line cut short by an interruption is ignored.
    Rows written before data forms existed are counts."""
    rows: dict[str, dict[str, Any]] = {}
    if path.exists():
        for line in path.read_text().splitlines():
            try:
                row = json.loads(line)
            except json.JSONDecodeError:
                continue
            rows[row["key"]] = {"form": "counts", **row}
    return rows


def run_point_task(argument: tuple[Point, Sweep]) -> dict[str, Any]:
    """:func:`run_point` as a task of a grid (``execution.grid``): its row, with its status."""
    return run_point(*argument)


def run_sweep(
    out: Path,
    sweep: Sweep = QUICK,
    models: Sequence[str] | None = None,
    backends: Sequence[str] = tuple(BACKENDS),
    progress: bool = True,
    scheduler: str | None = None,
    workers: int | None = None,
    program: ProgramData | None = None,
) -> list[dict[str, Any]]:
    """Run the points not yet in ``out/points.jsonl``, then write the tables (the plots:
    ``polyppl.render.bench.plot``). With ``program`` (a user's Stan program and its data) the
    points are that program on each backend, at its data's size, in place of ``models``' sweeps.

    By default one point after another here (each in a child process of its own). With
    ``scheduler`` (a Dask scheduler's address) or ``workers`` (a local Dask cluster of that
    many worker processes) the points run on a grid, each still in a child process of its own
    on its worker; points that run at the same time share the machine, so their timings are
    not those of a quiet one."""
    models = list(models or (sweep_models() if program is None else []))
    out.mkdir(parents=True, exist_ok=True)
    journal = out / "points.jsonl"
    done = finished_points(journal)
    if journal.exists() and not journal.read_bytes().endswith(b"\n"):
        with journal.open("a") as handle:  # a line cut short: the next row starts a line of its own
            handle.write("\n")
    todo = program_points(program, backends) if program is not None else points(sweep, models, backends)
    if scheduler is not None or workers is not None:
        _run_on_grid([p for p in todo if p.key not in done], sweep, journal, done, scheduler, workers, progress)
    for index, point in enumerate(todo, start=1):
        if point.key in done:
            continue
        if progress:
            print(f"polyppl bench: [{index}/{len(todo)}] {point.describe()} ...", file=sys.stderr, flush=True)
        row = run_point(point, sweep)
        with journal.open("a") as handle:
            handle.write(json.dumps(row) + "\n")
        done[point.key] = row
        if progress:
            print(f"polyppl bench: [{index}/{len(todo)}] {row['status']} in {row['wall_seconds']:.1f} s", file=sys.stderr, flush=True)
    rows = [done[p.key] for p in todo]
    write_tables(rows, out)
    return rows


def _run_on_grid(todo: Sequence[Point], sweep: Sweep, journal: Path, done: dict[str, dict[str, Any]],
                 scheduler: str | None, workers: int | None, progress: bool) -> None:
    """The points on a grid; each finished point is appended to the journal as it arrives."""
    from polyppl.execution.grid import FitKey, GridTask, run_grid

    tasks = [GridTask(FitKey(p.model, p.backend, "nuts", p.key, sweep.settings().seed), "polyppl.studies.bench:run_point_task",
                      (p, sweep), sweep.lines) for p in todo]
    by_key = {task.key: point for task, point in zip(tasks, todo)}

    def journal_row(task: GridTask, entry: dict[str, Any]) -> None:
        row = {**_base_row(by_key[task.key]), **entry["result"], "status": entry["status"]}
        if entry.get("error"):
            row["error"] = entry["error"]
        with journal.open("a") as handle:
            handle.write(json.dumps(row) + "\n")
        done[row["key"]] = row

    # A point's own child process has the sweep's timeout; the grid's is a margin above it.
    run_grid(tasks, ledger=None, scheduler=scheduler, workers=workers, timeout=sweep.timeout_seconds + 120,
             progress=(lambda line: print(f"polyppl bench: {line}", file=sys.stderr, flush=True)) if progress else None,
             on_result=journal_row)


def sweep_line(rows: Iterable[dict[str, Any]], model: str, size: str, form: str = "counts") -> list[dict[str, Any]]:
    """The finished points of ``model`` in ``form`` along ``size``: those whose other sizes
    are at their most common value (the base point the sweep's lines run through)."""
    line = [r for r in rows if r["status"] == "ok" and r["model"] == model and r.get("form", "counts") == form]
    for other in size_names(model):
        if other != size and line:
            values = [r[other] for r in line]
            common = max(set(values), key=values.count)
            line = [r for r in line if r[other] == common]
    return line


def columns(rows: Iterable[dict[str, Any]]) -> list[str]:
    """The backends (columns) the rows hold, in order of first appearance."""
    return list(dict.fromkeys(r["backend"] for r in rows))


def growth_exponents(rows: Iterable[dict[str, Any]]) -> list[dict[str, Any]]:
    """Least-squares slope of log(measure) on log(size), per model, data form, backend and
    size name, along the sweep's lines (``sweep_line``)."""
    rows = list(rows)
    out = []
    for model in sweep_models():
        for name in size_names(model):
            for form in FORMS:
                for backend in columns(rows):
                    line = [r for r in sweep_line(rows, model, name, form) if r["backend"] == backend]
                    if len({r[name] for r in line}) < 3:
                        continue  # two points fit any slope exactly: no estimate
                    out.append(_fit(line, {"model": model, "form": form, "backend": backend, "size": name}))
    return out


def _fit(line: list[dict[str, Any]], fit: dict[str, Any]) -> dict[str, Any]:
    """``fit`` with the slope of each measure on log-log axes (3 points at least)."""
    name = fit["size"]
    fit["points"] = len(line)
    for measure in MEASURES:
        pairs = [(r[name], r[measure]) for r in line if r.get(measure) and r[measure] > 0]
        if len(pairs) >= 3:
            x, y = np.log([p[0] for p in pairs]), np.log([p[1] for p in pairs])
            fit[measure] = float(np.polyfit(x, y, 1)[0])
    return fit


TABLE_COLUMNS = ("model", "backend", "groups", "rows_per_cell", "variants", "form", "status", *MEASURES,
                 "sampling_seconds", "ess_bulk_min", "divergences", "wall_seconds", "engine")


def write_tables(rows: list[dict[str, Any]], out: Path) -> None:
    with (out / "scaling.csv").open("w", newline="") as handle:
        writer = csv.DictWriter(handle, TABLE_COLUMNS, extrasaction="ignore")
        writer.writeheader()
        writer.writerows(rows)
    (out / "scaling.json").write_text(json.dumps({"points": rows, "exponents": growth_exponents(rows)}, indent=1))
