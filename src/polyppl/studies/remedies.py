"""The remedies ladder: what polyppl tries by itself when a fit diverges or does not converge.

A study (``compare``, ``run``) hands the ladder the settings asked for and a function that
runs every backend at a rung; the ladder reads each rung's diagnostics and climbs, as a Stan
user would by hand:

1. ``target``: divergent transitions on any backend -> every backend again (so that the
   columns stay comparable) at target acceptance 0.95, then 0.99;
2. ``parametrization``: divergences left at 0.99 -> the model's other form, centered <->
   non-centered, where it has one (a built-in model's or a formula's; a user's model
   rewritten, ``Problem.counterpart``; a Stan program rewritten with or without
   ``<offset, multiplier>``, ``stan_program.reparametrize``), at that target;
   then (``target`` again) divergences still left -> target 0.999, on whichever form had
   fewer flags: a smaller step size still, for the rare divergence left at 0.99
   (examples/varying_intercepts.py, seeds 1 to 4: at 0.99 one backend diverged once in 3
   of the 4, its centered form was worse; at 0.999 none of the three: docs/remedies.md);
3. ``draws``: R-hat above 1.01 or bulk or tail ESS below 100 per chain, and no divergences ->
   longer chains: the draws per chain that the ESS per draw observed needs (with a margin),
   at most ``DRAWS_CAP_FACTOR`` times the draws asked.

The ladder stops at the first clean rung (a clean first run costs nothing more) or when no
rung is left; then the last rung is *unrescued*, and the study says which rung and which
backend failed it. A rung's fits go to files of their own (a suffix such as ``-target99``
on the stem), so every finished rung stays on disk and a rerun reuses it by its content hash.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING, Any, Callable, Generic, Mapping, Sequence, TypeVar

from polyppl.errors import unknown
from polyppl.inference.methods import SamplerSettings
from polyppl.models.base import Problem

if TYPE_CHECKING:
    from polyppl.execution.record import FitRecord

# The diagnostics (ArviZ) are imported where a rung's fits are read: the CLI's --help reads
# REMEDIES and should not wait for them.

#: The rungs in the order they are climbed, with what each does (``--help`` prints these).
REMEDIES = {
    "target": "divergences: every backend again at target acceptance 0.95, then 0.99 (and 0.999 after the other "
              "parametrization, on the form with fewer flags)",
    "parametrization": "divergences left at 0.99: the model's other form, centered <-> non-centered "
                       "(built-in models, formulas, a user's model rewritten, a Stan program's <offset, multiplier>)",
    "draws": "R-hat or bulk/tail ESS flagged, without divergences: longer chains, draws from the ESS per draw "
             "observed (at most 10 x the draws asked)",
}
TARGETS = (0.95, 0.99)
#: The target of the last rung for divergences, climbed after the other parametrization (or
#: where there is none): its smaller steps cost more gradients per draw than 0.99's, so it
#: comes after the rungs that cost no more.
LAST_TARGET = 0.999
#: Longer chains aim at this many times the ESS threshold: an ESS estimate from a short run
#: scatters by some tens of percent, and a rung that lands just under the line is wasted.
DRAWS_MARGIN = 1.5
#: Longer chains stop at this many times the draws asked (a model whose ESS per draw is
#: that poor needs another parametrization more than draws).
DRAWS_CAP_FACTOR = 10
#: Draws are rounded up to a multiple of this.
DRAWS_STEP = 100
#: Rungs of longer chains at most: the second one's draws come from a run long enough to
#: estimate the ESS per draw well.
DRAWS_RUNGS_MAX = 2

T = TypeVar("T")


def check_remedies(names: Sequence[str] | None) -> tuple[str, ...]:
    """The rungs to climb, in ladder order: ``None`` is all of them, ``("none",)`` none."""
    if names is None:
        return tuple(REMEDIES)
    names = tuple(dict.fromkeys(n.strip() for n in names if n.strip()))
    if names == ("none",):
        return ()
    for name in names:
        if name not in REMEDIES:
            raise unknown("remedy", name, ("none", *REMEDIES))
    return tuple(n for n in REMEDIES if n in names)


# --------------------------------------------------------------------------- rungs


@dataclass(frozen=True)
class Rung:
    """What runs at one rung: the problem (its parametrization) and the sampler settings.
    ``asked`` is the first rung's, to name how this one differs from it."""

    problem: Problem
    settings: SamplerSettings
    asked: SamplerSettings
    asked_parametrization: str | None
    #: How many rungs of longer chains led here (at most ``DRAWS_RUNGS_MAX``).
    draws_rungs: int = 0
    #: Whether the other parametrization was climbed already (the rung may be back on the
    #: form asked for, at ``LAST_TARGET``).
    parametrization_tried: bool = False

    @classmethod
    def first(cls, problem: Problem, settings: SamplerSettings) -> Rung:
        settings = settings.for_model(problem.model)
        return cls(problem, settings, settings, problem.parametrization)

    @property
    def is_first(self) -> bool:
        return self.settings == self.asked and self.problem.parametrization == self.asked_parametrization

    @property
    def suffix(self) -> str:
        """What a rung adds to its fits' file stems (``-noncentered-target99-draws2400``);
        empty for the first rung, whose files are those of a run without remedies."""
        parts = []
        if self.problem.parametrization != self.asked_parametrization:
            parts.append(str(self.problem.parametrization))
        if self.settings.target_accept != self.asked.target_accept:
            parts.append(f"target{self.settings.target_accept:g}".replace("0.", ""))  # target95, target999
        if self.settings.draws != self.asked.draws:
            parts.append(f"draws{self.settings.draws}")
        return "".join(f"-{p}" for p in parts)

    def describe(self) -> str:
        """``at target 0.9``, ``at target 0.99, centered``, ``at target 0.9, 4 chains x 2400 draws``."""
        s = self.settings
        words = [f"at target {s.target_accept:g}"]
        if self.problem.parametrization != self.asked_parametrization:
            words.append(str(self.problem.parametrization).replace("non", "non-"))
        if s.draws != self.asked.draws:
            words.append(f"{s.chains} chains x {s.draws} draws")
        return ", ".join(words)


# --------------------------------------------------------------------------- findings


@dataclass(frozen=True)
class Findings:
    """What is wrong with one rung's fits, by backend: divergent transitions, and the
    convergence flags in words with their thresholds (``R-hat 1.0140 > 1.01``)."""

    divergences: Mapping[str, int]
    unconverged: Mapping[str, tuple[str, ...]]
    #: Each flagged backend's smallest ESS per draw (bulk or tail), for longer chains.
    ess_per_draw: Mapping[str, float] = field(default_factory=dict)

    @classmethod
    def of(cls, records: Mapping[str, FitRecord]) -> Findings:
        """The findings of finished NUTS fits (a failed fit is no rung's business)."""
        from polyppl.inference.diagnostics import convergence_details

        divergences, unconverged, per_draw = {}, {}, {}
        for label, record in records.items():
            d = record.diagnostics
            if not record.ok or d is None:
                continue
            chains, draws = record.settings["chains"], record.settings["draws"]
            if d.divergences:
                divergences[label] = d.divergences
            details = convergence_details(d.rhat_max, d.ess_bulk_min, d.ess_tail_min, chains)
            if details:
                unconverged[label] = tuple(details)
                per_draw[label] = min(d.ess_bulk_min, d.ess_tail_min) / (chains * draws)
        return cls(divergences, unconverged, per_draw)

    @property
    def clean(self) -> bool:
        return not self.divergences and not self.unconverged

    def flagged(self) -> list[str]:
        """The flagged backends, in the order their records came."""
        return list(dict.fromkeys([*self.divergences, *self.unconverged]))

    def text(self, brief: bool = False) -> str:
        """``pymc 10 divergent transitions, R-hat 1.0140 > 1.01; stan 2 divergent transitions``,
        or ``no divergences, converged``; ``brief``: each backend's first convergence flag only."""
        if self.clean:
            return "no divergences, converged"
        parts = []
        for label in self.flagged():
            words = []
            if label in self.divergences:
                n = self.divergences[label]
                words.append(f"{n} divergent transition{'s' if n != 1 else ''}")
            words += self.unconverged.get(label, ())[:1 if brief else None]
            parts.append(f"{label} {', '.join(words)}")
        return "; ".join(parts)


def draws_needed(findings: Findings, draws: int) -> int:
    """Draws per chain for which the worst ESS per draw observed reaches ``DRAWS_MARGIN``
    times the threshold, rounded up to ``DRAWS_STEP``; at least twice ``draws`` when it is
    R-hat alone that is flagged (the ESS would do, the chains have not mixed yet)."""
    from polyppl.inference.diagnostics import ESS_PER_CHAIN_MIN

    per_draw = min(findings.ess_per_draw.values(), default=math.inf)
    wanted = DRAWS_MARGIN * ESS_PER_CHAIN_MIN / per_draw if per_draw > 0 else math.inf
    wanted = max(wanted, 2 * draws)
    return math.inf if math.isinf(wanted) else DRAWS_STEP * math.ceil(wanted / DRAWS_STEP)


def next_rung(rung: Rung, findings: Findings, remedies: Sequence[str], best: Rung | None = None,
              ) -> tuple[Rung | None, str]:
    """The rung to climb after ``rung`` given its findings, or None, and why (in words, for
    the ladder's last line when there is none). ``best``: the rung with the fewest flags so
    far (``Ladder.chosen``), from which the last target is climbed; ``rung`` by default."""
    if findings.clean:
        return None, "clean"
    s = rung.settings
    if findings.divergences:
        higher = [t for t in TARGETS if t > s.target_accept]
        if "target" in remedies and higher:
            return replace(rung, settings=replace(s, target_accept=higher[0])), ""
        missing = ""
        if "parametrization" in remedies and not rung.parametrization_tried:
            other = rung.problem.counterpart()
            if other is not None:
                return replace(rung, problem=other, parametrization_tried=True), ""
            missing = f"{rung.problem.name} has no other parametrization to try; "
        base = best or rung
        if "target" in remedies and base.settings.target_accept < LAST_TARGET:
            return replace(base, settings=replace(base.settings, target_accept=LAST_TARGET),
                           parametrization_tried=True), ""
        return None, f"{missing}no remedy for divergences left"
    if "draws" not in remedies:
        needed = draws_needed(findings, s.draws)
        return None, "longer chains not asked for" + (f" (about {needed} draws per chain would do)"
                                                      if not math.isinf(needed) else "")
    cap = DRAWS_CAP_FACTOR * rung.asked.draws
    needed = draws_needed(findings, s.draws)
    if s.draws >= cap or rung.draws_rungs >= DRAWS_RUNGS_MAX:
        more = f"; the ESS per draw observed asks for about {needed} draws per chain" if not math.isinf(needed) else ""
        return None, (f"longer chains tried {rung.draws_rungs} times, up to {s.draws} draws per chain "
                      f"(the cap: {cap}){more}")
    return replace(rung, settings=replace(s, draws=min(needed, cap)), draws_rungs=rung.draws_rungs + 1), ""


# --------------------------------------------------------------------------- the ladder


@dataclass(frozen=True)
class Step(Generic[T]):
    """One rung climbed: what ran, why, what came of it."""

    rung: Rung
    result: T
    findings: Findings
    verdict: str
    #: Why the ladder climbed to this rung: the previous rung's findings (None for the first).
    reason: str | None
    backends: tuple[str, ...]


@dataclass(frozen=True)
class RemedyRecord:
    """A rung as saved in a study's JSON: ``{rung, reason, backends, verdict}`` and what was
    found there."""

    rung: str
    reason: str | None
    backends: tuple[str, ...]
    verdict: str
    findings: str
    #: The findings with each backend's first convergence flag only, for the one-line summary.
    brief: str
    parametrization: str | None
    settings: dict[str, Any]
    suffix: str

    def as_dict(self) -> dict[str, Any]:
        return {"rung": self.rung, "reason": self.reason, "backends": list(self.backends), "verdict": self.verdict,
                "findings": self.findings, "brief": self.brief, "parametrization": self.parametrization, "settings": self.settings,
                "file_suffix": self.suffix}

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> RemedyRecord:
        return cls(values["rung"], values["reason"], tuple(values["backends"]), values["verdict"], values["findings"],
                   values.get("brief", values["findings"]), values.get("parametrization"), values.get("settings") or {}, values.get("file_suffix", ""))


@dataclass(frozen=True)
class LadderSummary:
    """A ladder as a study keeps it: each rung's record, whether remedies were on, and, when
    the last rung is still flagged, why the ladder stopped there."""

    rungs: tuple[RemedyRecord, ...]
    enabled: bool
    stopped: str | None = None  # None when the last rung is clean
    #: The rung whose result is the study's (``Ladder.chosen``).
    chosen: int = -1

    @property
    def climbed(self) -> bool:
        return len(self.rungs) > 1

    @property
    def unrescued(self) -> bool:
        """Remedies were on and the last rung is still flagged."""
        return self.enabled and self.stopped is not None

    def line(self, final_verdict: str, again: str = "all backends ") -> str:
        """The ladder in one line, the first and last rungs with what was found there:
        ``at target 0.9: pymc 10 divergent transitions, R-hat 1.0140 > 1.01 -> at target 0.95
        -> all backends at target 0.99: no divergences, converged -> AGREE``."""
        first, *middle, last = self.rungs
        parts = [f"{first.rung}: {first.brief}", *(r.rung for r in middle), f"{again}{last.rung}: {last.brief}"]
        chosen = self.chosen % len(self.rungs)
        if chosen != len(self.rungs) - 1:
            parts.append(f"back to {self.rungs[chosen].rung}, the rung with the fewest flags")
        return " -> ".join(parts + [final_verdict.upper()])

    def to_json(self) -> dict[str, Any]:
        """A study JSON's keys: ``remedies`` (each rung: ``{rung, reason, backends, verdict}``
        and its findings), ``remedies_enabled``, and ``remedies_stopped`` (why the last rung,
        still flagged, is the last; null when it is clean)."""
        return {"remedies": [r.as_dict() for r in self.rungs], "remedies_enabled": self.enabled,
                "remedies_stopped": self.stopped, "remedies_chosen": self.chosen % len(self.rungs)}

    @classmethod
    def from_json(cls, saved: dict[str, Any]) -> LadderSummary | None:
        if not saved.get("remedies"):
            return None
        return cls(tuple(RemedyRecord.from_dict(r) for r in saved["remedies"]), saved.get("remedies_enabled", True),
                   saved.get("remedies_stopped"), saved.get("remedies_chosen", -1))


@dataclass
class Ladder(Generic[T]):
    steps: list[Step[T]]
    remedies: tuple[str, ...]
    #: Why the last rung is the last when it is still flagged; None when it is clean.
    stopped: str | None = None

    @property
    def chosen(self) -> int:
        """The rung whose result stands: the last when it is clean, else the one with the
        fewest backends unconverged, then the fewest divergences (the later on a tie): a
        rung that made things worse (the other parametrization, sometimes) does not."""
        return min(range(len(self.steps)), key=lambda i: (len(self.steps[i].findings.unconverged),
                                                          sum(self.steps[i].findings.divergences.values()), -i))

    @property
    def final(self) -> Step[T]:
        """The chosen rung's step (:attr:`chosen`)."""
        return self.steps[self.chosen]

    @property
    def last(self) -> Step[T]:
        return self.steps[-1]

    def summary(self) -> LadderSummary:
        return LadderSummary(tuple(RemedyRecord(
            s.rung.describe(), s.reason, s.backends, s.verdict, s.findings.text(), s.findings.text(brief=True),
            s.rung.problem.parametrization,
            s.rung.settings.as_dict(), s.rung.suffix) for s in self.steps), bool(self.remedies), self.stopped,
            self.chosen)


def off_note(rung: Rung, findings: Findings) -> str:
    """What the ladder would have tried, for a flagged run with remedies off."""
    following, _ = next_rung(rung, findings, tuple(REMEDIES))
    if following is None:
        return "remedies off (--remedies none)"
    if following.settings.draws != rung.settings.draws:
        return (f"remedies off (--remedies none); the ESS per draw observed asks for about "
                f"{following.settings.draws} draws per chain (--draws {following.settings.draws})")
    return f"remedies off (--remedies none); the ladder would try {following.describe()}"


def climb(problem: Problem, settings: SamplerSettings, attempt: Callable[[Rung], T],
          records: Callable[[T], Mapping[str, FitRecord]], verdict: Callable[[T], str],
          remedies: Sequence[str] | None = None, progress: Callable[[str], None] = lambda line: None) -> Ladder[T]:
    """Run ``attempt`` at the first rung (``settings`` as asked) and climb while a rung is
    flagged and ``remedies`` offer one more. ``records`` gives an attempt's NUTS records by
    backend, ``verdict`` its verdict (a word for the ladder's line); ``remedies``: the rungs
    to climb (:func:`check_remedies`; None is all)."""
    remedies = check_remedies(remedies)
    rung, reason = Rung.first(problem, settings), None
    steps: list[Step[T]] = []
    while True:
        result = attempt(rung)
        fits = records(result)
        findings = Findings.of(fits)
        steps.append(Step(rung, result, findings, verdict(result), reason, tuple(fits)))
        if not remedies:
            return Ladder(steps, remedies, None if findings.clean else off_note(rung, findings))
        following, why = next_rung(rung, findings, remedies, Ladder(steps, remedies).final.rung)
        if following is None:
            return Ladder(steps, remedies, None if findings.clean else why)
        reason = f"{rung.describe()}: {findings.text()}"
        progress(f"remedies: {reason} -> all backends {following.describe()}")
        rung = following

