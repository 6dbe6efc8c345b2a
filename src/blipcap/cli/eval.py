"""``blipcap eval``: COCO caption metrics, run-to-run agreement, and golden-caption checks."""

from __future__ import annotations

import json
import sys
import time
from dataclasses import asdict
from pathlib import Path
from typing import Any

import click

from ..errors import BackendError, EvaluationError
from ..options import CaptionOptions, resolve_options
from .common import (
    DTYPES,
    batch_size_option,
    cli_errors,
    decoding_options,
    json_option,
    model_options,
    open_captioner,
    pop_decoding_options,
    show_progress,
    warn,
)

SCALE_NOTE = "pycocoevalcap's scale: fractions (papers print x100; CIDEr 1.367 = 136.7)"


@click.command(
    "eval",
    epilog="""\b
Examples:
  # The BLIP paper's COCO protocol on the Karpathy test split (5,000 images):
  blipcap eval --annotations dataset_coco.json --split test --images coco/ \\
      --predictions-out preds.json --json > scores.json
  # Score an existing COCO results file (no model run):
  blipcap eval --annotations captions_val2014.json --predictions preds.json
  # Does int8 ONNX caption like fp32 torch on my photos?
  blipcap caption photos/ --backend torch --dtype float32 > fp32.jsonl
  blipcap eval --references-from fp32.jsonl --backend onnx --model ./blip-int8
  # CI: fail (exit 1) when any caption drifts from the stored ones
  blipcap caption tests/golden/ > golden.jsonl        # once, then commit it
  blipcap eval --golden golden.jsonl

\b
Modes (exactly one of):
  --annotations FILE   references: COCO captions (also NoCaps), Karpathy
                       dataset_coco.json, or BLIP's coco_karpathy_*.json
  --references-from F  another run's captions (JSONL of `blipcap caption`)
  --golden FILE        stored captions that must be reproduced exactly

Metrics (BLEU-1..4, METEOR, ROUGE-L, CIDEr; SPICE when its models are
installed) come from pycocoevalcap and need Java (Debian/Ubuntu:
apt-get install default-jre-headless). Captioning uses the coco preset
(the paper's protocol) unless --preset or decoding flags say otherwise;
--references-from and --golden reuse the options stored with those runs.

Exit status: 0 success; 1 some images had no caption, or golden drift;
2 usage or configuration errors (including unreadable reference files and a
missing Java); 3 the model could not be found or loaded.
""",
)
@click.option(
    "--annotations",
    type=click.Path(dir_okay=False, path_type=Path),
    help="Reference captions file.",
)
@click.option(
    "--split",
    default="test",
    show_default=True,
    help="Karpathy split to evaluate (train, restval, val, test, or all).",
)
@click.option(
    "--images",
    type=click.Path(file_okay=False, path_type=Path),
    help="Folder holding the images (relative paths in the annotation, golden or reference "
    "file are taken below it).",
)
@click.option(
    "--predictions",
    type=click.Path(dir_okay=False, path_type=Path),
    help="Score these captions instead of running the model: a COCO results file "
    "([{image_id, caption}]) or the JSONL of `blipcap caption`.",
)
@click.option(
    "--predictions-out",
    type=click.Path(dir_okay=False, path_type=Path),
    help="Write the model's captions here in COCO results format (for an evaluation server).",
)
@click.option(
    "--references-from",
    type=click.Path(dir_okay=False, path_type=Path),
    help="Agreement mode: score against this run's captions (JSONL of `blipcap caption`).",
)
@click.option(
    "--golden",
    type=click.Path(dir_okay=False, path_type=Path),
    help="Golden mode: captions (JSONL of `blipcap caption`) that must be reproduced exactly.",
)
@click.option(
    "--limit", type=click.IntRange(min=1), help="Only the first N images (a quick check)."
)
@click.option(
    "--spice/--no-spice",
    default=None,
    help="SPICE: --spice requires it, --no-spice skips it [default: when its models are installed].",
)
@batch_size_option
@json_option("Print one JSON object instead of a table.")
@model_options
@decoding_options
@cli_errors
def eval_command(**kwargs: Any) -> None:
    """Measure caption quality: COCO metrics, agreement between runs, golden captions."""
    overrides = pop_decoding_options(kwargs)
    preset = overrides.pop("preset")
    modes = [m for m in ("annotations", "references_from", "golden") if kwargs[m] is not None]
    if len(modes) != 1:
        raise click.UsageError(
            "give exactly one of --annotations, --references-from or --golden "
            f"(got {', '.join('--' + m.replace('_', '-') for m in modes) or 'none'})"
        )
    if modes[0] == "annotations":
        _annotations_mode(kwargs, preset, overrides)
    elif modes[0] == "references_from":
        _agreement_mode(kwargs, preset, overrides)
    else:
        _golden_mode(kwargs, preset, overrides)


# --- shared ---------------------------------------------------------------------------------


def _environment() -> dict[str, Any]:
    from ..evaluation.environment import hardware, library_versions
    from ..evaluation.metrics import java_version

    return {"libraries": library_versions(), "hardware": hardware(), "java": java_version()}


def _model_provenance(cap: Any, options: CaptionOptions, preset: str | None) -> dict[str, Any]:
    p = asdict(cap.provenance_for(options))
    p["preset"] = preset
    p["random_weights"] = bool(cap.random_weights)
    return p


def _open(
    kwargs: dict[str, Any],
    model: str | None = None,
    backend: str | None = None,
    dtype: str | None = None,
) -> tuple[Any, float]:
    """Load --model (else ``model``) with ``backend`` and ``dtype`` (else --backend, --dtype)."""
    t0 = time.perf_counter()
    cap = open_captioner(
        kwargs["model"] or model,
        backend or kwargs["backend"],
        kwargs["device"],
        dtype or kwargs["dtype"],
        meaningless="its captions, and any score computed from them,",
    )
    return cap, time.perf_counter() - t0


def _emit(kwargs: dict[str, Any], doc: dict[str, Any], text: str) -> None:
    if kwargs["as_json"]:
        click.echo(json.dumps(doc, ensure_ascii=False, indent=1))
    else:
        click.echo(text)


def _skipped_notes(skipped: dict[str, str]) -> None:
    for reason in skipped.values():
        if "not requested" not in reason:
            warn(reason)


def _require_metrics_tools(spice: bool | None) -> None:
    # Before a long captioning run, not after it.
    from ..evaluation.metrics import find_java, spice_unavailable_reason

    find_java()
    if spice:
        reason = spice_unavailable_reason()
        if reason:
            raise EvaluationError(reason)


# --- COCO / Karpathy / NoCaps ---------------------------------------------------------------


def _annotations_mode(
    kwargs: dict[str, Any], preset: str | None, overrides: dict[str, Any]
) -> None:
    from ..evaluation.formats import read_annotations
    from ..evaluation.protocol import score_set
    from ..evaluation.report import metrics_markdown

    t_start = time.perf_counter()
    ann = read_annotations(kwargs["annotations"], kwargs["split"]).limit(kwargs["limit"])
    out = kwargs["predictions_out"]
    if out is not None and not out.resolve().parent.is_dir():
        raise EvaluationError(f"cannot write {out}: folder {out.resolve().parent} does not exist")
    _require_metrics_tools(kwargs["spice"])
    timings: dict[str, Any] = {}
    if kwargs["predictions"] is not None:
        if kwargs["predictions_out"] is not None:
            raise click.UsageError(
                "--predictions-out writes the model's captions; with --predictions there are none"
            )
        captions, failures, provenance = _stored_predictions(kwargs, ann)
    else:
        captions, failures, provenance = _caption_annotated(kwargs, ann, preset, overrides, timings)
    if failures:
        warn(f"{len(failures)} of {len(ann)} images have no caption and are left out of the scores")
    if not captions:
        raise EvaluationError("no image was captioned; nothing to score")
    t = time.perf_counter()
    scores = score_set(ann, captions, kwargs["spice"])
    timings["metrics_s"] = time.perf_counter() - t
    timings["metrics"] = scores.overall.timings
    timings["total_s"] = time.perf_counter() - t_start
    provenance.update(_environment())
    _skipped_notes(scores.overall.skipped)
    doc: dict[str, Any] = {
        "metrics": scores.overall.scores,
        "scale": SCALE_NOTE,
    }
    if scores.by_domain:
        doc["metrics_by_domain"] = {d: r.scores for d, r in scores.by_domain.items()}
    doc.update(
        skipped_metrics=scores.overall.skipped,
        images={"references": len(ann), "scored": scores.overall.images, "failed": len(failures)},
        failures=failures,
        annotations={"file": ann.source, "format": ann.format, "split": ann.split},
        predictions_out=str(kwargs["predictions_out"]) if kwargs["predictions_out"] else None,
        provenance=provenance,
        timings=timings,
    )
    columns = {"overall": scores.overall.scores}
    columns.update({d: r.scores for d, r in scores.by_domain.items()})
    text = (
        f"{ann.format} annotations {ann.source}"
        + (f" (split {ann.split})" if ann.split else "")
        + f": {scores.overall.images} of {len(ann)} images scored, x100 as in the papers\n\n"
        + metrics_markdown(columns)
    )
    _emit(kwargs, doc, text)
    if failures:
        sys.exit(1)


def _failures(images: list[Any], kind: str, message: str) -> list[dict[str, Any]]:
    """The failure records of annotated images that got no caption."""
    return [
        {"image_id": im.image_id, "path": im.file_name, "error": {"type": kind, "message": message}}
        for im in images
    ]


def _stored_predictions(
    kwargs: dict[str, Any], ann: Any
) -> tuple[dict[Any, str], list[dict[str, Any]], dict[str, Any]]:
    """--predictions: the captions of a results file, matched to the annotated images."""
    from ..evaluation.formats import match_predictions, read_predictions

    preds = read_predictions(kwargs["predictions"])
    captions, missing = match_predictions(ann, preds, kwargs["images"])
    failures = _failures(missing, "NoPrediction", f"no caption in {preds.source}")
    if not captions:
        raise EvaluationError(
            f"no prediction in {preds.source} matches an image of {ann.source} "
            "(COCO results match by image_id; JSONL records by path or file name)"
        )
    provenance: dict[str, Any] = {"source": "predictions", "predictions": preds.source}
    if preds.records:
        from ..evaluation.runs import PROVENANCE_FIELDS

        first = preds.records[0]
        provenance.update({k: first.get(k) for k in PROVENANCE_FIELDS if k in first})
        provenance["options"] = first.get("options")
    return captions, failures, provenance


def _caption_annotated(
    kwargs: dict[str, Any],
    ann: Any,
    preset: str | None,
    overrides: dict[str, Any],
    timings: dict[str, Any],
) -> tuple[dict[Any, str], list[dict[str, Any]], dict[str, Any]]:
    """Caption the annotated images found under --images (and write --predictions-out)."""
    from ..evaluation.formats import locate_images, write_results
    from ..evaluation.protocol import caption_set

    if kwargs["images"] is None:
        raise click.UsageError(
            "--images DIR is needed to caption the images (or give --predictions)"
        )
    paths, missing = locate_images(ann, kwargs["images"])
    if not paths:
        example = ann.images[0].file_name or ann.images[0].image_id
        raise EvaluationError(
            f"none of the {len(ann)} images of {ann.source} is under {kwargs['images']} "
            f"(looked for e.g. {example!r}); point --images at the folder that holds them"
        )
    failures = _failures(missing, "FileNotFoundError", f"not found under {kwargs['images']}")
    options = resolve_options(preset=preset or "coco", **overrides)
    cap, timings["load_s"] = _open(kwargs)
    done = caption_set(cap, ann, paths, options, kwargs["batch_size"], show_progress())
    captions = done.captions
    failures += done.failures
    timings["caption_s"] = done.seconds
    timings["images_per_s"] = len(paths) / done.seconds if done.seconds else None
    if kwargs["predictions_out"] is not None:
        # Written before scoring: a metrics failure must not lose a long captioning run.
        write_results(
            kwargs["predictions_out"],
            ((im.image_id, captions[im.image_id]) for im in ann.images if im.image_id in captions),
        )
    return captions, failures, _model_provenance(cap, options, preset or "coco")


# --- agreement between runs -----------------------------------------------------------------


def _rerun(
    kwargs: dict[str, Any], reference: Any, options: CaptionOptions
) -> tuple[Any, Any, dict[str, Any]]:
    """Caption the images of a stored run again; returns (run, captioner, timings)."""
    from ..evaluation.runs import resolve_paths, run_from_results

    prov = reference.provenance
    if kwargs["golden"]:
        cap, load_s = _open_as_recorded(kwargs, reference, options)
    else:
        cap, load_s = _open(kwargs, prov.get("model"))
    sources = resolve_paths(reference, kwargs["images"])
    keys = [item.path for item in reference.items.values()]
    t0 = time.perf_counter()
    results = list(
        cap.caption_iter(
            sources, options=options, batch_size=kwargs["batch_size"], progress=show_progress()
        )
    )
    seconds = time.perf_counter() - t0
    run = run_from_results("this run", keys, results)
    return (
        run,
        cap,
        {
            "load_s": load_s,
            "caption_s": seconds,
            "images_per_s": len(sources) / seconds if seconds else None,
        },
    )


def _agreement_mode(kwargs: dict[str, Any], preset: str | None, overrides: dict[str, Any]) -> None:
    from ..evaluation.agreement import compare_runs
    from ..evaluation.metrics import score
    from ..evaluation.runs import read_run

    t_start = time.perf_counter()
    reference = read_run(kwargs["references_from"], "reference run")
    _require_metrics_tools(kwargs["spice"])
    timings: dict[str, Any] = {}
    if kwargs["predictions"] is not None:
        candidate = read_run(kwargs["predictions"], "predictions file")
        provenance: dict[str, Any] = {"source": "predictions", **candidate.provenance}
    else:
        stored = reference.caption_options()
        options = resolve_options(stored if preset is None else None, preset, **overrides)
        candidate, cap, timings = _rerun(kwargs, reference, options)
        provenance = _model_provenance(cap, options, preset)
    agreement, refs, cands = compare_runs(reference, candidate)
    t = time.perf_counter()
    result = score(refs, cands, spice=kwargs["spice"])
    timings["metrics_s"] = time.perf_counter() - t
    timings["metrics"] = result.timings
    timings["total_s"] = time.perf_counter() - t_start
    provenance.update(_environment())
    _skipped_notes(result.skipped)
    doc = {
        "metrics": result.scores,
        "scale": SCALE_NOTE,
        "skipped_metrics": result.skipped,
        "agreement": agreement.to_dict(),
        "reference": {"file": reference.source, **reference.provenance},
        "provenance": provenance,
        "timings": timings,
    }
    lines = [
        f"agreement with {reference.source}: {agreement.identical} of {agreement.compared} "
        f"captions identical ({100 * (agreement.identical_rate or 0):.1f}%)",
    ]
    if agreement.compared < 50:
        lines.append(
            f"(CIDEr weighs words by how rare they are across the set; with "
            f"{agreement.compared} images it is not meaningful)"
        )
    lines += ["", metrics_markdown_one(result.scores)]
    if agreement.differences:
        lines += ["", "differences (reference -> candidate):"]
        for d in agreement.differences[:10]:
            lines.append(f"  {d['path']}: {d['reference']!r} -> {d['candidate']!r}")
        if len(agreement.differences) > 10:
            lines.append(f"  ... {len(agreement.differences) - 10} more (see --json)")
    for side, paths in (
        ("reference", agreement.only_in_reference),
        ("candidate", agreement.only_in_candidate),
    ):
        if paths:
            warn(f"{len(paths)} image(s) only in the {side} run were not compared")
    _emit(kwargs, doc, "\n".join(lines))
    if any(f["run"] == "candidate" for f in agreement.failed):
        warn("some images failed in the candidate run (see 'failed' in --json)")
        sys.exit(1)


def metrics_markdown_one(scores: dict[str, float]) -> str:
    from ..evaluation.report import metrics_markdown

    return metrics_markdown({"score": scores})


# --- golden captions ------------------------------------------------------------------------


def _open_as_recorded(
    kwargs: dict[str, Any], golden: Any, options: CaptionOptions
) -> tuple[Any, float]:
    """Load the model that made a golden file, with its backend and dtype.

    --model, --backend and --dtype given on the command line win. The recorded
    backend and dtype describe the recorded model, so they are reused only
    while that model is checked again (and the dtype only with its backend):
    another model (an ONNX export of the same weights, say) loads with its
    own, and the notes show what changed.
    A recorded setting the model no longer has is a configuration error that
    names the flag to pass.
    """
    from ..captioner import BACKENDS

    prov = golden.provenance
    ctx = click.get_current_context()
    # Each setting goes with the ones before it: a dtype with its backend, both with the model.
    recorded: dict[str, Any] = {}
    if kwargs["model"] in (None, prov.get("model")):
        for name in ("backend", "dtype"):
            if ctx.get_parameter_source(name) is not click.core.ParameterSource.DEFAULT:
                if kwargs[name] != prov.get(name):
                    break
            elif prov.get(name) is not None:
                recorded[name] = prov[name]
    # A recorded value no flag can ask for ("int8": an export's only dtype) is what auto loads.
    settings = {
        name: recorded[name] if recorded.get(name) in choices else None
        for name, choices in (("backend", BACKENDS), ("dtype", DTYPES))
    }
    model = prov.get("model")
    try:
        cap, load_s = _open(kwargs, model, settings["backend"], settings["dtype"])
    except click.ClickException as exc:
        if not recorded or not isinstance(exc.__cause__, BackendError):
            raise
        # Load it as it is now, to say exactly which recorded setting it lacks.
        cap, load_s = _open(kwargs, model)
    now = asdict(cap.provenance_for(options))
    changed = [name for name in recorded if now[name] != recorded[name]]
    if changed:
        raise EvaluationError(
            f"{golden.source} was recorded with "
            + ", ".join(f"{name} {recorded[name]}" for name in changed)
            + ", but this model now runs with "
            + ", ".join(f"{name} {now[name]}" for name in changed)
            + ". To check it against the golden captions anyway, pass "
            + " ".join(f"--{name} auto" for name in changed)
            + " (a note will show the change); or record the golden file again"
        )
    return cap, load_s


def _golden_mode(kwargs: dict[str, Any], preset: str | None, overrides: dict[str, Any]) -> None:
    from ..evaluation.golden import compare_golden
    from ..evaluation.runs import read_run

    given = [k for k, v in overrides.items() if v is not None]
    if preset is not None or given:
        raise click.UsageError(
            "--golden reuses the decoding options stored in the golden file; "
            "drop --preset and the decoding flags"
        )
    t_start = time.perf_counter()
    golden = read_run(kwargs["golden"], "golden file")
    timings: dict[str, Any] = {}
    if kwargs["predictions"] is not None:
        run = read_run(kwargs["predictions"], "predictions file")
    else:
        options = golden.caption_options() or resolve_options(preset="default")
        run, _cap, timings = _rerun(kwargs, golden, options)
    report = compare_golden(golden, run)
    timings["total_s"] = time.perf_counter() - t_start
    doc = {**report.to_dict(), "now": run.provenance, "timings": timings}
    doc.update(_environment())
    lines = [
        f"golden {golden.source}: {report.identical} of {report.total} identical"
        + ("" if report.ok else f", {len(report.drift)} drifted, {len(report.missing)} missing")
    ]
    for d in report.drift[:20]:
        lines.append("DRIFT " + d.describe())
    if len(report.drift) > 20:
        lines.append(f"... {len(report.drift) - 20} more drifted (see --json)")
    for path in report.missing:
        lines.append(f"MISSING {path}: no result in this run")
    for name, change in report.provenance_changes.items():
        lines.append(f"note: {name} was {change['golden']!r}, now {change['now']!r}")
    _emit(kwargs, doc, "\n".join(lines))
    if not report.ok:
        sys.exit(1)
