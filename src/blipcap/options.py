"""Caption options and presets.

:class:`CaptionOptions` is defined once and passed through every layer (CLI,
server, captioner, decoding). Presets are named starting points; any field can
be overridden.

Lengths follow Hugging Face ``generate`` semantics: ``max_length`` and
``min_length`` count the prompt (the ``[DEC]`` token and the prompt's tokens),
``max_new_tokens`` and ``min_new_tokens`` count generated tokens only. When
both are given, the ``*_new_tokens`` form wins.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, fields, replace
from typing import Any

from .errors import OptionsError


@dataclass(frozen=True)
class CaptionOptions:
    """How to turn one image into text."""

    num_beams: int = 1
    """Beam width; 1 means greedy (or sampling with ``do_sample``)."""
    max_new_tokens: int | None = 30
    min_new_tokens: int | None = None
    max_length: int | None = None
    """Total length including the prompt (used when ``max_new_tokens`` is None)."""
    min_length: int | None = None
    """Minimum total length including the prompt."""
    prompt: str | None = None
    """Conditional captioning: the caption continues this text."""
    strip_prompt: bool = True
    do_sample: bool = False
    top_p: float = 1.0
    top_k: int = 0
    temperature: float = 1.0
    num_captions: int = 1
    """Captions per image (beam search returns the best K beams; sampling draws K)."""
    repetition_penalty: float = 1.0
    no_repeat_ngram_size: int = 0
    length_penalty: float = 1.0
    early_stopping: bool = False
    seed: int | None = None
    clean_artifacts: bool = True
    """Remove known BLIP artifacts such as the spurious "arafed" prefix."""
    guard: bool = False
    """Re-decode degenerate captions (loops, "arafed", boilerplate lead-ins): see blipcap.guard.

    On in the ``default`` preset; off here, so that options built field by
    field decode exactly as transformers does, and off in ``coco``."""

    def __post_init__(self) -> None:
        _validate(self)

    def replace(self, **changes: Any) -> CaptionOptions:
        return replace(self, **changes)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def token_limits(self, prompt_len: int) -> tuple[int, int]:
        """Return (min_total_length, max_total_length) for a prompt of ``prompt_len`` tokens."""
        if self.max_new_tokens is not None:
            max_total = prompt_len + self.max_new_tokens
        elif self.max_length is not None:
            max_total = self.max_length
        else:
            max_total = 20  # transformers' generic default
        if self.min_new_tokens is not None:
            min_total = prompt_len + self.min_new_tokens
        elif self.min_length is not None:
            min_total = self.min_length
        else:
            min_total = 0
        if max_total <= prompt_len:
            raise OptionsError(
                f"max_length={max_total} leaves no room after the {prompt_len}-token prompt; "
                "raise --max-new-tokens or shorten the prompt"
            )
        return min_total, max_total


OPTION_NAMES = frozenset(f.name for f in fields(CaptionOptions))


def resolve_options(
    options: CaptionOptions | None = None, preset: str | None = None, **overrides: Any
) -> CaptionOptions:
    """Build options from a preset (or given options) plus keyword overrides.

    ``None`` overrides are ignored so CLI flags that were not given fall through.
    """
    if options is not None and preset is not None:
        raise OptionsError("give either options or preset, not both")
    if options is None:
        name = preset or "default"
        if name not in PRESETS:
            raise OptionsError(f"unknown preset {name!r}; choose one of: {', '.join(PRESETS)}")
        options = PRESETS[name]
    unknown = set(overrides) - OPTION_NAMES
    if unknown:
        raise OptionsError(
            f"unknown caption option(s): {', '.join(sorted(unknown))}; "
            f"valid options are: {', '.join(sorted(OPTION_NAMES))}"
        )
    changes = {k: v for k, v in overrides.items() if v is not None}
    # A length given in one form replaces the preset's other form.
    if "max_length" in changes and "max_new_tokens" not in changes:
        changes["max_new_tokens"] = None
    if "min_length" in changes and "min_new_tokens" not in changes:
        changes["min_new_tokens"] = None
    return replace(options, **changes) if changes else options


def _validate(o: CaptionOptions) -> None:
    def bad(msg: str) -> None:
        raise OptionsError(msg)

    if o.num_beams < 1:
        bad(f"num_beams must be >= 1, got {o.num_beams}")
    if o.num_captions < 1:
        bad(f"num_captions must be >= 1, got {o.num_captions}")
    if o.num_beams > 1 and o.num_captions > o.num_beams:
        bad(
            f"num_captions={o.num_captions} is more than num_beams={o.num_beams}: beam search can "
            "return at most one caption per beam; raise --beams or use --sample"
        )
    if o.num_beams > 1 and o.do_sample:
        bad("beam search with sampling is not supported; use --beams N or --sample, not both")
    if o.num_captions > 1 and o.num_beams == 1 and not o.do_sample:
        bad("several captions need --sample or --beams N (greedy decoding gives one caption)")
    if o.max_new_tokens is not None and o.max_new_tokens < 1:
        bad(f"max_new_tokens must be >= 1, got {o.max_new_tokens}")
    if o.max_new_tokens is None and o.max_length is not None and o.max_length < 2:
        bad(f"max_length must be >= 2, got {o.max_length}")
    if o.min_new_tokens is not None and o.min_new_tokens < 0:
        bad(f"min_new_tokens must be >= 0, got {o.min_new_tokens}")
    if (
        o.min_new_tokens is not None
        and o.max_new_tokens is not None
        and o.min_new_tokens > o.max_new_tokens
    ):
        bad(f"min_new_tokens={o.min_new_tokens} exceeds max_new_tokens={o.max_new_tokens}")
    if not 0.0 < o.top_p <= 1.0:
        bad(f"top_p must be in (0, 1], got {o.top_p}")
    if o.top_k < 0:
        bad(f"top_k must be >= 0, got {o.top_k}")
    if o.temperature <= 0.0:
        bad(f"temperature must be > 0, got {o.temperature}")
    if o.repetition_penalty <= 0.0:
        bad(f"repetition_penalty must be > 0, got {o.repetition_penalty}")
    if o.no_repeat_ngram_size < 0:
        bad(f"no_repeat_ngram_size must be >= 0, got {o.no_repeat_ngram_size}")


PRESETS: dict[str, CaptionOptions] = {
    # Greedy, up to 30 new tokens, no prompt, no penalties, artifacts cleaned,
    # degenerate captions decoded again (blipcap.guard).
    "default": CaptionOptions(guard=True),
    # The BLIP paper's COCO protocol (salesforce/BLIP configs/caption_coco.yaml):
    # beam 3, max_length 20 and min_length 5 counted with the prompt.
    "coco": CaptionOptions(
        num_beams=3,
        max_new_tokens=None,
        max_length=20,
        min_length=5,
        prompt="a picture of ",
        guard=False,  # the paper's protocol, token for token
    ),
}


def settings_key(
    model_id: str, revision: str | None, options: CaptionOptions | dict[str, Any]
) -> str:
    """What a result cached by content hash must match to be reused: model, revision, options.

    The one key of every such cache (the Ray job's resume, the alt-text caption
    cache): 16 hex digits of a SHA-256 over the three, options as a dict with
    sorted keys.
    """
    import hashlib
    import json

    values = options.to_dict() if isinstance(options, CaptionOptions) else options
    blob = json.dumps({"model": model_id, "revision": revision, "options": values}, sort_keys=True)
    return hashlib.sha256(blob.encode()).hexdigest()[:16]
