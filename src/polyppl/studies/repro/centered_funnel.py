"""centered-funnel: centered hierarchical models diverge and bias the group scale upward."""

from __future__ import annotations

from polyppl.studies.repro.base import (
    NOT_REPRODUCED,
    REPRODUCED,
    BackendResult,
    RunOptions,
    Scenario,
    builtin,
    diagnostics_line,
    measure,
    per_backend,
    run,
    versions,
)


FUNNEL_CASES = (
    # (model, scenario, group-scale quantities)
    ("multilevel-logistic", "seed", ("sigma_a", "sigma_b")),
    ("eight-schools", "classic", ("tau",)),
)


def _funnel(backend: str, opts: RunOptions) -> BackendResult:
    settings = opts.settings(draws=max(opts.draws, 500), tune=max(opts.tune, 500))
    evidence, fix_evidence, measurements = [], [], {}
    reproduced, fixed = True, True
    for model_name, scenario, scales in FUNNEL_CASES:
        centered = run(*builtin(model_name, "centered", scenario), backend, settings, opts)
        noncentered = run(*builtin(model_name, "noncentered", scenario), backend, settings, opts)
        evidence.append(diagnostics_line(f"{model_name}, centered", centered, scales))
        fix_evidence.append(diagnostics_line(f"{model_name}, non-centered", noncentered, scales))
        for scale in scales:
            c, n = centered.summaries[scale], noncentered.summaries[scale]
            evidence.append(
                f"{model_name}: {scale} 5% quantile {c.q05:.3g} centered against {n.q05:.3g} non-centered"
            )
        measurements[model_name] = {"centered": measure(centered, scales), "noncentered": measure(noncentered, scales)}
        reproduced &= centered.diagnostics.divergences > noncentered.diagnostics.divergences
        fixed &= noncentered.diagnostics.divergence_rate < 0.01
    return BackendResult(
        backend=backend,
        outcome=REPRODUCED if reproduced else NOT_REPRODUCED,
        evidence=evidence,
        cause=(
            "In the centered form the group effects are drawn around mu with scale sigma; with few groups the data "
            "barely pin sigma down, and as sigma shrinks the group effects are squeezed together: a funnel whose "
            "neck needs a far smaller step size than its mouth. NUTS adapts to the mouth, diverges in the neck and "
            "never samples it, so small values of the group scale are under-represented and its posterior is biased "
            "upward."
        ),
        fix="non-center: effect = mu + sigma * z with z ~ Normal(0, 1) (parametrization 'noncentered'), which "
        "removes the dependence between the scale and the sampled variables",
        fix_evidence=fix_evidence,
        fix_works=fixed,
        measurements={**measurements, "draws": settings.draws, "tune": settings.tune, "chains": settings.chains},
        versions=versions(backend, opts),
    )


SCENARIO = Scenario(
    "centered-funnel",
    "Centered hierarchical models: divergences and a biased group scale",
    "multilevel-logistic on the seed's two groups (Canada, China) and eight-schools, each centered and "
    "non-centered, on every backend: divergences, tree depth, ESS, and the posterior of the group scale.",
    (
        "https://github.com/pymc-devs/pymc/issues/1607 (hierarchical model does not converge; fixed by "
        "reparametrization)",
        "Betancourt and Girolami (2013), Hamiltonian Monte Carlo for hierarchical models, arXiv:1312.0906",
    ),
    per_backend(_funnel),
)
