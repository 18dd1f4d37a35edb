"""The Grafana dashboards as code: generation and the stale check, the core library free of
grafanalib, current Grafana JSON, sound structure, and PromQL that names only catalog
metrics, applies each function to the right type, and parses in a real Prometheus."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from itertools import combinations
from pathlib import Path
from typing import Any

import pytest
import yaml

from aiobs import catalog
from aiobs.ops.dashboards.generator import main, render
from tests.support.dashboards_prometheus import (
    DASHBOARDS_DIR,
    PROMETHEUS,
    Prometheus,
    dashboards,
    panels,
    substitute,
)

BY_SERIES = {series: metric for metric in catalog.METRICS for series in metric.series_names}
PROMETHEUS_OWN = {"up", "scrape_duration_seconds"}
"""Series Prometheus itself writes for every target."""
SELECTOR = re.compile(r"\b([a-zA-Z_:][a-zA-Z0-9_:]*)\{([^}]*)\}")


def queries() -> list[tuple[str, str, str]]:
    return [
        (title, panel["title"], target["expr"])
        for title, panel in panels()
        for target in panel["targets"]
    ]


def test_generate_writes_one_sorted_file_per_dashboard_with_fixed_uids(tmp_path: Path) -> None:
    """generate writes four JSON files named by their fixed uids, byte-identical on reruns."""
    assert main(["generate", "--out", str(tmp_path)]) == 0
    first = {path.name: path.read_text() for path in tmp_path.iterdir()}
    assert main(["generate", "--out", str(tmp_path)]) == 0
    assert {path.name: path.read_text() for path in tmp_path.iterdir()} == first
    assert sorted(first) == [
        "aiobs-gpu.json",
        "aiobs-inference.json",
        "aiobs-service-overview.json",
        "aiobs-telemetry-health.json",
    ]
    for name, dashboard in dashboards().items():
        assert dashboard["uid"] == name.removesuffix(".json")


def test_checked_in_dashboards_are_current() -> None:
    """The JSON under dashboards/ is exactly what generate writes now."""
    assert main(["check", "--dir", str(DASHBOARDS_DIR)]) == 0


def test_the_aiobs_command_delegates_to_the_dashboards_module() -> None:
    """``aiobs dashboards check`` in the repository root passes on the checked-in JSON."""
    result = subprocess.run(
        [sys.executable, "-m", "aiobs.ops.cli", "dashboards", "check"],
        cwd=DASHBOARDS_DIR.parent, capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr


def test_without_the_extra_the_command_says_what_to_install(tmp_path: Path) -> None:
    """Without grafanalib, ``aiobs dashboards generate`` exits 2 naming aiobs[dashboards]."""
    code = (
        "import sys; sys.modules['grafanalib'] = None; from aiobs.ops.cli import main; "
        "sys.exit(main(['dashboards', 'generate', '--out', 'unused']))"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], cwd=tmp_path, capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 2
    assert "aiobs[dashboards]" in result.stderr


def test_check_fails_and_names_a_stale_file(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """check exits 1 naming the file when one dashboard differs from the generated one."""
    assert main(["generate", "--out", str(tmp_path)]) == 0
    stale = tmp_path / "aiobs-gpu.json"
    stale.write_text(stale.read_text().replace("GPU power", "GPU powr"))
    assert main(["check", "--dir", str(tmp_path)]) == 1
    assert "aiobs-gpu.json" in capsys.readouterr().err
    (tmp_path / "aiobs-inference.json").unlink()
    assert main(["check", "--dir", str(tmp_path)]) == 1


def test_job_and_datasource_options_set_the_variable_defaults() -> None:
    """--job and --datasource become the defaults of the job and datasource variables."""
    for text in render(job="resnet50-svc", datasource="Mimir").values():
        variables = {v["name"]: v for v in json.loads(text)["templating"]["list"]}
        assert variables["job"]["current"]["value"] == "resnet50-svc"
        assert variables["datasource"]["current"]["value"] == "Mimir"


def test_the_core_library_never_imports_grafanalib() -> None:
    """Importing aiobs and its CLI leaves grafanalib unimported."""
    code = (
        "import sys, aiobs, aiobs.ops.cli, aiobs.catalog; "
        "assert 'grafanalib' not in sys.modules, 'grafanalib imported'"
    )
    subprocess.run([sys.executable, "-c", code], check=True, timeout=60)


def test_dashboards_are_current_grafana_json() -> None:
    """schemaVersion 39, no legacy graph panels, heatmaps in the current (options) form."""
    for dashboard in dashboards().values():
        assert dashboard["schemaVersion"] >= 39
        assert "rows" not in dashboard
        for panel in dashboard["panels"]:
            assert panel["type"] in {"timeseries", "stat", "heatmap"}
            if panel["type"] == "heatmap":
                assert not {"dataFormat", "cards", "xAxis"} & set(panel)
                assert panel["options"]["calculate"] is False
                assert {t["format"] for t in panel["targets"]} == {"heatmap"}


def test_uids_and_panel_ids_are_unique() -> None:
    """No two dashboards share a uid and no dashboard repeats a panel id."""
    uids = [dashboard["uid"] for dashboard in dashboards().values()]
    assert len(set(uids)) == len(uids) == 4
    for dashboard in dashboards().values():
        ids = [panel["id"] for panel in dashboard["panels"]]
        assert len(set(ids)) == len(ids)


def test_every_panel_reads_the_datasource_variable_and_has_unit_and_description() -> None:
    """Panels and targets use ${datasource}; every panel has a unit, description, thresholds."""
    for dashboard in dashboards().values():
        variables = [v["name"] for v in dashboard["templating"]["list"]]
        assert variables == ["datasource", "job", "model", "model_version"]
        for panel in dashboard["panels"]:
            assert panel["datasource"]["uid"] == "${datasource}", panel["title"]
            assert all(t["datasource"]["uid"] == "${datasource}" for t in panel["targets"])
            assert panel["fieldConfig"]["defaults"]["unit"], panel["title"]
            assert panel["description"], panel["title"]
            if panel["type"] != "heatmap":
                assert panel["fieldConfig"]["defaults"]["thresholds"]["steps"]


def test_no_panel_overlaps_another() -> None:
    """Every panel lies within the 24-column grid and no two panels' rectangles intersect."""

    def box(panel: dict[str, Any]) -> tuple[int, int, int, int]:
        grid = panel["gridPos"]
        return grid["x"], grid["y"], grid["x"] + grid["w"], grid["y"] + grid["h"]

    for dashboard in dashboards().values():
        for panel in dashboard["panels"]:
            x0, _, x1, _ = box(panel)
            assert 0 <= x0 < x1 <= 24, panel["title"]
        for first, second in combinations(dashboard["panels"], 2):
            a, b = box(first), box(second)
            overlap = a[0] < b[2] and b[0] < a[2] and a[1] < b[3] and b[1] < a[3]
            assert not overlap, (first["title"], second["title"])


def test_every_metric_in_every_query_is_in_the_catalog_with_its_labels() -> None:
    """Each selector names a catalog series (or Prometheus's up/scrape_duration_seconds)
    and matches only labels that metric has, plus job."""
    for dashboard, title, expr in queries():
        selectors = SELECTOR.findall(expr)
        assert selectors, (dashboard, title, expr)
        for name, matchers in selectors:
            if name in PROMETHEUS_OWN:
                continue
            assert name in BY_SERIES, (dashboard, title, name)
            labels = {m.split("=")[0].strip() for m in matchers.split(",")}
            assert labels <= {"job", *BY_SERIES[name].labels}, (title, name, labels)


def test_functions_apply_to_the_right_metric_types() -> None:
    """rate/increase take counters or histogram series; histogram_quantile takes _bucket by le;
    gauges are never rated."""
    for _dashboard, title, expr in queries():
        for name in re.findall(r"\b(?:rate|increase)\((\w+)\{", expr):
            metric = BY_SERIES[name]
            assert metric.kind in {"counter", "histogram"}, (title, name)
        for by, name in re.findall(
            r"histogram_quantile\([\d.]+, sum by \(([^)]*)\) \(rate\((\w+)\{", expr
        ):
            assert name.endswith("_bucket"), title
            assert BY_SERIES[name].kind == "histogram", title
            assert "le" in by.split(", "), title
        assert expr.count("histogram_quantile(") == len(
            re.findall(r"histogram_quantile\([\d.]+, sum by \(", expr)
        ), title
        for name, _ in SELECTOR.findall(expr):
            if BY_SERIES.get(name, catalog.SERVICE_READY).kind == "gauge":
                assert not re.search(rf"(rate|increase)\({name}\{{", expr), (title, name)


def test_latency_panels_show_exemplars() -> None:
    """Every panel charting a latency histogram asks for exemplars (trace_id -> Jaeger)."""
    for _dashboard, panel in panels():
        for target in panel["targets"]:
            latency = re.search(r"histogram_quantile\(.*_seconds_bucket", target["expr"])
            if latency and panel["type"] == "timeseries":
                assert target["exemplar"] is True, panel["title"]


@pytest.mark.slow
@pytest.mark.skipif(PROMETHEUS is None, reason="Debian's prometheus package")
def test_every_query_parses_in_a_real_prometheus(tmp_path: Path) -> None:
    """Each query, variables substituted, is accepted by Prometheus's /api/v1/query."""
    server = Prometheus(tmp_path, []).wait_ready()
    try:
        for dashboard, title, expr in queries():
            answer = server.api("query", query=substitute(expr, "aiobs-demo"))
            assert answer["status"] == "success", (dashboard, title, expr, answer)
    finally:
        server.stop()


def test_checked_in_folder_holds_exactly_the_generated_dashboards() -> None:
    """dashboards/ holds the four generated files and no stray dashboard JSON."""
    assert sorted(dashboards()) == sorted(render())


def test_provisioned_prometheus_links_trace_id_exemplars_to_jaeger() -> None:
    """The shipped datasource provisioning sends exemplars' trace_id to the Jaeger datasource,
    and its Prometheus is the dashboards' default datasource."""
    provisioning = yaml.safe_load(
        (DASHBOARDS_DIR / "provisioning" / "datasources.yaml").read_text()
    )["datasources"]
    by_type = {source["type"]: source for source in provisioning}
    destinations = by_type["prometheus"]["jsonData"]["exemplarTraceIdDestinations"]
    assert destinations == [{"name": "trace_id", "datasourceUid": by_type["jaeger"]["uid"]}]
    for dashboard in dashboards().values():
        datasource = dashboard["templating"]["list"][0]
        assert datasource["current"]["value"] == by_type["prometheus"]["name"]


def test_docs_name_every_panel() -> None:
    """docs/dashboards.md mentions every dashboard uid and every panel title."""
    text = " ".join((DASHBOARDS_DIR.parent / "docs" / "dashboards.md").read_text().split())
    for name, dashboard in dashboards().items():
        assert name in text
        for panel in dashboard["panels"]:
            assert f"*{panel['title']}*" in text, panel["title"]
