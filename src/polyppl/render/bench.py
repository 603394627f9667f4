"""The scaling sweep's plots (one figure per model and size) and its exponents as text."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

from polyppl.render.figures import prepare_matplotlib
from polyppl.render.text import table
from polyppl.studies.bench import FORMS, MEASURES, columns, size_names, sweep_line, sweep_models, words


def plot(rows: list[dict[str, Any]], out: Path) -> list[Path]:
    """One figure per model and size (``scaling-<model>-<size>.png``): a log-log panel per
    measure, a colour per backend, solid for counts per cell and dashed for row-level data."""
    prepare_matplotlib()
    import matplotlib.pyplot as plt

    backends = columns(rows)
    colours = {backend: f"C{k}" for k, backend in enumerate(backends)}
    styles = {"counts": "-", "rows": "--"}
    paths = []
    for model in sweep_models():
        names = size_names(model)
        for size in names:
            lines = {form: sweep_line(rows, model, size, form) for form in FORMS}
            lines = {form: line for form, line in lines.items() if len({r[size] for r in line}) >= 2}
            if not lines:
                continue
            figure, axes = plt.subplots(1, len(MEASURES), figsize=(4 * len(MEASURES), 3.6))
            for axis, (measure, label) in zip(axes, MEASURES.items()):
                for form, line in lines.items():
                    for backend in backends:
                        xy = sorted((r[size], r[measure]) for r in line if r["backend"] == backend and r.get(measure))
                        if xy:
                            name = backend if form == "counts" else f"{backend}, row-level"
                            axis.plot(*zip(*xy), styles[form], marker="o", color=colours[backend], label=name)
                axis.set(xscale="log", yscale="log", xlabel=words(size), title=label)
                axis.grid(True, which="both", alpha=0.3)
            axes[0].legend(fontsize="small")
            base = next(iter(lines.values()))[0]
            held = ", ".join(f"{words(n)} = {base[n]}" for n in names if n != size)
            figure.suptitle(f"{model}: cost against {words(size)}" + (f" ({held})" if held else ""))
            figure.tight_layout()
            path = out / f"scaling-{model}-{size}.png"
            figure.savefig(path, dpi=90)
            plt.close(figure)
            paths.append(path)
    return paths


def exponents_text(exponents: list[dict[str, Any]]) -> str:
    rows = [[e["model"], e["size"], e.get("form", "counts"), e["backend"], *(_slope(e.get(m)) for m in MEASURES)]
            for e in exponents]
    return table(["model", "size", "data", "backend", *MEASURES.values()], rows)


def points_text(rows: list[dict[str, Any]]) -> str:
    """Each point's measures, one row per point (a user's program: one row per backend)."""
    body = [[r["model"], r["backend"], r["status"], *(_measure(r.get(m)) for m in MEASURES)] for r in rows]
    return table(["model", "backend", "status", *MEASURES.values()], body)


def _measure(value: float | None) -> str:
    return "" if value is None or (isinstance(value, float) and math.isnan(value)) else f"{value:.3g}"


def _slope(value: float | None) -> str:
    return "" if value is None or math.isnan(value) else f"{value:+.2f}"
