"""grafanalib building blocks for the dashboards: Prometheus targets, the panel kinds used,
the grid layout, the template variables, and the step that turns grafanalib 0.7.1's output
into current Grafana JSON (schemaVersion 39, the non-legacy heatmap panel)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from grafanalib import core

SCHEMA_VERSION = 39
"""Grafana 10.3 / 11's dashboard schema."""
DATASOURCE = {"type": "prometheus", "uid": "${datasource}"}
"""Every panel and target reads the dashboard's datasource variable."""
GRID_WIDTH = 24
Query = tuple[str, str]
"""A PromQL expression and its legend format."""
Step = tuple[str, float | None]
"""A threshold step: its color and where it starts (``None``: the base step)."""

GREEN_ORANGE_RED: tuple[Step, ...] = (("green", None), ("orange", 0.8), ("red", 0.95))


@dataclass(frozen=True)
class PromTarget:
    """A Prometheus target reading the datasource variable, with exemplars when asked
    (grafanalib's ``Target`` has no ``exemplar``; its encoder calls ``to_json_data``)."""

    expr: str
    legend: str
    ref_id: str
    exemplar: bool = False
    format: str = "time_series"

    def to_json_data(self) -> dict[str, Any]:
        return {
            "datasource": DATASOURCE,
            "editorMode": "code",
            "exemplar": self.exemplar,
            "expr": self.expr,
            "format": self.format,
            "instant": False,
            "legendFormat": self.legend,
            "range": True,
            "refId": self.ref_id,
        }


def targets(
    queries: Sequence[Query], exemplars: bool = False, fmt: str = "time_series"
) -> list[PromTarget]:
    return [
        PromTarget(
            expr=expr, legend=legend, ref_id=chr(ord("A") + index), exemplar=exemplars, format=fmt
        )
        for index, (expr, legend) in enumerate(queries)
    ]


def _steps(thresholds: Sequence[Step]) -> list[dict[str, Any]]:
    return [{"color": color, "value": value} for color, value in thresholds]


def timeseries(
    title: str,
    description: str,
    queries: Sequence[Query],
    unit: str,
    *,
    thresholds: Sequence[Step] = (("green", None),),
    exemplars: bool = False,
    stacked: bool = False,
    width: int = 12,
    height: int = 8,
) -> core.TimeSeries:
    """A time series panel; ``thresholds`` are drawn as dashed lines when there are several."""
    return core.TimeSeries(
        title=title,
        description=description,
        dataSource=DATASOURCE,
        targets=targets(queries, exemplars),
        unit=unit,
        thresholds=_steps(thresholds),
        thresholdsStyleMode="dashed" if len(thresholds) > 1 else "off",
        stacking={"mode": "normal", "group": "A"} if stacked else {"mode": "none"},
        fillOpacity=30 if stacked else 10,
        legendDisplayMode="table",
        legendCalcs=["mean", "max", "lastNotNull"],
        tooltipMode="multi",
        gridPos=core.GridPos(h=height, w=width, x=0, y=0),
    )


def stat(
    title: str,
    description: str,
    queries: Sequence[Query],
    unit: str,
    *,
    thresholds: Sequence[Step],
    mappings: Sequence[dict[str, Any]] = (),
    width: int = 6,
    height: int = 4,
) -> core.Stat:
    """A single-value panel colored by ``thresholds``."""
    return core.Stat(
        title=title,
        description=description,
        dataSource=DATASOURCE,
        targets=targets(queries),
        format=unit,
        thresholds=_steps(thresholds),
        mappings=list(mappings),
        reduceCalc="lastNotNull",
        noValue=None,  # Grafana's own "No data", not grafanalib's "none"
        colorMode="background",
        gridPos=core.GridPos(h=height, w=width, x=0, y=0),
    )


def heatmap(
    title: str,
    description: str,
    query: str,
    unit: str,
    *,
    exemplars: bool = False,
    width: int = 12,
    height: int = 8,
) -> core.Heatmap:
    """A heatmap of histogram buckets (``format: heatmap``); :func:`modernise` rewrites
    grafanalib's legacy heatmap JSON into the current panel."""
    panel = core.Heatmap(
        title=title,
        description=description,
        dataSource=DATASOURCE,
        targets=targets([(query, "{{le}}")], exemplars, fmt="heatmap"),
        dataFormat="tsbuckets",
        gridPos=core.GridPos(h=height, w=width, x=0, y=0),
    )
    panel.extraJson = {"aiobsUnit": unit}
    return panel


def layout(rows: Sequence[Sequence[core.Panel]]) -> list[core.Panel]:
    """Place ``rows`` top to bottom, each row's panels left to right at their widths; number
    the panels 1, 2, ... in reading order."""
    placed: list[core.Panel] = []
    y = 0
    for row in rows:
        x = 0
        for panel in row:
            grid = panel.gridPos
            if x + grid.w > GRID_WIDTH:
                raise ValueError(f"row with {panel.title!r} is wider than {GRID_WIDTH}")
            panel.gridPos = core.GridPos(h=grid.h, w=grid.w, x=x, y=y)
            panel.id = len(placed) + 1
            placed.append(panel)
            x += grid.w
        y += max(panel.gridPos.h for panel in row)
    return placed


def variables(job: str, datasource: str) -> core.Templating:
    """datasource, job (defaulting to ``job``), model and model_version (All by default)."""

    def query(name: str, label: str, promql: str, default: str, include_all: bool) -> core.Template:
        return core.Template(
            name=name,
            label=label,
            query=promql,
            default=default,
            dataSource=DATASOURCE,
            includeAll=include_all,
            multi=include_all,
            allValue=".*" if include_all else None,
            refresh=core.REFRESH_ON_TIME_RANGE_CHANGE,
        )

    return core.Templating(
        list=[
            core.Template(
                name="datasource",
                label="Data source",
                query="prometheus",
                type="datasource",
                default=datasource,
            ),
            query("job", "Job", "label_values(ai_service_ready, job)", job, False),
            query(
                "model",
                "Model",
                'label_values(ai_inference_total{job=~"$job"}, model)',
                "$__all",
                True,
            ),
            query(
                "model_version",
                "Model version",
                'label_values(ai_inference_total{job=~"$job", model=~"$model"}, model_version)',
                "$__all",
                True,
            ),
        ]
    )


_LEGACY_PANEL_KEYS = (
    "cacheTimeout",
    "editable",
    "error",
    "height",
    "hideTimeOverride",
    "maxDataPoints",
    "maxPerRow",
    "minSpan",
    "repeat",
    "repeatDirection",
    "span",
)
_LEGACY_DASHBOARD_KEYS = (
    "hideControls",
    "rows",
    "sharedCrosshair",
    "style",
    "gnetId",
    "id",
    "__inputs",
)


def _without_nulls(value: Any) -> Any:
    if isinstance(value, dict):
        return {key: _without_nulls(item) for key, item in value.items() if item is not None}
    if isinstance(value, list):
        return [_without_nulls(item) for item in value]
    return value


def _modern_heatmap(panel: dict[str, Any]) -> dict[str, Any]:
    unit = panel.pop("aiobsUnit")
    common = (
        "datasource",
        "description",
        "gridPos",
        "id",
        "interval",
        "links",
        "targets",
        "title",
        "transformations",
        "transparent",
        "timeFrom",
        "timeShift",
    )
    modern = {key: panel[key] for key in common if key in panel}
    modern["type"] = "heatmap"
    modern["fieldConfig"] = {
        "defaults": {
            "custom": {
                "scaleDistribution": {"type": "linear"},
                "hideFrom": {"legend": False, "tooltip": False, "viz": False},
            },
            "unit": unit,
        },
        "overrides": [],
    }
    modern["options"] = {
        "calculate": False,
        "cellGap": 1,
        "color": {
            "mode": "scheme",
            "scheme": "Oranges",
            "scale": "exponential",
            "exponent": 0.5,
            "steps": 64,
            "reverse": False,
            "fill": "dark-orange",
        },
        "exemplars": {"color": "rgba(255,0,255,0.7)"},
        "filterValues": {"le": 1e-9},
        "legend": {"show": True},
        "rowsFrame": {"layout": "auto"},
        "tooltip": {"mode": "single", "yHistogram": True, "showColorScale": False},
        "yAxis": {"axisPlacement": "left", "reverse": False, "unit": unit},
    }
    return modern


def _current_for_all(variable: dict[str, Any]) -> None:
    if variable.get("includeAll") and variable["current"].get("value") == "$__all":
        variable["current"] = {"selected": True, "text": ["All"], "value": ["$__all"]}


def modernise(dashboard: dict[str, Any]) -> dict[str, Any]:
    """grafanalib's JSON -> current Grafana JSON: schemaVersion, no legacy keys or nulls,
    the current heatmap panel, All as the default of multi-value variables."""
    dashboard = _without_nulls(dashboard)
    for key in _LEGACY_DASHBOARD_KEYS:
        dashboard.pop(key, None)
    dashboard["schemaVersion"] = SCHEMA_VERSION
    panels = []
    for panel in dashboard["panels"]:
        for key in _LEGACY_PANEL_KEYS:
            panel.pop(key, None)
        panels.append(_modern_heatmap(panel) if panel["type"] == "heatmap" else panel)
    dashboard["panels"] = panels
    for variable in dashboard["templating"]["list"]:
        _current_for_all(variable)
    return dashboard
