"""``blipcap social``: alt text and post text that fit each platform."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import click

from .common import (
    cli_errors,
    is_utf8,
    model_options,
    open_captioner,
    open_output,
    show_progress,
    warn,
)

FORMATS = ("jsonl", "json", "plain")


@click.command(
    "social",
    epilog="""\b
Examples:
  blipcap social cat.jpg --platform mastodon
  blipcap social shots/ --platform x --platform bluesky --hashtags > posts.jsonl
  blipcap social cat.jpg --platform instagram --variants 3 --seed 1 --format json
  blipcap social cat.jpg --platform x --attribution --format plain

\b
Limits (alt text / post text), counted as each platform counts:
  x          1,000 / 280    posts: weighted (CJK and emoji 2, every URL 23)
  mastodon   1,500 / 500    graphemes; every http(s) URL counts 23 in posts
  bluesky    2,000 / 300    graphemes
  instagram  2,200 / 2,200  graphemes; at most 30 hashtags

Output: one JSON record per image and platform (alt_text, text, lengths,
limits, hashtags, ranked variants, provenance). Exit status: 0 when every
image was described, 1 when some failed (their records carry an "error"), 2
on usage or configuration errors, 3 when the model could not be found or
loaded.
""",
)
@click.argument("inputs", nargs=-1, required=True, metavar="IMAGE|DIR|GLOB|URL...")
@click.option(
    "--platform",
    "platforms",
    type=click.Choice(["x", "mastodon", "bluesky", "instagram"]),
    multiple=True,
    required=True,
    help="Target platform (repeatable).",
)
@click.option(
    "--variants",
    type=click.IntRange(1, 10),
    default=1,
    show_default=True,
    help="K > 1: sample K captions and rank them (best first).",
)
@click.option("--hashtags", is_flag=True, help="Add hashtags from the caption's content words.")
@click.option("--max-hashtags", type=click.IntRange(0, 30), default=5, show_default=True)
@click.option(
    "--attribution",
    is_flag=True,
    help='Add "Machine-generated description." to the alt text and the post.',
)
@click.option(
    "--attribution-text", default=None, metavar="TEXT", help="Attribution text of your own."
)
@click.option("--seed", type=int, default=None, help="Seed for --variants sampling.")
@click.option(
    "--preset",
    type=click.Choice(["default", "coco"]),
    default=None,
    help="Decoding preset for a single variant.",
)
@click.option(
    "--max-new-tokens",
    type=click.IntRange(min=1),
    default=None,
    help="Longest caption in tokens [default: the preset's].",
)
@model_options
@click.option("--format", "fmt", type=click.Choice(FORMATS), default="jsonl", show_default=True,
              help="jsonl: a record per line; json: one array; plain: the alt text per line.")  # fmt: skip
@click.option(
    "--output",
    "-o",
    type=click.Path(dir_okay=False, writable=True, path_type=Path),
    default=None,
    help="Write here instead of stdout (atomically).",
)
@cli_errors
def social(
    inputs, platforms, variants, hashtags, max_hashtags, attribution, attribution_text, seed,
    preset, max_new_tokens, model, backend, device, dtype, fmt, output,
):  # fmt: skip
    """Descriptions and alt text for social media, fitted to each platform's limits."""
    from ..images import expand_inputs
    from ..options import resolve_options
    from ..results import printable_record
    from ..social import DEFAULT_ATTRIBUTION, SocialOptions, describe

    text = attribution_text or (DEFAULT_ATTRIBUTION if attribution else None)
    options = SocialOptions(
        variants=variants,
        hashtags=hashtags,
        max_hashtags=max_hashtags,
        attribution=text,
        seed=seed,
    )
    items = list(expand_inputs(list(inputs)))
    cap = open_captioner(model, backend, device, dtype, meaningless="its descriptions")
    posts = describe(
        cap,
        items,
        list(dict.fromkeys(platforms)),
        options,
        caption_options=resolve_options(preset=preset, max_new_tokens=max_new_tokens),
        progress=show_progress(),
    )
    records = [printable_record(p.to_record()) for p in posts]
    with open_output(output) as out:
        ascii_only = not is_utf8(out)
        if fmt == "json":
            json.dump(records, out, ensure_ascii=ascii_only, indent=2)
            out.write("\n")
        elif fmt == "jsonl":
            for record in records:
                out.write(json.dumps(record, ensure_ascii=ascii_only) + "\n")
        else:
            for record in records:
                if record["error"]:
                    line = f"ERROR {record['error']['type']}: {record['error']['message']}"
                else:
                    line = record["alt_text"]
                out.write(f"{record['path']}\t{record['platform']}\t{' '.join(line.split())}\n")
    failed = len({p.path for p in posts if not p.ok})
    if failed:
        warn(f"{failed} of {len(items)} input(s) failed; see the 'error' field of their records")
        sys.exit(1)
