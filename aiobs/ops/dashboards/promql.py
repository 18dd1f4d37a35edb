"""PromQL for the dashboards, built from :mod:`aiobs.catalog` so that a renamed metric or
label breaks the build, not a dashboard. Plain strings: no grafanalib here."""

from __future__ import annotations

from aiobs import catalog
from aiobs.catalog import Metric

RATE_WINDOW = "$__rate_interval"
"""Grafana's rate window: at least four scrape intervals."""

# Label name -> the template variable that filters it (``=~`` so "All" works as ``.*``).
VARIABLE_OF_LABEL = {
    "job": "job",
    catalog.MODEL: "model",
    catalog.MODEL_VERSION: "model_version",
}

GRAFANA_UNIT = {
    "seconds": "s",
    "bytes": "bytes",
    "ratio": "percentunit",
    "celsius": "celsius",
    "watts": "watt",
    "items": "short",
    "tokens": "short",
    "1": "short",
}
"""The Grafana unit id of each catalog unit."""


def selector(metric: Metric, series: str = "", **matchers: str) -> str:
    """``name{job=~"$job", model=~"$model", ...}``: every template variable whose label the
    metric has, plus ``matchers`` (label -> regex). ``series`` picks ``_bucket``/``_sum``/
    ``_count`` of a histogram."""
    name = metric.name + series
    if name not in metric.series_names:
        raise ValueError(f"{name} is not a series of {metric.name}")
    parts = [f'job=~"${VARIABLE_OF_LABEL["job"]}"']
    for label in metric.labels:
        if label in VARIABLE_OF_LABEL:
            parts.append(f'{label}=~"${VARIABLE_OF_LABEL[label]}"')
    for label, regex in matchers.items():
        if label not in metric.labels:
            raise ValueError(f"{metric.name} has no label {label}")
        parts.append(f'{label}=~"{regex}"')
    return f"{name}{{{', '.join(parts)}}}"


def _by(labels: tuple[str, ...]) -> str:
    return f"sum by ({', '.join(labels)}) " if labels else "sum "


def rate(
    metric: Metric, by: tuple[str, ...] = (), series: str = "", offset: str = "", **matchers: str
) -> str:
    """``sum by (...) (rate(counter[window]))``; histograms need ``series``."""
    if metric.kind == "gauge":
        raise ValueError(f"rate() of the gauge {metric.name}")
    if metric.kind == "histogram" and series not in ("_sum", "_count", "_bucket"):
        raise ValueError(f"rate() of the histogram {metric.name} needs a series")
    shift = f" offset {offset}" if offset else ""
    return f"{_by(by)}(rate({selector(metric, series, **matchers)}[{RATE_WINDOW}]{shift}))"


def quantile(q: float, metric: Metric, by: tuple[str, ...] = ()) -> str:
    """``histogram_quantile(q, sum by (le, ...) (rate(x_bucket[window])))``."""
    if metric.kind != "histogram":
        raise ValueError(f"histogram_quantile() of the {metric.kind} {metric.name}")
    return f"histogram_quantile({q}, {rate(metric, ('le', *by), '_bucket')})"


def mean(metric: Metric, by: tuple[str, ...] = (), offset: str = "") -> str:
    """Mean observation of a histogram over the window: rate of ``_sum`` over ``_count``."""
    return f"{rate(metric, by, '_sum', offset)} / {rate(metric, by, '_count', offset)}"


def ratio_or_zero(part: str, whole: str) -> str:
    """``part / whole`` that is 0, not empty, while ``part`` has no series (no errors yet)."""
    return f"({part} or {whole} * 0) / {whole}"


def buckets(metric: Metric) -> str:
    """Per-bucket increase for a heatmap (``format: heatmap`` turns it into cells)."""
    if metric.kind != "histogram":
        raise ValueError(f"a heatmap of the {metric.kind} {metric.name}")
    return f"sum by (le) (increase({selector(metric, '_bucket')}[{RATE_WINDOW}]))"


def gauge(metric: Metric, by: tuple[str, ...] = (), aggregation: str = "sum") -> str:
    """``sum by (...) (gauge{...})``."""
    if metric.kind != "gauge":
        raise ValueError(f"{metric.name} is a {metric.kind}, not a gauge")
    grouping = f" by ({', '.join(by)})" if by else ""
    return f"{aggregation}{grouping} ({selector(metric)})"


def unit_of(metric: Metric) -> str:
    """The Grafana unit of the metric's catalog unit."""
    return GRAFANA_UNIT[metric.unit]
