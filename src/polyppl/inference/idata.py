"""One result shape: every backend's draws become the same xarray DataTree, ArviZ 1's
structure, with ArviZ's group names (``posterior``, ``sample_stats``, ``observed_data``,
``constant_data`` and, for an approximation, ``approximation``).

Same variable names, dims and coordinate labels whichever backend ran, so comparisons
never special-case a backend. Run metadata lives in the posterior group's attributes
(netCDF-safe scalars and JSON strings), with the layout's version (``FORMAT``): a saved file
of another version (ArviZ 0.x's InferenceData files of earlier polyppl releases included) is
not read as a result, and the fit is run again.
"""

from __future__ import annotations

import json
import os
import secrets
from pathlib import Path
from typing import Any

import numpy as np
import xarray as xr

from polyppl.errors import UserError
from polyppl.inference.draws import Draws
from polyppl.spec import Dataset, Model


def _dataset(arrays: dict[str, tuple[tuple[str, ...], np.ndarray]], coords: dict) -> xr.Dataset:
    coords = dict(coords)
    variables = {}
    for name, (dims, values) in arrays.items():
        distinct = _distinct_dims(dims)
        for dim, renamed in zip(dims, distinct):
            if renamed != dim and dim in coords:
                coords.setdefault(renamed, coords[dim])
        variables[name] = (distinct, values)
    return xr.Dataset(variables, coords=coords)


def _distinct_dims(dims: tuple[str, ...]) -> tuple[str, ...]:
    """A square matrix's dims (``("K", "K")``, as Stan sizes ``array[K] simplex[K]``) made
    distinct for xarray, which takes each dim once: the second is ``K__2``, with K's labels."""
    out: list[str] = []
    for i, dim in enumerate(dims):
        count = dims[:i].count(dim)
        out.append(dim if count == 0 else f"{dim}__{count + 1}")
    return tuple(out)


# The saved layout's version: raised whenever what a saved fit holds, or how it is read,
# changes. 2: ArviZ 1 (DataTree); files without it were written by ArviZ 0.x.
FORMAT = 2


class StaleResult(UserError):
    """A saved fit written in another layout: never read as a result (a study runs it again;
    reading such a folder's report is refused in one line)."""


def to_inference_data(model: Model, dataset: Dataset, draws: Draws, posterior_arrays: dict[str, np.ndarray],
                      attrs: dict[str, Any]) -> xr.DataTree:
    """``posterior_arrays``: the draws' posterior completed with what is computed after
    sampling (``polyppl.inference.posterior.complete``). An approximation's raw draws' log
    densities (for PSIS) go to a group of their own, ``approximation``, over (path, q_draw)."""
    label_coords = {d: list(dataset.coords[d]) for d in model.dims}
    first = next(iter(posterior_arrays.values()))
    chains, n_draws = first.shape[:2]
    chain_coords = {"chain": np.arange(chains), "draw": np.arange(n_draws)}
    posterior = _dataset(
        {name: (("chain", "draw", *getattr(model[name], "dims", ())), np.asarray(posterior_arrays[name], dtype=float))
         for name in model.output_names},
        {**chain_coords, **label_coords},
    )
    sample_stats = _dataset({k: (("chain", "draw"), np.asarray(v)) for k, v in draws.stats.items()}, chain_coords)
    observed = _dataset({n.name: (n.dims, np.asarray(dataset.values[n.name])) for n in model.observed}, label_coords)
    constant = _dataset(
        {n.name: (n.dims, np.asarray(dataset.values[n.name])) for n in model.data_nodes},
        label_coords,
    )
    t = draws.timings
    approximation = draws.approximation
    gradients = int(np.asarray(draws.stats["n_steps"]).sum()) if approximation is None else approximation.gradient_evaluations
    posterior.attrs.update(
        {
            **{k: v for k, v in attrs.items() if v is not None and not isinstance(v, dict)},
            **{k: json.dumps(v, sort_keys=True) for k, v in attrs.items() if isinstance(v, dict)},
            "engine": draws.engine,
            "compile_seconds": float(t.compile_seconds),
            "warmup_seconds": float(t.warmup_seconds),
            "sampling_seconds": float(t.sampling_seconds),
            "timing_split": t.split,
            "compile_cached": int(t.compile_cached),
            "warmup_gradient_evaluations": int(draws.warmup_gradient_evaluations),
            "polyppl_format": FORMAT,
        }
    )
    if gradients is not None:  # None: the library does not say (Pathfinder in pymc-extras)
        posterior.attrs["gradient_evaluations"] = int(gradients)
    groups = {}
    if approximation is not None:
        posterior.attrs["approximation"] = json.dumps(
            {"family": approximation.family, "iterations": int(approximation.iterations),
             "gradient_evaluations": approximation.gradient_evaluations, "converged": bool(approximation.converged),
             "notes": list(approximation.notes)}, sort_keys=True)
        groups["approximation"] = xr.Dataset(
            {"log_p": (("path", "q_draw"), np.asarray(approximation.log_p, dtype=float)),
             "log_q": (("path", "q_draw"), np.asarray(approximation.log_q, dtype=float))})
    sample_stats.attrs.update(posterior.attrs)
    return xr.DataTree.from_dict({"posterior": posterior, "sample_stats": sample_stats, "observed_data": observed,
                                  "constant_data": constant, **groups})


def load_result_libraries() -> None:
    """Pay now what the first DataTree and the first netCDF file cost once per process (xarray
    imports dask's array module to recognise duck arrays, h5netcdf imports h5py: 1-3 s on 2
    cores). A fit calls this before its turn to sample, so that the summary after sampling,
    which the next fit's turn waits for, holds only its own work."""
    import h5netcdf  # noqa: F401

    xr.Dataset({"x": (("chain", "draw"), np.zeros((1, 1)))}, coords={"chain": [0], "draw": [0]})


def run_attrs(idata: xr.DataTree) -> dict[str, Any]:
    """The run's attributes, with the JSON-encoded ones decoded."""
    out = {}
    for k, v in idata.posterior.attrs.items():
        if isinstance(v, str) and v[:1] == "{":
            try:
                v = json.loads(v)
            except json.JSONDecodeError:
                pass
        out[k] = v.item() if isinstance(v, np.generic) else v
    return out


def stem_path(stem: Path, suffix: str) -> Path:
    """``STEM.nc`` for a stem that may hold dots of its own (``Path.with_suffix`` would cut them)."""
    stem = Path(stem)
    return stem.parent / (stem.name + suffix)


def atomic_write(path: Path, write) -> None:
    """Write through a temporary file in the same folder, then rename: never half a file.

    The file gets the mode the umask gives a new file (``mkstemp``'s 0600 would hide shared
    reports), and it and its folder are flushed to disk around the rename, so that a crash
    of the machine leaves the old file or the new one, never an empty one."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.parent / f".{path.name}.{os.getpid()}-{secrets.token_hex(4)}.part"
    os.close(os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666))  # the umask applies
    try:
        write(tmp)
        _fsync(tmp)
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    _fsync(path.parent)


def _fsync(path: Path) -> None:
    descriptor = os.open(path, os.O_RDONLY)
    try:
        os.fsync(descriptor)
    finally:
        os.close(descriptor)


def save_netcdf(idata: xr.DataTree, path: Path) -> None:
    atomic_write(path, lambda tmp: idata.to_netcdf(str(tmp), engine="h5netcdf"))


def save_json(record: dict, path: Path) -> None:
    atomic_write(path, lambda tmp: tmp.write_text(json.dumps(record, indent=2, default=_json_default) + "\n"))


def load_netcdf(path: Path) -> xr.DataTree:
    """A saved fit, read whole into memory (the file is closed on return, so it can be
    replaced). Raises :class:`StaleResult` for a file of another layout."""
    with xr.open_datatree(str(path), engine="h5netcdf") as tree:
        if "posterior" not in tree.children or tree["posterior"].attrs.get("polyppl_format") != FORMAT:
            raise StaleResult(f"{path} was written by an earlier polyppl (another layout of saved fits)")
        return tree.load()


def _json_default(value):
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, np.ndarray):
        return value.tolist()
    raise TypeError(f"not JSON serialisable: {type(value).__name__}")

