"""Fixtures of the demo service's tests: the model files built once per session, settings
pointing at them, the app run through its lifespan, and image encoders."""

from __future__ import annotations

import asyncio
import base64
import io
import json
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from fastapi import FastAPI
from PIL import Image

from demo_service import model as demo_model
from demo_service import textgen_model
from demo_service.app import DemoService, create_app
from demo_service.config import DemoSettings
from tests.conftest import Harness


@pytest.fixture(scope="session")
def model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    directory = tmp_path_factory.mktemp("demo-models")
    for version in demo_model.VERSION_SEEDS:
        demo_model.write_model(directory, version)
    textgen_model.write_model(directory, textgen_model.DEFAULT_VERSION)
    return directory


def settings_for(model_dir: Path, **overrides: Any) -> DemoSettings:
    """Settings for an in-process app: the session's model files, CPU, small batches, v1
    only unless ``model_versions`` says otherwise (each version loaded costs time)."""
    values: dict[str, Any] = {
        "model_path": model_dir,
        "device": "cpu",
        "max_batch_size": 8,
        "batch_timeout_ms": 20,
        "max_body_bytes": 300_000,
        "max_items_per_request": 4,
        "model_versions": "v1",
    }
    values.update(overrides)
    return DemoSettings.from_env({}, **values)


def service_of(app: FastAPI) -> DemoService:
    service = app.state.demo
    assert isinstance(service, DemoService)
    return service


@asynccontextmanager
async def running(app: FastAPI, timeout: float = 30.0) -> AsyncIterator[DemoService]:
    """Run the app's lifespan and wait until its models are loaded."""
    service = service_of(app)
    generative = app.state.generative
    async with app.router.lifespan_context(app):
        deadline = asyncio.get_running_loop().time() + timeout
        while not (service.ready and generative.ready):
            assert service.load_error is None, service.load_error
            assert generative.load_error is None, generative.load_error
            assert asyncio.get_running_loop().time() < deadline, "models not loaded in time"
            await asyncio.sleep(0.02)
        yield service


@pytest.fixture
def make_app(
    make_harness: Callable[..., Harness], model_dir: Path
) -> Callable[..., tuple[FastAPI, Harness]]:
    """A demo app on a fresh harness (registry, in-memory spans, captured log lines)."""

    def make(**overrides: Any) -> tuple[FastAPI, Harness]:
        harness = make_harness(service_name="aiobs-demo")
        settings = settings_for(model_dir, **overrides)
        return create_app(settings, observability=harness.obs), harness

    return make


def images(count: int, seed: int = 0) -> np.ndarray:
    """``count`` distinct synthetic images (float32, 3x64x64, in [0, 1])."""
    return demo_model.synthetic_images(np.random.default_rng(seed), count)


def raw_b64(image: np.ndarray) -> str:
    return base64.b64encode(image.astype("<f4").tobytes()).decode()


def png_bytes(image: np.ndarray, size: tuple[int, int] | None = None) -> bytes:
    pixels = (np.clip(image, 0, 1) * 255).round().astype(np.uint8).transpose(1, 2, 0)
    picture = Image.fromarray(pixels, "RGB")
    if size is not None:
        picture = picture.resize(size)
    out = io.BytesIO()
    picture.save(out, format="PNG")
    return out.getvalue()


def png_b64(image: np.ndarray, size: tuple[int, int] | None = None) -> str:
    return base64.b64encode(png_bytes(image, size)).decode()


def body(*encoded: str, **fields: Any) -> bytes:
    return json.dumps({"data": [{"image": item} for item in encoded], **fields}).encode()


@pytest.fixture(scope="session")
def textgen_model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The generative model's v1 file, built once per session (v2 is built where needed)."""
    directory = tmp_path_factory.mktemp("textgen-models")
    textgen_model.write_model(directory, textgen_model.DEFAULT_VERSION)
    return directory
