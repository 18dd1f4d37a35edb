"""The implementation of :mod:`aiobs.multiprocess`, the public module: gunicorn hooks, the
compaction of dead workers' files, the collector that merges every worker's values, and the
checks of the multiprocess directory that start-up runs.

Files in the directory besides prometheus_client's: ``aiobs.lock`` (an ``flock``: compactions
hold it exclusively, aiobs's ``/metrics`` shared, so a scrape never sees a half-done
compaction), ``<type>_archive.db`` (the merged values of dead workers, written with
prometheus_client's own :class:`~prometheus_client.mmap_dict.MmapedDict`) and, for a moment
during a compaction, ``<type>_archive.db.tmp`` and ``<type>_archive.db.journal``.
"""

from __future__ import annotations

import glob
import json
import math
import os
import re
import struct
import sys
import time
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass, field
from typing import Any, Protocol

from prometheus_client.metrics_core import Metric
from prometheus_client.mmap_dict import MmapedDict
from prometheus_client.multiprocess import MultiProcessCollector, mark_process_dead
from prometheus_client.samples import Sample
from prometheus_client.utils import floatToGoString

from aiobs._settings import ConfigError

__all__ = [
    "MergedCollector",
    "child_exit",
    "compact_dead_workers",
    "on_starting",
    "prepare_directory",
]

MULTIPROCESS_VARIABLE = "PROMETHEUS_MULTIPROC_DIR"
"""The variable prometheus_client reads its multiprocess directory from, at import time."""
LOCK_FILE = "aiobs.lock"
"""The lock file in the multiprocess directory (not a ``.db`` file: never read as metrics)."""
ARCHIVE = "archive"
"""Stands where the pid stands in the name of an archive file: ``counter_archive.db``."""
COMPACTION_TIMEOUT = 5.0
"""Seconds :func:`compact_dead_workers` waits for the directory lock by default."""
SCRAPE_TIMEOUT = 10.0
"""Seconds a scrape waits for a running compaction before it fails."""
HOOK_TIMEOUT = 2.0
"""Seconds the gunicorn arbiter waits for the directory lock before it leaves the compaction
to the next worker exit (it must get back to supervising its workers)."""

# Counters, histograms and summaries: an archive holds the sums over dead workers.
_ADDITIVE = frozenset({"counter", "histogram", "summary"})
# Gauges whose aggregate over all processes, dead ones included, one archive can stand for.
_AGGREGATED_GAUGES = {
    "gauge_sum": "sum",
    "gauge_min": "min",
    "gauge_max": "max",
    "gauge_mostrecent": "mostrecent",
}
_PID_FILE = re.compile(r"^(counter|histogram|summary|gauge_[a-z]+)_(\d+)\.db$")
_TEMPORARY_PATTERNS = ("*_archive.db.tmp", "*_archive.db.journal", "*_archive.db.journal.tmp")


# --- the directory ---------------------------------------------------------------------------
def check_multiprocess_dir(configured: str | None, environ: dict[str, str] | Any) -> None:
    """prometheus_client picks multiprocess mode from the environment at import time, so a
    directory set anywhere else would silently not be used."""
    if configured and environ.get(MULTIPROCESS_VARIABLE) != configured:
        raise ConfigError(
            f"multiprocess_dir: set it through {MULTIPROCESS_VARIABLE} before the process "
            "imports prometheus_client; prometheus_client reads only that variable"
        )
    if configured and not os.path.isdir(configured):
        raise ConfigError(f"{MULTIPROCESS_VARIABLE}={configured}: not a directory")
    if configured:
        require_file_locks(configured)


def require_file_locks(directory: str) -> None:
    """Multiprocess mode locks its directory with ``fcntl.flock``: raise :class:`ConfigError`
    where the platform has no ``fcntl`` (Windows), naming the variable that asked for it."""
    try:
        import fcntl  # noqa: F401 - only whether it imports
    except ImportError:
        raise ConfigError(
            f"{MULTIPROCESS_VARIABLE}={directory}: multiprocess mode needs POSIX file locks "
            f"(fcntl), which this platform ({sys.platform}) does not have; unset "
            f"{MULTIPROCESS_VARIABLE} to run one process"
        ) from None


def process_alive(pid: int) -> bool:
    """Whether a process with ``pid`` exists (signal 0 probes without sending anything)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def wipe_multiprocess_dir(directory: str) -> None:
    """Delete every metrics file in ``directory``; call once, before workers start."""
    for path in glob.glob(os.path.join(directory, "*.db")):
        os.remove(path)


# --- gunicorn server hooks -------------------------------------------------------------------
class _Log(Protocol):
    def info(self, msg: str, *args: object) -> None: ...

    def warning(self, msg: str, *args: object) -> None: ...

    def exception(self, msg: str, *args: object) -> None: ...


class _Server(Protocol):
    """What the hooks use of gunicorn's ``Arbiter``."""

    log: _Log


class _Worker(Protocol):
    """What the hooks use of gunicorn's ``Worker``."""

    pid: int


def on_starting(server: _Server) -> None:
    """gunicorn hook, run once in the arbiter before any worker forks: create
    ``PROMETHEUS_MULTIPROC_DIR`` and delete the metrics files a previous run left there.

    Without the variable it does nothing for one worker, and stops the start for several:
    each worker would then serve its own counters on ``/metrics``. A new arbiter started by a
    binary upgrade (``SIGUSR2``) keeps the files: the old arbiter's workers still run.
    """
    directory = os.environ.get(MULTIPROCESS_VARIABLE)
    if not directory:
        workers = getattr(server, "num_workers", 1)
        if isinstance(workers, int) and workers > 1:
            raise RuntimeError(
                f"aiobs: {workers} workers need {MULTIPROCESS_VARIABLE} set to an empty "
                "directory, or each worker serves only its own metrics on /metrics"
            )
        return
    if getattr(server, "master_pid", 0):  # re-executed by the running arbiter
        os.makedirs(directory, exist_ok=True)
        server.log.info("aiobs: multiprocess metrics in %s, kept across the upgrade", directory)
        return
    created = not os.path.isdir(directory)
    removed = prepare_directory(directory)
    if created:
        _give_to_workers(directory, server)
    server.log.info(
        "aiobs: multiprocess metrics in %s (%d files of a previous run removed)",
        directory,
        removed,
    )


def child_exit(server: _Server, worker: _Worker) -> None:
    """gunicorn hook, run in the arbiter after a worker exited: drop its live gauges and fold
    the files of dead workers into the archives (:func:`compact_dead_workers`).

    Never raises: a failure is logged and the next worker exit tries again.
    """
    directory = os.environ.get(MULTIPROCESS_VARIABLE)
    if not directory:
        return
    try:
        mark_process_dead(worker.pid, directory)  # type: ignore[no-untyped-call]
        compact_dead_workers(directory, timeout=HOOK_TIMEOUT)
    except TimeoutError as error:
        server.log.warning("aiobs: %s; the next worker exit compacts instead", error)
    except Exception:  # the arbiter must keep supervising; logged with the traceback
        server.log.exception("aiobs: compacting the metrics of worker %s failed", worker.pid)


def _give_to_workers(directory: str, server: _Server) -> None:
    """An arbiter started as root that runs its workers as another user (gunicorn ``user``,
    ``group``) hands them the directory it created, or they could not write their files."""
    config = getattr(server, "cfg", None)
    uid, gid = getattr(config, "uid", None), getattr(config, "gid", None)
    if os.geteuid() == 0 and isinstance(uid, int) and isinstance(gid, int) and uid != 0:
        os.chown(directory, uid, gid)


def prepare_directory(directory: str) -> int:
    """Create ``directory`` and delete every metrics file in it; call once, before any worker
    starts (never while workers run: their counters would restart from zero). Returns how many
    files were removed."""
    os.makedirs(directory, exist_ok=True)
    removed = len(glob.glob(os.path.join(directory, "*.db")))
    wipe_multiprocess_dir(directory)
    for pattern in _TEMPORARY_PATTERNS:
        for path in glob.glob(os.path.join(directory, pattern)):
            _remove(path)
            removed += 1
    return removed


# --- compaction ------------------------------------------------------------------------------
def compact_dead_workers(
    directory: str,
    *,
    alive: Callable[[int], bool] = process_alive,
    timeout: float = COMPACTION_TIMEOUT,
) -> list[int]:
    """Fold everything that workers no longer running left in ``directory`` into one archive
    file per metric type, and return their process ids.

    - counters, histograms, summaries: added into ``counter_archive.db`` etc.; the merged view
      on ``/metrics`` is unchanged (sums are exact: see :class:`MergedCollector`);
    - gauges in mode ``sum``, ``min``, ``max``, ``mostrecent`` (which by definition count dead
      processes too): reduced the same way into ``gauge_<mode>_archive.db``, the aggregate
      unchanged;
    - gauges in mode ``all`` (one series per pid, labelled ``pid``): removed, like the
      ``live*`` modes; a dead worker's series would otherwise stay forever;
    - gauges in the ``live*`` modes: removed (``mark_process_dead``).

    Safe from any process at any time, concurrently too: it runs under an exclusive
    ``flock`` of ``aiobs.lock`` in the directory, and commits each archive with one atomic
    rename, journalled so that a compaction killed halfway is finished by the next one.
    Raises :class:`TimeoutError` when another process held the lock for ``timeout`` seconds;
    nothing is lost then, the next call merges those files.
    """
    with _directory_lock(directory, exclusive=True, timeout=timeout):
        _recover(directory)
        files: dict[int, list[tuple[str, str]]] = {}
        for path in glob.glob(os.path.join(directory, "*.db")):
            match = _PID_FILE.match(os.path.basename(path))
            if match:
                files.setdefault(int(match.group(2)), []).append((match.group(1), path))
        me = os.getpid()
        dead = sorted(pid for pid in files if pid != me and not alive(pid))
        by_prefix: dict[str, list[str]] = {}
        for pid in dead:
            for prefix, path in files[pid]:
                by_prefix.setdefault(prefix, []).append(path)
        for prefix, paths in sorted(by_prefix.items()):
            if prefix in _ADDITIVE or prefix in _AGGREGATED_GAUGES:
                _merge_into_archive(directory, prefix, paths)
            elif prefix.startswith("gauge_"):  # all and the live modes
                for path in paths:
                    _remove(path)
        return dead


def _merge_into_archive(directory: str, prefix: str, sources: list[str]) -> None:
    archive = os.path.join(directory, f"{prefix}_{ARCHIVE}.db")
    staged = archive + ".tmp"
    journal = archive + ".journal"
    inputs = [archive, *sources] if os.path.exists(archive) else sources
    merged = _add(inputs) if prefix in _ADDITIVE else _reduce(inputs, _AGGREGATED_GAUGES[prefix])
    _remove(staged)
    target = MmapedDict(staged)  # type: ignore[no-untyped-call]
    try:
        for key, (value, timestamp) in merged.items():
            target.write_value(key, value, timestamp)  # type: ignore[no-untyped-call]
    finally:
        target.close()  # type: ignore[no-untyped-call]
    # The journal names the staged file by its inode: once the rename below happened, the
    # archive has that inode, and the sources it lists are inside the archive.
    record = {"inode": os.stat(staged).st_ino, "sources": [os.path.basename(s) for s in sources]}
    with open(journal + ".tmp", "w", encoding="utf-8") as stream:
        json.dump(record, stream)
    os.replace(journal + ".tmp", journal)
    _commit(staged, archive)
    for source in sources:
        _remove(source)
    _remove(journal)


def _commit(staged: str, archive: str) -> None:
    """The commit point of a compaction: one atomic rename."""
    os.replace(staged, archive)


def _add(paths: Iterable[str]) -> dict[str, tuple[float, float]]:
    """Per key, the sum of the values of ``paths``, as a pair ``(sum, remainder)``: the sum
    rounded, and what rounding left out, which aiobs keeps in the (otherwise unused) timestamp
    slot of an archive's entries. Re-adding the pair keeps later sums exact."""
    terms: dict[str, list[float]] = {}
    for path in paths:
        archive = _is_archive(path)
        for key, value, timestamp in _entries(path):
            values = terms.setdefault(key, [])
            values.append(value)
            if archive:
                values.append(timestamp)
    merged = {}
    for key, values in terms.items():
        total = math.fsum(values)
        merged[key] = (total, math.fsum([*values, -total]))
    return merged


def _reduce(paths: Iterable[str], mode: str) -> dict[str, tuple[float, float]]:
    """Per key, the one ``(value, timestamp)`` that stands for all of ``paths`` in ``mode``."""
    merged: dict[str, tuple[float, float]] = {}
    sums: dict[str, list[float]] = {}
    for path in paths:
        for key, value, timestamp in _entries(path):
            if mode == "sum":
                sums.setdefault(key, []).append(value)
                continue
            current = merged.get(key)
            if (
                current is None
                or (mode == "min" and value < current[0])
                or (mode == "max" and value > current[0])
                or (mode == "mostrecent" and timestamp > current[1])
            ):
                merged[key] = (value, timestamp)
    for key, values in sums.items():
        merged[key] = (math.fsum(values), 0.0)
    return merged


def _recover(directory: str) -> None:
    """Finish or forget what a compaction killed halfway left (lock held)."""
    for journal in glob.glob(os.path.join(directory, "*_archive.db.journal")):
        for name in _committed_sources(journal):
            _remove(os.path.join(directory, name))
        _remove(journal)
    for pattern in ("*_archive.db.tmp", "*_archive.db.journal.tmp"):
        for path in glob.glob(os.path.join(directory, pattern)):
            _remove(path)


def _committed_sources(journal: str) -> list[str]:
    """The source files a journal lists, when its archive was committed (else none)."""
    try:
        with open(journal, encoding="utf-8") as stream:
            record = json.load(stream)
        committed = os.stat(journal.removesuffix(".journal")).st_ino == record["inode"]
    except (OSError, ValueError, KeyError, TypeError):
        return []
    sources = record.get("sources") if committed else None
    if not isinstance(sources, list):
        return []
    return [name for name in sources if isinstance(name, str) and _PID_FILE.match(name)]


# --- the merged view -------------------------------------------------------------------------
class MergedCollector:
    """The collector ``/metrics`` renders in multiprocess mode: every worker's files and the
    archives, merged like prometheus_client's ``MultiProcessCollector`` does, read under a
    shared lock so that a compaction is seen entirely or not at all.

    Counters, histograms and summaries are added with :func:`math.fsum`, which rounds once,
    whatever the order of the files: a compaction (which only regroups the terms) never moves
    a sum, not even by the last bit that Prometheus' ``rate()`` would take for a reset.
    """

    def __init__(self, directory: str, timeout: float = SCRAPE_TIMEOUT) -> None:
        if not os.path.isdir(directory):
            raise ValueError(f"{MULTIPROCESS_VARIABLE}={directory}: not a directory")
        self._directory = directory
        self._timeout = timeout

    def collect(self) -> Iterable[Metric]:
        with _directory_lock(self._directory, exclusive=False, timeout=self._timeout):
            merged_away: set[str] = set()
            for journal in glob.glob(os.path.join(self._directory, "*_archive.db.journal")):
                merged_away.update(_committed_sources(journal))
            paths = sorted(
                path
                for path in glob.glob(os.path.join(self._directory, "*.db"))
                if os.path.basename(path) not in merged_away
            )
            gauges = [path for path in paths if os.path.basename(path).startswith("gauge_")]
            others = [path for path in paths if not os.path.basename(path).startswith("gauge_")]
            metrics: list[Metric] = list(
                MultiProcessCollector.merge(gauges, accumulate=True)  # type: ignore[no-untyped-call]
            )
            metrics.extend(_merge_additive(others))
        return metrics


@dataclass
class _Series:
    """The samples of one label set of one family, before adding."""

    buckets: dict[float, list[float]] = field(default_factory=dict)
    samples: dict[str, list[float]] = field(default_factory=dict)


def _merge_additive(paths: Iterable[str]) -> list[Metric]:
    families: dict[str, Metric] = {}
    series: dict[str, dict[tuple[tuple[str, str], ...], _Series]] = {}
    parsed: dict[str, tuple[str, str, tuple[tuple[str, str], ...], str]] = {}
    for path in paths:
        typ = os.path.basename(path).split("_", 1)[0]
        archive = _is_archive(path)
        for key, value, timestamp in _entries(path):
            entry = parsed.get(key)
            if entry is None:
                metric_name, sample_name, labels, help_text = json.loads(key)
                entry = parsed[key] = (
                    metric_name,
                    sample_name,
                    tuple(sorted(labels.items())),
                    help_text,
                )
            metric_name, sample_name, labels_key, help_text = entry
            if metric_name not in families:
                families[metric_name] = Metric(metric_name, help_text, typ)
                series[metric_name] = {}
            le = None
            if typ == "histogram":
                le = next((v for k, v in labels_key if k == "le"), None)
                if le is not None:
                    labels_key = tuple(item for item in labels_key if item[0] != "le")
            group = series[metric_name].setdefault(labels_key, _Series())
            if le is not None:
                terms = group.buckets.setdefault(float(le), [])
            else:
                terms = group.samples.setdefault(sample_name, [])
            terms.append(value)
            if archive:
                terms.append(timestamp)
    for metric_name, family in families.items():
        for labels_key, group in series[metric_name].items():
            labels = dict(labels_key)
            if group.buckets:
                cumulative = 0.0
                for bound, terms in sorted(group.buckets.items()):
                    cumulative += math.fsum(terms)
                    family.samples.append(
                        Sample(
                            f"{metric_name}_bucket",
                            {**labels, "le": floatToGoString(bound)},  # type: ignore[no-untyped-call]
                            cumulative,
                        )
                    )
                family.samples.append(Sample(f"{metric_name}_count", labels, cumulative))
            for sample_name, terms in group.samples.items():
                family.samples.append(Sample(sample_name, labels, math.fsum(terms)))
    return list(families.values())


# --- files and the lock ----------------------------------------------------------------------
@contextmanager
def _directory_lock(directory: str, *, exclusive: bool, timeout: float) -> Iterator[None]:
    """Hold ``aiobs.lock`` in ``directory``: exclusively to compact, shared to read.

    Opened read-only (``flock`` needs no more), so that a lock file the arbiter created as
    root serves workers that run as another user too. Imports ``fcntl`` here, not at the top,
    so that ``import aiobs`` works where it does not exist."""
    require_file_locks(directory)
    import fcntl

    descriptor = os.open(os.path.join(directory, LOCK_FILE), os.O_RDONLY | os.O_CREAT, 0o644)
    try:
        operation = (fcntl.LOCK_EX if exclusive else fcntl.LOCK_SH) | fcntl.LOCK_NB
        deadline = time.monotonic() + timeout
        while True:
            try:
                fcntl.flock(descriptor, operation)
                break
            except BlockingIOError:
                if time.monotonic() >= deadline:
                    raise TimeoutError(
                        f"{os.path.join(directory, LOCK_FILE)}: held by another process "
                        f"for more than {timeout:g} s"
                    ) from None
                time.sleep(0.002)
        yield
    finally:
        os.close(descriptor)  # releases the lock


def _entries(path: str) -> Iterator[tuple[str, float, float]]:
    """``(key, value, timestamp)`` of each entry of a prometheus_client file; none if the
    file went away (only a compaction removes files, and readers hold the lock) or is still
    empty."""
    try:
        entries = MmapedDict.read_all_values_from_file(path)  # type: ignore[no-untyped-call]
    except FileNotFoundError:
        return
    except struct.error:  # created this instant, its header not written yet: nothing in it
        return
    for key, value, timestamp, _ in entries:
        yield key, value, timestamp


def _is_archive(path: str) -> bool:
    return os.path.basename(path).endswith(f"_{ARCHIVE}.db")


def _remove(path: str) -> None:
    with suppress(FileNotFoundError):
        os.remove(path)
