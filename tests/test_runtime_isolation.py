"""The runtime never loads the operations-as-code side: a served request imports no module of
aiobs.ops (the dashboards, rules, deploy and docs generators, the CLI) and no grafanalib."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from pathlib import Path

SERVE_ONE_REQUEST = textwrap.dedent(
    """
    import asyncio, json, sys

    import httpx
    from fastapi import FastAPI

    import aiobs
    import aiobs.catalog, aiobs.logging, aiobs.multiprocess

    app = FastAPI()

    @app.get("/predict")
    async def predict() -> dict:
        with aiobs.inference("resnet50", "v1") as record:
            record.set_batch_size(1)
        return {"label": "cat"}

    obs = aiobs.instrument(app, service_name="isolation-test", environ={})

    async def main() -> list[int]:
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:
            return [(await client.get(path)).status_code for path in ("/predict", "/metrics")]

    statuses = asyncio.run(main())
    obs.shutdown(timeout=1)
    with open(sys.argv[1], "w") as out:
        json.dump({"statuses": statuses, "modules": sorted(sys.modules)}, out)
    """
)


def test_serving_a_request_imports_no_generator_and_no_grafanalib(tmp_path: Path) -> None:
    result_file = tmp_path / "modules.json"
    child = subprocess.run(
        [sys.executable, "-c", SERVE_ONE_REQUEST, str(result_file)],
        capture_output=True,
        text=True,
        timeout=90,
    )
    assert child.returncode == 0, child.stderr
    result = json.loads(result_file.read_text())
    assert result["statuses"] == [200, 200]
    modules = set(result["modules"])
    # The request went through the runtime this test is about.
    assert {"aiobs.http.middleware", "aiobs.http.starlette", "aiobs.metrics.instruments"} <= modules
    generators = sorted(
        name
        for name in modules
        if name.partition(".")[0] == "grafanalib" or name == "aiobs.ops"
        or name.startswith("aiobs.ops.")
    )  # fmt: skip
    assert generators == []
