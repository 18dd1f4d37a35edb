"""The compose stack without a Docker engine: the compose files against the compose-spec
schema, the files they mount, pinned images, healthchecks, limits and secure defaults, and
each config a service reads checked by that service's own tool (promtool, amtool) or, where
the program cannot run here (Grafana, Fluent Bit, Loki), parsed and checked for what matters."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import jsonschema
import pytest
import yaml

from tests.support.compose import (
    COMPOSE_DIR,
    COMPOSE_FILE,
    ENV_EXAMPLE,
    GPU_FILE,
    REPO_ROOT,
    bind_mounts,
    flag,
    host_path,
    interpolate,
    load,
    native_prometheus_config,
    resolved,
)
from tests.support.dashboards_prometheus import dashboards

PASSWORD = {"GF_SECURITY_ADMIN_PASSWORD": "a-test-password-0123456789"}
SERVICES = {
    "demo", "loadgen", "prometheus", "alertmanager", "grafana", "jaeger", "loki", "fluent-bit"
}  # fmt: skip
PUBLISHED = {"demo", "grafana"}
PINNED = re.compile(r"^[\w./-]+:v?\d+\.\d+\.\d+(-[\w.]+)?$")
ALERTS_DIR = REPO_ROOT / "alerts"


@pytest.fixture(scope="module")
def compose() -> dict[str, Any]:
    return resolved(PASSWORD)


def _service(compose: dict[str, Any], name: str) -> dict[str, Any]:
    service: dict[str, Any] = compose["services"][name]
    return service


def _provisioned(compose: dict[str, Any], kind: str) -> list[dict[str, Any]]:
    """Every Grafana provisioning document of ``kind`` (datasources, dashboards) compose
    mounts."""
    grafana = _service(compose, "grafana")
    return [
        yaml.safe_load(path.read_text(encoding="utf-8"))
        for _, path, target in bind_mounts({"services": {"grafana": grafana}})
        if target.startswith(f"/etc/grafana/provisioning/{kind}/")
    ]


def test_compose_files_validate_against_the_compose_spec() -> None:
    """check-jsonschema's bundled compose-spec schema (offline) accepts both compose files."""
    result = subprocess.run(
        [sys.executable, "-m", "check_jsonschema", "--builtin-schema", "vendor.compose-spec",
         str(COMPOSE_FILE), str(GPU_FILE)],
        capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip
    assert result.returncode == 0, result.stdout + result.stderr


def test_the_stack_has_every_service_of_the_issue(compose: dict[str, Any]) -> None:
    """The compose file runs exactly the demo, its load generator, Prometheus, Alertmanager,
    Grafana, Jaeger, Loki and Fluent Bit."""
    assert set(compose["services"]) == SERVICES


def test_every_mounted_file_exists_in_the_repository(compose: dict[str, Any]) -> None:
    """Each bind mount from the repository names a file or folder that exists, and Grafana's
    dashboard folder holds the generated dashboards."""
    mounts = bind_mounts(compose)
    assert len(mounts) >= 8
    for service, source, target in mounts:
        assert source.exists(), f"{service} mounts {source} at {target}: missing"
        assert source.is_relative_to(REPO_ROOT), (service, source)
    folder = host_path(_service(compose, "grafana"), "/var/lib/grafana/dashboards/aiobs")
    assert sorted(folder.glob("*.json")), folder


def test_every_image_is_pinned_to_an_exact_version(compose: dict[str, Any]) -> None:
    """Every image is name:version with a full x.y.z version (never latest), the demo's and the
    load generator's images are built from demo_service/Dockerfile."""
    for name, service in compose["services"].items():
        image = service["image"]
        assert "latest" not in image, (name, image)
        if "build" in service:
            assert service["build"]["dockerfile"] == "demo_service/Dockerfile", name
            assert (COMPOSE_DIR / service["build"]["context"] / "demo_service/Dockerfile").exists()
        else:
            assert PINNED.match(image), (name, image)


def test_every_service_has_a_healthcheck_restart_policy_limits_and_ordered_start(
    compose: dict[str, Any],
) -> None:
    """Each service has a healthcheck, a restart policy and CPU and memory limits; every
    dependency waits on a condition; data lives in declared named volumes."""
    declared = set(compose["volumes"])
    for name, service in compose["services"].items():
        assert service["healthcheck"]["test"][0] in ("CMD", "CMD-SHELL"), name
        assert service["restart"] in ("unless-stopped", "on-failure", "always"), name
        limits = service["deploy"]["resources"]["limits"]
        assert float(limits["cpus"]) > 0, name
        assert limits["memory"], name
        for dependency, rule in service.get("depends_on", {}).items():
            assert dependency in compose["services"], (name, dependency)
            assert rule["condition"] in ("service_healthy", "service_started"), (name, dependency)
        for volume in service.get("volumes", []):
            source = str(volume).split(":")[0]
            if not source.startswith((".", "/")):
                assert source in declared, (name, source)
    for name in ("prometheus", "alertmanager", "grafana", "loki", "fluent-bit"):
        named = [v for v in _service(compose, name)["volumes"] if str(v).split(":")[0] in declared]
        assert named, f"{name} keeps its data in no named volume"
    assert _service(compose, "loadgen")["depends_on"]["demo"]["condition"] == "service_healthy"
    assert _service(compose, "grafana")["depends_on"]["prometheus"]["condition"] == (
        "service_healthy"
    )


def test_secure_defaults(compose: dict[str, Any]) -> None:
    """Grafana refuses to start without an admin password (never admin/admin), anonymous
    access, sign-up and external snapshots are off, only the demo and Grafana are published and
    on 127.0.0.1 by default, no service gains privileges, and only Fluent Bit runs as root."""
    with pytest.raises(KeyError, match="GF_SECURITY_ADMIN_PASSWORD"):
        resolved({})
    raw = load()["services"]["grafana"]["environment"]["GF_SECURITY_ADMIN_PASSWORD"]
    assert raw.startswith("${GF_SECURITY_ADMIN_PASSWORD:?"), raw
    example = dict(
        line.split("=", 1)
        for line in ENV_EXAMPLE.read_text(encoding="utf-8").splitlines()
        if line and not line.startswith("#")
    )
    assert example["GF_SECURITY_ADMIN_PASSWORD"] not in ("", "admin")

    environment = _service(compose, "grafana")["environment"]
    assert environment["GF_SECURITY_ADMIN_PASSWORD"] == PASSWORD["GF_SECURITY_ADMIN_PASSWORD"]
    assert environment["GF_AUTH_ANONYMOUS_ENABLED"] == "false"
    assert environment["GF_SNAPSHOTS_EXTERNAL_ENABLED"] == "false"
    assert environment["GF_USERS_ALLOW_SIGN_UP"] == "false"

    published = {name for name, s in compose["services"].items() if s.get("ports")}
    assert published == PUBLISHED
    for name in PUBLISHED:
        for port in _service(compose, name)["ports"]:
            assert str(port).startswith("127.0.0.1:"), (name, port)
    for name, service in compose["services"].items():
        assert "no-new-privileges:true" in service["security_opt"], name
        assert service["cap_drop"] == ["ALL"], name
        assert not service.get("privileged"), name
        assert service.get("network_mode") != "host", name
        root = str(service.get("user", "")).split(":")[0] in ("0", "root")
        assert root == (name == "fluent-bit"), name  # Docker's log files are root's
    fluent_bit_mounts = _service(compose, "fluent-bit")["volumes"]
    assert "/var/lib/docker/containers:/var/lib/docker/containers:ro" in fluent_bit_mounts


def test_env_example_names_every_variable_the_compose_files_read() -> None:
    """Each ${VARIABLE} of the compose files has a line in .env.example."""
    names = set()
    for path in (COMPOSE_FILE, GPU_FILE):
        names.update(re.findall(r"\$\{(\w+)", path.read_text(encoding="utf-8")))
    example = ENV_EXAMPLE.read_text(encoding="utf-8")
    missing = [name for name in sorted(names) if f"\n{name}=" not in f"\n{example}"]
    assert not missing


@pytest.mark.skipif(shutil.which("promtool") is None, reason="Debian's prometheus package")
def test_promtool_accepts_the_prometheus_config_with_the_mounted_rules(
    compose: dict[str, Any], tmp_path: Path
) -> None:
    """`promtool check config` passes on the mounted prometheus.yml (the rules folder pointed
    at the repository's alerts/) and loads every rule file; exemplar storage is on; the demo's
    job is the "aiobs" that the rules select; every scrape target is a service of the stack."""
    prometheus = _service(compose, "prometheus")
    assert "--enable-feature=exemplar-storage" in prometheus["command"]
    assert host_path(prometheus, "/etc/prometheus/rules") == ALERTS_DIR
    config_path = tmp_path / "prometheus.yml"
    config_path.write_text(native_prometheus_config(compose, {}, ALERTS_DIR), encoding="utf-8")
    result = subprocess.run(
        ["promtool", "check", "config", str(config_path)],
        capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip
    output = result.stdout + result.stderr
    assert result.returncode == 0, output
    rule_files = sorted(ALERTS_DIR.glob("*.yml"))
    assert rule_files
    for path in rule_files:
        assert f"{path}" in output, output

    config = yaml.safe_load(config_path.read_text(encoding="utf-8"))
    jobs = {job["job_name"]: job for job in config["scrape_configs"]}
    assert jobs["aiobs"]["static_configs"][0]["targets"] == ["demo:8000"]
    assert 'job="aiobs"' in (ALERTS_DIR / "service.yml").read_text(encoding="utf-8")
    for job in jobs.values():
        for target in job["static_configs"][0]["targets"]:
            assert target.split(":")[0] in compose["services"], target
    assert set(jobs) >= {"aiobs", "prometheus", "alertmanager", "jaeger", "fluent-bit", "loki"}
    managers = config["alerting"]["alertmanagers"][0]["static_configs"][0]["targets"]
    assert managers == ["alertmanager:9093"]


@pytest.mark.skipif(shutil.which("amtool") is None, reason="Debian's prometheus-alertmanager")
def test_amtool_accepts_the_alertmanager_config(compose: dict[str, Any]) -> None:
    """`amtool check-config` passes on the mounted alertmanager.yml, whose default route sends
    every alert to a receiver a user can point at theirs."""
    alertmanager = _service(compose, "alertmanager")
    path = host_path(alertmanager, flag(alertmanager["command"], "--config.file"))
    result = subprocess.run(
        ["amtool", "check-config", str(path)],
        capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip
    assert result.returncode == 0, result.stdout + result.stderr
    assert "SUCCESS" in result.stdout
    config = yaml.safe_load(path.read_text(encoding="utf-8"))
    receivers = {receiver["name"] for receiver in config["receivers"]}
    assert config["route"]["receiver"] in receivers


def test_grafana_datasources_match_the_dashboards_and_link_traces(
    compose: dict[str, Any],
) -> None:
    """The provisioned datasources give the dashboards' datasource variable its Prometheus (by
    type and by name), link Prometheus exemplars' trace_id and Loki lines' trace_id to the
    Jaeger datasource, and point at the stack's service names and ports."""
    datasources = [d for doc in _provisioned(compose, "datasources") for d in doc["datasources"]]
    by_uid = {d["uid"]: d for d in datasources}
    assert len(by_uid) == len(datasources), "duplicate datasource uids"
    assert len({d["name"] for d in datasources}) == len(datasources)

    for dashboard in dashboards().values():
        variables = {v["name"]: v for v in dashboard["templating"]["list"]}
        datasource = variables["datasource"]
        assert datasource["type"] == "datasource"
        matching = [d for d in datasources if d["type"] == datasource["query"]]
        assert matching, dashboard["title"]
        assert datasource["current"]["value"] in {d["name"] for d in matching}
        uids = set(re.findall(r'"uid": "([^"]+)"', json.dumps(dashboard["panels"])))
        assert uids <= {"${datasource}"}, (dashboard["title"], uids)
    [default] = [d for d in datasources if d.get("isDefault")]
    assert default["type"] == "prometheus"

    prometheus, jaeger, loki = by_uid["prometheus"], by_uid["jaeger"], by_uid["loki"]
    assert jaeger["type"] == "jaeger"
    assert loki["type"] == "loki"
    [exemplar] = prometheus["jsonData"]["exemplarTraceIdDestinations"]
    assert exemplar == {"name": "trace_id", "datasourceUid": "jaeger"}
    [derived] = loki["jsonData"]["derivedFields"]
    assert derived["datasourceUid"] == "jaeger"
    assert derived["url"] == "$${__value.raw}"  # Grafana expands ${...}; $$ is a literal $
    trace_id = "4bf92f3577b34da6a3ce929d0e0e4736"
    for line in (
        json.dumps({"event": "http_request", "trace_id": trace_id}),  # aiobs's own line
        json.dumps({"event": "x", "trace_id": trace_id}, separators=(",", ":")),  # Fluent Bit's
    ):
        match = re.search(derived["matcherRegex"], line)
        assert match, line
        assert match.group(1) == trace_id, line

    ports = {
        "prometheus": "9090", "jaeger": "16686",
        "loki": str(yaml.safe_load((COMPOSE_DIR / "loki/loki.yaml").read_text())["server"]
                    ["http_listen_port"]),
    }  # fmt: skip
    for uid, port in ports.items():
        assert by_uid[uid]["url"] == f"http://{uid}:{port}", by_uid[uid]["url"]
        assert uid in compose["services"]


def test_grafana_loads_the_generated_dashboards_from_their_mounted_folder(
    compose: dict[str, Any],
) -> None:
    """The dashboard provider reads the folder compose mounts the repository's dashboards/ at;
    Grafana runs with anonymous access off and its home dashboard is one of them."""
    [provider] = [p for doc in _provisioned(compose, "dashboards") for p in doc["providers"]]
    assert provider["type"] == "file"
    folder = host_path(_service(compose, "grafana"), provider["options"]["path"])
    assert folder == REPO_ROOT / "dashboards"
    home = _service(compose, "grafana")["environment"]["GF_DASHBOARDS_DEFAULT_HOME_DASHBOARD_PATH"]
    assert host_path(_service(compose, "grafana"), home).exists()


FLUENT_BIT_SCHEMA: dict[str, Any] = {
    "type": "object",
    "additionalProperties": False,
    "required": ["service", "pipeline"],
    "properties": {
        "service": {"type": "object"},
        "pipeline": {
            "type": "object",
            "additionalProperties": False,
            "required": ["inputs", "outputs"],
            "properties": {
                section: {
                    "type": "array",
                    "minItems": 1,
                    "items": {
                        "type": "object",
                        "required": ["name", "match"] if section != "inputs" else ["name"],
                        "properties": {"name": {"type": "string"}},
                    },
                }
                for section in ("inputs", "filters", "outputs")
            },
        },
    },
}
"""The part of Fluent Bit's YAML configuration format this stack uses."""


def test_fluent_bit_buffers_on_disk_retries_forever_and_ships_structured_logs_to_loki(
    compose: dict[str, Any],
) -> None:
    """Fluent Bit's YAML config (checked against a schema of its format) tails the Docker log
    files it mounts, keeps chunks on the filesystem in its named volume, retries without limit,
    parses each JSON line into fields, labels streams by container, and ships to Loki's port."""
    service = _service(compose, "fluent-bit")
    path = host_path(service, service["command"][1].split("=", 1)[1])
    config = yaml.safe_load(path.read_text(encoding="utf-8"))
    jsonschema.validate(config, FLUENT_BIT_SCHEMA)

    settings = config["service"]
    buffer = settings["storage.path"]
    assert any(str(v).split(":")[1] == buffer for v in service["volumes"])
    assert str(service["volumes"][-1]).split(":")[0] in compose["volumes"]
    assert settings["health_check"] is True
    assert settings["http_port"] == 2020
    [tail] = config["pipeline"]["inputs"]
    assert tail["name"] == "tail"
    assert tail["storage.type"] == "filesystem"
    assert tail["path"].startswith("/var/lib/docker/containers/")
    assert tail["multiline.parser"] == "docker"
    assert tail["db"].startswith(buffer)
    [parser] = config["pipeline"]["filters"]
    assert (parser["name"], parser["key_name"], parser["parser"]) == ("parser", "log", "json")
    assert parser["reserve_data"] is True
    [loki] = config["pipeline"]["outputs"]
    assert loki["name"] == "loki"
    assert loki["host"] == "loki"
    assert loki["retry_limit"] == "no_limits"
    assert loki["line_format"] == "json"
    assert loki["storage.total_limit_size"]
    assert "container=$attrs['tag']" in loki["labels"]
    loki_port = yaml.safe_load((COMPOSE_DIR / "loki/loki.yaml").read_text())["server"]
    assert loki["port"] == loki_port["http_listen_port"]
    for name, other in compose["services"].items():
        options = other["logging"]["options"]
        assert other["logging"]["driver"] == "json-file", name
        assert options["tag"] == "{{.Name}}", name


def test_loki_keeps_its_data_in_its_volume_with_bounded_retention(
    compose: dict[str, Any],
) -> None:
    """Loki's config stores everything under the path of its named volume, keeps logs a
    bounded time, and answers on the port its healthcheck and Grafana use."""
    service = _service(compose, "loki")
    config = yaml.safe_load(
        host_path(service, flag(service["command"], "-config.file")).read_text(encoding="utf-8")
    )
    data = next(str(v).split(":")[1] for v in service["volumes"] if str(v).startswith("loki-"))
    assert config["common"]["path_prefix"] == data
    for directory in config["common"]["storage"]["filesystem"].values():
        assert directory.startswith(f"{data}/")
    assert config["auth_enabled"] is False
    assert config["compactor"]["retention_enabled"] is True
    assert config["limits_config"]["retention_period"]
    port = config["server"]["http_listen_port"]
    assert f"127.0.0.1:{port}/ready" in " ".join(service["healthcheck"]["test"])


def test_jaeger_receives_otlp_from_the_demo_into_a_bounded_store(compose: dict[str, Any]) -> None:
    """Jaeger's OTLP gRPC and HTTP receivers are on, its memory store is bounded, and the demo
    exports its spans to Jaeger's OTLP/HTTP port."""
    jaeger = _service(compose, "jaeger")
    assert jaeger["environment"]["COLLECTOR_OTLP_ENABLED"] == "true"
    assert int(flag(jaeger["command"], "--memory.max-traces")) > 0
    assert flag(jaeger["command"], "--collector.otlp.http.host-port") == ":4318"
    assert flag(jaeger["command"], "--collector.otlp.grpc.host-port") == ":4317"
    demo = _service(compose, "demo")["environment"]
    assert demo["OTEL_EXPORTER_OTLP_ENDPOINT"] == "http://jaeger:4318"
    assert demo["OTEL_EXPORTER_OTLP_PROTOCOL"] == "http/protobuf"


def test_gpu_override_reserves_nvidia_devices_for_the_demo_only(compose: dict[str, Any]) -> None:
    """The GPU file builds the demo's GPU variant and reserves NVIDIA GPUs for it; the default
    file reserves no device, so it runs on CPU-only machines."""
    gpu = yaml.safe_load(interpolate(GPU_FILE.read_text(encoding="utf-8")))
    demo = gpu["services"]["demo"]
    [device] = demo["deploy"]["resources"]["reservations"]["devices"]
    assert device["driver"] == "nvidia"
    assert device["capabilities"] == ["gpu"]
    assert int(device["count"]) >= 1
    assert demo["build"]["args"]["VARIANT"] == "gpu"
    assert gpu["services"]["loadgen"]["image"] == demo["image"]
    for name, service in compose["services"].items():
        assert "reservations" not in service["deploy"]["resources"], name
    assert _service(compose, "demo")["build"]["args"]["VARIANT"] == "cpu"
