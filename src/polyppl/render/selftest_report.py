"""A selftest as text (``polyppl selftest`` prints it), as Markdown (the file committed beside
the docs, whose numbers the README quotes) and as a self-contained HTML page.

All three are written from the run's JSON (:meth:`SelftestRun.to_json`), so that the
Markdown committed under ``docs/selftest/`` can be checked against the JSON beside it.
"""

from __future__ import annotations

import html
from pathlib import Path
from typing import Any

from polyppl.inference.idata import atomic_write
from polyppl.render.report import html_page
from polyppl.render.tables import Table

HEADERS = ("claim", "measured", "rate", "95% interval", "stated", "P(>= k at stated)", "power vs 2x", "result")
VERDICT_WORDS = {
    "pass": "every claim holds: no measured rate is credibly above its stated bound",
    "fail": "some claim fails: its measured rate is above its stated bound beyond chance (or a backend is miscalibrated)",
    "unmeasured": "some claim could not be measured: its fits failed or its comparisons were inconclusive",
}


def percent(value: float | None) -> str:
    """0.0125 as 1.25%, 0.2 as 20%: at most three significant digits, no trailing zeros."""
    if value is None:
        return "-"
    text = f"{100 * value:.3g}"
    if "e" in text:
        text = f"{100 * value:.2f}"
    return f"{text}%"


def claim_row(claim: dict[str, Any]) -> list[str]:
    """One claim's cells: the same strings in every output (the README quotes them)."""
    if claim["kind"] == "rate":
        measured = f"{claim['events']} of {claim['trials']} {claim['event']}" if claim["trials"] else "nothing judged"
        interval = claim["interval"]
        return [claim["id"], measured, percent(claim["rate"]),
                f"[{percent(interval[0])}, {percent(interval[1])}]" if interval else "-", f"<= {percent(claim['stated'])}",
                _p(claim["p_value"]), f"{claim['doubling_power']:.2f}" if claim["doubling_power"] is not None else "-",
                claim["status"].upper()]
    verdict = claim["details"].get("verdict", "-")
    return [claim["id"], verdict, "-", "-", f"level {claim['level']:.2g}", _p(claim["p_value"]), "-",
            claim["status"].upper()]


def _p(value: float | None) -> str:
    return "-" if value is None else f"{value:.3g}"


def claims_table(data: dict[str, Any]) -> Table:
    rows = [claim_row(c) for c in data["claims"]]
    bad = [i for i, c in enumerate(data["claims"]) if c["status"] != "pass"]
    notes = [f"A claim fails when P(>= k at stated) < {data['level_per_claim']:.2g} (its level: "
             f"{percent(data['false_failure'])} shared among {len(rows)} claims); 'power vs 2x': the chance it fails "
             "if the true rate were twice the stated one."]
    return Table.of("Claims", HEADERS, rows, bad, text_columns=(1,), notes=notes)


def selftest_text(data: dict[str, Any]) -> str:
    head = (f"polyppl selftest --{data['profile']}: {len(data['claims'])} claims, seed {data['seed']}: "
            f"{data['verdict'].upper()} ({VERDICT_WORDS[data['verdict']]})")
    claims = "\n".join(f"  {c['id']}: {c['claim']}" for c in data["claims"])
    grid = data["grid"]
    timing = (f"{grid['tasks_run']} tasks run, {grid['tasks_reused']} reused from the ledger, "
              f"{grid['failed_tasks']} failed; {grid['wall_seconds']:.0f} s on {grid['workers']} workers ({grid['where']})")
    return "\n\n".join([head, claims_table(data).text(), "What each claim says:\n" + claims, timing])


def selftest_markdown(data: dict[str, Any]) -> str:
    """The Markdown file: provenance, the claims table, each claim's statement and details."""
    machine = data["machine"]
    lines = [
        f"# polyppl selftest --{data['profile']}",
        "",
        f"*Command:* `{data['command']}`  ",
        f"*Started:* {data['started']} (polyppl {data['polyppl']})  ",
        f"*Machine:* {machine['cpu']} ({machine['cores']} cores, {machine['system']} {machine['machine']}, "
        f"Python {machine['python']})  ",
        f"*Profile:* {data['description']}  ",
        f"*Verdict:* **{data['verdict'].upper()}** (exit code {data['exit_code']}): {VERDICT_WORDS[data['verdict']]}",
        "",
        "| " + " | ".join(HEADERS) + " |",
        "|" + "---|" * len(HEADERS),
    ]
    lines += ["| " + " | ".join(cell.replace("|", "\\|") for cell in claim_row(c)) + " |" for c in data["claims"]]
    lines += ["", f"A claim fails when P(>= k at stated) < {data['level_per_claim']:.2g}: "
              f"{percent(data['false_failure'])} shared among the {len(data['claims'])} claims, so a correct polyppl "
              "fails a selftest with at most that probability. 'power vs 2x': the chance the claim fails if the true "
              "rate were twice the stated one. Method: `src/polyppl/studies/selftest.py`.", ""]
    for claim in data["claims"]:
        lines += [f"## {claim['id']}", "", claim["claim"] + ".", ""]
        lines += [f"- {key}: {_inline(value)}" for key, value in claim["details"].items()]
        lines += [f"- settings: {_inline(data['settings'].get(claim['id'], {}))}", ""]
    grid = data["grid"]
    lines += ["## Grid", "", f"{grid['tasks_run']} tasks run, {grid['tasks_reused']} reused, {grid['failed_tasks']} "
              f"failed; {grid['wall_seconds']:.0f} s wall on {grid['workers']} workers ({grid['where']}), "
              f"{grid['cpu_seconds']:.0f} CPU seconds.", ""]
    return "\n".join(lines)


def _inline(value: Any) -> str:
    if isinstance(value, dict):
        return "; ".join(f"{k} {_inline(v)}" for k, v in value.items())
    if isinstance(value, float):
        return f"{value:.4g}"
    if isinstance(value, (list, tuple)):
        return ", ".join(_inline(v) for v in value)
    return str(value)


def selftest_html(data: dict[str, Any]) -> str:
    verdict_class = {"pass": "agree", "fail": "disagree", "unmeasured": "inconclusive"}[data["verdict"]]
    verdict = (f'<div class="verdict verdict-{verdict_class}"><p><strong>{data["verdict"].upper()}</strong>: '
               f"{html.escape(VERDICT_WORDS[data['verdict']])}</p></div>")
    statements = "".join(f"<dt>{html.escape(c['id'])}</dt><dd>{html.escape(c['claim'])}</dd>" for c in data["claims"])
    details = "".join(f"<h3>{html.escape(c['id'])}</h3><ul>"
                      + "".join(f"<li>{html.escape(k)}: {html.escape(_inline(v))}</li>" for k, v in c["details"].items())
                      + "</ul>" for c in data["claims"])
    machine = data["machine"]
    provenance = (f"<p><code>{html.escape(data['command'])}</code>, started {html.escape(data['started'])} on "
                  f"{html.escape(str(machine['cpu']))} ({machine['cores']} cores); ledger "
                  f"<code>{html.escape(data['ledger'])}</code>.</p>")
    sections = [("verdict", "Verdict", verdict + claims_table(data).html()
                 + f'<p class="note">{html.escape(claims_table(data).notes[0])}</p>'),
                ("claims", "What each claim says", f'<dl class="flags">{statements}</dl>'),
                ("details", "Details", details), ("provenance", "Provenance", provenance)]
    return html_page(f"polyppl selftest --{data['profile']}", "polyppl selftest", f"--{data['profile']}",
                     html.escape(data["description"]), sections)


def write_selftest_files(data: dict[str, Any], stem: Path) -> tuple[Path, Path]:
    """``STEM.md`` and ``STEM-report.html``."""
    markdown, page = stem.with_name(stem.name + ".md"), stem.with_name(stem.name + "-report.html")
    text, page_html = selftest_markdown(data), selftest_html(data)
    atomic_write(markdown, lambda tmp: tmp.write_text(text))
    atomic_write(page, lambda tmp: tmp.write_text(page_html))
    return markdown, page


__all__ = ["claim_row", "claims_table", "percent", "selftest_html", "selftest_markdown", "selftest_text",
           "write_selftest_files"]
