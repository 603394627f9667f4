"""One benchmark run in a fresh process, for what a process can set only once.

Cold compiles (empty PyTensor compile folder, a Stan program removed from httpstan's cache,
a JAX process with an empty persistent cache), NumPyro's host device count and float32 (both
process-global in JAX). Prints one JSON record as the last line of stdout.

    python benchmarks/isolated_run.py MODEL BACKEND [--implementation handwritten] [--cold]
        [--chain-method M] [--pymc-sampler S] [--float32] [--host-devices N]
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
from contextlib import nullcontext
from pathlib import Path


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("model")
    parser.add_argument("backend")
    parser.add_argument("--implementation", default="generated")
    parser.add_argument("--cold", action="store_true")
    parser.add_argument("--chain-method", default="auto")
    parser.add_argument("--pymc-sampler", default="pymc")
    parser.add_argument("--float32", action="store_true")
    parser.add_argument("--host-devices", type=int)
    args = parser.parse_args()
    # Both must be set before PyTensor and JAX are imported.
    if args.host_devices:
        os.environ["XLA_FLAGS"] = f"--xla_force_host_platform_device_count={args.host_devices}"
    compiledir = tempfile.TemporaryDirectory(prefix="polyppl-cold-") if args.cold else None
    if compiledir:
        os.environ["PYTENSOR_FLAGS"] = f"compiledir={compiledir.name}"
        os.environ["POLYPPL_CACHE"] = compiledir.name  # NumPyro's persistent XLA cache
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    from dataclasses import replace

    import harness

    settings = replace(harness.SETTINGS, chain_method=args.chain_method, pymc_sampler=args.pymc_sampler)
    if args.float32:
        from polyppl.backends import numpyro_backend

        numpyro_backend.jax.config.update("jax_enable_x64", False)
    if args.cold and args.backend == "stan":
        record = _cold_stan(args, settings)
    else:
        record = harness.run_once(args.model, args.backend, args.implementation, settings)
    record["float32"] = args.float32
    from polyppl.bench import peak_memory_mb

    record["peak_rss_mb"] = peak_memory_mb()
    print(json.dumps(record))


def _cold_stan(args: argparse.Namespace, settings) -> dict:
    """The program is removed from httpstan's cache, so that this run compiles it from
    scratch; the compiled model stays cached for the in-process benchmarks."""
    import harness
    import httpstan.cache
    import httpstan.models
    from polyppl.backends import stan_backend
    from polyppl.models import MODELS

    builtin = MODELS[args.model]
    with harness.handwritten(args.model, builtin.default_parametrization, "stan") if args.implementation == "handwritten" else nullcontext():
        program = stan_backend.stan_program(builtin.spec(builtin.default_parametrization, builtin.dataset()))
        name = httpstan.models.calculate_model_name(program)
        if name in httpstan.cache.list_model_names():
            httpstan.cache.delete_model_directory(name)
        return harness.run_once(args.model, "stan", "generated", settings)


if __name__ == "__main__":
    main()
