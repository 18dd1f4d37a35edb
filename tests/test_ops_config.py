"""The public configuration of the generators (aiobs/ops/config.py): documented, frozen,
checked, and set the same way from options and from a ``--config`` YAML file."""

from __future__ import annotations

import ast
import dataclasses
import inspect
import json
from pathlib import Path

import pytest

import aiobs.ops
from aiobs.ops.cli import main as cli
from aiobs.ops.config import (
    HIDDEN,
    DashboardsConfig,
    DeployConfig,
    RulesConfig,
    keys,
    option,
)
from aiobs.ops.dashboards import generator as dashboards_generator

ROOT = Path(__file__).resolve().parents[1]
OPERATIONS = ROOT / "docs" / "operations.md"
CONFIGS = (RulesConfig, DashboardsConfig, DeployConfig)


def test_aiobs_ops_is_the_public_face_of_the_generators() -> None:
    assert aiobs.ops.__all__ == [
        "DashboardsConfig",
        "DeployConfig",
        "RulesConfig",
        "dashboard_files",
        "manifest_files",
        "rule_files",
    ]
    assert (aiobs.ops.RulesConfig, aiobs.ops.DashboardsConfig) == (RulesConfig, DashboardsConfig)
    assert aiobs.ops.DeployConfig is DeployConfig
    assert aiobs.ops.dashboard_files is dashboards_generator.render


@pytest.mark.parametrize("config", CONFIGS)
def test_configs_are_frozen_and_every_field_has_a_docstring(config: type) -> None:
    """A frozen dataclass whose class docstring and every field's docstring exist."""
    instance = config()
    first = dataclasses.fields(config)[0].name
    with pytest.raises(dataclasses.FrozenInstanceError):
        setattr(instance, first, "other")
    assert inspect.getdoc(config)
    [klass] = ast.parse(inspect.getsource(config)).body
    assert isinstance(klass, ast.ClassDef)
    documented = set()
    for node, following in zip(klass.body, klass.body[1:], strict=False):
        if (
            isinstance(node, ast.AnnAssign)
            and isinstance(node.target, ast.Name)
            and isinstance(following, ast.Expr)
            and isinstance(following.value, ast.Constant)
            and isinstance(following.value.value, str)
        ):
            documented.add(node.target.id)
    assert {field.name for field in dataclasses.fields(config)} <= documented


@pytest.mark.parametrize("config", CONFIGS)
def test_operations_doc_lists_every_key_with_its_option(config: type) -> None:
    """docs/operations.md has, in the section of each class, a row per YAML key and option."""
    text = OPERATIONS.read_text(encoding="utf-8")
    section = text.split(f"### `{config.__name__}`", 1)[1].split("\n### ", 1)[0]
    for field in dataclasses.fields(config):
        if field.name not in HIDDEN:
            assert f"| `{field.name}` | `{option(field.name)}` |" in section, field.name


def test_keys_are_the_fields_of_the_three_classes() -> None:
    fields = {f.name for config in CONFIGS for f in dataclasses.fields(config)}
    assert set(keys()) == fields - HIDDEN


def test_rules_select_the_namespace_and_labels_after_the_job() -> None:
    config = RulesConfig(job="my-llm", namespace="prod", labels=(("cluster", "eu1"),))
    assert config.selector('le="0.5"') == '{job="my-llm",namespace="prod",cluster="eu1",le="0.5"}'
    assert RulesConfig().selector() == '{job="aiobs"}'


@pytest.mark.parametrize(
    ("config", "fields", "message"),
    [
        (RulesConfig, {"namespace": "Prod"}, "^namespace must be a Kubernetes namespace"),
        (RulesConfig, {"labels": (("job", "x"),)}, "^labels: 'job' has its own option"),
        (DashboardsConfig, {"labels": (("a", "x"), ("a", "y"))}, "^labels: 'a' is given twice"),
        (DashboardsConfig, {"labels": (("1a", "x"),)}, "not a Prometheus label name"),
        (DashboardsConfig, {"uid_prefix": "x" * 24}, "^uid_prefix must be at most 23"),
        (DashboardsConfig, {"tags": ()}, "^tags must be one or more"),
        (DashboardsConfig, {"job": 'a"b'}, "^job must be a plain"),
        (DeployConfig, {"name": "My_Service"}, "^name must be a Kubernetes name"),
        (DeployConfig, {"rule_labels": (("release", ""),)}, "^rule_labels must be"),
    ],
)
def test_bad_values_are_refused_naming_the_field(
    config: type, fields: dict[str, object], message: str
) -> None:
    with pytest.raises(ValueError, match=message):
        config(**fields)


def test_an_option_overrides_the_file_and_the_file_the_defaults(tmp_path: Path) -> None:
    """``--job`` beats ``job:`` of the file; the file's namespace stays; an empty file and a
    key of another command (``uid_prefix``) change nothing."""
    config = tmp_path / "service.yaml"
    config.write_text("job: from-file\nnamespace: prod\nuid_prefix: svc\n", encoding="utf-8")
    out = tmp_path / "rules.yml"
    assert cli(["rules", "export", "--config", str(config), "--job", "cli", "--out", str(out)]) == 0
    text = out.read_text(encoding="utf-8")
    assert 'job="cli",namespace="prod"' in text
    assert "from-file" not in text
    empty = tmp_path / "empty.yaml"
    empty.write_text("", encoding="utf-8")
    assert cli(["rules", "check", "--config", str(empty), "--dir", str(ROOT / "alerts")]) == 0


def test_dashboards_select_the_namespace_in_every_query() -> None:
    """Every expression and variable query with the job matcher gets the namespace next to it;
    the default keeps the repository's JSON."""
    files = dashboards_generator.render(config=DashboardsConfig(namespace="prod"))
    queries = 0
    for text in files.values():
        for panel in json.loads(text)["panels"]:
            for target in panel.get("targets", []):
                if "job=~" in target["expr"]:
                    assert 'job=~"$job", namespace="prod"' in target["expr"]
                    queries += 1
    assert queries > 40
    assert dashboards_generator.render() == dashboards_generator.render(config=DashboardsConfig())


def test_deploy_puts_the_objects_in_the_namespace(tmp_path: Path) -> None:
    """--namespace sets metadata.namespace of every object and the rules' matcher."""
    service = ["--dir", str(tmp_path), "--job", "svc", "--namespace", "ml"]
    assert cli(["deploy", "generate", *service]) == 0
    text = (tmp_path / "prometheusrule.yaml").read_text(encoding="utf-8")
    assert "  namespace: ml\n" in text
    assert 'job="svc",namespace="ml"' in text
    assert "aiobs-demo" not in text + (tmp_path / "grafana-dashboards.yaml").read_text()
    assert cli(["deploy", "check", *service]) == 0
    assert cli(["deploy", "check", "--dir", str(tmp_path)]) == 1


def test_an_unknown_key_exits_2_naming_it(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    config = tmp_path / "service.yaml"
    config.write_text("job: svc\nthreshold: 3\n", encoding="utf-8")
    assert cli(["dashboards", "generate", "--out", str(tmp_path), "--config", str(config)]) == 2
    assert "unknown key 'threshold'" in capsys.readouterr().err
    assert cli(["rules", "export", "--config", str(tmp_path / "missing.yaml")]) == 2
    assert "missing.yaml" in capsys.readouterr().err
