"""Multiprocess mode: compaction of dead workers' files, the gunicorn hooks, and a real
gunicorn server with recycled uvicorn workers.

prometheus_client chooses multiprocess mode when it is imported, so the metric files are
written by child processes started with ``PROMETHEUS_MULTIPROC_DIR`` set; this process only
reads and compacts them.
"""

from __future__ import annotations

import contextlib
import glob
import itertools
import json
import math
import os
import signal
import socket
import subprocess
import sys
import textwrap
import threading
import time
import types
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import httpx
import pytest
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.multiprocess import MultiProcessCollector
from prometheus_client.parser import text_string_to_metric_families

from aiobs import multiprocess
from aiobs.metrics import multiprocess as implementation
from aiobs.multiprocess import MergedCollector, compact_dead_workers

# --- child processes that write metric files --------------------------------------------------
CHILD = textwrap.dedent(
    """
    import json, os, sys
    from prometheus_client import Counter, Gauge, Histogram, Summary

    spec = json.loads(sys.argv[1])
    jobs = Counter("jobs", "Jobs done.", ["kind"])
    latency = Histogram("latency_seconds", "Latency.", ["route"], buckets=(0.25, 0.5, 1.0))
    payload = Summary("payload_bytes", "Payload size.")
    for kind, amount in spec.get("jobs", {}).items():
        jobs.labels(kind).inc(amount)
    for value in spec.get("observations", []):
        latency.labels("/predict").observe(value)
        payload.observe(value)
    for mode, value in spec.get("gauges", {}).items():
        Gauge("level_" + mode, "Level, " + mode + ".", multiprocess_mode=mode).set(value)
    print(os.getpid(), flush=True)
    if spec.get("stay"):
        sys.stdin.readline()
    """
)
GAUGE_MODES = (
    "all",
    "liveall",
    "sum",
    "livesum",
    "min",
    "livemin",
    "max",
    "livemax",
    "mostrecent",
    "livemostrecent",
)


REPO_ROOT = Path(__file__).resolve().parents[1]


def child_env(directory: Path) -> dict[str, str]:
    """This process's environment without aiobs or OpenTelemetry settings, the repository
    importable, and the multiprocess directory set."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("AIOBS_", "OTEL_"))}
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO_ROOT), env.get("PYTHONPATH")]))
    env["PYTHONDONTWRITEBYTECODE"] = "1"
    env["PROMETHEUS_MULTIPROC_DIR"] = str(directory)
    return env


def run_dead_child(directory: Path, spec: dict[str, Any]) -> int:
    """A process that records ``spec`` and exits (reaped: its pid is dead on return)."""
    done = subprocess.run(
        [sys.executable, "-c", CHILD, json.dumps(spec)],
        env=child_env(directory),
        capture_output=True,
        text=True,
        timeout=30,
        check=True,
    )
    return int(done.stdout.strip())


class LiveChild:
    """A process that records ``spec`` and keeps running until :meth:`stop`."""

    def __init__(self, directory: Path, spec: dict[str, Any]) -> None:
        self.process = subprocess.Popen(
            [sys.executable, "-c", CHILD, json.dumps({**spec, "stay": True})],
            env=child_env(directory),
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )
        assert self.process.stdout is not None
        self.pid = int(self.process.stdout.readline().strip())

    def stop(self) -> None:
        if self.process.poll() is None:
            assert self.process.stdin is not None
            self.process.stdin.close()
            self.process.wait(10)
        if self.process.stdout is not None:
            self.process.stdout.close()


@pytest.fixture
def live_children() -> Iterator[list[LiveChild]]:
    children: list[LiveChild] = []
    yield children
    for child in children:
        try:
            child.stop()
        except Exception:
            child.process.kill()
            child.process.wait(10)


# --- reading the merged view -------------------------------------------------------------------
Samples = dict[tuple[str, tuple[tuple[str, str], ...]], float]


def view(collector: Any) -> Samples:
    return {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in collector.collect()
        for sample in family.samples
    }


def stock_view(directory: Path) -> Samples:
    return view(MultiProcessCollector(None, path=str(directory)))


def merged_view(directory: Path) -> Samples:
    return view(MergedCollector(str(directory)))


def db_files(directory: Path) -> list[str]:
    return sorted(os.path.basename(path) for path in glob.glob(str(directory / "*.db")))


def files_of(directory: Path, pid: int) -> list[str]:
    return [name for name in db_files(directory) if name.endswith(f"_{pid}.db")]


def expected_additive(specs: list[dict[str, Any]]) -> Samples:
    """What counters, histogram and summary must show for ``specs``, computed here."""
    jobs: dict[str, float] = {}
    observations = [value for spec in specs for value in spec.get("observations", [])]
    for spec in specs:
        for kind, amount in spec.get("jobs", {}).items():
            jobs[kind] = jobs.get(kind, 0) + amount
    expected: Samples = {
        ("jobs_total", (("kind", kind),)): float(total) for kind, total in jobs.items()
    }
    route = (("route", "/predict"),)
    for bound in ("0.25", "0.5", "1.0", "+Inf"):
        count = sum(1 for value in observations if value <= float(bound))
        expected[("latency_seconds_bucket", (("le", bound), *route))] = float(count)
    expected[("latency_seconds_count", route)] = float(len(observations))
    expected[("latency_seconds_sum", route)] = math.fsum(observations)
    expected[("payload_bytes_count", ())] = float(len(observations))
    expected[("payload_bytes_sum", ())] = math.fsum(observations)
    return expected


def additive_part(samples: Samples) -> Samples:
    return {
        key: value
        for key, value in samples.items()
        if key[0].startswith(("jobs", "latency", "payload"))
    }


# Exactly representable observations: every way of adding them gives the same sum.
SPECS = [
    {"jobs": {"a": 3, "b": 1}, "observations": [0.125, 0.5, 2.0]},
    {"jobs": {"a": 5}, "observations": [0.25, 0.75]},
    {"jobs": {"b": 7, "c": 2}, "observations": []},
    {"jobs": {"a": 1}, "observations": [1.0, 0.0625, 4.5, 0.5]},
]


# --- compaction --------------------------------------------------------------------------------
def test_compaction_keeps_exact_sums_leaves_live_files_and_bounds_file_count(
    tmp_path: Path, live_children: list[LiveChild]
) -> None:
    live_spec = {"jobs": {"a": 100}, "observations": [0.5]}
    live = LiveChild(tmp_path, live_spec)
    live_children.append(live)
    dead = [run_dead_child(tmp_path, spec) for spec in SPECS]
    live_files = {name: (tmp_path / name).read_bytes() for name in files_of(tmp_path, live.pid)}
    before = stock_view(tmp_path)
    files_before = db_files(tmp_path)

    assert additive_part(before) == expected_additive([*SPECS, live_spec])
    assert additive_part(merged_view(tmp_path)) == additive_part(before)

    assert compact_dead_workers(str(tmp_path)) == sorted(dead)

    assert additive_part(stock_view(tmp_path)) == additive_part(before)
    assert additive_part(merged_view(tmp_path)) == additive_part(before)
    for pid in dead:
        assert files_of(tmp_path, pid) == []
    assert {name: (tmp_path / name).read_bytes() for name in files_of(tmp_path, live.pid)} == (
        live_files
    )
    for archive in ("counter_archive.db", "histogram_archive.db", "summary_archive.db"):
        assert archive in db_files(tmp_path)
    assert len(db_files(tmp_path)) < len(files_before)

    # More workers die: their values join the archives, still exact.
    more = [{"jobs": {"a": 2, "d": 9}, "observations": [0.375] * 3} for _ in range(3)]
    for spec in more:
        run_dead_child(tmp_path, spec)
    compact_dead_workers(str(tmp_path))
    assert additive_part(merged_view(tmp_path)) == expected_additive([*SPECS, *more, live_spec])

    # The last worker stops: only the archives stay, whatever the number of dead workers.
    live.stop()
    compact_dead_workers(str(tmp_path))
    remaining = db_files(tmp_path)
    assert all("_archive" in name for name in remaining), remaining
    assert len(remaining) == len({name.split("_archive")[0] for name in remaining})
    expected = expected_additive([*SPECS, *more, live_spec])
    assert additive_part(merged_view(tmp_path)) == expected
    assert additive_part(stock_view(tmp_path)) == expected


def test_compaction_never_moves_a_float_sum_by_a_bit(tmp_path: Path) -> None:
    """Sums of floats: regrouping the terms must not change the rounded total (Prometheus
    reads a drop of one ulp in ``_sum`` as a counter reset). 2**53 + 1 rounds to 2**53: an
    archive that kept only the rounded sum would lose the 1 that a later 1 makes visible."""
    values = [2.0**53, 1.0, 1.0, 0.1, 1 / 3, 2 / 7, 1.0, 0.7]
    batches = [values[:2], values[2:3], values[3:6], values[6:]]
    seen: list[float] = []
    for batch in batches:
        for value in batch:
            run_dead_child(tmp_path, {"observations": [value]})
        seen.extend(batch)
        before = additive_part(merged_view(tmp_path))
        assert before[("latency_seconds_sum", (("route", "/predict"),))] == math.fsum(seen)
        compact_dead_workers(str(tmp_path))
        assert additive_part(merged_view(tmp_path)) == before
    assert additive_part(merged_view(tmp_path)) == expected_additive([{"observations": values}])
    # Readers that do not know aiobs's archives see the same numbers within rounding.
    stock = additive_part(stock_view(tmp_path))
    for key, value in additive_part(merged_view(tmp_path)).items():
        assert math.isclose(stock[key], value, rel_tol=1e-15), key


def test_gauges_of_dead_workers(tmp_path: Path, live_children: list[LiveChild]) -> None:
    live = LiveChild(tmp_path, {"gauges": {mode: 5.0 for mode in GAUGE_MODES}})
    live_children.append(live)
    dead = []
    for value in (1.0, 9.0, 3.0):
        dead.append(run_dead_child(tmp_path, {"gauges": {mode: value for mode in GAUGE_MODES}}))
        time.sleep(0.01)  # mostrecent: the last child (value 3) wrote last
    before = stock_view(tmp_path)
    assert before[("level_sum", ())] == 18.0
    assert before[("level_livesum", ())] == 18.0  # dead workers not yet marked

    compact_dead_workers(str(tmp_path))

    after = stock_view(tmp_path)
    assert merged_view(tmp_path) == after
    # Aggregates over every process, dead ones included: unchanged.
    for mode, value in (("sum", 18.0), ("min", 1.0), ("max", 9.0), ("mostrecent", 3.0)):
        assert after[(f"level_{mode}", ())] == before[(f"level_{mode}", ())] == value, mode
    # Live modes and per-pid "all": the dead workers are gone.
    for mode in ("livesum", "livemin", "livemax", "livemostrecent"):
        assert after[(f"level_{mode}", ())] == 5.0, mode
    for mode in ("all", "liveall"):
        series = [labels for name, labels in after if name == f"level_{mode}"]
        assert series == [(("pid", str(live.pid)),)], mode
    for pid in dead:
        assert files_of(tmp_path, pid) == []


@pytest.mark.parametrize("crash_after_commit", [False, True])
def test_interrupted_compaction_is_invisible_and_finished_by_the_next(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, crash_after_commit: bool
) -> None:
    for spec in SPECS[:2]:
        run_dead_child(tmp_path, spec)
    compact_dead_workers(str(tmp_path))
    for spec in SPECS[2:]:
        run_dead_child(tmp_path, spec)
    expected = expected_additive(SPECS)
    assert additive_part(merged_view(tmp_path)) == expected

    real_commit = implementation._commit

    def crash(staged: str, archive: str) -> None:
        if crash_after_commit:
            real_commit(staged, archive)
        raise KeyboardInterrupt  # stands for a SIGKILL: nothing after this runs

    monkeypatch.setattr(implementation, "_commit", crash)
    with pytest.raises(KeyboardInterrupt):
        compact_dead_workers(str(tmp_path))
    monkeypatch.undo()
    assert glob.glob(str(tmp_path / "*.journal"))
    # A scrape in between counts every value once.
    assert additive_part(merged_view(tmp_path)) == expected

    compact_dead_workers(str(tmp_path))
    assert additive_part(merged_view(tmp_path)) == expected
    assert additive_part(stock_view(tmp_path)) == expected
    assert sorted(os.listdir(tmp_path)) == sorted(
        ["aiobs.lock", "counter_archive.db", "histogram_archive.db", "summary_archive.db"]
    )


def test_a_scrape_holds_compaction_off(tmp_path: Path) -> None:
    run_dead_child(tmp_path, SPECS[0])
    with implementation._directory_lock(str(tmp_path), exclusive=False, timeout=1):
        with pytest.raises(TimeoutError, match=r"aiobs\.lock"):
            compact_dead_workers(str(tmp_path), timeout=0.05)
        merged_view(tmp_path)  # readers share the lock
    assert compact_dead_workers(str(tmp_path), timeout=1)


def test_scrapes_during_compactions_never_see_counters_drop(tmp_path: Path) -> None:
    """Workers die and are compacted in one thread while another scrapes all along."""
    children = 16
    stop = threading.Event()
    errors: list[BaseException] = []

    def die_and_compact() -> None:
        try:
            for _ in range(children):
                run_dead_child(tmp_path, {"jobs": {"a": 1}, "observations": [0.1]})
                compact_dead_workers(str(tmp_path))
        except BaseException as error:
            errors.append(error)
        finally:
            stop.set()

    worker = threading.Thread(target=die_and_compact)
    worker.start()
    seen: list[float] = []
    while not stop.is_set():
        seen.append(merged_view(tmp_path).get(("jobs_total", (("kind", "a"),)), 0.0))
    worker.join()
    assert not errors, errors
    seen.append(merged_view(tmp_path)[("jobs_total", (("kind", "a"),))])
    assert len(seen) > children
    assert all(b >= a for a, b in itertools.pairwise(seen)), seen
    assert seen[-1] == children
    assert db_files(tmp_path) == [f"{t}_archive.db" for t in ("counter", "histogram", "summary")]


def test_merged_collector_renders_like_prometheus_client(tmp_path: Path) -> None:
    for spec in SPECS:
        run_dead_child(tmp_path, spec)
    run_dead_child(tmp_path, {"gauges": {"livesum": 2.0, "max": 4.0}})
    stock, merged = CollectorRegistry(), CollectorRegistry()
    MultiProcessCollector(stock, path=str(tmp_path))
    merged.register(MergedCollector(str(tmp_path)))

    def parsed(registry: CollectorRegistry) -> dict[str, Any]:
        text = generate_latest(registry).decode()
        return {
            family.name: (
                family.type,
                family.documentation,
                sorted((s.name, sorted(s.labels.items()), s.value) for s in family.samples),
            )
            for family in text_string_to_metric_families(text)
        }

    assert parsed(merged) == parsed(stock)
    compact_dead_workers(str(tmp_path))
    assert parsed(merged)["latency_seconds"] == parsed(stock)["latency_seconds"]


# --- the gunicorn hooks ------------------------------------------------------------------------
class FakeLog:
    def __init__(self) -> None:
        self.lines: list[tuple[str, str]] = []

    def info(self, msg: str, *args: object) -> None:
        self.lines.append(("info", msg % args))

    def warning(self, msg: str, *args: object) -> None:
        self.lines.append(("warning", msg % args))

    def exception(self, msg: str, *args: object) -> None:
        self.lines.append(("exception", msg % args))


class FakeServer:
    def __init__(self, num_workers: int = 2, master_pid: int = 0) -> None:
        self.log = FakeLog()
        self.num_workers = num_workers
        self.master_pid = master_pid  # non-zero in an arbiter re-executed by SIGUSR2


class FakeWorker:
    def __init__(self, pid: int) -> None:
        self.pid = pid


def test_gunicorn_reads_only_the_two_hooks_from_the_module() -> None:
    """``gunicorn -c python:aiobs.multiprocess`` sets every module-level name that is a
    setting; gunicorn also checks each hook's arity."""
    from gunicorn.config import Config

    config = Config()
    assert set(vars(multiprocess)) & set(config.settings) == {"on_starting", "child_exit"}
    config.set("on_starting", multiprocess.on_starting)
    config.set("child_exit", multiprocess.child_exit)


NO_FCNTL = textwrap.dedent(
    """
    import sys, tempfile
    sys.modules["fcntl"] = None  # as on Windows: importing fcntl fails
    import aiobs
    from prometheus_client import CollectorRegistry

    settings = aiobs.Settings.load({"service_name": "no-fcntl"}, environ={})
    obs = aiobs.Observability(settings, registry=CollectorRegistry(), environ={})
    with obs.inference("m"):
        pass
    obs.shutdown(timeout=1)
    directory = tempfile.mkdtemp()
    try:
        aiobs.Observability(
            settings.replace(multiprocess_dir=directory),
            registry=CollectorRegistry(),
            environ={"PROMETHEUS_MULTIPROC_DIR": directory},
        )
    except aiobs.ConfigError as error:
        print(error)
    else:
        sys.exit("multiprocess mode started without file locks")
    """
)


def test_without_fcntl_one_process_works_and_multiprocess_mode_says_why_not() -> None:
    """Where fcntl does not exist (Windows), aiobs imports and serves one process; multiprocess
    mode fails at start-up naming PROMETHEUS_MULTIPROC_DIR and the missing file locks."""
    child = subprocess.run(
        [sys.executable, "-c", NO_FCNTL], capture_output=True, text=True, timeout=60
    )
    assert child.returncode == 0, child.stderr
    assert "PROMETHEUS_MULTIPROC_DIR" in child.stdout
    assert "fcntl" in child.stdout


def test_on_starting_creates_and_wipes_the_directory(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    directory = tmp_path / "metrics"
    monkeypatch.setenv("PROMETHEUS_MULTIPROC_DIR", str(directory))
    server = FakeServer()
    multiprocess.on_starting(server)
    assert directory.is_dir()

    run_dead_child(directory, SPECS[0])
    (directory / "counter_archive.db.tmp").write_bytes(b"")
    (directory / "counter_archive.db.journal").write_text("{}")
    upgraded = FakeServer(master_pid=os.getpid())
    multiprocess.on_starting(upgraded)  # binary upgrade: the old workers still write there
    assert db_files(directory) != []
    multiprocess.on_starting(server)
    assert db_files(directory) == []
    assert not glob.glob(str(directory / "*archive*"))
    assert server.log.lines[-1][0] == "info"


@pytest.mark.skipif(os.geteuid() != 0, reason="only root can hand a directory to another user")
def test_on_starting_hands_the_directory_it_creates_to_the_workers_user(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    directory = tmp_path / "metrics"
    monkeypatch.setenv("PROMETHEUS_MULTIPROC_DIR", str(directory))
    server = FakeServer()
    server.cfg = types.SimpleNamespace(uid=65534, gid=65534)  # gunicorn --user nobody
    multiprocess.on_starting(server)
    assert (directory.stat().st_uid, directory.stat().st_gid) == (65534, 65534)


def test_on_starting_refuses_several_workers_without_a_directory(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.delenv("PROMETHEUS_MULTIPROC_DIR", raising=False)
    with pytest.raises(RuntimeError, match="PROMETHEUS_MULTIPROC_DIR"):
        multiprocess.on_starting(FakeServer(num_workers=2))
    multiprocess.on_starting(FakeServer(num_workers=1))


def test_child_exit_marks_dead_compacts_and_never_raises(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("PROMETHEUS_MULTIPROC_DIR", str(tmp_path))
    pid = run_dead_child(tmp_path, {**SPECS[0], "gauges": {"livesum": 1.0}})
    server = FakeServer()
    multiprocess.child_exit(server, FakeWorker(pid))
    assert files_of(tmp_path, pid) == []
    assert additive_part(merged_view(tmp_path)) == expected_additive([SPECS[0]])
    assert server.log.lines == []

    with implementation._directory_lock(str(tmp_path), exclusive=False, timeout=1):
        monkeypatch.setattr(implementation, "HOOK_TIMEOUT", 0.05)
        multiprocess.child_exit(server, FakeWorker(pid))
    assert server.log.lines[-1][0] == "warning"

    monkeypatch.setenv("PROMETHEUS_MULTIPROC_DIR", str(tmp_path / "missing"))
    multiprocess.child_exit(server, FakeWorker(pid))
    assert server.log.lines[-1][0] == "exception"


# --- gunicorn with recycled uvicorn workers ----------------------------------------------------
APP = textwrap.dedent(
    """
    import asyncio, os
    from fastapi import FastAPI
    import aiobs

    app = FastAPI()
    aiobs.instrument(app, service_name="multiprocess-test")

    @app.get("/work")
    async def work() -> dict:
        # uvicorn checks max_requests every 0.1 s: a little latency makes workers recycle
        # every ~20 requests, as they do under real load.
        await asyncio.sleep(0.02)
        return {"pid": os.getpid()}

    @app.get("/slow")
    async def slow() -> dict:
        with open(os.environ["SLOW_PID_FILE"], "w") as stream:
            stream.write(str(os.getpid()))
        await asyncio.sleep(60)
        return {}
    """
)
GUNICORN_CONFIG = textwrap.dedent(
    """
    from aiobs.multiprocess import child_exit, on_starting  # noqa: F401

    graceful_timeout = 5
    control_socket_disable = True  # gunicorn 27+ would otherwise create ~/.gunicorn/
    """
)
REQUESTS = 150
MAX_REQUESTS = 20


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def running(pid: int) -> bool:
    """Alive and not a zombie."""
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        return False
    return state != "Z"


def scrape(client: httpx.Client, base: str) -> dict[str, float]:
    # A scrape may reach a worker as it is recycled, as the load does: sent again.
    text = get_with_retries(client, f"{base}/metrics", time.monotonic() + 10).text
    totals: dict[str, float] = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            totals[sample.name] = totals.get(sample.name, 0.0) + sample.value
    return totals


def get_with_retries(client: httpx.Client, url: str, deadline: float) -> httpx.Response:
    """A recycled worker closes connections it accepted but had not read a request from:
    those requests never reached the app, and are sent again."""
    while True:
        try:
            return client.get(url, timeout=15).raise_for_status()
        except httpx.TransportError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.02)


def wait_for(condition: Any, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.05)


@pytest.mark.slow
@pytest.mark.timeout(90)
def test_gunicorn_recycled_uvicorn_workers(tmp_path: Path) -> None:
    started = time.monotonic()
    directory = tmp_path / "metrics"  # on_starting creates it
    (tmp_path / "mp_app.py").write_text(APP)
    config = tmp_path / "gunicorn_conf.py"
    config.write_text(GUNICORN_CONFIG)
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    env = child_env(directory)
    env.update(
        OTEL_SDK_DISABLED="true",
        AIOBS_ACCESS_LOG="false",
        AIOBS_LOG_LEVEL="WARNING",
        SLOW_PID_FILE=str(tmp_path / "slow.pid"),
    )
    log_path = tmp_path / "gunicorn.log"
    with open(log_path, "wb") as log:
        server = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "gunicorn",
                "-c",
                str(config),
                "-k",
                "uvicorn.workers.UvicornWorker",
                "-w",
                "2",
                "--max-requests",
                str(MAX_REQUESTS),
                "--max-requests-jitter",
                "0",
                "-b",
                f"127.0.0.1:{port}",
                "mp_app:app",
            ],
            cwd=tmp_path,
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    worker_pids: set[int] = set()
    try:
        with httpx.Client(limits=httpx.Limits(max_keepalive_connections=0)) as client:
            deadline = time.monotonic() + 20
            get_with_retries(client, f"{base}/health/live", deadline)

            # A worker killed in the middle of a request: its in-flight gauge must go.
            def slow() -> None:
                with contextlib.suppress(httpx.HTTPError):
                    client.get(f"{base}/slow", timeout=30)

            slow_request = threading.Thread(target=slow)
            slow_request.start()
            wait_for(
                lambda: (
                    (tmp_path / "slow.pid").exists()
                    and scrape(client, base).get("http_requests_in_flight") == 1.0
                ),
                10,
                "the slow request to be in flight",
            )
            slow_pid = int((tmp_path / "slow.pid").read_text())
            worker_pids.add(slow_pid)
            os.kill(slow_pid, signal.SIGKILL)
            slow_request.join(10)
            wait_for(
                lambda: scrape(client, base).get("http_requests_in_flight") == 0.0,
                10,
                "the killed worker's in-flight request to be forgotten",
            )

            # Load, scraped all along: recycled workers must never make the counter drop.
            served: list[int] = []
            totals: list[float] = []
            file_counts: list[int] = []
            load_deadline = time.monotonic() + 40

            def work(_: int) -> None:
                response = get_with_retries(client, f"{base}/work", load_deadline)
                served.append(response.json()["pid"])

            with ThreadPoolExecutor(2) as pool:
                load = [pool.submit(work, i) for i in range(REQUESTS)]
                while not all(future.done() for future in load):
                    totals.append(scrape(client, base).get("http_requests_total", 0.0))
                    file_counts.append(len(glob.glob(str(directory / "*.db"))))
                    time.sleep(0.1)
                for future in load:
                    future.result()
            worker_pids.update(served)

            assert len(served) == REQUESTS
            assert len(set(served)) >= 5, f"workers were not recycled: {set(served)}"
            assert len(totals) >= 5
            assert all(b >= a for a, b in itertools.pairwise(totals)), totals
            wait_for(
                lambda: scrape(client, base).get("http_requests_total") == REQUESTS,
                10,
                f"http_requests_total to reach {REQUESTS}",
            )
            final = scrape(client, base)
            assert final["http_requests_total"] == REQUESTS
            assert final["http_request_duration_seconds_count"] == REQUESTS
            assert final["http_requests_in_flight"] == 0.0
            assert max(file_counts) < 20, file_counts

            def dead_workers_swept() -> bool:
                names = [os.path.basename(p) for p in glob.glob(str(directory / "*.db"))]
                pids = {int(n.rsplit("_", 1)[1][:-3]) for n in names if "_archive" not in n}
                return all(running(pid) for pid in pids)

            wait_for(dead_workers_swept, 10, "the files of dead workers to be compacted")
            assert len(glob.glob(str(directory / "*.db"))) < 20
            assert not glob.glob(str(directory / "*.journal"))
    finally:
        if server.poll() is None:
            server.send_signal(signal.SIGTERM)
            try:
                server.wait(15)
            except subprocess.TimeoutExpired:
                os.killpg(server.pid, signal.SIGKILL)
                server.wait(10)
    log_text = log_path.read_text(errors="replace")
    assert server.returncode == 0, log_text[-3000:]
    wait_for(lambda: not any(running(pid) for pid in worker_pids), 10, "workers to exit")
    assert "Traceback" not in log_text, log_text[-3000:]
    assert time.monotonic() - started < 60


def test_doc_states_the_mode_of_every_gauge_of_the_catalog() -> None:
    from aiobs import catalog

    doc = (REPO_ROOT / "docs" / "multiprocess.md").read_text()
    rows = [line for line in doc.splitlines() if line.startswith("| `")]
    for metric in catalog.METRICS:
        if metric.kind != "gauge" or metric.name.startswith("ai_gpu_"):
            continue
        row = next((row for row in rows if f"`{metric.name}`" in row), None)
        assert row is not None, f"{metric.name} is missing from docs/multiprocess.md"
        assert f"| `{metric.multiprocess_mode}` |" in row, (metric.name, row)


INFERENCE_WORKER = textwrap.dedent(
    """
    import json, os, sys
    from aiobs import Observability, Settings

    spec = json.loads(sys.argv[1])
    obs = Observability(Settings.load({"gpu_metrics": False}))
    for _ in range(spec["calls"]):
        with obs.inference("resnet50", "v1", batch_size=4) as rec:
            with rec.stage("compute"):
                pass
            rec.observe_confidence([0.9, 0.4])
    obs.set_queue_depth("resnet50", spec["depth"])
    obs.model_loaded("resnet50", "v1", runtime="onnxruntime", device="cpu", load_seconds=1.5)
    print(os.getpid(), flush=True)
    if spec.get("stay"):
        sys.stdin.readline()
    """
)


def test_inference_metrics_merge_across_workers(tmp_path: Path) -> None:
    """With several workers the ai_* counters and histograms add up over live and dead
    workers, queue depth sums live workers only, and model info does not multiply."""
    live = subprocess.Popen(
        [sys.executable, "-c", INFERENCE_WORKER, json.dumps({"calls": 3, "depth": 5, "stay": 1})],
        env=child_env(tmp_path),
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert live.stdout is not None
        live.stdout.readline()
        subprocess.run(
            [sys.executable, "-c", INFERENCE_WORKER, json.dumps({"calls": 4, "depth": 7})],
            env=child_env(tmp_path),
            capture_output=True,
            timeout=60,
            check=True,
        )
        compact_dead_workers(str(tmp_path))  # what gunicorn's child_exit hook does
        registry = CollectorRegistry()
        registry.register(MergedCollector(str(tmp_path)))
        value = registry.get_sample_value
        labels = {"model": "resnet50", "model_version": "v1"}
        assert value("ai_inference_total", labels) == 7
        assert value("ai_inference_batch_size_sum", labels) == 28
        assert value("ai_prediction_confidence_count", labels) == 14
        stage = {**labels, "stage": "compute"}
        assert value("ai_inference_stage_duration_seconds_count", stage) == 7
        assert value("ai_inference_queue_depth", {"model": "resnet50"}) == 5
        assert value("ai_inference_in_flight", {"model": "resnet50"}) == 0
        info = {**labels, "runtime": "onnxruntime", "device": "cpu"}
        assert value("ai_model_info", info) == 1
        assert value("ai_model_cache_size") == 1
    finally:
        assert live.stdin is not None
        live.stdin.close()
        live.wait(10)
        if live.stdout is not None:
            live.stdout.close()
