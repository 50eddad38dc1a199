"""mkdocs hook: replace ``<!-- cli-help -->`` with the ``--help`` of every command.

Generated from the click commands themselves, so the reference cannot drift from the CLI.
"""

from __future__ import annotations

import click


def _help(command: click.Command, path: list[str]) -> str:
    with click.Context(command, info_name=" ".join(path)) as ctx:
        return command.get_help(ctx)


def on_page_markdown(markdown: str, **_: object) -> str:
    if "<!-- cli-help -->" not in markdown:
        return markdown
    from ngff_writer.cli import cli

    parts = ["```text\n" + _help(cli, ["ngff-writer"]) + "\n```\n"]
    for name in sorted(cli.commands):
        command = cli.commands[name]
        parts.append(f"## `ngff-writer {name}`\n\n```text\n{_help(command, ['ngff-writer', name])}\n```\n")
    return markdown.replace("<!-- cli-help -->", "\n".join(parts))
