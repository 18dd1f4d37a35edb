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


def test_the_public_modules_keep_their_paths_and_names() -> None:
    """aiobs.multiprocess (gunicorn's hooks) re-exports the implementation's objects
    under a pinned __all__; aiobs.logging and aiobs.catalog stay importable where they were."""
    import aiobs.catalog
    import aiobs.logging
    import aiobs.multiprocess
    from aiobs.metrics import multiprocess as implementation

    assert aiobs.multiprocess.__all__ == [
        "MergedCollector",
        "child_exit",
        "compact_dead_workers",
        "on_starting",
        "prepare_directory",
    ]
    public = {name for name in vars(aiobs.multiprocess) if not name.startswith("_")}
    assert public == set(aiobs.multiprocess.__all__)
    for name in aiobs.multiprocess.__all__:
        assert getattr(aiobs.multiprocess, name) is getattr(implementation, name), name
    assert aiobs.logging.__all__ == ["add_trace_ids", "processors"]
    assert callable(aiobs.logging.processors)
    assert aiobs.catalog.HTTP_REQUESTS.name == "http_requests_total"
