"""The measured tables of docs/posteriordb.md from a ``polyppl posteriordb`` run's JSON: each
posterior's standing per backend with its speed, and the fastest backend per posterior with
each backend's ESS/s over the fastest's and their geometric mean.

    uv run python scripts/posteriordb_table.py polyppl-posteriordb/posteriordb.json
    uv run python scripts/posteriordb_table.py RUN.json --update docs/posteriordb.md
    uv run python scripts/posteriordb_table.py RUN.json --summary --update README.md

Without ``--update`` the tables are printed (Markdown); with it they replace what lies between
the file's markers ``<!-- posteriordb-measured:begin -->`` and ``<!-- posteriordb-measured:end -->``
(with ``--summary``: the README's short table, one row per data set, between
``<!-- posteriordb-summary:begin -->`` and ``<!-- posteriordb-summary:end -->``).
"""

from __future__ import annotations

import argparse
import json
import math
import re
import sys
from collections import Counter
from pathlib import Path
from typing import Any

BEGIN, END = "<!-- posteriordb-measured:begin -->", "<!-- posteriordb-measured:end -->"
SUMMARY_BEGIN, SUMMARY_END = "<!-- posteriordb-summary:begin -->", "<!-- posteriordb-summary:end -->"


def _number(value: float | None, digits: int = 0) -> str:
    if value is None or not math.isfinite(value):
        return "-"
    return f"{value:,.{digits}f}"


def _cell(backend: dict[str, Any] | None, status: str) -> str:
    """``agree, 461 ESS/s, 100 µs/grad``, or the fit's status (``error``), or ``-``."""
    if backend is None:
        return status if status in ("unsupported", "error") else "-"
    if backend["status"] != "ok":
        return backend["status"]
    word = backend.get("vs_reference") or ("not converged" if set(backend.get("flags", ())) & {"rhat", "ess_bulk", "ess_tail"}
                                           else "ok")
    return f"{word}, {_number(backend.get('ess_per_s'))} ESS/s, {_number(backend.get('us_per_gradient'), 1)} µs/grad"


def markdown(run: dict[str, Any]) -> str:
    """Both tables, and a line saying what they come from."""
    labels = run["backends"]
    lines = [f"| posterior | {' | '.join(labels)} | status |", "|---|" + "---|" * (len(labels) + 1)]
    for name, entry in run["posteriors"].items():
        cells = [_cell(entry["backends"].get(label), entry["status"]) for label in labels]
        climbed = len(entry.get("remedies") or []) > 1
        status = entry["status"] + (f" (after remedies: {entry['remedies'][entry.get('remedies_chosen', -1)]['rung']})"
                                    if climbed else "")
        lines.append(f"| {name} | {' | '.join(cells)} | {status} |")
    summary = ", ".join(f"{n} {status}" for status, n in run["summary"].items() if n)
    lines += ["", f"{len(run['posteriors'])} posteriors: {summary}.", ""]
    speed = run["speed"]
    per_posterior = speed.get("per_posterior") or {}
    if per_posterior:
        lines += [f"| posterior | fastest | {' | '.join(f'{label} / fastest' for label in labels)} |",
                  "|---|---|" + "---|" * len(labels)]
        for name, row in per_posterior.items():
            ratios = [_number(row["over_fastest"].get(label), 2) for label in labels]
            lines.append(f"| {name} | {row['fastest']} | {' | '.join(ratios)} |")
        means = speed["ess_per_s_over_fastest_geometric_mean"]
        wins = speed.get("fastest_count") or {}
        lines.append(f"| geometric mean over {speed['posteriors_compared']} | "
                     f"{', '.join(f'{label} {n}' for label, n in wins.items() if n)} | "
                     f"{' | '.join(_number(means.get(label), 2) for label in labels)} |")
    else:
        lines.append("No posterior where every backend converged and agreed: no speed ratios.")
    settings = run["settings"]
    lines += ["", f"(From {run.get('ledger', 'a run')}'s JSON: {settings['chains']} chains x {settings['tune']} warm-up "
                  f"+ {settings['draws']} draws, seed {settings['seed']}; remedies: "
                  f"{', '.join(run.get('remedies') or []) or 'none'}.)"]
    return "\n".join(lines)


def summary(run: dict[str, Any]) -> str:
    """One row per data set (posteriordb's name before the ``-``, a year's digits dropped:
    the eight ``nes19xx-nes`` are one row): how many posteriors, their statuses, each
    backend's standing against the reference draws, and which backend was fastest how often."""
    labels = run["backends"]
    groups: dict[str, list[str]] = {}
    for name in run["posteriors"]:
        groups.setdefault(re.sub(r"_?\d+$", "", name.split("-")[0]), []).append(name)
    fastest = (run["speed"].get("per_posterior") or {})
    lines = [f"| data (posteriors) | status | {' | '.join(labels)} | fastest |",
             "|---|---|" + "---|" * len(labels) + "---|"]
    unsupported = []
    for group, names in groups.items():
        entries = [run["posteriors"][n] for n in names]
        if all(e["status"] == "unsupported" for e in entries):
            unsupported += names
            continue
        status = _counts(e["status"] for e in entries)
        cells = [_counts(_standing(e["backends"].get(label), e["status"]) for e in entries) for label in labels]
        wins = _counts(fastest[n]["fastest"] for n in names if n in fastest) or "-"
        lines.append(f"| {group} ({len(names)}) | {status} | {' | '.join(cells)} | {wins} |")
    means = run["speed"].get("ess_per_s_over_fastest_geometric_mean") or {}
    if means:
        lines.append(f"| ESS/s over the fastest, geometric mean ({run['speed']['posteriors_compared']}) | | "
                     f"{' | '.join(_number(means.get(label), 2) for label in labels)} | |")
    if unsupported:
        lines += ["", f"Outside the subset ({len(unsupported)}): "
                      + "; ".join(f"{n} ({_why(run['posteriors'][n]['reason'])})" for n in unsupported) + "."]
    return "\n".join(lines)


def _why(reason: str) -> str:
    """``line 33: the solver integrate_ode_rk45 is not supported ...`` -> ``line 33: the solver
    integrate_ode_rk45``."""
    return reason.split(" is not supported")[0].split(" (only ")[0]


def _standing(backend: dict[str, Any] | None, status: str) -> str:
    if backend is None:
        return status if status in ("unsupported", "error") else "-"
    if backend["status"] != "ok":
        return backend["status"]
    return backend.get("vs_reference") or "ok"


def _counts(words) -> str:
    """``7 agree`` or ``6 agree, 1 disagree``, most common first."""
    return ", ".join(f"{n} {word}" for word, n in Counter(words).most_common())


def update(document: Path, text: str, begin: str = BEGIN, end: str = END) -> None:
    """Replace what lies between the markers in ``document`` by ``text``."""
    content = document.read_text()
    if begin not in content or end not in content:
        raise SystemExit(f"{document}: no {begin} ... {end} markers to replace between")
    head, rest = content.split(begin, 1)
    _, tail = rest.split(end, 1)
    document.write_text(f"{head}{begin}\n{text}\n{end}{tail}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("json", type=Path, help="a run's posteriordb.json (OUT/posteriordb.json or --json FILE)")
    parser.add_argument("--update", type=Path, metavar="FILE.md", help="replace the tables between the markers in FILE.md")
    parser.add_argument("--summary", action="store_true", help="the README's short table, one row per data set")
    args = parser.parse_args(argv)
    try:
        run = json.loads(args.json.read_text())
        text = summary(run) if args.summary else markdown(run)
    except (OSError, ValueError, KeyError) as exc:
        print(f"{args.json}: not a polyppl posteriordb result ({type(exc).__name__}: {exc})", file=sys.stderr)
        return 2
    if args.update:
        update(args.update, text, *((SUMMARY_BEGIN, SUMMARY_END) if args.summary else (BEGIN, END)))
        print(f"updated {args.update}")
    else:
        print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
