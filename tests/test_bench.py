"""``polyppl bench``: the sweep's data, its growth exponents, and that an interrupted sweep
resumes where it stopped (a real sweep of three small points on Stan)."""

import json

import numpy as np
import pytest

from polyppl.backends.stan import choose_engine
from polyppl.models import multilevel_logistic
from polyppl.models.base import SweepLine
from polyppl.render.bench import plot
from polyppl.studies import bench


def _row(backend, groups, rows_per_cell, form="counts", **measures):
    return {"key": f"{backend}|{groups}|{rows_per_cell}|{form}", "model": "multilevel-logistic", "backend": backend,
            "groups": groups, "rows_per_cell": rows_per_cell, "form": form, "status": "ok", **measures}


def test_growth_exponents_recover_known_slopes():
    # Exact power laws (no noise): the least-squares slope is the exponent to round-off.
    rows = [_row("stan", g, 1000, seconds_per_gradient=1e-6 * g**0.8, gradients_per_draw=5 * 1000**0.25) for g in (2, 8, 32, 128)]
    rows += [_row("stan", 8, n, seconds_per_gradient=1e-6 * 8**0.8, gradients_per_draw=5 * n**0.25) for n in (100, 10_000, 100_000)]
    rows += [_row("stan", 8, n, "rows", seconds_per_gradient=1e-8 * n) for n in (100, 1_000, 10_000)]
    rows.append({**_row("stan", 512, 1000, seconds_per_gradient=1.0), "status": "timeout"})  # ignored
    fits = {(e["size"], e["form"]): e for e in bench.growth_exponents(rows) if e["backend"] == "stan"}
    assert fits["groups", "counts"]["points"] == 4
    assert fits["groups", "counts"]["seconds_per_gradient"] == pytest.approx(0.8)
    assert fits["groups", "counts"]["gradients_per_draw"] == pytest.approx(0.0, abs=1e-12)
    assert fits["rows_per_cell", "counts"]["points"] == 4  # 8 groups: the groups line's point at 1000 too
    assert fits["rows_per_cell", "counts"]["gradients_per_draw"] == pytest.approx(0.25)
    assert fits["rows_per_cell", "rows"]["seconds_per_gradient"] == pytest.approx(1.0)
    assert ("groups", "rows") not in fits  # one group count only: no slope


def test_row_level_sweep_data_compress_to_the_count_data():
    counts = multilevel_logistic.synthetic({"groups": 5, "rows_per_cell": 37})
    rows = multilevel_logistic.synthetic({"groups": 5, "rows_per_cell": 37}, form="rows")
    assert len(rows.values["success"]) == 5 * 2 * 37
    compressed = multilevel_logistic.aggregate(rows)
    for name in ("group_idx", "treated", "trials", "successes"):
        np.testing.assert_array_equal(compressed.values[name], counts.values[name])


def test_journal_ignores_a_line_cut_short(tmp_path):
    journal = tmp_path / "points.jsonl"
    whole = {"key": "k1", "model": "beta-binomial", "backend": "stan", "variants": 4, "status": "ok"}
    journal.write_text(json.dumps(whole) + "\n" + json.dumps({**whole, "key": "k2"})[:-7])
    rows = bench.finished_points(journal)
    assert list(rows) == ["k1"]
    assert rows["k1"]["form"] == "counts"  # written before data forms existed


def test_interrupted_sweep_resumes(tmp_path, capsys):
    sweep = bench.Sweep("test", chains=1, draws=100, tune=100, timeout_seconds=600,
                        lines={"beta-binomial": tuple(SweepLine({"variants": k}) for k in (3, 6, 12))})
    todo = bench.points(sweep, ["beta-binomial"], ["stan"])
    stan = f"stan:{choose_engine()}"  # the engine is part of each point's key
    assert {p.backend for p in todo} == {stan} and all(f"|{stan}|" in p.key for p in todo)
    # An earlier run finished the first point and was cut off while writing the second.
    first = bench.run_point(todo[0], sweep)
    assert first["status"] == "ok", first
    journal = tmp_path / "points.jsonl"
    journal.write_text(json.dumps(first) + "\n" + json.dumps(first)[:20])

    rows = bench.run_sweep(tmp_path, sweep, ["beta-binomial"], ["stan"])
    plot(rows, tmp_path)

    progress = capsys.readouterr().err
    assert "[1/3]" not in progress and "[2/3]" in progress and "[3/3]" in progress
    assert [r["variants"] for r in rows] == [3, 6, 12] and all(r["status"] == "ok" for r in rows)
    assert rows[0] == {**first, "form": "counts"}  # kept, not re-measured
    for row in rows:
        assert row["gradients_per_draw"] >= 1 and row["seconds_per_gradient"] > 0 and row["peak_memory_mb"] > 0
    fits = json.loads((tmp_path / "scaling.json").read_text())["exponents"]
    assert [(f["size"], f["backend"], f["points"]) for f in fits] == [("variants", stan, 3)]
    assert (tmp_path / "scaling.csv").read_text().count("\n") == 4
    assert (tmp_path / "scaling-beta-binomial-variants.png").stat().st_size > 0

    # A second run has nothing left to do.
    lines = journal.read_text().count("\n")
    bench.run_sweep(tmp_path, sweep, ["beta-binomial"], ["stan"])
    assert journal.read_text().count("\n") == lines
    assert "polyppl bench: [" not in capsys.readouterr().err
