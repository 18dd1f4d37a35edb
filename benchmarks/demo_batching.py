"""What dynamic batching buys the demo service, against the model's own limit.

    .venv/bin/python benchmarks/demo_batching.py [--duration S] [--rounds R] [--concurrency C]

In one run it measures, on the CPU provider:

(a) the limit: onnxruntime in this process running batches of 32 back to back (images/s),
    with the service's session options; batches of 1 too, for reference;
(b) the service (``python -m demo_service`` on 127.0.0.1, access log and traces on as
    shipped) at concurrency C (default 32), one image per request, with batching on
    (MAX_BATCH_SIZE=32) and off (MAX_BATCH_SIZE=1), everything else the same. Load comes
    from ``wrk`` (one thread, C connections: it costs the 2 cores little); without ``wrk``
    from a Python asyncio client (more client CPU: lower numbers).

Both services run side by side (the idle one costs nothing) and each round measures raw, on
and off back to back, so that the three numbers of a round share the machine's conditions;
the ratios on/off and on/raw are computed per round and their median is reported. Targets
(2-core machine, CPU provider): on >= 2x off, on >= 50 % of raw. Every loop is bounded; the
services are stopped at the end whatever happens.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import json
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx
import numpy as np

REPO_ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO_ROOT))

from bench_support import running_demo  # noqa: E402

from demo_service import model as demo_model  # noqa: E402 - after the path set-up above


def raw_throughput(model: demo_model.LoadedModel, batch: int, seconds: float) -> float:
    """Images per second of back-to-back ``batch``-sized runs in this process."""
    images = demo_model.synthetic_images(np.random.default_rng(0), batch)
    for _ in range(3):
        model.predict(images)
    runs = 0
    started = time.perf_counter()
    while time.perf_counter() - started < seconds:
        model.predict(images)
        runs += 1
    return runs * batch / (time.perf_counter() - started)


def request_body() -> bytes:
    image = demo_model.synthetic_images(np.random.default_rng(1), 1)[0]
    encoded = base64.b64encode(image.astype("<f4").tobytes()).decode()
    return json.dumps({"data": [{"image": encoded}]}).encode()


@contextmanager
def service(model_dir: Path, max_batch_size: int, log_dir: Path) -> Iterator[str]:
    settings = {
        "MODEL_PATH": str(model_dir),
        "MAX_BATCH_SIZE": str(max_batch_size),
        "INFERENCE_DEVICE": "cpu",
    }
    log_path = log_dir / f"service-batch{max_batch_size}.log"
    with running_demo(settings, log_path, ready_timeout=60) as (url, _process):
        yield url


def wrk_throughput(url: str, body: bytes, concurrency: int, seconds: float, work: Path) -> float:
    script = work / "post.lua"
    body_file = work / "body.json"
    body_file.write_bytes(body)
    script.write_text(
        'wrk.method = "POST"\n'
        'wrk.headers["Content-Type"] = "application/json"\n'
        f'local f = io.open("{body_file}", "rb")\n'
        "wrk.body = f:read('*a')\n"
        "f:close()\n"
    )
    command = [
        "wrk", "-t1", f"-c{concurrency}", f"-d{max(1, round(seconds))}s", "--timeout", "10s",
        "-s", str(script), f"{url}/v1/inference",
    ]  # fmt: skip
    result = subprocess.run(command, capture_output=True, text=True, timeout=seconds + 30)
    if result.returncode != 0:
        raise RuntimeError(f"wrk failed: {result.stderr}")
    output = result.stdout
    bad = re.search(r"Non-2xx or 3xx responses: (\d+)", output)
    errors = re.search(r"Socket errors: (.*)", output)
    if bad or errors:
        raise RuntimeError(f"requests failed during the run:\n{output}")
    match = re.search(r"Requests/sec:\s+([\d.]+)", output)
    if match is None:
        raise RuntimeError(f"no Requests/sec in wrk's output:\n{output}")
    return float(match.group(1))


def python_throughput(url: str, body: bytes, concurrency: int, seconds: float) -> float:
    async def run() -> float:
        done = 0
        limits = httpx.Limits(max_connections=concurrency)
        async with httpx.AsyncClient(base_url=url, timeout=10.0, limits=limits) as client:
            deadline = time.perf_counter() + seconds

            async def worker() -> None:
                nonlocal done
                headers = {"Content-Type": "application/json"}
                while time.perf_counter() < deadline:
                    response = await client.post("/v1/inference", content=body, headers=headers)
                    response.raise_for_status()
                    done += 1

            started = time.perf_counter()
            await asyncio.gather(*(worker() for _ in range(concurrency)))
            return done / (time.perf_counter() - started)

    return asyncio.run(run())


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--duration", type=float, default=4.0, help="seconds per measurement")
    parser.add_argument("--rounds", type=int, default=5, help="rounds of raw, on, off")
    parser.add_argument("--concurrency", type=int, default=32)
    parser.add_argument("--python-client", action="store_true", help="do not use wrk")
    args = parser.parse_args()
    use_wrk = shutil.which("wrk") is not None and not args.python_client
    client = "wrk" if use_wrk else "python asyncio client"
    body = request_body()

    def load(url: str, seconds: float, work: Path) -> float:
        if use_wrk:
            return wrk_throughput(url, body, args.concurrency, seconds, work)
        return python_throughput(url, body, args.concurrency, seconds)

    with tempfile.TemporaryDirectory(prefix="demo-batching-") as temporary:
        work = Path(temporary)
        model_dir = work / "models"
        for version in demo_model.VERSION_SEEDS:
            demo_model.write_model(model_dir, version)
        model = demo_model.load(model_dir, "v1", "cpu", (1, 32))
        raw1 = raw_throughput(model, 1, args.duration)
        print(f"raw onnxruntime, batch 1: {raw1:7.1f} images/s ({1000 / raw1:.2f} ms/image)")
        rows = []
        with (
            service(model_dir, 32, work) as on_url,
            service(model_dir, 1, work) as off_url,
        ):
            load(on_url, 2, work)  # warm-up
            load(off_url, 2, work)
            print(f"concurrency {args.concurrency}, one image per request, {client}")
            for number in range(1, args.rounds + 1):
                raw = raw_throughput(model, 32, args.duration)
                on = load(on_url, args.duration, work)
                off = load(off_url, args.duration, work)
                rows.append((raw, on, off))
                print(
                    f"round {number}: raw(32) {raw:7.1f} images/s ({1000 / raw:.2f} ms/image)"
                    f" | on {on:6.1f} req/s | off {off:6.1f} req/s"
                    f" | on/off {on / off:4.2f}x | on/raw {on / raw:5.1%}",
                    flush=True,
                )
            with httpx.Client() as http:
                batch_on = mean_batch_size(http.get(f"{on_url}/metrics").text)
                batch_off = mean_batch_size(http.get(f"{off_url}/metrics").text)
    print(f"mean batch size: on {batch_on:.1f}, off {batch_off:.1f}")
    on_off = statistics.median(on / off for _, on, off in rows)
    on_raw = statistics.median(on / raw for raw, on, _ in rows)
    print(f"median of rounds: on/off {on_off:.2f}x (target >= 2x) {verdict(on_off >= 2)}")
    print(f"median of rounds: on/raw {on_raw:.1%} (target >= 50 %) {verdict(on_raw >= 0.5)}")
    return 0


def mean_batch_size(metrics: str) -> float:
    total = count = 0.0
    for line in metrics.splitlines():
        if line.startswith("ai_inference_batch_size_sum{"):
            total += float(line.rsplit(" ", 1)[1])
        elif line.startswith("ai_inference_batch_size_count{"):
            count += float(line.rsplit(" ", 1)[1])
    return total / count if count else 0.0


def verdict(passed: bool) -> str:
    return "PASS" if passed else "FAIL"


if __name__ == "__main__":
    raise SystemExit(main())
