"""``blipcap serve``'s options are generated from ServerConfig's fields, not written out again."""

from __future__ import annotations

import dataclasses

import click
import pytest

from blipcap.cli.serve import config_values, serve
from blipcap.server.config import ServerConfig, settings


def params(args: list[str]) -> dict:
    return serve.make_context("serve", args).params


def options() -> dict[str, click.Option]:
    return {p.opts[0]: p for p in serve.params if isinstance(p, click.Option)}


def test_every_setting_is_an_option_with_its_help_default_and_range():
    by_flag = options()
    for field, setting in settings():
        if not setting.cli:
            continue
        flag = setting.flag or "--" + field.name.replace("_", "-")
        option = by_flag[flag]
        assert option.help == setting.help
        if not option.multiple:
            assert option.default == setting.option_default(field.default), flag
    assert by_flag["--max-body-mb"].default == 25.0
    assert by_flag["--decode-memory-mb"].default == 2048
    assert by_flag["--min-body-rate"].default == 10.0
    assert by_flag["--max-batch-size"].type.min == 1
    assert by_flag["--request-timeout"].type.min == 0 and by_flag["--request-timeout"].type.min_open


def test_the_defaults_make_the_default_config():
    values = config_values(params([]))
    assert ServerConfig(**values) == ServerConfig()


def test_options_land_in_their_fields_in_the_fields_units():
    values = config_values(
        params(
            [
                "--max-body-mb", "2.5", "--min-body-rate", "5", "--decode-memory-mb", "100",
                "--max-images", "3", "--max-beams", "2", "--fetch-timeout", "1.5",
                "--api-key", "a", "--api-key", "b", "--cors-origin", "https://x.example",
            ]
        )
    )  # fmt: skip
    config = ServerConfig(**values)
    assert config.max_body_bytes == 2_500_000
    assert config.min_body_rate == 5000.0
    assert config.decode_memory_bytes == 100 * 2**20
    assert config.max_images_per_request == 3
    assert config.max_beams == 2 and config.fetch_timeout == 1.5
    assert config.api_keys == ("a", "b") and config.cors_origins == ("https://x.example",)


@pytest.mark.parametrize(
    "args", [["--max-batch-size", "0"], ["--request-timeout", "0"], ["--decode-memory-mb", "0"]]
)
def test_out_of_range_options_are_usage_errors(args):
    with pytest.raises(click.BadParameter):
        params(args)


def test_the_config_checks_the_same_ranges():
    for field, setting in settings():
        if setting.min is None:
            continue
        bad = setting.min if setting.min_open else setting.min - 1
        with pytest.raises(ValueError, match=f"{field.name} must be"):
            ServerConfig(**{field.name: bad})
    with pytest.raises(ValueError, match="max_images_per_request must be at most max_queue"):
        ServerConfig(max_queue=4, max_images_per_request=5)
    assert dataclasses.replace(ServerConfig(), max_queue=4, max_images_per_request=4)
