"""The groups line of `polyppl bench --full` on Stan's engines: the multilevel model at 2 to
2,048 groups (counts, 1,000 rows per cell, the full sweep's points), 4 chains x 1000 + 1000,
seed 1, each point in a fresh child process as `polyppl bench` runs it. Memory is the
whole process tree's (the worker and the processes it starts: CmdStan's, or httpstan's
pool), sampled every 0.5 s from /proc, beside the worker's own peak. One JSON line per
point is appended to --out as it finishes (points already there are skipped), in the
format of the sweep's points.jsonl, the column named ``stan:<engine>``.

    uv run python benchmarks/stan_engines_at_scale.py [--groups 2,8,32,128,512,2048]
        [--engines cmdstanpy,pystan] [--rows-per-cell 1000] [--out FILE.jsonl]
"""

from __future__ import annotations

import argparse
import json
import threading
import time
from pathlib import Path

from polyppl.studies.bench import FULL, Point, finished_points, run_point


def tree_rss_mb(root: int) -> float:
    """Resident memory of ``root`` and all its descendants, now."""
    children: dict[int, list[int]] = {}
    rss: dict[int, int] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
            pid, ppid = int(entry.name), int(fields[1])
            rss[pid] = int(fields[21]) * 4096  # resident pages
            children.setdefault(ppid, []).append(pid)
        except (OSError, IndexError, ValueError):
            continue
    total, todo = 0, [root]
    while todo:
        pid = todo.pop()
        total += rss.get(pid, 0)
        todo += children.get(pid, [])
    return total / 2**20


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--groups", default="2048", help="comma-separated numbers of groups")
    parser.add_argument("--engines", default="cmdstanpy,pystan")
    parser.add_argument("--rows-per-cell", type=int, default=ROWS_PER_CELL,
                        help=f"rows per (group, arm) cell (default {ROWS_PER_CELL}, the sweep's)")
    parser.add_argument("--out", type=Path, default=None, help="JSON lines to append each point to")
    args = parser.parse_args()
    import os

    done_keys = set(finished_points(args.out)) if args.out is not None and args.out.exists() else set()
    for engine in args.engines.split(","):
        for groups in (int(g) for g in args.groups.split(",")):
            point = Point("multilevel-logistic", f"stan:{engine}", (("groups", groups), ("rows_per_cell", args.rows_per_cell)))
            if point.key in done_keys:
                continue
            peak, finished = [0.0], threading.Event()

            def poll() -> None:
                while not finished.is_set():
                    peak[0] = max(peak[0], tree_rss_mb(os.getpid()))
                    time.sleep(0.5)

            poller = threading.Thread(target=poll, daemon=True)
            poller.start()
            row = run_point(point, FULL)
            finished.set()
            poller.join()
            row["peak_tree_memory_mb"] = round(peak[0])
            print(json.dumps(row), flush=True)
            if args.out is not None:
                with args.out.open("a") as journal:
                    journal.write(json.dumps(row) + "\n")


#: The full sweep's groups line holds 1,000 rows per cell (multilevel_logistic.MODEL.sweeps).
ROWS_PER_CELL = 1000


if __name__ == "__main__":
    main()
