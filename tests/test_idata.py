"""Saved fits in ArviZ 1's structure: a DataTree with ArviZ's group names that ArviZ reads,
and a file of another layout (an earlier polyppl's ArviZ 0.x InferenceData) never read as a
result."""

from __future__ import annotations

import arviz as az
import numpy as np
import pytest
import xarray as xr

from polyppl.inference.idata import FORMAT, StaleResult, load_netcdf, save_netcdf


def _tree(attrs: dict) -> xr.DataTree:
    draws = np.random.default_rng(0).standard_normal((2, 50))
    posterior = xr.Dataset({"mu": (("chain", "draw"), draws)}, coords={"chain": [0, 1], "draw": np.arange(50)},
                           attrs=attrs)
    stats = xr.Dataset({"diverging": (("chain", "draw"), np.zeros((2, 50), dtype=bool))})
    return xr.DataTree.from_dict({"posterior": posterior, "sample_stats": stats})


def test_a_saved_fit_is_read_back_by_polyppl_and_by_arviz(tmp_path):
    path = tmp_path / "fit.nc"
    save_netcdf(_tree({"polyppl_format": FORMAT}), path)
    tree = load_netcdf(path)
    assert set(tree.children) == {"posterior", "sample_stats"}
    assert float(az.from_netcdf(str(path)).posterior["mu"].mean()) == pytest.approx(float(tree.posterior["mu"].mean()))


@pytest.mark.parametrize("attrs", [{}, {"polyppl_format": FORMAT - 1}], ids=["arviz-0.x file", "older layout"])
def test_a_file_of_another_layout_is_refused(tmp_path, attrs):
    path = tmp_path / "fit.nc"
    save_netcdf(_tree(attrs), path)
    with pytest.raises(StaleResult, match="earlier polyppl"):
        load_netcdf(path)
