"""``blipcap bench``: throughput and peak memory across batch size x beams x generated length."""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path
from typing import Any

import click

from .common import cli_errors, json_option, model_options, progress_option, show_progress, warn


def _int_list(ctx: click.Context, param: click.Parameter, value: str) -> tuple[int, ...]:
    try:
        items = tuple(int(v) for v in value.split(",") if v.strip())
    except ValueError:
        raise click.BadParameter(f"expected comma-separated integers, got {value!r}") from None
    if not items or min(items) < 1:
        raise click.BadParameter(f"expected positive integers, got {value!r}")
    return items


def _int_list_option(name: str, default: str, help: str):
    return click.option(name, default=default, show_default=True, callback=_int_list, help=help)


def _size(ctx: click.Context, param: click.Parameter, value: str) -> tuple[int, int]:
    try:
        w, h = (int(v) for v in value.lower().split("x"))
    except ValueError:
        raise click.BadParameter(f"expected WIDTHxHEIGHT, e.g. 640x480, got {value!r}") from None
    if w < 1 or h < 1:
        raise click.BadParameter("width and height must be positive")
    return w, h


@click.command(
    "bench",
    epilog="""\b
Examples:
  blipcap bench                                      # default model, CPU or GPU
  blipcap bench --device cuda --dtype bfloat16 --batch-sizes 1,8,32,128 --beams 1,3
  blipcap bench --backend onnx --model ./blip-int8 --out bench/int8
  blipcap bench --images photos/ --lengths 10,20,40 --max-time 300 --json

\b
Every configuration generates exactly its number of new tokens
(min = max new tokens, no prompt), so speed does not depend on the image or
on the weights. One warm-up batch, then --batches timed batches.
Peak memory: on CUDA, torch.cuda.max_memory_allocated during the timed run;
on CPU, the peak resident memory of a fresh process per configuration
(loading the model included: what a machine needs to run it), or with
--no-isolate the resident memory sampled every 5 ms in this process.
Configurations larger than one that ran out of memory are skipped; when the
--max-time budget is used up, the rest are skipped and the table says so.

\b
Exit status: 0 when a configuration completed, 1 when none did, 2 on usage
or configuration errors, 3 when the model could not be found or loaded.
""",
)
@model_options
@_int_list_option("--batch-sizes", "1,4,16", "Comma-separated.")
@_int_list_option("--beams", "1,3", "Comma-separated beam widths.")
@_int_list_option("--lengths", "20", "Comma-separated generated lengths (new tokens, forced).")
@click.option(
    "--batches",
    type=click.IntRange(min=1),
    default=2,
    show_default=True,
    help="Timed batches per configuration.",
)
@click.option(
    "--images",
    "image_paths",
    multiple=True,
    type=click.Path(exists=True, path_type=Path),
    help="Image files or folders to caption (cycled as needed) instead of random images.",
)
@click.option(
    "--image-size",
    default="640x480",
    show_default=True,
    callback=_size,
    help="Size of the random images.",
)
@click.option("--seed", type=int, default=0, show_default=True, help="Seed of the random images.")
@click.option(
    "--max-time",
    type=click.FloatRange(min=1),
    default=600,
    show_default=True,
    help="Time budget in seconds for the whole sweep.",
)
@click.option(
    "--isolate/--no-isolate",
    default=None,
    help="A fresh process per configuration [default: on CPU].",
)
@click.option(
    "--out",
    type=click.Path(dir_okay=False, path_type=Path),
    help="Also write OUT.md and OUT.json.",
)
@json_option("Print the JSON document instead of Markdown.")
@progress_option
@cli_errors
def bench(
    model,
    backend,
    device,
    dtype,
    batch_sizes,
    beams,
    lengths,
    batches,
    image_paths,
    image_size,
    seed,
    max_time,
    isolate,
    out,
    as_json,
    progress,
) -> None:
    """Measure images/s and peak memory across batch sizes, beams and generated lengths."""
    from ..evaluation.bench import BenchSettings, Inputs, run_sweep
    from ..evaluation.formats import write_json_atomic
    from ..evaluation.report import bench_markdown

    paths = _expand(image_paths)
    settings = BenchSettings(
        model=model,
        backend=backend,
        device=device,
        dtype=dtype,
        batch_sizes=batch_sizes,
        beams=beams,
        lengths=lengths,
        batches=batches,
        inputs=Inputs(paths=tuple(paths), width=image_size[0], height=image_size[1], seed=seed),
        max_time_s=max_time,
        isolate=isolate,
    )
    configs = settings.configs()
    bar = None
    if show_progress(progress):
        from tqdm import tqdm

        bar = tqdm(
            total=len(configs), unit="config", desc="bench", file=sys.stderr, dynamic_ncols=True
        )

    def on_start(config: Any) -> None:
        if bar is not None:
            bar.set_postfix_str(
                f"batch {config.batch_size} beams {config.num_beams} len {config.length}"
            )

    def on_progress(config: Any, m: Any) -> None:
        if bar is not None:
            bar.update(1)

    t0 = time.monotonic()
    try:
        measurements, provenance = run_sweep(settings, None, on_progress, on_start)
    finally:
        if bar is not None:
            bar.close()
    if not provenance:
        provenance = {"model": model, "backend": backend, "device": device, "dtype": dtype}
    if provenance.get("random_weights"):
        warn(
            "this model has RANDOM weights (a test checkpoint); speed and memory are still valid "
            "at forced lengths"
        )
    doc = _document(settings, provenance, measurements, time.monotonic() - t0)
    markdown = bench_markdown(doc)
    if out is not None:
        out.parent.mkdir(parents=True, exist_ok=True)
        write_json_atomic(out.with_name(out.name + ".json"), doc)
        md = out.with_name(out.name + ".md")
        md.write_text(markdown, encoding="utf-8")
    click.echo(json.dumps(doc, indent=1) if as_json else markdown.rstrip("\n"))
    if not any(m.status == "ok" for m in measurements):
        warn("no configuration completed; see the status column")
        sys.exit(1)


def _document(settings: Any, provenance: dict, measurements: list, seconds: float) -> dict:
    """The JSON document of a sweep (OUT.json, --json): settings, provenance, machine, results."""
    from ..evaluation.environment import hardware, library_versions

    return {
        "settings": {
            "batch_sizes": list(settings.batch_sizes),
            "beams": list(settings.beams),
            "lengths": list(settings.lengths),
            "batches": settings.batches,
            "inputs": "files" if settings.inputs.paths else "random",
            "inputs_description": settings.inputs.describe(),
            "max_time_s": settings.max_time_s,
            "isolate": settings.isolate,
        },
        "provenance": provenance,
        "hardware": hardware(),
        "libraries": library_versions(),
        "seconds": seconds,
        "measurements": [m.to_dict() for m in measurements],
    }


def _expand(paths: tuple[Path, ...]) -> list[str]:
    from ..images import expand_inputs

    if not paths:
        return []
    items = list(expand_inputs([str(p) for p in paths], recursive=True))
    bad = [item for item in items if item.kind != "file"]
    if bad:
        raise click.BadParameter(f"{bad[0].label}: {bad[0].payload}", param_hint="--images")
    return [str(item.payload) for item in items]
