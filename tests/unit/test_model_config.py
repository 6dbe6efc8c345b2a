"""config.json validation: a broken dimension is one clear error naming the file and the field."""

from __future__ import annotations

import json
import shutil

import pytest
from click.testing import CliRunner

from blipcap.errors import ModelLoadError
from blipcap.model.config import BlipConfig


def raw(**sections: dict) -> dict:
    """A small valid config, with ``sections`` merged into its vision/text parts."""
    config = {
        "model_type": "blip",
        "vision_config": {"hidden_size": 48, "num_attention_heads": 4, "image_size": 64},
        "text_config": {"hidden_size": 64, "num_attention_heads": 4, "encoder_hidden_size": 48},
    }
    for name, changes in sections.items():
        config[name].update(changes)
    return config


def test_a_valid_config_reads():
    config = BlipConfig.from_dict(raw())
    assert config.vision.num_patches == 16 and config.text.hidden_size == 64


@pytest.mark.parametrize(
    ("section", "changes", "message"),
    [
        ("text_config", {"num_attention_heads": 0}, "text_config.num_attention_heads is 0"),
        ("vision_config", {"num_attention_heads": 0}, "vision_config.num_attention_heads is 0"),
        ("vision_config", {"hidden_size": -48}, "vision_config.hidden_size is -48"),
        ("vision_config", {"patch_size": 0}, "vision_config.patch_size is 0"),
        ("text_config", {"num_hidden_layers": 2.5}, "text_config.num_hidden_layers is 2.5"),
        ("text_config", {"vocab_size": "big"}, "text_config.vocab_size is 'big'"),
        ("text_config", {"max_position_embeddings": True}, "max_position_embeddings is True"),
        ("text_config", {"layer_norm_eps": 0}, "text_config.layer_norm_eps is 0"),
        ("text_config", {"pad_token_id": -1}, "text_config.pad_token_id is -1"),
        ("text_config", {"num_attention_heads": 5}, "hidden_size 64 is not divisible"),
        ("vision_config", {"image_size": 70}, "image_size 70 is not divisible by"),
        ("text_config", {"vocab_size": 1000}, "bos_token_id 30522 is outside the vocabulary"),
        ("text_config", {"encoder_hidden_size": 32}, "encoder_hidden_size=32 does not match"),
        ("text_config", {"hidden_act": "relu"}, "text_config.hidden_act is 'relu'"),
    ],
)
def test_broken_dimensions_are_named(section, changes, message):
    with pytest.raises(ModelLoadError) as info:
        BlipConfig.from_dict(raw(**{section: changes}), source="m/config.json")
    assert str(info.value).startswith("m/config.json: ")
    assert message in str(info.value)


def test_sections_that_are_not_objects():
    with pytest.raises(ModelLoadError, match="vision_config is 3, but it must be a JSON object"):
        BlipConfig.from_dict({"vision_config": 3})


def test_cli_prints_one_line_for_a_broken_config(tiny_checkpoint, tmp_path):
    from blipcap.cli.caption import caption

    model = tmp_path / "broken"
    shutil.copytree(tiny_checkpoint, model)
    config = json.loads((model / "config.json").read_text())
    config["text_config"]["num_attention_heads"] = 0
    (model / "config.json").write_text(json.dumps(config))
    image = tmp_path / "a.png"
    image.write_bytes(b"unused: the model fails to load first")
    result = CliRunner().invoke(caption, [str(image), "--model", str(model)])
    assert result.exit_code not in (0, 2)
    assert not isinstance(result.exception, ZeroDivisionError)
    assert result.output.strip().count("\n") == 0, result.output
    assert f"{model / 'config.json'}: text_config.num_attention_heads is 0" in result.output
