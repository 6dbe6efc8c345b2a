"""Captioning for the routes and the feature modules, through the server's one micro-batcher.

:meth:`ServerState.caption_loaded <blipcap.server.app.ServerState.caption_loaded>`
captions decoded request inputs through the batcher (which calls the engine
with the batch) and merges failed inputs back in order with
:func:`blipcap.engine.split_good`; :class:`BatchedCaptioner` gives feature
modules that run in worker threads a ``Captioner``-like ``caption()`` that
goes the same way.
"""

from __future__ import annotations

import asyncio
import dataclasses
import time
from typing import TYPE_CHECKING, Any

from ..images import CancelToken
from ..options import resolve_options
from ..results import Caption, ItemError
from .inputs import Loaded, decode_one

if TYPE_CHECKING:
    from .app import ServerState


class BatchedCaptioner:
    """``caption()`` from a worker thread, routed through the shared batcher.

    Feature modules (alt text, documents) call ``captioner.caption(...)``
    synchronously; this sends their images through the same micro-batcher as
    the HTTP caption requests, so the model still runs in one thread.
    """

    def __init__(
        self,
        state: ServerState,
        loop: asyncio.AbstractEventLoop,
        client: str,
        cancel: CancelToken,
    ):
        self._state = state
        self._loop = loop
        self._client = client
        self._cancel = cancel
        self.deadline = cancel.deadline or time.monotonic() + state.config.request_timeout

    def __getattr__(self, name: str) -> Any:  # model_id, random_weights, provenance_for, ...
        return getattr(self._state.captioner, name)

    def caption(self, images, preset=None, options=None, batch_size="auto", progress=False, **kw):
        opts = resolve_options(options, preset, **kw)
        limits = self._state.config.image_limits
        loaded = [decode_one(source, limits, self._cancel) for source in images]
        if not any(item.image is not None for item in loaded):
            provenance = self._state.captioner.provenance_for(opts)
            return [dataclasses.replace(failed_record(i, provenance), path=None) for i in loaded]
        future = asyncio.run_coroutine_threadsafe(
            self._state.caption_loaded(loaded, opts, self.deadline, self._client), self._loop
        )
        return future.result()


def failed_record(item: Loaded, provenance: Any) -> Caption:
    """The record of an input that failed before the model (its error says why)."""
    error = ItemError.from_exception(item.error)  # type: ignore[arg-type]
    return Caption(path=item.name, caption=None, error=error, provenance=provenance)
