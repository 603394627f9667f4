"""The README and docs/ say only what is true of this repository: every relative link and
every repository path they name exists, no path leads outside the repository, and every
`uv run polyppl ...` command line in them parses with the CLI's own parser (parsed, never
run). A renamed option or moved file fails here rather than in a new user's terminal."""

from __future__ import annotations

import json
import re
import shlex
from pathlib import Path

import pytest

from polyppl.cli import build_parser

ROOT = Path(__file__).resolve().parents[1]
PAGES = [ROOT / "README.md", ROOT / "CHANGELOG.md", *sorted((ROOT / "docs").glob("*.md"))]

#: Paths the pages name that are, on purpose, not this repository's: why each is there.
NOT_OURS = {
    "tests/glmer-1.R": "lme4's own test file, cited as the source of lme4's cbpp estimates",
    "../shared/posteriordb": "the posteriordb snapshot beside the checkout on the project's machines "
                             "(a user points --path at a posteriordb clone of their own)",
}
#: Pages whose paths are relative to another folder, as their first lines say.
PATH_BASE = {"docs/ARCHITECTURE.md": ROOT / "src" / "polyppl"}
#: Folders the commands write (not in a clone until a command has run).
OUTPUTS = ("polyppl-results", "polyppl-sbc", "polyppl-bench", "OUT", "DIR")

LINK = re.compile(r"!?\[[^\]]*\]\(([^)\s]+)\)")
FENCE = re.compile(r"^```[^\n]*\n(.*?)^```", re.S | re.M)
INLINE = re.compile(r"`([^`\n]+)`")
HEADING = re.compile(r"^#+ (.+)$", re.M)
TOP_LEVEL = {p.name for p in ROOT.iterdir() if not p.name.startswith(".")}
PATH_LIKE = re.compile(r"^(\.\./|\./)?[\w.-]+(/[\w.-]+)*/?$")


def page_id(page: Path) -> str:
    return str(page.relative_to(ROOT))


def slug(heading: str) -> str:
    """GitHub's anchor for a heading."""
    return re.sub(r"[^\w\- ]", "", heading.strip().lower()).replace(" ", "-")


def code_texts(text: str) -> list[str]:
    """The text of every fenced block and every inline code span."""
    fenced = FENCE.findall(text)
    return fenced + INLINE.findall(FENCE.sub("", text))


def named_paths(text: str) -> set[str]:
    """Tokens in code that name a file or folder of the repository: those that begin with
    one of its top-level entries, lead outside it (``../``), or contain a folder and end in
    a file extension (``studies/agreement.py``)."""
    found = set()
    for code in code_texts(text):
        for token in re.split(r"[\s,;()'\"=\[\]|]+", code):
            token = token.rstrip(".:")
            if token.endswith(".py:") or re.search(r"\.py:\w+$", token):
                token = token.rsplit(":", 1)[0]
            if "/" not in token or not PATH_LIKE.match(token) or token.startswith(OUTPUTS):
                continue
            first = token.split("/")[0]
            if first in TOP_LEVEL or first == ".." or re.search(r"/[\w.-]+\.\w{1,5}$", token):
                found.add(token)
    return found


@pytest.mark.parametrize("page", PAGES, ids=page_id)
def test_links_resolve(page):
    text = page.read_text()
    broken = []
    for target in LINK.findall(text):
        if re.match(r"^[a-z]+:", target):  # https:, mailto:
            continue
        path_text, _, anchor = target.partition("#")
        path = (page.parent / path_text).resolve() if path_text else page
        if not path.exists() or ROOT not in (path, *path.parents):
            broken.append(f"{target} (no such file in the repository)")
        elif anchor and path.suffix == ".md" and anchor not in {slug(h) for h in HEADING.findall(path.read_text())}:
            broken.append(f"{target} (no heading with that anchor)")
    assert not broken, f"{page_id(page)}: broken links: {broken}"


@pytest.mark.parametrize("page", PAGES, ids=page_id)
def test_named_paths_exist(page):
    missing = []
    base = PATH_BASE.get(page_id(page), ROOT)
    for token in sorted(named_paths(page.read_text())):
        if token in NOT_OURS:
            continue
        path = (base / token).resolve()
        if base is not ROOT and not path.exists():
            path = (ROOT / token).resolve()
        if ROOT not in (path, *path.parents):
            missing.append(f"{token} (outside the repository)")
        elif not path.exists():
            missing.append(token)
    assert not missing, f"{page_id(page)} names paths that do not exist: {missing}"


def command_lines(text: str) -> list[str]:
    """Every ``uv run polyppl ...`` line in code, continuation lines joined."""
    lines = []
    for code in code_texts(text):
        for line in code.replace("\\\n", " ").splitlines():
            line = line.strip().removeprefix("$ ")
            if line.startswith("uv run polyppl"):
                lines.append(line)
    return lines


def is_synopsis(tokens: list[str]) -> bool:
    """A usage line with optional parts (``[--quick | --full]``) or elisions (``...``)."""
    return any(t.startswith(("[", "{")) or "..." in t or t.endswith("]") for t in tokens)


def test_commands_parse():
    parser = build_parser()
    parsed, failures = 0, []
    for page in PAGES:
        for line in command_lines(page.read_text()):
            tokens = shlex.split(line, comments=True)
            if is_synopsis(tokens):
                continue
            try:
                parser.parse_args(tokens[3:])
            except SystemExit as exc:
                if exc.code != 0:
                    failures.append(f"{page_id(page)}: {line}")
            parsed += 1
    assert not failures, "commands that do not parse:\n" + "\n".join(failures)
    # The README alone shows more than a dozen; fewer means the extraction broke, not the docs.
    assert parsed >= 20, parsed


def test_checks_catch_what_they_claim():
    """The extraction finds the wrong paths this test exists for, and a bad command fails."""
    text = "see `studies/agreement.py`, `results/latest.md` and `../shared/seed/`; run `uv run polyppl compare x --family-alpha 0.1`"
    assert {"studies/agreement.py", "results/latest.md", "../shared/seed/"} <= named_paths(text)
    assert not any((ROOT / t).exists() for t in ("studies/agreement.py", "results/latest.md"))
    (line,) = command_lines(text)
    with pytest.raises(SystemExit):
        build_parser().parse_args(shlex.split(line)[3:])


# --------------------------------------------------------------------------- selftest's numbers

#: Committed ``polyppl selftest`` outputs: each ``NAME.json`` with its ``NAME.md`` beside it.
SELFTEST_FILES = ROOT / "docs" / "selftest"
#: A link to a claim of a committed selftest output: ``docs/selftest/full.md#agreement-power``.
SELFTEST_LINK = re.compile(r"\]\(((?:\.\./|\./)?(?:docs/)?selftest/([\w.-]+)\.(?:md|json))#([\w-]+)\)")
#: What a page quotes from a claim: a count ("3 of 120") or a percentage ("2.5%").
QUOTED_NUMBER = re.compile(r"\b\d+ of \d+\b|\d+(?:\.\d+)?%")


def selftest_outputs() -> dict[str, dict]:
    return {path.stem: json.loads(path.read_text()) for path in sorted(SELFTEST_FILES.glob("*.json"))}


def claim_numbers(claim: dict) -> set[str]:
    """Every count and percentage a page may quote from one claim, written as the outputs write them."""
    from polyppl.render.selftest_report import percent

    numbers = {percent(claim["stated"]), percent(claim["level"])}
    if claim["kind"] == "rate" and claim["trials"]:
        numbers |= {f"{claim['events']} of {claim['trials']}", percent(claim["rate"]), *map(percent, claim["interval"])}
    return numbers


def misquoted_selftest_numbers(text: str, outputs: dict[str, dict]) -> list[str]:
    """In each paragraph that links a claim of a committed selftest output, every count and
    percentage must be one that a linked claim has (its counts, rate, interval or stated
    rate, written as the files write them); a link to a file or claim that does not exist
    is wrong too."""
    wrong = []
    for paragraph in re.split(r"\n\s*\n", text):
        links = SELFTEST_LINK.findall(paragraph)
        if not links:
            continue
        allowed: set[str] = set()
        for _, name, claim_id in links:
            claims = {c["id"]: c for c in outputs.get(name, {}).get("claims", [])}
            if claim_id not in claims:
                wrong.append(f"selftest/{name}#{claim_id}: no such committed output or claim")
                continue
            allowed |= claim_numbers(claims[claim_id])
        for number in QUOTED_NUMBER.findall(SELFTEST_LINK.sub("]()", paragraph)):
            if number not in allowed:
                wrong.append(f"{number!r} beside a link to {', '.join(f'{n}#{c}' for _, n, c in links)} "
                             f"(the file says: {', '.join(sorted(allowed))})")
    return wrong


@pytest.mark.parametrize("page", PAGES, ids=page_id)
def test_numbers_quoted_from_selftest_match_their_file(page):
    """The README's statistical numbers come from ``polyppl selftest`` output files committed
    under docs/selftest/ (issue #30): a page that quotes one links the claim it comes from,
    and every number beside the link must be that file's."""
    wrong = misquoted_selftest_numbers(page.read_text(), selftest_outputs())
    assert not wrong, f"{page_id(page)}: {wrong}"


def test_committed_selftest_markdown_is_its_json_rendered():
    """Each committed selftest Markdown file is what its JSON renders to: the two cannot drift."""
    from polyppl.render.selftest_report import selftest_markdown

    outputs = selftest_outputs()
    assert outputs, "no committed selftest output under docs/selftest/"
    for name, data in outputs.items():
        assert (SELFTEST_FILES / f"{name}.md").read_text() == selftest_markdown(data), name


def test_selftest_quote_check_catches_a_wrong_number():
    claim = {"id": "agreement-power", "kind": "rate", "stated": 0.2, "level": 2.5e-4, "events": 3, "trials": 110,
             "rate": 3 / 110, "interval": [0.00566, 0.0776]}
    outputs = {"full": {"claims": [claim]}}
    right = "Comparisons missed the skew in 3 of 110 ([docs/selftest/full.md](docs/selftest/full.md#agreement-power)), 2.73%."
    assert misquoted_selftest_numbers(right, outputs) == []
    assert misquoted_selftest_numbers(right.replace("3 of 110", "0 of 110"), outputs)
    assert misquoted_selftest_numbers(right.replace("2.73%", "2.7%"), outputs)
    assert misquoted_selftest_numbers(right.replace("#agreement-power", "#agreement-powr"), outputs)
