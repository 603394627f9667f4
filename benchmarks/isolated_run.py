"""One benchmark run in a fresh process, for what a process can set only once.

Cold compiles (empty PyTensor compile folder, an empty polyppl cache: CmdStan executables
and JAX's persistent cache; for PyStan the program removed from httpstan's cache), NumPyro's
host device count and float32 (both process-global in JAX). Prints one JSON record as the
last line of stdout.

    python benchmarks/isolated_run.py MODEL COLUMN [--implementation handwritten] [--cold]
        [--chain-method M] [--engine E] [--float32] [--host-devices N]

COLUMN is a backend, optionally with its engine (``stan:pystan``, ``pymc:nutpie``);
``--engine`` names the engine too. A hand-written run checks the premise
(``harness.check_premise``) before it runs (a cold one: before it reports).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
from pathlib import Path


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("model")
    parser.add_argument("column")
    parser.add_argument("--implementation", default="generated", choices=("generated", "handwritten"))
    parser.add_argument("--cold", action="store_true")
    parser.add_argument("--chain-method", default="auto")
    parser.add_argument("--engine", help="the backend's engine (PyMC: pymc, nutpie, numpyro; Stan: cmdstanpy, pystan)")
    parser.add_argument("--float32", action="store_true")
    parser.add_argument("--host-devices", type=int)
    args = parser.parse_args()
    # Both must be set before PyTensor and JAX are imported.
    if args.host_devices:
        os.environ["XLA_FLAGS"] = f"--xla_force_host_platform_device_count={args.host_devices}"
    compiledir = tempfile.TemporaryDirectory(prefix="polyppl-cold-") if args.cold else None
    if compiledir:
        os.environ["PYTENSOR_FLAGS"] = f"compiledir={compiledir.name}"
        os.environ["POLYPPL_CACHE"] = compiledir.name  # CmdStan's executables, NumPyro's persistent XLA cache
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    from dataclasses import replace

    import harness
    from polyppl.execution.child import use_forkserver
    from polyppl.execution.worker import peak_memory_mb

    use_forkserver()  # as polyppl's CLI and workers run
    column = args.column if args.engine is None else f"{args.column.partition(':')[0]}:{args.engine}"
    settings = replace(harness.SETTINGS, chain_method=args.chain_method)
    options = {"precision": "float32"} if args.float32 else None
    # A hand-written run checks the premise before it runs; a cold one after (the check
    # compiles the model), and prints no record unless it holds.
    if args.implementation == "handwritten" and not args.cold:
        harness.check_premise(args.model, column, options=options)
    if args.cold and column.partition(":")[0] == "stan":
        _forget_pystan_program(args.model, column, args.implementation, settings)
    record = harness.run_once(args.model, column, args.implementation, settings, options=options)
    if args.implementation == "handwritten" and args.cold:
        harness.check_premise(args.model, column, options=options)
    record["float32"] = args.float32
    record["peak_rss_mb"] = peak_memory_mb()
    print(json.dumps(record))


def _forget_pystan_program(model: str, column: str, implementation: str, settings) -> None:
    """On PyStan, the program is removed from httpstan's cache, so that the run compiles it
    from scratch (the compiled model stays cached for the in-process benchmarks). CmdStan's
    executables live in the polyppl cache, which a cold run points at an empty folder."""
    import harness

    request = harness.request_for(model, column, settings)
    if request.engine != "pystan":
        return
    import httpstan.cache
    import httpstan.models

    from polyppl.backends.stan.program import engine_code, stan_program

    labels = request.labels
    program = (harness.handwritten_stan_program(model, labels.parametrization) if implementation == "handwritten"
               else engine_code(stan_program(request.model.density_model())))
    name = httpstan.models.calculate_model_name(program)
    if name in httpstan.cache.list_model_names():
        httpstan.cache.delete_model_directory(name)


if __name__ == "__main__":
    main()
