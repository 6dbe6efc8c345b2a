"""The ``blipcap`` command.

Each sub-command lives in its own module and is imported only when it runs,
so ``blipcap --help`` stays instant and a missing extra only affects the
command that needs it. Exit status (``common.EXIT_*``): 0 done, 1 some items
failed, 2 usage or configuration error, 3 the model could not be found or
loaded.
"""

from __future__ import annotations

import importlib

import click

from ..version import __version__
from .common import EXIT_USAGE, CommandError

# name -> "module:attribute" of a click command. Add a line to register a command.
COMMANDS: dict[str, str] = {
    "serve": "blipcap.cli.serve:serve",
    "social": "blipcap.cli.social:social",
    "caption": "blipcap.cli.caption:caption",
    "alt-text": "blipcap.cli.alttext:alt_text",
    "eval": "blipcap.cli.eval:eval_command",
    "bench": "blipcap.cli.bench:bench",
    "document": "blipcap.cli.document:document",
    "index": "blipcap.cli.index:index",
    "search": "blipcap.cli.index:search",
    "export": "blipcap.cli.export:export",
    "distill": "blipcap.cli.distill:distill",
}


class LazyGroup(click.Group):
    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted(COMMANDS)

    def get_command(self, ctx: click.Context, name: str) -> click.Command | None:
        target = COMMANDS.get(name)
        if target is None:
            return None
        module, _, attr = target.partition(":")
        try:
            return getattr(importlib.import_module(module), attr)
        except ImportError as exc:
            # Listing commands must not fail because one command's extra is missing.
            message = f"unavailable: {exc}"

            @click.command(name, help=message, short_help=message)
            def unavailable() -> None:
                raise CommandError(f"'blipcap {name}' is {message}", EXIT_USAGE)

            return unavailable


@click.group(
    cls=LazyGroup,
    context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100},
)
@click.version_option(__version__, prog_name="blipcap")
def main() -> None:
    """Turn images into useful text with BLIP.

    \b
    Examples:
      blipcap caption photos/ > captions.jsonl
      blipcap caption cat.jpg --preset coco --format plain
      blipcap caption "shots/*.png" --backend onnx --model ./blip-onnx

    The default model is Salesforce/blip-image-captioning-large, downloaded on
    first use into the Hugging Face cache. Set BLIPCAP_MODEL or pass --model to
    use another hub id, a local directory, or an exported ONNX directory.

    \b
    Exit status, for every command:
      0  done (alt-text --check: nothing to fix)
      1  some items failed (their records carry an "error"), a check found
         problems, golden captions drifted
      2  usage or configuration error: an option, a file, a missing extra or program
      3  the model could not be found, loaded or exported
    """
