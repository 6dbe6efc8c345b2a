"""``blipcap export onnx`` / ``export ort``: the model as ONNX graphs (or ORT format files) for the
torch-free ONNX Runtime backend and mobile builds."""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

import click

from ..records import as_record
from .common import apply, cli_errors, json_option, model_option, number_option


def _revision_option(help: str = "Hub revision (branch, tag or commit) to export.") -> Callable:
    return click.option("--revision", default=None, help=help)


def _out_option(f: Callable) -> Callable:
    return click.option(
        "--out", "-o", required=True, type=click.Path(file_okay=False), help="Directory to create."
    )(f)


def _quantize_option(help: str) -> Callable:
    return click.option(
        "--quantize", type=click.Choice(["int8", "int8-vision"]), default=None, help=help
    )


def _verify_images_option(help: str) -> Callable:
    return click.option(
        "--verify-images", type=click.IntRange(min=1), default=3, show_default=True, help=help
    )


def _verified_export_options(verify_help: str) -> Callable:
    """--verify-images, --overwrite and --json, as the verified exports (onnx, ort) take them."""

    def decorate(f: Callable) -> Callable:
        return apply(
            f,
            [
                _verify_images_option(verify_help),
                _overwrite_option("export"),
                json_option("Print the report as JSON on stdout."),
            ],
        )

    return decorate


def _overwrite_option(what: str) -> Callable:
    return click.option("--overwrite", is_flag=True, help=f"Replace an existing {what} in --out.")


def _print_report(report: Any, as_json: bool, names: str, **values: Any) -> None:
    """With --json, the report's fields ``names`` (see as_record) as JSON; else its summary."""
    if as_json:
        click.echo(json.dumps(as_record(report, names, out=str(report.out), **values), indent=2))
    else:
        click.echo(report.summary())


@click.group("export")
def export() -> None:
    """Export the model for other runtimes.

    \b
    Examples:
      blipcap export onnx --out blip-large-onnx
      blipcap export onnx --out blip-large-int8 --quantize int8
      blipcap caption photos/ --model blip-large-int8
      blipcap export ort --out blip-large-ort        # ORT format, for mobile builds
      blipcap export web --model blip-large-onnx --out blip-web   # for the browser
    """


@export.command(
    "onnx",
    epilog="""\b
Examples:
  blipcap export onnx --out blip-large-onnx
  blipcap export onnx --model Salesforce/blip-image-captioning-base --out blip-base-int8 --quantize int8
  blipcap export onnx --model ./my-finetuned-blip --out ./my-blip-onnx --opset 18
  blipcap caption photos/ --model blip-base-int8          # runs on ONNX Runtime, no torch needed

The directory holds vision.onnx (pixels -> cross-attention keys/values),
decoder.onnx (one decoding step with a self-attention cache), the tokenizer,
the preprocessing config and blipcap_onnx.json (source model and revision,
sha256 of every file, opset, quantization, verification results).
Before anything is written to --out, the export is checked against the torch
backend on synthetic images: float32 must give identical tokens (greedy and
beam search), or the export fails; int8 reports its agreement.
Exporting needs blipcap[export] (torch, onnx, onnxruntime); running the
export needs only blipcap[onnx].

\b
Exit status: 0 exported (and verified), 2 on usage or configuration errors,
3 when the model could not be found, loaded or exported.
""",
)
@model_option("Hub id or local Hugging Face directory")
@_revision_option()
@_out_option
@_quantize_option(
    "int8: int8 vision encoder and decoder (CPU; files ~3.5x smaller). "
    "int8-vision: the vision encoder only, the decoder stays float32 (closer to float32)."
)
@number_option("--opset", click.IntRange(min=14), 17, "ONNX opset.")
@_verified_export_options("Synthetic images for the check against the torch backend.")
@cli_errors
def onnx(model, revision, out, quantize, opset, verify_images, overwrite, as_json) -> None:
    """Export a BLIP captioning model to ONNX (optionally int8) and verify it."""
    from ..export import export_onnx

    # cli_errors: a failed export (ExportError) exits 3, a usage error 2.
    report = export_onnx(
        model, out, quantize=quantize, opset=opset, revision=revision, overwrite=overwrite,
        verify_images=verify_images,
    )  # fmt: skip
    _print_report(report, as_json, "out quantization files verification seconds")


@export.command(
    "ort",
    epilog="""\b
Examples:
  blipcap export ort --model Salesforce/blip-image-captioning-base --out blip-base-ort
  blipcap export ort --model ./blip-base-onnx --out blip-base-ort-fused --optimization all
  blipcap caption photos/ --model blip-base-ort       # the Python ONNX backend runs .ort files too

From a Hugging Face checkpoint the graphs are exported portable (opset 15,
attention as plain ONNX operators) so that float32 and int8-vision use only
operators of ONNX Runtime's mobile package; int8 adds com.microsoft.MatMulNBits.
From an existing `blipcap export onnx` directory the graphs are converted as
they are (fused operators, opset 17: full ONNX Runtime builds only).
The directory holds vision.ort, decoder.ort, required_operators.config (for a
minimal build's --include_ops_by_config), the tokenizer, the configs and
blipcap_onnx.json (operators used, those outside the mobile package, checks).
The .ort graphs must give tokens identical to the .onnx graphs they came from,
or nothing is written. See docs/mobile.md.

\b
Exit status: 0 exported (and verified), 2 on usage or configuration errors,
3 when the model could not be found, loaded or exported.
""",
)
@model_option("Hub id, local Hugging Face directory, or a `blipcap export onnx` directory")
@_revision_option()
@_out_option
@_quantize_option("As for `export onnx`. int8-vision stays inside the mobile package's operators.")
@click.option(
    "--optimization",
    type=click.Choice(["basic", "extended", "all"]),
    default="basic",
    show_default=True,
    help="ONNX Runtime optimizations baked into the .ort files. extended/all fuse operators "
    "into com.microsoft ones (faster on CPUs; the report says which leave the mobile set).",
)
@_verified_export_options("Synthetic images for the checks.")
@cli_errors
def ort(model, revision, out, quantize, optimization, verify_images, overwrite, as_json) -> None:
    """Export to ONNX Runtime's ORT format (mobile and minimal builds) and verify it."""
    from ..export.ort import export_ort

    report = export_ort(
        model, out, quantize=quantize, optimization=optimization, revision=revision,
        overwrite=overwrite, verify_images=verify_images,
    )  # fmt: skip
    _print_report(
        report,
        as_json,
        "out quantization optimization files operators outside_mobile_package verification seconds",
        outside_mobile_package=report.outside_mobile,
    )


@export.command(
    "web",
    epilog="""\b
Examples:
  npm install onnxruntime-web@1.31.1                       # once: the browser runtime
  blipcap export onnx --out blip-base-onnx --model Salesforce/blip-image-captioning-base
  blipcap export web --model blip-base-onnx --out blip-web \\
      --ort-dist node_modules/onnxruntime-web/dist
  blipcap serve --web-bundle blip-web                      # then open http://127.0.0.1:8000/web/

The bundle is static: the ONNX graphs, the tokenizer vocabulary,
blipcap_web.json (preprocessing, token ids, presets, provenance, sha256 of
every file), blipcap.js (preprocessing equal to Pillow's, greedy and beam
search equal to the Python backends, detokenizing) with an example page
(index.html), and onnxruntime-web's files under ort/ - copied from --ort-dist,
nothing is downloaded when the page runs. Images never leave the browser.
WASM runs with threads only when the page is cross-origin isolated (COOP and
COEP headers: blipcap serve --web-bundle sends them); WebGPU is used where the
browser has it (--no-webgpu leaves its runtime out: 29 MiB smaller).
--model may be a Hugging Face checkpoint: it is exported to ONNX first (needs
blipcap[export]).

\b
Exit status: 0 written, 2 on usage or configuration errors (onnxruntime-web
not found, --out not empty), 3 when the model could not be found, loaded or exported.
""",
)
@model_option(
    "An ONNX export (blipcap export onnx), or a hub id or Hugging Face directory to export first"
)
@_revision_option("Hub revision (branch, tag or commit).")
@_out_option
@click.option(
    "--ort-dist",
    type=click.Path(file_okay=False, exists=True),
    default=None,
    help="onnxruntime-web's dist directory (npm install onnxruntime-web) [env "
    "BLIPCAP_ORT_WEB_DIST; default: node_modules/onnxruntime-web/dist in the current "
    "directory or above].",
)
@click.option(
    "--webgpu/--no-webgpu", default=True, show_default=True, help="Ship the WebGPU runtime too."
)
@_overwrite_option("bundle")
@json_option("Print the report as JSON on stdout.")
@cli_errors
def web(model, revision, out, ort_dist, webgpu, overwrite, as_json) -> None:
    """Write a static bundle that captions images in the browser (onnxruntime-web)."""
    from ..export.web import export_web

    report = export_web(
        model, out, ort_dist=ort_dist, webgpu=webgpu, revision=revision, overwrite=overwrite
    )
    _print_report(
        report,
        as_json,
        "out files onnxruntime_web webgpu random_weights",
        onnxruntime_web=report.ort_version,
    )
