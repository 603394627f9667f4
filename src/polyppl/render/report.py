"""The self-contained HTML page of a finished comparison.

The page leads with what a reader came for (the verdict and the decision probabilities),
then shows the posterior (forest and shrinkage plots), convergence (diagnostics, trace and
rank plots), speed, agreement and provenance. Figures are matplotlib PNGs embedded as
base64 data URIs and the CSS is inline, so the file opens anywhere, offline, and prints.

``polyppl compare`` writes one by default; ``polyppl report --out OUT`` rebuilds one from the
comparison JSON and the per-backend ``.nc`` files in OUT_DIR without sampling again.
"""

from __future__ import annotations

import base64
import html
import io
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from polyppl import __version__
from polyppl.inference.diagnostics import FLAG_MEANINGS, convergence_failures, element_keys
from polyppl.inference.idata import atomic_write, load_netcdf
from polyppl.models import Problem
from polyppl.models.base import ShrinkagePanel, stack_draws
from polyppl.render.colors import color, method_color
from polyppl.render.figures import prepare_matplotlib
from polyppl.render.tables import (
    agreement_table,
    decision_groups,
    decision_label,
    decisions_table,
    diagnostics_table,
    scorecard_table,
    settings_table,
    speed_table,
    versions_table,
)
from polyppl.studies.compare import Comparison, comparison_name, exact_posterior
from polyppl.studies.recommendation import WAYS, pick_words

if TYPE_CHECKING:
    import xarray as xr
    from matplotlib.figure import Figure

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
    idatas: dict[str, xr.DataTree]  # columns that finished
    posteriors: dict[str, xr.Dataset]  # the columns, and "exact" when it is the reference

    @property
    def sources(self) -> list[str]:
        return list(self.posteriors)

    @property
    def out_dir(self) -> Path | None:
        """The comparison's results folder, where fits of other scenarios may be reused."""
        stems = [o.stem for o in self.comparison.outcomes.values()]
        return stems[0].parent if stems else None


# --------------------------------------------------------------------------- entry points


def write_report(comparison: Comparison, path: str | Path) -> Path:
    """Write the comparison's HTML report to ``path``; return the path."""
    prepare_matplotlib()
    page = _page(_load_inputs(comparison))
    path = Path(path)
    atomic_write(path, lambda tmp: tmp.write_text(page, encoding="utf-8"))
    return path


def default_report_path(out_dir: str | Path, comparison: Comparison) -> Path:
    """``OUT/<name>-report.html``, named as the comparison's own files (``comparison_name``)."""
    return Path(out_dir) / f"{comparison_name(comparison.problem.labels, list(comparison.outcomes))}-report.html"


def _load_inputs(comparison: Comparison) -> ReportInputs:
    import xarray as xr

    idatas = {b: load_netcdf(o.netcdf) for b, o in comparison.outcomes.items() if o.ok}
    posteriors = {b: idata.posterior.to_dataset() for b, idata in idatas.items()}
    if comparison.reference == "exact":
        problem = comparison.problem
        exact = exact_posterior(problem, comparison.settings.seed)
        posteriors["exact"] = xr.Dataset(
            {name: (("chain", "draw", *getattr(problem.model[name], "dims", ())), value) for name, value in exact.items()},
            coords={d: list(problem.dataset.coords[d]) for d in problem.model.dims})
    return ReportInputs(comparison, idatas, posteriors)


# --------------------------------------------------------------------------- page


def _page(inputs: ReportInputs) -> str:
    c = inputs.comparison
    title = f"polyppl: {c.problem.name} · {c.problem.scenario}"
    sections = [
        ("recommendation", "Recommendation", _recommendation_section(c)),
        ("verdict", "Verdict", _verdict_section(c)),
        ("decisions", "Decisions", _decisions_section(inputs)),
        ("posterior", "Posterior", _drawn(_forest_section, inputs)),
        ("shrinkage", "Shrinkage", _drawn(_shrinkage_section, inputs)),
        ("diagnostics", "Diagnostics", _diagnostics_section(c)),
        ("traces", "Trace and rank plots", _drawn(_trace_section, inputs)),
        ("speed", "Speed", _speed_section(inputs)),
        ("agreement", "Agreement", _agreement_section(c)),
        ("approximations", "Approximations against NUTS", _approximations_section(c)),
        ("provenance", "Provenance", _provenance_section(c)),
    ]
    s = c.settings
    subtitle = (f"{_e(c.problem.parametrization or 'declared')} parametrization · data: {_e(c.problem.dataset.source)} · "
                f"{s.chains} chains × {s.tune} warm-up + {s.draws} draws · seed {s.seed}")
    return html_page(title, c.problem.name, c.problem.scenario, subtitle, sections)


def html_page(title: str, heading: str, scenario: str, subtitle: str, sections: list[tuple[str, str, str]]) -> str:
    """A self-contained page: a header with a table of contents, then one section per
    (anchor, heading, HTML) whose HTML is not empty. ``subtitle`` is HTML."""
    nav = " · ".join(f'<a href="#{key}">{_e(name)}</a>' for key, name, content in sections if content)
    body = "\n".join(f'<section id="{key}">\n<h2>{_e(name)}</h2>\n{content}\n</section>' for key, name, content in sections if content)
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
<h1>{_e(heading)} <span class="scenario">{_e(scenario)}</span></h1>
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


def _drawn(section, inputs: ReportInputs) -> str:
    """A section of figures of the draws. Draws of a run that went astray (values near
    1e18, infinities) can defeat a density estimate; the page then says so in the section
    instead of failing as a whole, since the tables still hold the evidence."""
    try:
        return section(inputs)
    except (OverflowError, ValueError, FloatingPointError, np.linalg.LinAlgError) as exc:
        import matplotlib.pyplot as plt

        plt.close("all")
        return (f'<p class="note">These figures could not be drawn from the draws ({_e(type(exc).__name__)}: '
                f"{_e(str(exc))}); the diagnostics below say why the draws are unusual.</p>")


def _recommendation_section(c: Comparison) -> str:
    """Which backend to use: the choice the comparison was run for, first on the page."""
    r = c.recommendation
    if r is None:
        return ""
    if not r.picks:
        return f"<p>{_e(r.lines()[0].removeprefix('RECOMMENDATION: '))}</p>"
    items = "".join(f"<li><strong>{_e(WAYS[p.way])}</strong>: {_e(pick_words(p, r.rates))}</li>" for p in r.picks)
    left_out = "".join(f"<li>{_e(column)}: {_e(why)}</li>" for column, why in r.excluded.items())
    return (f"<p>The most bulk ESS per second among the backends that converged and agreed "
            f"({_e(', '.join(x.column for x in r.rates))}):</p><ul>{items}</ul>"
            + (f"<p>Left out:</p><ul>{left_out}</ul>" if left_out else "")
            + f'<p class="note">{_e(r.noise_words())}.</p>')


def _verdict_section(c: Comparison) -> str:
    reasons = "".join(f"<li>{_e(r)}</li>" for r in c.reasons)
    return (f'<div class="verdict verdict-{_e(c.verdict)}"><p><strong>{_e(c.verdict.upper())}</strong>: '
            f"{_e(VERDICT_WORDS.get(c.verdict, ''))}.</p>{f'<ul>{reasons}</ul>' if reasons else ''}</div>"
            + _remedies_html(c) +
            f'<p class="note">{len(c.tests)} agreement tests at a family-wise false-alarm rate of {100 * c.family_alpha:g}% '
            f"(Holm); gaps under {c.floor} posterior sd are ignored.</p>")


def _remedies_html(c: Comparison) -> str:
    """The remedies ladder, rung by rung, where it climbed or its last rung is still flagged."""
    ladder = c.remedies
    if ladder is None or not (ladder.climbed or ladder.stopped):
        return ""
    chosen = ladder.chosen % len(ladder.rungs)
    rungs = "".join(f"<li>{'all backends ' if i else ''}{_e(r.rung)}: {_e(r.findings)} &rarr; {_e(r.verdict.upper())}"
                    f"{' (the rung shown: the fewest flags)' if i == chosen != len(ladder.rungs) - 1 else ''}</li>"
                    for i, r in enumerate(ladder.rungs))
    failed = (" No rung rescued the fit, so the verdict is inconclusive: the last rung's flags are a finding about "
              "the backend that failed it (see the reasons above), not evidence about the model's posterior." if
              ladder.unrescued else "")
    stopped = f"Stopped: {ladder.stopped}." if ladder.stopped else "The last rung is clean."
    return (f"<h3>Remedies</h3><ol>{rungs}</ol><p class=\"note\">{_e(stopped + failed)} The tables are the last "
            "rung's, or where none rescued the fit the rung's with the fewest flags; every rung's fits are kept in "
            "the results folder (<code>--remedies none</code> turns the "
            "ladder off).</p>")


def _decisions_section(inputs: ReportInputs) -> str:
    table = decisions_table(inputs.comparison)
    if table is None:
        if inputs.comparison.problem.model.decisions:
            return '<p class="note">No backend finished, so there are no decision probabilities.</p>'
        return ""
    notes = "".join(f'<p class="note">{_e(n)}</p>' for n in table.notes)
    return table.html() + notes + _decisions_figure(inputs, decision_groups(inputs.comparison), list(inputs.comparison.sources))


def _decisions_figure(inputs: ReportInputs, groups: dict[str, list[tuple[str, str]]], sources: list[str]) -> str:
    import matplotlib.pyplot as plt

    heights = [len(items) * (0.22 * len(sources) + 0.25) + 0.7 for items in groups.values()]
    fig, axes = plt.subplots(len(groups), 1, figsize=(10, sum(heights)), squeeze=False,
                             gridspec_kw={"height_ratios": heights})
    bar = 0.8 / len(sources)
    for ax, (group, items) in zip(axes[:, 0], groups.items()):
        positions = np.arange(len(items))
        for i, name in enumerate(sources):
            draws = [inputs.comparison.sources[name].get(key) for _, key in items]
            means = [q.summary.mean if q else np.nan for q in draws]
            errors = [2 * q.summary.mcse_mean if q else 0 for q in draws]
            y = positions - 0.4 + bar * (i + 0.5)
            ax.barh(y, means, height=bar * 0.9, color=color(name), label=name, xerr=errors,
                    error_kw={"ecolor": "#000", "elinewidth": 1, "capsize": 2})
            for yy, m, e in zip(y, means, errors):
                ax.text(m + e + 0.01, yy, f"{m:.3f}", va="center", fontsize=8, color="#333")
        ax.set_yticks(positions, [decision_label(inputs.comparison, group, label) for label, _ in items])
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
    spec = inputs.comparison.problem.model
    auxiliary = {p.name for p in spec.params if p.name.endswith("_z") and p.name[:-2] in {d.name for d in spec.deterministics}}
    posterior = next(iter(inputs.posteriors.values()), None)
    if posterior is None:
        return []
    names = [n for n in posterior.data_vars if n not in auxiliary]
    scalars = [n for n in names if posterior[n].ndim == 2]
    vectors = [[n] for n in names if posterior[n].ndim > 2]
    return ([scalars] if scalars else []) + vectors


def _forest_figure(inputs: ReportInputs, groups: list[list[str]]) -> str:
    """One forest panel per parameter group, two to a row, the sources overlaid: per element
    the median (dot), the 50% (thick) and 90% (thin) equal-tailed intervals of the chains
    combined. Drawn with matplotlib, not arviz-plots: its ``plot_forest`` builds a figure of
    its own (a label column beside each forest) per call, where this page puts every group,
    each with its own x scale, in one figure with one legend."""
    import matplotlib.pyplot as plt

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
        labels = [key for n in names for key in _chain_draws(first, n)[0]]
        offsets = np.linspace(-0.25, 0.25, len(sources)) if len(sources) > 1 else np.zeros(1)
        low, high = np.inf, -np.inf
        for j, source in enumerate(sources):
            draws = np.concatenate([_chain_draws(inputs.posteriors[source], n)[1] for n in names], axis=2)
            q05, q25, q50, q75, q95 = np.quantile(draws, [0.05, 0.25, 0.5, 0.75, 0.95], axis=(0, 1))
            low, high = min(low, q05.min()), max(high, q95.max())
            y = np.arange(len(labels)) + offsets[j]
            ax.hlines(y, q05, q95, color=color(source), lw=1)
            ax.hlines(y, q25, q75, color=color(source), lw=3)
            ax.plot(q50, y, "o", ms=4, mfc="white", mec=color(source), mew=1.2)
        for k in range(0, len(labels), 2):  # bands tell the elements apart
            ax.axhspan(k - 0.5, k + 0.5, color="#f0f0f0", zorder=0, lw=0)
        ax.set_yticks(np.arange(len(labels)), labels, fontsize=9)
        ax.set_ylim(len(labels) - 0.5, -0.5)
        ax.tick_params(axis="x", labelsize=9)
        if low > 0 and high / low > 100:  # e.g. the Beta-Binomial's a and b, with tails to infinity
            ax.set_xscale("log")
        ax.grid(axis="x", alpha=0.3)
        ax.spines[["top", "right", "left"]].set_visible(False)
        ax.tick_params(axis="y", length=0)
        ax.set_title(", ".join(names), fontsize=10, loc="left")
    handles = [plt.Line2D([], [], color=color(s), lw=2.5) for s in inputs.sources]
    fig.legend(handles, inputs.sources, loc="outside upper right", ncol=n_sources, frameon=False, fontsize=9)
    exact = " and the exact posterior" if "exact" in inputs.sources else ""
    return _figure(fig, "Forest plots of every parameter group",
                   f"Every parameter for each backend{exact}, chains combined: median (dot), quartiles (thick line) "
                   "and 5% to 95% (thin line).")


def _shrinkage_section(inputs: ReportInputs) -> str:
    """The model's own shrinkage panel, and its scenario contrast where it declares one."""
    problem = inputs.comparison.problem
    builtin = problem.builtin
    parts = []
    if builtin is not None and builtin.shrinkage is not None and inputs.posteriors:
        parts.append(_shrinkage_figure(builtin.shrinkage(problem, inputs.posteriors), problem))
    if builtin is not None and builtin.scenario_contrast:
        parts.append(_scenario_contrast_figure(inputs))
    return "\n".join(parts)


def _shrinkage_figure(panel: ShrinkagePanel, problem: Problem) -> str:
    import matplotlib.pyplot as plt

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
        ax.errorbar(x, mean, yerr=[mean - low, high - mean], fmt="o", color=color(name), ms=6, capsize=2,
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
                   f"Shrinkage in {problem.scenario}: each observed {panel.what} (hollow circle) and its posterior "
                   f"mean per backend; the arrows show the pull toward the {panel.grand_label.split(' (')[0]} (dashed).")


def _scenario_contrast_figure(inputs: ReportInputs) -> str:
    """The blog post's boxplot: the same model on two scenarios side by side (for the
    Beta-Binomial, ``four-variants`` and ``small-a``, where A has 10 trials instead of 100
    and its rate is pulled much further toward the grand rate)."""
    import matplotlib.pyplot as plt

    builtin = inputs.comparison.problem.builtin
    assert builtin is not None
    scenarios = builtin.scenario_contrast
    fig, axes = plt.subplots(1, len(scenarios), figsize=(10, 4), sharey=True)
    provenance = []
    for ax, scenario in zip(axes, scenarios):
        problem = builtin.problem(scenario, parametrization=inputs.comparison.problem.parametrization)
        rates, source = _scenario_draws(inputs, problem)
        provenance.append(f"{scenario}: {source}")
        trials = np.asarray(problem.dataset.values["trials"], float)
        successes = np.asarray(problem.dataset.values["successes"], float)
        labels = [f"{v}\n(n={int(n)})" for v, n in zip(problem.dataset.coords["variant"], trials)]
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


def _scenario_draws(inputs: ReportInputs, problem: Problem) -> tuple[np.ndarray, str]:
    """Posterior draws of the contrast variable for one scenario, and where they came from:
    this comparison, else a finished fit of that scenario in the same folder, else the exact
    posterior. Among fits, converged ones first: unconverged draws would misstate shrinkage."""
    from polyppl.execution.record import FitRecord

    c = inputs.comparison
    builtin = c.problem.builtin
    variable = builtin.contrast_variable
    if c.problem.scenario == problem.scenario and c.problem.dataset.source == problem.dataset.source:
        if "exact" in inputs.posteriors:
            return stack_draws(inputs.posteriors["exact"][variable]), "this comparison's exact posterior"
        for label in _converged_first({b: o.record for b, o in c.outcomes.items() if b in inputs.posteriors}):
            return stack_draws(inputs.posteriors[label][variable]), f"this comparison's {label} draws"
    if inputs.out_dir is not None:
        records = {}
        for path in sorted(inputs.out_dir.glob(f"{problem.name}-{problem.scenario}-*-nuts.json")):
            record = FitRecord.load(path)
            netcdf = path.with_name(path.name[: -len(".json")] + ".nc")
            if record.ok and netcdf.exists() and record.scenario == problem.scenario:
                records[str(netcdf)] = record
        for netcdf in _converged_first(records):
            return stack_draws(load_netcdf(Path(netcdf)).posterior[variable]), f"the finished fit {Path(netcdf).name}"
    draws = builtin.exact_draws(problem.dataset, EXACT_SHRINKAGE_DRAWS, c.settings.seed)[variable]
    return draws, (f"{EXACT_SHRINKAGE_DRAWS} draws of the exact posterior (grid quadrature), as the results "
                   "folder holds no fit of it")


def _converged_first(records: dict[str, Any]) -> list[str]:
    """Keys of finished fits' records, those whose R-hat and ESS passed first."""
    return sorted(records, key=lambda k: bool(convergence_failures(records[k].diagnostics.flags)))


def _diagnostics_section(c: Comparison) -> str:
    flags = sorted({f for r in c.records.values() if r.ok for f in r.diagnostics.flags})
    meanings = ""
    if flags:
        items = "".join(f"<dt>{_e(f)}</dt><dd>{_e(FLAG_MEANINGS.get(f, ''))}</dd>" for f in flags)
        meanings = f"<h3>What the flags mean</h3><dl class=\"flags\">{items}</dl>"
    return ('<p class="note">Recomputed from the draws with ArviZ, the same way for every backend.</p>'
            + diagnostics_table(c).html() + meanings)


def _trace_section(inputs: ReportInputs) -> str:
    names = [p.name for p in inputs.comparison.problem.model.params]
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


# The trace and rank figures are drawn with matplotlib, like every other figure of the page,
# not with arviz-plots: its plot_trace_dist warns on the constant entries of a Cholesky factor
# (no density to draw), and its plot_rank draws rank ECDFs with a uniformity test that fails
# such a constant, not the rank histograms read here. A few lines of matplotlib draw exactly
# what the captions say.

#: Line styles of the chains (a colour tells a variable's elements apart, as ArviZ does).
CHAIN_STYLES = ("-", "--", ":", "-.")


def _trace_figure(backend: str, idata: xr.DataTree, names: list[str], divergences: int) -> str:
    """Per variable, a row: each chain's density (left) and draws in sampling order (right),
    the elements of a vector overlaid; divergent transitions as ticks at the bottom."""
    import matplotlib.pyplot as plt
    from arviz_stats.base import array_stats

    posterior = idata.posterior.to_dataset()
    diverging = idata.sample_stats["diverging"].transpose("chain", "draw").values.astype(bool)
    fig, axes = plt.subplots(len(names), 2, figsize=(10, 1.2 * len(names) + 0.3), squeeze=False, layout="constrained")
    for (left, right), name in zip(axes, names):
        labels, draws = _chain_draws(posterior, name)
        for k in range(draws.shape[2]):
            shade = f"C{k % 10}"
            for c in range(draws.shape[0]):
                style = CHAIN_STYLES[c % len(CHAIN_STYLES)]
                one = draws[c, :, k]
                if np.ptp(one) > 0:  # a constant (a Cholesky factor's fixed 1 and 0) has no density
                    grid, pdf, _ = array_stats.kde(one)
                    left.plot(grid, pdf, color=shade, ls=style, lw=1)
                right.plot(one, color=shade, ls=style, lw=0.6)
            if divergences:
                _bottom_ticks(left, draws[..., k][diverging])
        if divergences:
            _bottom_ticks(right, np.nonzero(diverging)[1])
        left.set_yticks([])
        left.set_ylim(bottom=0)
        left.set_title(name, fontsize=9, loc="left")
        for ax in (left, right):
            ax.tick_params(labelsize=7.5)
            ax.spines[["top", "right"]].set_visible(False)
    axes[-1, 1].set_xlabel("draw", fontsize=8)
    marked = (f"{divergences} divergent transition{'s' if divergences != 1 else ''}, marked as ticks at the bottom of each panel"
              if divergences else "no divergent transitions")
    return _figure(fig, f"Trace plots, {backend}",
                   f"{backend}: density per chain (left) and draws in sampling order (right); one line style per chain, "
                   f"one colour per element of a vector; {marked}.")


def _bottom_ticks(ax, x: np.ndarray) -> None:
    """Black ticks at ``x`` on the bottom edge of ``ax`` (divergent transitions)."""
    ax.plot(x, np.zeros(len(x)), "|", color="k", ms=8, transform=ax.get_xaxis_transform(), clip_on=False)


def _rank_figure(backend: str, idata: xr.DataTree, names: list[str]) -> str:
    """One panel per element: each chain's histogram of its draws' ranks among all chains,
    one chain above the other, against the height a uniform histogram has (dashed)."""
    import matplotlib.pyplot as plt
    from scipy.stats import rankdata

    posterior = idata.posterior.to_dataset()
    panels = [(label, draws[..., k]) for name in names for labels, draws in [_chain_draws(posterior, name)]
              for k, label in enumerate(labels) if np.ptp(draws[..., k]) > 0]  # a constant has no ranks to compare
    if not panels:
        return ""
    columns = min(4, len(panels))
    rows = -(-len(panels) // columns)
    fig, axes = plt.subplots(rows, columns, figsize=(10, 1.7 * rows), squeeze=False, layout="constrained")
    for ax in axes.ravel()[len(panels):]:
        ax.remove()
    for ax, (label, draws) in zip(axes.ravel(), panels):
        chains, n = draws.shape
        bins = int(np.ceil(2 * np.log2(draws.size))) + 1  # ArviZ's rule of thumb: about 20 bins for 600 draws
        ranks = rankdata(draws, axis=None).reshape(draws.shape)
        counts = np.stack([np.histogram(r, bins=bins, range=(0.5, draws.size + 0.5))[0] for r in ranks])
        heights = counts / (n / bins)  # 1 where a chain's ranks are uniform
        gap = 1.1 * max(heights.max(), 1.5)
        edges = np.linspace(0.5, draws.size + 0.5, bins + 1)
        for c in range(chains):
            # One filled step outline per chain, not a rectangle per bin: the same picture at
            # half the figure's drawing time (a 4-chain model of 20 parameters has 2,000 bins).
            ax.stairs(heights[c] + c * gap, edges, baseline=c * gap, fill=True, color=f"C{c % 10}")
            ax.axhline(c * gap + 1, color="k", ls="--", lw=0.7)
        ax.set_yticks(gap * np.arange(chains) + 0.5, [str(c) for c in range(chains)])  # beside each chain's bars
        ax.set_title(label, fontsize=9)
        ax.set_xlabel("rank (all chains)", fontsize=8)
        ax.set_ylabel("chain", fontsize=8)
        ax.tick_params(labelsize=7.5)
        ax.spines[["top", "right"]].set_visible(False)
    return _figure(fig, f"Rank plots, {backend}",
                   f"{backend}: histograms of each chain's draws ranked among all chains; flat, at the dashed line, "
                   "when the chains agree.")


def _speed_section(inputs: ReportInputs) -> str:
    c = inputs.comparison
    note = ('<p class="note">ESS/s divides the smallest bulk ESS by the sampling time only; compile and warm-up '
            "are shown apart. A reused compiled model shows a compile time near zero.</p>")
    finished = {label: r for label, r in c.records.items() if r.ok}
    return note + speed_table(c).html() + (_speed_figure(finished) if finished else "")


def _speed_figure(records: dict[str, Any]) -> str:
    import matplotlib.pyplot as plt

    backends = list(records)
    phases = [("compile_seconds", "compile", "#bdbdbd"), ("warmup_seconds", "warm-up", "#fdb863"),
              ("sampling_seconds", "sampling", "#5e3c99")]
    fig, (left, right) = plt.subplots(1, 2, figsize=(10, 0.6 + 0.55 * len(backends)), width_ratios=[3, 2])
    positions = np.arange(len(backends))
    start = np.zeros(len(backends))
    for key, label, shade in phases:
        seconds = np.array([getattr(records[b].timings, key) for b in backends])
        left.barh(positions, seconds, left=start, color=shade, label=label, height=0.6)
        start += seconds
    for y, total in zip(positions, start):
        left.text(total, y, f" {total:.1f} s", va="center", fontsize=9)
    left.set_xlim(0, start.max() * 1.15)
    left.set_yticks(positions, backends)
    left.invert_yaxis()
    left.set_xlabel("seconds")
    left.set_title("time per phase", fontsize=10, loc="left")
    left.legend(ncol=3, fontsize=8.5, loc="lower right", bbox_to_anchor=(1, 1), frameon=False)
    ess_per_second = [records[b].diagnostics.ess_bulk_per_second or 0.0 for b in backends]
    right.barh(positions, ess_per_second, color=[color(b) for b in backends], height=0.6)
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
    parts = [f'<p class="note">{len(c.tests)} tests, worst first: disagreements, then by |z|. '
             "z is the gap over its Monte Carlo standard error (for ks, the normal quantile of its p-value); "
             "a disagreement needs a Holm-adjusted p below the family-wise rate and a gap above the floor.</p>",
             agreement_table(c, AGREEMENT_ROWS_SHOWN, with_floor=True).html()]
    if len(c.tests) > AGREEMENT_ROWS_SHOWN:
        parts.append(f"<details><summary>all {len(c.tests)} tests</summary>"
                     + agreement_table(c, None, with_floor=True).html() + "</details>")
    return "\n".join(parts)


def _approximations_section(c: Comparison) -> str:
    """Each approximation's marginals against NUTS, its scorecard, and its verdict in words."""
    table = scorecard_table(c)
    if table is None:
        return ""
    parts = [f'<p class="note">Each approximation is scored against {_e(c.reference_column or "no NUTS run")}, the '
             "best-converged NUTS column: mean shift and 1-Wasserstein distance in NUTS posterior sds, the sd ratio "
             "(below 1: intervals too narrow), z (the shift over its Monte Carlo error) and Pareto k of importance "
             "sampling from the approximation. Seconds exclude compiling.</p>", table.html()]
    notes = "".join(f"<li>{_e(n.strip())}</li>" for n in table.notes)
    parts.append(f'<ul class="note">{notes}</ul>')
    verdicts = "".join(f"<li><strong>{_e(cell)}: {_e(verdict)}</strong>. {_e('; '.join(why))}.</li>"
                       for cell, verdict, why in ((cell, card.verdict, card.reasons) for cell, card in c.scorecards.items()))
    if verdicts:
        parts.append(f"<h3>Verdicts in words</h3><ul>{verdicts}</ul>")
    if c.scorecards and c.reference_column:
        parts.append(_marginals_figure(c))
    return "\n".join(parts)


def _marginals_figure(c: Comparison) -> str:
    """One panel per column: every quantity's 5%-95% interval and mean for NUTS (grey band)
    and for each approximation, on NUTS's standardised scale ((x - mean) / sd)."""
    import matplotlib.pyplot as plt

    reference = c.sources[c.reference_column]
    columns = list(dict.fromkeys(cell.rpartition("/")[0] for cell in c.scorecards))
    names = [q.quantity for q in next(iter(c.scorecards.values())).quantities]
    methods = [m for m in c.methods if m != "nuts"]
    fig, axes = plt.subplots(1, len(columns), figsize=(3.4 * len(columns) + 1.5, 0.32 * len(names) + 1.3),
                             sharey=True, squeeze=False)
    positions = np.arange(len(names))
    step = 0.6 / max(len(methods), 1)
    for ax, column in zip(axes[0], columns):
        for y, name in zip(positions, names):
            n = reference[name].summary
            ax.fill_betweenx([y - 0.4, y + 0.4], (n.q05 - n.mean) / n.sd, (n.q95 - n.mean) / n.sd, color="#d9d9d9", lw=0)
        ax.axvline(0, color="#555", lw=0.8)
        for i, method in enumerate(methods):
            source = c.approximation_sources.get(f"{column}/{method}")
            if source is None:
                continue
            offsets = positions - 0.3 + step * (i + 0.5)
            for y, name in zip(offsets, names):
                n, q = reference[name].summary, source[name].summary
                ax.plot([(q.q05 - n.mean) / n.sd, (q.q95 - n.mean) / n.sd], [y, y], color=method_color(method), lw=2)
                ax.plot((q.mean - n.mean) / n.sd, y, "o", color=method_color(method), ms=3.5)
        ax.set_title(column, fontsize=10, loc="left")
        ax.set_xlabel("(x - NUTS mean) / NUTS sd", fontsize=9)
        ax.grid(axis="x", alpha=0.3)
        ax.spines[["top", "right"]].set_visible(False)
    axes[0, 0].set_yticks(positions, names, fontsize=8.5)
    axes[0, 0].invert_yaxis()
    handles = [plt.Rectangle((0, 0), 1, 1, color="#d9d9d9")] + [plt.Line2D([], [], color=method_color(m), lw=2)
                                                               for m in methods]
    fig.legend(handles, [f"NUTS ({c.reference_column})", *methods], loc="upper right", ncol=len(methods) + 1,
               frameon=False, fontsize=9)
    fig.tight_layout(rect=(0, 0, 1, 0.95))
    return _figure(fig, "Approximations' marginals against NUTS",
                   "Each quantity's 90% interval (5% to 95%) and mean, standardised by the NUTS reference's mean "
                   "and sd: the grey band is NUTS's own interval; a line shifted off it is a biased mean, a shorter "
                   "one an under-dispersed approximation.")


def _provenance_section(c: Comparison) -> str:
    return (f'<p class="note">Model {_e(c.problem.name)}, scenario {_e(c.problem.scenario)}, parametrization '
            f"{_e(c.problem.parametrization or 'as declared')}, data: {_e(c.problem.dataset.source)}; "
            f"reference: {_e(c.reference or 'none')}.</p>"
            f'<div style="display:flex; gap:40px; flex-wrap:wrap"><div><h3>Sampler settings</h3>{settings_table(c).html()}'
            f"</div><div><h3>Engines and package versions</h3>{versions_table(c).html()}</div></div>")


# --------------------------------------------------------------------------- helpers


def _chain_draws(posterior: xr.Dataset, name: str) -> tuple[list[str], np.ndarray]:
    """A variable's element labels (``a_z[Canada]``) and its draws as (chain, draw, element)."""
    values = posterior[name]
    array = values.transpose("chain", "draw", ...).values
    return element_keys(values), array.reshape(array.shape[:2] + (-1,))


def _figure(fig: Figure, alt: str, caption: str) -> str:
    """The figure as an embedded PNG with its caption; closes the figure."""
    import matplotlib.pyplot as plt

    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=DPI, bbox_inches="tight", facecolor="white")
    plt.close(fig)
    data = base64.b64encode(buffer.getvalue()).decode("ascii")
    return (f'<figure><img src="data:image/png;base64,{data}" alt="{_e(alt)}">'
            f"<figcaption>{_e(caption)}</figcaption></figure>")


def _e(text: str) -> str:
    return html.escape(str(text), quote=True)
