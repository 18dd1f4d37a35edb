"""The demo's HTTP API: readiness follows the model load, /v1/models describes what is
served, both image forms get predictions with the request's trace id, versions are chosen
per request (or a deployment serves one version only)."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
from fastapi import FastAPI

from demo_service import model as demo_model
from tests.conftest import Harness, client_for
from tests.demo.conftest import body, images, png_b64, raw_b64, running

pytestmark = pytest.mark.anyio
MakeApp = Callable[..., tuple[FastAPI, Harness]]


async def test_ready_only_once_the_model_is_loaded(make_app: MakeApp) -> None:
    """/health/ready is 503 (and inference refused) until every version is loaded and
    warmed up, then 200; model_loaded() recorded the device and the measured load time."""
    app, harness = make_app(model_versions="v1,v2")
    async with client_for(app) as client:
        response = await client.get("/health/ready")
        assert response.status_code == 503
        assert response.json()["checks"]["model"]["status"] == "fail"
        refused = await client.post("/v1/inference", content=body(raw_b64(images(1)[0])))
        assert refused.status_code == 503
        assert refused.json()["error"] == "not_ready"
        assert harness.sample("ai_service_ready") == 0
        assert (await client.get("/health/live")).status_code == 200
        async with running(app):
            response = await client.get("/health/ready")
            assert response.status_code == 200, response.text
            assert harness.sample("ai_service_ready") == 1
    for version in ("v1", "v2"):
        info = {"model": "demo-cnn", "model_version": version}
        assert harness.sample("ai_model_info", runtime="onnxruntime", device="cpu", **info) == 1
        load_seconds = harness.sample("ai_model_load_duration_seconds", **info)
        assert load_seconds is not None
        assert load_seconds > 0
    loaded = [line for line in harness.log_lines() if line["event"] == "model_loaded"]
    assert {line["provider"] for line in loaded} == {"CPUExecutionProvider"}


async def test_a_model_that_cannot_load_keeps_the_service_unready(
    make_app: MakeApp, tmp_path: Path
) -> None:
    """A broken model file: the load error is logged, /health/ready stays 503, nothing
    crashes and inference answers 503."""
    broken = tmp_path / "broken"
    broken.mkdir()
    (broken / "demo-cnn-v1.onnx").write_bytes(b"not a model")
    app, harness = make_app(model_path=broken)
    service = app.state.demo
    async with client_for(app) as client, app.router.lifespan_context(app):
        for _ in range(500):
            if service.load_error:
                break
            await asyncio.sleep(0.02)
        assert service.load_error
        assert (await client.get("/health/ready")).status_code == 503
        refused = await client.post("/v1/inference", content=body(raw_b64(images(1)[0])))
        assert refused.status_code == 503
        assert "failed to load" in refused.json()["detail"]
    assert any(line["event"] == "model_load_failed" for line in harness.log_lines())


async def test_models_endpoint_describes_every_version(make_app: MakeApp) -> None:
    """GET /v1/models: name, version, default, input, labels, device and provider."""
    app, _ = make_app(model_versions="v1,v2")
    async with running(app), client_for(app) as client:
        response = await client.get("/v1/models")
    assert response.status_code == 200
    models = response.json()["models"]
    assert [(m["name"], m["version"]) for m in models] == [("demo-cnn", "v1"), ("demo-cnn", "v2")]
    first = models[0]
    assert [m["default"] for m in models] == [True, False]
    assert first["ready"] is True
    assert first["input"] == {"name": "image", "shape": [3, 64, 64], "dtype": "float32"}
    assert first["labels"] == list(demo_model.LABELS)
    assert (first["device"], first["provider"]) == ("cpu", "CPUExecutionProvider")


async def test_png_and_raw_forms_get_predictions_with_the_trace_id(make_app: MakeApp) -> None:
    """A PNG (any size, resized to 64x64) and raw float32 pixels of the same picture get
    the same label; the answer carries the request's trace id; per item a label and its
    confidence."""
    app, harness = make_app()
    image = images(1, seed=21)[0]
    png_pixels = np.round(np.clip(image, 0, 1) * 255) / 255  # what the PNG holds
    expected = demo_model.load(app.state.demo.settings.model_path, "v1", "cpu", ()).predict(
        png_pixels[None].astype(np.float32)
    )[0]
    async with running(app), client_for(app) as client:
        response = await client.post(
            "/v1/inference",
            content=body(png_b64(image), raw_b64(png_pixels), png_b64(image, (200, 120))),
            headers={"Content-Type": "application/json"},
        )
    assert response.status_code == 200, response.text
    answer = response.json()
    assert (answer["model"], answer["model_version"]) == ("demo-cnn", "v1")
    first, second, resized = answer["predictions"]
    assert first["label"] == demo_model.LABELS[int(expected.argmax())]
    assert first["confidence"] == pytest.approx(float(expected.max()), abs=1e-4)
    assert second["label"] == first["label"]
    assert second["confidence"] == pytest.approx(first["confidence"], abs=1e-4)
    assert resized["label"] in demo_model.LABELS
    assert 0 < resized["confidence"] <= 1
    server_spans = [s for s in harness.spans() if s.name == "POST /v1/inference"]
    assert answer["trace_id"] == format(server_spans[0].context.trace_id, "032x")


async def test_canary_version_is_chosen_per_request(make_app: MakeApp) -> None:
    """model_version picks v2 (other weights: other answers); its inferences are counted
    under model_version="v2"."""
    app, harness = make_app(model_versions="v1,v2")
    batch = images(8, seed=22)
    async with running(app), client_for(app) as client:
        v1 = await client.post("/v1/inference", content=body(*map(raw_b64, batch[:4])))
        v2 = await client.post(
            "/v1/inference", content=body(*map(raw_b64, batch[:4]), model_version="v2")
        )
    assert v1.status_code == v2.status_code == 200
    assert v2.json()["model_version"] == "v2"
    assert v1.json()["predictions"] != v2.json()["predictions"]
    for version in ("v1", "v2"):
        assert (
            harness.sample("ai_inference_batch_size_sum", model="demo-cnn", model_version=version)
            == 4
        )


async def test_a_deployment_can_serve_one_version(make_app: MakeApp) -> None:
    """MODEL_VERSIONS=v2: v2 is loaded and the default; asking for v1 is a 422."""
    app, harness = make_app(model_versions="v2")
    async with running(app), client_for(app) as client:
        default = await client.post("/v1/inference", content=body(raw_b64(images(1)[0])))
        other = await client.post(
            "/v1/inference", content=body(raw_b64(images(1)[0]), model_version="v1")
        )
        models = (await client.get("/v1/models")).json()["models"]
    assert default.status_code == 200
    assert default.json()["model_version"] == "v2"
    assert other.status_code == 422
    assert "must be one of v2" in other.json()["detail"]
    assert [(m["version"], m["default"]) for m in models] == [("v2", True)]
    assert (
        harness.sample(
            "ai_model_info",
            model="demo-cnn",
            model_version="v1",
            runtime="onnxruntime",
            device="cpu",
        )
        is None
    )
