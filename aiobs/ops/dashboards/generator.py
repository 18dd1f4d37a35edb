"""``aiobs dashboards generate --out DIR`` and ``aiobs dashboards check``: the Grafana
dashboards as code (grafanalib, the ``aiobs[dashboards]`` extra). Only the CLI imports this
module, lazily; the core library never imports grafanalib."""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

DEFAULT_JOB = "aiobs-demo"
DEFAULT_DATASOURCE = "Prometheus"
CHECKED_IN = Path("dashboards")
"""Where ``check`` looks by default: ``dashboards/`` of the current directory (a checkout)."""


def render(job: str = DEFAULT_JOB, datasource: str = DEFAULT_DATASOURCE) -> dict[str, str]:
    """File name -> JSON text (sorted keys, two-space indent, final newline) per dashboard."""
    from grafanalib import core
    from grafanalib._gen import DashboardEncoder

    from aiobs.ops.dashboards.defs import DASHBOARDS, TAGS
    from aiobs.ops.dashboards.panels import modernise, variables

    files = {}
    for uid, (title, description, panels) in DASHBOARDS.items():
        dashboard = core.Dashboard(
            title=title,
            uid=uid,
            description=description,
            tags=TAGS,
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
                    tags=TAGS,
                    asDropdown=True,
                    includeVars=True,
                    keepTime=True,
                )
            ],
        )
        encoded: Any = json.loads(json.dumps(dashboard.to_json_data(), cls=DashboardEncoder))
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
        command.add_argument(
            "--job",
            default=DEFAULT_JOB,
            help=f"default of the job variable (default {DEFAULT_JOB!r})",
        )
        command.add_argument(
            "--datasource",
            default=DEFAULT_DATASOURCE,
            help=f"default Prometheus datasource name (default {DEFAULT_DATASOURCE!r})",
        )
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    arguments = _parser().parse_args(argv)
    try:
        files = render(arguments.job, arguments.datasource)
    except ImportError as error:
        print(
            f"aiobs dashboards: {error}; install the extra: pip install 'aiobs[dashboards]'",
            file=sys.stderr,
        )
        return 2
    if arguments.command == "generate":
        arguments.out.mkdir(parents=True, exist_ok=True)
        for name, text in files.items():
            (arguments.out / name).write_text(text, encoding="utf-8")
            print(arguments.out / name)
        return 0
    stale = []
    for name, text in files.items():
        path = arguments.dir / name
        if not path.is_file() or path.read_text(encoding="utf-8") != text:
            stale.append(name)
    for name in stale:
        print(f"stale: {arguments.dir / name}", file=sys.stderr)
    if stale:
        print("regenerate: aiobs dashboards generate --out dashboards", file=sys.stderr)
        return 1
    return 0
