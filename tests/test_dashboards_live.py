"""Every dashboard panel against real data: the demo service (``python -m demo_service``)
under the load generator (bad requests, slow requests, versions v1 and v2), scraped every
second by Debian's Prometheus on 127.0.0.1; then each panel's queries run through
``/api/v1/query_range`` with the Grafana variables substituted."""

from __future__ import annotations

import math
import re
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from aiobs import catalog
from tests.support.dashboards_prometheus import PROMETHEUS, Prometheus, panels, substitute
from tests.support.otlp_receiver import HOST, OtlpReceiver, free_port
from tests.support.servers import REPO_ROOT, child_env, stop_process

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(PROMETHEUS is None, reason="Debian's prometheus package"),
]
JOB = "aiobs-demo-live"
LOAD_SECONDS = 20
GPU_METRICS = {m.name for m in catalog.METRICS if m.name.startswith("ai_gpu_")}
EXEMPT = {
    catalog.LABEL_VALUES_FOLDED.name: "the demo stays under AIOBS_MAX_LABEL_VALUES",
}
"""Catalog metrics the demo never produces, and why."""
SERIES = re.compile(r"\b([a-zA-Z_:][a-zA-Z0-9_:]*)\{")


def catalog_metrics(panel: dict[str, Any]) -> set[str]:
    """Catalog metric names (family names) a panel's queries select."""
    names = set()
    for target in panel["targets"]:
        for series in SERIES.findall(target["expr"]):
            names.update(m.name for m in catalog.METRICS if series in m.series_names)
    return names


def panel_data(
    server: Prometheus, panel: dict[str, Any], start: float, end: float
) -> tuple[int, float]:
    """(series with at least one number, the largest number) over every target of a panel;
    NaN points (a quantile of a histogram with no observations) are not data."""
    series, peak = 0, -math.inf
    for target in panel["targets"]:
        answer = server.api(
            "query_range", query=substitute(target["expr"], JOB), start=start, end=end, step=1
        )
        assert answer["status"] == "success", (panel["title"], answer)
        for result in answer["data"]["result"]:
            values = [float(v) for _, v in result["values"] if not math.isnan(float(v))]
            if values:
                series += 1
                peak = max(peak, *values)
    return series, peak


@pytest.fixture
def demo(tmp_path: Path) -> Iterator[str]:
    """The demo service on a free port, exporting spans to a local OTLP receiver, ready
    with both model versions; its URL."""
    receiver = OtlpReceiver().start()
    port = free_port()
    url = f"http://{HOST}:{port}"
    env = child_env(
        {
            "MODEL_PATH": str(tmp_path / "models"),
            "PORT": str(port),
            "HOST": HOST,
            "OTEL_EXPORTER_OTLP_ENDPOINT": receiver.endpoint,
        }
    )
    log = tmp_path / "demo.log"
    with log.open("wb") as out:
        process = subprocess.Popen(
            [sys.executable, "-m", "demo_service"],
            cwd=REPO_ROOT,
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
        )
    try:
        deadline = time.monotonic() + 90
        with httpx.Client(base_url=url, timeout=2.0) as client:
            while True:
                assert process.poll() is None, log.read_text(errors="replace")[-3000:]
                assert time.monotonic() < deadline, "demo not ready in 90 s"
                try:
                    if client.get("/health/ready").status_code == 200:
                        break
                except httpx.TransportError:
                    pass
                time.sleep(0.1)
        yield url
    finally:
        stop_process(process)
        receiver.stop()


def test_every_panel_returns_data_from_the_demo_under_load(demo: str, tmp_path: Path) -> None:
    """Each panel whose metric the demo produces gets at least one series from
    /api/v1/query_range; GPU panels are exempt on a machine without a GPU (NVML finds
    none, so the demo exposes no ai_gpu_* series), token panels because the demo has no
    generative model, the folded-labels panel because the demo never folds."""
    started = time.monotonic()
    target = demo.removeprefix("http://")
    server = Prometheus(
        tmp_path,
        [{"job_name": JOB, "static_configs": [{"targets": [target]}], "scrape_interval": "1s"}],
    ).wait_ready()
    try:
        load_start = time.time()
        subprocess.run(
            [sys.executable, "-m", "demo_service.loadgen", "--url", demo, "--rps", "20",
             "--duration", str(LOAD_SECONDS), "--bad-ratio", "0.1", "--slow-ratio", "0.05",
             "--slow-upload-seconds", "0.3", "--versions", "v1,v2", "--generate-ratio", "0.4",
             "--disconnect-ratio", "0.1", "--seed", "5"],
            cwd=REPO_ROOT, env=child_env(), check=True, capture_output=True, timeout=120,
        )  # fmt: skip
        time.sleep(3)  # two more scrapes after the last answers
        end = time.time()
        gpu = server.api("query", query='count({__name__=~"ai_gpu_.*"})')["data"]["result"]
        exempt = dict(EXEMPT)
        if not gpu:
            exempt.update(dict.fromkeys(GPU_METRICS, "no GPU on this machine"))

        empty, failures, peaks = [], [], {}
        for dashboard, panel in panels():
            series, peaks[panel["title"]] = panel_data(server, panel, load_start - 5, end)
            metrics = catalog_metrics(panel)
            reasons = {exempt[name] for name in metrics if name in exempt}
            if series == 0:
                is_exempt = bool(metrics) and all(name in exempt for name in metrics)
                empty.append(
                    f"{dashboard} / {panel['title']}: no data "
                    f"({'; '.join(sorted(reasons)) if is_exempt else 'NOT EXEMPT'})"
                )
                if not is_exempt:
                    failures.append(panel["title"])
            else:
                print(
                    f"{dashboard} / {panel['title']}: {series} series, "
                    f"peak {peaks[panel['title']]:.4g}"
                )
        print("\n".join(["panels that returned nothing:", *empty]))

        exemplars = server.api(
            "query_exemplars",
            query=f'{catalog.HTTP_REQUEST_DURATION.name}_bucket{{job="{JOB}"}}',
            start=load_start - 5,
            end=end,
        )["data"]
        trace_ids = {e["labels"].get("trace_id") for s in exemplars for e in s["exemplars"]}
        print(
            f"latency exemplars scraped: {len(trace_ids)} trace ids; "
            f"took {time.monotonic() - started:.1f} s"
        )
    finally:
        server.stop()
    assert not failures, f"panels without data: {failures}"
    assert peaks["Spans exported"] > 0, "the demo's spans reached the OTLP receiver"
    assert peaks["Throughput"] > 0
    assert peaks["Responses by status"] > 0
    assert trace_ids - {None}, "no trace_id exemplars on the latency histogram"
