"""``polyppl compare``: one model on several backends; do they agree, did they converge, how fast?

Each backend runs in its own process (``polyppl.worker``) with a timeout. Every finished
run is on disk (``OUT/<model>-<scenario>-<backend>.nc`` and ``.json``) the moment it
ends; a second invocation with the same ``--out`` reuses finished runs with the same
settings (``force=True`` redoes them), so an interrupted comparison resumes. A backend
that raises, crashes or hangs is recorded with its status and error, and the others go on.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

from polyppl.backends import BACKENDS
from polyppl.jobs import Job, check_backends, resolve
from polyppl.settings import SamplerSettings

REFERENCES = ("exact",)
EXACT_DRAWS_PER_CHAIN = 25_000


@dataclass
class BackendOutcome:
    """What happened to one backend: ``ok``, ``error``, ``crashed`` or ``timeout``."""

    backend: str
    status: str
    record: dict[str, Any]
    netcdf: Path | None = None
    error: str | None = None
    reused: bool = False
    wall_seconds: float = 0.0

    @property
    def ok(self) -> bool:
        return self.status == "ok"


@dataclass
class Comparison:
    job: Job
    settings: SamplerSettings
    outcomes: dict[str, BackendOutcome]
    family_alpha: float
    floor: float
    tests: list = field(default_factory=list)  # agreement.PairTest
    verdict: str = "inconclusive"
    reasons: list[str] = field(default_factory=list)
    reference: str | None = None
    sources: dict = field(default_factory=dict)  # name -> {quantity: QuantityDraws}

    def disagreements(self) -> list:
        return [t for t in self.tests if not t.agree]

    def to_json(self) -> dict[str, Any]:
        from polyppl.agreement import worst

        w = worst(self.tests)
        return {
            "model": self.job.model,
            "scenario": self.job.scenario,
            "parametrization": self.job.parametrization,
            "settings": self.settings.as_dict(),
            "backends": {b: o.record for b, o in self.outcomes.items()},
            "reference": self.reference,
            "agreement": {
                "family_alpha": self.family_alpha,
                "practical_floor_sd": self.floor,
                "method": "z tests of means and 5%/95% quantiles from MCSEs, ESS-adjusted KS; Holm over all tests",
                "n_tests": len(self.tests),
                "pairs": [t.as_dict() for t in self.tests],
                "worst": w.as_dict() if w else None,
                "verdict": self.verdict,
                "reasons": self.reasons,
            },
        }


# --------------------------------------------------------------------------- running


def _settings_match(record: dict, settings: SamplerSettings, job: Job) -> bool:
    return (
        record.get("status") == "ok"
        and record.get("settings") == settings.as_dict()
        and record.get("parametrization") == job.parametrization
    )


def _run_in_process(
    job: Job,
    backend: str,
    settings: SamplerSettings,
    out: Path,
    data: Path | None,
    timeout: float | None,
    progress: Callable[[str], None],
) -> BackendOutcome:
    from polyppl.inference import save_json
    from polyppl.runner import run_path

    stem = run_path(out, job, backend)
    record_path = stem.with_suffix(".json")
    request = {
        "model": job.model,
        "scenario": None if data is not None else job.scenario,
        "scenario_label": job.scenario,
        "data": str(data) if data is not None else None,
        "parametrization": job.parametrization,
        "backend": backend,
        "settings": settings.as_dict(),
        "out": str(out),
        "record_path": str(record_path),
    }
    record_path.unlink(missing_ok=True)
    with tempfile.NamedTemporaryFile("w", suffix=".json", delete=False) as handle:
        json.dump(request, handle)
    log_path = Path(tempfile.mkstemp(prefix=f"polyppl-{backend}-", suffix=".log")[1])
    start = time.monotonic()
    with log_path.open("w") as log:
        # A new session, so that a timeout can kill the backend's own child processes too.
        process = subprocess.Popen(
            [sys.executable, "-m", "polyppl.worker", handle.name],
            stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
        )
        status, error = "ok", None
        try:
            next_note = 15.0
            while process.poll() is None:
                elapsed = time.monotonic() - start
                if timeout is not None and elapsed > timeout:
                    os.killpg(process.pid, signal.SIGKILL)
                    process.wait()
                    status, error = "timeout", f"no result after {timeout:.0f} s; the process was killed"
                    break
                if elapsed >= next_note:
                    progress(f"  {backend}: still running ({elapsed:.0f} s)")
                    next_note += 15.0
                time.sleep(0.2)
        except BaseException:  # Ctrl-C: stop the child; finished runs stay on disk
            os.killpg(process.pid, signal.SIGKILL)
            process.wait()
            raise
        finally:
            os.unlink(handle.name)
    wall = time.monotonic() - start
    output = log_path.read_text(errors="replace")[-3000:]
    log_path.unlink(missing_ok=True)
    if status == "ok" and process.returncode != 0:
        if process.returncode < 0:
            name = signal.Signals(-process.returncode).name
            status, error = "crashed", f"the process died with signal {name}"
        elif record_path.exists():
            failed = json.loads(record_path.read_text())
            return BackendOutcome(backend, failed.get("status", "error"), failed, None, failed.get("error"), wall_seconds=wall)
        else:
            status, error = "crashed", f"the process exited with code {process.returncode}"
    if status != "ok":
        record = {
            "model": job.model, "scenario": job.scenario, "backend": backend, "status": status,
            "seed": settings.seed, "settings": settings.as_dict(), "error": error, "output_tail": output,
        }
        save_json(record, record_path)
        return BackendOutcome(backend, status, record, None, error, wall_seconds=wall)
    record = json.loads(record_path.read_text())
    return BackendOutcome(backend, "ok", record, stem.with_suffix(".nc"), wall_seconds=wall)


def run_backends(
    job: Job,
    backends: list[str],
    settings: SamplerSettings,
    out: Path,
    data: Path | None = None,
    timeout: float | None = None,
    force: bool = False,
    progress: Callable[[str], None] = lambda line: None,
) -> dict[str, BackendOutcome]:
    from polyppl.runner import run_path

    outcomes = {}
    for i, backend in enumerate(backends, start=1):
        stem = run_path(out, job, backend)
        record_path, nc_path = stem.with_suffix(".json"), stem.with_suffix(".nc")
        if not force and record_path.exists() and nc_path.exists():
            record = json.loads(record_path.read_text())
            if _settings_match(record, settings, job):
                progress(f"[{i}/{len(backends)}] {backend}: reusing the finished run in {nc_path}")
                outcomes[backend] = BackendOutcome(backend, "ok", record, nc_path, reused=True)
                continue
        progress(f"[{i}/{len(backends)}] {backend}: sampling ({settings.chains} chains x {settings.tune} + {settings.draws})")
        outcome = _run_in_process(job, backend, settings, out, data, timeout, progress)
        detail = f"in {outcome.wall_seconds:.1f} s" if outcome.ok else f"- {outcome.error}"
        progress(f"[{i}/{len(backends)}] {backend}: {outcome.status} {detail}")
        outcomes[backend] = outcome
    return outcomes


# --------------------------------------------------------------------------- agreement


def quantities(posterior, builtin) -> dict:
    """Every scalar quantity of a posterior, and its decision probabilities, by name."""
    from polyppl.agreement import QuantityDraws
    from polyppl.diagnostics import flatten

    out = {k: QuantityDraws(v) for k, v in flatten(posterior).items()}
    for group, values in builtin.decisions(posterior).items():
        for label, indicator in values.items():
            out[f"{group}[{label}]"] = QuantityDraws(indicator, is_probability=True)
    return out


def exact_reference(job: Job, seed: int):
    """The exact posterior of the Beta-Binomial model as four chains of independent draws."""
    import numpy as np
    import xarray as xr

    from polyppl import exact

    chains = 4
    d = exact.draws(job.dataset, chains * EXACT_DRAWS_PER_CHAIN, seed=seed)
    variants = list(job.dataset.coords["variant"])
    shape = (chains, EXACT_DRAWS_PER_CHAIN)
    posterior = xr.Dataset(
        {
            "a": (("chain", "draw"), d["a"].reshape(shape)),
            "b": (("chain", "draw"), d["b"].reshape(shape)),
            "rates": (("chain", "draw", "variant"), d["rates"].reshape(*shape, len(variants))),
        },
        coords={"chain": np.arange(chains), "draw": np.arange(shape[1]), "variant": variants},
    )
    return posterior


def assess(comparison: Comparison) -> Comparison:
    """Agreement tests, Holm-adjusted, and the verdict."""
    from polyppl.agreement import holm, pair_tests
    from polyppl.diagnostics import convergence_failures
    from polyppl.inference import load_netcdf

    job = comparison.job
    sources: dict[str, dict] = {}
    unconverged = []
    for backend, outcome in comparison.outcomes.items():
        if not outcome.ok:
            comparison.reasons.append(f"{backend} did not finish ({outcome.status}: {outcome.error})")
            continue
        idata = load_netcdf(outcome.netcdf)
        sources[backend] = quantities(idata.posterior, job.builtin)
        failures = convergence_failures(outcome.record["diagnostics"]["flags"])
        if failures:
            unconverged.append(backend)
            comparison.reasons.append(
                f"{backend} did not converge ({', '.join(failures)}): "
                "comparing unconverged chains is no evidence either way"
            )
    pairs = [(a, b) for i, a in enumerate(sources) for b in list(sources)[i + 1 :]]
    if comparison.reference == "exact":
        sources["exact"] = quantities(exact_reference(job, comparison.settings.seed), job.builtin)
        pairs += [(b, "exact") for b in sources if b != "exact"]
    comparison.sources = sources
    comparison.tests = holm(pair_tests(sources, comparison.floor, pairs), comparison.family_alpha)
    bad = comparison.disagreements()
    converged_pairs = [t for t in bad if not set(t.backends) & set(unconverged)]
    if converged_pairs:
        comparison.verdict = "disagree"
        names = sorted({f"{t.quantity} ({' vs '.join(t.backends)})" for t in converged_pairs})
        comparison.reasons.insert(0, "disagreement beyond Monte Carlo error: " + "; ".join(names[:8]) + (" ..." if len(names) > 8 else ""))
    elif comparison.reasons:
        comparison.verdict = "inconclusive"
    elif len(sources) < 2:
        comparison.verdict = "inconclusive"
        comparison.reasons.append("fewer than two finished backends: nothing to compare")
    else:
        comparison.verdict = "agree"
    return comparison


def compare(
    model: str,
    backends: list[str] | None = None,
    *,
    scenario: str | None = None,
    data: str | Path | None = None,
    parametrization: str | None = None,
    settings: SamplerSettings | None = None,
    reference: str | None = None,
    out: str | Path = "polyppl-results",
    timeout: float | None = None,
    force: bool = False,
    family_alpha: float = 0.01,
    floor: float = 0.1,
    progress: Callable[[str], None] = lambda line: None,
) -> Comparison:
    """Run ``model`` on each backend (own process, optional timeout) and judge agreement.

    Each run is saved in ``out`` as it finishes, and the comparison itself (verdict and
    every test) as ``OUT/<model>-<scenario>-comparison.json``.
    """
    from polyppl.errors import UserError, unknown
    from polyppl.inference import save_json

    backends = check_backends(backends)
    if reference is not None and reference not in REFERENCES:
        raise unknown("reference", reference, REFERENCES)
    if not 0 < family_alpha < 1:
        raise UserError(f"family_alpha must lie strictly between 0 and 1, got {family_alpha!r}")
    if timeout is not None and timeout <= 0:
        raise UserError(f"timeout must be positive, got {timeout!r}")
    job = resolve(model, scenario, data, parametrization)
    if reference == "exact" and job.model != "beta-binomial":
        raise UserError(f"--reference exact is available for beta-binomial only, not {job.model}")
    settings = settings or SamplerSettings()
    out = Path(out)
    outcomes = run_backends(job, backends, settings, out, Path(data) if data else None, timeout, force, progress)
    comparison = assess(Comparison(job, settings, outcomes, family_alpha, floor, reference=reference))
    save_json(comparison.to_json(), comparison_path(out, job))
    return comparison


def comparison_path(out: str | Path, job: Job) -> Path:
    """Where a comparison's verdict and tests are saved: ``OUT/<model>-<scenario>-comparison.json``."""
    return Path(out) / f"{job.model}-{job.scenario}-comparison.json"


# --------------------------------------------------------------------------- tables


def speed_rows(comparison: Comparison) -> list[list]:
    rows = []
    for backend, outcome in comparison.outcomes.items():
        if not outcome.ok:
            rows.append([backend, outcome.status] + ["-"] * 8)
            continue
        r = outcome.record
        t, d = r["timings"], r["diagnostics"]
        per_gradient = d["seconds_per_gradient"]
        rows.append([
            backend, r["engine"], t["compile_seconds"], t["warmup_seconds"], t["sampling_seconds"],
            round(d["ess_bulk_min"]), round(d["ess_bulk_per_second"]), d["gradient_evaluations"],
            d["ess_bulk_per_1000_gradients"], per_gradient * 1e6 if per_gradient else None,
        ])
    return rows


def render(comparison: Comparison) -> str:
    from polyppl.diagnostics import FLAG_MEANINGS
    from polyppl.tables import plus_minus, table

    c = comparison
    names = list(c.outcomes) + ([c.reference] if c.reference else [])
    parts = [f"{c.job.model} ({c.job.parametrization}), data: {c.job.dataset.source}; "
             f"{c.settings.chains} chains x {c.settings.tune} warm-up + {c.settings.draws} draws, seed {c.settings.seed}"]

    # Decisions first: what the user came for.
    decision_keys = [q for q in next(iter(c.sources.values()), {}) if c.sources and _is_decision(c, q)]
    if decision_keys:
        rows = []
        for q in decision_keys:
            row = [q]
            for name in names:
                src = c.sources.get(name, {}).get(q)
                row.append(plus_minus(src.summary["mean"], src.summary["mcse_mean"]) if src else "-")
            rows.append(row)
        parts.append(table(["decision (estimate ± MCSE)", *names], rows, "Decisions"))

    rows = []
    for backend, o in c.outcomes.items():
        if not o.ok:
            rows.append([backend, o.status, "-", "-", "-", "-", "-", "-", (o.error or "")[:60]])
            continue
        d = o.record["diagnostics"]
        rows.append([backend, "ok", d["rhat_max"], round(d["ess_bulk_min"]), round(d["ess_tail_min"]), d["divergences"],
                     f"{100 * d['tree_depth_saturation']:.1f}%", d["ebfmi_min"], ", ".join(d["flags"]) or "none"])
    parts.append(table(["backend", "status", "R-hat max", "bulk ESS min", "tail ESS min", "divergences",
                        "max depth", "E-BFMI min", "flags"], rows, "Diagnostics (recomputed from the draws with ArviZ)"))
    flags = sorted({f for o in c.outcomes.values() if o.ok for f in o.record["diagnostics"]["flags"]})
    if flags:
        parts.append("\n".join(f"  {f}: {FLAG_MEANINGS[f]}" for f in flags))

    parts.append(table(
        ["backend", "engine", "compile s", "warm-up s", "sampling s", "bulk ESS min", "ESS/s",
         "gradients", "ESS/1000 grad", "µs/gradient"],
        speed_rows(c), "Speed (sampling time only in ESS/s; compile and warm-up apart)",
    ))

    shown = sorted(c.tests, key=lambda t: (t.agree, -abs(t.z)))[:10]
    rows = [[t.quantity, " vs ".join(t.backends), t.statistic, t.gap, t.z, t.p_value, "yes" if t.agree else "NO"] for t in shown]
    parts.append(table(["quantity", "pair", "statistic", "gap", "z", "p", "agree"], rows,
                       f"Agreement: {len(c.tests)} tests, worst first (family-wise false-alarm rate {c.family_alpha:.0%}, "
                       f"Holm; gaps under {c.floor} posterior sd ignored)"))
    verdict = f"VERDICT: {c.verdict.upper()}"
    if c.reasons:
        verdict += "\n" + "\n".join(f"  - {r}" for r in c.reasons)
    parts.append(verdict)
    return "\n\n".join(parts)


def _is_decision(comparison: Comparison, quantity: str) -> bool:
    source = next(iter(comparison.sources.values()))
    return source[quantity].is_probability


# --------------------------------------------------------------------------- CLI


def register(subparsers: argparse._SubParsersAction) -> None:
    from polyppl.cli import add_model_arguments, backend_list

    parser = subparsers.add_parser("compare", help="run one model on several backends and compare them")
    add_model_arguments(parser)
    parser.add_argument("--backends", type=backend_list, help=f"comma-separated subset of {','.join(BACKENDS)} (default: all)")
    parser.add_argument("--reference", choices=REFERENCES, help="exact: add the exact posterior (beta-binomial)")
    parser.add_argument("--timeout", type=float, help="seconds allowed per backend (default: none)")
    parser.add_argument("--force", action="store_true", help="redo runs already finished in --out")
    parser.add_argument("--family-alpha", type=float, default=0.01, help="family-wise false-alarm rate (default 0.01)")
    parser.add_argument("--report", type=Path, metavar="FILE.html",
                        help="HTML report to write (default OUT/<model>-<scenario>-report.html)")
    parser.set_defaults(func=cmd_compare)


def cmd_compare(args: argparse.Namespace) -> int:
    from polyppl.cli import progress, settings_from
    from polyppl.inference import save_json
    from polyppl.report import default_report_path, write_report

    comparison = compare(
        args.model, args.backends,
        scenario=args.scenario, data=args.data, parametrization=args.parametrization,
        settings=settings_from(args), reference=args.reference, out=args.out, timeout=args.timeout,
        force=args.force, family_alpha=args.family_alpha, progress=progress,
    )
    print(render(comparison))
    print(f"\nsaved: {comparison_path(args.out, comparison.job)} (and one .nc/.json per backend in {args.out})")
    if args.json:
        save_json(comparison.to_json(), args.json)
        print(f"saved: {args.json}")
    report = write_report(comparison, args.report or default_report_path(args.out, comparison))
    print(f"report: {report}")
    return 0 if all(o.ok for o in comparison.outcomes.values()) else 1

