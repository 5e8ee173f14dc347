"""A click group whose first word, when it names no command, goes to the default command (as simonw/llm's).

It also turns the flags that were modes before the commands (``--search TEXT``, ``--send-outbox``,
...) into their commands, saying once which command replaces the flag, so old command lines and
cron entries keep working for now. ``click-default-group`` is not used: it has seen no release
since 2023 and has no such rewriting.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable, Mapping

import click

_TRUE = ("1", "true", "t", "yes", "y", "on")  # what click takes as true for a flag's variable


@dataclass(frozen=True)
class Legacy:
    """A flag that was a mode: the command that replaces it, whether it takes a value, its variable."""

    command: tuple[str, ...]
    takes_value: bool
    envvar: str
    metavar: str = ""


# In the order the single command chose its mode: the first found wins, as it did.
LEGACY = {
    "--send-outbox": Legacy(("outbox", "send"), False, "SUMMARIZER_SEND_OUTBOX"),
    "--ask": Legacy(("ask",), True, "SUMMARIZER_ASK", "QUESTION"),
    "--search": Legacy(("search",), True, "SUMMARIZER_SEARCH", "TEXT"),
    "--dataset-push": Legacy(("dataset", "push"), True, "SUMMARIZER_DATASET_PUSH", "NAME"),
    "--experiment": Legacy(("experiment",), True, "SUMMARIZER_EXPERIMENT", "RUN"),
}


def redirect_legacy(args: list[str], legacy: Mapping[str, Legacy], environ: Mapping[str, str],
                    say: Callable[[str], None], prog: str = "real_time_summarizer.py") -> list[str]:
    """``--search TEXT rest`` -> ``search rest -- TEXT`` (also ``--search=TEXT``, and the variable when no
    command is named); says once which command replaces the flag. Other arguments are left as they are."""
    for flag, old in legacy.items():
        found = _take(args, flag, old.takes_value)
        if found is not None:
            rest, value = found
            say(_notice(flag, old, prog))
            return [*old.command, *rest, *(["--", value] if old.takes_value else [])]
    if args and (not args[0].startswith("-") or args[0] in ("-h", "--help", "--version")):
        return args  # a command is named (its own variables apply), or the group's help or version
    for flag, old in legacy.items():
        raw = environ.get(old.envvar)
        if raw and (old.takes_value or raw.strip().lower() in _TRUE):
            say(_notice(old.envvar, old, prog))
            return [*old.command, *args]  # the command's argument reads the same variable
    return args


def _take(args: list[str], flag: str, takes_value: bool) -> tuple[list[str], str] | None:
    """args without the flag (and its value), and the value; None when the flag is not there."""
    for n, arg in enumerate(args):
        if arg == "--":
            return None  # what follows is values, not options
        if arg == flag:
            if not takes_value:
                return args[:n] + args[n + 1:], ""
            if n + 1 < len(args):
                return args[:n] + args[n + 2:], args[n + 1]
            return None  # no value: left to the command, which says what is missing
        if takes_value and arg.startswith(flag + "="):
            return args[:n] + args[n + 1:], arg[len(flag) + 1:]
    return None


def _notice(what: str, old: Legacy, prog: str) -> str:
    usage = " ".join([*old.command, *([old.metavar] if old.metavar else [])])
    return f"{what} is now the command `{' '.join(old.command)}` ({prog} {usage}); the flag works for now."


class DefaultGroup(click.Group):
    """A group whose first word, when it names no command, goes to the default command."""

    def __init__(self, *args: Any, default: str, legacy: Mapping[str, Legacy] | None = None, **kw: Any) -> None:
        super().__init__(*args, **kw)
        self.default = default
        self.legacy = dict(legacy or {})

    def parse_args(self, ctx: click.Context, args: list[str]) -> list[str]:
        """Legacy flags made commands, then the default command put first when none is named."""
        import os

        args = redirect_legacy(list(args), self.legacy, os.environ, say=lambda line: click.echo(line, err=True),
                               prog=ctx.info_name or "real_time_summarizer.py")
        if not args or (args[0] not in self.commands and args[0] not in (*ctx.help_option_names, "--version")):
            args = [self.default, *args]  # no args: `run`, which says to give a --source (exit 2)
        return super().parse_args(ctx, args)

    def list_commands(self, ctx: click.Context) -> list[str]:
        """The default command first, then the others by name."""
        names = super().list_commands(ctx)
        return sorted(names, key=lambda name: (name != self.default, name))

    def format_commands(self, ctx: click.Context, formatter: click.HelpFormatter) -> None:
        """The command list, the default one marked."""
        rows = []
        for name in self.list_commands(ctx):
            command = self.get_command(ctx, name)
            if command is not None and not command.hidden:
                shown = f"{name} (default)" if name == self.default else name
                rows.append((shown, command.get_short_help_str(limit=formatter.width - 20)))
        if rows:
            with formatter.section("Commands"):
                formatter.write_dl(rows)
