"""Request and response shapes, for validation and the OpenAPI document.

The caption endpoints take either ``multipart/form-data`` (files) or JSON
(URLs / base64), which FastAPI cannot express with plain parameters, so the
handlers parse the body themselves and :func:`install_openapi` documents both
media types on each route.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator
from pydantic.json_schema import SkipJsonSchema

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


Platform = Literal["x", "mastodon", "bluesky", "instagram"]


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


class CaptionRecord(BaseModel):
    """The same record as ``blipcap caption --format jsonl``."""

    path: str | None
    caption: str | None
    captions: list[str] | None = None
    confidence: ConfidenceOut | None = None
    confidences: list[ConfidenceOut | None] | None = None
    guard: GuardOut | None = None
    error: ItemErrorOut | None
    model: str | None = None
    revision: str | None = None
    backend: str | None = None
    dtype: str | None = None
    device: str | None = None
    options: dict[str, Any] | None = None
    machine_generated: bool | None = None
    blipcap_version: str | None = None
    random_weights: bool | None = None


class CaptionsResponse(BaseModel):
    results: list[CaptionRecord]


class VariantOut(BaseModel):
    caption: str
    alt_text: str
    alt_text_length: int
    text: str
    text_length: int
    hashtags: list[str]
    score: float | None
    truncated: bool


class SocialRecord(BaseModel):
    path: str | None
    platform: Platform
    alt_text: str | None
    alt_text_length: int | None
    alt_text_limit: int
    text: str | None
    text_length: int | None
    text_limit: int
    hashtags: list[str]
    variants: list[VariantOut]
    error: ItemErrorOut | None
    machine_generated: bool
    random_weights: bool
    model: str | None = None
    revision: str | None = None
    backend: str | None = None
    dtype: str | None = None
    device: str | None = None
    options: dict[str, Any] | None = None
    blipcap_version: str | None = None


class SocialResponse(BaseModel):
    results: list[SocialRecord]


class Health(BaseModel):
    status: str
    detail: str | None = None
    model: str | None = None
    random_weights: bool | None = None


class PlatformInfo(BaseModel):
    name: str
    alt_limit: int
    post_limit: int
    url_length: int | None
    bare_domains: bool
    weighted: bool
    max_hashtags: int


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


MULTIPART_CAPTIONS = {
    "type": "object",
    "properties": {
        "files": {
            "type": "array",
            "items": {"type": "string", "format": "binary"},
            "minItems": 1,
            "description": "One or more images (JPEG, PNG, WebP, GIF, BMP, TIFF; HEIF/AVIF where installed).",
        },
        "options": {
            "type": "string",
            "description": 'Caption options as a JSON object, e.g. {"preset": "coco"}.',
        },
    },
    "required": ["files"],
    "additionalProperties": False,
}

MULTIPART_SOCIAL = {
    "type": "object",
    "properties": {
        "files": MULTIPART_CAPTIONS["properties"]["files"],
        "platforms": {
            "type": "array",
            "items": {"type": "string", "enum": ["x", "mastodon", "bluesky", "instagram"]},
            "minItems": 1,
            "maxItems": 4,
        },
        "variants": {"type": "integer", "minimum": 1, "maximum": 10},
        "hashtags": {"type": "boolean"},
        "max_hashtags": {"type": "integer", "minimum": 0, "maximum": 30},
        "attribution": {
            "type": "string",
            "maxLength": 200,
            "description": "'true' or 'false', or the attribution text",
        },
        "options": MULTIPART_CAPTIONS["properties"]["options"],
    },
    "required": ["files"],
    "additionalProperties": False,
}


def install_openapi(app: Any, bodies: dict[str, tuple[type[BaseModel], dict]]) -> None:
    """Document JSON and multipart request bodies for ``bodies`` {path: (json model, form schema)}."""
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
        for path, (model, form) in bodies.items():
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
                    "multipart/form-data": {"schema": form},
                },
            }
        app.openapi_schema = schema
        return schema

    app.openapi = openapi
