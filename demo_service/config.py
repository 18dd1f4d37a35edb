"""The demo service's settings: one frozen object, read once from the environment, with a YAML
file (``DEMO_CONFIG``) as the alternative.

Precedence, highest first: environment > YAML file > defaults. A bad value stops start-up
with a message naming the variable (or the file and key) it came from. aiobs's own settings
(``AIOBS_*``, ``OTEL_*``) are read by aiobs itself.
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

CONFIG_FILE_VARIABLE = "DEMO_CONFIG"
DEVICES = ("auto", "cpu", "cuda")
VERSION_SEEDS: Mapping[str, int] = {"v1": 1, "v2": 2}
"""The classifier's versions, each built from its seed by :mod:`demo_service.model`: v2 is the
same network with other weights (a canary to compare). Defined here, below the model, because
``MODEL_VERSIONS`` is checked against them."""


class DemoConfigError(ValueError):
    """A setting of the demo service has a value it cannot use; the message names its source."""


def default_model_path(environ: Mapping[str, str]) -> Path:
    """``$XDG_CACHE_HOME/aiobs-demo/models``, else ``~/.cache/aiobs-demo/models``."""
    cache = environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(cache) / "aiobs-demo" / "models"


@dataclass(frozen=True)
class DemoSettings:
    """Resolved configuration of the demo service. Build it with :meth:`from_env`."""

    model_path: Path
    """Directory holding ``demo-cnn-v1.onnx`` and ``demo-cnn-v2.onnx``; built there if missing."""
    max_batch_size: int = 32
    """Most items run together in one model call; 1 turns batching off."""
    batch_timeout_ms: float = 5.0
    """Longest an item waits for others to join its batch."""
    inference_threads: int = 1
    """Batches that may run at once (each on its own worker thread)."""
    max_body_bytes: int = 4 * 1024 * 1024
    """Larger request bodies are answered 413 before they are read in full."""
    max_items_per_request: int = 32
    """Most images in one request."""
    generation_max_batch: int = 8
    """Most generations ``tiny-lm`` decodes together in one step (continuous batching)."""
    model_versions: tuple[str, ...] = tuple(VERSION_SEEDS)
    """Versions served (``v1,v2``); the first is the default of requests that name none."""
    device: str = "auto"
    """``auto`` (CUDA when it works, else CPU), ``cpu`` or ``cuda`` (CUDA or fail)."""
    host: str = "127.0.0.1"
    port: int = 8000
    service_name: str = "aiobs-demo"

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None, **overrides: Any) -> DemoSettings:
        """Read the settings from ``environ`` (default ``os.environ``) and the YAML file it
        names; ``overrides`` (tests) win over both."""
        environ = os.environ if environ is None else environ
        values: dict[str, Any] = {}
        config_file = environ.get(CONFIG_FILE_VARIABLE)
        if config_file:
            for key, raw in _read_yaml(config_file).items():
                source = f"{CONFIG_FILE_VARIABLE}={config_file}: key '{key}'"
                field = _FIELDS.get(key)
                if field is None:
                    known = ", ".join(sorted(_FIELDS))
                    raise DemoConfigError(f"{source}: unknown setting; known settings are {known}")
                values[key] = field.parse(raw, source)
        for name, field in _FIELDS.items():
            raw = environ.get(field.variable)
            if raw is not None and raw.strip():
                values[name] = field.parse(raw.strip(), field.variable)
        for name, value in overrides.items():
            if name not in _FIELDS:
                raise DemoConfigError(f"keyword argument '{name}': unknown setting")
            values[name] = _FIELDS[name].parse(value, f"keyword argument '{name}'")
        values.setdefault("model_path", default_model_path(environ))
        return cls(**values)

    def as_dict(self) -> dict[str, Any]:
        data = dataclasses.asdict(self)
        data["model_path"] = str(self.model_path)
        data["model_versions"] = list(self.model_versions)
        return data


# --- parsers ----------------------------------------------------------------------------------


def _integer(low: int, high: int) -> Callable[[Any, str], int]:
    def parse(raw: Any, source: str) -> int:
        try:
            if isinstance(raw, bool) or (isinstance(raw, float) and not raw.is_integer()):
                raise ValueError
            value = int(raw)
        except (TypeError, ValueError):
            raise DemoConfigError(f"{source}={raw!r}: expected a whole number") from None
        if not low <= value <= high:
            raise DemoConfigError(f"{source}={value}: expected {low} to {high}")
        return value

    return parse


def _milliseconds(raw: Any, source: str) -> float:
    try:
        if isinstance(raw, bool):
            raise ValueError
        value = float(raw)
    except (TypeError, ValueError):
        raise DemoConfigError(f"{source}={raw!r}: expected milliseconds (a number)") from None
    if not 0.0 <= value <= 10_000.0:  # also rejects NaN
        raise DemoConfigError(f"{source}={raw!r}: expected 0 to 10000 milliseconds")
    return value


def _path(raw: Any, source: str) -> Path:
    if not isinstance(raw, (str, Path)) or not str(raw).strip():
        raise DemoConfigError(f"{source}={raw!r}: expected a directory path")
    path = Path(str(raw)).expanduser()
    if path.exists() and not path.is_dir():
        raise DemoConfigError(
            f"{source}={raw}: is a file; it names the directory that holds the model files"
        )
    return path


def _choice(choices: tuple[str, ...]) -> Callable[[Any, str], str]:
    def parse(raw: Any, source: str) -> str:
        value = str(raw).strip().lower()
        if value not in choices:
            raise DemoConfigError(f"{source}={raw!r}: expected one of {', '.join(choices)}")
        return value

    return parse


def _versions(raw: Any, source: str) -> tuple[str, ...]:
    parts = raw if isinstance(raw, (list, tuple)) else str(raw).split(",")
    versions = tuple(str(part).strip() for part in parts if str(part).strip())
    unknown = [version for version in versions if version not in VERSION_SEEDS]
    if not versions or unknown or len(set(versions)) != len(versions):
        raise DemoConfigError(
            f"{source}={raw!r}: expected distinct versions among {', '.join(VERSION_SEEDS)}"
        )
    return versions


def _text(raw: Any, source: str) -> str:
    if not isinstance(raw, str) or not raw.strip():
        raise DemoConfigError(f"{source}={raw!r}: expected a non-empty string")
    return raw.strip()


@dataclass(frozen=True)
class _Field:
    variable: str
    parse: Callable[[Any, str], Any]


_FIELDS: dict[str, _Field] = {
    "model_path": _Field("MODEL_PATH", _path),
    "max_batch_size": _Field("MAX_BATCH_SIZE", _integer(1, 1024)),
    "batch_timeout_ms": _Field("BATCH_TIMEOUT_MS", _milliseconds),
    "inference_threads": _Field("INFERENCE_THREADS", _integer(1, 64)),
    "max_body_bytes": _Field("MAX_BODY_BYTES", _integer(1024, 1024**3)),
    "max_items_per_request": _Field("MAX_ITEMS_PER_REQUEST", _integer(1, 1024)),
    "generation_max_batch": _Field("GENERATION_MAX_BATCH", _integer(1, 256)),
    "model_versions": _Field("MODEL_VERSIONS", _versions),
    "device": _Field("INFERENCE_DEVICE", _choice(DEVICES)),
    "host": _Field("HOST", _text),
    "port": _Field("PORT", _integer(0, 65535)),
    "service_name": _Field("OTEL_SERVICE_NAME", _text),
}

ENVIRONMENT_VARIABLES: tuple[str, ...] = (
    CONFIG_FILE_VARIABLE,
    *(field.variable for field in _FIELDS.values()),
)
"""Every environment variable the demo service reads itself."""


def _read_yaml(path: str) -> dict[str, Any]:
    source = f"{CONFIG_FILE_VARIABLE}={path}"
    try:
        text = Path(path).read_text(encoding="utf-8")
    except OSError as error:
        raise DemoConfigError(f"{source}: cannot read the file ({error.strerror})") from None
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as error:
        raise DemoConfigError(f"{source}: not valid YAML ({error})") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise DemoConfigError(f"{source}: expected a mapping of setting names to values")
    return {str(key): value for key, value in data.items()}
