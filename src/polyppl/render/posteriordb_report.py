"""A posteriordb run as text (``polyppl posteriordb`` prints it) and as a self-contained HTML
page: rows posteriors, columns backends, each cell coloured by the backend's standing
against the reference draws (or the other backends where posteriordb has none) with its
speed; then the reasons, the speed per posterior and how the run was made."""

from __future__ import annotations

import html
from pathlib import Path

from polyppl.inference.idata import atomic_write
from polyppl.render.colors import color
from polyppl.render.figures import prepare_matplotlib
from polyppl.render.report import _e, _figure, html_page
from polyppl.render.tables import Table
from polyppl.render.text import fmt
from polyppl.studies.posteriordb import REFERENCE, BackendResult, PosteriorResult, StudyRun, gap_in_sd

#: A cell's class (colour) by the backend's standing.
CELL_CLASS = {"agree": "agree", "disagree": "disagree", "inconclusive": "inconclusive"}
STATUS_CLASS = {"pass": "agree", "fail": "disagree", "inconclusive": "inconclusive", "error": "failed",
                "unsupported": "unsupported"}
STATUS_WORDS = {
    "pass": "every backend agrees with the reference draws and with the others",
    "fail": "a backend disagrees with the reference or with another backend beyond Monte Carlo error",
    "inconclusive": "a backend did not converge, so its draws are no evidence either way",
    "error": "a fit failed (error, crash or timeout) or lacks a reference quantity",
    "unsupported": "the program is outside what polyppl can lower to its spec; nothing was run",
}


def standing(result: PosteriorResult, label: str) -> str:
    """A backend's standing on a posterior in one word: its verdict against the reference,
    or (without reference draws) against the others, or its fit's status."""
    b = result.backends.get(label)
    if b is None:
        return result.status if result.status in ("unsupported", "error") else "-"
    if not b.record.ok:
        return b.record.status
    if b.vs_reference is not None:
        return b.vs_reference
    if not b.converged:
        return "inconclusive"
    return "disagree" if any(not t.agree and label in t.backends for t in result.tests) else "agree"


def _cell_text(b: BackendResult | None, word: str) -> str:
    if b is None or not b.record.ok:
        return word
    ess = b.speed()["ess_per_s"]
    return f"{word} {fmt(ess, 0) if ess is not None else '-'}/s"


def summary_table(run: StudyRun) -> Table:
    """Posterior by backend: the standing and the ESS per second; the status and reason."""
    labels = run.plan.labels
    rows, bad = [], []
    for i, result in enumerate(run.results):
        cells = [_cell_text(result.backends.get(label), standing(result, label)) for label in labels]
        rows.append([result.name, "yes" if result.plan.posterior.has_reference else "no", *cells,
                     result.fastest or "-", result.status, result.reason])
        if result.status in ("fail", "error"):
            bad.append(i)
    counts = ", ".join(f"{n} {s}" for s, n in run.counts().items() if n)
    return Table.of("posteriordb: each backend against the reference draws (ESS/s: smallest bulk ESS per second "
                    "of sampling)", ["posterior", "reference", *labels, "fastest", "status", "reason"], rows, bad,
                    text_columns=[len(labels) + 4], notes=[f"{len(run.results)} posteriors: {counts}", speed_note(run)])


def speed_note(run: StudyRun) -> str:
    """Each backend's ESS/s relative to the fastest, geometric mean over the posteriors compared."""
    ratios, compared = run.speed_ratios()
    if not ratios:
        return "speed: no posterior where every backend converged"
    parts = ", ".join(f"{label} {ratio:.2f}" for label, ratio in sorted(ratios.items(), key=lambda item: -item[1]))
    return (f"ESS/s relative to the fastest backend, geometric mean over {compared} posterior"
            f"{'s' if compared != 1 else ''} where all converged: {parts}")


def speed_table(run: StudyRun) -> Table:
    """Per finished fit: ESS/s, µs per gradient, gradients per draw, compile and warm-up seconds."""
    rows = []
    for result in run.results:
        for label, b in result.backends.items():
            if not b.record.ok:
                continue
            s = b.speed()
            rows.append([result.name, label, b.record.engine, s["ess_per_s"], s["us_per_gradient"],
                         s["gradients_per_draw"], s["compile_seconds"], s["warmup_seconds"], s["sampling_seconds"],
                         b.record.diagnostics.divergences])
    return Table.of("Speed of each finished fit", ["posterior", "backend", "engine", "ESS/s", "µs/gradient",
                                                   "gradients/draw", "compile s", "warm-up s", "sampling s",
                                                   "divergences"], rows)


def worst_table(run: StudyRun) -> Table:
    """Each backend's test furthest off (against the reference where there is one)."""
    rows, bad = [], []
    for result in run.results:
        for label, b in result.backends.items():
            t = b.worst
            if t is None:
                continue
            if not t.agree:
                bad.append(len(rows))
            rows.append([result.name, label, t.backends[1], t.quantity, t.statistic, gap_in_sd(t), t.z, t.p_value,
                         "agree" if t.agree else "DISAGREE"])
    return Table.of("The worst quantity of each backend (gap in posterior sds; p before Holm's adjustment)",
                    ["posterior", "backend", "against", "quantity", "statistic", "gap (sd)", "z", "p", "verdict"],
                    rows, bad)


def fastest_table(run: StudyRun) -> Table:
    """Which backend for which model: per posterior where every backend converged and none
    disagreed, the fastest by ESS/s and each backend's ESS/s over the fastest's; the last row
    their geometric mean over those posteriors."""
    labels = run.plan.labels
    per_posterior = run.speed_by_posterior()
    rows = [[name, row["fastest"], *(row["over_fastest"].get(label) for label in labels)]
            for name, row in per_posterior.items()]
    ratios, compared = run.speed_ratios()
    if compared:
        wins = {label: sum(1 for row in per_posterior.values() if row["fastest"] == label) for label in labels}
        rows.append([f"geometric mean over {compared}", ", ".join(f"{label} {n}" for label, n in wins.items() if n),
                     *(ratios.get(label) for label in labels)])
    return Table.of("The fastest backend per posterior: each backend's ESS/s over the fastest's (1 = fastest)",
                    ["posterior", "fastest", *labels], rows,
                    notes=["Only posteriors where every backend converged and agreed: a speed that buys wrong draws "
                           "is not a speed. ESS/s: smallest bulk ESS over the seconds of sampling (warm-up excluded)."])


def posteriordb_text(run: StudyRun) -> str:
    return "\n\n".join(t.text() for t in (summary_table(run), fastest_table(run), speed_table(run)))


def speed_figure(run: StudyRun):
    """Each backend's ESS/s over the fastest backend's, posterior by posterior (log scale),
    with the geometric mean as a vertical line per backend; None without a posterior to show."""
    prepare_matplotlib()
    import matplotlib.pyplot as plt
    import numpy as np

    per_posterior = run.speed_by_posterior()
    if not per_posterior:
        return None
    names, labels = list(per_posterior), run.plan.labels
    ratios, compared = run.speed_ratios()
    fig, ax = plt.subplots(figsize=(9, 1.6 + 0.35 * len(names)))
    for offset, label in zip(np.linspace(-0.15, 0.15, len(labels)), labels):
        values = [per_posterior[n]["over_fastest"].get(label, np.nan) for n in names]
        ax.scatter(values, np.arange(len(names)) + offset, color=color(label), label=label, s=36, zorder=3)
        if label in ratios:
            ax.axvline(ratios[label], color=color(label), lw=1, ls="--", alpha=0.7)
    _style_dot_plot(ax, names, "ESS/s over the fastest backend's (log scale; 1 = fastest; dashed: geometric mean)",
                    len(labels))
    fig.tight_layout()
    return fig


def _style_dot_plot(ax, names: list[str], xlabel: str, columns: int) -> None:
    """A log-scale dot plot's axes: one row per posterior, top to bottom, the legend above."""
    import numpy as np

    ax.set_xscale("log")
    ax.set_yticks(np.arange(len(names)), names, fontsize=8.5)
    ax.set_ylim(len(names) - 0.5, -0.5)
    ax.set_xlabel(xlabel)
    ax.legend(fontsize=8.5, frameon=False, loc="lower right", bbox_to_anchor=(1, 1), ncol=columns)
    ax.spines[["top", "right"]].set_visible(False)
    ax.grid(alpha=0.3)


def write_speed_png(run: StudyRun, path: str | Path | None = None) -> Path | None:
    """The speed figure as a PNG (default ``OUT/posteriordb-speed.png``); None without data."""
    import matplotlib.pyplot as plt

    fig = speed_figure(run)
    if fig is None:
        return None
    path = Path(path) if path is not None else run.ledger.with_name("posteriordb-speed.png")
    atomic_write(path, lambda tmp: fig.savefig(tmp, format="png", dpi=150, bbox_inches="tight", facecolor="white"))
    plt.close(fig)
    return path


# --------------------------------------------------------------------------- the page


def default_report_path(run: StudyRun) -> Path:
    return run.ledger.with_name("posteriordb-report.html")


def write_posteriordb_report(run: StudyRun, path: str | Path | None = None) -> Path:
    """The HTML page (default ``OUT/posteriordb-report.html``), written atomically."""
    path = Path(path) if path is not None else default_report_path(run)
    page = _page(run)
    atomic_write(path, lambda tmp: tmp.write_text(page, encoding="utf-8"))
    return path


def _grid_html(run: StudyRun) -> str:
    labels = run.plan.labels
    head = "".join(f"<th>{_e(h)}</th>" for h in ("posterior", "reference", *labels, "fastest", "status"))
    body = []
    for result in run.results:
        cells = []
        for label in labels:
            b = result.backends.get(label)
            word = standing(result, label)
            css = CELL_CLASS.get(word, "unsupported" if word in ("unsupported", "-") else "failed")
            lines = [f"<strong>{_e(word)}</strong>"]
            if b is not None and b.record.ok:
                s = b.speed()
                lines.append(f"{fmt(s['ess_per_s'], 0) if s['ess_per_s'] is not None else '-'} ESS/s · "
                             f"{fmt(s['us_per_gradient'], 1) if s['us_per_gradient'] is not None else '-'} µs/grad")
                if b.worst is not None:
                    lines.append(f"worst: {_e(b.worst.quantity)} {_e(b.worst.statistic)} "
                                 f"{gap_in_sd(b.worst):+.2f} sd")
            elif b is not None:
                lines.append(_e((b.record.error or "").splitlines()[0][:80] if b.record.error else ""))
            title = html.escape(result.reason, quote=True)
            cells.append(f'<td class="cell {css}" title="{title}">{"<br>".join(lines)}</td>')
        status_css = STATUS_CLASS[result.status]
        body.append(f"<tr><td>{_e(result.name)}</td><td>{'yes' if result.plan.posterior.has_reference else 'no'}</td>"
                    + "".join(cells) + f"<td>{_e(result.fastest or '-')}</td>"
                    + f'<td class="cell {status_css}"><strong>{_e(result.status)}</strong></td></tr>')
    return (f'<div class="table-scroll"><table class="grid"><thead><tr>{head}</tr></thead><tbody>{"".join(body)}'
            "</tbody></table></div>")


GRID_CSS = """
<style>
table.grid td.cell, table.grid th { text-align: left; white-space: nowrap; font-size: 12.5px; }
td.agree { background: #e8f5e9; } td.disagree { background: #fdecea; }
td.inconclusive { background: #fff6e0; } td.failed { background: #e0e0e0; } td.unsupported { background: #f4f6f8; color: #5b6470; }
</style>
"""


def _speed_figure(run: StudyRun) -> str:
    """ESS per second of every finished, converged fit, posterior by posterior (log scale):
    which backend is fastest on which model."""
    import matplotlib.pyplot as plt
    import numpy as np

    rows = [r for r in run.results if any(b.converged for b in r.backends.values())]
    if not rows:
        return ""
    labels = run.plan.labels
    fig, ax = plt.subplots(figsize=(9, 1.2 + 0.35 * len(rows)))
    for label in labels:
        values = [r.backends[label].speed()["ess_per_s"] if label in r.backends and r.backends[label].converged
                  else np.nan for r in rows]
        ax.scatter(values, np.arange(len(rows)), color=color(label), label=label, s=36, zorder=3)
    _style_dot_plot(ax, [r.name for r in rows], "smallest bulk ESS per second of sampling (log scale; converged fits "
                    "only)", len(labels))
    fig.tight_layout()
    return _figure(fig, "ESS per second by posterior and backend", speed_note(run))


def _titled(table: Table) -> str:
    return f"<h3>{_e(table.title)}</h3>" + table.html() + "".join(f'<p class="note">{_e(n)}</p>' for n in table.notes)


def _ratio_figure(run: StudyRun) -> str:
    fig = speed_figure(run)
    if fig is None:
        return ""
    return _figure(fig, "ESS per second over the fastest backend's, by posterior", speed_note(run))


def _page(run: StudyRun) -> str:
    counts = run.counts()
    s = run.plan.settings
    reasons = "".join(f"<li><strong>{_e(r.name)}</strong> ({_e(r.status)}): {_e(r.reason)}</li>"
                      for r in run.results if r.status != "pass")
    summary = ("<p>" + " · ".join(f"<strong>{n}</strong> {_e(status)}" for status, n in counts.items()) + "</p>"
               + "<ul>" + "".join(f"<li><strong>{_e(k)}</strong>: {_e(v)}</li>" for k, v in STATUS_WORDS.items())
               + "</ul>")
    method = (f'<p class="note">Every backend against posteriordb\'s reference draws ("{REFERENCE}") and against each '
              f"other: z tests of the mean, sd, 5% and 95% quantiles of every quantity, each gap over the root sum of "
              f"squares of both Monte Carlo standard errors (the reference's own included), referred to Student's t; "
              f"Holm over all of a posterior's tests for a false-alarm rate of at most {run.plan.family_alpha:.0%} per "
              f"posterior; gaps below {run.plan.floor} posterior sd are never disagreements. A cell: the backend's "
              f"verdict, its smallest bulk ESS per second of sampling, its µs per gradient and its worst quantity "
              f"(gap in posterior sds).</p>")
    sections = [
        ("summary", "Summary", summary + f"<p>{_e(speed_note(run))}</p>" + (f"<ul>{reasons}</ul>" if reasons else "")),
        ("grid", "Posteriors by backend", GRID_CSS + _grid_html(run) + method),
        ("worst", "Worst quantities", worst_table(run).html()),
        ("speed", "Speed", _ratio_figure(run) + _titled(fastest_table(run)) + _speed_figure(run) + speed_table(run).html()),
        ("provenance", "How this was run",
         f"<p>posteriordb snapshot: {_e(run.plan.root)} (posteriordb, https://github.com/stan-dev/posteriordb, BSD "
         f"3-Clause licence). Grid: {_e(run.grid['where'])}; {run.grid['fits_run']} fits run, "
         f"{run.grid['fits_reused']} reused from the ledger {_e(run.ledger)}.</p>"),
    ]
    subtitle = (f"{len(run.results)} posteriors × {_e(', '.join(run.plan.labels))} · {s.chains} chains × {s.tune} "
                f"warm-up + {s.draws} draws · seed {s.seed}")
    return html_page("polyppl posteriordb", "posteriordb", "reference posteriors", subtitle, sections)


__all__ = ["fastest_table", "posteriordb_text", "speed_figure", "speed_table", "summary_table", "worst_table",
           "write_posteriordb_report", "write_speed_png"]
