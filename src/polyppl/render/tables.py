"""The tables of a comparison, each built once and written as text or as HTML.

A :class:`Table` holds formatted cells (strings), a title, the rows to mark as bad and the
columns of free text; ``polyppl compare`` prints :meth:`Table.text`, the report embeds
:meth:`Table.html`.
"""

from __future__ import annotations

import html
from dataclasses import dataclass, field
from typing import Any, Sequence

from polyppl.inference.diagnostics import (
    ESS_PER_CHAIN_MIN, FLAG_MEANINGS, RHAT_MAX, RunDiagnostics, beside_threshold, convergence_failures,
)
from polyppl.render.text import fmt, plus_minus, table
from polyppl.studies.compare import Comparison
from polyppl.studies.remedies import LadderSummary
from polyppl.studies.replications import REPLICATIONS_ALPHA, VERDICTS, Replications
from polyppl.studies.scorecard import K_RELIABLE, K_USABLE, MEAN_SHIFT_MAX_SD, SD_RATIO_MIN, VERDICT_WORDS


@dataclass(frozen=True)
class Table:
    title: str
    headers: tuple[str, ...]
    rows: tuple[tuple[str, ...], ...]
    bad_rows: frozenset[int] = frozenset()
    text_columns: frozenset[int] = frozenset()
    notes: tuple[str, ...] = field(default=())

    @classmethod
    def of(cls, title: str, headers: Sequence[str], rows: Sequence[Sequence[Any]], bad_rows: Sequence[int] = (),
           text_columns: Sequence[int] = (), notes: Sequence[str] = ()) -> Table:
        return cls(title, tuple(headers), tuple(tuple(fmt(c) for c in row) for row in rows), frozenset(bad_rows),
                   frozenset(text_columns), tuple(notes))

    def text(self) -> str:
        out = table(self.headers, self.rows, self.title)
        return out + ("\n" + "\n".join(self.notes) if self.notes else "")

    def html(self) -> str:
        def cell(tag: str, i: int, value: str) -> str:
            css = ' class="text"' if i in self.text_columns else ""
            return f"<{tag}{css}>{html.escape(value)}</{tag}>"

        head = "".join(cell("th", i, h) for i, h in enumerate(self.headers))
        bad = ' class="bad"'
        body = "".join(
            f"<tr{bad if r in self.bad_rows else ''}>" + "".join(cell("td", i, v) for i, v in enumerate(row)) + "</tr>"
            for r, row in enumerate(self.rows))
        return f'<div class="table-scroll"><table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table></div>'


# --------------------------------------------------------------------------- decisions


def decision_label(c: Comparison, group: str, label: str) -> str:
    """How a decision reads: P(B beats C), P(D is best), P(treatment better ...): China."""
    node = next((d for d in c.problem.model.decisions if d.name == group), None)
    if node is not None and node.kind == "beats":
        winner, loser = label.split(">", 1)
        return f"P({winner} beats {loser})"
    if node is not None and node.kind == "best":
        return f"P({label} is best)"
    if node is None:
        return f"{group}: {label}" if label else group
    return node.reads(label)


def decision_groups(c: Comparison) -> dict[str, list[tuple[str, str]]]:
    """Decision quantities by decision as (label, quantity key); a pairwise "beats" decision
    keeps one ordering per pair, the one the first source finds likelier, so no row is a
    mirror image of another."""
    if not c.sources:
        return {}
    first = next(iter(c.sources.values()))
    groups: dict[str, list[tuple[str, str]]] = {}
    kinds = {d.name: d.kind for d in c.problem.model.decisions}
    for key, q in first.items():
        if not q.is_probability:
            continue
        group, _, rest = key.partition("[")
        label = rest[:-1]
        if kinds.get(group) == "beats":
            winner, loser = label.split(">", 1)
            if q.summary.mean < 0.5 or (q.summary.mean == 0.5 and label > f"{loser}>{winner}"):
                continue
        groups.setdefault(group, []).append((label, key))
    return groups


def decisions_table(c: Comparison) -> Table | None:
    groups = decision_groups(c)
    if not groups:
        return None
    names = list(c.sources)
    rows = []
    for group, items in groups.items():
        for label, key in items:
            cells = []
            for name in names:
                q = c.sources[name].get(key)
                cells.append(plus_minus(q.summary.mean, q.summary.mcse_mean) if q else "-")
            rows.append([decision_label(c, group, label), *cells])
    notes = ["Each pair appears once, likelier winner first: P(Y beats X) = 1 - P(X beats Y)."] \
        if any(d.kind == "beats" for d in c.problem.model.decisions) else []
    return Table.of("Decisions", ["decision (estimate ± MCSE)", *names], rows, notes=notes)


# --------------------------------------------------------------------------- diagnostics, speed


def diagnostics_table(c: Comparison) -> Table:
    rows, bad = [], []
    for label, record in c.records.items():
        if not record.ok:
            rows.append([label, record.status, "-", "-", "-", "-", "-", "-", (record.error or "")[:80]])
            bad.append(len(rows) - 1)
            continue
        d = record.diagnostics
        rhat, bulk, tail = flagged_cells(d, record.settings["chains"])
        rows.append([label, "ok", rhat, bulk, tail, d.divergences,
                     f"{100 * d.tree_depth_saturation:.1f}%", d.ebfmi_min, ", ".join(d.flags) or "none"])
        if convergence_failures(d.flags):  # unconverged: its draws are no evidence
            bad.append(len(rows) - 1)
    flags = sorted({f for r in c.records.values() if r.ok for f in r.diagnostics.flags})
    return Table.of("Diagnostics (recomputed from the draws with ArviZ)",
                    ["backend", "status", "R-hat max", "bulk ESS min", "tail ESS min", "divergences", "max depth",
                     "E-BFMI min", "flags"], rows, bad, text_columns=[8],
                    notes=[f"  {f}: {FLAG_MEANINGS[f]}" for f in flags])


def flagged_cells(d: RunDiagnostics, chains: int) -> tuple[Any, Any, Any]:
    """R-hat max, bulk and tail ESS min as cells: a flagged value with its threshold beside
    it and enough digits never to print as the threshold (``1.0103 > 1.01``)."""
    minimum = ESS_PER_CHAIN_MIN * chains
    rhat = f"{beside_threshold(d.rhat_max, RHAT_MAX)} > {RHAT_MAX}" if "rhat" in d.flags else d.rhat_max
    bulk, tail = ([f"{beside_threshold(value, minimum, 0)} < {minimum}" if flag in d.flags else round(value)]
                  for flag, value in (("ess_bulk", d.ess_bulk_min), ("ess_tail", d.ess_tail_min)))
    return rhat, bulk[0], tail[0]


def remedies_lines(ladder: LadderSummary | None, again: str = "all backends ") -> list[str]:
    """The remedies ladder rung by rung, when it climbed or when its last rung is still
    flagged (nothing for a clean run); ``again`` introduces each rung after the first."""
    if ladder is None or not (ladder.climbed or ladder.stopped):
        return []
    title = "Remedies (a ladder climbed when a fit is flagged; --remedies none turns it off)"
    lines = [title, "=" * len(title)]
    chosen = ladder.chosen % len(ladder.rungs)
    for i, r in enumerate(ladder.rungs):
        mark = " (the rung shown: the fewest flags)" if i == chosen and i != len(ladder.rungs) - 1 else ""
        lines.append(f"{i + 1}. {again if i else ''}{r.rung}: {r.findings} -> {r.verdict.upper()}{mark}")
    if ladder.stopped:
        lines.append(f"stopped: {ladder.stopped}")
    return lines


SPEED_HEADERS = ("backend", "engine", "compile s", "warm-up s", "sampling s", "bulk ESS min", "ESS/s", "gradients",
                 "ESS/1000 grad", "µs/gradient")


def speed_table(c: Comparison) -> Table:
    rows = []
    for label, r in c.records.items():
        if not r.ok:
            rows.append([label, r.status] + ["-"] * 8)
            continue
        t, d = r.timings, r.diagnostics
        rows.append([label, r.engine, t.compile_seconds, t.warmup_seconds, t.sampling_seconds, round(d.ess_bulk_min),
                     round(d.ess_bulk_per_second) if d.ess_bulk_per_second else None, d.gradient_evaluations,
                     d.ess_bulk_per_1000_gradients, d.seconds_per_gradient * 1e6 if d.seconds_per_gradient else None])
    return Table.of("Speed (sampling time only in ESS/s; compile and warm-up apart)", SPEED_HEADERS, rows,
                    text_columns=[1])


# --------------------------------------------------------------------------- agreement


def agreement_table(c: Comparison, limit: int | None = 10, with_floor: bool = False) -> Table:
    ordered = sorted(c.tests, key=lambda t: (t.agree, -abs(t.z)))
    shown = ordered if limit is None else ordered[:limit]
    headers = ["quantity", "pair", "statistic", "gap", "z", "p", *(["floor"] if with_floor else []), "agree"]
    rows = [[t.quantity, " vs ".join(t.backends), t.statistic, t.gap, t.z, t.p_value,
             *([t.floor] if with_floor else []), "yes" if t.agree else "NO"] for t in shown]
    title = (f"Agreement: {len(c.tests)} tests, worst first (family-wise false-alarm rate {100 * c.family_alpha:g}%, "
             f"Holm; gaps under {c.floor} posterior sd ignored)")
    return Table.of(title, headers, rows, [i for i, t in enumerate(shown) if not t.agree], text_columns=[1, 2])


def settings_table(c: Comparison) -> Table:
    rows = [[k, str(v)] for k, v in c.settings.as_dict().items()]
    if c.variational is not None:  # the approximations' settings, with each method's defaults filled in
        for method in c.methods[1:]:
            rows += [[f"{method} {k}", str(v)] for k, v in c.variational.resolved(method).as_dict().items()]
    return Table.of("Sampler settings", ["setting", "value"], rows, text_columns=[1])


def versions_table(c: Comparison) -> Table:
    records = c.records
    labels = list(records)
    packages = sorted({p for r in records.values() for p in r.versions})
    rows = [["status", *[records[b].status for b in labels]],
            ["engine", *[records[b].engine for b in labels]],
            ["seed", *[str(records[b].seed) for b in labels]],
            *[[p, *[records[b].versions.get(p, "-") for b in labels]] for p in packages]]
    return Table.of("Engines and package versions", ["", *labels], rows, text_columns=range(1, len(labels) + 1))


# --------------------------------------------------------------------------- approximations

SCORECARD_HEADERS = ("cell", "status", "Pareto k", "max |mean shift| sd", "max |z|", "min sd ratio", "max W1/sd",
                     "seconds", "gradients", "verdict")


def scorecard_table(c: Comparison) -> Table | None:
    """Every approximation cell against the NUTS reference: the scorecard and its verdict, or
    the cell's status and why (n/a, error)."""
    cells = [cell for cell in c.cells() if not cell.endswith("/nuts")]
    if not cells:
        return None
    rows, bad, why_not = [], [], []
    for cell in cells:
        if cell in c.not_applicable:
            # The reason is a sentence: below the table, where it does not widen every row.
            rows.append([cell, "n/a", *["-"] * 7, "n/a (below)"])
            why_not.append(f"{cell}: n/a, {c.not_applicable[cell]}")
            continue
        outcome = c.approximations[cell]
        card = c.scorecards.get(cell)
        if not outcome.ok or card is None:
            rows.append([cell, outcome.record.status, *["-"] * 7, (outcome.record.error or "no NUTS reference")[:80]])
            bad.append(len(rows) - 1)
            continue
        rows.append([cell, "ok", card.pareto_k, card.max_abs_mean_shift_sd, card.max_abs_mean_z, card.min_sd_ratio,
                     card.max_w1_sd, card.seconds, card.gradient_evaluations, card.verdict])
        if card.verdict == "unreliable":
            bad.append(len(rows) - 1)
    reference = c.outcomes[c.reference_column].record if c.reference_column else None
    notes = []
    if reference is not None:
        d, t = reference.diagnostics, reference.timings
        notes.append(f"Scored against {c.reference_column}'s NUTS draws (the best-converged NUTS column): "
                     f"{t.warmup_seconds + t.sampling_seconds:.2f} s and "
                     f"{d.gradient_evaluations + d.warmup_gradient_evaluations} gradients, warm-up included.")
    notes += why_not
    notes += [f"  {verdict}: {words}" for verdict, words in VERDICT_WORDS.items()]
    notes.append(f"  thresholds: Pareto k {K_RELIABLE} and {K_USABLE}, mean shift {MEAN_SHIFT_MAX_SD} NUTS sd, "
                 f"sd ratio {SD_RATIO_MIN}; seconds exclude compiling; gradients as each library counts them")
    return Table.of("Approximations against NUTS", SCORECARD_HEADERS, rows, bad, text_columns=[1, 9], notes=notes)


def scorecard_reasons(c: Comparison) -> list[tuple[str, str, tuple[str, ...]]]:
    """Each scored cell's verdict and its reasons, in words."""
    return [(cell, card.verdict, card.reasons) for cell, card in c.scorecards.items()]


def comparison_text(c: Comparison, recommendation: bool = True) -> str:
    """What ``polyppl compare`` prints: decisions first, then diagnostics, speed, agreement,
    the verdict and (unless ``recommendation`` is False: the command prints it last, after
    where the files went) the recommendation."""
    s = c.settings
    parts = [f"{c.problem.describe()}; {s.chains} chains x {s.tune} warm-up + {s.draws} draws, seed {s.seed}"]
    decisions = decisions_table(c)
    parts += [t.text() for t in (decisions, diagnostics_table(c), speed_table(c), agreement_table(c)) if t]
    scorecards = scorecard_table(c)
    if scorecards is not None:
        reasons = [f"{cell}: {verdict.upper()}: " + "; ".join(why) for cell, verdict, why in scorecard_reasons(c)]
        parts.append(scorecards.text() + ("\n\n" + "\n".join(reasons) if reasons else ""))
    remedies = remedies_lines(c.remedies)
    if remedies:
        parts.append("\n".join(remedies))
    verdict = f"VERDICT: {c.verdict.upper()}"
    reasons = list(c.reasons)
    if c.remedies is not None and c.remedies.climbed:
        reasons.insert(0, f"after remedies: {c.remedies.line(c.verdict)}")
    if reasons:
        verdict += "\n" + "\n".join(f"  - {r}" for r in reasons)
    parts.append(verdict)
    if recommendation and c.recommendation is not None:
        parts.append("\n".join(c.recommendation.lines()))
    return "\n\n".join(parts)


def replications_text(run: Replications) -> str:
    """What ``polyppl compare --replications`` prints."""
    c, n, plan = run.counts, run.judged, run.plan
    lines = [f"Replications of the comparison of {plan.problem.describe()}: {', '.join(plan.labels)}, seed {plan.seed}: "
             f"{run.verdict.upper()}",
             "verdicts: " + ", ".join(f"{name} {count}" for name, count in c.items() if count or name in VERDICTS)]
    interval = run.rate_interval()
    if interval is not None:
        k = c["disagree"]
        lines.append(f"disagreeing: {k} of {n} judged replications ({100 * k / n:.1f}%, 95% interval "
                     f"{100 * interval[0]:.1f}-{100 * interval[1]:.1f}%); each comparison's family-wise false-alarm "
                     f"rate is at most {100 * plan.family_alpha:g}%" + (
                         f": for backends that sample the same posterior, {k} or more of {n} has probability "
                         f"{run.p_value:.2g} (the verdict is 'disagree' below {REPLICATIONS_ALPHA:g})." if k else "."))
    if c["inconclusive"]:
        lines.append(f"inconclusive: {c['inconclusive']} replications in which a backend did not converge (R-hat or ESS)")
    if run.flagged:
        lines.append("flagged most often (quantity, pair, statistic: replications):")
        lines += [f"  {q}, {pair}, {s}: {count}" for q, pair, s, count in run.flagged[:10]]
    lines.append("replications with a divergence: " + ", ".join(f"{label} {k}" for label, k in run.divergent.items()))
    g = run.grid
    lines.append(f"Grid: {g['where']}; {g['replications_run']} replications run now, {g['replications_reused']} "
                 f"read from the ledger, in {g['wall_seconds']:.0f} s." + grid_incidents(g))
    return "\n".join(lines)


def grid_incidents(grid: dict) -> str:
    """What went wrong on a grid and was made good: unreadable ledger lines, lost workers."""
    out = ""
    if grid.get("ledger_lines_unreadable"):
        n = grid["ledger_lines_unreadable"]
        out += f" {n} ledger line{'s' if n != 1 else ''} unreadable: re-run."
    if grid.get("workers_lost"):
        lost = grid["workers_lost"]
        out += (f" {len(lost)} worker{'s' if len(lost) != 1 else ''} lost mid-grid ({', '.join(lost)}): "
                "their tasks were run again on other workers.")
    return out
