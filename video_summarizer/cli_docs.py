"""Every command's options as Markdown (option, env, default, help), rendered from the click group itself.

The group is handed in (the package never imports the CLI), so docs/options.md can be written
from it and a test can keep that file equal to a fresh render: no hand-kept copy of --help.
"""
from __future__ import annotations

from typing import Iterator

import click


def render_options(group: click.Group) -> str:
    """One section per command (``run``, ``dataset push``, ...): its arguments, then a table of its options."""
    parts = ["# Options", "", "Generated from the commands' own definitions; `COMMAND --help` prints the same.", ""]
    ctx = click.Context(group, info_name=group.name)
    for words, command in _commands(group, ctx, ()):
        parts += _section(words, command)
    return "\n".join(parts).rstrip() + "\n"


def _commands(group: click.Group, ctx: click.Context,
              prefix: tuple[str, ...]) -> Iterator[tuple[tuple[str, ...], click.Command]]:
    for name in group.list_commands(ctx):
        command = group.get_command(ctx, name)
        if command is None or command.hidden:
            continue
        if isinstance(command, click.Group):
            yield from _commands(command, click.Context(command, parent=ctx, info_name=name), (*prefix, name))
        else:
            yield (*prefix, name), command


def _section(words: tuple[str, ...], command: click.Command) -> list[str]:
    usage = " ".join([*words, "[OPTIONS]", *(a.make_metavar(click.Context(command)) for a in _arguments(command))])
    lines = [f"## `{' '.join(words)}`", "", f"`{usage}`", "", _cell(command.short_help or command.help or ""), ""]
    for arg in _arguments(command):
        env = f" (env `{arg.envvar}`)" if arg.envvar else ""
        lines.append(f"- `{arg.make_metavar(click.Context(command))}`{env}")
    if _arguments(command):
        lines.append("")
    lines += ["| option | env | default | what |", "| --- | --- | --- | --- |"]
    for param in command.params:
        if isinstance(param, click.Option) and not param.hidden and param.name not in ("help", "version"):
            lines.append(f"| {_names(param)} | {_env(param)} | {_default(param)} | {_cell(param.help or '')} |")
    return [*lines, ""]


def _arguments(command: click.Command) -> list[click.Argument]:
    return [p for p in command.params if isinstance(p, click.Argument)]


def _names(option: click.Option) -> str:
    return ", ".join(f"`{name}`" for name in (*option.opts, *option.secondary_opts))


def _env(option: click.Option) -> str:
    envvar = option.envvar
    if not envvar:
        return ""
    return ", ".join(f"`{e}`" for e in ([envvar] if isinstance(envvar, str) else envvar))


def _default(option: click.Option) -> str:
    if option.is_flag and not option.secondary_opts:
        return "off"
    if option.default is None or option.default == () or not option.show_default:
        return ""  # computed from other options: the help says how
    return f"`{option.default}`"


def _cell(text: str) -> str:
    return " ".join(text.split()).replace("|", "\\|")
