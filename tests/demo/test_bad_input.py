"""Bad inference input: every malformed request is a 413 or a 422 whose JSON message names
the problem — never a 500 — and no part of any request body reaches the logs or an error
message. One app serves the whole module (loading a model per case would be slow)."""

from __future__ import annotations

import base64
import io
import json
import random
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import numpy as np
import pytest
from PIL import Image

from aiobs import Settings
from demo_service.app import create_app
from tests.conftest import Harness, client_for
from tests.demo.conftest import body, images, png_b64, png_bytes, raw_b64, running, settings_for

pytestmark = pytest.mark.anyio
CANARY = "canary-7f3e9b"


@pytest.fixture(scope="module")
def anyio_backend() -> str:
    return "asyncio"


@pytest.fixture(scope="module")
async def served(model_dir: Path) -> AsyncIterator[tuple[httpx.AsyncClient, Harness]]:
    harness = Harness(Settings.load({"service_name": "aiobs-demo"}, environ={}))
    try:
        app = create_app(settings_for(model_dir), observability=harness.obs)
        async with running(app), client_for(app) as client:
            yield client, harness
    finally:
        harness.close()


def _raw(values: np.ndarray) -> str:
    return base64.b64encode(values.astype("<f4").tobytes()).decode()


GOOD = raw_b64(images(1, seed=30)[0])
NAN_IMAGE = images(1, seed=31)[0].copy()
NAN_IMAGE[1, 2, 3] = np.nan
INF_IMAGE = images(1, seed=32)[0].copy()
INF_IMAGE[0, 0, 0] = np.inf
TRUNCATED_PNG = base64.b64encode(png_bytes(images(1, seed=33)[0])[:300]).decode()
CORRUPT_PNG = base64.b64encode(
    png_bytes(images(1, seed=34)[0])[:40] + b"\x00" * 400 + b"IEND\xaeB`\x82"
).decode()
HUGE_PNG_HEADER = base64.b64encode(
    b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR" + (20000).to_bytes(4, "big") * 2 + b"\x08\x02\0\0\0"
).decode()

BAD_BODIES: dict[str, tuple[bytes, str]] = {
    "empty body": (b"", "body is empty"),
    "malformed JSON": (b'{"data": [{"image": ', "not valid JSON"),
    "not UTF-8": (b'{"data": "\xff\xfe"}', "not valid JSON"),
    "deeply nested JSON": (b"[" * 100_000 + b"]" * 100_000, "not valid JSON"),
    "NaN literal": (b'{"data": [{"image": NaN}]}', "NaN"),
    "Infinity literal": (b'{"data": [], "x": -Infinity}', "Infinity"),
    "float overflow": (b'{"data": [{"image": "a", "shape": [1e999]}]}', "too large"),
    "not an object": (b'[{"image": "x"}]', "JSON object"),
    "no data": (b'{"inputs": []}', "unknown field"),
    "data not a list": (b'{"data": {"image": "x"}}', "must be a list"),
    "empty data": (b'{"data": []}', "empty"),
    "too many items": (body(*["AAAA"] * 5), "'data' has 5 items; at most 4 per request"),
    "item not an object": (b'{"data": ["abc"]}', "must be an object"),
    "image missing": (b'{"data": [{}]}', "base64 string"),
    "image not a string": (b'{"data": [{"image": [0.5, 0.5]}]}', "base64 string"),
    "unknown item field": (b'{"data": [{"image": "AAAA", "mode": 1}]}', "unknown field"),
    "bad base64": (body("not*base64!"), "not valid base64"),
    "base64 bad padding": (body("AAA"), "not valid base64"),
    "NaN pixel": (body(_raw(NAN_IMAGE)), "NaN or Infinity"),
    "Infinity pixel": (body(_raw(INF_IMAGE)), "NaN or Infinity"),
    "out of range pixel": (body(_raw(np.full((3, 64, 64), 2.0))), "outside [0, 1]"),
    "wrong shape": (body(_raw(np.zeros((3, 32, 32)))), "3072 float32 values"),
    "not float32 sized": (body(base64.b64encode(b"\x00" * 49_151).decode()), "multiple of 4"),
    "declared wrong dtype": (
        json.dumps({"data": [{"image": GOOD, "dtype": "float64"}]}).encode(),
        "dtype must be 'float32'",
    ),
    "declared wrong shape": (
        json.dumps({"data": [{"image": GOOD, "shape": [1, 3, 64, 64]}]}).encode(),
        "shape must be [3, 64, 64]",
    ),
    "truncated PNG": (body(TRUNCATED_PNG), "not a decodable PNG"),
    "corrupt PNG": (body(CORRUPT_PNG), "PNG"),
    "PNG too large": (body(HUGE_PNG_HEADER), "at most 1024x1024"),
    "unknown version": (body(GOOD, model_version="v9"), "model_version must be one of v1"),
    "version not a string": (body(GOOD, model_version=2), "model_version must be one of"),
}


@pytest.mark.parametrize("mode", ["L", "LA", "RGBA", "P", "I;16", "1"])
async def test_every_png_colour_mode_is_accepted(
    served: tuple[httpx.AsyncClient, Harness], mode: str
) -> None:
    """Grey, grey with alpha, RGBA, palette with transparency, 16-bit grey and 1-bit PNGs
    of any size all get a prediction."""
    client, _ = served
    picture = Image.fromarray(
        (images(1, seed=50)[0].transpose(1, 2, 0) * 255).astype(np.uint8), "RGB"
    ).resize((97, 51))
    if mode == "P":
        picture = picture.convert("P", palette=Image.Palette.ADAPTIVE)
        # Per-entry alpha (a tRNS chunk of bytes): converting that straight to RGB warns.
        extra = {"transparency": bytes([0, 128] + [255] * 254)}
    else:
        picture = picture.convert(mode)
        extra = {}
    out = io.BytesIO()
    picture.save(out, format="PNG", **extra)
    response = await client.post(
        "/v1/inference", content=body(base64.b64encode(out.getvalue()).decode())
    )
    assert response.status_code == 200, response.text


@pytest.mark.parametrize("case", list(BAD_BODIES))
async def test_bad_input_is_a_422_naming_the_problem(
    served: tuple[httpx.AsyncClient, Harness], case: str
) -> None:
    """Each malformed request: 422, JSON, a message that names the problem."""
    client, _ = served
    payload, message = BAD_BODIES[case]
    response = await client.post("/v1/inference", content=payload)
    assert response.status_code == 422, response.text
    assert response.headers["content-type"] == "application/json"
    answer = response.json()
    assert answer["error"] == "invalid_input"
    assert message in answer["detail"]
    assert len(answer["trace_id"]) == 32


async def test_declared_oversized_body_is_refused_before_reading(
    served: tuple[httpx.AsyncClient, Harness],
) -> None:
    """Content-Length over MAX_BODY_BYTES: 413 without reading the body."""
    client, _ = served
    consumed = 0

    async def stream() -> AsyncIterator[bytes]:
        nonlocal consumed
        for _ in range(100):
            consumed += 1
            yield b"x" * 10_000

    response = await client.post(
        "/v1/inference", content=stream(), headers={"Content-Length": "1000000"}
    )
    assert response.status_code == 413
    assert response.json()["error"] == "payload_too_large"
    assert "300000 bytes" in response.json()["detail"]
    assert consumed <= 1


async def test_streamed_oversized_body_is_cut_off_at_the_limit(
    served: tuple[httpx.AsyncClient, Harness],
) -> None:
    """No Content-Length (chunked): reading stops at MAX_BODY_BYTES, long before the end
    of a 5 MB upload."""
    client, _ = served
    consumed = 0

    async def stream() -> AsyncIterator[bytes]:
        nonlocal consumed
        for _ in range(500):
            consumed += 1
            yield b"x" * 10_000

    response = await client.post("/v1/inference", content=stream())
    assert response.status_code == 413
    assert consumed <= 32


async def test_request_bodies_never_reach_the_logs(
    served: tuple[httpx.AsyncClient, Harness],
) -> None:
    """A canary string in every part of rejected and accepted bodies appears in no log
    line and in no error message."""
    client, harness = served
    canary_b64 = base64.b64encode(CANARY.encode() * 3).decode()
    payloads = [
        json.dumps({"data": [{"image": CANARY}]}).encode(),
        json.dumps({"data": [{"image": canary_b64}]}).encode(),
        json.dumps({"data": [{"image": GOOD, CANARY: 1}]}).encode(),
        json.dumps({CANARY: [1]}).encode(),
        json.dumps({"data": [{"image": GOOD}], "model_version": CANARY}).encode(),
        json.dumps({"data": [{"image": GOOD, "dtype": CANARY}]}).encode(),
        (f'{{"data": [{{"image": "{CANARY}"').encode(),
        json.dumps({"data": [{"image": GOOD}], "note": CANARY}).encode(),
    ]
    for payload in payloads:
        response = await client.post("/v1/inference", content=payload)
        assert response.status_code == 422
        assert CANARY not in response.text
    lines = harness.stream.getvalue() if harness.obs._log_sink.flush(5) else ""
    assert "inference_rejected" in lines
    assert CANARY not in lines


async def test_random_garbage_never_causes_a_500(served: tuple[httpx.AsyncClient, Harness]) -> None:
    """Bounded fuzzing: 150 mutations of a valid body (bytes flipped, cut, spliced) get
    200, 413 or 422, never a server error."""
    client, harness = served
    rng = random.Random(1234)  # noqa: S311 - fuzzing input, not cryptography
    valid = body(GOOD, png_b64(images(1, seed=40)[0]))
    statuses = set()
    for _ in range(150):
        mutated = bytearray(valid)
        for _ in range(rng.randint(1, 6)):
            choice = rng.random()
            position = rng.randrange(len(mutated))
            if choice < 0.4:
                mutated[position] = rng.randrange(256)
            elif choice < 0.7:
                del mutated[position : position + rng.randint(1, 400)]
            else:
                mutated[position:position] = rng.choice([b"NaN", b"{", b'"', b"]", b"\\u0000"])
        response = await client.post("/v1/inference", content=bytes(mutated))
        statuses.add(response.status_code)
        assert response.status_code in (200, 413, 422), response.text
    assert 422 in statuses
    errors = [line for line in harness.log_lines() if line["level"] in ("error", "critical")]
    assert errors == []
