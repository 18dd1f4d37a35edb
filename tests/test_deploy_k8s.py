"""deploy/k8s/: the kustomizations render offline, built-in kinds pass kubernetes-validate
--strict, custom resources pass their CRD schemas, and the manifests agree with aiobs (health
and metrics paths, catalog metrics, generated rules and dashboards)."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml
from fastapi import FastAPI

import aiobs
from aiobs import catalog
from aiobs.http.endpoints import LIVE_PATH, METRICS_PATH, READY_PATH
from aiobs.ops import deploy
from tests.conftest import Harness, client_for
from tests.support.deploy import (
    DEPLOY,
    KUBERNETES_VERSION,
    ROOT,
    needs_kubectl,
    one,
    render,
    validate,
)
from tests.support.deploy_schemas import MODELS, validate_custom

OVERLAYS = ("cpu", "gpu")


def _pods(documents: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [d["spec"]["template"]["spec"] for d in documents if d["kind"] == "Deployment"]


def _demo(documents: list[dict[str, Any]]) -> dict[str, Any]:
    pod = one(documents, "Deployment", "aiobs-demo")["spec"]["template"]["spec"]
    [container] = [c for c in pod["containers"] if c["name"] == "demo"]
    return dict(container)


def _env(container: dict[str, Any]) -> dict[str, str]:
    return {item["name"]: item.get("value", "") for item in container["env"]}


def test_generated_manifests_are_current(tmp_path: Path) -> None:
    """The PrometheusRule and dashboard ConfigMaps in deploy/k8s/base/ are exactly what the
    generators give now, and `check` fails on a directory without them."""
    assert deploy.stale(ROOT / deploy.BASE) == []
    assert deploy.main(["check", "--dir", str(tmp_path)]) == 1
    assert deploy.main(["generate", "--dir", str(tmp_path)]) == 0
    assert deploy.main(["check", "--dir", str(tmp_path)]) == 0


def test_prometheus_rule_holds_every_rule_of_alerts() -> None:
    """The PrometheusRule carries every group and rule of alerts/, selecting the job the
    Prometheus Operator gives the aiobs-demo Service."""
    [rule] = list(yaml.safe_load_all(deploy.prometheus_rule()))
    groups = rule["spec"]["groups"]
    checked_in = [
        group
        for path in sorted((ROOT / "alerts").glob("*.yml"))
        for group in yaml.safe_load(path.read_text(encoding="utf-8"))["groups"]
    ]
    assert sorted(g["name"] for g in groups) == sorted(g["name"] for g in checked_in)
    names = sorted(r.get("alert") or r["record"] for g in groups for r in g["rules"])
    assert names == sorted(r.get("alert") or r["record"] for g in checked_in for r in g["rules"])
    exprs = [str(r["expr"]) for g in groups for r in g["rules"]]
    assert all('job="aiobs"' not in e for e in exprs)
    assert any('job="aiobs-demo"' in e for e in exprs)


def test_dashboard_configmaps_are_the_dashboards_directory() -> None:
    """Each dashboards/*.json is one ConfigMap, byte for byte, labelled for Grafana's sidecar."""
    maps = list(yaml.safe_load_all(deploy.dashboard_configmaps()))
    files = {p.name: p.read_text(encoding="utf-8") for p in (ROOT / "dashboards").glob("*.json")}
    assert {name for m in maps for name in m["data"]} == set(files)
    for config_map in maps:
        assert config_map["metadata"]["labels"]["grafana_dashboard"] == "1"
        [(name, text)] = config_map["data"].items()
        assert text == files[name]
        json.loads(text)


@needs_kubectl
@pytest.mark.parametrize("overlay", [*OVERLAYS, "prometheus-adapter"])
def test_kustomizations_render_and_validate(overlay: str) -> None:
    """`kubectl kustomize` renders the overlay offline; every built-in kind passes
    kubernetes-validate --strict and every custom resource passes its CRD-derived model."""
    documents = render(overlay)
    assert documents
    for document in documents:
        validate(document)


@needs_kubectl
@pytest.mark.parametrize("overlay", OVERLAYS)
def test_overlay_has_every_resource_of_the_issue(overlay: str) -> None:
    """Each overlay ships the Deployment, Service, PDB, HPA, ServiceMonitor, PrometheusRule,
    four dashboard ConfigMaps and the OpenTelemetry Collector, all in one namespace."""
    documents = render(overlay)
    kinds = sorted({d["kind"] for d in documents})
    for kind in ("Deployment", "Service", "PodDisruptionBudget", "HorizontalPodAutoscaler",
                 "ServiceMonitor", "PrometheusRule", "ConfigMap", "Namespace"):  # fmt: skip
        assert kind in kinds
    dashboards = [
        d for d in documents
        if d["kind"] == "ConfigMap" and d["metadata"].get("labels", {}).get("grafana_dashboard")
    ]  # fmt: skip
    assert len(dashboards) == len(list((ROOT / "dashboards").glob("*.json")))
    one(documents, "Deployment", "otel-collector")
    assert {d["metadata"].get("namespace") for d in documents if d["kind"] != "Namespace"} == {
        "aiobs"
    }


@needs_kubectl
@pytest.mark.parametrize("overlay", OVERLAYS)
def test_probes_and_scrape_use_the_paths_aiobs_serves(overlay: str) -> None:
    """Liveness uses /health/live, readiness and startup /health/ready, on the container's
    port; the ServiceMonitor scrapes /metrics on the Service's port."""
    documents = render(overlay)
    demo = _demo(documents)
    assert demo["livenessProbe"]["httpGet"]["path"] == LIVE_PATH
    assert demo["readinessProbe"]["httpGet"]["path"] == READY_PATH
    assert demo["startupProbe"]["httpGet"]["path"] == READY_PATH
    port_names = {p["name"] for p in demo["ports"]}
    for probe in ("livenessProbe", "readinessProbe", "startupProbe"):
        assert demo[probe]["httpGet"]["port"] in port_names
    monitor = one(documents, "ServiceMonitor", "aiobs-demo")
    service = one(documents, "Service", "aiobs-demo")
    [endpoint] = monitor["spec"]["endpoints"]
    assert endpoint["path"] == METRICS_PATH
    assert endpoint["port"] in {p["name"] for p in service["spec"]["ports"]}
    assert (
        monitor["spec"]["selector"]["matchLabels"].items() <= service["metadata"]["labels"].items()
    )


@pytest.mark.anyio
async def test_an_instrumented_app_answers_the_probe_paths(
    make_harness: Callable[..., Harness],
) -> None:
    """A FastAPI app instrumented by aiobs answers 200 on every path the manifests probe or
    scrape (so the kubelet and Prometheus get real answers, not 404s)."""
    harness = make_harness()
    app = FastAPI()
    aiobs.instrument(app, observability=harness.obs)
    async with client_for(app) as client:
        for path in (LIVE_PATH, READY_PATH, METRICS_PATH):
            response: httpx.Response = await client.get(path)
            assert response.status_code == 200, path


@needs_kubectl
@pytest.mark.parametrize("overlay", OVERLAYS)
def test_pods_run_as_non_root_with_requests_and_limits(overlay: str) -> None:
    """Every pod runs as non-root with a RuntimeDefault seccomp profile, and every container
    drops all capabilities, has a read-only root and sets requests and limits."""
    for pod in _pods(render(overlay)):
        assert pod["securityContext"]["runAsNonRoot"] is True
        assert pod["securityContext"]["seccompProfile"]["type"] == "RuntimeDefault"
        for container in pod.get("initContainers", []) + pod["containers"]:
            context = container["securityContext"]
            assert context["allowPrivilegeEscalation"] is False
            assert context["readOnlyRootFilesystem"] is True
            assert context["capabilities"]["drop"] == ["ALL"]
            assert {"cpu", "memory"} <= set(container["resources"]["requests"])
            assert {"cpu", "memory"} <= set(container["resources"]["limits"])


@needs_kubectl
def test_only_the_gpu_overlay_asks_for_a_gpu() -> None:
    """The gpu overlay requests and limits one nvidia.com/gpu, selects GPU nodes, tolerates
    their taint and runs the CUDA image; the cpu overlay asks for no GPU."""
    gpu = _demo(render("gpu"))
    assert gpu["resources"]["limits"]["nvidia.com/gpu"] == "1"
    assert gpu["resources"]["requests"]["nvidia.com/gpu"] == "1"
    assert gpu["image"].endswith(":gpu")
    assert _env(gpu)["INFERENCE_DEVICE"] == "cuda"
    pod = one(render("gpu"), "Deployment", "aiobs-demo")["spec"]["template"]["spec"]
    assert any(t["key"] == "nvidia.com/gpu" for t in pod["tolerations"])
    cpu = _demo(render("cpu"))
    assert "nvidia.com/gpu" not in cpu["resources"]["limits"]
    assert cpu["image"].endswith(":cpu")


@needs_kubectl
@pytest.mark.parametrize("overlay", OVERLAYS)
def test_telemetry_goes_to_the_collector_and_models_to_a_volume(overlay: str) -> None:
    """OTEL_EXPORTER_OTLP_ENDPOINT names the collector Service's OTLP/HTTP port, and
    MODEL_PATH is a mounted volume that the init container fills."""
    documents = render(overlay)
    demo = _demo(documents)
    env = _env(demo)
    collector = one(documents, "Service", "otel-collector")
    ports = {p["port"] for p in collector["spec"]["ports"]}
    assert env["OTEL_EXPORTER_OTLP_ENDPOINT"] == "http://otel-collector:4318"
    assert 4318 in ports
    assert env["OTEL_EXPORTER_OTLP_PROTOCOL"] == "http/protobuf"
    assert env["OTEL_SERVICE_NAME"] == "aiobs-demo"
    mounts = {m["mountPath"]: m["name"] for m in demo["volumeMounts"]}
    assert env["MODEL_PATH"] in mounts
    pod = one(documents, "Deployment", "aiobs-demo")["spec"]["template"]["spec"]
    [init] = pod["initContainers"]
    assert env["MODEL_PATH"] in init["command"]
    assert mounts[env["MODEL_PATH"]] in {m["name"] for m in init["volumeMounts"]}


def test_collector_config_limits_memory_batches_and_exports_to_jaeger() -> None:
    """The collector takes OTLP over gRPC and HTTP, runs memory_limiter first and batch last,
    and exports traces to Jaeger's OTLP port."""
    config = yaml.safe_load((DEPLOY / "k8s/base/otel-collector-config.yaml").read_text())
    assert set(config["receivers"]["otlp"]["protocols"]) == {"grpc", "http"}
    [pipeline] = config["service"]["pipelines"].values()
    assert pipeline["receivers"] == ["otlp"]
    assert pipeline["processors"][0] == "memory_limiter"
    assert pipeline["processors"][-1] == "batch"
    assert set(pipeline["processors"]) <= set(config["processors"])
    [exporter] = pipeline["exporters"]
    assert "jaeger" in exporter
    assert exporter in config["exporters"]
    assert config["exporters"][exporter]["endpoint"].startswith("jaeger-collector")


@needs_kubectl
@pytest.mark.parametrize("overlay", OVERLAYS)
def test_hpa_scales_on_a_per_pod_metric_of_the_catalog(overlay: str) -> None:
    """The HPA's Pods metric is a gauge of aiobs's catalog, the one prometheus-adapter's rule
    serves, and scale-up and scale-down behaviour is set."""
    hpa = one(render(overlay), "HorizontalPodAutoscaler", "aiobs-demo")
    [pods] = [m["pods"] for m in hpa["spec"]["metrics"] if m["type"] == "Pods"]
    name = pods["metric"]["name"]
    by_name = {metric.name: metric for metric in catalog.METRICS}
    assert name in by_name
    assert by_name[name].kind == "gauge"
    assert name in {catalog.INFERENCE_QUEUE_DEPTH.name, catalog.INFERENCE_IN_FLIGHT.name}
    assert {"scaleUp", "scaleDown"} <= set(hpa["spec"]["behavior"])
    adapter = yaml.safe_load(one(render("prometheus-adapter"), "ConfigMap", "adapter-config")[
        "data"]["config.yaml"])  # fmt: skip
    served = {rule["name"]["as"]: rule for rule in adapter["rules"]}
    assert name in served
    assert served[name]["seriesQuery"].startswith(name + "{")
    assert set(served[name]["resources"]["overrides"]) == {"namespace", "pod"}
    if overlay == "cpu":
        assert any(m["type"] == "Resource" and m["resource"]["name"] == "cpu"
                   for m in hpa["spec"]["metrics"])  # fmt: skip


MISPLACED = [
    ("cpu", "ServiceMonitor", "aiobs-demo", ("spec", "endpoints", 0), "intervall", "15s"),
    ("cpu", "ServiceMonitor", "aiobs-demo", ("spec", "endpoints", 0), "scrape_timeout", "5s"),
    ("cpu", "ServiceMonitor", "aiobs-demo", ("metadata",), "label", {}),
    ("cpu", "PrometheusRule", "aiobs-demo-rules", ("spec", "groups", 0, "rules", 0), "fore", "5m"),
    ("istio", "Gateway", "aiobs-demo", ("spec", "servers", 0, "port"), "hosts", ["*"]),
    ("istio", "VirtualService", "aiobs-demo", ("spec", "http", 0), "timout", "5s"),
    ("istio", "DestinationRule", "aiobs-demo", ("spec", "trafficPolicy"), "http2MaxRequests", 1),
    ("istio", "PeerAuthentication", "default", ("spec",), "mode", "STRICT"),
    ("istio", "AuthorizationPolicy", "aiobs-demo", ("spec", "rules", 0), "methods", ["GET"]),
]
"""(kustomization, kind, name, path to an object, key, value): a misspelt, snake_case or
misplaced field planted in each custom kind of deploy/."""


@needs_kubectl
def test_the_validators_reject_a_misplaced_field() -> None:
    """A field in the wrong place fails kubernetes-validate --strict (Deployment), so the
    passing validations of built-in kinds above are not vacuous."""
    kubernetes_validate = pytest.importorskip("kubernetes_validate")
    documents = render("cpu")
    deployment = json.loads(json.dumps(one(documents, "Deployment", "aiobs-demo")))
    deployment["spec"]["template"]["spec"]["containers"][0]["livenessprobe"] = {}
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(deployment, KUBERNETES_VERSION, strict=True)


@needs_kubectl
@pytest.mark.parametrize(("kustomization", "kind", "name", "path", "key", "value"), MISPLACED)
def test_the_crd_models_reject_a_misplaced_field(
    kustomization: str, kind: str, name: str, path: tuple[str | int, ...], key: str, value: Any
) -> None:
    """Each custom kind passes its CRD-derived model as rendered and fails it with one field
    planted where the CRD has none, so the passing validations above are not vacuous."""
    pydantic = pytest.importorskip("pydantic")
    document = json.loads(json.dumps(one(render(kustomization), kind, name)))
    assert (document["apiVersion"], kind) in MODELS
    validate_custom(document)
    target: Any = document
    for step in path:
        target = target[step]
    assert key not in target
    target[key] = value
    with pytest.raises(pydantic.ValidationError, match="extra_forbidden"):
        validate_custom(document)


def test_every_custom_kind_has_a_planted_field() -> None:
    """MISPLACED covers every kind the CRD models validate."""
    assert {kind for _, kind, *_ in MISPLACED} == {kind for _, kind in MODELS}
