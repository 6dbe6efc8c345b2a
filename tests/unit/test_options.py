import pytest

from blipcap import CaptionOptions, OptionsError, resolve_options
from blipcap.options import PRESETS


def test_default_preset_is_greedy_30_tokens_no_prompt():
    o = resolve_options()
    assert (o.num_beams, o.max_new_tokens, o.prompt, o.repetition_penalty) == (1, 30, None, 1.0)
    assert o.clean_artifacts is True
    assert o.token_limits(prompt_len=1) == (0, 31)


def test_coco_preset_is_the_papers_protocol():
    o = PRESETS["coco"]
    assert (o.num_beams, o.max_length, o.min_length, o.prompt) == (3, 20, 5, "a picture of ")
    # Lengths count the prompt: [DEC] a picture of = 4 tokens leaves at most 16 new ones.
    assert o.token_limits(prompt_len=4) == (5, 20)


def test_overrides_apply_and_none_falls_through():
    o = resolve_options(preset="coco", num_beams=5, prompt=None)
    assert o.num_beams == 5 and o.prompt == "a picture of "


def test_length_given_in_one_form_replaces_the_presets_other_form():
    assert resolve_options(max_length=12).token_limits(1) == (0, 12)
    assert resolve_options(preset="coco", max_new_tokens=7).token_limits(4) == (5, 11)


@pytest.mark.parametrize(
    "kwargs, message",
    [
        (dict(num_beams=0), "num_beams must be >= 1"),
        (dict(num_beams=2, num_captions=3), "at most one caption per beam"),
        (dict(num_beams=3, do_sample=True), "not both"),
        (dict(num_captions=2), "need --sample or --beams"),
        (dict(top_p=0.0), "top_p"),
        (dict(temperature=0), "temperature"),
        (dict(min_new_tokens=5, max_new_tokens=3), "exceeds"),
        (dict(bogus=1), "unknown caption option"),
    ],
)
def test_bad_options_say_what_is_wrong(kwargs, message):
    with pytest.raises(OptionsError, match=message):
        resolve_options(**kwargs)


def test_unknown_preset():
    with pytest.raises(OptionsError, match="choose one of: default, coco"):
        resolve_options(preset="fast")


def test_no_room_after_prompt():
    with pytest.raises(OptionsError, match="leaves no room"):
        CaptionOptions(max_new_tokens=None, max_length=3).token_limits(prompt_len=5)


def test_one_settings_key_for_every_content_hash_cache():
    """The Ray job's resume and the alt-text caption cache key results the same way."""
    from blipcap.options import CaptionOptions, resolve_options, settings_key

    coco = resolve_options(preset="coco")
    key = settings_key("m", "r", coco)
    assert key == settings_key("m", "r", coco.to_dict()) and len(key) == 16
    assert key != settings_key("m", "r2", coco) != settings_key("m2", "r", coco)
    assert key != settings_key("m", "r", resolve_options())
    assert settings_key("m", None, CaptionOptions()) == settings_key(
        "m", None, {**CaptionOptions().to_dict()}
    )
