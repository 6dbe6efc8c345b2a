"""Caption a fleet's worth of images with Ray Data; write Parquet; resume by content hash.

The job is three stages, each scaled by Ray on its own:

1. **read** (CPU tasks): fetch each image's bytes (local files, ``s3://`` /
   ``gs://`` through pyarrow's filesystems, http(s) through the SSRF-safe
   fetcher), hash them (sha256), drop those already captioned, decode safely
   and resize to the model's input size as 8-bit RGB. A broken image becomes
   an error row here, never a failed task.
2. **caption** (an actor pool): one :class:`~blipcap.captioner.Captioner` per
   actor, one GPU each where the cluster has GPUs (CPU actors otherwise).
3. **write**: Parquet files in the output folder, one row per image: path,
   sha256, caption(s), error, and the provenance of every caption.

A re-run lists the sources again and skips every image whose content hash is
already in the output folder with the same model, revision and options (the
``settings`` column), so an interrupted job resumes where it stopped and a
grown folder costs only its new images. Rows that failed for a reason that
may pass (a fetch error, a model error) are tried again; rows for images
that cannot be decoded are not.
"""

from __future__ import annotations

import hashlib
import json
import os
import sys
import time
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any

import numpy as np

from ._optional import require
from .engine import split_good
from .errors import InputError, OptionsError
from .inputs import IMAGE_EXTENSIONS, expand_inputs, read_source
from .options import settings_key
from .results import Caption

REMOTE_SCHEMES = ("s3://", "gs://", "gcs://", "hdfs://", "abfs://", "abfss://")
# Input errors that the same bytes will always produce: such rows count as done.
FINAL_ERRORS = frozenset({"UnsupportedFormatError", "ImageTooLargeError", "CorruptImageError"})


@dataclass(frozen=True)
class RayJob:
    """One ``blipcap caption --engine ray`` run."""

    sources: tuple[str, ...]
    output: str
    model: str | None = None
    backend: str = "auto"
    device: str = "auto"
    dtype: str = "auto"
    preset: str | None = None
    overrides: dict[str, Any] = field(default_factory=dict)
    batch_size: int | None = None
    """Images per actor call; default 256 on GPU actors, 16 on CPU actors."""
    actors: int | None = None
    """Caption actors; default: one per GPU in the cluster, else 1."""
    gpus_per_actor: float | None = None
    """None: 1 when the cluster has GPUs, else 0 (CPU actors)."""
    cpus_per_actor: float = 1.0
    address: str | None = None
    """Ray cluster address; None: $RAY_ADDRESS, else a local Ray instance."""
    recursive: bool = True

    def __post_init__(self) -> None:
        if not self.sources:
            raise OptionsError(
                "give at least one SOURCE (a folder, glob, file, s3:// or gs:// prefix)"
            )
        if not self.output:
            raise OptionsError(
                "--engine ray needs --output DEST: a folder (local, s3:// or gs://) for Parquet"
            )
        if self.actors is not None and self.actors < 1:
            raise OptionsError(f"actors must be >= 1, got {self.actors}")
        if self.batch_size is not None and self.batch_size < 1:
            raise OptionsError(f"batch_size must be >= 1, got {self.batch_size}")


@dataclass
class JobSummary:
    listed: int = 0
    skipped: int = 0
    captioned: int = 0
    failed: int = 0
    output: str = ""
    seconds: float = 0.0
    errors: dict[str, int] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)


# -- filesystems and listing ---------------------------------------------------------------


def is_remote(uri: str) -> bool:
    return uri.lower().startswith(REMOTE_SCHEMES)


def filesystem_for(uri: str):
    """(pyarrow filesystem, path) for a local path or a remote URI."""
    pafs = require("pyarrow.fs", "ray", "reading s3:// and gs:// sources")
    if is_remote(uri):
        try:
            return pafs.FileSystem.from_uri(uri)
        except Exception as exc:  # noqa: BLE001 - pyarrow raises several kinds for bad URIs/credentials
            raise InputError(
                f"{uri}: cannot open this location ({exc}). Check the URI and the credentials "
                "(AWS_* / GOOGLE_APPLICATION_CREDENTIALS environment variables)."
            ) from exc
    return pafs.LocalFileSystem(), os.path.abspath(os.path.expanduser(uri))


def list_sources(
    sources: tuple[str, ...] | list[str], recursive: bool = True
) -> list[dict[str, str]]:
    """Rows ``{"path", "listing_error"}`` for every image under ``sources``, in a stable order.

    Local inputs follow :func:`blipcap.inputs.expand_inputs` (folders, globs,
    files, URLs; a missing path becomes an error row). Remote prefixes are
    listed through pyarrow, keeping files with an image extension.
    """
    rows: list[dict[str, str]] = []
    for source in sources:
        if is_remote(source):
            rows.extend({"path": p, "listing_error": ""} for p in _list_remote(source, recursive))
            continue
        for item in expand_inputs([source], recursive=recursive):
            error = str(item.payload) if item.kind == "error" else ""
            rows.append({"path": item.label, "listing_error": error})
    return rows


def _list_remote(uri: str, recursive: bool) -> list[str]:
    pafs = require("pyarrow.fs", "ray", "listing s3:// and gs:// sources")
    fs, path = filesystem_for(uri)
    scheme = uri.split("://", 1)[0]
    info = fs.get_file_info(path)
    if info.type == pafs.FileType.File:
        return [uri]
    if info.type == pafs.FileType.NotFound:
        raise InputError(f"{uri}: not found. Check the bucket and prefix.")
    found = fs.get_file_info(pafs.FileSelector(path, recursive=recursive))
    out = []
    for f in found:
        name = f.path.rsplit("/", 1)[-1]
        if f.type == pafs.FileType.File and not name.startswith(".") and _has_image_ext(name):
            out.append(f"{scheme}://{f.path}")
    return sorted(out)


def _has_image_ext(name: str) -> bool:
    return os.path.splitext(name)[1].lower() in IMAGE_EXTENSIONS


# -- what is already done ------------------------------------------------------------------


def done_hashes(output: str, settings: str) -> set[str]:
    """Content hashes already captioned (or finally failed) with these settings in ``output``."""
    pafs = require("pyarrow.fs", "ray", "reading the output folder")
    pq = require("pyarrow.parquet", "ray", "reading the output folder")
    fs, path = filesystem_for(output)
    info = fs.get_file_info(path)
    if info.type == pafs.FileType.NotFound:
        return set()
    if info.type != pafs.FileType.Directory:
        raise OptionsError(f"--output {output} is a file; give a folder for the Parquet files")
    done: set[str] = set()
    for f in fs.get_file_info(pafs.FileSelector(path, recursive=True)):
        if f.type != pafs.FileType.File or not f.path.endswith(".parquet"):
            continue
        try:
            table = pq.read_table(f.path, filesystem=fs, columns=["sha256", "settings", "error"])
        except Exception as exc:  # noqa: BLE001 - a torn file from a killed job: redo its images
            print(
                f"blipcap: ignoring unreadable {f.path} ({exc}); its images are captioned again",
                file=sys.stderr,
            )
            continue
        for sha, s, err in zip(
            table.column("sha256").to_pylist(),
            table.column("settings").to_pylist(),
            table.column("error").to_pylist(),
            strict=True,
        ):
            if sha and s == settings and (err is None or err.get("type") in FINAL_ERRORS):
                done.add(sha)
    return done


# -- stage 1: read, hash, skip, decode -------------------------------------------------------


def _read_bytes(path: str, limits) -> bytes:
    if path.lower().startswith(("http://", "https://")):
        from .fetch import fetch_url

        return fetch_url(path, max_bytes=limits.max_bytes).data
    if not is_remote(path):
        return read_source(path, limits.max_bytes, path)
    fs, p = filesystem_for(path)
    try:
        with fs.open_input_stream(p) as stream:
            data = stream.read(limits.max_bytes + 1)
    except (OSError, FileNotFoundError) as exc:
        raise InputError(f"{path}: cannot read ({exc}).") from None
    if len(data) > limits.max_bytes:
        from .errors import ImageTooLargeError

        raise ImageTooLargeError(f"{path}: larger than the {limits.max_bytes} byte limit.")
    return data


def read_and_decode(
    batch: dict[str, np.ndarray], *, done: set[str], size: tuple[int, int], resample: int
):
    """Ray Data map_batches function: path rows -> pixels (uint8, model size) or error rows."""
    from .images import DEFAULT_LIMITS, load_image
    from .model.processing import ImagePreprocessor

    h, w = size
    resize = ImagePreprocessor(height=h, width=w, resample=resample)
    out: dict[str, list] = {
        k: [] for k in ("path", "sha256", "pixels", "error_type", "error_message")
    }
    for path, listing_error in zip(batch["path"], batch["listing_error"], strict=True):
        path, sha, pixels, err = str(path), "", np.zeros((h, w, 3), np.uint8), None
        try:
            if listing_error:
                raise InputError(str(listing_error))
            data = _read_bytes(path, DEFAULT_LIMITS)
            sha = hashlib.sha256(data).hexdigest()
            if sha in done:
                continue
            image = load_image(data, DEFAULT_LIMITS, name=path)
            pixels = resize.to_uint8(image)
        except (InputError, OSError, ValueError) as exc:
            err = exc
        out["path"].append(path)
        out["sha256"].append(sha)
        out["pixels"].append(pixels)
        out["error_type"].append(type(err).__name__ if err else "")
        out["error_message"].append((str(err) or type(err).__name__) if err else "")
    result = {k: np.array(v, dtype=object) for k, v in out.items() if k != "pixels"}
    result["pixels"] = (
        np.stack(out["pixels"]) if out["pixels"] else np.zeros((0, h, w, 3), np.uint8)
    )
    return result


# -- stage 2: caption ------------------------------------------------------------------------


class CaptionActor:
    """One Captioner per actor; a batch of pixel rows -> a pyarrow table of result rows."""

    def __init__(
        self, model, revision, backend, device, dtype, options: dict[str, Any], settings: str
    ):
        from .captioner import Captioner
        from .options import CaptionOptions

        self.captioner = Captioner(
            model, backend=backend, device=device, dtype=dtype, revision=revision
        )
        self.options = CaptionOptions(**options)
        self.settings = settings
        self.provenance = self.captioner.provenance_for(self.options)

    def _caption(self, pixels: np.ndarray) -> list[Caption]:
        return self.captioner.caption_pixels(pixels, self.options)

    def __call__(self, batch: dict[str, np.ndarray]):
        errors: list[tuple[str, str] | None] = [
            (str(t), str(m)) if t else None
            for t, m in zip(batch["error_type"], batch["error_message"], strict=True)
        ]
        rows = split_good(range(len(errors)), lambda i: errors[i] is None)
        done = self._caption_rows(batch["pixels"], rows.good, errors)
        captions = rows.merge(done, bad=lambda i: None)
        return self._table(batch, captions, errors)

    def _caption_rows(self, pixels: np.ndarray, rows: list[int], errors: list) -> list:
        """Captions per row in ``rows``; a row that fails alone gets its error in ``errors``."""
        if not rows:
            return []
        try:
            return self._caption(pixels[rows])
        except Exception:  # noqa: BLE001 - one bad item must not fail the batch: retry one by one
            out: list[Caption | None] = []
            for i in rows:
                try:
                    out.append(self._caption(pixels[i : i + 1])[0])
                except Exception as exc:  # noqa: BLE001
                    errors[i] = (type(exc).__name__, str(exc) or type(exc).__name__)
                    out.append(None)
            return out

    def _table(self, batch, captions, errors):
        pa = require("pyarrow", "ray", "writing Parquet")
        p = self.provenance
        n = len(captions)
        now = datetime.now(timezone.utc)
        sha = [str(s) or None for s in batch["sha256"]]
        columns = {
            "path": pa.array([str(x) for x in batch["path"]], pa.string()),
            "sha256": pa.array(sha, pa.string()),
            "caption": pa.array([c.caption if c else None for c in captions], pa.string()),
            "captions": pa.array(
                [c.captions if c else [] for c in captions], pa.list_(pa.string())
            ),
            "confidence": pa.array(
                [c.confidence.to_dict() if c and c.confidence else None for c in captions],
                confidence_type(pa),
            ),
            "confidences": pa.array(
                [
                    [x.to_dict() if x else None for x in c.confidences] if c else []
                    for c in captions
                ],
                pa.list_(confidence_type(pa)),
            ),
            "guard": pa.array(
                [c.guard.to_dict() if c and c.guard else None for c in captions],
                pa.struct(
                    [
                        ("detected", pa.list_(pa.string())),
                        ("action", pa.string()),
                        ("resolved", pa.bool_()),
                    ]
                ),
            ),
            "error": pa.array(
                [{"type": e[0], "message": e[1]} if e else None for e in errors],
                pa.struct([("type", pa.string()), ("message", pa.string())]),
            ),
            "model": pa.array([p.model] * n, pa.string()),
            "revision": pa.array([p.revision] * n, pa.string()),
            "backend": pa.array([p.backend] * n, pa.string()),
            "dtype": pa.array([p.dtype] * n, pa.string()),
            "device": pa.array([p.device] * n, pa.string()),
            "options": pa.array([json.dumps(p.options, sort_keys=True)] * n, pa.string()),
            "settings": pa.array([self.settings] * n, pa.string()),
            "blipcap_version": pa.array([p.blipcap_version] * n, pa.string()),
            "machine_generated": pa.array([p.machine_generated] * n, pa.bool_()),
            "random_weights": pa.array([p.random_weights] * n, pa.bool_()),
            "captioned_at": pa.array([now] * n, pa.timestamp("us", tz="UTC")),
        }
        return pa.table(columns)


def confidence_type(pa):
    """The Parquet type of a caption's confidence (blipcap.results.Confidence.to_dict)."""
    return pa.struct(
        [
            ("score", pa.float64()),
            ("mean_logprob", pa.float64()),
            ("min_logprob", pa.float64()),
            ("tokens", pa.int64()),
        ]
    )


# -- the job -------------------------------------------------------------------------------


# Ray reports usage statistics to its developers unless told not to; blipcap does not switch
# that on for its users. RAY_USAGE_STATS_ENABLED=1 in the environment still turns it on.
USAGE_STATS_ENV = "RAY_USAGE_STATS_ENABLED"


def _connect(address: str | None):
    os.environ.setdefault(USAGE_STATS_ENV, "0")  # before Ray starts or joins a cluster
    ray = require("ray", "ray", "--engine ray")
    if not ray.is_initialized():
        address = address or os.environ.get("RAY_ADDRESS") or None
        ray.init(address=address, include_dashboard=False, log_to_driver=False)
    return ray


def run_job(job: RayJob, progress: bool = False) -> JobSummary:
    """Run the job on the Ray cluster (connecting or starting a local one) and return counts."""
    from .hub import resolve_model
    from .model.config import BlipConfig
    from .model.processing import ImagePreprocessor
    from .options import resolve_options

    started = time.monotonic()
    ray = _connect(job.address)
    data = require("ray.data", "ray", "--engine ray")
    ctx = data.DataContext.get_current()
    ctx.enable_progress_bars = progress

    opts = resolve_options(None, job.preset, **job.overrides)
    files = resolve_model(job.model)
    config = BlipConfig.from_dict(files.config or {})
    pre = ImagePreprocessor.from_dir(files.path, config.vision.image_size)
    settings = settings_key(files.model_id, files.revision, opts.to_dict())

    rows = list_sources(job.sources, job.recursive)
    summary = JobSummary(listed=len(rows), output=job.output)
    done = done_hashes(job.output, settings)
    if not rows:
        summary.seconds = time.monotonic() - started
        return summary

    gpus = job.gpus_per_actor
    if gpus is None:
        gpus = 1.0 if ray.cluster_resources().get("GPU", 0) >= 1 and job.device != "cpu" else 0.0
    actors = job.actors or (max(1, int(ray.cluster_resources().get("GPU", 0))) if gpus else 1)
    batch_size = job.batch_size or (256 if gpus else 16)
    revision = files.revision if files.source == "hub" else None

    ds = data.from_items(rows, override_num_blocks=max(1, min(len(rows) // 64 + 1, 1000)))
    ds = ds.map_batches(
        read_and_decode,
        batch_size=32,
        fn_kwargs={"done": done, "size": tuple(pre.size), "resample": int(pre.resample)},
        num_cpus=1,
        # Ray Data spreads these tasks over the cluster's nodes (its default scheduling
        # strategy, "SPREAD"). With GPU actors this stage runs as its own CPU tasks; with
        # CPU actors Ray fuses it into the actors (same cores).
    )
    ds = ds.map_batches(
        CaptionActor,
        fn_constructor_args=(
            job.model if files.source == "hub" else str(files.path),
            revision,
            job.backend,
            job.device if gpus or job.device != "auto" else "cpu",
            job.dtype,
            opts.to_dict(),
            settings,
        ),
        batch_size=batch_size,
        compute=data.ActorPoolStrategy(size=actors),
        num_gpus=gpus,
        num_cpus=job.cpus_per_actor,
    )
    ds = ds.materialize()
    written = ds.count()
    if written:
        fs, path = filesystem_for(job.output)
        fs.create_dir(path, recursive=True)
        ds.write_parquet(path, filesystem=fs)
        for batch in ds.select_columns(["error"]).iter_batches(
            batch_format="pyarrow", batch_size=4096
        ):
            for err in batch.column("error").to_pylist():
                if err is None:
                    summary.captioned += 1
                else:
                    summary.failed += 1
                    summary.errors[err["type"]] = summary.errors.get(err["type"], 0) + 1
    summary.skipped = summary.listed - written
    summary.seconds = round(time.monotonic() - started, 2)
    return summary


def check_job_inputs(job: RayJob) -> None:
    """Fail fast, before Ray starts, on inputs that cannot work."""
    for source in job.sources:
        if source.startswith("-"):
            raise OptionsError(
                "--engine ray cannot read standard input; give files, folders or URIs"
            )
    if is_remote(job.output) or not os.path.exists(job.output):
        return
    if not os.path.isdir(job.output):
        raise OptionsError(f"--output {job.output} is a file; give a folder for the Parquet files")


__all__ = ["RayJob", "JobSummary", "run_job", "list_sources", "done_hashes", "settings_key"]
