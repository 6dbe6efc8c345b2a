"""blipcap does not switch Ray's usage statistics on for its users."""

from __future__ import annotations

import os
import types

import pytest

from blipcap import distributed


@pytest.fixture
def fake_ray(monkeypatch):
    seen = {}
    ray = types.SimpleNamespace(
        is_initialized=lambda: False,
        init=lambda **kw: seen.setdefault("env", os.environ.get(distributed.USAGE_STATS_ENV)),
    )
    monkeypatch.setattr(distributed, "require", lambda *a: ray)
    return seen


def test_usage_stats_are_off_by_default(fake_ray, monkeypatch):
    monkeypatch.setenv(distributed.USAGE_STATS_ENV, "")  # restored after the test...
    monkeypatch.delenv(distributed.USAGE_STATS_ENV)  # ...but unset during it
    distributed._connect(None)
    assert fake_ray["env"] == "0"


def test_the_users_choice_is_kept(fake_ray, monkeypatch):
    monkeypatch.setenv(distributed.USAGE_STATS_ENV, "1")
    distributed._connect(None)
    assert fake_ray["env"] == "1"
