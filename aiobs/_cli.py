"""The ``aiobs`` command."""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from pathlib import Path

from aiobs._docs import metrics_markdown
from aiobs._settings import ConfigError, Settings


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="aiobs", description="aiobs command-line tools")
    commands = parser.add_subparsers(dest="command", required=True)
    config = commands.add_parser(
        "config", help="print the resolved settings (environment + AIOBS_CONFIG), secrets masked"
    )
    config.add_argument("--config-file", help="YAML file to read instead of $AIOBS_CONFIG")
    docs = commands.add_parser("docs", help="generate reference docs from the metric catalog")
    docs.add_argument("page", choices=["metrics"])
    docs.add_argument("--out", help="file to write (default: standard output)")
    arguments = parser.parse_args(argv)

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
