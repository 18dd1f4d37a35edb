"""Settings resolve once, with a fixed precedence, and reject bad values by name."""

from __future__ import annotations

from pathlib import Path

import pytest

from aiobs import ConfigError, Settings


def test_defaults_without_environment() -> None:
    """With nothing configured, no exporter endpoint is set and sampling is parent-based."""
    settings = Settings.load(environ={})
    assert settings.otlp_endpoint is None
    assert settings.sampler == "parentbased_always_on"
    assert settings.propagators == ("tracecontext", "baggage")
    assert settings.shutdown_timeout == 5.0


def test_keyword_beats_environment_beats_file_beats_default(tmp_path: Path) -> None:
    """Each source overrides the ones below it, field by field."""
    config = tmp_path / "aiobs.yaml"
    config.write_text("service_name: from-file\nenvironment: staging\nlog_level: debug\n")
    environ = {
        "AIOBS_CONFIG": str(config),
        "OTEL_SERVICE_NAME": "from-env",
        "AIOBS_LOG_LEVEL": "warning",
    }
    settings = Settings.load({"service_name": "from-kwarg"}, environ)
    assert settings.service_name == "from-kwarg"
    assert settings.log_level == "WARNING"
    assert settings.environment == "staging"
    assert settings.access_log is True


def test_standard_otel_variables_keep_their_meaning() -> None:
    """The base endpoint gets /v1/traces; the signal endpoint is used as given."""
    base = Settings.load(environ={"OTEL_EXPORTER_OTLP_ENDPOINT": "http://collector:4318/"})
    assert base.otlp_endpoint == "http://collector:4318/v1/traces"
    signal = Settings.load(
        environ={
            "OTEL_EXPORTER_OTLP_ENDPOINT": "http://collector:4318",
            "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT": "http://other:4318/custom",
        }
    )
    assert signal.otlp_endpoint == "http://other:4318/custom"
    grpc = Settings.load(
        environ={
            "OTEL_EXPORTER_OTLP_ENDPOINT": "http://collector:4317",
            "OTEL_EXPORTER_OTLP_PROTOCOL": "grpc",
        }
    )
    assert grpc.otlp_endpoint == "http://collector:4317"
    parsed = Settings.load(
        environ={
            "OTEL_EXPORTER_OTLP_HEADERS": "api-key=s%20ecret,x-tenant=a",
            "OTEL_RESOURCE_ATTRIBUTES": "team=ml,region=eu",
            "OTEL_SDK_DISABLED": "true",
            "OTEL_PROPAGATORS": "b3multi",
            "OTEL_BSP_MAX_QUEUE_SIZE": "64",
        }
    )
    assert dict(parsed.otlp_headers) == {"api-key": "s ecret", "x-tenant": "a"}
    assert dict(parsed.resource_attributes) == {"team": "ml", "region": "eu"}
    assert parsed.tracing is False
    assert Settings.load({"tracing": False}, environ={}).tracing is False
    assert Settings.load({"tracing": True}, {"OTEL_SDK_DISABLED": "true"}).tracing is True
    assert parsed.propagators == ("b3multi",)
    assert parsed.span_queue_size == 64


@pytest.mark.parametrize(
    ("environ", "named"),
    [
        ({"OTEL_TRACES_SAMPLER": "sometimes"}, "OTEL_TRACES_SAMPLER"),
        ({"OTEL_TRACES_SAMPLER_ARG": "1.5"}, "OTEL_TRACES_SAMPLER_ARG"),
        ({"OTEL_EXPORTER_OTLP_ENDPOINT": "collector:4318"}, "OTEL_EXPORTER_OTLP_ENDPOINT"),
        ({"OTEL_EXPORTER_OTLP_PROTOCOL": "http/json"}, "OTEL_EXPORTER_OTLP_PROTOCOL"),
        ({"OTEL_EXPORTER_OTLP_HEADERS": "novalue"}, "OTEL_EXPORTER_OTLP_HEADERS"),
        ({"OTEL_BSP_MAX_QUEUE_SIZE": "many"}, "OTEL_BSP_MAX_QUEUE_SIZE"),
        ({"OTEL_BSP_EXPORT_TIMEOUT": "soon"}, "OTEL_BSP_EXPORT_TIMEOUT"),
        ({"OTEL_PROPAGATORS": "jaeger"}, "OTEL_PROPAGATORS"),
        ({"AIOBS_METRICS_PORT": "70000"}, "AIOBS_METRICS_PORT"),
        ({"AIOBS_ACCESS_LOG": "maybe"}, "AIOBS_ACCESS_LOG"),
        ({"AIOBS_SHUTDOWN_TIMEOUT": "nan"}, "AIOBS_SHUTDOWN_TIMEOUT"),
        ({"AIOBS_CONFIG": "/nonexistent/aiobs.yaml"}, "AIOBS_CONFIG"),
    ],
)
def test_bad_environment_value_names_the_variable(environ: dict[str, str], named: str) -> None:
    """A bad value stops start-up with a message that names where it came from."""
    with pytest.raises(ConfigError, match=named):
        Settings.load(environ=environ)


def test_bad_file_key_and_keyword_are_named(tmp_path: Path) -> None:
    """Unknown keys and wrongly typed values in the file or keywords are named too."""
    config = tmp_path / "aiobs.yaml"
    config.write_text("service_nmae: typo\n")
    with pytest.raises(ConfigError, match="key 'service_nmae'"):
        Settings.load(environ={"AIOBS_CONFIG": str(config)})
    config.write_text("- a list\n")
    with pytest.raises(ConfigError, match="mapping"):
        Settings.load(environ={"AIOBS_CONFIG": str(config)})
    with pytest.raises(ConfigError, match="keyword argument 'log_queue_size'"):
        Settings.load({"log_queue_size": 0}, environ={})


def test_masked_hides_headers_and_url_credentials() -> None:
    """The printable form never carries OTLP header values or URL passwords."""
    settings = Settings.load(
        environ={
            "OTEL_EXPORTER_OTLP_HEADERS": "authorization=Bearer%20canary-123",
            "OTEL_EXPORTER_OTLP_ENDPOINT": "https://user:canary-456@collector:4318",
        }
    )
    text = repr(settings.masked())
    assert "canary" not in text
    assert settings.masked()["otlp_headers"] == {"authorization": "***"}


def test_settings_are_frozen() -> None:
    """Settings are read once; changing them means building new ones."""
    settings = Settings.load(environ={})
    with pytest.raises(AttributeError):
        settings.service_name = "x"  # type: ignore[misc]
    assert settings.replace(service_name="y").service_name == "y"
