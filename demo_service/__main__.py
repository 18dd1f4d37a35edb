"""``python -m demo_service``: serve the demo on HOST:PORT (default 127.0.0.1:8000).

Every setting comes from the environment (or the YAML file ``DEMO_CONFIG`` names); see
``demo_service/README.md``. A bad value stops start-up with a message naming it.
"""

from __future__ import annotations

import sys

import uvicorn

from aiobs import ConfigError
from demo_service.app import create_app
from demo_service.config import DemoConfigError, DemoSettings


def main() -> int:
    try:
        settings = DemoSettings.from_env()
        app = create_app(settings)
    except (DemoConfigError, ConfigError) as error:
        print(f"demo_service: {error}", file=sys.stderr)
        return 2
    uvicorn.run(
        app,
        host=settings.host,
        port=settings.port,
        log_config=None,  # aiobs owns logging: one JSON line per event
        access_log=False,  # aiobs writes one access line per request
        timeout_graceful_shutdown=10,
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
