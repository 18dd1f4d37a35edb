"""One frozen settings object, read once.

Precedence, highest first: keyword arguments > environment > YAML file (``AIOBS_CONFIG``)
> defaults. The OpenTelemetry variables keep their standard meaning; aiobs's own start with
``AIOBS_``. Every field is declared once in ``_FIELDS`` with the variables that set it and the
function that parses it, so a bad value fails at start-up with a message naming its source.
"""

from __future__ import annotations

import dataclasses
import math
import os
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import MappingProxyType
from typing import Any, Literal, TypedDict, get_args
from urllib.parse import unquote, urlsplit

import yaml

CONFIG_FILE_VARIABLE = "AIOBS_CONFIG"

SamplerName = Literal[
    "always_on",
    "always_off",
    "traceidratio",
    "parentbased_always_on",
    "parentbased_always_off",
    "parentbased_traceidratio",
]
OtlpProtocol = Literal["http/protobuf", "grpc"]
Instrumentation = Literal["aiobs", "opentelemetry"]
LogFormat = Literal["json", "console"]
LogLevel = Literal["DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL"]
SAMPLERS: tuple[str, ...] = get_args(SamplerName)
PROTOCOLS: tuple[str, ...] = get_args(OtlpProtocol)
PROPAGATORS = ("tracecontext", "baggage", "b3", "b3multi", "none")
INSTRUMENTATIONS: tuple[str, ...] = get_args(Instrumentation)
LOG_FORMATS: tuple[str, ...] = get_args(LogFormat)
LOG_LEVELS: tuple[str, ...] = get_args(LogLevel)


class ConfigError(ValueError):
    """A setting has a value aiobs cannot use; the message names where it came from."""


@dataclass(frozen=True)
class Settings:
    """Resolved configuration of one process.

    :meth:`Settings.load` resolves keyword arguments, the environment and the YAML file;
    ``Settings(service_name="...")`` builds one from its arguments and the defaults alone.
    Either way every value is checked (and normalised) as its variable would be: a bad one
    raises :class:`ConfigError` naming it.
    """

    service_name: str = "unknown_service"
    service_version: str = "0.0.0"
    environment: str = "development"
    resource_attributes: Mapping[str, str] = field(default_factory=lambda: MappingProxyType({}))

    tracing: bool = True
    otlp_endpoint: str | None = None
    otlp_protocol: str = "http/protobuf"
    otlp_headers: Mapping[str, str] = field(default_factory=lambda: MappingProxyType({}))
    otlp_timeout: float = 10.0
    sampler: str = "parentbased_always_on"
    sampler_arg: float = 1.0
    span_queue_size: int = 2048
    span_batch_size: int = 512
    span_schedule_delay_ms: float = 5000.0
    span_export_timeout_ms: float = 30_000.0
    propagators: tuple[str, ...] = ("tracecontext", "baggage")
    public_edge: bool = False
    instrumentation: str = "aiobs"
    json_errors: bool = True

    metrics_port: int = 0
    metrics_addr: str = "0.0.0.0"
    exemplars: bool = True
    multiprocess_dir: str | None = None
    max_label_values: int = 100
    gpu_metrics: bool = True

    configure_logging: bool = True
    log_level: str = "INFO"
    log_format: str = "json"
    access_log: bool = True
    log_max_field_length: int = 4096
    log_queue_size: int = 10_000

    readiness_timeout: float = 2.0
    shutdown_timeout: float = 5.0

    def __post_init__(self) -> None:
        for spec in dataclasses.fields(self):
            value = getattr(self, spec.name)
            if value is not None:
                parsed = _BY_NAME[spec.name].parse(value, f"setting '{spec.name}'")
                object.__setattr__(self, spec.name, parsed)

    @classmethod
    def load(
        cls,
        overrides: Mapping[str, Any] | None = None,
        environ: Mapping[str, str] | None = None,
    ) -> Settings:
        """Resolve settings from keyword ``overrides``, ``environ`` and the YAML file.

        ``environ`` defaults to ``os.environ``; tests pass their own mapping.
        """
        environ = os.environ if environ is None else environ
        values: dict[str, Any] = {}
        config_file = (overrides or {}).get("config_file") or environ.get(CONFIG_FILE_VARIABLE)
        if config_file:
            for key, raw in _read_yaml(str(config_file)).items():
                spec = _spec(key, f"config file {config_file}: key '{key}'")
                values[key] = spec.parse(raw, f"config file {config_file}: key '{key}'")
        for spec in _FIELDS:
            for variable in spec.variables:
                raw = environ.get(variable)
                if raw is not None and raw.strip() != "":
                    values[spec.name] = (spec.parse_variable or spec.parse)(raw, variable)
                    break
        for key, raw in (overrides or {}).items():
            if key == "config_file" or raw is None:
                continue
            spec = _spec(key, f"keyword argument '{key}'")
            values[key] = spec.parse(raw, f"keyword argument '{key}'")
        base = values.pop("otlp_base_endpoint", None)
        if base and "otlp_endpoint" not in values:
            # OTLP/HTTP appends the signal path to the base endpoint; gRPC uses it as it is.
            grpc = values.get("otlp_protocol") == "grpc"
            values["otlp_endpoint"] = base if grpc else base.rstrip("/") + "/v1/traces"
        resource = values.get("resource_attributes", {})
        if "service_name" not in values and "service.name" in resource:
            values["service_name"] = resource["service.name"]
        return cls(**values)

    def masked(self) -> dict[str, Any]:
        """The settings as plain data with secrets replaced, for printing."""
        data = self._as_dict()
        data["otlp_headers"] = {key: "***" for key in self.otlp_headers}
        data["resource_attributes"] = dict(self.resource_attributes)
        data["propagators"] = list(self.propagators)
        if self.otlp_endpoint:
            data["otlp_endpoint"] = _mask_url(self.otlp_endpoint)
        return data

    def replace(self, **changes: Any) -> Settings:
        """A copy with ``changes`` applied (each validated like a keyword argument)."""
        return Settings.load({**self._as_dict(), **changes}, environ={})

    def _as_dict(self) -> dict[str, Any]:
        return {spec.name: getattr(self, spec.name) for spec in dataclasses.fields(self)}


class SettingsOptions(TypedDict, total=False):
    """The keyword arguments :func:`aiobs.instrument` and :func:`aiobs.setup` take: every
    :class:`Settings` field, and ``config_file`` (a YAML file, instead of ``AIOBS_CONFIG``)
    and ``otlp_base_endpoint`` (as ``OTEL_EXPORTER_OTLP_ENDPOINT``: the signal path is
    appended)."""

    config_file: str
    service_name: str
    service_version: str
    environment: str
    resource_attributes: Mapping[str, str]
    tracing: bool
    otlp_endpoint: str | None
    otlp_base_endpoint: str | None
    otlp_protocol: OtlpProtocol
    otlp_headers: Mapping[str, str]
    otlp_timeout: float
    sampler: SamplerName
    sampler_arg: float
    span_queue_size: int
    span_batch_size: int
    span_schedule_delay_ms: float
    span_export_timeout_ms: float
    propagators: Sequence[str]
    public_edge: bool
    instrumentation: Instrumentation
    json_errors: bool
    metrics_port: int
    metrics_addr: str
    exemplars: bool
    multiprocess_dir: str | None
    max_label_values: int
    gpu_metrics: bool
    configure_logging: bool
    log_level: LogLevel
    log_format: LogFormat
    access_log: bool
    log_max_field_length: int
    log_queue_size: int
    readiness_timeout: float
    shutdown_timeout: float


# --- parsers ---------------------------------------------------------------------------------
# Each takes the raw value (a string from the environment, or a YAML/Python value) and the
# name of its source, and returns the typed value or raises ConfigError naming the source.

Parser = Callable[[Any, str], Any]


def _string(raw: Any, source: str) -> str:
    if not isinstance(raw, (str, int, float)) or isinstance(raw, bool):
        raise ConfigError(f"{source}: expected a string, got {type(raw).__name__}")
    value = str(raw).strip()
    if not value:
        raise ConfigError(f"{source}: must not be empty")
    return value


def _optional_string(raw: Any, source: str) -> str | None:
    return None if raw is None else _string(raw, source)


def _boolean(raw: Any, source: str) -> bool:
    if isinstance(raw, bool):
        return raw
    text = str(raw).strip().lower()
    if text in ("1", "true", "yes", "on"):
        return True
    if text in ("0", "false", "no", "off"):
        return False
    raise ConfigError(f"{source}: expected true or false, got {raw!r}")


def _negated_boolean(raw: Any, source: str) -> bool:
    return not _boolean(raw, source)


def _number(low: float, high: float = math.inf) -> Parser:
    def parse(raw: Any, source: str) -> float:
        try:
            value = float(raw)
        except (TypeError, ValueError):
            raise ConfigError(f"{source}: expected a number, got {raw!r}") from None
        if isinstance(raw, bool) or not low <= value <= high or math.isnan(value):
            raise ConfigError(f"{source}: {raw!r} is outside [{low}, {high}]")
        return value

    return parse


def _integer(low: int, high: int = 2**31) -> Parser:
    def parse(raw: Any, source: str) -> int:
        try:
            value = int(str(raw).strip()) if not isinstance(raw, bool) else None
        except ValueError:
            value = None
        if value is None:
            raise ConfigError(f"{source}: expected an integer, got {raw!r}")
        if not low <= value <= high:
            raise ConfigError(f"{source}: {value} is outside [{low}, {high}]")
        return value

    return parse


def _choice(options: tuple[str, ...], *, upper: bool = False) -> Parser:
    def parse(raw: Any, source: str) -> str:
        value = _string(raw, source)
        value = value.upper() if upper else value.lower()
        if value not in options:
            raise ConfigError(f"{source}: {raw!r} is not one of {', '.join(options)}")
        return value

    return parse


def _key_values(raw: Any, source: str) -> Mapping[str, str]:
    """``k1=v1,k2=v2`` (W3C baggage form, values URL-decoded), or a mapping in YAML."""
    if isinstance(raw, Mapping):
        return MappingProxyType({str(k): str(v) for k, v in raw.items()})
    pairs: dict[str, str] = {}
    for item in _string(raw, source).split(","):
        if not item.strip():
            continue
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            raise ConfigError(f"{source}: expected key=value pairs, got {item.strip()!r}")
        pairs[unquote(key.strip())] = unquote(value.strip())
    return MappingProxyType(pairs)


def _url(raw: Any, source: str) -> str:
    value = _string(raw, source)
    parts = urlsplit(value)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ConfigError(f"{source}: expected an http:// or https:// URL, got {value!r}")
    return value


def _propagators(raw: Any, source: str) -> tuple[str, ...]:
    items = raw if isinstance(raw, (list, tuple)) else _string(raw, source).split(",")
    names = tuple(str(item).strip().lower() for item in items if str(item).strip())
    for name in names:
        if name not in PROPAGATORS:
            raise ConfigError(
                f"{source}: unknown propagator {name!r}; use {', '.join(PROPAGATORS)}"
            )
    return tuple(name for name in names if name != "none")


@dataclass(frozen=True)
class _Field:
    name: str
    parse: Parser
    variables: tuple[str, ...]
    parse_variable: Parser | None = None
    """Parses the environment variables when they mean something else than the setting
    (``OTEL_SDK_DISABLED=true`` is ``tracing: false``)."""


_FIELDS: tuple[_Field, ...] = (
    _Field("service_name", _string, ("OTEL_SERVICE_NAME", "AIOBS_SERVICE_NAME")),
    _Field("service_version", _string, ("AIOBS_SERVICE_VERSION",)),
    _Field("environment", _string, ("AIOBS_ENVIRONMENT",)),
    _Field("resource_attributes", _key_values, ("OTEL_RESOURCE_ATTRIBUTES",)),
    _Field("tracing", _boolean, ("OTEL_SDK_DISABLED",), _negated_boolean),
    _Field("otlp_endpoint", _url, ("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT",)),
    # The base endpoint gets the signal path appended, as the OTLP specification says.
    _Field("otlp_base_endpoint", _url, ("OTEL_EXPORTER_OTLP_ENDPOINT",)),
    _Field(
        "otlp_protocol",
        _choice(PROTOCOLS),
        ("OTEL_EXPORTER_OTLP_TRACES_PROTOCOL", "OTEL_EXPORTER_OTLP_PROTOCOL"),
    ),
    _Field(
        "otlp_headers",
        _key_values,
        ("OTEL_EXPORTER_OTLP_TRACES_HEADERS", "OTEL_EXPORTER_OTLP_HEADERS"),
    ),
    # Seconds, as the Python SDK's exporters read these variables.
    _Field(
        "otlp_timeout",
        _number(0.001, 3600),
        ("OTEL_EXPORTER_OTLP_TRACES_TIMEOUT", "OTEL_EXPORTER_OTLP_TIMEOUT"),
    ),
    _Field("sampler", _choice(SAMPLERS), ("OTEL_TRACES_SAMPLER",)),
    _Field("sampler_arg", _number(0.0, 1.0), ("OTEL_TRACES_SAMPLER_ARG",)),
    _Field("span_queue_size", _integer(1, 10_000_000), ("OTEL_BSP_MAX_QUEUE_SIZE",)),
    _Field("span_batch_size", _integer(1, 10_000_000), ("OTEL_BSP_MAX_EXPORT_BATCH_SIZE",)),
    _Field("span_schedule_delay_ms", _number(1), ("OTEL_BSP_SCHEDULE_DELAY",)),
    _Field("span_export_timeout_ms", _number(1), ("OTEL_BSP_EXPORT_TIMEOUT",)),
    _Field("propagators", _propagators, ("OTEL_PROPAGATORS",)),
    _Field("public_edge", _boolean, ("AIOBS_PUBLIC_EDGE",)),
    _Field("instrumentation", _choice(INSTRUMENTATIONS), ("AIOBS_INSTRUMENTATION",)),
    _Field("json_errors", _boolean, ("AIOBS_JSON_ERRORS",)),
    _Field("metrics_port", _integer(0, 65535), ("AIOBS_METRICS_PORT",)),
    _Field("metrics_addr", _string, ("AIOBS_METRICS_ADDR",)),
    _Field("exemplars", _boolean, ("AIOBS_EXEMPLARS",)),
    _Field("multiprocess_dir", _optional_string, ("PROMETHEUS_MULTIPROC_DIR",)),
    _Field("gpu_metrics", _boolean, ("AIOBS_GPU_METRICS",)),
    _Field("max_label_values", _integer(1, 100_000), ("AIOBS_MAX_LABEL_VALUES",)),
    _Field("configure_logging", _boolean, ("AIOBS_CONFIGURE_LOGGING",)),
    _Field("log_level", _choice(LOG_LEVELS, upper=True), ("AIOBS_LOG_LEVEL",)),
    _Field("log_format", _choice(LOG_FORMATS), ("AIOBS_LOG_FORMAT",)),
    _Field("access_log", _boolean, ("AIOBS_ACCESS_LOG",)),
    _Field("log_max_field_length", _integer(64, 10_000_000), ("AIOBS_LOG_MAX_FIELD_LENGTH",)),
    _Field("log_queue_size", _integer(1, 10_000_000), ("AIOBS_LOG_QUEUE_SIZE",)),
    _Field("readiness_timeout", _number(0.001, 3600), ("AIOBS_READINESS_TIMEOUT",)),
    _Field("shutdown_timeout", _number(0.0, 3600), ("AIOBS_SHUTDOWN_TIMEOUT",)),
)
_BY_NAME = {spec.name: spec for spec in _FIELDS}

ENVIRONMENT_VARIABLES: tuple[str, ...] = (
    CONFIG_FILE_VARIABLE,
    *(variable for spec in _FIELDS for variable in spec.variables),
)
"""Every environment variable aiobs reads."""


def _spec(key: str, source: str) -> _Field:
    try:
        return _BY_NAME[key]
    except KeyError:
        known = ", ".join(sorted(_BY_NAME))
        raise ConfigError(f"{source}: unknown setting; known settings are {known}") from None


def _read_yaml(path: str) -> dict[str, Any]:
    source = f"{CONFIG_FILE_VARIABLE}={path}"
    try:
        text = Path(path).read_text(encoding="utf-8")
    except OSError as error:
        raise ConfigError(f"{source}: cannot read the file ({error.strerror})") from None
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as error:
        raise ConfigError(f"{source}: not valid YAML ({error})") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigError(f"{source}: expected a mapping of setting names to values")
    return {str(key): value for key, value in data.items()}


def _mask_url(url: str) -> str:
    parts = urlsplit(url)
    if parts.username is None and parts.password is None:
        return url
    host = parts.hostname or ""
    if parts.port:
        host = f"{host}:{parts.port}"
    return parts._replace(netloc=f"***@{host}").geturl()
