"""``aiobs dashboards generate --out DIR`` and ``aiobs dashboards check``: the Grafana
dashboards as code (grafanalib, the ``aiobs[dashboards]`` extra, imported when a dashboard is
rendered). Part of :mod:`aiobs.ops`: the runtime never imports it."""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from aiobs.ops.config import (
    DashboardsConfig,
    OptionError,
    add_options,
    load_file,
    resolve,
)
from aiobs.ops.files import stale_files, write_files

DEFAULT_JOB = DashboardsConfig.job
DEFAULT_DATASOURCE = DashboardsConfig.datasource
CHECKED_IN = Path("dashboards")
"""Where ``check`` looks by default: ``dashboards/`` of the current directory (a checkout)."""
JOB_MATCHER = 'job=~"$job"'
"""How every query of the dashboards selects the job (``aiobs.ops.dashboards.promql``)."""
JOBS_QUERY = "label_values(ai_service_ready, job)"
"""The Job variable's query (``aiobs.ops.dashboards.panels.variables``)."""


def _select(node: Any, matchers: list[str]) -> Any:
    """``node`` with ``matchers`` beside the job matcher of every query and in the Job
    variable's query."""
    if isinstance(node, dict):
        return {
            key: (
                value.replace(JOB_MATCHER, ", ".join([JOB_MATCHER, *matchers])).replace(
                    JOBS_QUERY, f"label_values(ai_service_ready{{{', '.join(matchers)}}}, job)"
                )
                if key in ("expr", "query") and isinstance(value, str)
                else _select(value, matchers)
            )
            for key, value in node.items()
        }
    if isinstance(node, list):
        return [_select(item, matchers) for item in node]
    return node


def render(
    job: str | None = None,
    datasource: str | None = None,
    *,
    config: DashboardsConfig | None = None,
) -> dict[str, str]:
    """File name -> JSON text (sorted keys, two-space indent, final newline) per dashboard,
    for ``config`` (the defaults when None) with ``job`` and ``datasource`` when given."""
    config = config or DashboardsConfig()
    if job is not None:
        config = dataclasses.replace(config, job=job)
    if datasource is not None:
        config = dataclasses.replace(config, datasource=datasource)
    job, datasource, tags = config.job, config.datasource, list(config.tags)
    from grafanalib import core
    from grafanalib._gen import DashboardEncoder

    from aiobs.ops.dashboards.defs import DASHBOARDS
    from aiobs.ops.dashboards.panels import modernise, variables

    files = {}
    for fixed_uid, (fixed_title, description, panels) in DASHBOARDS.items():
        uid = config.uid_prefix + fixed_uid.removeprefix("aiobs")
        title = config.title_prefix + fixed_title.removeprefix("aiobs")
        dashboard = core.Dashboard(
            title=title,
            uid=uid,
            description=description,
            tags=tags,
            panels=panels(),
            templating=variables(job, datasource),
            timezone="browser",
            refresh="30s",
            time=core.Time("now-1h", "now"),
            graphTooltip=core.GRAPH_TOOLTIP_MODE_SHARED_CROSSHAIR,
            links=[
                core.DashboardLink(
                    title="aiobs dashboards",
                    type="dashboards",
                    tags=tags,
                    asDropdown=True,
                    includeVars=True,
                    keepTime=True,
                )
            ],
        )
        encoded: Any = json.loads(json.dumps(dashboard.to_json_data(), cls=DashboardEncoder))
        if config.matchers():
            encoded = _select(encoded, config.matchers())
        text = json.dumps(modernise(encoded), indent=2, sort_keys=True, ensure_ascii=False)
        files[f"{uid}.json"] = text + "\n"
    return files


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="aiobs dashboards", description="Grafana dashboards as code (grafanalib)"
    )
    commands = parser.add_subparsers(dest="command", required=True)
    generate = commands.add_parser("generate", help="write one JSON file per dashboard")
    generate.add_argument("--out", required=True, type=Path, help="folder to write into")
    check = commands.add_parser(
        "check", help="fail when the checked-in JSON differs from what generate writes"
    )
    check.add_argument(
        "--dir",
        type=Path,
        default=CHECKED_IN,
        help="folder holding the JSON (default: ./dashboards)",
    )
    for command in (generate, check):
        add_options(command, [DashboardsConfig])
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    arguments = _parser().parse_args(argv)
    try:
        config = resolve(DashboardsConfig, arguments, load_file(arguments.config))
    except OptionError as error:
        print(f"aiobs dashboards: {error}", file=sys.stderr)
        return 2
    try:
        files = render(config=config)
    except ImportError as error:
        print(
            f"aiobs dashboards: {error}; install the extra: pip install 'aiobs[dashboards]'",
            file=sys.stderr,
        )
        return 2
    if arguments.command == "generate":
        for path in write_files(arguments.out, files):
            print(path)
        return 0
    stale = stale_files(arguments.dir, files)
    for path in stale:
        print(f"stale: {path}", file=sys.stderr)
    if stale:
        print("regenerate: aiobs dashboards generate --out dashboards", file=sys.stderr)
        return 1
    return 0
