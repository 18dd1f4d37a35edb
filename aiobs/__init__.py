"""aiobs: production observability for model-serving services, in one line.

>>> obs = aiobs.instrument(app, service_name="resnet50-svc")  # doctest: +SKIP
"""

from __future__ import annotations

from importlib.metadata import PackageNotFoundError, version

from aiobs import logging  # noqa: F401 - aiobs.logging.processors() after `import aiobs`
from aiobs._inference import InferenceRecord
from aiobs._observability import Observability
from aiobs._settings import ConfigError, Settings, SettingsOptions
from aiobs._setup import inference, instrument, setup, track_inference
from aiobs.http.health import ReadinessCheck
from aiobs.http.middleware import ObservabilityMiddleware
from aiobs.logs.pipeline import get_logger

try:
    __version__ = version("aiobs")
except PackageNotFoundError:  # pragma: no cover - running from a source tree
    __version__ = "0.0.0"

__all__ = [
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
