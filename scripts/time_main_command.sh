#!/usr/bin/env bash
# Times the README's main command as a new user meets it: a fresh clone of this repository,
# the install, then `uv run polyppl compare multilevel-logistic` with HOME pointed at an
# empty folder (no PyTensor, JAX, httpstan or polyppl cache: cold), then again (warm).
# Usage: scripts/time_main_command.sh [WORKDIR]   (default: a new temporary folder)
# With CMDSTAN set, Stan runs on cmdstanpy; without it, on PyStan. Prints one line per run:
# wall seconds, CPU seconds (user, sys) of all processes, load average before and after.
set -euo pipefail
repo="$(cd "$(dirname "$0")/.." && pwd)"
work="${1:-$(mktemp -d)}"
export UV_CACHE_DIR="${UV_CACHE_DIR:-$HOME/.cache/uv}"  # the packages are not downloaded again
git clone -q "$repo" "$work/repo"
cd "$work/repo"
start=$(date +%s.%N)
uv sync --locked --compile-bytecode -q
echo "install: $(echo "$(date +%s.%N) - $start" | bc | cut -c1-6) s"
mkdir -p "$work/home"
for run in cold warm1 warm2 warm3; do
    out="$(mktemp -d)"
    before=$(cut -d' ' -f1 /proc/loadavg)
    start=$(date +%s.%N)
    HOME="$work/home" /usr/bin/time -f "%U %S" -o "$work/cpu" \
        uv run polyppl compare multilevel-logistic --out "$out" > "$work/$run.log" 2>&1 || true
    wall=$(echo "$(date +%s.%N) - $start" | bc | cut -c1-6)
    echo "$run: wall $wall s, cpu $(cat "$work/cpu") s, load $before/$(cut -d' ' -f1 /proc/loadavg) (log: $work/$run.log)"
    rm -rf "$out"
done
