"""The ``aiobs`` command."""

from __future__ import annotations

import argparse
import importlib
import json
import sys
from collections.abc import Sequence
from pathlib import Path

from aiobs._settings import ConfigError, Settings
from aiobs.ops.docs import metrics_markdown

# Commands whose module parses its own arguments: ``main(argv) -> int`` in that module.
DELEGATED = {
    "dashboards": (
        "aiobs.ops.dashboards.generator",
        "generate or check the Grafana dashboards (grafanalib)",
    ),
    "rules": ("aiobs.ops.rules.generator", "export the Prometheus recording and alerting rules"),
    "deploy": ("aiobs.ops.deploy", "generate or check the generated Kubernetes manifests"),
}


def main(argv: Sequence[str] | None = None) -> int:
    arguments_given = list(sys.argv[1:] if argv is None else argv)
    if arguments_given and arguments_given[0] in DELEGATED:
        # Everything after the command is the module's, ``--help`` included.
        module = importlib.import_module(DELEGATED[arguments_given[0]][0])
        status: int = module.main(arguments_given[1:])
        return status
    parser = argparse.ArgumentParser(prog="aiobs", description="aiobs command-line tools")
    commands = parser.add_subparsers(dest="command", required=True)
    config = commands.add_parser(
        "config", help="print the resolved settings (environment + AIOBS_CONFIG), secrets masked"
    )
    config.add_argument("--config-file", help="YAML file to read instead of $AIOBS_CONFIG")
    docs = commands.add_parser("docs", help="generate reference docs from the metric catalog")
    docs.add_argument("page", choices=["metrics"])
    docs.add_argument("--out", help="file to write (default: standard output)")
    for name, (_module, summary) in DELEGATED.items():
        commands.add_parser(name, help=summary)  # listed in --help; dispatched above
    arguments = parser.parse_args(arguments_given)

    if arguments.command == "config":
        try:
            settings = Settings.load({"config_file": arguments.config_file})
        except ConfigError as error:
            print(f"aiobs: {error}", file=sys.stderr)
            return 2
        json.dump(settings.masked(), sys.stdout, indent=2, sort_keys=True)
        sys.stdout.write("\n")
    elif arguments.command == "docs":
        text = metrics_markdown()
        if arguments.out:
            Path(arguments.out).write_text(text, encoding="utf-8")
        else:
            sys.stdout.write(text)
    return 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
