"""The README's first command for real: ``python -m demo_service`` in a subprocess on a
free port with an empty MODEL_PATH builds the models, turns ready, answers the README's
curl example, shows ai_* metrics with device="cpu", takes load from the load generator,
refuses an oversized body with 413, writes only JSON lines without request bodies, and
stops promptly on SIGTERM."""

from __future__ import annotations

import json
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import openai
import pytest

from demo_service.example_request import request_body
from tests.support.otlp_receiver import HOST, free_port
from tests.support.servers import REPO_ROOT, child_env, sample_value

pytestmark = pytest.mark.slow
CANARY = "canary-e2e-5d1c"


class DemoProcess:
    def __init__(self, tmp_path: Path) -> None:
        self.port = free_port()
        self.url = f"http://{HOST}:{self.port}"
        self.stdout_path = tmp_path / "demo.stdout"
        self.stderr_path = tmp_path / "demo.stderr"
        self.env = child_env(
            {"MODEL_PATH": str(tmp_path / "models"), "PORT": str(self.port), "HOST": HOST}
        )
        with self.stdout_path.open("wb") as out, self.stderr_path.open("wb") as err:
            self.process = subprocess.Popen(
                [sys.executable, "-m", "demo_service"],
                cwd=REPO_ROOT,
                env=self.env,
                stdout=out,
                stderr=err,
                stdin=subprocess.DEVNULL,
            )
        self.saw_unready = False

    def wait_ready(self, timeout: float = 60.0) -> None:
        deadline = time.monotonic() + timeout
        with httpx.Client(base_url=self.url, timeout=2.0) as client:
            while time.monotonic() < deadline:
                assert self.process.poll() is None, self.describe()
                try:
                    status = client.get("/health/ready").status_code
                except httpx.TransportError:
                    time.sleep(0.05)
                    continue
                if status == 200:
                    return
                assert status == 503
                self.saw_unready = True
                time.sleep(0.05)
        raise AssertionError(f"not ready within {timeout} s\n{self.describe()}")

    def stop(self) -> float:
        started = time.monotonic()
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(15)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(5)
                raise
        return time.monotonic() - started

    def describe(self) -> str:
        out = self.stdout_path.read_text(errors="replace")[-3000:]
        err = self.stderr_path.read_text(errors="replace")[-3000:]
        return f"--- stdout ---\n{out}\n--- stderr ---\n{err}"


@pytest.fixture
def demo(tmp_path: Path) -> Iterator[DemoProcess]:
    process = DemoProcess(tmp_path)
    try:
        yield process
    finally:
        if process.process.poll() is None:
            process.process.kill()
            process.process.wait(10)


def test_the_demo_serves_predictions_from_its_first_start(demo: DemoProcess) -> None:
    demo.wait_ready()
    assert demo.saw_unready, "/health/ready answered 503 while the models were built"
    assert sorted(p.name for p in (Path(demo.env["MODEL_PATH"])).iterdir()) == [
        "demo-cnn-v1.onnx",
        "demo-cnn-v2.onnx",
        "tiny-lm-v1.onnx",
    ]
    with httpx.Client(base_url=demo.url, timeout=10.0) as client:
        response = client.post(
            "/v1/inference",
            json=request_body(2),
            headers={"Content-Type": "application/json"},
        )
        assert response.status_code == 200, response.text
        answer = response.json()
        assert len(answer["predictions"]) == 2
        assert len(answer["trace_id"]) == 32
        assert {"label", "class_id", "confidence"} <= set(answer["predictions"][0])

        if shutil.which("curl"):  # the README's example, as a user types it
            readme = subprocess.run(  # noqa: S602 - a shell pipeline, as in the README
                f"{sys.executable} -m demo_service.example_request | curl -s "
                "-H 'Content-Type: application/json' --data-binary @- "
                f"{demo.url}/v1/inference",
                shell=True,
                cwd=REPO_ROOT,
                env=demo.env,
                capture_output=True,
                text=True,
                timeout=60,
            )
            assert readme.returncode == 0, readme.stderr
            assert json.loads(readme.stdout)["predictions"][0]["label"]

            oversized = subprocess.run(
                ["curl", "-s", "-o", "/dev/null", "-w", "%{http_code}", "--data-binary",
                 "@-", "-H", "Content-Type: application/json", f"{demo.url}/v1/inference"],
                input=b"x" * (4 * 1024 * 1024 + 1),
                capture_output=True,
                timeout=30,
            )  # fmt: skip
            assert oversized.stdout == b"413"

        rejected = client.post("/v1/inference", content=json.dumps({"data": [{"image": CANARY}]}))
        assert rejected.status_code == 422

        loadgen = subprocess.run(
            [sys.executable, "-m", "demo_service.loadgen", "--url", demo.url, "--rps", "25",
             "--duration", "2", "--bad-ratio", "0.3", "--slow-ratio", "0.1",
             "--slow-upload-seconds", "0.3", "--versions", "v1,v2", "--generate-ratio", "0.3",
             "--disconnect-ratio", "0.3", "--seed", "3"],
            cwd=REPO_ROOT,
            env=demo.env,
            capture_output=True,
            text=True,
            timeout=60,
        )  # fmt: skip
        assert loadgen.returncode == 0, loadgen.stdout + loadgen.stderr
        assert "200:" in loadgen.stdout
        assert "422:" in loadgen.stdout

        metrics = client.get("/metrics").text
    assert sample_value(metrics, "ai_inference_total", model="demo-cnn", model_version="v1") >= 2
    assert sample_value(metrics, "ai_inference_total", model="demo-cnn", model_version="v2") >= 1
    for version in ("v1", "v2"):
        assert sample_value(
            metrics, "ai_model_info", model="demo-cnn", model_version=version,
            runtime="onnxruntime", device="cpu",
        ) == 1  # fmt: skip
    assert sample_value(metrics, "ai_inference_batch_size_count", model="demo-cnn") >= 2
    assert sample_value(metrics, "ai_service_ready") == 1
    assert sample_value(metrics, "http_requests_total", route="/v1/inference", status="422") >= 2
    assert sample_value(metrics, "ai_tokens_total", model="tiny-lm", type="output") > 0
    assert sample_value(metrics, "http_requests_total", route="/v1/completions", status="400") >= 1

    assert demo.stop() < 10
    stdout = demo.stdout_path.read_text()
    lines = [json.loads(line) for line in stdout.splitlines()]  # every line is JSON
    events = {line["event"] for line in lines}
    assert {"model_loaded", "service_ready", "http_request", "inference_rejected"} <= events
    assert CANARY not in stdout
    stderr = demo.stderr_path.read_text()
    assert "onnxruntime" not in stderr, "ONNX Runtime's CUDA noise was silenced"


PROMPT_CANARY = "prompt-canary-4711"


def test_the_openai_client_streams_completions_from_the_demo(demo: DemoProcess) -> None:
    """The official openai client, pointed at the demo, streams a completion and a chat and
    gets whole answers with usage; the service's own metrics count the tokens it reported;
    a bad request is an OpenAI-shaped 4xx; prompts never reach the logs."""
    demo.wait_ready()
    client = openai.OpenAI(base_url=f"{demo.url}/v1", api_key="unused", max_retries=0)
    pieces = [
        chunk.choices[0].text
        for chunk in client.completions.create(
            model="tiny-lm", prompt=PROMPT_CANARY, max_tokens=24, temperature=0.0, stream=True
        )
        if chunk.choices
    ]
    whole = client.completions.create(
        model="tiny-lm", prompt=PROMPT_CANARY, max_tokens=24, temperature=0.0
    )
    assert "".join(pieces) == whole.choices[0].text  # greedy: the same text both ways
    assert whole.usage is not None
    assert whole.usage.prompt_tokens == len(PROMPT_CANARY)
    assert 1 <= whole.usage.completion_tokens <= 24
    assert whole.choices[0].finish_reason in ("stop", "length")

    stream = client.chat.completions.create(
        model="tiny-lm",
        messages=[{"role": "user", "content": PROMPT_CANARY}],
        max_tokens=16,
        seed=7,
        stream=True,
        stream_options={"include_usage": True},
    )
    chunks = list(stream)
    assert chunks[0].choices[0].delta.role == "assistant"
    assert chunks[-1].usage is not None
    assert chunks[-1].usage.completion_tokens >= 1
    reply = client.chat.completions.create(
        model="tiny-lm", messages=[{"role": "user", "content": PROMPT_CANARY}], max_tokens=16,
        seed=7,
    )  # fmt: skip
    streamed = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert reply.choices[0].message.content == streamed  # seeded: the same text both ways

    with pytest.raises(openai.BadRequestError) as rejected:
        client.completions.create(model="tiny-lm", prompt="x", max_tokens=100_000)
    assert rejected.value.status_code == 400
    assert rejected.value.param == "max_tokens"
    with pytest.raises(openai.NotFoundError):
        client.completions.create(model="gpt-4", prompt="x")

    with httpx.Client(base_url=demo.url, timeout=10.0) as http:
        metrics = http.get("/metrics").text
    output = sample_value(metrics, "ai_tokens_total", model="tiny-lm", type="output")
    assert output == whole.usage.completion_tokens * 2 + sum(
        usage.completion_tokens for usage in (chunks[-1].usage, reply.usage) if usage
    )
    assert sample_value(metrics, "ai_time_to_first_token_seconds_count", model="tiny-lm") == 4
    assert (
        sample_value(metrics, "http_response_first_byte_seconds_count", route="/v1/completions")
        == 1
    )
    assert demo.stop() < 10
    assert PROMPT_CANARY not in demo.stdout_path.read_text()


def test_a_bad_setting_stops_start_up_naming_it(tmp_path: Path) -> None:
    env = child_env({"MAX_BATCH_SIZE": "lots", "MODEL_PATH": str(tmp_path)})
    result = subprocess.run(
        [sys.executable, "-m", "demo_service"],
        cwd=REPO_ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 2
    assert "MAX_BATCH_SIZE='lots'" in result.stderr
