"""The ONNX directory format: the manifest (``blipcap_onnx.json``), file and
graph names. It lives with its reader, the ONNX backend; the exporter
(:mod:`blipcap.export`) imports it from here, so backends never import the
exporter. Needs only the standard library (the backend runs without torch).
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..errors import ModelLoadError
from ..hub import ONNX_MANIFEST

FORMAT = "blipcap-onnx"
FORMAT_VERSION = 2  # 2: the decoder's self-attention cache is one input and output per layer
VISION_FILE = "vision.onnx"
DECODER_FILE = "decoder.onnx"
QUANTIZATIONS = (None, "int8", "int8-vision")

# Graph interface (format version 2). The cross-attention keys/values and the
# self-attention cache are one tensor per layer and kind, so that no step
# copies them into or out of a stacked tensor.
PIXELS = "pixel_values"
INPUT_IDS = "input_ids"
CACHE_ROWS = "cache_rows"
LOGITS = "logits"


def _per_layer(prefix: str, layers: int) -> list[str]:
    return [f"{prefix}_{kind}_{i}" for i in range(layers) for kind in ("key", "value")]


def cross_names(layers: int) -> list[str]:
    """The image's cross-attention keys/values: ``cross_key_0, cross_value_0, cross_key_1, ...``."""
    return _per_layer("cross", layers)


def past_names(layers: int) -> list[str]:
    """The self-attention cache a decoder step reads: ``past_key_0, past_value_0, ...``."""
    return _per_layer("past", layers)


def present_names(layers: int) -> list[str]:
    """The self-attention cache a decoder step writes: ``present_key_0, present_value_0, ...``."""
    return _per_layer("present", layers)


def reexport_hint(directory: Path | str) -> str:
    return (
        "export the model again: blipcap export onnx --model <the Hugging Face checkpoint> "
        f"--out {directory} (add --quantize int8 for the int8 variant)"
    )


@dataclass
class Manifest:
    source_model: str
    source_revision: str | None
    source_files: dict[str, str]
    opset: int
    quantization: str | None
    blipcap_version: str
    files: dict[str, str]
    """Every file of the export (relative name -> sha256), the manifest itself excepted."""
    graphs: dict[str, dict[str, Any]]
    exporter: dict[str, Any] = field(default_factory=dict)
    verification: dict[str, Any] | None = None
    random_weights: bool = False
    format: str = FORMAT
    format_version: int = FORMAT_VERSION

    def to_dict(self) -> dict[str, Any]:
        return {
            "format": self.format,
            "format_version": self.format_version,
            "blipcap_version": self.blipcap_version,
            "source": {
                "model": self.source_model,
                "revision": self.source_revision,
                "files": self.source_files,
            },
            "opset": self.opset,
            "quantization": self.quantization,
            "exporter": self.exporter,
            "graphs": self.graphs,
            "files": self.files,
            "random_weights": self.random_weights,
            "verification": self.verification,
        }

    def write(self, directory: Path) -> Path:
        path = directory / ONNX_MANIFEST
        tmp = path.with_suffix(".json.tmp")
        tmp.write_text(json.dumps(self.to_dict(), indent=2) + "\n")
        tmp.replace(path)
        return path

    @classmethod
    def read(cls, directory: Path) -> Manifest:
        path = directory / ONNX_MANIFEST
        hint = reexport_hint(directory)
        try:
            raw = json.loads(path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            raise ModelLoadError(f"{ONNX_MANIFEST} is missing from {directory}; {hint}") from None
        except (OSError, UnicodeDecodeError, ValueError) as exc:
            raise ModelLoadError(f"cannot read {path}: {exc}; {hint}") from exc
        if not isinstance(raw, dict) or raw.get("format") != FORMAT:
            raise ModelLoadError(
                f'{path} is not a blipcap ONNX manifest (expected "format": "{FORMAT}"); {hint}'
            )
        version = raw.get("format_version")
        if version != FORMAT_VERSION:
            raise ModelLoadError(
                f"{directory} was exported in format version {version!r} (by blipcap "
                f"{raw.get('blipcap_version', '?')}); this blipcap reads format version "
                f"{FORMAT_VERSION}. Upgrade blipcap, or {hint}"
            )
        try:
            source = raw["source"]
            manifest = cls(
                source_model=str(source["model"]),
                source_revision=source.get("revision"),
                source_files=dict(source.get("files") or {}),
                opset=int(raw["opset"]),
                quantization=raw.get("quantization"),
                blipcap_version=str(raw.get("blipcap_version", "?")),
                files=dict(raw["files"]),
                graphs=dict(raw["graphs"]),
                exporter=dict(raw.get("exporter") or {}),
                verification=raw.get("verification"),
                random_weights=bool(raw.get("random_weights", False)),
            )
        except (KeyError, TypeError, ValueError) as exc:
            raise ModelLoadError(f"{path} is incomplete or malformed ({exc!r}); {hint}") from exc
        if manifest.quantization not in QUANTIZATIONS:
            raise ModelLoadError(
                f"{path} names an unknown quantization {manifest.quantization!r}; {hint}"
            )
        for name in ("vision", "decoder"):
            if name not in manifest.graphs or "file" not in manifest.graphs[name]:
                raise ModelLoadError(f"{path} does not describe the {name} graph; {hint}")
        return manifest

    def check_files(self, directory: Path, digests: dict[str, str] | None = None) -> None:
        """Every file the manifest lists is present and (when digests are given) unchanged."""
        hint = reexport_hint(directory)
        missing = [name for name in self.files if not (directory / name).is_file()]
        if missing:
            raise ModelLoadError(
                f"{directory} is incomplete: {', '.join(sorted(missing))} "
                f"{'is' if len(missing) == 1 else 'are'} missing; copy the whole export "
                f"directory, or {hint}"
            )
        if digests is None:
            return
        changed = [name for name, sha in self.files.items() if digests.get(name, sha) != sha]
        if changed:
            raise ModelLoadError(
                f"{', '.join(sorted(changed))} in {directory} "
                f"{'does' if len(changed) == 1 else 'do'} not match the sha256 recorded in "
                f"{ONNX_MANIFEST}: the export is damaged or was modified after export; {hint}"
            )
