"""Several worker processes, one view of the metrics: gunicorn hooks and dead-worker compaction.

With ``PROMETHEUS_MULTIPROC_DIR`` set (before the process imports prometheus_client), every
worker writes its values to its own files in that directory (``counter_<pid>.db``,
``histogram_<pid>.db``, ``gauge_livesum_<pid>.db``...) and ``/metrics``, served by any worker,
merges all of them. This module keeps that directory right over the life of the server.

gunicorn (the arbiter runs the hooks)::

    PROMETHEUS_MULTIPROC_DIR=/tmp/aiobs-metrics \\
        gunicorn -c python:aiobs.multiprocess -k uvicorn.workers.UvicornWorker -w 4 app:app

or, with a configuration file of your own::

    # gunicorn.conf.py
    from aiobs.multiprocess import child_exit, on_starting  # noqa: F401 - gunicorn reads them

    workers = 4
    worker_class = "uvicorn.workers.UvicornWorker"
    max_requests = 1000

- :func:`on_starting` creates the directory and deletes the files a previous run left, once,
  before the first worker forks (not on ``SIGHUP`` reloads: the counters carry on).
- :func:`child_exit` runs each time a worker exits: it removes the dead worker's live gauges
  (``http_requests_in_flight`` stops counting its requests) and calls
  :func:`compact_dead_workers`, so that recycled workers (``max_requests``) leave one archive
  file per metric type behind instead of a few files each: the directory, and the time a
  scrape takes, stay bounded while the counters never go backwards.

``uvicorn --workers N`` has no hooks: empty the directory before the server starts, in the
container's entrypoint (``rm -rf "$PROMETHEUS_MULTIPROC_DIR"/*``). Every worker sweeps the live
gauges of dead workers when it starts; :func:`compact_dead_workers` may be called there too
(it is safe in any process, at any time: compactions take a lock on the directory).

With ``AIOBS_METRICS_PORT`` every worker binds the port (``SO_REUSEPORT``) and serves the
merged view, as the in-app ``/metrics`` of any worker does. Exemplars are not available in
multiprocess mode (prometheus_client keeps none in its files).

The files in the directory, and how compactions keep them consistent, are described in
:mod:`aiobs.metrics.multiprocess`, the implementation this module re-exports.
"""

from aiobs.metrics.multiprocess import (
    MergedCollector,
    child_exit,
    compact_dead_workers,
    on_starting,
    prepare_directory,
)

__all__ = [
    "MergedCollector",
    "child_exit",
    "compact_dead_workers",
    "on_starting",
    "prepare_directory",
]
