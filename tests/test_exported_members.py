"""The public surface is deliberate: a name added to or dropped from it fails here first."""

import aiobs


def test_all_is_pinned() -> None:
    assert aiobs.__all__ == [
        "ConfigError",
        "InferenceRecord",
        "Observability",
        "ObservabilityMiddleware",
        "ReadinessCheck",
        "Settings",
        "SettingsOptions",
        "__version__",
        "get_logger",
        "inference",
        "instrument",
        "setup",
        "track_inference",
    ]


def test_every_exported_name_exists() -> None:
    for name in aiobs.__all__:
        assert hasattr(aiobs, name), name


def test_version_comes_from_package_metadata() -> None:
    from importlib.metadata import version

    assert aiobs.__version__ == version("aiobs")
