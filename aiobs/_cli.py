"""The ``aiobs`` command."""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence

from aiobs._settings import ConfigError, Settings


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="aiobs", description="aiobs command-line tools")
    commands = parser.add_subparsers(dest="command", required=True)
    config = commands.add_parser(
        "config", help="print the resolved settings (environment + AIOBS_CONFIG), secrets masked"
    )
    config.add_argument("--config-file", help="YAML file to read instead of $AIOBS_CONFIG")
    arguments = parser.parse_args(argv)

    if arguments.command == "config":
        try:
            settings = Settings.load({"config_file": arguments.config_file})
        except ConfigError as error:
            print(f"aiobs: {error}", file=sys.stderr)
            return 2
        json.dump(settings.masked(), sys.stdout, indent=2, sort_keys=True)
        sys.stdout.write("\n")
    return 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
