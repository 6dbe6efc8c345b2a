"""``blipcap export onnx`` / ``export ort``: the model as ONNX graphs (or ORT format files) for the
torch-free ONNX Runtime backend and mobile builds."""

from __future__ import annotations

import json

import click

from .common import DEFAULT_MODEL, cli_errors, json_option, model_option


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
@click.option("--revision", default=None, help="Hub revision (branch, tag or commit) to export.")
@click.option(
    "--out", "-o", required=True, type=click.Path(file_okay=False), help="Directory to create."
)
@click.option(
    "--quantize",
    type=click.Choice(["int8", "int8-vision"]),
    default=None,
    help="int8: int8 vision encoder and decoder (CPU; files ~3.5x smaller). "
    "int8-vision: the vision encoder only, the decoder stays float32 (closer to float32).",
)
@click.option(
    "--opset", type=click.IntRange(min=14), default=17, show_default=True, help="ONNX opset."
)
@click.option(
    "--verify-images",
    type=click.IntRange(min=1),
    default=3,
    show_default=True,
    help="Synthetic images for the check against the torch backend.",
)
@click.option("--overwrite", is_flag=True, help="Replace an existing export in --out.")
@json_option("Print the report as JSON on stdout.")
@cli_errors
def onnx(model, revision, out, quantize, opset, verify_images, overwrite, as_json) -> None:
    """Export a BLIP captioning model to ONNX (optionally int8) and verify it."""
    from ..export import export_onnx

    # cli_errors: a failed export (ExportError) exits 3, a usage error 2.
    report = export_onnx(
        model, out, quantize=quantize, opset=opset, revision=revision, overwrite=overwrite,
        verify_images=verify_images,
    )  # fmt: skip
    if as_json:
        click.echo(
            json.dumps(
                {
                    "out": str(report.out),
                    "quantization": report.quantization,
                    "files": report.files,
                    "verification": report.verification,
                    "seconds": report.seconds,
                },
                indent=2,
            )
        )
    else:
        click.echo(report.summary())


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
@click.option(
    "--model",
    "-m",
    envvar="BLIPCAP_MODEL",
    default=None,
    metavar="M",
    help="Hub id, local Hugging Face directory, or a `blipcap export onnx` directory "
    f"[env BLIPCAP_MODEL; default {DEFAULT_MODEL}].",
)
@click.option("--revision", default=None, help="Hub revision (branch, tag or commit) to export.")
@click.option(
    "--out", "-o", required=True, type=click.Path(file_okay=False), help="Directory to create."
)
@click.option(
    "--quantize",
    type=click.Choice(["int8", "int8-vision"]),
    default=None,
    help="As for `export onnx`. int8-vision stays inside the mobile package's operators.",
)
@click.option(
    "--optimization",
    type=click.Choice(["basic", "extended", "all"]),
    default="basic",
    show_default=True,
    help="ONNX Runtime optimizations baked into the .ort files. extended/all fuse operators "
    "into com.microsoft ones (faster on CPUs; the report says which leave the mobile set).",
)
@click.option(
    "--verify-images",
    type=click.IntRange(min=1),
    default=3,
    show_default=True,
    help="Synthetic images for the checks.",
)
@click.option("--overwrite", is_flag=True, help="Replace an existing export in --out.")
@click.option("--json", "as_json", is_flag=True, help="Print the report as JSON on stdout.")
@cli_errors
def ort(model, revision, out, quantize, optimization, verify_images, overwrite, as_json) -> None:
    """Export to ONNX Runtime's ORT format (mobile and minimal builds) and verify it."""
    from ..export.ort import export_ort

    report = export_ort(
        model, out, quantize=quantize, optimization=optimization, revision=revision,
        overwrite=overwrite, verify_images=verify_images,
    )  # fmt: skip
    if as_json:
        click.echo(
            json.dumps(
                {
                    "out": str(report.out),
                    "quantization": report.quantization,
                    "optimization": report.optimization,
                    "files": report.files,
                    "operators": report.operators,
                    "outside_mobile_package": report.outside_mobile,
                    "verification": report.verification,
                    "seconds": report.seconds,
                },
                indent=2,
            )
        )
    else:
        click.echo(report.summary())


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
@click.option(
    "--model",
    "-m",
    envvar="BLIPCAP_MODEL",
    default=None,
    metavar="M",
    help="An ONNX export (blipcap export onnx), or a hub id or Hugging Face directory to "
    f"export first [env BLIPCAP_MODEL; default {DEFAULT_MODEL}].",
)
@click.option("--revision", default=None, help="Hub revision (branch, tag or commit).")
@click.option(
    "--out", "-o", required=True, type=click.Path(file_okay=False), help="Directory to create."
)
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
@click.option("--overwrite", is_flag=True, help="Replace an existing bundle in --out.")
@click.option("--json", "as_json", is_flag=True, help="Print the report as JSON on stdout.")
@cli_errors
def web(model, revision, out, ort_dist, webgpu, overwrite, as_json) -> None:
    """Write a static bundle that captions images in the browser (onnxruntime-web)."""
    from ..export.web import export_web

    report = export_web(
        model, out, ort_dist=ort_dist, webgpu=webgpu, revision=revision, overwrite=overwrite
    )
    if as_json:
        click.echo(
            json.dumps(
                {
                    "out": str(report.out),
                    "files": report.files,
                    "onnxruntime_web": report.ort_version,
                    "webgpu": report.webgpu,
                    "random_weights": report.random_weights,
                },
                indent=2,
            )
        )
    else:
        click.echo(report.summary())
