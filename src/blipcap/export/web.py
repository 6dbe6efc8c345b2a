"""``blipcap export web``: a static bundle that captions images in the browser.

The bundle holds the two graphs of an ONNX export (``blipcap export onnx``),
the tokenizer vocabulary, ``blipcap_web.json`` (model shape, preprocessing,
token ids, presets, provenance, file digests), the JavaScript module
(preprocessing equal to Pillow's, greedy and beam search equal to
:mod:`blipcap.decoding`, detokenizing) with an example page, and
onnxruntime-web's files copied from a local ``npm install`` - nothing is
fetched at run time. Needs no torch: the ONNX export is copied, not re-run
(a Hugging Face checkpoint is exported to ONNX first, which needs
``blipcap[export]``).
"""

from __future__ import annotations

import json
import os
import shutil
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .. import __version__
from ..errors import ExportError, OptionsError
from ..hub import resolve_model
from ..web import ASSETS, BUNDLE_MANIFEST
from .manifest import Manifest

FORMAT = "blipcap-web"
FORMAT_VERSION = 1
ORT_WEB_VERSION = "1.31.1"
"""The onnxruntime-web release the bundle is tested with (tests/e2e/package.json pins it)."""
ORT_DIST_ENV = "BLIPCAP_ORT_WEB_DIST"
# onnxruntime-web's files per backend: the module the page imports, then what it loads.
ORT_FILES = {
    "wasm": ("ort.wasm.min.mjs", "ort-wasm-simd-threaded.mjs", "ort-wasm-simd-threaded.wasm"),
    "webgpu": (
        "ort.webgpu.min.mjs",
        "ort-wasm-simd-threaded.asyncify.mjs",
        "ort-wasm-simd-threaded.asyncify.wasm",
    ),
}
ASSET_FILES = (
    "blipcap.js", "preprocess.js", "tokenizer.js", "decoding.js",
    "index.html", "page.js", "page.css",
)  # fmt: skip
SUPPORTED_RESAMPLE = (2, 3)  # Pillow's bilinear and bicubic (BLIP uses bicubic)


@dataclass
class WebExportReport:
    out: Path
    files: dict[str, int]
    """File name (relative) -> size in bytes."""
    ort_version: str
    webgpu: bool
    random_weights: bool

    def summary(self) -> str:
        total = sum(self.files.values())
        lines = [
            f"web bundle written to {self.out} ({len(self.files)} files, {total / 2**20:.1f} MiB; "
            f"onnxruntime-web {self.ort_version}, WASM{' + WebGPU' if self.webgpu else ''})"
        ]
        if self.random_weights:
            lines.append("  the model has random weights (a test checkpoint): the page says so")
        lines.append(
            f"  serve it cross-origin isolated (WASM threads): blipcap serve --web-bundle {self.out}"
            " and open /web/"
        )
        return "\n".join(lines)


def default_ort_dist() -> Path | None:
    """``$BLIPCAP_ORT_WEB_DIST``, else ``node_modules/onnxruntime-web/dist`` here or above."""
    env = os.environ.get(ORT_DIST_ENV)
    if env:
        return Path(env)
    here = Path.cwd()
    for directory in (here, *here.parents):
        candidate = directory / "node_modules" / "onnxruntime-web" / "dist"
        if candidate.is_dir():
            return candidate
    return None


def _install_hint() -> str:
    return (
        f"install it with npm (npm install onnxruntime-web@{ORT_WEB_VERSION}) and pass "
        f"--ort-dist node_modules/onnxruntime-web/dist (or set {ORT_DIST_ENV})"
    )


def _ort_dist(ort_dist: str | os.PathLike[str] | None, webgpu: bool) -> tuple[Path, str]:
    dist = Path(ort_dist).expanduser() if ort_dist else default_ort_dist()
    if dist is None:
        raise OptionsError(f"onnxruntime-web was not found; {_install_hint()}")
    needed = [*ORT_FILES["wasm"], *(ORT_FILES["webgpu"] if webgpu else ())]
    missing = [name for name in needed if not (dist / name).is_file()]
    if missing:
        raise OptionsError(
            f"{dist} is not onnxruntime-web's dist directory (missing {', '.join(missing)}); "
            f"{_install_hint()}"
        )
    try:
        version = json.loads((dist.parent / "package.json").read_text())["version"]
    except (OSError, ValueError, KeyError):
        version = "unknown"
    return dist, version


def pillow_vertical_first() -> bool:
    """Whether this Pillow resizes vertically first when the height shrinks much more.

    Each pass rounds to 8 bits, so the order shows in the pixels; Pillow changed
    it (always horizontal first before). Probed by resizing one axis at a time.
    """
    import numpy as np
    from PIL import Image

    rng = np.random.default_rng(0)
    im = Image.fromarray(rng.integers(0, 256, (40, 10, 3), dtype=np.uint8))
    both = np.asarray(im.resize((9, 8), Image.Resampling.BICUBIC))
    vertical_first = im.resize((10, 8), Image.Resampling.BICUBIC).resize(
        (9, 8), Image.Resampling.BICUBIC
    )
    return bool(np.array_equal(both, np.asarray(vertical_first)))


def _tokenizer_section(directory: Path, config) -> tuple[dict[str, Any], list[str]]:
    from ..model.processing import Tokenizer

    try:
        raw = json.loads((directory / "tokenizer.json").read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise ExportError(f"cannot read {directory / 'tokenizer.json'}: {exc}") from exc
    model, normalizer = raw.get("model") or {}, raw.get("normalizer") or {}
    decoder = raw.get("decoder") or {}
    if model.get("type") != "WordPiece" or normalizer.get("type") != "BertNormalizer":
        raise ExportError(
            f"{directory / 'tokenizer.json'} is not a BERT WordPiece tokenizer; the web bundle's "
            "tokenizer supports BLIP's (BertNormalizer + WordPiece) only"
        )
    if decoder.get("type") != "WordPiece" or not decoder.get("cleanup", True):
        raise ExportError(f"{directory / 'tokenizer.json'}: unsupported decoder {decoder!r}")
    ids: dict[str, int] = dict(model["vocab"])
    ids.update({t["content"]: t["id"] for t in raw.get("added_tokens", [])})
    vocab = [""] * (max(ids.values()) + 1)
    for token, i in ids.items():
        vocab[i] = token
    t = config.text
    tok = Tokenizer(directory, t.bos_token_id, t.sep_token_id, t.pad_token_id)
    # What Tokenizer.decode drops: its special ids, then the library's special added tokens.
    skip = set(tok.special_ids) | {a["id"] for a in raw.get("added_tokens", []) if a.get("special")}
    lowercase = bool(normalizer.get("lowercase", True))
    strip = normalizer.get("strip_accents")
    if strip is not None and strip != lowercase:
        raise ExportError(
            "the web tokenizer strips accents exactly when it lowercases (BERT's rule)"
        )
    section = {
        "bos_token_id": tok.bos_token_id,
        "eos_token_id": tok.eos_token_id,
        "pad_token_id": tok.pad_token_id,
        "unk_token_id": ids.get(model.get("unk_token", "[UNK]"), 100),
        "skip_ids": sorted(skip),
        "lowercase": lowercase,
        "continuing_subword_prefix": model.get("continuing_subword_prefix", "##"),
        "max_input_chars_per_word": int(model.get("max_input_chars_per_word", 100)),
    }
    return section, vocab


def _bundle_manifest(directory: Path, onnx: Manifest, ort_version: str, webgpu: bool):
    from ..model.config import BlipConfig
    from ..model.processing import ImagePreprocessor
    from ..options import PRESETS

    try:
        config = BlipConfig.from_dict(json.loads((directory / "config.json").read_text()))
    except (OSError, ValueError) as exc:
        raise ExportError(f"cannot read {directory / 'config.json'}: {exc}") from exc
    pre = ImagePreprocessor.from_dir(directory, config.vision.image_size)
    if int(pre.resample) not in SUPPORTED_RESAMPLE:
        raise ExportError(
            f"the preprocessing config of {directory} resamples with Pillow filter "
            f"{pre.resample}; the web bundle implements bilinear (2) and bicubic (3)"
        )
    tokenizer, vocab = _tokenizer_section(directory, config)
    t = config.text
    bundle = {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "blipcap_version": __version__,
        "source": {"model": onnx.source_model, "revision": onnx.source_revision},
        "onnx_export": {"quantization": onnx.quantization, "opset": onnx.opset},
        "random_weights": bool(onnx.random_weights or config.random_weights),
        "model": {
            "layers": t.num_hidden_layers,
            "heads": t.num_attention_heads,
            "head_dim": t.hidden_size // t.num_attention_heads,
            "vocab_size": t.vocab_size,
            "max_positions": t.max_position_embeddings,
        },
        "preprocess": {
            "height": pre.size[0],
            "width": pre.size[1],
            "mean": [float(x) for x in pre.mean.ravel()],
            "std": [float(x) for x in pre.std.ravel()],
            "rescale_factor": float(pre.rescale_factor),
            "resample": int(pre.resample),
            # The pass order of the Pillow that the Python backends use here.
            "vertical_first_rule": pillow_vertical_first(),
        },
        "tokenizer": tokenizer,
        "presets": {name: o.to_dict() for name, o in PRESETS.items()},
        "ort": {
            "version": ort_version,
            "wasm": ORT_FILES["wasm"][0],
            "webgpu": ORT_FILES["webgpu"][0] if webgpu else None,
        },
        "files": {
            "vision": "model/vision.onnx",
            "decoder": "model/decoder.onnx",
            "vocab": "model/vocab.json",
        },
    }
    return bundle, vocab


def export_web(
    model: str | os.PathLike[str] | None,
    out: str | os.PathLike[str],
    *,
    ort_dist: str | os.PathLike[str] | None = None,
    webgpu: bool = True,
    revision: str | None = None,
    overwrite: bool = False,
    quiet: bool = False,
) -> WebExportReport:
    """Write the web bundle of ``model`` (an ONNX export, or a checkpoint to export first) to ``out``."""
    from ..hub import file_sha256

    out = Path(out).expanduser().absolute()
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        if not overwrite:
            raise OptionsError(
                f"{out} already exists and is not empty; choose another --out or pass --overwrite"
            )
        if out.is_dir() and not (out / BUNDLE_MANIFEST).exists():
            raise OptionsError(
                f"{out} is not a blipcap web bundle (no {BUNDLE_MANIFEST}); refusing to overwrite it"
            )
    dist, ort_version = _ort_dist(ort_dist, webgpu)
    out.parent.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix=f".{out.name}.", dir=out.parent))
    try:
        files = resolve_model(model, revision=revision)
        source = files.path
        if files.kind != "onnx":
            from .onnx import export_onnx

            if not quiet:
                print(
                    f"{files.model_id} is a checkpoint: exporting it to ONNX first", file=sys.stderr
                )
            source = work / "onnx"
            export_onnx(model, source, revision=revision, quiet=quiet)  # keeps the hub id
        onnx = Manifest.read(source)
        onnx.check_files(source, files.files if files.kind == "onnx" else None)
        bundle, vocab = _bundle_manifest(source, onnx, ort_version, webgpu)
        (work / "model").mkdir()
        for graph, name in (("vision", "vision.onnx"), ("decoder", "decoder.onnx")):
            shutil.copyfile(source / onnx.graphs[graph]["file"], work / "model" / name)
        (work / "model" / "vocab.json").write_text(json.dumps(vocab, ensure_ascii=False))
        for name in ASSET_FILES:
            shutil.copyfile(ASSETS / name, work / name)
        (work / "ort").mkdir()
        for name in ORT_FILES["wasm"] + (ORT_FILES["webgpu"] if webgpu else ()):
            shutil.copyfile(dist / name, work / "ort" / name)
        if source == work / "onnx":
            shutil.rmtree(source)
        sizes = {
            p.relative_to(work).as_posix(): p.stat().st_size
            for p in sorted(work.rglob("*"))
            if p.is_file()
        }
        bundle["sha256"] = {name: file_sha256(work / name) for name in sizes}
        (work / BUNDLE_MANIFEST).write_text(json.dumps(bundle, indent=2) + "\n")
        sizes[BUNDLE_MANIFEST] = (work / BUNDLE_MANIFEST).stat().st_size
        os.chmod(work, 0o755)
        if out.exists():
            shutil.rmtree(out)
        work.rename(out)
    except BaseException:
        shutil.rmtree(work, ignore_errors=True)
        raise
    return WebExportReport(
        out=out,
        files=sizes,
        ort_version=ort_version,
        webgpu=webgpu,
        random_weights=bundle["random_weights"],
    )
