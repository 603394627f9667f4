"""``polyppl report``: one self-contained HTML page for a finished comparison.

The page leads with what a reader came for (the verdict and the decision probabilities),
then shows the posterior (forest and shrinkage plots), convergence (diagnostics, trace and
rank plots), speed, agreement and provenance. Figures are matplotlib PNGs embedded as
base64 data URIs and the CSS is inline, so the file opens anywhere, offline, and prints.

``polyppl compare`` writes one by default; ``polyppl report OUT_DIR`` rebuilds one from the
comparison JSON and the per-backend ``.nc`` files in OUT_DIR without sampling again.
"""

from __future__ import annotations

import argparse
import base64
import html
import io
import json
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Sequence

from polyppl import __version__
from polyppl.tables import fmt, plus_minus

if TYPE_CHECKING:
    import arviz as az
    import numpy as np
    import xarray as xr
    from matplotlib.figure import Figure

    from polyppl.compare import Comparison
    from polyppl.jobs import Job

#: One colour per source, the same in every figure, so a reader learns it once.
SOURCE_COLORS = {"pymc": "#2166ac", "numpyro": "#e08214", "stan": "#b2182b", "exact": "#222222"}
FALLBACK_COLORS = ("#1b7837", "#762a83", "#35978f", "#8c510a")
#: The two seed scenarios whose contrast shows shrinkage (the blog post's boxplot).
SHRINKAGE_SCENARIOS = ("four-variants", "small-a")
#: Draws of the exact posterior when it stands in for a scenario that was not sampled.
EXACT_SHRINKAGE_DRAWS = 20_000
AGREEMENT_ROWS_SHOWN = 15
DPI = 110
VERDICT_WORDS = {
    "agree": "the backends agree within Monte Carlo error",
    "disagree": "at least one pair of backends disagrees beyond Monte Carlo error",
    "inconclusive": "the comparison cannot tell whether the backends agree",
}


@dataclass
class ReportInputs:
    """A comparison with every posterior it needs loaded once, keyed by source name."""

    comparison: Comparison
    idatas: dict[str, az.InferenceData]  # backends that finished
    posteriors: dict[str, xr.Dataset]  # the backends, and "exact" when it is the reference

    @property
    def sources(self) -> list[str]:
        return list(self.posteriors)

    @property
    def out_dir(self) -> Path | None:
        """The comparison's results folder, where runs of other scenarios may be reused."""
        paths = [o.netcdf for o in self.comparison.outcomes.values() if o.netcdf is not None]
        return Path(paths[0]).parent if paths else None


# --------------------------------------------------------------------------- entry points


def write_report(comparison: Comparison, path: str | Path) -> Path:
    """Write the comparison's HTML report to ``path``; return the path."""
    import matplotlib

    matplotlib.use("Agg")  # no display; also keeps a GUI backend from opening windows
    from polyppl.inference import atomic_write

    inputs = _load_inputs(comparison)
    page = _page(inputs)
    path = Path(path)
    atomic_write(path, lambda tmp: tmp.write_text(page, encoding="utf-8"))
    return path


def load_comparison(out_dir: str | Path, model: str | None = None, scenario: str | None = None) -> Comparison:
    """Rebuild a finished comparison from ``OUT_DIR/<model>-<scenario>-comparison.json`` and
    the backends' ``.nc`` files, without sampling. The agreement tests and the verdict are
    the ones saved; the decision draws are recomputed from the saved posteriors."""
    summary_path = _find_comparison(Path(out_dir), model, scenario)  # before the heavy imports: fail fast

    from polyppl.agreement import PairTest
    from polyppl.compare import BackendOutcome, Comparison, exact_reference, quantities
    from polyppl.errors import UserError
    from polyppl.inference import load_netcdf
    from polyppl.runner import run_path
    from polyppl.settings import SamplerSettings

    saved = json.loads(summary_path.read_text())
    job = _saved_job(saved, summary_path.parent)
    outcomes = {}
    for backend, record in saved["backends"].items():
        status = record.get("status", "error")
        netcdf = run_path(summary_path.parent, job, backend).with_suffix(".nc") if status == "ok" else None
        if netcdf is not None and not netcdf.exists():
            raise UserError(f"{summary_path} lists a finished {backend} run, but {netcdf} is missing")
        outcomes[backend] = BackendOutcome(backend, status, record, netcdf, record.get("error"))
    agreement = saved["agreement"]
    comparison = Comparison(
        job, SamplerSettings(**saved["settings"]), outcomes, agreement["family_alpha"], agreement["practical_floor_sd"],
        tests=[PairTest(**{**p, "backends": tuple(p["backends"]), "estimates": tuple(p["estimates"])}) for p in agreement["pairs"]],
        verdict=agreement["verdict"], reasons=list(agreement["reasons"]), reference=saved.get("reference"),
    )
    for backend, outcome in outcomes.items():
        if outcome.ok:
            comparison.sources[backend] = quantities(load_netcdf(outcome.netcdf).posterior, job.builtin)
    if comparison.reference == "exact":
        comparison.sources["exact"] = quantities(exact_reference(job, comparison.settings.seed), job.builtin)
    return comparison


def _find_comparison(out_dir: Path, model: str | None, scenario: str | None) -> Path:
    from polyppl.errors import UserError

    if not out_dir.is_dir():
        raise UserError(f"{out_dir} is not a folder; give the --out folder of a finished `polyppl compare`")
    found = []
    for path in sorted(out_dir.glob("*-comparison.json")):
        saved = json.loads(path.read_text())
        if (model is None or saved.get("model") == model) and (scenario is None or saved.get("scenario") == scenario):
            found.append((path, saved.get("model"), saved.get("scenario")))
    if not found:
        wanted = " ".join(f"--{k} {v}" for k, v in (("model", model), ("scenario", scenario)) if v)
        raise UserError(f"no comparison {('matching ' + wanted + ' ') if wanted else ''}in {out_dir}: "
                        f"run `polyppl compare MODEL --out {out_dir}` first")
    if len(found) > 1:
        listing = "; ".join(f"--model {m} --scenario {s}" for _, m, s in found)
        raise UserError(f"{len(found)} comparisons in {out_dir}; pick one with {listing}")
    return found[0][0]


def _saved_job(saved: dict[str, Any], out_dir: Path) -> Job:
    """The saved comparison's job: its built-in scenario, or, for data read from a CSV file
    (which may have moved since), the data as the runs stored it in their ``.nc`` files."""
    from polyppl.errors import UserError
    from polyppl.jobs import Job, resolve
    from polyppl.models import get_model

    builtin = get_model(saved["model"])
    if saved["scenario"] in builtin.scenarios:
        return resolve(saved["model"], saved["scenario"], None, saved["parametrization"])
    finished = [b for b, r in saved["backends"].items() if r.get("status") == "ok"]
    if not finished:
        raise UserError(f"the comparison in {out_dir} used data from a file and no backend finished, so its data is not on disk")
    dataset = _dataset_from_netcdf(out_dir / f"{saved['model']}-{saved['scenario']}-{finished[0]}.nc")
    return Job(builtin, saved["scenario"], saved["parametrization"], dataset, builtin.spec(saved["parametrization"], dataset))


def _dataset_from_netcdf(path: Path):
    from polyppl.inference import load_netcdf
    from polyppl.spec import Dataset

    idata = load_netcdf(path)
    groups = [idata.constant_data, idata.observed_data, idata.posterior]
    values = {name: var.values for g in groups[:2] for name, var in g.data_vars.items()}
    coords = {d: tuple(g[d].values.tolist()) for g in groups for d in g.dims if d not in ("chain", "draw")}
    return Dataset(values, coords, str(idata.posterior.attrs.get("data_source", f"file behind {path.name}")))


def _load_inputs(comparison: Comparison) -> ReportInputs:
    from polyppl.compare import exact_reference
    from polyppl.inference import load_netcdf

    idatas = {b: load_netcdf(o.netcdf) for b, o in comparison.outcomes.items() if o.ok and o.netcdf is not None}
    posteriors = {b: idata.posterior for b, idata in idatas.items()}
    if comparison.reference == "exact":
        posteriors["exact"] = exact_reference(comparison.job, comparison.settings.seed)
    return ReportInputs(comparison, idatas, posteriors)


# --------------------------------------------------------------------------- page


def _page(inputs: ReportInputs) -> str:
    c = inputs.comparison
    title = f"polyppl: {c.job.model} · {c.job.scenario}"
    sections = [
        ("verdict", "Verdict", _verdict_section(c)),
        ("decisions", "Decisions", _decisions_section(inputs)),
        ("posterior", "Posterior", _forest_section(inputs)),
        ("shrinkage", "Shrinkage", _shrinkage_section(inputs)),
        ("diagnostics", "Diagnostics", _diagnostics_section(c)),
        ("traces", "Trace and rank plots", _trace_section(inputs)),
        ("speed", "Speed", _speed_section(inputs)),
        ("agreement", "Agreement", _agreement_section(c)),
        ("provenance", "Provenance", _provenance_section(c)),
    ]
    nav = " · ".join(f'<a href="#{key}">{_e(name)}</a>' for key, name, content in sections if content)
    body = "\n".join(f'<section id="{key}">\n<h2>{_e(name)}</h2>\n{content}\n</section>' for key, name, content in sections if content)
    s = c.settings
    subtitle = (f"{_e(c.job.parametrization)} parametrization · data: {_e(c.job.dataset.source)} · "
                f"{s.chains} chains × {s.tune} warm-up + {s.draws} draws · seed {s.seed}")
    return f"""<!DOCTYPE html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>{_e(title)}</title>
<style>{CSS}</style>
</head>
<body>
<header>
<h1>{_e(c.job.model)} <span class="scenario">{_e(c.job.scenario)}</span></h1>
<p class="subtitle">{subtitle}</p>
<nav>{nav}</nav>
</header>
<main>
{body}
</main>
<footer>Written by polyppl {_e(__version__)}. Every figure is embedded in this file; it needs no network.</footer>
</body>
</html>
"""


CSS = """
:root { --ink: #1a1a1a; --muted: #5b6470; --rule: #d8dde3; --band: #f4f6f8; }
* { box-sizing: border-box; }
body { margin: 0; color: var(--ink); background: #fff;
  font: 15px/1.5 -apple-system, "Segoe UI", "DejaVu Sans", Helvetica, Arial, sans-serif; }
header, main, footer { max-width: 1120px; margin: 0 auto; padding: 0 24px; }
header { padding-top: 20px; border-bottom: 1px solid var(--rule); }
h1 { font-size: 26px; margin: 0 0 2px; }
h1 .scenario { font-weight: normal; color: var(--muted); }
h2 { font-size: 20px; margin: 28px 0 8px; padding-bottom: 4px; border-bottom: 2px solid var(--ink); }
h3 { font-size: 16px; margin: 18px 0 6px; }
.subtitle { margin: 0 0 6px; color: var(--muted); }
nav { margin: 0 0 10px; font-size: 14px; }
nav a { color: #2166ac; text-decoration: none; }
.verdict { padding: 10px 16px; border-left: 8px solid; border-radius: 4px; }
.verdict p { margin: 0; font-size: 18px; }
.verdict ul { margin: 6px 0 0; padding-left: 20px; }
.verdict-agree { background: #e8f5e9; border-color: #2e7d32; }
.verdict-disagree { background: #fdecea; border-color: #c62828; }
.verdict-inconclusive { background: #fff6e0; border-color: #d18a00; }
table { border-collapse: collapse; margin: 8px 0 12px; font-size: 13.5px; }
th, td { padding: 4px 10px; border-bottom: 1px solid var(--rule); text-align: right; white-space: nowrap; }
th { background: var(--band); font-weight: 600; }
th:first-child, td:first-child, td.text, th.text { text-align: left; }
td.text { white-space: normal; }
tr.bad td { background: #fdecea; }
.table-scroll { overflow-x: auto; }
figure { margin: 12px 0 20px; }
figure img { display: block; max-width: 100%; height: auto; }
figcaption { color: var(--muted); font-size: 13.5px; margin-top: 4px; max-width: 900px; }
dl.flags dt { font-weight: 600; float: left; clear: left; width: 110px; }
dl.flags dd { margin: 0 0 4px 120px; }
.note { color: var(--muted); font-size: 13.5px; }
details summary { cursor: pointer; color: #2166ac; }
footer { color: var(--muted); font-size: 12.5px; padding: 24px; border-top: 1px solid var(--rule); margin-top: 32px; }
@media print {
  body { font-size: 11pt; }
  header, main, footer { max-width: none; padding: 0; }
  nav, details summary { display: none; }
  section { break-inside: auto; }
  figure, table, .verdict { break-inside: avoid; }
  h2, h3 { break-after: avoid; }
  .table-scroll { overflow: visible; }
  a { color: inherit; text-decoration: none; }
  @page { margin: 14mm; }
}
"""


# --------------------------------------------------------------------------- sections


def _verdict_section(c: Comparison) -> str:
    reasons = "".join(f"<li>{_e(r)}</li>" for r in c.reasons)
    return (f'<div class="verdict verdict-{_e(c.verdict)}"><p><strong>{_e(c.verdict.upper())}</strong>: '
            f"{_e(VERDICT_WORDS.get(c.verdict, ''))}.</p>{f'<ul>{reasons}</ul>' if reasons else ''}</div>"
            f'<p class="note">{len(c.tests)} agreement tests at a family-wise false-alarm rate of {c.family_alpha:.0%} '
            f"(Holm); gaps under {c.floor} posterior sd are ignored.</p>")


def _decisions_section(inputs: ReportInputs) -> str:
    groups = _decision_groups(inputs.comparison)
    if not groups:
        return '<p class="note">No backend finished, so there are no decision probabilities.</p>'
    sources = _decision_sources(inputs)
    rows = []
    for group, items in groups.items():
        for label, quantity in items:
            cells = []
            for name in sources:
                q = inputs.comparison.sources[name].get(quantity)
                cells.append(plus_minus(q.summary["mean"], q.summary["mcse_mean"]) if q else "-")
            rows.append([_decision_label(group, label), *cells])
    table = _table(["decision (estimate ± MCSE)", *sources], rows)
    note = ""
    if "prob_beats" in groups:
        note = '<p class="note">Each pair appears once, likelier winner first: P(Y beats X) = 1 − P(X beats Y).</p>'
    return table + note + _decisions_figure(inputs, groups, sources)


def _decision_groups(c: Comparison) -> dict[str, list[tuple[str, str]]]:
    """Decision quantities by group as (label, quantity key); pairwise "beats" reduced to one
    ordering per pair, the one the first source finds likelier, so no bar is a mirror image."""
    if not c.sources:
        return {}
    first = next(iter(c.sources.values()))
    groups: dict[str, list[tuple[str, str]]] = {}
    for key, q in first.items():
        if not q.is_probability:
            continue
        group, label = key[:-1].split("[", 1)
        if group == "prob_beats":
            winner, loser = label.split(">", 1)
            mirror = f"{loser}>{winner}"
            if q.summary["mean"] < 0.5 or (q.summary["mean"] == 0.5 and label > mirror):
                continue
        groups.setdefault(group, []).append((label, key))
    return groups


def _decision_sources(inputs: ReportInputs) -> list[str]:
    return [name for name in inputs.sources if name in inputs.comparison.sources]


def _decision_label(group: str, label: str) -> str:
    if group == "prob_beats":
        winner, loser = label.split(">", 1)
        return f"P({winner} beats {loser})"
    return {
        "prob_best": f"P({label} is best)",
        "prob_treatment_better": f"P(treatment better) in {label}",
        "prob_effect_positive": f"P(effect > 0) at {label}",
    }.get(group, f"{group}[{label}]")


def _decisions_figure(inputs: ReportInputs, groups: dict[str, list[tuple[str, str]]], sources: list[str]) -> str:
    import matplotlib.pyplot as plt
    import numpy as np

    heights = [len(items) * (0.22 * len(sources) + 0.25) + 0.7 for items in groups.values()]
    fig, axes = plt.subplots(len(groups), 1, figsize=(10, sum(heights)), squeeze=False,
                             gridspec_kw={"height_ratios": heights})
    bar = 0.8 / len(sources)
    for ax, (group, items) in zip(axes[:, 0], groups.items()):
        positions = np.arange(len(items))
        for i, name in enumerate(sources):
            draws = [inputs.comparison.sources[name].get(key) for _, key in items]
            means = [q.summary["mean"] if q else np.nan for q in draws]
            errors = [2 * q.summary["mcse_mean"] if q else 0 for q in draws]
            y = positions - 0.4 + bar * (i + 0.5)
            ax.barh(y, means, height=bar * 0.9, color=_color(name), label=name, xerr=errors,
                    error_kw={"ecolor": "#000", "elinewidth": 1, "capsize": 2})
            for yy, m, e in zip(y, means, errors):
                ax.text(m + e + 0.01, yy, f"{m:.3f}", va="center", fontsize=8, color="#333")
        ax.set_yticks(positions, [_decision_label(group, label) for label, _ in items])
        ax.invert_yaxis()
        ax.set_xlim(0, 1.1)
        ax.set_xticks(np.linspace(0, 1, 6))
        ax.axvline(0.5, color="#999", lw=0.8, ls=":")
        ax.grid(axis="x", alpha=0.3)
        ax.spines[["top", "right"]].set_visible(False)
    axes[0, 0].legend(loc="lower right", bbox_to_anchor=(1, 1), ncol=len(sources), frameon=False)
    axes[-1, 0].set_xlabel("posterior probability")
    return _figure(fig, "Decision probabilities, one bar per backend",
                   "One bar per backend; the black whiskers are ± 2 Monte Carlo standard errors.")


def _forest_section(inputs: ReportInputs) -> str:
    groups = _parameter_groups(inputs)
    return _forest_figure(inputs, groups) if groups else ""


def _parameter_groups(inputs: ReportInputs) -> list[list[str]]:
    """The posterior's variables in groups that share an axis: the scalar hyperparameters
    together, then each vector variable alone. The non-centred auxiliaries (``a_z`` behind
    ``a``) are left to the trace plots: a reader interprets ``a``, the sampler moves ``a_z``."""
    spec = inputs.comparison.job.spec
    auxiliary = {p.name for p in spec.params if p.name.endswith("_z") and p.name[:-2] in {d.name for d in spec.deterministics}}
    posterior = next(iter(inputs.posteriors.values()), None)
    if posterior is None:
        return []
    names = [n for n in posterior.data_vars if n not in auxiliary]
    scalars = [n for n in names if posterior[n].ndim == 2]
    vectors = [[n] for n in names if posterior[n].ndim > 2]
    return ([scalars] if scalars else []) + vectors


def _forest_figure(inputs: ReportInputs, groups: list[list[str]]) -> str:
    """One ArviZ forest plot per parameter group, two to a row, the backends overlaid."""
    import arviz as az
    import matplotlib.pyplot as plt
    import numpy as np

    columns = 2 if len(groups) > 1 else 1
    first = next(iter(inputs.posteriors.values()))
    lines = [sum(int(np.prod(first[n].shape[2:])) for n in names) for names in groups]
    row_lines = [max(lines[i:i + columns]) for i in range(0, len(groups), columns)]
    n_sources = len(inputs.sources)
    row_inches = [0.8 + 0.19 * n * n_sources for n in row_lines]
    fig = plt.figure(figsize=(10.5, sum(row_inches)), layout="constrained")
    grid = fig.add_gridspec(len(row_lines), columns, height_ratios=row_inches)
    for i, names in enumerate(groups):
        ax = fig.add_subplot(grid[i // columns, i % columns])
        sources = [s for s in inputs.sources if all(n in inputs.posteriors[s] for n in names)]
        datasets = [inputs.posteriors[s][names] for s in sources]
        # A single source gets no legend from ArviZ, and its name before every label.
        az.plot_forest(datasets, model_names=sources if len(sources) > 1 else None, var_names=names, combined=True, hdi_prob=0.9,
                       colors=[_color(s) for s in sources], textsize=9, legend=True, ax=ax)
        if ax.get_legend() is not None:  # asked for, as without it ArviZ prefixes every label; one per figure suffices
            ax.get_legend().remove()
        ax.set_title("")  # ArviZ's "90.0% HDI", said once in the caption
        low = min(float(d[n].quantile(0.05)) for d in datasets for n in names)
        high = max(float(d[n].quantile(0.95)) for d in datasets for n in names)
        if low > 0 and high / low > 100:  # e.g. the Beta-Binomial's a and b, with tails to infinity
            ax.set_xscale("log")
        ax.set_title(", ".join(names), fontsize=10, loc="left")
    handles = [plt.Line2D([], [], color=_color(s), lw=2.5) for s in inputs.sources]
    fig.legend(handles, inputs.sources, loc="outside upper right", ncol=n_sources, frameon=False, fontsize=9)
    exact = " and the exact posterior" if "exact" in inputs.sources else ""
    return _figure(fig, "Forest plots of every parameter group",
                   f"Every parameter for each backend{exact}, chains combined: median (dot), quartiles (thick line) "
                   "and 90% highest-density interval (thin line).")


def _shrinkage_section(inputs: ReportInputs) -> str:
    parts = []
    panel = _shrinkage_panel(inputs.comparison.job, inputs.posteriors)
    if panel is not None:
        parts.append(_shrinkage_figure(panel, inputs.comparison.job))
    if inputs.comparison.job.model == "beta-binomial":
        parts.append(_scenario_shrinkage_figure(inputs))
    return "\n".join(parts)


@dataclass
class ShrinkagePanel:
    """Observed rates (or effects) and their posteriors per variant, group cell or school."""

    labels: list[str]
    observed: np.ndarray
    draws: dict[str, np.ndarray]  # source -> (samples, len(labels))
    grand: float
    grand_label: str
    what: str  # the axis label


def _shrinkage_panel(job: Job, posteriors: dict[str, xr.Dataset]) -> ShrinkagePanel | None:
    import numpy as np

    values = job.dataset.values
    if job.model == "beta-binomial":
        trials, successes = np.asarray(values["trials"], float), np.asarray(values["successes"], float)
        draws = {s: _stack(p["rates"]) for s, p in posteriors.items()}
        return ShrinkagePanel([str(v) for v in job.dataset.coords["variant"]], successes / trials, draws,
                              successes.sum() / trials.sum(), "grand rate (all variants pooled)", "success rate")
    if job.model == "multilevel-logistic":
        from polyppl.models.multilevel_logistic import aggregate

        cells = aggregate(job.dataset) if "success" in values else job.dataset
        group_idx = np.asarray(cells.values["group_idx"])
        treated = np.asarray(cells.values["treated"])
        trials, successes = np.asarray(cells.values["trials"], float), np.asarray(cells.values["successes"], float)
        groups = [str(g) for g in cells.coords["group"]]
        labels = [f"{groups[g]} {'treated' if t else 'control'}" for g, t in zip(group_idx, treated)]
        # A cell's success probability is a_inv (control) or fin (treated) of its group.
        draws = {s: np.where(treated == 1, _stack(p["fin"])[:, group_idx], _stack(p["a_inv"])[:, group_idx])
                 for s, p in posteriors.items()}
        return ShrinkagePanel(labels, successes / trials, draws, successes.sum() / trials.sum(),
                              "grand rate (all cells pooled)", "success rate")
    if job.model == "eight-schools":
        y, sigma = np.asarray(values["y"], float), np.asarray(values["sigma"], float)
        weights = 1 / sigma**2
        draws = {s: _stack(p["theta"]) for s, p in posteriors.items()}
        return ShrinkagePanel([str(v) for v in job.dataset.coords["school"]], y, draws, float((weights * y).sum() / weights.sum()),
                              "pooled estimate (precision-weighted mean)", "treatment effect")
    return None


def _stack(values: xr.DataArray) -> np.ndarray:
    """(chain, draw, k) draws as (samples, k)."""
    array = values.values
    return array.reshape(-1, *array.shape[2:])


def _shrinkage_figure(panel: ShrinkagePanel, job: Job) -> str:
    import matplotlib.pyplot as plt
    import numpy as np

    sources = list(panel.draws)
    fig, ax = plt.subplots(figsize=(10, 4.2))
    positions = np.arange(len(panel.labels))
    width = 0.5 / max(len(sources), 1)
    ax.axhline(panel.grand, color="#555", ls="--", lw=1.2, label=panel.grand_label)
    ax.scatter(positions - 0.35, panel.observed, s=70, facecolors="none", edgecolors="#000", linewidths=1.5,
               label="observed", zorder=3)
    for i, name in enumerate(sources):
        draws = panel.draws[name]
        mean = draws.mean(axis=0)
        low, high = np.quantile(draws, [0.05, 0.95], axis=0)
        x = positions - 0.1 + width * i
        ax.errorbar(x, mean, yerr=[mean - low, high - mean], fmt="o", color=_color(name), ms=6, capsize=2,
                    label=f"{name}: posterior mean, 90% interval")
    for x, observed, target in zip(positions, panel.observed, next(iter(panel.draws.values())).mean(axis=0)):
        ax.annotate("", xy=(x - 0.12, target), xytext=(x - 0.33, observed),
                    arrowprops={"arrowstyle": "->", "color": "#888", "lw": 1})
    crowded = sum(len(label) for label in panel.labels) > 60
    ax.set_xticks(positions, panel.labels, rotation=25 if crowded else 0, ha="right" if crowded else "center")
    ax.set_ylabel(panel.what)
    ax.grid(axis="y", alpha=0.3)
    ax.spines[["top", "right"]].set_visible(False)
    ax.legend(fontsize=8.5, loc="upper left", bbox_to_anchor=(1.01, 1), frameon=False)
    fig.tight_layout()
    return _figure(fig, "Shrinkage: observed against posterior",
                   f"Shrinkage in {job.scenario}: each observed {panel.what} (hollow circle) and its posterior "
                   f"mean per backend; the arrows show the pull toward the {panel.grand_label.split(' (')[0]} (dashed).")


def _scenario_shrinkage_figure(inputs: ReportInputs) -> str:
    """The blog post's boxplot: the same model on ``four-variants`` and on ``small-a``, where
    A has 10 trials instead of 100 and its rate is pulled much further toward the grand rate."""
    import matplotlib.pyplot as plt
    import numpy as np

    from polyppl.jobs import resolve

    fig, axes = plt.subplots(1, len(SHRINKAGE_SCENARIOS), figsize=(10, 4), sharey=True)
    provenance = []
    for ax, scenario in zip(axes, SHRINKAGE_SCENARIOS):
        job = resolve("beta-binomial", scenario)
        rates, source = _scenario_rates(inputs, job)
        provenance.append(f"{scenario}: {source}")
        trials = np.asarray(job.dataset.values["trials"], float)
        successes = np.asarray(job.dataset.values["successes"], float)
        labels = [f"{v}\n(n={int(n)})" for v, n in zip(job.dataset.coords["variant"], trials)]
        ax.boxplot(rates, whis=(5, 95), showfliers=False, widths=0.5, patch_artist=True,
                   boxprops={"facecolor": "#d1e5f0", "edgecolor": "#2166ac"}, medianprops={"color": "#2166ac"})
        positions = np.arange(1, len(labels) + 1)
        ax.scatter(positions, successes / trials, marker="D", s=40, facecolors="none", edgecolors="#000", zorder=3,
                   label="observed rate")
        ax.axhline(successes.sum() / trials.sum(), color="#555", ls="--", lw=1.2, label="grand rate")
        ax.set_xticks(positions, labels)
        ax.set_title(scenario, fontsize=11)
        ax.grid(axis="y", alpha=0.3)
        ax.spines[["top", "right"]].set_visible(False)
    axes[0].set_ylabel("success rate")
    axes[0].legend(fontsize=8.5, loc="upper left", frameon=False)
    fig.tight_layout()
    return _figure(fig, "Shrinkage across the seed scenarios",
                   "Posterior rates per variant (box: quartiles; whiskers: 5% to 95%) in the seed's two scenarios: "
                   "with 10 trials instead of 100, A is pulled much further toward the grand rate. Computed from "
                   + "; ".join(provenance) + ".")


def _scenario_rates(inputs: ReportInputs, job: Job) -> tuple[np.ndarray, str]:
    """Posterior rate draws for one seed scenario, and where they came from: this comparison,
    else a finished run of that scenario in the same folder, else the exact posterior.
    Among runs, converged ones first: unconverged draws would misstate the shrinkage."""
    from polyppl import exact
    from polyppl.backends import BACKENDS
    from polyppl.inference import load_netcdf

    c = inputs.comparison
    if c.job.model == job.model and c.job.scenario == job.scenario and c.job.dataset.source == job.dataset.source:
        if "exact" in inputs.posteriors:
            return _stack(inputs.posteriors["exact"]["rates"]), "this comparison's exact posterior"
        records = {b: o.record for b, o in c.outcomes.items() if b in inputs.posteriors}
        for backend in _converged_first(records):
            return _stack(inputs.posteriors[backend]["rates"]), f"this comparison's {backend} draws"
    if inputs.out_dir is not None:
        stems = {b: inputs.out_dir / f"{job.model}-{job.scenario}-{b}" for b in BACKENDS}
        records = {b: json.loads(stem.with_suffix(".json").read_text()) for b, stem in stems.items()
                   if stem.with_suffix(".json").exists() and stem.with_suffix(".nc").exists()}
        for backend in _converged_first({b: r for b, r in records.items() if r.get("status") == "ok"}):
            netcdf = stems[backend].with_suffix(".nc")
            return _stack(load_netcdf(netcdf).posterior["rates"]), f"the finished {backend} run {netcdf.name}"
    draws = exact.draws(job.dataset, EXACT_SHRINKAGE_DRAWS, seed=c.settings.seed)
    return draws["rates"], (f"{EXACT_SHRINKAGE_DRAWS} draws of the exact posterior (grid quadrature, "
                            "polyppl.exact), as the results folder holds no run of it")


def _converged_first(records: dict[str, dict[str, Any]]) -> list[str]:
    """Backends of finished runs, those whose R-hat and ESS passed first."""
    from polyppl.diagnostics import convergence_failures

    return sorted(records, key=lambda b: bool(convergence_failures(records[b]["diagnostics"]["flags"])))


def _diagnostics_section(c: Comparison) -> str:
    from polyppl.diagnostics import FLAG_MEANINGS, convergence_failures

    rows, bad_rows = [], set()
    for backend, o in c.outcomes.items():
        if not o.ok:
            rows.append([backend, o.status, "-", "-", "-", "-", "-", "-", o.error or ""])
            bad_rows.add(len(rows) - 1)
            continue
        d = o.record["diagnostics"]
        rows.append([backend, "ok", f"{d['rhat_max']:.3f}", f"{d['ess_bulk_min']:.0f}", f"{d['ess_tail_min']:.0f}",
                     str(d["divergences"]), f"{100 * d['tree_depth_saturation']:.1f}%", f"{d['ebfmi_min']:.2f}",
                     ", ".join(d["flags"]) or "none"])
        if convergence_failures(d["flags"]):  # unconverged: its draws are no evidence
            bad_rows.add(len(rows) - 1)
    table = _table(["backend", "status", "R-hat max", "bulk ESS min", "tail ESS min", "divergences",
                    "at max depth", "E-BFMI min", "flags"], rows, bad_rows=bad_rows, text_columns={8})
    flags = sorted({f for o in c.outcomes.values() if o.ok for f in o.record["diagnostics"]["flags"]})
    meanings = ""
    if flags:
        items = "".join(f"<dt>{_e(f)}</dt><dd>{_e(FLAG_MEANINGS.get(f, ''))}</dd>" for f in flags)
        meanings = f"<h3>What the flags mean</h3><dl class=\"flags\">{items}</dl>"
    return ('<p class="note">Recomputed from the draws with ArviZ, the same way for every backend.</p>'
            + table + meanings)


def _trace_section(inputs: ReportInputs) -> str:
    names = [p.name for p in inputs.comparison.job.spec.params]
    parts = []
    for backend, idata in inputs.idatas.items():
        shown = [n for n in names if n in idata.posterior]
        divergences = int(idata.sample_stats["diverging"].values.sum())
        parts.append(f"<h3>{_e(backend)}</h3>")
        parts.append(_trace_figure(backend, idata, shown, divergences))
        parts.append(_rank_figure(backend, idata, shown))
    if not parts:
        return ""
    intro = ('<p class="note">The parameters NUTS actually moves (for a non-centred model, the standardised '
             "<code>_z</code> ones). Chains should overlap like one fuzzy band; rank histograms should be flat.</p>")
    return intro + "\n".join(parts)


def _trace_figure(backend: str, idata: az.InferenceData, names: list[str], divergences: int) -> str:
    import arviz as az

    axes = az.plot_trace(idata, var_names=names, compact=True, divergences="bottom",
                         figsize=(10, 1.2 * len(names) + 0.3), backend_kwargs={"layout": "constrained"})
    fig = axes.ravel()[0].figure
    marked = (f"{divergences} divergent transition{'s' if divergences != 1 else ''}, marked as ticks at the bottom of each panel"
              if divergences else "no divergent transitions")
    return _figure(fig, f"Trace plots, {backend}",
                   f"{backend}: density per chain (left) and draws in sampling order (right); {marked}.")


def _rank_figure(backend: str, idata: az.InferenceData, names: list[str]) -> str:
    import arviz as az
    import numpy as np

    panels = sum(int(np.prod(idata.posterior[n].shape[2:])) for n in names)
    columns = min(4, panels)
    rows = -(-panels // columns)
    axes = az.plot_rank(idata, var_names=names, figsize=(10, 1.7 * rows), grid=(rows, columns))
    for ax in np.ravel(axes):  # ArviZ scales text with the figure, too large for a grid
        ax.title.set_fontsize(9)
        ax.set_xlabel("rank (all chains)", fontsize=8)
        ax.set_ylabel("chain", fontsize=8)
        ax.tick_params(labelsize=7.5)
    fig = np.ravel(axes)[0].figure
    fig.set_layout_engine("constrained")
    return _figure(fig, f"Rank plots, {backend}",
                   f"{backend}: histograms of each chain's draws ranked among all chains; flat when the chains agree.")


def _speed_section(inputs: ReportInputs) -> str:
    from polyppl.compare import speed_rows

    c = inputs.comparison
    headers = ["backend", "engine", "compile s", "warm-up s", "sampling s", "bulk ESS min", "ESS/s",
               "gradients", "ESS/1000 grad", "µs/gradient"]
    rows = [[fmt(v) for v in row] for row in speed_rows(c)]
    table = _table(headers, rows, text_columns={1})
    note = ('<p class="note">ESS/s divides the smallest bulk ESS by the sampling time only; compile and warm-up '
            "are shown apart. A reused compiled model shows a compile time near zero.</p>")
    finished = {b: o.record for b, o in c.outcomes.items() if o.ok}
    return note + table + (_speed_figure(finished) if finished else "")


def _speed_figure(records: dict[str, dict[str, Any]]) -> str:
    import matplotlib.pyplot as plt
    import numpy as np

    backends = list(records)
    phases = [("compile_seconds", "compile", "#bdbdbd"), ("warmup_seconds", "warm-up", "#fdb863"),
              ("sampling_seconds", "sampling", "#5e3c99")]
    fig, (left, right) = plt.subplots(1, 2, figsize=(10, 0.6 + 0.55 * len(backends)), width_ratios=[3, 2])
    positions = np.arange(len(backends))
    start = np.zeros(len(backends))
    for key, label, color in phases:
        seconds = np.array([records[b]["timings"][key] for b in backends])
        left.barh(positions, seconds, left=start, color=color, label=label, height=0.6)
        start += seconds
    for y, total in zip(positions, start):
        left.text(total, y, f" {total:.1f} s", va="center", fontsize=9)
    left.set_xlim(0, start.max() * 1.15)
    left.set_yticks(positions, backends)
    left.invert_yaxis()
    left.set_xlabel("seconds")
    left.set_title("time per phase", fontsize=10, loc="left")
    left.legend(ncol=3, fontsize=8.5, loc="lower right", bbox_to_anchor=(1, 1), frameon=False)
    ess_per_second = [records[b]["diagnostics"]["ess_bulk_per_second"] for b in backends]
    right.barh(positions, ess_per_second, color=[_color(b) for b in backends], height=0.6)
    for y, value in zip(positions, ess_per_second):
        right.text(value, y, f" {value:.0f}", va="center", fontsize=9)
    right.set_xlim(0, max(ess_per_second) * 1.2)
    right.set_yticks(positions, [])
    right.invert_yaxis()
    right.set_xlabel("smallest bulk ESS per second of sampling")
    right.set_title("ESS per second (higher is better)", fontsize=10, loc="left")
    for ax in (left, right):
        ax.spines[["top", "right"]].set_visible(False)
        ax.grid(axis="x", alpha=0.3)
    fig.tight_layout()
    return _figure(fig, "Time per phase and ESS per second", "Wall time of compile, warm-up and sampling per backend "
                   "(stacked), and sampling efficiency.")


def _agreement_section(c: Comparison) -> str:
    if not c.tests:
        return '<p class="note">Fewer than two finished sources: no agreement tests.</p>'
    ordered = sorted(c.tests, key=lambda t: (t.agree, -abs(t.z)))
    headers = ["quantity", "pair", "statistic", "gap", "z", "p", "floor", "agree"]

    def rows(tests: Sequence) -> tuple[list[list[str]], set[int]]:
        body = [[t.quantity, " vs ".join(t.backends), t.statistic, fmt(t.gap), fmt(t.z), fmt(t.p_value),
                 fmt(t.floor), "yes" if t.agree else "NO"] for t in tests]
        return body, {i for i, t in enumerate(tests) if not t.agree}

    shown, shown_bad = rows(ordered[:AGREEMENT_ROWS_SHOWN])
    parts = [f'<p class="note">{len(c.tests)} tests, worst first: disagreements, then by |z|. '
             "z is the gap over its Monte Carlo standard error (for ks, the normal quantile of its p-value); "
             "a disagreement needs a Holm-adjusted p below the family-wise rate and a gap above the floor.</p>",
             _table(headers, shown, bad_rows=shown_bad, text_columns={1, 2})]
    if len(ordered) > AGREEMENT_ROWS_SHOWN:
        rest, rest_bad = rows(ordered[AGREEMENT_ROWS_SHOWN:])
        parts.append(f"<details><summary>all {len(ordered)} tests</summary>"
                     + _table(headers, rest, bad_rows=rest_bad, text_columns={1, 2}) + "</details>")
    return "\n".join(parts)


def _provenance_section(c: Comparison) -> str:
    settings = _table(["setting", "value"], [[k, str(v)] for k, v in c.settings.as_dict().items()], text_columns={1})
    backends = list(c.outcomes)
    records = {b: c.outcomes[b].record for b in backends}
    packages = sorted({p for r in records.values() for p in r.get("versions", {})})
    rows = [["status", *[records[b].get("status", "-") for b in backends]],
            ["engine", *[records[b].get("engine", "-") for b in backends]],
            ["seed", *[str(records[b].get("seed", "-")) for b in backends]],
            *[[p, *[records[b].get("versions", {}).get(p, "-") for b in backends]] for p in packages]]
    versions = _table(["", *backends], rows, text_columns=set(range(1, len(backends) + 1)))
    return (f'<p class="note">Model {_e(c.job.model)}, scenario {_e(c.job.scenario)}, parametrization '
            f"{_e(c.job.parametrization)}, data: {_e(c.job.dataset.source)}; reference: {_e(c.reference or 'none')}.</p>"
            f'<div style="display:flex; gap:40px; flex-wrap:wrap"><div><h3>Sampler settings</h3>{settings}</div>'
            f"<div><h3>Engines and package versions</h3>{versions}</div></div>")


# --------------------------------------------------------------------------- helpers


def _figure(fig: Figure, alt: str, caption: str) -> str:
    """The figure as an embedded PNG with its caption; closes the figure."""
    import matplotlib.pyplot as plt

    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=DPI, bbox_inches="tight", facecolor="white")
    plt.close(fig)
    data = base64.b64encode(buffer.getvalue()).decode("ascii")
    return (f'<figure><img src="data:image/png;base64,{data}" alt="{_e(alt)}">'
            f"<figcaption>{_e(caption)}</figcaption></figure>")


def _table(headers: Sequence[str], rows: Sequence[Sequence[Any]], bad_rows: set[int] = frozenset(),
           text_columns: set[int] = frozenset()) -> str:
    def cell(tag: str, i: int, value: Any) -> str:
        css = ' class="text"' if i in text_columns else ""
        return f"<{tag}{css}>{_e(str(value))}</{tag}>"

    head = "".join(cell("th", i, h) for i, h in enumerate(headers))
    bad = ' class="bad"'
    body = "".join(
        f"<tr{bad if r in bad_rows else ''}>" + "".join(cell("td", i, v) for i, v in enumerate(row)) + "</tr>"
        for r, row in enumerate(rows)
    )
    return f'<div class="table-scroll"><table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table></div>'


def _color(source: str) -> str:
    if source in SOURCE_COLORS:
        return SOURCE_COLORS[source]
    return FALLBACK_COLORS[sum(map(ord, source)) % len(FALLBACK_COLORS)]


def _e(text: str) -> str:
    return html.escape(str(text), quote=True)


# --------------------------------------------------------------------------- CLI


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser("report", help="write the HTML report of a finished comparison (no sampling)")
    parser.add_argument("out_dir", type=Path, metavar="OUT_DIR", help="the --out folder of `polyppl compare`")
    parser.add_argument("--output", type=Path, metavar="FILE.html",
                        help="where to write it (default OUT_DIR/<model>-<scenario>-report.html)")
    parser.add_argument("--model", help="which comparison, when OUT_DIR holds several")
    parser.add_argument("--scenario", help="which comparison, when OUT_DIR holds several")
    parser.set_defaults(func=cmd_report)


def cmd_report(args: argparse.Namespace) -> int:
    comparison = load_comparison(args.out_dir, args.model, args.scenario)
    path = args.output or default_report_path(args.out_dir, comparison)
    print(f"report: {write_report(comparison, path)}")
    return 0


def default_report_path(out_dir: str | Path, comparison: Comparison) -> Path:
    return Path(out_dir) / f"{comparison.job.model}-{comparison.job.scenario}-report.html"
