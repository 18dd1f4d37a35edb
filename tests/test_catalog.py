"""Everything /metrics shows is in the catalog, and the exposition passes promtool."""

from __future__ import annotations

import asyncio
import shutil
import subprocess
from collections.abc import Callable

import pytest
from fastapi import FastAPI
from fastapi.responses import StreamingResponse
from prometheus_client.parser import text_string_to_metric_families

import aiobs
from aiobs import catalog
from tests.conftest import Harness, client_for

pytestmark = pytest.mark.anyio


async def _exercised_exposition(harness: Harness) -> str:
    obs = harness.obs
    app = FastAPI()

    @app.post("/v1/models/{name}/infer")
    async def infer(name: str) -> dict[str, str]:
        with obs.inference(name, "v1", batch_size=2) as rec:
            for stage in catalog.STAGES:
                with rec.stage(stage):
                    pass
            rec.observe_confidence([0.9, 0.4])
            rec.token()
            rec.token()
            rec.tokens(input=3)
        return {"name": name}

    @app.get("/fail")
    async def fail() -> None:
        with obs.inference("broken", "v0"):
            raise LookupError("no such model")

    @app.get("/stream")
    async def stream() -> StreamingResponse:
        return StreamingResponse(iter([b"a", b"b"]))

    aiobs.instrument(app, observability=obs)
    obs.model_loaded("resnet50", "v1", runtime="onnxruntime", device="cpu", load_seconds=0.5)
    obs.set_queue_depth("resnet50", 3)
    async with client_for(app, raise_app_exceptions=False) as client:
        for number in range(4):
            await client.post(f"/v1/models/m{number}/infer")
        await client.get("/fail")
        await client.get("/nowhere")
        await client.get("/stream")
        return (await client.get("/metrics")).text


async def test_every_exposed_family_is_in_the_catalog(
    make_harness: Callable[..., Harness],
) -> None:
    """After the whole API is exercised, each ai_/http_/aiobs_ family on /metrics is a
    catalog metric with the catalog's type and labels."""
    harness = make_harness(max_label_values=2)
    text = await _exercised_exposition(harness)
    owner = {}
    for metric in catalog.METRICS:
        for series in metric.series_names:
            owner[series] = metric
        if metric.kind != "gauge":  # prometheus_client's creation timestamps
            owner[metric.name.removesuffix("_total") + "_created"] = metric
    seen = set()
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if not sample.name.startswith(("ai_", "http_", "aiobs_")):
                continue
            metric = owner.get(sample.name)
            assert metric is not None, f"{sample.name} is not in the catalog"
            assert set(sample.labels) - {"le"} == set(metric.labels), sample
            if not sample.name.endswith("_created"):
                assert family.type == metric.kind, sample.name
            seen.add(metric.name)
    gpu_metrics = {m.name for m in catalog.METRICS if m.name.startswith("ai_gpu_")}
    assert {m.name for m in catalog.METRICS} - gpu_metrics - seen == set()


@pytest.mark.skipif(shutil.which("promtool") is None, reason="Debian's prometheus package")
async def test_promtool_accepts_the_exposition(make_harness: Callable[..., Harness]) -> None:
    """`promtool check metrics` finds nothing to complain about in a real exposition."""
    harness = make_harness()
    text = await _exercised_exposition(harness)
    result = await asyncio.to_thread(
        subprocess.run,
        ["promtool", "check", "metrics"],
        input=text,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert result.stdout.strip() == "", result.stdout
