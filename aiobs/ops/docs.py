"""``docs/metrics.md``, generated from the catalog (``aiobs docs metrics``)."""

from __future__ import annotations

from aiobs import catalog

_HEADER = """# Metrics

Generated from the catalog (`aiobs/catalog.py`) by `aiobs docs metrics --out docs/metrics.md`;
the test suite fails when this file is stale. Dashboards and alert rules are checked against
the same catalog.
"""

_NOTES = """
## Labels

- `route` is the route template (`/v1/models/{name}`), mounts included; requests that match no
  route get `unmatched`. `method` is one of the standard HTTP methods or `_OTHER`. `status` is
  the numeric status code. `/metrics` and `/health*` requests are not counted.
- `model`, `model_version` and `error_type` come from callers: past `AIOBS_MAX_LABEL_VALUES`
  distinct values per metric (default 100) new values fold into `other`, counted by
  `aiobs_label_values_folded_total{metric,label}` and logged once.
- `stage` is one of `queue`, `preprocess`, `compute`, `postprocess`, as Triton and KServe
  use them; `type` is `input` or `output`.

## Exemplars

`/metrics` answers `Accept: application/openmetrics-text` with the OpenMetrics format, in which
the buckets of `http_request_duration_seconds`, `http_response_first_byte_seconds`,
`ai_inference_duration_seconds`, `ai_time_to_first_token_seconds` and
`ai_time_per_output_token_seconds` carry the `trace_id` of a sampled span (the request's, the
inference's) as an exemplar; a bucket takes a new one at most every 0.1 s, since Prometheus
keeps only the one it scrapes (turn off with `AIOBS_EXEMPLARS=false`). Prometheus stores them
with `--enable-feature=exemplar-storage`. prometheus_client keeps no exemplars in multiprocess
mode.

## Self-monitoring

`aiobs_spans_exported_total`, `aiobs_span_export_failures_total` and
`aiobs_spans_dropped_total` add up to the sampled spans the service ended: a growing failure or
drop count means the collector is down or too slow. `aiobs_log_lines_dropped_total` counts log
lines dropped because stdout could not keep up.

## Span names and attributes

| what | name |
|---|---|
| server span | `METHOD /route/{template}` (kind SERVER) |
| inference span | `inference <model>`, child of the current span |
"""


def _outcomes() -> str:
    """The outcomes section, its names taken from the catalog."""
    c = catalog
    return f"""
## Outcomes

An inference ends as `{c.OUTCOME_SUCCESS}`, `{c.OUTCOME_ERROR}` or `{c.OUTCOME_CANCELLED}`; each
is counted in `{c.INFERENCE.name}` and timed in `{c.INFERENCE_DURATION.name}`.
`{c.OUTCOME_ERROR}`: an `Exception` left it; counted in `{c.INFERENCE_ERRORS.name}` by class,
span status ERROR. `{c.OUTCOME_CANCELLED}`: the caller went away (`asyncio.CancelledError`,
`GeneratorExit` when a consumer closes a stream early, `KeyboardInterrupt`, `SystemExit`);
counted in `{c.INFERENCE_CANCELLED.name}`, timed until the cancellation, no time per output
token, span status left unset. The span attribute `{c.ATTR_INFERENCE_OUTCOME}` says which."""


def metrics_markdown() -> str:
    """The whole of ``docs/metrics.md``."""
    rows = [
        "| metric | type | unit | labels | meaning |",
        "|---|---|---|---|---|",
    ]
    for metric in catalog.METRICS:
        labels = ", ".join(metric.labels) or "—"
        rows.append(
            f"| `{metric.name}` | {metric.kind} | {metric.unit} | {labels} | {metric.help} |"
        )
    buckets = [
        "| histograms | boundaries |",
        "|---|---|",
    ]
    for metric in catalog.METRICS:
        if metric.kind == "histogram":
            bounds = ", ".join(f"{bound:g}" for bound in metric.buckets)
            buckets.append(f"| `{metric.name}` | {bounds} |")
    attributes = [
        f"| {name.removeprefix('ATTR_').lower().replace('_', ' ')} attribute | `{value}` |"
        for name, value in vars(catalog).items()
        if name.startswith("ATTR_")
    ]
    attributes += [
        f"| {stage} stage duration attribute | `{name}` |"
        for stage, name in catalog.STAGE_DURATION_ATTRIBUTES.items()
    ]
    return "\n".join(
        [
            _HEADER,
            *rows,
            "",
            "## Buckets",
            "",
            *buckets,
            _outcomes(),
            _NOTES.rstrip("\n"),
            *attributes,
            "",
        ]
    )
