"""The alert rules: generated from the catalog, checked in, exported, and proven by promtool."""

from __future__ import annotations

import dataclasses
import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

from aiobs import catalog
from aiobs.ops.cli import main as cli
from aiobs.ops.rules.config import RulesConfig
from aiobs.ops.rules.generator import rule_files, rule_groups

ALERTS = Path(__file__).resolve().parents[1] / "alerts"
RUNBOOKS = ALERTS.parent / "docs" / "runbooks.md"
needs_promtool = pytest.mark.skipif(
    shutil.which("promtool") is None, reason="Debian's prometheus package"
)


def _rules() -> list[dict[str, Any]]:
    return [rule for group in rule_groups() for rule in group["rules"]]


def _alert_names() -> set[str]:
    return {rule["alert"] for rule in _rules() if "alert" in rule}


def test_checked_in_rule_files_equal_the_generated_ones() -> None:
    """alerts/*.yml is exactly what `aiobs rules generate` writes, one file per group."""
    generated = rule_files()
    on_disk = {path.name: path.read_text(encoding="utf-8") for path in ALERTS.glob("*.yml")}
    assert on_disk == generated, "stale: run `aiobs rules generate`"
    assert len(generated) == len(rule_groups())


def test_rules_check_command_reports_a_stale_file(tmp_path: Path) -> None:
    """`aiobs rules check --dir` exits 0 on fresh files and 1 once one of them is edited."""
    assert cli(["rules", "generate", "--dir", str(tmp_path)]) == 0
    assert cli(["rules", "check", "--dir", str(tmp_path)]) == 0
    (tmp_path / "http.yml").write_text("groups: []\n", encoding="utf-8")
    assert cli(["rules", "check", "--dir", str(tmp_path)]) == 1


@needs_promtool
def test_promtool_check_rules_is_clean() -> None:
    """`promtool check rules` accepts every checked-in rule file without a warning."""
    result = subprocess.run(
        ["promtool", "check", "rules", *sorted(map(str, ALERTS.glob("*.yml")))],
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "WARNING" not in result.stdout + result.stderr


@needs_promtool
def test_export_sets_job_and_slo_target_and_passes_promtool(tmp_path: Path) -> None:
    """`aiobs rules export --job --slo-target --out` writes one valid file with that selector
    and the burn-rate thresholds of that target."""
    out = tmp_path / "rules.yml"
    arguments = ["--job", "resnet", "--slo-target", "0.999", "--out", str(out)]
    assert cli(["rules", "export", *arguments]) == 0
    text = out.read_text(encoding="utf-8")
    assert 'job="resnet"' in text
    assert 'job="aiobs"' not in text
    assert "> 0.0144" in text  # 14.4 x (1 - 0.999)
    assert [group["name"] for group in yaml.safe_load(text)["groups"]] == [
        group["name"] for group in rule_groups()
    ]
    result = subprocess.run(
        ["promtool", "check", "rules", str(out)], capture_output=True, text=True, check=False
    )
    assert result.returncode == 0, result.stdout + result.stderr


def test_export_refuses_an_slo_target_outside_0_1(capsys: pytest.CaptureFixture[str]) -> None:
    """An SLO target of 1 or more is refused with exit status 2 and a message naming it."""
    assert cli(["rules", "export", "--slo-target", "1.5"]) == 2
    assert "slo_target" in capsys.readouterr().err


def test_config_refuses_a_latency_threshold_that_is_no_bucket() -> None:
    """The latency SLO counts from a bucket, so its threshold must be a bucket bound."""
    with pytest.raises(ValueError, match="latency buckets"):
        RulesConfig(latency_threshold_seconds=0.3)


@pytest.mark.parametrize("field", ["ttft_threshold_seconds", "tpot_threshold_seconds"])
def test_config_refuses_a_token_timing_threshold_that_is_no_bucket(field: str) -> None:
    """The generation SLOs count from a bucket too: a threshold between the GenAI bucket
    bounds is refused with a message naming the setting."""
    with pytest.raises(ValueError, match=f"^{field} must be one of the time-"):
        RulesConfig(**{field: 0.33})


@pytest.mark.parametrize("field", ["ttft_slo_target", "tpot_slo_target"])
def test_config_refuses_a_generation_slo_target_outside_0_1(field: str) -> None:
    """A generation SLO target of 1 leaves no budget and is refused, naming the setting."""
    with pytest.raises(ValueError, match=f"^{field} must be between 0 and 1"):
        RulesConfig(**{field: 1.0})


def test_generation_slos_count_per_model_from_the_configured_buckets() -> None:
    """The TTFT and TPOT ratios read the `le` bucket of the configured thresholds and sum by
    job and model, so versions of one model share a budget and models do not."""
    config = RulesConfig(ttft_threshold_seconds=1.0, tpot_threshold_seconds=0.05)
    [group] = [g for g in rule_groups(config) if g["name"] == "aiobs-generation"]
    ratios = [r["expr"] for r in group["rules"] if r.get("record", "").endswith(":ratio_rate5m")]
    ttft, tpot = catalog.TIME_TO_FIRST_TOKEN.name, catalog.TIME_PER_OUTPUT_TOKEN.name
    assert f'sum by (job, model) (rate({ttft}_bucket{{job="aiobs",le="1.0"}}[5m]))' in ratios[0]
    assert f'sum by (job, model) (rate({tpot}_bucket{{job="aiobs",le="0.05"}}[5m]))' in ratios[1]


def test_time_scale_shrinks_every_window_for_and_offset() -> None:
    """time_scale=60 renders 1h windows as 1m, `for: 2m` as 2s and `offset 1d` as 24m."""
    scaled = "".join(rule_files(RulesConfig(time_scale=60)).values())
    assert "job:ai_inference_errors:ratio_rate1m" in scaled
    assert "[3d]" not in scaled
    assert "[72m]" in scaled
    assert "for: 2s" in scaled
    assert "offset 24m" in scaled


def test_every_alert_has_severity_summary_description_and_runbook() -> None:
    """Every alert carries a severity and the three annotations, the description quoting $value."""
    for rule in _rules():
        if "alert" not in rule:
            continue
        assert rule["labels"]["severity"] in ("page", "ticket", "info"), rule["alert"]
        annotations = rule["annotations"]
        assert set(annotations) == {"summary", "description", "runbook_url"}, rule["alert"]
        assert "$value" in annotations["description"], rule["alert"]


def test_every_alert_has_its_runbook_section() -> None:
    """Each runbook_url's anchor is a heading of docs/runbooks.md, and no section is orphaned."""
    headings = re.findall(r"^## (\S+)$", RUNBOOKS.read_text(encoding="utf-8"), re.MULTILINE)
    anchors = {heading.lower() for heading in headings}
    for rule in _rules():
        if "alert" in rule:
            assert rule["annotations"]["runbook_url"].split("#")[1] in anchors, rule["alert"]
    assert {heading for heading in headings if heading.startswith("Aiobs")} == _alert_names()


def test_every_setting_is_documented_with_its_default() -> None:
    """docs/runbooks.md's settings table names each RulesConfig field with its default."""
    text = RUNBOOKS.read_text(encoding="utf-8")
    for field in dataclasses.fields(RulesConfig):
        assert f"| `{field.name}` | `{field.default}` |" in text, field.name


def test_recording_rules_follow_level_metric_operations() -> None:
    """Every recorded name has the three colon-separated parts of `level:metric:operations`."""
    for rule in _rules():
        if "record" in rule:
            assert re.fullmatch(r"[a-z_]+:[a-z0-9_]+:[a-z0-9_]+", rule["record"]), rule["record"]


_KEYWORDS = {"and", "or", "unless", "offset", "bool", "inf", "nan"}
_GROUPING = re.compile(r"\b(?:by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)")


def promql_metric_names(expr: str) -> set[str]:
    """The metric names an expression selects (not functions, labels, keywords or durations)."""
    expr = re.sub(r'"(?:[^"\\]|\\.)*"', "", expr)
    expr = re.sub(r"\{[^}]*\}|\[[^\]]*\]", "", expr)
    expr = _GROUPING.sub("", expr)
    names = re.findall(r"(?<![\w.:])([a-zA-Z_:][\w:]*)(?![\w:])(?!\s*\()", expr)
    return {name for name in names if name.lower() not in _KEYWORDS}


def test_promql_metric_names_skips_functions_labels_and_keywords() -> None:
    """The parser finds both metrics of a ratio and nothing of its syntax."""
    expr = (
        'sum by (job) (rate(a_total{job="x",le="0.5"}[5m])) / on (job) b:c:d offset 1d'
        " > 0.5 and up == 1"
    )
    assert promql_metric_names(expr) == {"a_total", "b:c:d", "up"}


def test_every_metric_a_rule_uses_is_in_the_catalog() -> None:
    """A rule selects only catalog series, recorded series, or Prometheus's own `up`."""
    known = {name for metric in catalog.METRICS for name in metric.series_names}
    recorded = {rule["record"] for rule in _rules() if "record" in rule}
    used = set().union(*(promql_metric_names(rule["expr"]) for rule in _rules()))
    assert used - known - recorded - {"up"} == set()
    assert used & known  # the parser found catalog names at all


def _unit_tests() -> dict[Path, dict[str, Any]]:
    return {
        path: yaml.safe_load(path.read_text(encoding="utf-8"))
        for path in sorted((ALERTS / "tests").glob("*.yml"))
    }


def test_one_promtool_test_file_per_rule_group() -> None:
    """alerts/tests/ holds one test file per rule file, testing exactly that file."""
    tests = _unit_tests()
    assert {path.name for path in tests} == set(rule_files())
    for path, document in tests.items():
        assert document["rule_files"] == [f"../{path.name}"]


def test_every_alert_has_a_firing_and_a_non_firing_case() -> None:
    """Each alert is expected to fire (with labels and annotations) somewhere and to stay
    silent somewhere else; each file checks some recorded value when its group records."""
    firing: set[str] = set()
    silent: set[str] = set()
    for path, document in _unit_tests().items():
        cases = [case for test in document["tests"] for case in test.get("alert_rule_test", [])]
        for case in cases:
            if case["exp_alerts"]:
                firing.add(case["alertname"])
                for alert in case["exp_alerts"]:
                    assert alert["exp_annotations"]["runbook_url"], case["alertname"]
                    assert "severity" in alert["exp_labels"], case["alertname"]
            else:
                silent.add(case["alertname"])
        group = yaml.safe_load(rule_files()[path.name])["groups"][0]
        if any("record" in rule for rule in group["rules"]):
            assert any(test.get("promql_expr_test") for test in document["tests"]), path.name
    assert firing == _alert_names()
    assert silent == _alert_names()


@needs_promtool
@pytest.mark.slow
def test_promtool_unit_tests_pass() -> None:
    """`promtool test rules alerts/tests/*.yml` passes: every expected alert, label, annotation
    and recorded value."""
    result = subprocess.run(
        ["promtool", "test", "rules", *map(str, _unit_tests())],
        capture_output=True,
        text=True,
        check=False,
        timeout=110,
    )
    assert result.returncode == 0, result.stdout + result.stderr
