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

import argparse
import csv
import json
import math
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable, Sequence

import numpy as np

from polyppl.backends import BACKENDS
from polyppl.errors import UserError
from polyppl.spec import Dataset

DEFAULT_OUT = Path("polyppl-bench")
SWEEP_MODELS = ("multilevel-logistic", "beta-binomial")
#: Measures of each point, with the label of their plot axis.
MEASURES = {
    "compile_seconds": "compile s",
    "seconds_per_gradient": "s per gradient",
    "gradients_per_draw": "gradients per draw",
    "ess_bulk_per_second": "bulk ESS per s",
    "peak_memory_mb": "peak memory MB",
}
#: The dimension each model's sizes vary along (beside it, the others are held fixed).
SIZE_NAMES = {"multilevel-logistic": ("groups", "rows_per_cell"), "beta-binomial": ("variants",)}
#: How the data reach the likelihood: counts per cell (default) or one term per row.
FORMS = ("counts", "rows")


def _words(name: str) -> str:
    return name.replace("_", " ")


@dataclass(frozen=True)
class Point:
    model: str
    backend: str
    sizes: tuple[tuple[str, int], ...]  # (name, value), in SIZE_NAMES order
    form: str = "counts"  # one of FORMS

    @property
    def key(self) -> str:
        parts = [self.model, self.backend, *(f"{k}={v}" for k, v in self.sizes)]
        return "|".join(parts if self.form == "counts" else [*parts, f"form={self.form}"])

    def describe(self) -> str:
        sizes = ", ".join(f"{_words(k)} {v}" for k, v in self.sizes)
        return f"{self.model} {sizes}{' (row-level)' if self.form == 'rows' else ''} on {self.backend}"


@dataclass(frozen=True)
class Sweep:
    """Sizes per model, as lines through a base point, and the sampler settings. A line's
    entry may name a data ``form`` beside its sizes (default ``counts``)."""

    lines: dict[str, list[dict[str, Any]]]
    chains: int
    draws: int
    tune: int
    timeout_seconds: int


QUICK = Sweep(
    lines={
        "multilevel-logistic": [{"groups": g, "rows_per_cell": 1000} for g in (2, 16, 128)],
        "beta-binomial": [{"variants": k} for k in (4, 32, 256)],
    },
    chains=2, draws=300, tune=300, timeout_seconds=600,
)
FULL = Sweep(
    lines={
        "multilevel-logistic": [{"groups": g, "rows_per_cell": 1000} for g in (2, 8, 32, 128, 512, 2048)]
        + [{"groups": 8, "rows_per_cell": n} for n in (100, 10_000, 100_000)]
        # The row-level model costs one term per row: PyMC took 12.5 minutes at 3,000 rows
        # per cell (48,000 rows); 10,000 per cell would take about 40, 100,000 hours.
        + [{"groups": 8, "rows_per_cell": n, "form": "rows"} for n in (100, 300, 1_000, 3_000)],
        "beta-binomial": [{"variants": k} for k in (4, 16, 64, 256, 1024)],
    },
    chains=4, draws=1000, tune=1000, timeout_seconds=3600,
)


def multilevel_logistic_data(groups: int, rows_per_cell: int, seed: int = 0, form: str = "counts") -> Dataset:
    """Counts per (group, treated) cell: intercepts ~ N(-0.5, 0.5), effects ~ N(0.3, 0.3).
    ``form="rows"``: the same data as one row per trial (successes first in each cell)."""
    from polyppl.models.multilevel_logistic import cells_dataset, rows_dataset

    rng = np.random.default_rng(seed)
    a, b = rng.normal(-0.5, 0.5, groups), rng.normal(0.3, 0.3, groups)
    group_index, treated = np.repeat(np.arange(groups), 2), np.tile([0, 1], groups)
    p = 1 / (1 + np.exp(-(a[group_index] + b[group_index] * treated)))
    trials = np.full(2 * groups, rows_per_cell)
    successes = rng.binomial(trials, p)
    names = [f"g{i}" for i in range(groups)]
    source = f"synthetic, {groups} groups x {rows_per_cell} rows per cell"
    if form == "rows":
        success = np.concatenate([np.arange(n) < k for n, k in zip(trials, successes)]).astype(np.int64)
        return rows_dataset(names, np.repeat(group_index, trials), np.repeat(treated, trials), success, source)
    return cells_dataset(names, group_index, treated, trials, successes, source)


def beta_binomial_data(variants: int, trials: int = 1000, seed: int = 0) -> Dataset:
    """Rates ~ Beta(30, 70) (around 0.3), ``trials`` per variant."""
    from polyppl.models.beta_binomial import dataset_from_counts

    rng = np.random.default_rng(seed)
    successes = rng.binomial(trials, rng.beta(30, 70, variants))
    return dataset_from_counts([f"v{i}" for i in range(variants)], [trials] * variants, successes,
                               f"synthetic, {variants} variants x {trials} trials")


def synthetic_dataset(model: str, sizes: dict[str, int], form: str = "counts") -> Dataset:
    if model == "multilevel-logistic":
        return multilevel_logistic_data(sizes["groups"], sizes["rows_per_cell"], form=form)
    if form != "counts":
        raise UserError(f"{model} has no row-level form")
    return beta_binomial_data(sizes["variants"])


def points(sweep: Sweep, models: Sequence[str], backends: Sequence[str]) -> list[Point]:
    return [
        Point(model, backend, tuple((name, sizes[name]) for name in SIZE_NAMES[model]), sizes.get("form", "counts"))
        for model in models
        for sizes in sweep.lines[model]
        for backend in backends
    ]


def peak_memory_mb() -> float:
    """This process's peak resident memory. Linux's VmHWM, not ``ru_maxrss``: a child
    started by fork and exec inherits its parent's ``ru_maxrss`` (measured: 1.5 GB for a
    child of a 1.5 GB parent), while VmHWM starts afresh with the new program."""
    import resource

    status = Path("/proc/self/status")
    if status.exists():
        for line in status.read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # kB on Linux; no /proc elsewhere


def measure_point(point: Point, sweep: Sweep) -> dict[str, Any]:
    """Sample one point in this process (run by the child): the row of the results table."""
    from polyppl.models import get_model
    from polyppl.runner import sample, summarize
    from polyppl.settings import SamplerSettings

    builtin = get_model(point.model)
    dataset = synthetic_dataset(point.model, dict(point.sizes), point.form)
    settings = SamplerSettings(chains=sweep.chains, draws=sweep.draws, tune=sweep.tune, seed=1)
    idata = sample(builtin.spec(None, dataset), dataset, point.backend, settings)
    record = summarize(idata).record()
    t, d = record["timings"], record["diagnostics"]
    return {
        "compile_seconds": t["compile_seconds"],
        "compile_cached": t["compile_cached"],
        "warmup_seconds": t["warmup_seconds"],
        "sampling_seconds": t["sampling_seconds"],
        "seconds_per_gradient": d["seconds_per_gradient"],
        "gradients_per_draw": d["gradients_per_draw"],
        "ess_bulk_min": d["ess_bulk_min"],
        "ess_bulk_per_second": d["ess_bulk_per_second"],
        "divergences": d["divergences"],
        "engine": record["engine"],
        "peak_memory_mb": peak_memory_mb(),
    }


def run_point(point: Point, sweep: Sweep) -> dict[str, Any]:
    """One point in a child process; its row, or its status if it failed or ran too long."""
    row: dict[str, Any] = {"key": point.key, "model": point.model, "backend": point.backend, **dict(point.sizes),
                           "form": point.form}
    request = json.dumps({"point": [point.model, point.backend, point.sizes], "form": point.form,
                          "sweep": _sweep_json(sweep)})
    start = time.perf_counter()
    try:
        done = subprocess.run([sys.executable, "-m", "polyppl.bench", request], capture_output=True, text=True,
                              timeout=sweep.timeout_seconds)
    except subprocess.TimeoutExpired:
        return {**row, "status": "timeout", "wall_seconds": time.perf_counter() - start}
    row["wall_seconds"] = time.perf_counter() - start
    if done.returncode != 0:
        return {**row, "status": "error", "error": done.stderr.strip().splitlines()[-1:] or ["no output"]}
    return {**row, "status": "ok", **json.loads(done.stdout.strip().splitlines()[-1])}


def _sweep_json(sweep: Sweep) -> dict[str, int]:
    return {"chains": sweep.chains, "draws": sweep.draws, "tune": sweep.tune, "timeout_seconds": sweep.timeout_seconds}


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


def run_sweep(
    out: Path,
    sweep: Sweep = QUICK,
    models: Sequence[str] = SWEEP_MODELS,
    backends: Sequence[str] = BACKENDS,
    progress: bool = True,
) -> list[dict[str, Any]]:
    """Run the points not yet in ``out/points.jsonl``, then write the tables and plots."""
    out.mkdir(parents=True, exist_ok=True)
    journal = out / "points.jsonl"
    done = finished_points(journal)
    if journal.exists() and not journal.read_bytes().endswith(b"\n"):
        with journal.open("a") as handle:  # a line cut short: the next row starts a line of its own
            handle.write("\n")
    todo = points(sweep, models, backends)
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
    plot(rows, out)
    return rows


def sweep_line(rows: Iterable[dict[str, Any]], model: str, size: str, form: str = "counts") -> list[dict[str, Any]]:
    """The finished points of ``model`` in ``form`` along ``size``: those whose other sizes
    are at their most common value (the base point the sweep's lines run through)."""
    line = [r for r in rows if r["status"] == "ok" and r["model"] == model and r.get("form", "counts") == form]
    for other in SIZE_NAMES[model]:
        if other != size and line:
            values = [r[other] for r in line]
            common = max(set(values), key=values.count)
            line = [r for r in line if r[other] == common]
    return line


def growth_exponents(rows: Iterable[dict[str, Any]]) -> list[dict[str, Any]]:
    """Least-squares slope of log(measure) on log(size), per model, data form, backend and
    size name, along the sweep's lines (``sweep_line``)."""
    rows = list(rows)
    out = []
    for model, names in SIZE_NAMES.items():
        for name in names:
            for form in FORMS:
                for backend in BACKENDS:
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


def plot(rows: list[dict[str, Any]], out: Path) -> list[Path]:
    """One figure per model and size (``scaling-<model>-<size>.png``): a log-log panel per
    measure, a colour per backend, solid for counts per cell and dashed for row-level data."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    colours = {backend: f"C{k}" for k, backend in enumerate(BACKENDS)}
    styles = {"counts": "-", "rows": "--"}
    paths = []
    for model, names in SIZE_NAMES.items():
        for size in names:
            lines = {form: sweep_line(rows, model, size, form) for form in FORMS}
            lines = {form: line for form, line in lines.items() if len({r[size] for r in line}) >= 2}
            if not lines:
                continue
            figure, axes = plt.subplots(1, len(MEASURES), figsize=(4 * len(MEASURES), 3.6))
            for axis, (measure, label) in zip(axes, MEASURES.items()):
                for form, line in lines.items():
                    for backend in BACKENDS:
                        xy = sorted((r[size], r[measure]) for r in line if r["backend"] == backend and r.get(measure))
                        if xy:
                            name = backend if form == "counts" else f"{backend}, row-level"
                            axis.plot(*zip(*xy), styles[form], marker="o", color=colours[backend], label=name)
                axis.set(xscale="log", yscale="log", xlabel=_words(size), title=label)
                axis.grid(True, which="both", alpha=0.3)
            axes[0].legend(fontsize="small")
            base = next(iter(lines.values()))[0]
            held = ", ".join(f"{_words(n)} = {base[n]}" for n in names if n != size)
            figure.suptitle(f"{model}: cost against {_words(size)}" + (f" ({held})" if held else ""))
            figure.tight_layout()
            path = out / f"scaling-{model}-{size}.png"
            figure.savefig(path, dpi=90)
            plt.close(figure)
            paths.append(path)
    return paths


def exponents_text(exponents: list[dict[str, Any]]) -> str:
    from polyppl.tables import table

    rows = [[e["model"], e["size"], e.get("form", "counts"), e["backend"], *(_slope(e.get(m)) for m in MEASURES)]
            for e in exponents]
    return table(["model", "size", "data", "backend", *MEASURES.values()], rows)


def _slope(value: float | None) -> str:
    return "" if value is None or math.isnan(value) else f"{value:+.2f}"


def cmd_bench(args: argparse.Namespace) -> int:
    from polyppl.jobs import check_backends

    backends = check_backends(args.backends)
    models = args.model or list(SWEEP_MODELS)
    for model in models:
        if model not in SWEEP_MODELS:
            raise UserError(f"no scaling sweep for model {model!r}; sweeps exist for: {', '.join(SWEEP_MODELS)}")
    sweep = FULL if args.full else QUICK
    rows = run_sweep(args.out, sweep, models, backends)
    failed = [r for r in rows if r["status"] != "ok"]
    print(exponents_text(growth_exponents(rows)))
    print(f"saved: {args.out / 'scaling.csv'}, {args.out / 'scaling.json'}, plots {args.out}/scaling-*.png")
    for row in failed:
        print(f"point {row['key']}: {row['status']} {row.get('error', '')}", file=sys.stderr)
    return 1 if failed else 0


def register(subparsers: argparse._SubParsersAction) -> None:
    from polyppl.cli import backend_list

    parser = subparsers.add_parser("bench", help="scaling sweep: cost per backend as the data grow (CSV, JSON, PNG)")
    parser.add_argument("--model", action="append", choices=SWEEP_MODELS, help="sweep only this model (repeatable)")
    parser.add_argument("--backends", type=backend_list, help=f"comma-separated subset of {','.join(BACKENDS)} (default: all)")
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT, help=f"folder for points and results (default {DEFAULT_OUT})")
    size = parser.add_mutually_exclusive_group()
    size.add_argument("--quick", action="store_true", help="the default: 3 sizes per model, 2 chains x 300 + 300 (minutes)")
    size.add_argument("--full", action="store_true", help="2-2,048 groups, 100-100,000 rows per cell (and 100-3,000 "
                      "row-level), 4-1,024 variants, 4 chains x 1000 + 1000 (about 2 hours on 2 cores; resumable)")
    parser.set_defaults(func=cmd_bench)


def _child(request: str) -> None:
    """Entry point of a point's process: measure, print the row as one JSON line."""
    spec = json.loads(request)
    model, backend, sizes = spec["point"]
    point = Point(model, backend, tuple((name, int(value)) for name, value in sizes), spec.get("form", "counts"))
    print(json.dumps(measure_point(point, Sweep(lines={}, **spec["sweep"]))))


if __name__ == "__main__":
    _child(sys.argv[1])
