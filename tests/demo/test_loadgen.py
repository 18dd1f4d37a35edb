"""The load generator's request bodies name the model version, or none with ``any``."""

from __future__ import annotations

import json
import random

import pytest

from demo_service.loadgen import Traffic, parse_versions


def test_versions_name_each_share_or_none() -> None:
    """``v1=0.9,v2=0.1`` is a canary split; ``any`` leaves the choice to the service or mesh;
    an unknown version is refused."""
    assert parse_versions("v1=0.9,v2=0.1") == [("v1", 0.9), ("v2", 0.1)]
    assert parse_versions("any") == [("", 1.0)]
    with pytest.raises(Exception, match="unknown version"):
        parse_versions("v9")


def test_bodies_carry_the_version_only_when_one_is_named() -> None:
    """With a version the body names it; with ``any`` the field is absent, good and bad."""
    traffic = Traffic(random.Random(1), raw=True, items=1, slow_items=2)  # noqa: S311 - test data
    assert json.loads(traffic.normal("v2"))["model_version"] == "v2"
    assert "model_version" not in json.loads(traffic.normal(""))
    assert "model_version" not in json.loads(traffic.bad("bad_base64", ""))
    assert json.loads(traffic.bad("unknown_version", ""))["model_version"] == "v0"
