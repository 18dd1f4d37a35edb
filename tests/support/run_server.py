"""``python -m tests.support.run_server APP HOST PORT``: uvicorn without its own logging
configuration or access log (aiobs owns both), on h11 whatever else is installed (httptools,
which the benchmarks' extra brings, refuses some hostile headers before the app sees them)."""

from __future__ import annotations

import sys

import uvicorn


def main() -> None:
    app, host, port = sys.argv[1], sys.argv[2], int(sys.argv[3])
    uvicorn.run(app, host=host, port=port, log_config=None, access_log=False, http="h11")


if __name__ == "__main__":
    main()
