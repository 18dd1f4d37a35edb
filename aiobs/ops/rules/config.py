"""The one place where the alert rules' thresholds, SLO targets and selectors are set."""

from __future__ import annotations

from dataclasses import dataclass

from aiobs import catalog
from aiobs.ops.labels import Labels, check_labels, check_namespace, check_value
from aiobs.ops.labels import matchers as ops_matchers


@dataclass(frozen=True)
class RulesConfig:
    """Every tunable of the generated rules: the selector of the service's series, the SLO
    targets and the alert thresholds. ``aiobs rules export|generate|check`` (and ``aiobs
    deploy``) set each field from an option or a ``--config`` YAML key of the same name
    (docs/operations.md); in Python, ``rule_files(RulesConfig(job="my-llm"))``. Public: the
    same class is ``aiobs.ops.RulesConfig``.

    Durations are in seconds and are divided by ``time_scale`` when rendered, so a test can
    shrink every window and ``for`` of the real rules (``time_scale=60`` turns an hour into a
    minute) instead of keeping a hand-written copy.
    """

    job: str = "aiobs"
    """Prometheus ``job`` label of the scraped services; every rule selects ``job="<job>"``."""
    namespace: str = ""
    """Kubernetes namespace of the service: when set, every rule also selects
    ``namespace="<namespace>"`` (the label the Prometheus Operator adds); empty selects none."""
    labels: Labels = ()
    """Further ``(label, value)`` pairs every rule selects, e.g. ``(("cluster", "eu1"),)``."""
    slo_target: float = 0.995
    """Availability SLO: the share of inferences that must succeed (99.5 %)."""
    latency_threshold_seconds: float = 0.5
    """An inference slower than this counts against the latency SLO; must be a bucket bound."""
    latency_slo_target: float = 0.99
    """Latency SLO: the share of inferences that must finish within the threshold."""
    ttft_threshold_seconds: float = 0.5
    """A generation whose time to first token exceeds this counts against the TTFT SLO; must be
    a bucket bound of ``ai_time_to_first_token_seconds``."""
    ttft_slo_target: float = 0.95
    """Time-to-first-token SLO: the share of generations whose first token comes in time."""
    tpot_threshold_seconds: float = 0.1
    """A generation whose mean time per output token exceeds this counts against the TPOT SLO;
    must be a bucket bound of ``ai_time_per_output_token_seconds``."""
    tpot_slo_target: float = 0.95
    """Time-per-output-token SLO: the share of generations that stream fast enough."""
    http_5xx_ratio: float = 0.05
    """Share of HTTP responses with a 5xx status above which AiobsHttp5xxRatioHigh fires."""
    gpu_memory_ratio: float = 0.9
    """GPU memory in use over total above which AiobsGpuMemoryPressure fires."""
    gpu_temperature_celsius: float = 85.0
    """GPU temperature above which AiobsGpuTemperatureHigh fires."""
    gpu_saturated_ratio: float = 0.9
    """Average GPU utilization above which a growing queue means: add capacity."""
    gpu_idle_ratio: float = 0.05
    """Average GPU utilization below which a GPU counts as idle (paid for, unused)."""
    confidence_drop: float = 0.1
    """Drop of the mean top-1 confidence against a day earlier that signals drift."""
    runbook_base_url: str = "https://github.com/aiobs/aiobs/blob/main/docs/runbooks.md"
    """Each alert's ``runbook_url`` is this plus ``#`` and the alert's name in lower case."""
    time_scale: float = 1.0
    """Divides every window, ``for`` and offset (tests only; 1 in production)."""

    def __post_init__(self) -> None:
        for name in ("slo_target", "latency_slo_target", "ttft_slo_target", "tpot_slo_target"):
            if not 0 < getattr(self, name) < 1:
                raise ValueError(f"{name} must be between 0 and 1, not {getattr(self, name)}")
        for name, kind, buckets in (
            ("latency_threshold_seconds", "latency", catalog.LATENCY_BUCKETS),
            ("ttft_threshold_seconds", "time-to-first-token", catalog.TIME_TO_FIRST_TOKEN_BUCKETS),
            (
                "tpot_threshold_seconds",
                "time-per-output-token",
                catalog.TIME_PER_OUTPUT_TOKEN_BUCKETS,
            ),
        ):
            # an SLO counts from one `le` bucket, so its threshold must be a bucket bound
            if getattr(self, name) not in buckets:
                raise ValueError(
                    f"{name} must be one of the {kind} buckets {buckets},"
                    f" not {getattr(self, name)}"
                )
        check_value("job", self.job)
        check_namespace("namespace", self.namespace)
        check_labels("labels", self.labels)
        if self.time_scale <= 0:
            raise ValueError("time_scale must be positive")

    def selector(self, *matchers: str) -> str:
        """A PromQL label selector: the job, namespace and labels plus ``matchers``."""
        selected = [f'job="{self.job}"', *ops_matchers(self.namespace, self.labels)]
        return "{" + ",".join([*selected, *matchers]) + "}"

    def duration(self, seconds: float) -> str:
        """``seconds`` divided by ``time_scale``, as a Prometheus duration (``5m``, ``3d``)."""
        if seconds == 0:
            return "0s"
        scaled = max(1, round(seconds / self.time_scale))
        for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
            if scaled % size == 0:
                return f"{scaled // size}{unit}"
        return f"{scaled}s"

    def runbook_url(self, alert: str) -> str:
        return f"{self.runbook_base_url}#{alert.lower()}"


def number(value: float) -> str:
    """A threshold as PromQL and YAML show it: ``0.072``, not ``0.07200000000000001``."""
    return f"{value:.6g}"
