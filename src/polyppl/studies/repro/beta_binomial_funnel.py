"""beta-binomial-funnel: the seed's Beta-Binomial with its rates sampled jointly diverges on
every backend; integrated out (the 'marginal' form), it samples cleanly."""

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

#: The seed scenarios where the joint form diverges most (few variants; one with 10 trials).
SCENARIOS = ("two-variants", "small-a")
#: What a user gets from `polyppl run`: the funnel's divergences are a few per thousand
#: draws, so runs this long are needed to see them reliably.
CHAINS, DRAWS, TUNE = 4, 1000, 1000


def _funnel(backend: str, opts: RunOptions) -> BackendResult:
    settings = opts.settings(chains=CHAINS, draws=DRAWS, tune=TUNE)
    evidence, fix_evidence, measurements = [], [], {}
    joint_divergences, marginal_clean = 0, True
    for scenario in SCENARIOS:
        joint = run(*builtin("beta-binomial", "positive", scenario), backend, settings, opts)
        marginal = run(*builtin("beta-binomial", "marginal", scenario), backend, settings, opts)
        evidence.append(diagnostics_line(f"{scenario}, rates sampled with a and b", joint, ("rates[A]",)))
        fix_evidence.append(diagnostics_line(f"{scenario}, marginal form", marginal, ("rates[A]",)))
        measurements[scenario] = {"positive": measure(joint, ("rates[A]",)), "marginal": measure(marginal, ("rates[A]",))}
        joint_divergences += joint.diagnostics.divergences
        marginal_clean &= marginal.diagnostics.divergences == 0 and marginal.diagnostics.rhat_max < 1.01
    return BackendResult(
        backend=backend,
        outcome=REPRODUCED if joint_divergences > 0 else NOT_REPRODUCED,
        evidence=evidence,
        cause=(
            "With the rates sampled beside a and b, a large a + b pins every rate to a / (a + b): the rates' "
            "spread shrinks like 1 / sqrt(a + b), a funnel whose neck NUTS cannot enter with the step size it "
            "adapts in the mouth. The posterior of log(a + b) has a long tail (its density falls like "
            "exp(-v / 2)), so the chains keep visiting the neck. The rates' means are still right; the geometry "
            "is the problem, not the model."
        ),
        fix="integrate the rates out: successes ~ BetaBinomial(trials, a, b) with (a, b) sampled as log(a / b) "
        "and log(a + b) (the hyperprior's Jacobian included) and the rates drawn after sampling from their "
        "exact conditional Beta(a + y, b + n - y) (parametrization 'marginal', the default). The likelihood is "
        "evaluated in a form exact at any a + b: Stan's built-in beta_binomial loses precision there and lets "
        "the chains drift to a + b near 1e18",
        fix_evidence=fix_evidence,
        fix_works=marginal_clean,
        measurements={**measurements, "chains": CHAINS, "draws": DRAWS, "tune": TUNE},
        versions=versions(backend, opts),
    )


SCENARIO = Scenario(
    "beta-binomial-funnel",
    "The seed's Beta-Binomial with its rates sampled jointly: divergences from a funnel at large a + b",
    "The hierarchical Beta-Binomial as people write it by hand (a, b positive, rates ~ Beta(a, b) sampled with "
    "them), on the seed's two-variant and small-A data, 4 chains x 1000 + 1000 on every backend, against the "
    "marginal form with the rates integrated out and drawn afterwards.",
    (
        "the seed blog post: the hierarchical Beta-Binomial A/B test (BDA3 section 5.3's rat tumour model)",
        "Betancourt and Girolami (2013), Hamiltonian Monte Carlo for hierarchical models, arXiv:1312.0906",
    ),
    per_backend(_funnel),
)
