"""Which posteriordb posteriors with reference draws the Stan front end lowers, and their
translation checks (docs/stan-programs.md).

    uv run python benchmarks/posteriordb_translation.py [POSTERIORDB]   # default ../shared/posteriordb

For each posterior of ``posterior_database/posteriors/*.json`` with a ``reference_posterior_name``:
the program and data lowered (``polyppl.models.stan_program.stan_program``), then the lowered
model's log density and gradient on PyMC and NumPyro against Stan's own at 20 points
(``polyppl.studies.translation.check_translation``); or the construct and line that stops it.
One line per posterior, then a Markdown table. CmdStan (``$CMDSTAN``) or PyStan compiles each
program once (cached afterwards).
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

from polyppl.errors import UserError
from polyppl.models.stan_program import check_support, stan_program
from polyppl.studies.translation import check_translation

DEFAULT = Path(__file__).resolve().parents[2] / "shared" / "posteriordb"


def main(root: Path) -> None:
    database = root / "posterior_database"
    rows = []
    for path in sorted((database / "posteriors").glob("*.json")):
        posterior = json.loads(path.read_text())
        if not posterior.get("reference_posterior_name"):
            continue
        program = database / "models" / "stan" / f"{posterior['model_name']}.stan"
        data = database / "data" / "data" / f"{posterior['data_name']}.json.zip"
        started = time.perf_counter()
        support = check_support(program, data)
        if not support.supported:
            rows.append((posterior["name"], "stops", support.message))
        else:
            try:
                result = check_translation(stan_program(program, data))
                rows.append((posterior["name"], "passes", f"{result.max_rel_error:.1e}"))
            except UserError as error:
                rows.append((posterior["name"], "fails", str(error)))
        print(*rows[-1], f"({time.perf_counter() - started:.0f} s)", flush=True)
    print("\n| posterior | translation | largest relative error, or what stops it |\n|---|---|---|")
    for row in rows:
        print("| " + " | ".join(row) + " |")


if __name__ == "__main__":
    main(Path(sys.argv[1]) if len(sys.argv) > 1 else DEFAULT)
