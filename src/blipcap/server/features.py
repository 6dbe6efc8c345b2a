"""Routes for the features built on captioning: alt text, documents, search."""

from __future__ import annotations

from typing import Any


def install_features(app: Any, state: Any) -> None:
    state.features = {"names": [], "bodies": {}}
