"""Request and response shapes, for validation and the OpenAPI document.

The image endpoints take either ``multipart/form-data`` (files) or JSON
(URLs / base64), which FastAPI cannot express with plain parameters, so the
handlers parse the body themselves. Each request model is the one source of
its rules: it validates the JSON body, :func:`~.inputs.form_model` derives
the form model that validates a multipart body from it, and
:func:`multipart_schema` derives the multipart OpenAPI schema from that form
model; :func:`install_openapi` documents both media types on each route.
"""

from __future__ import annotations

import functools
import typing
from typing import Annotated, Any, ClassVar, Literal

from pydantic import BaseModel, ConfigDict, Field, create_model, model_validator
from pydantic.json_schema import SkipJsonSchema

from .. import social

Finite = Annotated[float, Field(allow_inf_nan=False)]


class OptionsIn(BaseModel):
    """Caption options (see CaptionOptions); fields left out keep the preset's value."""

    model_config = ConfigDict(extra="forbid")

    preset: Literal["default", "coco"] | None = None
    num_beams: Annotated[int, Field(ge=1, le=64)] | None = None
    max_new_tokens: Annotated[int, Field(ge=1, le=512)] | None = None
    min_new_tokens: Annotated[int, Field(ge=0, le=512)] | None = None
    max_length: Annotated[int, Field(ge=2, le=512)] | None = None
    min_length: Annotated[int, Field(ge=0, le=512)] | None = None
    prompt: Annotated[str, Field(max_length=500)] | None = None
    strip_prompt: bool | None = None
    do_sample: bool | None = None
    top_p: Annotated[Finite, Field(gt=0, le=1)] | None = None
    top_k: Annotated[int, Field(ge=0, le=100_000)] | None = None
    temperature: Annotated[Finite, Field(gt=0, le=100)] | None = None
    num_captions: Annotated[int, Field(ge=1, le=64)] | None = None
    repetition_penalty: Annotated[Finite, Field(gt=0, le=100)] | None = None
    no_repeat_ngram_size: Annotated[int, Field(ge=0, le=64)] | None = None
    length_penalty: Annotated[Finite, Field(ge=-100, le=100)] | None = None
    early_stopping: bool | None = None
    seed: Annotated[int, Field(ge=0, le=2**32 - 1)] | None = None
    clean_artifacts: bool | None = None
    guard: bool | None = None


class ImageRef(BaseModel):
    """One image by URL (fetched by the server, SSRF-checked) or as base64 (a data: URL is fine)."""

    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra={"oneOf": [{"required": ["url"]}, {"required": ["base64"]}]},
    )

    # Not nullable in the schema: a key given must hold a value (null is not "no URL").
    url: Annotated[str, Field(max_length=4096)] | SkipJsonSchema[None] = None
    base64: str | SkipJsonSchema[None] = None
    name: Annotated[str, Field(max_length=255)] | SkipJsonSchema[None] = None
    """A label for the result's ``path`` (default: the URL, or null)."""

    @model_validator(mode="after")
    def _one_source(self) -> ImageRef:
        if (self.url is None) == (self.base64 is None):
            raise ValueError("give exactly one of 'url' or 'base64' for each image")
        return self


class CaptionsRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    images: Annotated[list[ImageRef], Field(min_length=1)]
    options: OptionsIn | None = None


Platform = Literal[tuple(social.PLATFORMS)]  # type: ignore[valid-type]


class SocialRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    images: Annotated[list[ImageRef], Field(min_length=1)]
    platforms: Annotated[list[Platform], Field(min_length=1, max_length=4)] = ["x"]
    variants: Annotated[int, Field(ge=1, le=10)] = 1
    hashtags: bool = False
    max_hashtags: Annotated[int, Field(ge=0, le=30)] = 5
    attribution: Annotated[
        bool | Annotated[str, Field(max_length=200)], Field(union_mode="left_to_right")
    ] = False
    """true adds "Machine-generated description."; other text adds that text instead."""
    options: OptionsIn | None = None


class AltTextRequest(BaseModel):
    """An HTML fragment to check, or images to describe (as for /v1/captions)."""

    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra={"oneOf": [{"required": ["html"]}, {"required": ["images"]}]},
    )
    json_only: ClassVar[frozenset[str]] = frozenset({"html"})
    """Fields a multipart body cannot carry (a form sends images, so no fragment)."""

    html: Annotated[str, Field(max_length=2_000_000)] | SkipJsonSchema[None] = None
    images: Annotated[list[ImageRef], Field(min_length=1)] | SkipJsonSchema[None] = None
    max_chars: Annotated[int, Field(ge=20, le=1000)] = 150


class DocumentRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    images: Annotated[
        list[ImageRef], Field(min_length=1, max_length=1, description="One image or PDF.")
    ]
    engine: Literal["rapidocr", "tesseract"] | None = None
    lang: Annotated[
        str,
        Field(pattern=r"^[a-z_+]{3,40}$", description="Tesseract language(s), e.g. eng or deu+eng"),
    ] = "eng"
    caption: bool = True


class ErrorItem(BaseModel):
    index: int
    path: str | None
    type: str
    message: str


class ErrorResponse(BaseModel):
    detail: str
    errors: list[ErrorItem] | None = None


class ItemErrorOut(BaseModel):
    type: str
    message: str


class ConfidenceOut(BaseModel):
    """The decoder's confidence in one caption (see docs/captioning.md, "Confidence")."""

    score: float
    mean_logprob: float
    min_logprob: float
    tokens: int


class GuardOut(BaseModel):
    """What the degeneration guard found and did (see docs/captioning.md)."""

    detected: list[str]
    action: str
    resolved: bool


class ProvenanceOut(BaseModel):
    """Where a result came from (see :class:`~blipcap.results.Provenance`)."""

    model: str | None = None
    revision: str | None = None
    backend: str | None = None
    dtype: str | None = None
    device: str | None = None
    options: dict[str, Any] | None = None
    blipcap_version: str | None = None


class CaptionRecord(ProvenanceOut):
    """The same record as ``blipcap caption --format jsonl``."""

    path: str | None
    caption: str | None
    captions: list[str] | None = None
    confidence: ConfidenceOut | None = None
    confidences: list[ConfidenceOut | None] | None = None
    guard: GuardOut | None = None
    error: ItemErrorOut | None
    machine_generated: bool | None = None
    random_weights: bool | None = None


class CaptionsResponse(BaseModel):
    results: list[CaptionRecord]


class SocialRecord(ProvenanceOut):
    path: str | None
    platform: Platform
    alt_text: str | None
    alt_text_length: int | None
    alt_text_limit: int
    text: str | None
    text_length: int | None
    text_limit: int
    hashtags: list[str]
    variants: list[social.Variant]  # the dataclass itself: its fields are the record's
    error: ItemErrorOut | None
    machine_generated: bool
    random_weights: bool


class SocialResponse(BaseModel):
    results: list[SocialRecord]


class Health(BaseModel):
    status: str
    detail: str | None = None
    model: str | None = None
    random_weights: bool | None = None


PlatformInfo = create_model(  # social.Platform's rules, less its key (the key maps to it)
    "PlatformInfo",
    **{  # type: ignore[call-overload]
        name: (kind, ...)
        for name, kind in typing.get_type_hints(social.Platform).items()
        if name != "key"
    },
)


class Info(BaseModel):
    version: str
    status: str
    model: str | None
    backend: str | None
    device: str | None
    dtype: str | None
    random_weights: bool | None
    features: list[str]
    auth: bool
    limits: dict[str, float]
    platforms: dict[str, PlatformInfo]


FILES = "One or more images (JPEG, PNG, WebP, GIF, BMP, TIFF; HEIF/AVIF where installed)."


def multipart_schema(model: type[BaseModel]) -> dict[str, Any]:
    """The ``multipart/form-data`` schema of ``model``: ``images`` as ``files`` parts, then the form.

    The form fields are those of :func:`~.inputs.form_model` (the model that
    validates a multipart body), with their constraints; a field that holds an
    object (``options``) is a text field with the object as JSON.
    """

    images = model.model_json_schema()["properties"]["images"]
    files: dict[str, Any] = {"type": "array", "items": {"type": "string", "format": "binary"}}
    files.update({k: v for k, v in images.items() if k in ("minItems", "maxItems")})
    files["description"] = images.get("description", FILES)
    form = form_model(model)
    fields = form.model_json_schema()
    properties: dict[str, Any] = {"files": files}
    for name, prop in fields["properties"].items():
        if name in getattr(model, "json_only", ()):
            continue
        nested = _nested_model(form.model_fields[name].annotation)
        if nested is not None:
            summary = (nested.__doc__ or nested.__name__).strip().splitlines()[0]
            prop = {
                "type": "string",
                "contentMediaType": "application/json",
                "description": f'{summary} As a JSON object, e.g. {{"preset": "coco"}}.',
            }
        properties[name] = _form_field(prop)
    return {
        "type": "object",
        "properties": properties,
        "required": ["files", *fields.get("required", [])],
        "additionalProperties": False,
    }


def _form_field(prop: dict[str, Any]) -> dict[str, Any]:
    """A field's schema as a form part: no title, and no null (a form leaves the field out)."""
    prop = {k: v for k, v in prop.items() if k != "title"}
    branches = [b for b in prop.get("anyOf", []) if b != {"type": "null"}]
    if "anyOf" in prop and len(branches) < len(prop["anyOf"]):
        del prop["anyOf"]
        prop.update(branches[0] if len(branches) == 1 else {"anyOf": branches})
        if prop.get("default", 0) is None:
            del prop["default"]
    return prop


def _nested_model(annotation: Any) -> type[BaseModel] | None:
    """The model inside ``annotation`` (``OptionsIn | None`` -> OptionsIn), if any."""
    for arg in (annotation, *typing.get_args(annotation)):
        if isinstance(arg, type) and issubclass(arg, BaseModel):
            return arg
    return None


def install_openapi(app: Any, bodies: dict[str, type[BaseModel]]) -> None:
    """Document the JSON and multipart request bodies of ``bodies`` {path: request model}."""
    from fastapi.openapi.utils import get_openapi

    def openapi() -> dict[str, Any]:
        if app.openapi_schema:
            return app.openapi_schema
        schema = get_openapi(
            title=app.title,
            version=app.version,
            description=app.description,
            routes=app.routes,
        )
        components = schema.setdefault("components", {}).setdefault("schemas", {})
        ref = "#/components/schemas/{model}"
        for path, model in bodies.items():
            operation = schema["paths"].get(path, {}).get("post")
            if operation is None:
                continue
            json_schema = model.model_json_schema(ref_template=ref)
            for name, sub in json_schema.pop("$defs", {}).items():
                components.setdefault(name, sub)
            components[model.__name__] = json_schema
            operation["requestBody"] = {
                "required": True,
                "content": {
                    "application/json": {"schema": {"$ref": ref.format(model=model.__name__)}},
                    "multipart/form-data": {"schema": multipart_schema(model)},
                },
            }
        app.openapi_schema = schema
        return schema

    app.openapi = openapi


@functools.cache
def form_model(json_model: type[BaseModel]) -> type[BaseModel]:
    """``json_model`` without ``images`` (a multipart body sends those as ``files`` parts).

    Fields, constraints and ``extra="forbid"`` are the JSON model's own;
    form strings are converted by pydantic's lax mode ("3" to 3, "true" to True).
    """
    fields = {
        name: (info.annotation, info)
        for name, info in json_model.model_fields.items()
        if name != "images"
    }
    return create_model(  # type: ignore[call-overload]
        json_model.__name__ + "Form", __config__=ConfigDict(extra="forbid"), **fields
    )
