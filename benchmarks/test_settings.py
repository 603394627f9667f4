"""The settings that decide speed, on a small model (eight schools, generated), each against
the backend's default measured in test_models.py.

* NumPyro: chain method sequential, parallel over 4 host devices (a fresh process: the
  device count is fixed when JAX starts), and float32 (a fresh process: x64 is global).
* PyMC: its own NUTS with chains one after another (cores=1), NumPyro's NUTS on the
  PyMC model compiled to JAX (a fresh process, so no JAX threads run when PyMC forks), and
  nutpie's NUTS (Rust) on the model compiled by Numba, chains in threads.
* Stan: PyStan is the only engine here (no CmdStan install); it runs chains in parallel.
"""

from __future__ import annotations

from dataclasses import replace

import pytest

from harness import SETTINGS, SMOKE, medians, run_once
from test_models import isolated_run

MODEL = "eight-schools"
#: (backend, label, settings changes or isolated_run arguments, isolated)
CONFIGURATIONS = [
    ("numpyro", "chain_method=sequential", {"chain_method": "sequential"}, False),
    ("numpyro", "chain_method=parallel (4 host devices)", ["--chain-method", "parallel", "--host-devices", "4"], True),
    ("numpyro", "vectorized, float32", ["--float32"], True),
    ("pymc", "chain_method=sequential (cores=1)", {"chain_method": "sequential"}, False),
    ("pymc", "engine=numpyro (vectorized)", ["--engine", "numpyro"], True),
    # In a fresh process, as `polyppl run` and `compare` use it: Numba compiles nutpie's
    # log density anew, which decides its end-to-end time for a model this small.
    ("pymc", "engine=nutpie (fresh process)", ["--engine", "nutpie"], True),
]
#: NumPyro re-compiles on every run (3-10 s): one round.
IN_PROCESS_ROUNDS = {"pymc": 2, "numpyro": 1}


@pytest.mark.parametrize("backend,label,change,isolated", CONFIGURATIONS, ids=[f"{c[0]}-{c[1]}" for c in CONFIGURATIONS])
def test_setting(benchmark, results, backend: str, label: str, change, isolated: bool) -> None:
    records: list[dict] = []
    benchmark.group = f"settings {MODEL}"
    if isolated:
        benchmark.pedantic(lambda: records.append(isolated_run(MODEL, backend, *change)), rounds=1, iterations=1)
    else:
        settings = replace(SETTINGS, **change)
        benchmark.pedantic(lambda: records.append(run_once(MODEL, backend, "generated", settings)),
                           rounds=1 if SMOKE else IN_PROCESS_ROUNDS[backend], iterations=1)
    row = medians(records)
    benchmark.extra_info.update(row)
    results.append({"kind": "setting", "model": MODEL, "backend": backend, "implementation": label, **row})
