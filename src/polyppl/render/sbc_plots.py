"""Figures of simulation-based calibration: rank-ECDF differences with simultaneous bands, and
rank histograms. Each function returns a matplotlib ``Figure`` built without pyplot (so no
GUI backend is touched and nothing is kept in pyplot's registry); the caller saves or embeds it.

Ranks come as ``ranks[backend][quantity]``: lists of integers on 0..L, one per simulation
whose fit produced draws. Backends keep the colours of the comparison report.
"""

from __future__ import annotations

from typing import Mapping, Sequence

import numpy as np
from matplotlib.figure import Figure
from scipy import stats

from polyppl.render.colors import color
from polyppl.studies.sbc_stats import (
    BAND_LEVEL,
    SbcQuantityResult,
    binned_counts,
    ecdf_counts,
    histogram_bins,
    simultaneous_band,
)

#: Pointwise level of the band around each bin count of a rank histogram (Talts et al. 2018 use 99%).
HISTOGRAM_LEVEL = 0.99
BAND_GREY = "#cfcfcf"

Ranks = Mapping[str, Mapping[str, Sequence[int]]]


def _quantities(ranks: Ranks) -> list[str]:
    """Every quantity of any backend, in order of first appearance."""
    return list(dict.fromkeys(q for by_quantity in ranks.values() for q in by_quantity))


def _grid(fig: Figure, panels: int, columns: int, **kwargs) -> list:
    """``panels`` axes on a grid of ``columns`` columns; the unused cells of the last row removed."""
    rows = -(-panels // columns)
    axes = fig.subplots(rows, columns, squeeze=False, **kwargs).ravel()
    for ax in axes[panels:]:
        ax.remove()
    return list(axes[:panels])


def ecdf_difference_figure(
    ranks: Ranks,
    L: int,
    *,
    results: Mapping[str, Mapping[str, SbcQuantityResult]] | None = None,
    level: float = BAND_LEVEL,
    columns: int = 5,
) -> Figure:
    """One panel per quantity: for each backend, the ECDF of the fractional ranks minus the
    uniform CDF, ECDF(z) - z at z = j / (L + 1), against the simultaneous ``level`` band of
    Säilynoja, Bürkner and Vehtari (2022). Where every backend has the same number of
    simulations S the band is one grey area; otherwise the edges of the band for each S are
    dashed (in a backend's colour where it alone has that S). With ``results``
    (``judge`` per backend), backends judged miscalibrated are named in the panel."""
    quantities = _quantities(ranks)
    if not quantities:
        raise ValueError("no ranks to plot")
    columns = max(1, min(columns, len(quantities)))
    rows = -(-len(quantities) // columns)
    fig = Figure(figsize=(2.9 * columns + 0.4, 2.3 * rows + 1.0), layout="constrained")
    axes = _grid(fig, len(quantities), columns, sharex=True, sharey=True)
    sizes = sorted({len(r) for by_quantity in ranks.values() for r in by_quantity.values()})
    z = np.arange(L + 2) / (L + 1)
    for ax, quantity in zip(axes, quantities):
        present = {backend: by_quantity[quantity] for backend, by_quantity in ranks.items() if quantity in by_quantity}
        shared = len({len(r) for r in present.values()}) == 1
        if shared:
            band = simultaneous_band(len(next(iter(present.values()))), L, level)
            ax.fill_between(z, band.lower / band.n - z, band.upper / band.n - z, step="post", color=BAND_GREY, lw=0)
        else:  # bands of different widths: the edges of each, dashed, in the colour of its only backend
            by_size: dict[int, list[str]] = {}
            for backend, values in present.items():
                by_size.setdefault(len(values), []).append(backend)
            for n, members in by_size.items():
                band = simultaneous_band(n, L, level)
                for edge in (band.lower, band.upper):
                    ax.step(z, edge / n - z, where="post", color=color(members[0]) if len(members) == 1 else "#777",
                            lw=0.8, ls="--")
        for backend, values in present.items():
            ax.step(z, ecdf_counts(values, L) / len(values) - z, where="post", color=color(backend), lw=1.3, label=backend)
        flagged = [(backend, results[backend][quantity]) for backend in present
                   if results and quantity in results.get(backend, {}) and results[backend][quantity].verdict == "miscalibrated"]
        for line, (backend, result) in enumerate(flagged):
            ax.text(0.03, 0.97 - 0.11 * line, f"{backend}: miscalibrated (Holm p = {result.adjusted_p_value:.2g})",
                    transform=ax.transAxes, ha="left", va="top", fontsize=7.5, color=color(backend),
                    bbox={"facecolor": "white", "alpha": 0.7, "lw": 0, "pad": 1})
        ax.axhline(0, color="#666", lw=0.6)
        ax.set_title(quantity, fontsize=10)
        ax.set_xlim(0, 1)
        ax.grid(alpha=0.25, lw=0.5)
        ax.spines[["top", "right"]].set_visible(False)
    for i, ax in enumerate(axes):
        if i % columns == 0:
            ax.set_ylabel("ECDF − uniform CDF")
        if i + columns >= len(axes):  # no panel below: label the x axis here
            ax.set_xlabel("fractional rank (r + 1) / (L + 1)")
            ax.xaxis.set_tick_params(labelbottom=True)
    simulations = f"S = {sizes[0]}" if len(sizes) == 1 else f"S = {sizes[0]}–{sizes[-1]} (dashed: the band for each S)"
    title = f"SBC: rank ECDF minus uniform CDF, {level:.0%} simultaneous band per quantity; L = {L}, {simulations}"
    alphas = {r.family_alpha for by_quantity in (results or {}).values() for r in by_quantity.values()}
    if alphas:  # the band is per quantity, the verdicts are per backend: say so, or a curve just outside puzzles
        levels = ", ".join(f"{a:.0%}" for a in sorted(alphas))
        title += (f"\nverdicts: Holm over each backend's quantities at a family-wise {levels};"
                  " a curve can leave its band and still be judged calibrated")
    fig.suptitle(title, fontsize=11)
    lines: dict[str, object] = {}  # one legend entry per backend, from whichever panel has it
    for ax in axes:
        for handle, label in zip(*ax.get_legend_handles_labels()):
            lines.setdefault(label, handle)
    fig.legend(lines.values(), lines.keys(), loc="outside lower center", ncol=len(lines), frameon=False, fontsize=9)
    return fig


def rank_histogram_figure(ranks: Ranks, L: int, *, level: float = HISTOGRAM_LEVEL) -> Figure:
    """Rank histograms, one row per quantity and one column per backend. Ranks are counted in
    equal bins (``histogram_bins``: a divisor of L + 1, at most 20, at least 5 expected per
    bin); the grey band is the central ``level`` interval of Binomial(S, 1 / bins), where a
    bin's count lies with that probability under uniformity (pointwise, per bin)."""
    quantities = _quantities(ranks)
    backends = list(ranks)
    if not quantities:
        raise ValueError("no ranks to plot")
    fig = Figure(figsize=(3.2 * len(backends) + 0.8, 1.55 * len(quantities) + 1.0), layout="constrained")
    axes = fig.subplots(len(quantities), len(backends), squeeze=False, sharex=True)
    for row, quantity in enumerate(quantities):
        for column, backend in enumerate(backends):
            ax = axes[row, column]
            ax.spines[["top", "right"]].set_visible(False)
            if row == 0:
                ax.set_title(backend, fontsize=10, color=color(backend))
            if column == 0:
                ax.set_ylabel(f"{quantity}\ncount", fontsize=9)
            if row == len(quantities) - 1:
                ax.set_xlabel("rank")
            values = ranks[backend].get(quantity)
            if not values:
                ax.text(0.5, 0.5, "no ranks", transform=ax.transAxes, ha="center", va="center", color="#777")
                continue
            n, bins = len(values), histogram_bins(len(values), L)
            width = (L + 1) / bins
            low, high = stats.binom.interval(level, n, 1 / bins)
            ax.axhspan(low, high, color=BAND_GREY, lw=0, zorder=0)
            ax.bar(np.arange(bins) * width, binned_counts(values, L, bins), width=width, align="edge",
                   color=color(backend), alpha=0.75, edgecolor="white", lw=0.4, zorder=1)
            for edge in (low, high):  # the band's edges stay visible over the bars
                ax.axhline(edge, color="#888", lw=0.7, zorder=2)
            ax.axhline(n / bins, color="#333", lw=0.8, ls="--", zorder=2)
            ax.set_xlim(0, L + 1)
    fig.suptitle(f"SBC rank histograms (L = {L}); grey band: {level:.0%} binomial interval of each bin's count\n"
                 "under uniformity (pointwise, per bin); dashed line: expected count", fontsize=11)
    return fig
