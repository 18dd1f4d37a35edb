"""The recording and alerting rule groups, built from the metric catalog's names.

Recording rules follow the ``level:metric:operations`` convention; every alert carries a
``severity`` (``page``, ``ticket`` or ``info``), a ``summary``, a ``description`` that quotes the
value, and a ``runbook_url`` to its section of ``docs/runbooks.md``.
"""

from __future__ import annotations

from typing import Any

from aiobs import catalog
from aiobs.ops.rules.config import RulesConfig, number

Rule = dict[str, Any]
Group = dict[str, Any]

MINUTE = 60
HOUR = 60 * MINUTE
DAY = 24 * HOUR
SLO_WINDOWS = (5 * MINUTE, 30 * MINUTE, HOUR, 2 * HOUR, 6 * HOUR, DAY, 3 * DAY)
# (long window, short window, burn-rate factor): the Google SRE workbook's multiwindow,
# multi-burn-rate alerts for a 30-day budget.
FAST_BURN = ((HOUR, 5 * MINUTE, 14.4), (6 * HOUR, 30 * MINUTE, 6.0))
SLOW_BURN = ((DAY, 2 * HOUR, 3.0), (3 * DAY, 6 * HOUR, 1.0))
QUANTILES = ("0.5", "0.95", "0.99")


def _record(name: str, expr: str, **labels: str) -> Rule:
    rule: Rule = {"record": name, "expr": expr}
    if labels:
        rule["labels"] = labels
    return rule


def _alert(
    config: RulesConfig,
    name: str,
    expr: str,
    for_seconds: int,
    severity: str,
    summary: str,
    description: str,
) -> Rule:
    return {
        "alert": name,
        "expr": expr,
        "for": config.duration(for_seconds),
        "labels": {"severity": severity},
        "annotations": {
            "summary": summary,
            "description": description,
            "runbook_url": config.runbook_url(name),
        },
    }


BurnWindows = tuple[tuple[int, int, float], ...]


def _burn_rate_expr(
    config: RulesConfig, record_name: str, budget: float, windows: BurnWindows
) -> str:
    clauses = []
    for long_window, short_window, factor in windows:
        threshold = number(factor * budget)
        clauses.append(
            f"({record_name.format(window=config.duration(long_window))} > {threshold}"
            f" and {record_name.format(window=config.duration(short_window))} > {threshold})"
        )
    return "\n or ".join(clauses)


def _ratio_records(config: RulesConfig, name: str, bad: str, total: str) -> list[Rule]:
    """``name`` over every SLO window: ``sum by (job) rate(bad) / sum by (job) rate(total)``."""
    rules = []
    for seconds in SLO_WINDOWS:
        window = config.duration(seconds)
        rules.append(
            _record(
                name.format(window=window),
                f"sum by (job) (rate({bad}[{window}]))\n"
                f"/\nsum by (job) (rate({total}[{window}]))",
            )
        )
    return rules


def availability(config: RulesConfig) -> Group:
    record_name = "job:ai_inference_errors:ratio_rate{window}"
    budget = 1 - config.slo_target
    target = f"{number(config.slo_target * 100)} %"
    rules = _ratio_records(
        config,
        record_name,
        catalog.INFERENCE_ERRORS.name + config.selector(),
        catalog.INFERENCE.name + config.selector(),
    )
    five = config.duration(5 * MINUTE)
    rules.append(
        _record(
            f"job:ai_inference:rate{five}",
            f"sum by (job) (rate({catalog.INFERENCE.name}{config.selector()}[{five}]))",
        )
    )
    rules += _burn_rate_alerts(
        config,
        "AiobsInferenceErrorBudgetBurn",
        "inference availability",
        _burn_rate_expr(config, record_name, budget, FAST_BURN),
        _burn_rate_expr(config, record_name, budget, SLOW_BURN),
        f"{{{{ $value | humanizePercentage }}}} of inferences of {{{{ $labels.job }}}}"
        f" fail; the SLO is {target} success.",
    )
    return {"name": "aiobs-availability", "rules": rules}


def _burn_rate_alerts(
    config: RulesConfig,
    name: str,
    budget_of: str,
    fast: str,
    slow: str,
    description: str,
    subject: str = "{{ $labels.job }}",
) -> list[Rule]:
    """The pair of the SRE workbook: a fast burn that pages and a slow burn that files a
    ticket, on the same error budget; ``subject`` names what burns in the summary."""
    return [
        _alert(
            config,
            name + speed.capitalize(),
            expression,
            for_seconds,
            severity,
            f"{subject} burns its {budget_of} budget {speed}",
            description,
        )
        for speed, expression, severity, for_seconds in (
            ("fast", fast, "page", 2 * MINUTE),
            ("slow", slow, "ticket", 15 * MINUTE),
        )
    ]


def _threshold_slo(
    config: RulesConfig,
    histogram: catalog.Metric,
    *,
    threshold: float,
    target: float,
    by: str,
    record_name: str,
    alert: str,
    budget_of: str,
    description: str,
    subject: str = "{{ $labels.job }}",
) -> list[Rule]:
    """An SLO on ``histogram``: a share ``target`` of its observations within ``threshold``.

    Records the share above it, ``1 - bucket{le=threshold} / count`` summed ``by`` those labels,
    as ``record_name`` over every SLO window; the 0.5/0.95/0.99 quantiles per model over 5m;
    and the fast/slow burn-rate alert pair on the budget ``1 - target``. ``threshold`` is a
    bucket bound (RulesConfig checks it), so the share is exact, not interpolated.
    """
    name = histogram.name
    bound = str(float(threshold))  # how /metrics spells `le`
    within = name + "_bucket" + config.selector(f'le="{bound}"')
    rules = []
    for seconds in SLO_WINDOWS:
        window = config.duration(seconds)
        rules.append(
            _record(
                record_name.format(window=window),
                f"1 - (\n  sum by ({by}) (rate({within}[{window}]))\n"
                f"  /\n  sum by ({by}) (rate({name}_count{config.selector()}[{window}]))\n)",
            )
        )
    five = config.duration(5 * MINUTE)
    for quantile in QUANTILES:
        rules.append(
            _record(
                f"job_model:{name}:histogram_quantile_rate{five}",
                f"histogram_quantile({quantile}, sum by (job, model, le)"
                f" (rate({name}_bucket{config.selector()}[{five}])))",
                quantile=quantile,
            )
        )
    budget = 1 - target
    rules += _burn_rate_alerts(
        config,
        alert,
        budget_of,
        _burn_rate_expr(config, record_name, budget, FAST_BURN),
        _burn_rate_expr(config, record_name, budget, SLOW_BURN),
        description,
        subject,
    )
    return rules


def latency(config: RulesConfig) -> Group:
    threshold = f"{number(config.latency_threshold_seconds)} s"
    target = f"{number(config.latency_slo_target * 100)} %"
    rules = _threshold_slo(
        config,
        catalog.INFERENCE_DURATION,
        threshold=config.latency_threshold_seconds,
        target=config.latency_slo_target,
        by="job",
        record_name="job:ai_inference_slow:ratio_rate{window}",
        alert="AiobsInferenceLatencyBudgetBurn",
        budget_of="inference latency",
        description=f"{{{{ $value | humanizePercentage }}}} of inferences of {{{{ $labels.job }}}}"
        f" take longer than {threshold}; the SLO is {target} within it.",
    )
    return {"name": "aiobs-latency", "rules": rules}


def generation(config: RulesConfig) -> Group:
    """Generative models' SLOs, per model (summed over versions): time to first token and the
    mean time per output token of each generation. Both are latency SLOs counted from one
    bucket, so they get the same burn-rate pair as inference latency; a plain p95 threshold
    would page on a short spike and miss a steady trickle of slow generations."""
    per_model = "job_model:{metric}_slow:ratio_rate{{window}}"
    subject = "{{ $labels.model }} of {{ $labels.job }}"
    share = "{{ $value | humanizePercentage }} of generations of {{ $labels.model }}"
    rules = []
    for histogram, threshold, target, alert, budget_of, late in (
        (
            catalog.TIME_TO_FIRST_TOKEN,
            config.ttft_threshold_seconds,
            config.ttft_slo_target,
            "AiobsTimeToFirstTokenBudgetBurn",
            "time-to-first-token",
            "wait longer than {threshold} for their first token",
        ),
        (
            catalog.TIME_PER_OUTPUT_TOKEN,
            config.tpot_threshold_seconds,
            config.tpot_slo_target,
            "AiobsTimePerOutputTokenBudgetBurn",
            "time-per-output-token",
            "take longer than {threshold} per output token",
        ),
    ):
        late = late.format(threshold=f"{number(threshold)} s")
        rules += _threshold_slo(
            config,
            histogram,
            threshold=threshold,
            target=target,
            by="job, model",
            record_name=per_model.format(metric=histogram.name.removesuffix("_seconds")),
            alert=alert,
            budget_of=budget_of,
            description=f"{share} ({{{{ $labels.job }}}}) {late};"
            f" the SLO is {number(target * 100)} % within it.",
            subject=subject,
        )
    return {"name": "aiobs-generation", "rules": rules}


def http(config: RulesConfig) -> Group:
    five = config.duration(5 * MINUTE)
    requests = catalog.HTTP_REQUESTS.name
    latency = catalog.HTTP_REQUEST_DURATION.name
    ratio = f"job:http_requests_5xx:ratio_rate{five}"
    errors = requests + config.selector('status=~"5.."')
    rules = [
        _record(
            f"job:http_requests:rate{five}",
            f"sum by (job) (rate({requests}{config.selector()}[{five}]))",
        ),
        _record(
            ratio,
            f"sum by (job) (rate({errors}[{five}]))\n"
            f"/\nsum by (job) (rate({requests}{config.selector()}[{five}]))",
        ),
        *(
            _record(
                f"job_route:{latency}:histogram_quantile_rate{five}",
                f"histogram_quantile({quantile}, sum by (job, route, le)"
                f" (rate({latency}_bucket{config.selector()}[{five}])))",
                quantile=quantile,
            )
            for quantile in QUANTILES
        ),
        _alert(
            config,
            "AiobsHttp5xxRatioHigh",
            f"{ratio} > {number(config.http_5xx_ratio)}",
            5 * MINUTE,
            "ticket",
            "{{ $labels.job }} answers too many HTTP 5xx",
            "{{ $value | humanizePercentage }} of HTTP responses of {{ $labels.job }} are 5xx"
            f" (threshold {number(config.http_5xx_ratio * 100)} %).",
        ),
    ]
    return {"name": "aiobs-http", "rules": rules}


def service(config: RulesConfig) -> Group:
    window = config.duration(15 * MINUTE)
    inferences = catalog.INFERENCE.name + config.selector()
    up = f"up{config.selector()}"
    rules = [
        _alert(
            config,
            "AiobsServiceDown",
            f"{up} == 0",
            2 * MINUTE,
            "page",
            "{{ $labels.instance }} of {{ $labels.job }} is down",
            "Prometheus cannot scrape {{ $labels.instance }} of {{ $labels.job }}"
            " (up = {{ $value }}).",
        ),
        _alert(
            config,
            "AiobsModelNotReady",
            f"{catalog.SERVICE_READY.name}{config.selector()} == 0",
            5 * MINUTE,
            "page",
            "{{ $labels.instance }} of {{ $labels.job }} is not ready",
            "A readiness check of {{ $labels.instance }} fails"
            f" ({catalog.SERVICE_READY.name} = {{{{ $value }}}}); /health/ready names it.",
        ),
        _alert(
            config,
            "AiobsNoInferenceTraffic",
            f"(\n  sum by (job) (rate({inferences}[{window}]))\n"
            f"  or\n  sum by (job) ({up}) * 0\n)\n== 0\n"
            f"and on (job)\nmax by (job) ({up}) == 1",
            15 * MINUTE,
            "ticket",
            "{{ $labels.job }} is up but serves no inferences",
            f"{{{{ $labels.job }}}} made {{{{ $value }}}} inferences per second over {window}"
            " while its targets are up.",
        ),
    ]
    return {"name": "aiobs-service", "rules": rules}


def gpu(config: RulesConfig) -> Group:
    used = catalog.GPU_MEMORY_USED.name + config.selector()
    total = catalog.GPU_MEMORY_TOTAL.name + config.selector()
    utilization = catalog.GPU_UTILIZATION.name + config.selector()
    queue = catalog.INFERENCE_QUEUE_DEPTH.name + config.selector()
    memory_ratio = "instance_gpu:ai_gpu_memory_used:ratio"
    ten, thirty = config.duration(10 * MINUTE), config.duration(30 * MINUTE)
    rules = [
        _record(memory_ratio, f"{used}\n/ on (job, instance, gpu)\n{total}"),
        _alert(
            config,
            "AiobsGpuMemoryPressure",
            f"{memory_ratio} > {number(config.gpu_memory_ratio)}",
            10 * MINUTE,
            "ticket",
            "GPU {{ $labels.gpu }} of {{ $labels.instance }} is nearly full",
            "{{ $value | humanizePercentage }} of the memory of GPU {{ $labels.gpu }} on"
            f" {{{{ $labels.instance }}}} is in use"
            f" (threshold {number(config.gpu_memory_ratio * 100)} %).",
        ),
        _alert(
            config,
            "AiobsGpuTemperatureHigh",
            f"{catalog.GPU_TEMPERATURE.name}{config.selector()}"
            f" > {number(config.gpu_temperature_celsius)}",
            5 * MINUTE,
            "ticket",
            "GPU {{ $labels.gpu }} of {{ $labels.instance }} runs hot",
            "GPU {{ $labels.gpu }} on {{ $labels.instance }} is at {{ $value }} °C"
            f" (threshold {number(config.gpu_temperature_celsius)} °C).",
        ),
        _alert(
            config,
            "AiobsGpuSaturatedQueueGrowing",
            f"avg by (job, instance) (avg_over_time({utilization}[{ten}]))"
            f" > {number(config.gpu_saturated_ratio)}\n"
            f"and on (job, instance)\n"
            f"sum by (job, instance) (deriv({queue}[{ten}])) > 0",
            10 * MINUTE,
            "ticket",
            "{{ $labels.instance }} needs more GPU capacity",
            "The GPUs of {{ $labels.instance }} are {{ $value | humanizePercentage }} busy"
            " and its inference queue keeps growing: scale up.",
        ),
        _alert(
            config,
            "AiobsGpuIdle",
            f"avg by (job, instance) (avg_over_time({utilization}[{thirty}]))"
            f" < {number(config.gpu_idle_ratio)}\n"
            f"and on (job, instance)\nup{config.selector()} == 1",
            HOUR,
            "info",
            "The GPUs of {{ $labels.instance }} are idle",
            "The GPUs of {{ $labels.instance }} were {{ $value | humanizePercentage }} busy"
            f" over {thirty} while the service is up: paid for, unused.",
        ),
    ]
    return {"name": "aiobs-gpu", "rules": rules}


def quality(config: RulesConfig) -> Group:
    confidence = catalog.PREDICTION_CONFIDENCE.name
    hour, day = config.duration(HOUR), config.duration(DAY)
    mean = f"job_model:{confidence}:mean_rate{hour}"
    rules = [
        _record(
            mean,
            f"sum by (job, model) (rate({confidence}_sum{config.selector()}[{hour}]))\n"
            f"/\nsum by (job, model) (rate({confidence}_count{config.selector()}[{hour}]))",
        ),
        _alert(
            config,
            "AiobsPredictionConfidenceDrift",
            f"{mean} < ({mean} offset {day}) - {number(config.confidence_drop)}",
            30 * MINUTE,
            "ticket",
            "Predictions of {{ $labels.model }} are less confident than a day ago",
            "The mean top-1 confidence of {{ $labels.model }} ({{ $labels.job }}) is"
            " {{ $value | printf \"%.2f\" }}, more than"
            f" {number(config.confidence_drop)} below the same hour a day earlier.",
        ),
    ]
    return {"name": "aiobs-quality", "rules": rules}


def telemetry(config: RulesConfig) -> Group:
    window = config.duration(15 * MINUTE)
    hour = config.duration(HOUR)
    rules = [
        _alert(
            config,
            "AiobsSpansDropped",
            f"sum by (job, instance) (increase({catalog.SPANS_DROPPED.name}"
            f"{config.selector()}[{window}])) > 0",
            5 * MINUTE,
            "ticket",
            "{{ $labels.instance }} drops spans",
            "{{ $labels.instance }} dropped {{ $value | humanize }} spans in the last"
            f" {window}: its span queue is full.",
        ),
        _alert(
            config,
            "AiobsSpanExportFailing",
            f"sum by (job, instance) (increase({catalog.SPAN_EXPORT_FAILURES.name}"
            f"{config.selector()}[{window}])) > 0",
            10 * MINUTE,
            "ticket",
            "{{ $labels.instance }} cannot export spans",
            "{{ $value | humanize }} spans of {{ $labels.instance }} failed to export in the"
            f" last {window}.",
        ),
        _alert(
            config,
            "AiobsLabelValuesFolded",
            f"sum by (job, metric, label) (increase({catalog.LABEL_VALUES_FOLDED.name}"
            f"{config.selector()}[{hour}])) > 0",
            0,
            "info",
            "{{ $labels.metric }} folds values of {{ $labels.label }} into other",
            "{{ $value | humanize }} values of label {{ $labels.label }} of {{ $labels.metric }}"
            f" were folded into '{catalog.OTHER}' in the last {hour}:"
            " raise AIOBS_MAX_LABEL_VALUES or bound the values.",
        ),
    ]
    return {"name": "aiobs-telemetry", "rules": rules}


GROUPS = (availability, latency, generation, http, service, gpu, quality, telemetry)
"""Every rule group, in the order they are exported; one file each under ``alerts/``."""
