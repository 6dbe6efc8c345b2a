"""The output directory of an export: refused when it holds something that is not ours."""

from __future__ import annotations

import os
from pathlib import Path

from ..errors import OptionsError


def check_out_dir(
    out: str | os.PathLike[str], overwrite: bool, manifest: str, what: str = "a blipcap export"
) -> Path:
    """The absolute ``out``; an error unless it is new, empty, or ``what`` (has ``manifest``)
    with ``overwrite``."""
    out = Path(out).expanduser().absolute()
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        if not overwrite:
            raise OptionsError(
                f"{out} already exists and is not empty; choose another --out or pass --overwrite"
            )
        if out.is_dir() and not (out / manifest).exists():
            raise OptionsError(f"{out} is not {what} (no {manifest}); refusing to overwrite it")
    return out
