"""Operations as code, used at build time only: the runtime never imports this package.

Each generator takes a public, frozen configuration and reads only it and
:mod:`aiobs.catalog`: ``rule_files(RulesConfig(job="my-llm"))`` (Prometheus rules, one file
per group), ``dashboard_files(config=DashboardsConfig(job="my-llm"))`` (Grafana JSON, needs
the ``dashboards`` extra) and ``manifest_files(deploy=DeployConfig(...), rules=...,
dashboards=...)`` (the PrometheusRule and dashboard ConfigMaps for Kubernetes). The ``aiobs``
command calls the same functions.
"""

from aiobs.ops.config import DashboardsConfig, DeployConfig, RulesConfig
from aiobs.ops.dashboards.generator import render as dashboard_files
from aiobs.ops.deploy import files as manifest_files
from aiobs.ops.rules.generator import rule_files

__all__ = [
    "DashboardsConfig",
    "DeployConfig",
    "RulesConfig",
    "dashboard_files",
    "manifest_files",
    "rule_files",
]
