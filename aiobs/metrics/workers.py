"""How many worker processes serve the application: read from the server's own configuration
(uvicorn's ``--workers``, gunicorn's ``-w``) on the stack that is importing the application.

Several workers each keep their own counters, and a scrape reaches one of them: without
prometheus_client's multiprocess mode, ``rate()`` would see every switch between workers as
a counter reset. That mode can only be chosen before the server starts
(``PROMETHEUS_MULTIPROC_DIR``), so aiobs refuses to start without it rather than serve wrong
numbers.
"""

from __future__ import annotations

import sys
from dataclasses import dataclass
from types import FrameType
from typing import Any

from aiobs._settings import ConfigError

_MULTIPROCESS_DOC = "docs/multiprocess.md"
_SERVER_MODULES = ("uvicorn.", "uvicorn_worker", "gunicorn.")


@dataclass(frozen=True)
class Workers:
    server: str
    count: int


def server_workers(frame: FrameType | None = None) -> Workers | None:
    """The server and its worker count, when this process is a worker of uvicorn or gunicorn
    that is loading the application (or gunicorn's arbiter preloading it)."""
    frame = frame if frame is not None else sys._getframe(1)
    while frame is not None:
        owner = frame.f_locals.get("self")
        for candidate in (frame.f_locals.get("config"), owner):
            found = _workers_of(candidate)
            if found is not None:
                return found
        frame = frame.f_back
    return None


def _workers_of(value: Any) -> Workers | None:
    """Reads only objects of the servers' own modules (no attribute of anything else is
    touched: reading one could run its code). gunicorn's configuration comes first: its
    uvicorn worker class holds a uvicorn configuration of one worker too."""
    if not type(value).__module__.startswith(_SERVER_MODULES):
        return None
    gunicorn = getattr(value, "cfg", None)
    if type(gunicorn).__module__ == "gunicorn.config":
        workers = getattr(gunicorn, "workers", None)
        return Workers("gunicorn", workers) if isinstance(workers, int) else None
    uvicorn: Any = value
    if type(value).__module__ != "uvicorn.config":
        uvicorn = getattr(value, "config", None)
    if type(uvicorn).__module__ == "uvicorn.config" and isinstance(uvicorn.workers, int):
        # A reloading server runs one worker, whatever --workers says.
        return Workers("uvicorn", 1 if uvicorn.should_reload else uvicorn.workers)
    return None


def check_workers(workers: Workers | None, multiprocess_dir: str | None) -> None:
    """Refuse several workers without multiprocess mode, naming the fix."""
    if workers is None or workers.count <= 1 or multiprocess_dir:
        return
    raise ConfigError(
        f"{workers.server} runs {workers.count} worker processes but PROMETHEUS_MULTIPROC_DIR "
        "is not set: each scrape would see one worker's counters, which rate() reads as "
        "resets. Set PROMETHEUS_MULTIPROC_DIR to an empty directory in the environment before "
        f"the server starts (see {_MULTIPROCESS_DOC}), or run one worker per container."
    )
