"""An SBC run as text (``polyppl sbc`` prints it) and as a self-contained HTML page.

The page leads with the verdict per backend and the fits behind it (failed, divergent,
unconverged), then shows the rank-ECDF differences against their simultaneous bands, the
rank histograms, the test per quantity, the time it took, and how to run the same grid
again (here or on a Dask cluster). Figures are embedded PNGs and the CSS is the comparison
report's, so the file opens anywhere, offline.
"""

from __future__ import annotations

import base64
import io
from dataclasses import dataclass
from pathlib import Path

from polyppl.inference.diagnostics import FLAG_MEANINGS
from polyppl.inference.idata import atomic_write
from polyppl.render.figures import prepare_matplotlib
from polyppl.render.report import DPI, _e, html_page
from polyppl.render.sbc_plots import ecdf_difference_figure, rank_histogram_figure
from polyppl.render.tables import Table, grid_incidents
from polyppl.studies import sbc_stats
from polyppl.studies.sbc import LOG_LIKELIHOOD, L_SHARE, SbcRun

VERDICT_CLASS = {"calibrated": "agree", "miscalibrated": "disagree", "no verdict": "inconclusive"}
VERDICT_WORDS = {
    "calibrated": "every backend's ranks are consistent with uniform: no sign of miscalibration",
    "miscalibrated": "some quantity's ranks are not uniform on some backend: its posterior is biased, too narrow or too wide",
    "no verdict": "some backend has no finished fits to rank",
}


# --------------------------------------------------------------------------- tables


def backends_table(run: SbcRun) -> Table:
    """One row per backend: its verdict, what became of its fits, and its miscalibrated quantities."""
    rows, bad = [], []
    for i, column in enumerate(run.columns.values()):
        counts = column.counts
        flagged = [q for q, r in column.results.items() if r.verdict == "miscalibrated"]
        failed = counts["error"] + counts["timeout"] + counts["crashed"]
        rows.append([column.label, column.engine, column.verdict, f"{counts['ok']}/{counts['requested']}", failed,
                     counts["divergent"], counts["unconverged"], counts["ess_below_L"], _remedied(column),
                     ", ".join(flagged) or "-"])
        if column.verdict != "calibrated":
            bad.append(i)
    notes = [f"Ranks among L = {run.L} draws thinned evenly from each chain; ess < L: fits whose smallest bulk ESS fell "
             f"short of L (their ranks may pile up at the ends)." if run.L else "No fit finished: no ranks."]
    notes.append(f"remedied: fits flagged at the settings asked that climbed the remedies ladder ({', '.join(run.remedies)}) "
                 "and gave the ranks of the rung it chose (docs/sbc.md); divergent and unconverged count the fits whose "
                 "ranks were used." if run.remedies else "remedies off (--remedies none): every fit at the settings asked.")
    return Table.of("SBC verdict per backend",
                    ["backend", "engine", "verdict", "fits with draws", "failed", "divergent", "unconverged", "ess < L",
                     "remedied", "miscalibrated quantities"], rows, bad, text_columns=(8, 9), notes=notes)


def _remedied(column) -> str:
    """``3 (2 at target 0.95, 1 at target 0.99)``, or ``0``."""
    total = column.counts.get("remedied", 0)
    if not total:
        return "0"
    return f"{total} ({', '.join(f'{n} {rung}' for rung, n in column.remedied.items())})"


def quantities_table(run: SbcRun) -> Table:
    """One row per quantity: each backend's band-test p-value, Holm-adjusted, and verdict."""
    labels = list(run.columns)
    quantities = list(dict.fromkeys(q for c in run.columns.values() for q in c.results))
    rows, bad = [], []
    for i, quantity in enumerate(quantities):
        row = [quantity]
        for label in labels:
            result = run.columns[label].results.get(quantity)
            row.append("-" if result is None else
                       f"{result.adjusted_p_value:.3g}{' MISCALIBRATED' if result.verdict == 'miscalibrated' else ''}")
            if result is not None and result.verdict == "miscalibrated":
                bad.append(i)
        rows.append(row)
    return Table.of("Holm-adjusted p-value of the band test per quantity", ["quantity", *labels], rows, sorted(set(bad)))


def timing_table(run: SbcRun) -> Table:
    """Per backend: fits per worker-minute, the sampler's own seconds per fit, and what the
    grid adds around it."""
    rows = []
    for column in run.columns.values():
        t = column.timing
        rows.append([column.label, t.get("fits", 0), t.get("fits_per_worker_minute"), t.get("sampler_seconds_per_fit"),
                     t.get("task_seconds_per_fit"), t.get("compile_seconds_total"), t.get("overhead_seconds_per_fit"),
                     None if t.get("overhead_share") is None else f"{100 * t['overhead_share']:.1f}%"])
    g = run.grid
    notes = [f"Grid: {g['where']}; {g['fits_run']} fits run now, {g['fits_reused']} read from the ledger, in "
             f"{g['wall_seconds']:.0f} s" + (f" ({g['fits_per_minute']:.1f} fits per minute)" if g.get("fits_per_minute") else "")
             + (f"; everything beyond sampling was {100 * g['overhead_share']:.0f}% of the sampling time: "
                f"compiles {100 * g['compile_share']:.0f}%, per-fit overhead {100 * g['per_fit_overhead_share']:.0f}%, "
                f"the rest (start-up, imports, scheduling, idle workers) "
                f"{100 * (g['overhead_share'] - g['compile_share'] - g['per_fit_overhead_share']):.0f}%."
                if g.get("overhead_share") is not None else ".") + grid_incidents(g),
             "overhead per fit: the task's time beyond the sampler's own time and the compiles (simulating the data, "
             "handing it over, the call around the sampler, diagnostics and ranks)."]
    return Table.of("Time per backend", ["backend", "fits", "fits per worker-minute", "sampler s per fit",
                                         "task s per fit", "compile s (all)", "overhead s per fit", "overhead"],
                    rows, notes=notes)


def failures_table(run: SbcRun) -> Table | None:
    rows = [[label, f["simulation"], f["status"], (f.get("error") or "")[:200]]
            for label, column in run.columns.items() for f in column.failures]
    if not rows:
        return None
    return Table.of("Fits without draws (counted, not dropped)", ["backend", "simulation", "status", "error"], rows,
                    bad_rows=range(len(rows)), text_columns=(3,))


#: Below this many simulations a calibrated verdict comes with a caveat on the test's power.
FEW_SIMULATIONS = 100


def power_caveat(run: SbcRun) -> str | None:
    """Why a calibrated verdict from few simulations says little (None where it does not apply):
    ranks from a few dozen simulations show only gross miscalibration."""
    if run.verdict != "calibrated" or run.simulations >= FEW_SIMULATIONS:
        return None
    return (f"only {run.simulations} simulations: the test finds gross miscalibration at most (a prior scale "
            "doubled in NumPyro's eight schools was caught at a 1% level in 6 of 10 runs of 20 simulations, 10 of 10 of 40; "
            f"a subtler error needs hundreds); run --simulations {max(2 * FEW_SIMULATIONS, run.simulations)} for "
            "a verdict with power")


def sbc_text(run: SbcRun) -> str:
    """What ``polyppl sbc`` prints: the verdict, the tables, the timing."""
    caveat = power_caveat(run)
    parts = [f"SBC of {run.problem.describe()}: {run.simulations} simulations per backend, seed {run.seed}: "
             f"{run.verdict.upper()}" + (f"\n  - {caveat}" if caveat else ""),
             backends_table(run).text(), quantities_table(run).text(), timing_table(run).text()]
    failures = failures_table(run)
    if failures is not None:
        parts.append(failures.text())
    return "\n\n".join(parts)


# --------------------------------------------------------------------------- page


def default_report_path(run: SbcRun) -> Path:
    return run.ledger.with_name(run.ledger.name.replace("-ledger.jsonl", "-report.html"))


@dataclass(frozen=True)
class _Png:
    name: str  # ``ecdf`` or ``ranks``: the file is ``<stem>-<name>.png``
    data: bytes
    alt: str
    caption: str

    def html(self) -> str:
        encoded = base64.b64encode(self.data).decode("ascii")
        return (f'<figure><img src="data:image/png;base64,{encoded}" alt="{_e(self.alt)}">'
                f"<figcaption>{_e(self.caption)}</figcaption></figure>")


def _render(run: SbcRun) -> dict[str, _Png]:
    """Both figures as PNG, each drawn once (with many quantities, drawing is most of the
    report's time); none without ranks."""
    if not run.L or not _ranks(run):
        return {}
    prepare_matplotlib()
    results = {label: column.results for label, column in run.columns.items() if column.results}
    figures = {
        "ecdf": (ecdf_difference_figure(_ranks(run), run.L, results=results),
                 "rank ECDF minus uniform CDF per quantity and backend",
                 f"For each quantity, the ECDF of the fractional ranks minus the uniform CDF, per backend, and the "
                 f"{sbc_stats.BAND_LEVEL:.0%} simultaneous band for a uniform sample (grey). Above zero: true values "
                 "rank low, so the posterior sits too high; a ∩ shape: the posterior is too narrow; a ∪ shape: too wide."),
        "ranks": (rank_histogram_figure(_ranks(run), run.L), "rank histograms per quantity and backend",
                  "Ranks in equal bins; the grey band is where each bin's count lies with 99% probability under "
                  "uniformity (pointwise)."),
    }
    out = {}
    for name, (figure, alt, caption) in figures.items():
        buffer = io.BytesIO()
        figure.savefig(buffer, format="png", dpi=DPI, bbox_inches="tight", facecolor="white")
        out[name] = _Png(name, buffer.getvalue(), alt, caption)
    return out


def write_sbc_report(run: SbcRun, path: str | Path | None = None, figures: str | Path | None = None) -> list[Path]:
    """The HTML page (default ``OUT/<model>-<scenario>-sbc-report.html``), written atomically,
    and, with ``figures`` (a folder), the figures as ``<stem>-ecdf.png`` and
    ``<stem>-ranks.png``; the paths written."""
    path = Path(path) if path is not None else default_report_path(run)
    pngs = _render(run)
    page = _page(run, pngs)
    atomic_write(path, lambda tmp: tmp.write_text(page, encoding="utf-8"))
    written = [path]
    if figures is not None:
        stem = run.ledger.name.replace("-ledger.jsonl", "")
        for png in pngs.values():
            target = Path(figures) / f"{stem}-{png.name}.png"
            atomic_write(target, lambda tmp, data=png.data: tmp.write_bytes(data))
            written.append(target)
    return written


def _page(run: SbcRun, pngs: dict[str, _Png]) -> str:
    labels = run.problem.labels
    title = f"polyppl SBC: {labels.model} · {labels.scenario}"
    sections = [
        ("verdict", "Verdict", _verdict_section(run)),
        ("ecdf", "Rank ECDFs", pngs["ecdf"].html() if "ecdf" in pngs else ""),
        ("histograms", "Rank histograms", pngs["ranks"].html() if "ranks" in pngs else ""),
        ("quantities", "Test per quantity", quantities_table(run).html() if run.L else ""),
        ("time", "Time", timing_table(run).html()),
        ("again", "Running it again", _again_section(run)),
        ("provenance", "Provenance", _provenance_section(run)),
    ]
    s = run.settings
    subtitle = (f"{_e(labels.parametrization or 'declared')} parametrization · data shapes of {_e(run.problem.dataset.source)} · "
                f"{run.simulations} simulations per backend · {s.chains} chains × {s.tune} warm-up + {s.draws} draws · seed {run.seed}")
    return html_page(title, labels.model, "simulation-based calibration", subtitle, sections)


def _verdict_section(run: SbcRun) -> str:
    verdict = run.verdict
    return (f'<div class="verdict verdict-{VERDICT_CLASS[verdict]}"><p><strong>{_e(verdict.upper())}</strong>: '
            f"{_e(VERDICT_WORDS[verdict])}.</p>"
            + (f"<ul><li>{_e(power_caveat(run))}</li></ul>" if power_caveat(run) else "") + "</div>"
            f'<p class="note">Parameters were drawn from the prior and data from the likelihood {run.simulations} times; '
            f"each backend fitted every data set, and each true value was ranked among L = {run.L} posterior draws. "
            f"Test quantities: every parameter and deterministic, and {LOG_LIKELIHOOD} (the log-likelihood of the "
            f"simulated data). Test: {_e(sbc_stats.METHOD)}, at a family-wise false-alarm rate of "
            f"{run.family_alpha:.0%} per backend. Fits that failed have no ranks and are counted; fits that diverged or "
            f"did not converge keep their ranks and are counted.</p>" + backends_table(run).html()
            + (failures_table(run).html() if failures_table(run) is not None else ""))


def _ranks(run: SbcRun) -> dict[str, dict[str, list[int]]]:
    return {label: column.ranks for label, column in run.columns.items() if column.results}


def _again_section(run: SbcRun) -> str:
    labels = run.problem.labels
    backends = ",".join(run.columns)
    command = (f"polyppl sbc {labels.model} --backends {backends} --simulations {run.simulations} --seed {run.seed}"
               f" --chains {run.settings.chains} --draws {run.settings.draws} --tune {run.settings.tune}")
    return (f"<p>The ledger <code>{_e(run.ledger)}</code> holds one line per finished fit: the same command with the "
            "same <code>--out</code> runs only the fits missing from it.</p>"
            f"<pre>{_e(command)}</pre>"
            "<p>On a Dask cluster: start a scheduler and workers where polyppl is installed, then give the scheduler's "
            "address; simulation i gets the same parameters, data and seeds wherever it runs.</p>"
            f"<pre>uv run dask scheduler                 # prints its address, tcp://HOST:8786\n"
            f"uv run dask worker tcp://HOST:8786     # on each machine (one process per core: --nworkers auto --nthreads 1)\n"
            f"{_e(command)} --scheduler tcp://HOST:8786</pre>")


def _provenance_section(run: SbcRun) -> str:
    s = run.settings
    substitutes = ", ".join(f"{name} ~ {value or 'dropped'}" for name, value in run.substitutes.items()) or "none"
    return (f'<p class="note">Model {_e(run.problem.name)} ({_e(run.problem.parametrization or "as declared")}), '
            f"data shapes and covariates of {_e(run.problem.dataset.source)}; substitute priors: {_e(substitutes)}. "
            f"Sampler: {s.chains} chains × {s.tune} warm-up + {s.draws} draws, target acceptance {s.target_accept}, "
            f"maximum tree depth {s.max_tree_depth}, each engine's chains on one core. L = {run.L}: the largest of "
            f"{', '.join(map(str, sbc_stats.L_LADDER))} (at most {sbc_stats.DEFAULT_L}) that the smallest bulk ESS of "
            f"{L_SHARE:.0%} of the fits reaches. Flags: "
            + "; ".join(f"{_e(flag)}: {_e(meaning)}" for flag, meaning in FLAG_MEANINGS.items()) + "</p>")
