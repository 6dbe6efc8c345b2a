"""Write docs/cli.md from the commands' own --help, so the reference never drifts.

    python scripts/gen_cli_docs.py           # rewrite docs/cli.md
    python scripts/gen_cli_docs.py --check   # exit 1 if docs/cli.md is stale (a test runs this)
"""

from __future__ import annotations

import sys
from pathlib import Path

import click
from click.testing import CliRunner

from blipcap.cli import main

DOC = Path(__file__).resolve().parent.parent / "docs" / "cli.md"


def help_text(args: list[str]) -> str:
    result = CliRunner().invoke(main, [*args, "--help"], prog_name="blipcap", terminal_width=100)
    if result.exit_code != 0:
        raise SystemExit(f"blipcap {' '.join(args)} --help failed:\n{result.output}")
    return result.output.rstrip()


def commands(group: click.Group, prefix: list[str]) -> list[list[str]]:
    ctx = click.Context(group)
    out = []
    for name in group.list_commands(ctx):
        cmd = group.get_command(ctx, name)
        out.append([*prefix, name])
        if isinstance(cmd, click.Group):
            out.extend(commands(cmd, [*prefix, name]))
    return out


def render() -> str:
    parts = [
        "# Command-line reference",
        "",
        "Generated from `blipcap ... --help` by `scripts/gen_cli_docs.py`; do not edit by hand.",
        "",
        "## blipcap",
        "",
        "```text",
        help_text([]),
        "```",
    ]
    for args in commands(main, []):
        parts += ["", f"## blipcap {' '.join(args)}", "", "```text", help_text(args), "```"]
    return "\n".join(parts) + "\n"


if __name__ == "__main__":
    text = render()
    if "--check" in sys.argv:
        if not DOC.exists() or DOC.read_text() != text:
            print(f"{DOC} is out of date: run python scripts/gen_cli_docs.py", file=sys.stderr)
            sys.exit(1)
    else:
        DOC.write_text(text)
        print(f"wrote {DOC}", file=sys.stderr)
