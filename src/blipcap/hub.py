"""Model resolution: a hub id, a local directory or an exported ONNX directory -> :class:`ModelFiles`.

``resolve_model`` finds the files and checks that they form a BLIP captioning
checkpoint; it does not load them (the engine does, reading every dimension
from ``config.json`` so that the large and base checkpoints both work).

Order: the ``model`` argument, else ``$BLIPCAP_MODEL``, else :data:`DEFAULT_MODEL`.
An existing directory is used as it is. Anything else is a Hugging Face hub id,
fetched with ``huggingface_hub.snapshot_download`` into its usual cache
(``HF_HUB_CACHE`` / ``HF_HOME``), which also honours ``HF_HUB_OFFLINE``.

File digests (``ModelFiles.files``) are sha256 of the file contents, obtained
without re-reading 1.8 GB on every run:

* a hub-cache file that links to ``blobs/<64 hex>`` is a Git LFS (or Xet)
  object, which huggingface_hub stores under the sha256 the hub declares for
  its contents (the file's "SHA256" on the hub): that name is the digest. It
  is not re-read to confirm it; ``hf cache verify <model id>`` does that;
* any other file is hashed once with a streaming sha256; the digest is kept in
  a small sidecar under ``~/.cache/blipcap/sha256/`` (``$BLIPCAP_CACHE_DIR``
  or ``$XDG_CACHE_HOME/blipcap`` if set) keyed by the file's real path, size,
  mtime_ns and inode, and reused while all four are unchanged - the same
  quick check ``make`` and ``rsync`` rely on.

A local directory's ``revision`` is ``"local-"`` plus the first 12 hex digits
of a sha256 over those digests, so it changes whenever the weights, config,
tokenizer or preprocessor files change.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shlex
import shutil
import sys
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from .errors import ModelLoadError, ModelNotFoundError, OptionsError

DEFAULT_MODEL = "Salesforce/blip-image-captioning-large"
SUPPORTED_MODELS = (
    "Salesforce/blip-image-captioning-large",
    "Salesforce/blip-image-captioning-base",
)
MODEL_ENV = "BLIPCAP_MODEL"
ONNX_MANIFEST = "blipcap_onnx.json"
# In config.json: set by blipcap.testing on its random-weight checkpoints, read
# here so that every result from such a model is marked (Provenance.random_weights).
RANDOM_WEIGHTS_KEY = "blipcap_random_weights"

# The small files a model directory carries besides its weights: config, tokenizer, preprocessing.
METADATA_FILES = (
    "config.json",
    "tokenizer.json",
    "tokenizer_config.json",
    "special_tokens_map.json",
    "vocab.txt",
    "preprocessor_config.json",
    "processor_config.json",
    "generation_config.json",
)
# What a captioning checkpoint needs from a hub repository. The published BLIP
# repositories also ship pytorch_model.bin and tf_model.h5 (1.8 GB each for
# large): fetch the pickle only when a repository has no safetensors, and the
# TensorFlow file only when it has neither.
HUB_PATTERNS = [
    *METADATA_FILES,
    "model.safetensors",
    "model-*-of-*.safetensors",
    "model.safetensors.index.json",
]
BIN_PATTERNS = ["pytorch_model.bin", "pytorch_model.bin.index.json", "pytorch_model-*-of-*.bin"]
# The last resort: TensorFlow weights, read by name with h5py (blipcap[tf]).
TF_PATTERNS = ["tf_model.h5"]
# Patterns for the fix-it command: a superset of HUB_PATTERNS that stays short.
_CLI_INCLUDE = ["*.json", "*.safetensors", "*.txt"]
_SHA256 = re.compile(r"[0-9a-f]{64}")
_COMMIT = re.compile(r"[0-9a-f]{40}")
_TRUE = {"1", "ON", "YES", "TRUE"}
_PROGRESS_MIN_BYTES = 64 << 20


@dataclass(frozen=True)
class ModelFiles:
    """A resolved model: where its files are and what exactly they are."""

    model_id: str
    """What the user asked for (argument or ``$BLIPCAP_MODEL``), or :data:`DEFAULT_MODEL`."""
    path: Path
    """Absolute directory holding the files (a hub snapshot directory for hub ids)."""
    kind: Literal["hf", "onnx"]
    """``"onnx"`` when the directory holds a ``blipcap_onnx.json`` manifest."""
    revision: str | None
    """Hub commit hash, or ``"local-<12 hex>"`` over the file digests of a local directory."""
    config: dict[str, Any] | None
    """Parsed config.json (None only for an ONNX directory without one)."""
    weights: Path | list[Path] | None
    """model.safetensors, else the shards of model.safetensors.index.json (a list), else
    pytorch_model.bin (or its shards), else tf_model.h5. None for an ONNX directory."""
    files: dict[str, str] = field(default_factory=dict)
    """File name relative to ``path`` (posix) -> sha256 hex digest."""
    source: Literal["hub", "local"] = "local"

    def __hash__(self) -> int:
        # config and files are dicts; these four fields already pin the model down.
        return hash((self.model_id, self.path, self.kind, self.revision))

    @property
    def weight_files(self) -> list[Path]:
        """``weights`` as a list (empty for ONNX directories)."""
        if self.weights is None:
            return []
        return list(self.weights) if isinstance(self.weights, list) else [self.weights]

    @property
    def random_weights(self) -> bool:
        """True for the random-weight test checkpoints of :mod:`blipcap.testing`."""
        return bool((self.config or {}).get(RANDOM_WEIGHTS_KEY))


def resolve_model(
    model: str | os.PathLike[str] | None = None,
    *,
    revision: str | None = None,
    offline: bool | None = None,
    cache_dir: str | os.PathLike[str] | None = None,
) -> ModelFiles:
    """Find the files of ``model`` (hub id or directory), downloading them if needed and allowed.

    ``offline=None`` follows ``HF_HUB_OFFLINE``; ``cache_dir=None`` follows
    ``HF_HUB_CACHE`` / ``HF_HOME``. Raises :class:`ModelNotFoundError` when the
    model cannot be found or fetched and :class:`ModelLoadError` when its files
    are incomplete or not a BLIP captioning checkpoint.
    """
    if model is None or (isinstance(model, str) and not model.strip()):
        model = os.environ.get(MODEL_ENV, "").strip() or DEFAULT_MODEL
    model_id = os.fspath(model).strip() if isinstance(model, str) else os.fspath(model)
    local = Path(model_id).expanduser()
    if local.is_dir():
        if revision is not None:
            raise OptionsError(
                f"A revision ({revision!r}) applies to hub ids only, but {model_id!r} is a "
                "local directory. Drop the revision, or check out the revision you want there."
            )
        return _resolve_local(model_id, local.resolve(), source="local")
    if local.exists():
        raise ModelLoadError(
            f"{model_id!r} is a file, not a model directory. Pass the directory that holds "
            "config.json and the weights (or a hub id such as "
            f"{DEFAULT_MODEL})."
        )
    if not isinstance(model, str) or _looks_like_path(model_id):
        raise ModelNotFoundError(
            f"Model directory {model_id!r} does not exist (no such directory: {local.absolute()}). "
            f"Check the path, or pass a hub id such as {DEFAULT_MODEL}."
        )
    return _resolve_hub(model_id, revision, offline, cache_dir)


def load_json(path: str | os.PathLike[str]) -> dict[str, Any]:
    """Parse a JSON object file; a missing, unreadable or malformed file is a :class:`ModelLoadError`."""
    p = Path(path)
    try:
        text = p.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ModelLoadError(f"{p.name} is missing from {p.parent}.") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise ModelLoadError(f"Cannot read {p.name} in {p.parent}: {exc}") from exc
    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        raise ModelLoadError(
            f"{p.name} in {p.parent} is not valid JSON (line {exc.lineno}, column {exc.colno}: "
            f"{exc.msg}). The file is damaged: download or export the model again."
        ) from exc
    if not isinstance(data, dict):
        raise ModelLoadError(
            f"{p.name} in {p.parent} should hold a JSON object, not {type(data).__name__}."
        )
    return data


def hub_cache_dir(cache_dir: str | os.PathLike[str] | None = None) -> Path:
    """The Hugging Face hub cache in effect now, the way huggingface_hub picks it.

    Read from the environment at call time (huggingface_hub reads it once, at import).
    """
    if cache_dir is not None:
        return Path(cache_dir).expanduser()
    env = os.environ
    for var in ("HF_HUB_CACHE", "HUGGINGFACE_HUB_CACHE"):
        if env.get(var):
            return Path(os.path.expandvars(env[var])).expanduser()
    if env.get("HF_HOME"):
        return Path(os.path.expandvars(env["HF_HOME"])).expanduser() / "hub"
    xdg = env.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(xdg) / "huggingface" / "hub"


def offline_env() -> bool:
    """True when HF_HUB_OFFLINE is set now or was set when huggingface_hub was imported."""
    if os.environ.get("HF_HUB_OFFLINE", "").upper() in _TRUE:
        return True
    from huggingface_hub import constants

    return bool(constants.HF_HUB_OFFLINE)


def download_command(
    model_id: str,
    *,
    revision: str | None = None,
    local_dir: str | None = None,
    cache_dir: str | os.PathLike[str] | None = None,
) -> str:
    """The shell command that fetches exactly what blipcap needs of ``model_id``."""
    try:
        from huggingface_hub import __version__ as version

        major, minor = (int(x) for x in version.split(".")[:2])
        new_cli = (major, minor) >= (0, 34)  # `hf` replaced `huggingface-cli` in 0.34
    except (ImportError, ValueError):
        new_cli = True
    if new_cli:
        parts = [_cli(new_cli), "download", model_id, *(f'--include "{p}"' for p in _CLI_INCLUDE)]
    else:  # the old argparse CLI takes one --include with several values
        parts = [
            _cli(new_cli),
            "download",
            model_id,
            "--include",
            *(f'"{p}"' for p in _CLI_INCLUDE),
        ]
    if revision:
        parts += ["--revision", revision]
    if local_dir:
        parts += ["--local-dir", local_dir]
    elif cache_dir is not None:
        parts += ["--cache-dir", str(cache_dir)]
    return " ".join(parts)


def _cli(new_cli: bool) -> str:
    """How to run huggingface_hub's command line from a shell, here.

    Its name when PATH finds it; else its full path (a virtual environment that
    is not activated has it next to its Python); else through this Python.
    """
    name = "hf" if new_cli else "huggingface-cli"
    if shutil.which(name):
        return name
    beside = Path(sys.executable).parent / name
    if beside.is_file() and os.access(beside, os.X_OK):
        return shlex.quote(str(beside))
    module = "huggingface_hub.cli.hf" if new_cli else "huggingface_hub.commands.huggingface_cli"
    return f"{shlex.quote(sys.executable)} -m {module}"


def blipcap_cache_dir() -> Path:
    """Where blipcap keeps small caches of its own (file digests)."""
    if os.environ.get("BLIPCAP_CACHE_DIR"):
        return Path(os.environ["BLIPCAP_CACHE_DIR"]).expanduser()
    xdg = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(xdg) / "blipcap"


def file_sha256(path: str | os.PathLike[str]) -> str:
    """sha256 hex digest of a file, without re-reading it when a cheap, trustworthy answer exists.

    See the module docstring for the two shortcuts (LFS blob names in the hub
    cache; a sidecar keyed by real path, size, mtime_ns and inode).
    """
    p = Path(path)
    real = Path(os.path.realpath(p))
    if real.parent.name == "blobs" and _SHA256.fullmatch(real.name):
        return real.name
    st = real.stat()
    key = {"path": str(real), "size": st.st_size, "mtime_ns": st.st_mtime_ns, "inode": st.st_ino}
    sidecar = (
        blipcap_cache_dir()
        / "sha256"
        / (hashlib.sha256(str(real).encode()).hexdigest()[:32] + ".json")
    )
    try:
        cached = json.loads(sidecar.read_text())
        if {k: cached.get(k) for k in key} == key and _SHA256.fullmatch(str(cached.get("sha256"))):
            return cached["sha256"]
    except (OSError, ValueError):
        pass
    digest = _hash_file(real, st.st_size, p.name)
    try:  # best effort: a read-only home just means hashing again next time
        sidecar.parent.mkdir(parents=True, exist_ok=True)
        tmp = sidecar.with_name(f"{sidecar.name}.{os.getpid()}.{threading.get_ident()}.tmp")
        tmp.write_text(json.dumps({**key, "sha256": digest}))
        os.replace(tmp, sidecar)
    except OSError:
        pass
    return digest


def _hash_file(path: Path, size: int, name: str) -> str:
    h = hashlib.sha256()
    bar = None
    if size >= _PROGRESS_MIN_BYTES:
        from tqdm.auto import tqdm

        bar = tqdm(
            total=size, desc=f"Hashing {name}", unit="B", unit_scale=True, file=sys.stderr,
            leave=False, disable=None,
        )  # fmt: skip
    with open(path, "rb") as f:
        while chunk := f.read(1 << 20):
            h.update(chunk)
            if bar is not None:
                bar.update(len(chunk))
    if bar is not None:
        bar.close()
    return h.hexdigest()


# --- local directories ---------------------------------------------------------------------------


def _looks_like_path(s: str) -> bool:
    # Hub ids are "name" or "org/name": anything else with a separator is meant as a path.
    return (
        s in (".", "..")
        or s.startswith(("./", "../", "/", "~", ".\\", "..\\"))
        or s.count("/") > 1
        or (os.sep != "/" and os.sep in s)
        or bool(Path(s).drive)
    )


def _resolve_local(model_id: str, path: Path, *, source: Literal["hub", "local"]) -> ModelFiles:
    if (path / ONNX_MANIFEST).is_file():
        config = load_json(path / "config.json") if (path / "config.json").is_file() else None
        files = {
            f.relative_to(path).as_posix(): file_sha256(f)
            for f in sorted(path.rglob("*"))
            if f.is_file() and not any(part.startswith(".") for part in f.relative_to(path).parts)
        }
        return ModelFiles(
            model_id, path, "onnx", _local_revision(files), config, None, files, source
        )

    config, weights = _check_checkpoint(model_id, path, source)
    names = [n for n in METADATA_FILES if (path / n).is_file()]
    names += [
        n
        for n in ("model.safetensors.index.json", "pytorch_model.bin.index.json")
        if (path / n).is_file()
    ]
    paths = [path / n for n in names] + (weights if isinstance(weights, list) else [weights])
    files = {p.relative_to(path).as_posix(): file_sha256(p) for p in paths}
    files = dict(sorted(files.items()))
    revision = _local_revision(files) if source == "local" else _commit_of(path)
    return ModelFiles(model_id, path, "hf", revision, config, weights, files, source)


def _local_revision(files: dict[str, str]) -> str:
    h = hashlib.sha256(
        "".join(f"{name}\0{digest}\n" for name, digest in sorted(files.items())).encode()
    )
    return "local-" + h.hexdigest()[:12]


def _commit_of(snapshot: Path) -> str | None:
    return snapshot.name if _COMMIT.fullmatch(snapshot.name) else None


def _check_checkpoint(
    model_id: str, path: Path, source: str
) -> tuple[dict[str, Any], Path | list[Path]]:
    """Check the files a BLIP captioning checkpoint needs; name every missing one."""
    missing = []
    if not (path / "config.json").is_file():
        missing.append("config.json")
    if not ((path / "tokenizer.json").is_file() or (path / "vocab.txt").is_file()):
        missing.append("tokenizer.json (or vocab.txt)")
    if not (
        (path / "preprocessor_config.json").is_file() or (path / "processor_config.json").is_file()
    ):
        missing.append("preprocessor_config.json (or processor_config.json)")
    weights = _find_weights(path)
    if weights is None:
        missing.append("model.safetensors (or pytorch_model.bin)")
    if missing:
        if source == "hub":
            fix = (
                f"The cached copy of {model_id} is incomplete. Fetch it again with: "
                f"{download_command(model_id, cache_dir=path.parents[2])}"
            )
        else:
            fix = (
                "A BLIP model directory needs config.json, tokenizer.json or vocab.txt, "
                "preprocessor_config.json or processor_config.json, and model.safetensors or "
                "pytorch_model.bin - as written by BlipForConditionalGeneration.save_pretrained and "
                "BlipProcessor.save_pretrained, or fetched with: "
                f"{download_command(DEFAULT_MODEL, local_dir=str(path))}"
            )
        raise ModelLoadError(f"Missing from {path}: {', '.join(missing)}. {fix}")
    config = load_json(path / "config.json")
    _check_config(config, path)
    assert weights is not None
    return config, weights


def _check_config(config: dict[str, Any], path: Path) -> None:
    where = path / "config.json"
    model_type = config.get("model_type")
    archs = config.get("architectures") or []
    blip_like = "text_config" in config and "vision_config" in config
    if model_type != "blip" and not (model_type is None and blip_like):
        raise ModelLoadError(
            f"{where} describes a {model_type or 'unknown'!r} model, not BLIP (model_type 'blip'). "
            f"blipcap runs BLIP captioning checkpoints such as {', '.join(SUPPORTED_MODELS)}."
        )
    if archs and "BlipForConditionalGeneration" not in archs:
        raise ModelLoadError(
            f"{where} is a {', '.join(map(str, archs))} checkpoint, not a captioning one "
            "(BlipForConditionalGeneration). Use a captioning checkpoint such as "
            f"{', '.join(SUPPORTED_MODELS)}."
        )


def _find_weights(path: Path) -> Path | list[Path] | None:
    if (path / "model.safetensors").is_file():
        return path / "model.safetensors"
    if (path / "model.safetensors.index.json").is_file():
        return _shards(path / "model.safetensors.index.json")
    if (path / "pytorch_model.bin").is_file():
        return path / "pytorch_model.bin"
    if (path / "pytorch_model.bin.index.json").is_file():
        return _shards(path / "pytorch_model.bin.index.json")
    if (path / "tf_model.h5").is_file():
        return path / "tf_model.h5"
    return None


def _shards(index: Path) -> list[Path]:
    weight_map = load_json(index).get("weight_map")
    if not isinstance(weight_map, dict) or not weight_map:
        raise ModelLoadError(
            f"{index.name} in {index.parent} has no weight_map: the index is damaged."
        )
    shards = [index.parent / name for name in sorted(set(weight_map.values()))]
    missing = [s.name for s in shards if not s.is_file()]
    if missing:
        raise ModelLoadError(
            f"Missing from {index.parent}: {', '.join(missing)} (weight shards listed in {index.name})."
        )
    return shards


# --- the hub ---------------------------------------------------------------------------------------


def _resolve_hub(
    model_id: str,
    revision: str | None,
    offline: bool | None,
    cache_dir: str | os.PathLike[str] | None,
) -> ModelFiles:
    from huggingface_hub import snapshot_download
    from huggingface_hub.errors import (
        GatedRepoError,
        HfHubHTTPError,
        HFValidationError,
        LocalEntryNotFoundError,
        RepositoryNotFoundError,
        RevisionNotFoundError,
    )
    from huggingface_hub.utils import validate_repo_id

    try:
        validate_repo_id(model_id)
    except HFValidationError as exc:
        raise ModelNotFoundError(
            f"{model_id!r} is neither an existing directory nor a valid hub model id ({exc}). "
            f"Pass a directory, or a hub id such as {DEFAULT_MODEL}."
        ) from None
    cache = hub_cache_dir(cache_dir)
    env_offline = offline_env()
    local_only = env_offline if offline is None else offline
    kwargs: dict[str, Any] = dict(
        revision=revision, cache_dir=str(cache), local_files_only=local_only
    )  # fmt: skip
    try:
        snapshot = Path(snapshot_download(model_id, allow_patterns=HUB_PATTERNS, **kwargs))
        if _find_weights(snapshot) is None:
            snapshot = Path(
                snapshot_download(model_id, allow_patterns=HUB_PATTERNS + BIN_PATTERNS, **kwargs)
            )
        if _find_weights(snapshot) is None:
            patterns = HUB_PATTERNS + BIN_PATTERNS + TF_PATTERNS
            snapshot = Path(snapshot_download(model_id, allow_patterns=patterns, **kwargs))
    except GatedRepoError:
        raise ModelNotFoundError(
            f"Model {model_id!r} is gated or private on the hub and this machine is not allowed to "
            "download it. Request access on its hub page, then log in with: hf auth login"
        ) from None
    except RepositoryNotFoundError:
        raise ModelNotFoundError(
            f"There is no model {model_id!r} on the Hugging Face hub (or it is private). Check the "
            f"spelling; supported models: {', '.join(SUPPORTED_MODELS)}. "
            "A local model is passed as a directory path."
        ) from None
    except RevisionNotFoundError:
        raise ModelNotFoundError(
            f"Model {model_id!r} has no revision {revision!r} on the hub. "
            "Pass a branch, tag or commit hash that exists, or leave the revision out."
        ) from None
    except LocalEntryNotFoundError as exc:
        raise _not_available(
            model_id, revision, cache, cache_dir, offline, env_offline, exc
        ) from None
    except (HfHubHTTPError, OSError) as exc:
        raise _not_available(
            model_id, revision, cache, cache_dir, offline, env_offline, exc
        ) from exc
    return _resolve_local(model_id, snapshot, source="hub")


def _not_available(
    model_id: str,
    revision: str | None,
    cache: Path,
    cache_dir: object,
    offline: bool | None,
    env_offline: bool,
    exc: Exception,
) -> ModelNotFoundError:
    from huggingface_hub.errors import IncompleteSnapshotError

    if isinstance(exc, IncompleteSnapshotError):
        state = f"its cached copy is incomplete ({exc})"
    elif offline:
        state = "it is not in the Hugging Face cache and offline=True was requested"
    elif offline is None and env_offline:
        state = "it is not in the Hugging Face cache and HF_HUB_OFFLINE is set, so it cannot be downloaded"
    else:
        state = f"it is not in the Hugging Face cache and the hub could not be reached ({exc})"
    folder = cache / ("models--" + model_id.replace("/", "--"))
    rev = f" (revision {revision})" if revision else ""
    lines = [f"Model {model_id!r}{rev} is not available: {state}.", f"Looked in: {folder}"]
    cached = _cached_models(cache)
    if cached:
        lines.append(f"Models in that cache: {', '.join(cached)}")
    name = model_id.rsplit("/", 1)[-1]
    unset = " (unset HF_HUB_OFFLINE to let blipcap download it itself)" if env_offline else ""
    explicit_cache = cache if cache_dir is not None else None
    lines += [
        "Fix it in one of these ways:",
        f"  - with network access, fill the cache{unset}:",
        f"      {download_command(model_id, revision=revision, cache_dir=explicit_cache)}",
        "  - on a machine with network access, download it to a folder, copy that folder here and "
        "point blipcap at it:",
        f"      {download_command(model_id, revision=revision, local_dir=name)}",
        f"      blipcap caption --model ./{name} ...   (or: export {MODEL_ENV}=./{name})",
    ]
    return ModelNotFoundError("\n".join(lines))


def _cached_models(cache: Path) -> list[str]:
    try:
        entries = sorted(cache.iterdir())
    except OSError:
        return []
    return [
        e.name[len("models--") :].replace("--", "/")
        for e in entries
        if e.name.startswith("models--")
        and (e / "snapshots").is_dir()
        and any((e / "snapshots").iterdir())
    ]
