"""Turning a request into decoded images and options, with the hard edges on.

* Body: ``multipart/form-data`` (``files`` parts plus form fields) or JSON
  (``images`` as URL / base64 objects); anything else is 415.
* URLs go through :func:`blipcap.fetch.fetch_url` (SSRF-safe: http/https only,
  every resolved address checked, the checked address connected to, redirects
  re-checked, size cap), in a worker thread under the request's deadline.
* Bytes are decoded by :func:`blipcap.images.load_image` (format allow-list,
  byte/pixel/bomb/work limits, the process decode-memory budget) in a worker
  thread, so the event loop never decodes; a decode stops at the request's
  deadline or when the request is cancelled.

Per-input failures are kept as :class:`Loaded` items with an error; the
caller decides (all failed: the first error's status; some failed: per-item
error records next to the good results, as ``blipcap caption`` does).
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import contextlib
import json
import re
import time
import typing
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

from fastapi import Request
from pydantic import BaseModel, ValidationError
from starlette.concurrency import run_in_threadpool
from starlette.datastructures import UploadFile
from starlette.exceptions import HTTPException

from ..errors import (
    BlipcapError,
    CorruptImageError,
    DecodeBusyError,
    DecodeCancelledError,
    FetchError,
    ImageTooLargeError,
    InputError,
    OptionsError,
    UnsupportedFormatError,
)
from ..images import CancelToken, ImageLimits, load_image
from ..options import CaptionOptions, resolve_options
from .config import ServerConfig
from .schemas import OptionsIn, form_model


class RequestError(BlipcapError):
    """The request as a whole is unusable; ``status`` is the HTTP status to answer with."""

    def __init__(self, status: int, message: str):
        super().__init__(message)
        self.status = status


def status_for(exc: BaseException) -> int:
    """The HTTP status for an input error."""
    if isinstance(exc, RequestError):
        return exc.status
    if isinstance(exc, UnsupportedFormatError):
        return 415
    if isinstance(exc, ImageTooLargeError):
        return 413
    if isinstance(exc, DecodeBusyError):
        return 503  # other images hold the decode-memory budget: retry later
    if isinstance(exc, DecodeCancelledError):
        return 504  # the request's deadline passed while decoding, as for the model
    if isinstance(exc, (CorruptImageError, FetchError, InputError, OptionsError)):
        return 422
    return 500


@dataclass
class RawInput:
    """One image as it arrived: bytes (upload, base64) or a URL still to fetch."""

    name: str | None
    data: bytes | None = None
    url: str | None = None


@dataclass
class Loaded:
    """One input after fetching and decoding: an RGB image, or why not."""

    name: str | None
    image: Any = None
    error: InputError | None = None


@dataclass
class ParsedRequest:
    inputs: list[RawInput]
    fields: dict[str, Any]
    """Everything except the images: options, platforms, ... (JSON values)."""


_SAFE_NAME = re.compile(r"[\x00-\x1f\x7f]")


def _clean_name(name: str | None) -> str | None:
    if not name:
        return None
    # Control characters (CR/LF in a filename) never reach logs or records.
    return _SAFE_NAME.sub("", name)[:255] or None


async def parse_request(
    request: Request, config: ServerConfig, json_model: type[BaseModel]
) -> ParsedRequest:
    """Read the body (multipart or JSON) into raw inputs and the remaining fields.

    Both kinds of body are validated by the same model, ``json_model``: a
    multipart body's form fields by the model less its ``images`` (see
    :func:`form_model`), so a rule (a range, a pattern, no unknown fields)
    is written once and holds for both.
    """
    ctype = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if ctype == "multipart/form-data":
        return await _parse_multipart(request, config, json_model)
    if ctype == "application/json" or ctype.endswith("+json"):
        return _parse_json(await request.body(), config, json_model)
    raise RequestError(
        415,
        "send images as multipart/form-data ('files' parts) or as JSON "
        '{"images": [{"url": ...} | {"base64": ...}]} with Content-Type: application/json',
    )


async def _parse_multipart(
    request: Request, config: ServerConfig, json_model: type[BaseModel]
) -> ParsedRequest:
    max_images = config.max_images_per_request
    # One more than allowed so that "too many" gets our clear 413 below.
    try:
        form = await request.form(max_files=max_images + 1, max_fields=64)
    except HTTPException as exc:
        if "Too many files" in str(exc.detail):
            raise RequestError(
                413, f"more than {max_images} images in one request; split them up"
            ) from None
        raise
    model = form_model(json_model)
    lists = _list_fields(model)
    inputs: list[RawInput] = []
    fields: dict[str, Any] = {}
    for key, value in form.multi_items():
        if key == "files":
            if not isinstance(value, UploadFile):
                raise RequestError(422, "'files' parts must be files (use a file upload field)")
            inputs.append(RawInput(_clean_name(value.filename), data=await value.read()))
            await value.close()
        elif isinstance(value, UploadFile):
            raise RequestError(422, f"unexpected file in field {key!r}; send images as 'files'")
        elif key in lists:
            fields.setdefault(key, []).append(value)
        else:
            fields[key] = value
    if not inputs:
        raise RequestError(422, "no images: add one or more 'files' parts")
    _check_count(len(inputs), max_images)
    try:
        parsed = model.model_validate(_form_fields(fields))
    except ValidationError as exc:
        allowed = ["files", *model.model_fields]
        raise RequestError(422, "invalid form fields: " + _pydantic_message(exc, allowed)) from None
    return ParsedRequest(inputs, parsed.model_dump(exclude_none=True))


def _parse_json(body: bytes, config: ServerConfig, json_model: type[BaseModel]) -> ParsedRequest:
    try:
        parsed = json_model.model_validate_json(body)
    except ValidationError as exc:
        allowed = list(json_model.model_fields)
        raise RequestError(422, "invalid JSON body: " + _pydantic_message(exc, allowed)) from None
    images = getattr(parsed, "images", None) or []  # optional where a model allows it
    _check_count(len(images), config.max_images_per_request)
    inputs = []
    for ref in images:
        if ref.url is not None:
            inputs.append(RawInput(_clean_name(ref.name) or ref.url, url=ref.url))
        else:
            inputs.append(RawInput(_clean_name(ref.name), data=_b64(ref.base64 or "")))
    return ParsedRequest(inputs, parsed.model_dump(exclude={"images"}, exclude_none=True))


def _list_fields(model: type[BaseModel]) -> set[str]:
    """Fields that take a list: a form sends them as repeated parts (platforms=x, platforms=...)."""
    return {
        name
        for name, info in model.model_fields.items()
        if list in (typing.get_origin(info.annotation), info.annotation)
    }


def _check_count(n: int, limit: int) -> None:
    if n > limit:
        raise RequestError(
            413,
            f"{n} images in one request; the limit is {limit}. Split them over several requests.",
        )


def _form_fields(fields: dict[str, Any]) -> dict[str, Any]:
    """Form values are strings: parse the JSON one (options); pydantic converts the scalars."""
    out: dict[str, Any] = dict(fields)
    if "options" in out:
        try:
            out["options"] = json.loads(out["options"]) if out["options"].strip() else {}
        except ValueError:
            raise RequestError(
                422, 'the \'options\' field must be a JSON object, e.g. {"preset": "coco"}'
            ) from None
    return out


def _pydantic_message(exc: ValidationError, allowed: list[str] | None = None) -> str:
    """Up to five problems, each with where it is; an unknown top-level field lists ``allowed``."""
    parts = []
    for err in exc.errors()[:5]:
        loc = err.get("loc", ())
        where = ".".join(str(p) for p in loc) or "body"
        if err.get("type") == "extra_forbidden" and len(loc) == 1 and allowed:
            parts.append(f"unknown field {where!r}; the fields are {', '.join(allowed)}")
        else:
            parts.append(f"{where}: {err.get('msg', 'invalid')}")
    return "; ".join(parts)


def _b64(text: str) -> bytes:
    if text.startswith("data:"):
        _, _, text = text.partition(",")
    try:
        return base64.b64decode(re.sub(r"\s+", "", text), validate=True)
    except (binascii.Error, ValueError):
        raise RequestError(422, "an image's 'base64' is not valid base64") from None


def caption_options(raw: Any, config: ServerConfig) -> CaptionOptions:
    """Validate user-supplied options (types, ranges, the server's caps) and resolve them."""
    if raw is None:
        raw = {}
    if isinstance(raw, BaseModel):
        raw = raw.model_dump(exclude_none=True)
    if not isinstance(raw, dict):
        raise RequestError(422, "'options' must be a JSON object")
    try:
        given = OptionsIn.model_validate(raw).model_dump(exclude_none=True)
    except ValidationError as exc:
        raise RequestError(422, "invalid options: " + _pydantic_message(exc)) from None
    preset = given.pop("preset", None)
    try:
        options = resolve_options(preset=preset, **given)
    except (OptionsError, ValueError, TypeError) as exc:
        raise RequestError(422, f"invalid options: {exc}") from None
    check_caps(options, config)
    return options


def check_caps(options: CaptionOptions, config: ServerConfig) -> None:
    """What one request may ask of the shared model (a 512-token beam-64 request would stall it)."""
    longest = options.max_new_tokens if options.max_new_tokens is not None else options.max_length
    problems = []
    if longest is not None and longest > config.max_new_tokens:
        problems.append(f"at most {config.max_new_tokens} new tokens (asked {longest})")
    if options.num_beams > config.max_beams:
        problems.append(f"at most {config.max_beams} beams (asked {options.num_beams})")
    if options.num_captions > config.max_captions:
        problems.append(f"at most {config.max_captions} captions (asked {options.num_captions})")
    if problems:
        raise RequestError(422, "this server allows " + "; ".join(problems))


def _decode(
    raw: RawInput,
    limits: ImageLimits,
    fetch_timeout: float,
    cancel: CancelToken | None = None,
    shrink: Callable[[Any], Any] | None = None,
) -> Any:
    """Fetch (for URLs) and decode one input; runs in a worker thread.

    ``cancel`` stops the decode between its phases and while it reads its
    bytes, so a decode whose request has given up frees its thread and memory.
    ``shrink`` (the model's resize) runs here too, so the full-size image is
    freed before the result waits for the model.
    """
    data = raw.data
    if raw.url is not None:
        data = fetch(raw.url, max_bytes=limits.max_bytes, timeout=fetch_timeout)
    image = load_image(data or b"", limits, name=raw.name or "<upload>", cancel=cancel)
    return shrink(image) if shrink is not None else image


def fetch(url: str, *, max_bytes: int, timeout: float) -> bytes:
    """The shared SSRF-safe fetcher, with a total deadline and a byte cap."""
    from ..fetch import fetch_url

    return fetch_url(url, max_bytes=max_bytes, timeout=timeout).data


def _out_of_time(raw: RawInput, seconds: float) -> InputError:
    """Why an input was given up at the request's deadline (a URL and an upload need other fixes)."""
    if raw.url is not None:
        return FetchError(
            f"{raw.name}: not fetched and decoded within {seconds:.3g} s; use a faster host or "
            "upload the file instead"
        )
    return DecodeCancelledError(
        f"{raw.name}: not decoded within {seconds:.3g} s, the time left to this request; send a "
        "smaller or simpler image (e.g. a baseline JPEG or an 8-bit PNG)"
    )


@contextlib.contextmanager
def decode_token(deadline: float) -> Iterator[CancelToken]:
    """A :class:`~blipcap.images.CancelToken` with the request's ``deadline``.

    It is cancelled when the block ends, so that a decode the request no
    longer awaits (it timed out, or its client went away) stops at its next
    check instead of running on in its worker thread.
    """
    cancel = CancelToken(deadline)
    try:
        yield cancel
    finally:
        cancel.cancel()  # a no-op when the decodes are done


def decode_one(source: Any, limits: ImageLimits, cancel: CancelToken) -> Loaded:
    """Decode one image source (bytes, path, PIL image) under ``cancel``, in this thread.

    An input error becomes the item's error, as :func:`load_inputs` keeps them.
    """
    try:
        return Loaded(None, image=load_image(source, limits, cancel=cancel))
    except InputError as exc:
        return Loaded(None, error=exc)


async def load_inputs(
    inputs: list[RawInput],
    config: ServerConfig,
    deadline: float,
    shrink: Callable[[Any], Any] | None = None,
) -> list[Loaded]:
    """Fetch and decode every input concurrently in worker threads, within ``deadline``.

    A URL's download gets at most ``config.fetch_timeout``; the decode of any
    input gets what is left of the request's time. Each decode carries a
    :class:`~blipcap.images.CancelToken` with the request's deadline, cancelled
    as soon as the request stops waiting for it, so abandoned decodes stop too.
    ``shrink`` is applied to each decoded image in its worker thread (captioning
    passes the model's resize: a decoded 7000x7000 photo then waits for the
    model as 384x384, outside the decode-memory budget but small).
    """
    limits = config.image_limits

    async def one(raw: RawInput) -> Loaded:
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            return Loaded(raw.name, error=_out_of_time(raw, 0.0))
        fetch_budget = min(config.fetch_timeout, remaining)
        try:
            with decode_token(deadline) as cancel:
                # The fetcher and the token enforce the times; the outer wait is a backstop.
                image = await asyncio.wait_for(
                    run_in_threadpool(_decode, raw, limits, fetch_budget, cancel, shrink),
                    remaining + 1.0,
                )
            return Loaded(raw.name, image=image)
        except asyncio.TimeoutError:
            return Loaded(raw.name, error=_out_of_time(raw, remaining))
        except InputError as exc:
            return Loaded(raw.name, error=exc)
        except TypeError as exc:  # load_image's "not an image source": treat as unusable bytes
            return Loaded(raw.name, error=CorruptImageError(f"{raw.name}: {exc}"))

    return list(await asyncio.gather(*(one(raw) for raw in inputs)))
