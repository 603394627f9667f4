"""One scaling point on Stan's two engines: the multilevel model at 2,048 groups (counts,
100 rows per cell), 4 chains x 1000 + 1000, each engine in a fresh child process, as
`polyppl bench --full` runs it. Memory is the whole process tree's (the worker and the
processes it starts: CmdStan's, or httpstan's pool), sampled every 0.5 s from /proc.

    uv run python benchmarks/stan_engines_at_scale.py [--groups 2048] [--engines cmdstanpy,pystan]
"""

from __future__ import annotations

import argparse
import json
import threading
import time
from pathlib import Path

from polyppl.studies.bench import FULL, Point, run_point


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
    parser.add_argument("--groups", type=int, default=2048)
    parser.add_argument("--engines", default="cmdstanpy,pystan")
    args = parser.parse_args()
    import os

    for engine in args.engines.split(","):
        peak, done = [0.0], threading.Event()

        def poll() -> None:
            while not done.is_set():
                peak[0] = max(peak[0], tree_rss_mb(os.getpid()))
                time.sleep(0.5)

        poller = threading.Thread(target=poll, daemon=True)
        poller.start()
        row = run_point(Point("multilevel-logistic", f"stan:{engine}", (("groups", args.groups), ("rows_per_cell", 100))),
                        FULL)
        done.set()
        poller.join()
        row["peak_tree_memory_mb"] = round(peak[0])
        print(json.dumps(row), flush=True)


if __name__ == "__main__":
    main()
