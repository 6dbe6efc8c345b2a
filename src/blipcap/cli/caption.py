"""``blipcap caption``: caption files, folders, globs, URLs or stdin."""

from __future__ import annotations

import csv
import json
import sys
from pathlib import Path
from typing import IO

import click

from ..results import Caption, escape_name, printable, printable_record
from .common import (
    batch_size_option,
    cli_errors,
    decoding_options,
    is_utf8,
    model_options,
    open_captioner,
    open_output,
    pop_decoding_options,
    progress_option,
    show_progress,
    warn,
)

FORMATS = ("jsonl", "plain", "csv")


@click.command(
    "caption",
    epilog="""\b
Examples:
  blipcap caption photos/                          # JSON Lines, one record per image
  blipcap caption a.jpg b.png --format plain       # path<TAB>caption
  blipcap caption "shots/**/*.jpg" --preset coco --output captions.jsonl
  blipcap caption https://example.org/cat.jpg --beams 3 --num-captions 3
  cat photo.jpg | blipcap caption -
  blipcap caption photos/ --prompt "a photograph of" --max-new-tokens 40
  blipcap caption --engine ray s3://bucket/photos/ --output s3://bucket/captions/

Exit status: 0 when every image was captioned, 1 when some failed (their
records carry an "error"), 2 on usage or configuration errors, 3 when the
model could not be found or loaded.
""",
)
@click.argument("inputs", nargs=-1, required=True, metavar="PATH|DIR|GLOB|URL|-...")
@model_options
@decoding_options
@batch_size_option
@click.option(
    "--format",
    "fmt",
    type=click.Choice(FORMATS),
    default="jsonl",
    show_default=True,
    help="jsonl: one JSON record per input (with provenance); plain: path<TAB>caption, one line "
    "per input (extra --num-captions captions follow, tab-separated); csv. Names are escaped: "
    "see docs/image-input.md.",
)
@click.option(
    "--output",
    "-o",
    default=None,
    metavar="FILE|DEST",
    help="Write here instead of stdout (atomically: the file appears complete or not at all). "
    "With --engine ray: the folder (local, s3:// or gs://) that receives the Parquet files.",
)
@click.option(
    "--engine",
    type=click.Choice(["local", "ray"]),
    default="local",
    show_default=True,
    help="local: this process. ray: a Ray Data job over a cluster's GPUs (needs blipcap[ray], "
    "--output DEST; re-runs skip images already in DEST). See docs/ray.md.",
)
@click.option(
    "--actors", type=click.IntRange(min=1), default=None, help="Ray: caption actors [one per GPU]."
)
@click.option(
    "--ray-address",
    envvar="RAY_ADDRESS",
    default=None,
    help="Ray: cluster address [env RAY_ADDRESS; local].",
)
@click.option("--no-recursive", is_flag=True, help="Do not descend into sub-folders.")
@progress_option
@cli_errors
def caption(
    inputs, model, backend, device, dtype, batch_size, fmt, output, no_recursive, progress,
    engine, actors, ray_address, **flags,
):  # fmt: skip
    """Caption images: files, folders (recursively), glob patterns, http(s) URLs, or - for stdin.

    Results come out in input order, one per input. An unreadable image gets a
    record with an "error" and the run carries on.
    """
    from ..images import expand_inputs

    overrides = pop_decoding_options(flags)
    preset = overrides.pop("preset")
    if engine == "ray":
        from .caption_ray import caption_with_ray

        return caption_with_ray(
            inputs, output, model=model, backend=backend, device=device, dtype=dtype,
            preset=preset, overrides=overrides, batch_size=batch_size, actors=actors,
            address=ray_address, recursive=not no_recursive, progress=bool(progress),
        )  # fmt: skip
    output = Path(output) if output else None
    if output is not None and output.is_dir():
        raise click.BadParameter(f"{output} is a folder; give a file name", param_hint="--output")
    items = list(expand_inputs(list(inputs), recursive=not no_recursive))
    cap = open_captioner(model, backend, device, dtype, meaningless="its captions")
    failed = 0
    with open_output(output) as out:
        writer = _writer(fmt, out)
        results = cap.caption_iter(
            items,
            preset=preset,
            batch_size=batch_size,
            progress=show_progress(progress),
            **overrides,
        )
        for result in results:
            failed += not result.ok
            writer(result)
            out.flush()
    if failed:
        warn(f"{failed} of {len(items)} input(s) failed; see the 'error' field of their records")
        sys.exit(1)


def _writer(fmt: str, out: IO[str]):
    """One line (jsonl, plain) or CSV row per result; names escaped with ``escape_name``."""
    if fmt == "jsonl":
        ascii_only = not is_utf8(out)
        return lambda r: out.write(
            json.dumps(printable_record(r.to_record()), ensure_ascii=ascii_only) + "\n"
        )
    if fmt == "plain":
        return lambda r: out.write("\t".join([escape_name(r.path or "-"), *_plain_texts(r)]) + "\n")
    w = csv.writer(out, lineterminator="\n")
    w.writerow(["path", "caption", "captions", "error"])

    def as_csv(r: Caption) -> None:
        error = f"{r.error.type}: {r.error.message}" if r.error else ""
        row = [escape_name(r.path or ""), r.caption or "", " | ".join(r.captions), error]
        w.writerow([printable(cell) for cell in row])

    return as_csv


def _plain_texts(r: Caption) -> list[str]:
    """The plain format's fields after the path: every caption, or the error."""
    if not r.ok:
        return [printable(_one_line(f"ERROR {r.error.type}: {r.error.message}"))]
    return [_one_line(text) for text in (r.captions or [r.caption])]


def _one_line(text: str | None) -> str:
    return " ".join((text or "").split())
