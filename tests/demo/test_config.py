"""The demo's settings: environment over YAML file over defaults; a bad value stops
start-up with a message naming the variable or the file and key."""

from __future__ import annotations

from pathlib import Path

import pytest

from demo_service.config import ENVIRONMENT_VARIABLES, DemoConfigError, DemoSettings


def test_defaults(tmp_path: Path) -> None:
    """MAX_BATCH_SIZE 32, a few ms of batching delay, one inference thread, loopback."""
    settings = DemoSettings.from_env({"XDG_CACHE_HOME": str(tmp_path)})
    assert settings.max_batch_size == 32
    assert settings.batch_timeout_ms == 5.0
    assert settings.inference_threads == 1
    assert settings.max_body_bytes == 4 * 1024 * 1024
    assert settings.device == "auto"
    assert (settings.host, settings.port) == ("127.0.0.1", 8000)
    assert settings.model_path == tmp_path / "aiobs-demo" / "models"
    assert settings.service_name == "aiobs-demo"
    assert settings.model_versions == ("v1", "v2")


def test_environment_wins_over_the_yaml_file(tmp_path: Path) -> None:
    """DEMO_CONFIG names a YAML file of the same settings; the environment overrides it."""
    config = tmp_path / "demo.yaml"
    config.write_text(
        "model_path: /srv/models\nmax_batch_size: 16\nbatch_timeout_ms: 2.5\n"
        "inference_threads: 2\nmodel_versions: [v2]\n"
    )
    settings = DemoSettings.from_env(
        {"DEMO_CONFIG": str(config), "MAX_BATCH_SIZE": "8", "MAX_BODY_BYTES": "65536"}
    )
    assert settings.model_path == Path("/srv/models")
    assert settings.max_batch_size == 8
    assert settings.batch_timeout_ms == 2.5
    assert settings.inference_threads == 2
    assert settings.max_body_bytes == 65536
    assert settings.model_versions == ("v2",)


@pytest.mark.parametrize(
    ("environ", "message"),
    [
        ({"MAX_BATCH_SIZE": "lots"}, "MAX_BATCH_SIZE='lots': expected a whole number"),
        ({"MAX_BATCH_SIZE": "0"}, "MAX_BATCH_SIZE=0: expected 1 to 1024"),
        ({"BATCH_TIMEOUT_MS": "nan"}, "BATCH_TIMEOUT_MS='nan'"),
        ({"BATCH_TIMEOUT_MS": "-1"}, "BATCH_TIMEOUT_MS='-1'"),
        ({"INFERENCE_THREADS": "1.5"}, "INFERENCE_THREADS='1.5'"),
        ({"MAX_BODY_BYTES": "10"}, "MAX_BODY_BYTES=10: expected 1024"),
        ({"INFERENCE_DEVICE": "tpu"}, "INFERENCE_DEVICE='tpu': expected one of auto, cpu, cuda"),
        ({"PORT": "70000"}, "PORT=70000"),
        ({"MODEL_VERSIONS": "v1,v3"}, "MODEL_VERSIONS='v1,v3': expected distinct versions"),
        ({"MODEL_VERSIONS": "v1,v1"}, "MODEL_VERSIONS='v1,v1'"),
    ],
)
def test_bad_values_name_their_variable(environ: dict[str, str], message: str) -> None:
    with pytest.raises(DemoConfigError) as raised:
        DemoSettings.from_env(environ)
    assert message in str(raised.value)


def test_model_path_must_be_a_directory(tmp_path: Path) -> None:
    a_file = tmp_path / "model.onnx"
    a_file.write_bytes(b"")
    with pytest.raises(DemoConfigError, match=r"MODEL_PATH=.*is a file"):
        DemoSettings.from_env({"MODEL_PATH": str(a_file)})


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("max_batch_size: [1]\n", "key 'max_batch_size'"),
        ("batch_size: 4\n", "key 'batch_size': unknown setting"),
        ("- a list\n", "expected a mapping"),
        ("max_batch_size: [\n", "not valid YAML"),
    ],
)
def test_bad_yaml_names_the_file_and_key(tmp_path: Path, text: str, message: str) -> None:
    config = tmp_path / "demo.yaml"
    config.write_text(text)
    with pytest.raises(DemoConfigError) as raised:
        DemoSettings.from_env({"DEMO_CONFIG": str(config)})
    assert str(config) in str(raised.value)
    assert message in str(raised.value)


def test_missing_yaml_file_is_reported(tmp_path: Path) -> None:
    with pytest.raises(DemoConfigError, match=r"DEMO_CONFIG=.*cannot read the file"):
        DemoSettings.from_env({"DEMO_CONFIG": str(tmp_path / "absent.yaml")})


def test_every_variable_is_listed() -> None:
    """The documented variables are the ones read."""
    assert set(ENVIRONMENT_VARIABLES) == {
        "DEMO_CONFIG", "MODEL_PATH", "MAX_BATCH_SIZE", "BATCH_TIMEOUT_MS", "INFERENCE_THREADS",
        "MAX_BODY_BYTES", "MAX_ITEMS_PER_REQUEST", "GENERATION_MAX_BATCH", "MODEL_VERSIONS",
        "INFERENCE_DEVICE", "HOST",
        "PORT",
        "OTEL_SERVICE_NAME",
    }  # fmt: skip
