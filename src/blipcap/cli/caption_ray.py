"""``blipcap caption --engine ray``: the Ray Data job behind the caption command."""

from __future__ import annotations

import json
import sys
from typing import Any

import click

from .common import warn


def caption_with_ray(
    inputs: tuple[str, ...],
    output: str | None,
    *,
    model: str | None,
    backend: str,
    device: str,
    dtype: str,
    preset: str | None,
    overrides: dict[str, Any],
    batch_size: str,
    actors: int | None,
    address: str | None,
    recursive: bool,
    progress: bool,
) -> None:
    """Run the job, print a JSON summary on stdout; exit 1 when some images failed."""
    from ..distributed import RayJob, check_job_inputs, run_job

    if not output:
        raise click.UsageError(
            "--engine ray writes Parquet files into a folder: add --output DEST "
            "(a local folder, s3://bucket/prefix or gs://bucket/prefix)"
        )
    job = RayJob(
        sources=tuple(inputs),
        output=str(output),
        model=model,
        backend=backend,
        device=device,
        dtype=dtype,
        preset=preset,
        overrides={k: v for k, v in overrides.items() if v is not None},
        batch_size=None if batch_size == "auto" else int(batch_size),
        actors=actors,
        address=address,
        recursive=recursive,
    )
    check_job_inputs(job)
    summary = run_job(job, progress=progress)
    click.echo(json.dumps(summary.to_dict()))
    warn(
        f"{summary.captioned} captioned, {summary.skipped} already done, {summary.failed} failed "
        f"of {summary.listed} image(s) -> {summary.output} ({summary.seconds:.1f} s)"
    )
    if summary.failed:
        warn("failed rows carry an 'error' in the Parquet output and are retried only if transient")
        sys.exit(1)
