"""How to get a hub model onto this machine: the download command and the not-available error.

Split from :mod:`blipcap.hub`, which resolves what is already there.
"""

from __future__ import annotations

import os
import shlex
import shutil
import sys
from pathlib import Path

from .errors import ModelNotFoundError

_CLI_INCLUDE = ["*.json", "*.safetensors", "*.txt"]


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


def not_available_error(
    model_id: str,
    revision: str | None,
    cache: Path,
    cache_dir: object,
    offline: bool | None,
    env_offline: bool,
    exc: Exception,
    role_option: str,
    role_env: str | None,
) -> ModelNotFoundError:
    """The error for a hub model that is neither cached nor downloadable, with the ways to fix it."""
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
        f"      blipcap caption {role_option} ./{name} ..."
        + (f"   (or: export {role_env}=./{name})" if role_env else ""),
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
