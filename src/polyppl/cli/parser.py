"""The argument parser every subcommand uses: one-line errors that point to ``--help``, a
"did you mean" for near misses, and help that shows each option's default."""

from __future__ import annotations

import argparse
import re
from typing import NoReturn, Sequence

from polyppl.errors import did_you_mean

#: Spellings a user may reach for (earlier versions' options, other tools' words), answered
#: with polyppl's one name for the thing rather than accepted.
RENAMED = {
    "--family-alpha": "--alpha",
    "--output": "--report",
    "--model": "the model as the first argument, e.g. `polyppl bench beta-binomial`",
    "--seeds": "--seed-count",
    "--warmup": "--tune",
    "--warm-up": "--tune",
}

_INVALID_CHOICE = re.compile(r"invalid choice: '([^']*)' \(choose from (.*)\)$")


class HelpFormatter(argparse.HelpFormatter):
    """Each option's default after its help, unless the help already states it or there is
    none to state (no value, a flag, a list to be filled)."""

    def _get_help_string(self, action: argparse.Action) -> str:
        text = action.help or ""
        default = action.default
        if ("default" in text or not action.option_strings or default in (None, False, [], argparse.SUPPRESS)
                or isinstance(action, (argparse._HelpAction, argparse._VersionAction))):
            return text
        shown = ",".join(map(str, default)) if isinstance(default, (list, tuple)) else default
        return f"{text} (default: {shown})" if text else f"default: {shown}"


class Parser(argparse.ArgumentParser):
    """An ``ArgumentParser`` whose errors are one line: what is wrong, a suggestion where one
    is close, and where the help is; exit code 2."""

    def __init__(self, *args, **kwargs) -> None:
        kwargs.setdefault("formatter_class", HelpFormatter)
        super().__init__(*args, **kwargs)

    def error(self, message: str) -> NoReturn:
        match = _INVALID_CHOICE.search(message)
        if match:
            value, choices = match.group(1), re.findall(r"'([^']*)'", match.group(2))
            message = f"{message[:match.start()]}invalid choice {value!r}{did_you_mean(value, choices)}; " \
                      f"expected one of: {', '.join(choices)}"
        self.exit(2, f"{self.prog}: error: {message} (see {self.prog} --help)\n")

    def parse_args(self, args: Sequence[str] | None = None, namespace: argparse.Namespace | None = None):
        """As argparse's, but an unknown option is reported by the subcommand it was given
        to, with the option it was probably meant to be."""
        parsed, extras = self.parse_known_args(args, namespace)
        if extras:
            parser = self._command_parser(parsed)
            parser.error(f"unrecognized arguments: {' '.join(extras)}{option_hint(extras, parser)}")
        return parsed

    def _command_parser(self, parsed: argparse.Namespace) -> argparse.ArgumentParser:
        for action in self._actions:
            if isinstance(action, argparse._SubParsersAction):
                return action.choices.get(getattr(parsed, action.dest, None), self)
        return self


def option_hint(extras: Sequence[str], parser: argparse.ArgumentParser) -> str:
    """``; --famly-alpha is now --alpha`` or `` (did you mean '--seed'?)`` for the first
    unknown option that has one."""
    known = [s for a in parser._actions if a.help is not argparse.SUPPRESS for s in a.option_strings]
    for extra in extras:
        option = extra.split("=", 1)[0]
        if not option.startswith("--"):
            continue
        renamed = RENAMED.get(option)
        if renamed is not None and (renamed in known or not renamed.startswith("--")):
            return f"; use {renamed}"
        hint = did_you_mean(option, known)
        if hint:
            return hint
    return ""
