"""``compare --replications``: the agreement test repeated over sampler seeds on the grid.

The verdict's arithmetic is checked on hand-made ledgers (no fit); one real run of eight
schools on NumPyro and Stan checks the whole path: the ledger, the resume, the seeds, and
the false alarms among replications of backends that are right, at a stated rate."""

from __future__ import annotations

import json
from dataclasses import replace

import pytest
from scipy import stats

from polyppl.cli import main
from polyppl.execution.grid import IN_PROCESS, GridRun, forget_compiled
from polyppl.inference.diagnostics import RunDiagnostics
from polyppl.models import resolve
from polyppl.studies.agreement import FAMILY_ALPHA as FAMILY_ALPHA_OF_COMPARE
from polyppl.studies.replications import (
    ReplicationResult,
    REPLICATIONS_ALPHA, plan_replications, replication_seed, run_replications, summarize,
)
from stat_tolerance import FAMILY_ALPHA, allowed_count


def _grid(plan, verdicts) -> GridRun:
    entries = {}
    for task, verdict in zip(plan.tasks, verdicts):
        if verdict in ("error", "crashed"):
            entries[task.key] = {"status": verdict, "error": "boom"}
            continue
        flagged = [{"quantity": "mu", "backends": ["numpyro", "stan"], "statistic": "mean", "gap": 1.0,
                    "p_value": 1e-6}] if verdict == "disagree" else []
        # Each column's record as a replication's task returns it: no divergences, no flags.
        diagnostics = RunDiagnostics(rhat_max=1.0, ess_bulk_min=1000.0, ess_tail_min=1000.0, divergences=0,
                                     divergence_rate=0.0, tree_depth_saturation=0.0, ebfmi_min=1.0,
                                     gradient_evaluations=1000, flags=())
        records = {label: replace(base, diagnostics=diagnostics) for label, _, _, _, base in task.argument.columns}
        entries[task.key] = {"status": "ok", "result": ReplicationResult(verdict, 1, 72, tuple(flagged), records,
                                                                          dict.fromkeys(records, 0.0)).to_json()}
    return GridRun(entries, reused=0, ran=len(entries), wall_seconds=1.0, workers=1, where=IN_PROCESS)


# Hand-made ledgers: arithmetic, no chance.
@pytest.mark.false_alarm(0)
def test_verdict_is_a_binomial_test_of_the_disagreeing_replications(tmp_path):
    plan = plan_replications(resolve("eight-schools"), ["numpyro", "stan"], replications=10, out=tmp_path)
    three = summarize(plan, _grid(plan, ["disagree"] * 3 + ["agree"] * 6 + ["inconclusive"]))
    assert three.counts == {"agree": 6, "disagree": 3, "inconclusive": 1}
    assert three.p_value == pytest.approx(stats.binom.sf(2, 9, FAMILY_ALPHA_OF_COMPARE))
    assert three.p_value < REPLICATIONS_ALPHA and three.verdict == "disagree" and three.exit_code == 1
    assert three.flagged == [("mu", "numpyro vs stan", "mean", 3)]
    one = summarize(plan, _grid(plan, ["disagree"] + ["agree"] * 8 + ["crashed"]))
    assert one.verdict == "agree" and one.counts["crashed"] == 1  # 1 of 9 has probability 0.086 at 1%
    low, high = one.rate_interval()
    assert low == pytest.approx(stats.beta.ppf(0.025, 1, 9)) and high == pytest.approx(stats.beta.ppf(0.975, 2, 8))
    none = summarize(plan, _grid(plan, ["inconclusive"] * 9 + ["error"]))
    assert none.verdict == "inconclusive" and none.exit_code == 3 and none.rate_interval() is None


def test_cli_refuses_what_replications_cannot_do(tmp_path, capsys):
    out = ["--out", str(tmp_path)]
    assert main(["compare", "eight-schools", "--replications", "3", "--backends", "stan", *out]) == 2
    assert "at least two columns" in capsys.readouterr().err
    assert main(["compare", "eight-schools", "--replications", "3", "--methods", "nuts,advi", *out]) == 2
    assert "drop --methods nuts,advi" in capsys.readouterr().err
    assert main(["compare", "eight-schools", "--workers", "2", *out]) == 2
    assert "--replications" in capsys.readouterr().err
    assert main(["compare", "eight-schools", "--replications", "0", *out]) == 2
    assert not list(tmp_path.iterdir())  # nothing written


#: The right backends' replications compare at the test's own rate shared among its 6
#: replications, so that no disagreement at all is allowed: a harness that disagrees 20% of
#: the time passes with probability 0.8^6 = 0.26 (at 1% a comparison, allowing 2 of 6 as
#: before, it passed with probability 0.90).
RIGHT_REPLICATIONS = 6


@pytest.mark.false_alarm(FAMILY_ALPHA)
def test_replications_of_right_backends_resume_and_rarely_disagree(tmp_path):
    """Eight schools on NumPyro and Stan, 4 replications in this process, then 6: the first
    four are read from the ledger, not run again, with the same results. NumPyro and Stan
    sample the same posterior, so each replication disagrees with probability at most its
    comparison's family rate, FAMILY_ALPHA / 6: any disagreement of 6 has probability at
    most FAMILY_ALPHA."""
    forget_compiled()
    problem = resolve("eight-schools")
    family_alpha = FAMILY_ALPHA / RIGHT_REPLICATIONS
    first = run_replications(problem, ["numpyro", "stan"], replications=4, seed=3, out=tmp_path, scheduler=IN_PROCESS,
                             family_alpha=family_alpha)
    assert first.grid["replications_run"] == 4 and sum(first.counts.values()) == 4
    ledger = [json.loads(line) for line in first.ledger.read_text().splitlines()]
    assert sorted(e["key"]["simulation"] for e in ledger) == [0, 1, 2, 3]
    assert all(e["result"]["sampler_seed"] == replication_seed(3, e["key"]["simulation"]) for e in ledger)
    more = run_replications(problem, ["numpyro", "stan"], replications=RIGHT_REPLICATIONS, seed=3, out=tmp_path,
                            scheduler=IN_PROCESS, family_alpha=family_alpha)
    assert more.grid["replications_reused"] == 4 and more.grid["replications_run"] == 2
    assert len(more.ledger.read_text().splitlines()) == 6
    assert allowed_count(FAMILY_ALPHA, RIGHT_REPLICATIONS, family_alpha) == 0
    assert more.counts["disagree"] == 0 and more.verdict == "agree" and more.exit_code == 0, more.counts
    # Not vacuous: at the default 4 x 1000 draws the replications converge and are judged.
    assert more.counts["agree"] + more.counts["disagree"] >= 4, more.counts


@pytest.mark.power(9.4e-4)
def test_replications_of_a_wrong_backend_disagree_and_say_where(tmp_path, monkeypatch):
    """A backend whose compiler moves eight schools' mu by half a posterior sd
    (tests/skewed_backend.py) against Stan, 5 replications at 4 x 500 draws. The verdict is
    'disagree' from 2 disagreeing replications of 5 (P = 9.8e-4 under a 1% rate); a single
    comparison catches this shift 30 times in 30 (test_agreement.py), so power at least 0.88
    (95% bound) leaves at most 1 of 5 with probability 9.4e-4 <= 0.1%. mu is flagged most."""
    import skewed_backend
    from polyppl.backends import BACKENDS
    from polyppl.inference.methods import SamplerSettings

    monkeypatch.setitem(BACKENDS, "skewed", skewed_backend.BACKEND)
    forget_compiled()
    run = run_replications(resolve("eight-schools"), ["skewed", "stan"], replications=5, seed=1, out=tmp_path,
                           settings=SamplerSettings(draws=500, tune=500), scheduler=IN_PROCESS)
    assert run.verdict == "disagree" and run.exit_code == 1, run.counts
    assert run.flagged[0][:2] == ("mu", "skewed vs stan"), run.flagged[:3]
