"""``python -m demo_service``: serve the demo on HOST:PORT (default 127.0.0.1:8000)."""

from __future__ import annotations

import os

import uvicorn


def main() -> None:
    uvicorn.run(
        "demo_service.app:app",
        host=os.environ.get("HOST", "127.0.0.1"),
        port=int(os.environ.get("PORT", "8000")),
        log_config=None,  # aiobs owns logging: one JSON line per event
        access_log=False,  # aiobs writes one access line per request
    )


if __name__ == "__main__":
    main()
