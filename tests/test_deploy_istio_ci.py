"""deploy/istio/ (canary, experiment routing, mirroring, mTLS, authorization) and
.github/workflows/ci.yml, validated offline."""

from __future__ import annotations

import subprocess
import sys
from typing import Any

import pytest
import yaml

from aiobs.http.endpoints import LIVE_PATH, METRICS_PATH, READY_PATH
from tests.support.deploy import ROOT, needs_kubectl, one, render, validate

HOST = "aiobs-demo.aiobs.svc.cluster.local"
WORKFLOW = ROOT / ".github" / "workflows" / "ci.yml"


def _env(deployment: dict[str, Any]) -> dict[str, str]:
    [container] = deployment["spec"]["template"]["spec"]["containers"]
    return {item["name"]: item.get("value", "") for item in container["env"]}


@needs_kubectl
def test_istio_kustomization_renders_and_validates() -> None:
    """`kubectl kustomize deploy/istio` renders; the Istio resources pass their CRD-derived
    models (tests/support/deploy_schemas.py) and the canary Deployments kubernetes-validate
    --strict."""
    documents = render("istio")
    kinds = {d["kind"] for d in documents}
    assert {"Gateway", "VirtualService", "DestinationRule", "PeerAuthentication",
            "AuthorizationPolicy", "Deployment"} <= kinds  # fmt: skip
    for document in documents:
        validate(document)


@needs_kubectl
def test_routes_split_canary_weights_and_use_known_subsets() -> None:
    """The default route splits 100 % between subsets v1 and v2, a header pins experiments to
    v2, requests are mirrored to the shadow, and every route has a timeout and retries."""
    documents = render("istio")
    service = one(documents, "VirtualService", "aiobs-demo")
    rule = one(documents, "DestinationRule", "aiobs-demo")
    subsets = {s["name"] for s in rule["spec"]["subsets"]}
    assert subsets == {"v1", "v2", "shadow"}
    routes = {r["name"]: r for r in service["spec"]["http"]}
    canary = routes["canary"]
    weights = {r["destination"]["subset"]: r["weight"] for r in canary["route"]}
    assert set(weights) == {"v1", "v2"}
    assert sum(weights.values()) == 100
    assert 0 < weights["v2"] < weights["v1"]
    experiment = routes["experiment-v2"]
    assert experiment["match"][0]["headers"]["x-aiobs-experiment"] == {"exact": "v2"}
    assert [r["destination"]["subset"] for r in experiment["route"]] == ["v2"]
    for route in (canary, experiment):
        assert route["mirror"]["subset"] == "shadow"
        assert route["timeout"]
        assert route["retries"]["attempts"] >= 1
    for route in service["spec"]["http"]:
        for destination in [r["destination"] for r in route["route"]]:
            assert destination["host"] == HOST
            assert destination["subset"] in subsets
    assert rule["spec"]["host"] == HOST
    assert rule["spec"]["trafficPolicy"]["connectionPool"]["http"]["http2MaxRequests"] > 0
    assert rule["spec"]["trafficPolicy"]["outlierDetection"]["consecutive5xxErrors"] > 0
    assert "aiobs-demo" in service["spec"]["gateways"]
    one(documents, "Gateway", "aiobs-demo")


@needs_kubectl
def test_subsets_match_deployments_whose_model_version_is_the_subset() -> None:
    """Each subset selects pods of exactly one Deployment (v1 from the base, v2 and shadow
    here); the v2 pods serve MODEL_VERSIONS=v2, so model_version="v2" on the dashboards'
    canary panels is the v2 subset's traffic."""
    rule = one(render("istio"), "DestinationRule", "aiobs-demo")
    deployments = [d for d in render("istio") + render("cpu") if d["kind"] == "Deployment"]
    for subset in rule["spec"]["subsets"]:
        matching = [
            d for d in deployments
            if subset["labels"].items() <= d["spec"]["template"]["metadata"]["labels"].items()
        ]  # fmt: skip
        assert len(matching) == 1, subset
    v2 = one(render("istio"), "Deployment", "aiobs-demo-v2")
    assert _env(v2)["MODEL_VERSIONS"] == "v2"
    assert _env(v2)["OTEL_RESOURCE_ATTRIBUTES"].startswith("service.version=v2,")
    assert _env(one(render("istio"), "Deployment", "aiobs-demo-shadow"))[
        "MODEL_VERSIONS"].split(",")[0] == "v2"  # fmt: skip


@needs_kubectl
def test_mesh_is_strict_mtls_and_allows_only_scrapes_and_inference() -> None:
    """PeerAuthentication is STRICT; the AuthorizationPolicy lets Prometheus GET /metrics and
    the gateway and frontend POST inference and read the health paths, nothing else."""
    documents = render("istio")
    assert one(documents, "PeerAuthentication", "default")["spec"]["mtls"]["mode"] == "STRICT"
    policy = one(documents, "AuthorizationPolicy", "aiobs-demo")["spec"]
    assert policy["action"] == "ALLOW"
    prometheus, callers = policy["rules"]
    assert any("prometheus" in p for p in prometheus["from"][0]["source"]["principals"])
    assert prometheus["to"] == [{"operation": {"methods": ["GET"], "paths": [METRICS_PATH]}}]
    assert any("frontend" in p for p in callers["from"][0]["source"]["principals"])
    operations = [t["operation"] for t in callers["to"]]
    assert {"methods": ["POST"], "paths": ["/v1/inference"]} in operations
    health = next(o for o in operations if o["methods"] == ["GET"])["paths"]
    assert {LIVE_PATH, READY_PATH} <= set(health)


def test_ci_workflow_validates_against_the_github_workflow_schema() -> None:
    """check-jsonschema's bundled GitHub workflow schema (offline) accepts ci.yml."""
    result = subprocess.run(
        [sys.executable, "-m", "check_jsonschema", "--builtin-schema",
         "vendor.github-workflows", str(WORKFLOW)],
        capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip
    assert result.returncode == 0, result.stdout + result.stderr


def test_ci_workflow_runs_tests_checks_build_scan_and_smoke() -> None:
    """ci.yml runs .ci/run, the dashboards, rules and deploy drift checks, promtool, then
    builds the demo image, scans it with Trivy and smoke-tests /health/ready and an inference."""
    workflow = yaml.safe_load(WORKFLOW.read_text(encoding="utf-8"))
    steps = [s for job in workflow["jobs"].values() for s in job["steps"]]
    runs = "\n".join(s.get("run", "") for s in steps)
    uses = [s.get("uses", "") for s in steps]
    for command in (".ci/run", "aiobs dashboards check", "aiobs rules check",
                    "aiobs deploy check", "promtool test rules", "/health/ready",
                    "/v1/inference"):  # fmt: skip
        assert command in runs, command
    assert any(u.startswith("docker/build-push-action") for u in uses)
    assert any(u.startswith("aquasecurity/trivy-action") for u in uses)
    build = next(s for s in steps if s.get("uses", "").startswith("docker/build-push-action"))
    assert build["with"]["file"] == "demo_service/Dockerfile"
    assert (ROOT / build["with"]["file"]).is_file()
    assert workflow["jobs"]["image"]["needs"] == "test"


@pytest.mark.parametrize("path", ["deploy/README.md"])
def test_deploy_readme_walks_from_apply_to_a_canary(path: str) -> None:
    """deploy/README.md covers kubectl apply -k, the Prometheus Operator, the canary and its
    dashboards, scaling on the custom metric, and the propagation setting for the mesh."""
    text = (ROOT / path).read_text(encoding="utf-8")
    for needle in ("kubectl apply -k deploy/k8s/overlays/cpu", "kubectl apply -k deploy/istio",
                   "Prometheus Operator", "ai_inference_queue_depth", "OTEL_PROPAGATORS",
                   "canary", "model_version"):  # fmt: skip
        assert needle in text, needle


@needs_kubectl
def test_both_service_monitors_keep_the_shadow_out_of_the_dashboards_job() -> None:
    """The plain and the mTLS ServiceMonitor scrape the same path with the same relabelings,
    which move the shadow's series to job="aiobs-demo-shadow" (off the canary panels)."""
    plain = one(render("cpu"), "ServiceMonitor", "aiobs-demo")["spec"]["endpoints"][0]
    mtls = one(render("istio"), "ServiceMonitor", "aiobs-demo")["spec"]["endpoints"][0]
    assert plain["relabelings"] == mtls["relabelings"]
    assert plain["path"] == mtls["path"] == METRICS_PATH
    assert mtls["scheme"] == "https"
    assert "certFile" in mtls["tlsConfig"]
    [shadow] = [r for r in plain["relabelings"] if r.get("targetLabel") == "job"]
    assert shadow["regex"] == "shadow"
    assert shadow["replacement"] == "aiobs-demo-shadow"


@needs_kubectl
@pytest.mark.parametrize("kustomization", ["cpu", "gpu", "istio"])
def test_every_demo_deployment_environment_is_accepted(kustomization: str) -> None:
    """Each demo Deployment's environment (v1, v2, shadow; cpu and gpu) loads without error
    in both aiobs.Settings and the demo's own settings, with the collector as OTLP endpoint."""
    from aiobs import Settings
    from demo_service.config import DemoSettings  # noqa: TID251 (tests may use the demo)

    for deployment in render(kustomization):
        if deployment["kind"] != "Deployment" or deployment["metadata"]["name"] == "otel-collector":
            continue
        env = _env(deployment)
        env["OTEL_RESOURCE_ATTRIBUTES"] = (
            env["OTEL_RESOURCE_ATTRIBUTES"]
            .replace("$(POD_NAME)", "pod")
            .replace("$(NODE_NAME)", "node")
        )
        settings = Settings.load({}, environ=env)
        demo = DemoSettings.from_env(env)
        assert settings.otlp_endpoint == "http://otel-collector:4318/v1/traces"
        assert (
            settings.resource_attributes["service.version"]
            == deployment["metadata"]["labels"]["version"]
        )
        assert str(demo.model_path) == env["MODEL_PATH"]
        assert demo.model_versions
