"""Reading and checking inference requests: every way a body can be wrong gets a 413 or a
422 whose message names the problem — never a 500, and never a word of the body itself
(messages name fields and positions, never values or unknown keys: they are logged).

The request::

    {"data": [{"image": "<base64>"}, ...], "model_version": "v1"}

Each ``image`` is base64 (standard alphabet, padded) of either

* a PNG (any size up to 1024x1024, RGB, RGBA, greyscale or palette; resized to 64x64), or
* raw pixels: 3x64x64 = 12288 little-endian float32 values in channel, row, column order
  (49152 bytes), each in [0, 1]; the item may state ``"dtype": "float32"`` and
  ``"shape": [3, 64, 64]``, which are then checked.

``model_version`` is optional (default ``v1``).
"""

from __future__ import annotations

import base64
import binascii
import io
import json
import struct
import time
from collections.abc import AsyncIterator, Collection
from dataclasses import dataclass
from typing import Any

import numpy as np

from demo_service.model import INPUT_SHAPE

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
RAW_BYTES = int(np.prod(INPUT_SHAPE)) * 4
MAX_IMAGE_SIDE = 1024
_REQUEST_KEYS = frozenset({"data", "model_version"})
_ITEM_KEYS = frozenset({"image", "dtype", "shape"})


class InvalidInput(ValueError):
    """The request cannot be served as sent: answered 422 with this message."""


class BodyTooLarge(ValueError):
    """The body is over the limit: answered 413 (the rest is never read)."""


@dataclass(frozen=True)
class ParsedRequest:
    model_version: str
    images: list[np.ndarray]
    """One float32 array of shape 3x64x64 per item, values in [0, 1]."""
    decode_seconds: float
    """Time spent decoding and checking the request, shared out to its items' batches."""


async def read_body(
    content_length: str | None, chunks: AsyncIterator[bytes], max_bytes: int
) -> bytes:
    """The body, read chunk by chunk: past ``max_bytes`` (declared by ``Content-Length`` or
    sent) it stops at once with :class:`BodyTooLarge`, holding at most ``max_bytes`` plus one
    chunk."""
    declared = content_length
    if declared is not None:
        try:
            length = int(declared)
        except ValueError:
            raise InvalidInput("Content-Length is not a number") from None
        if length > max_bytes:
            raise BodyTooLarge(f"the body ({length} bytes) is over the limit of {max_bytes} bytes")
    body = bytearray()
    async for chunk in chunks:
        body += chunk
        if len(body) > max_bytes:
            raise BodyTooLarge(f"the body is over the limit of {max_bytes} bytes")
    return bytes(body)


def parse_request(
    body: bytes, *, versions: Collection[str], default_version: str, max_items: int
) -> ParsedRequest:
    """Decode and check a whole request, or raise :class:`InvalidInput`."""
    started = time.perf_counter()
    document = _load_json(body)
    if not isinstance(document, dict):
        raise InvalidInput('the body must be a JSON object: {"data": [{"image": "..."}]}')
    if not set(document) <= _REQUEST_KEYS:  # names are not echoed: they are body content
        raise InvalidInput(
            "unknown field(s): the body takes 'data' and optionally 'model_version' only"
        )
    version = document.get("model_version", default_version)
    if not isinstance(version, str) or version not in versions:
        raise InvalidInput(f"model_version must be one of {', '.join(sorted(versions))}")
    data = document.get("data")
    if not isinstance(data, list):
        raise InvalidInput('\'data\' must be a list of items like {"image": "<base64>"}')
    if not data:
        raise InvalidInput("'data' is empty: send at least one item")
    if len(data) > max_items:
        raise InvalidInput(f"'data' has {len(data)} items; at most {max_items} per request")
    images = [decode_item(item, f"data[{index}]") for index, item in enumerate(data)]
    return ParsedRequest(version, images, time.perf_counter() - started)


def decode_item(item: Any, where: str) -> np.ndarray:
    """One item's image as a 3x64x64 float32 array in [0, 1]."""
    if not isinstance(item, dict):
        raise InvalidInput(f'{where} must be an object like {{"image": "<base64>"}}')
    if not set(item) <= _ITEM_KEYS:
        raise InvalidInput(
            f"{where}: unknown field(s); an item takes 'image' and, for raw float32 data, "
            "'dtype' and 'shape'"
        )
    encoded = item.get("image")
    if not isinstance(encoded, str):
        raise InvalidInput(f"{where}.image must be a base64 string")
    try:
        raw = base64.b64decode(encoded, validate=True)
    except (binascii.Error, ValueError):
        raise InvalidInput(f"{where}.image is not valid base64") from None
    if raw.startswith(PNG_SIGNATURE):
        if "dtype" in item or "shape" in item:
            raise InvalidInput(f"{where}: 'dtype' and 'shape' describe raw float32 images only")
        return _decode_png(raw, where)
    return _decode_raw(raw, item, where)


def _decode_raw(raw: bytes, item: dict[str, Any], where: str) -> np.ndarray:
    dtype = item.get("dtype", "float32")
    if dtype != "float32":
        raise InvalidInput(
            f"{where}.dtype must be 'float32' (raw images are little-endian float32)"
        )
    shape = item.get("shape", list(INPUT_SHAPE))
    if shape != list(INPUT_SHAPE):
        raise InvalidInput(f"{where}.shape must be {list(INPUT_SHAPE)}")
    if len(raw) != RAW_BYTES:
        if len(raw) % 4:
            raise InvalidInput(
                f"{where}.image is neither a PNG nor float32 data ({len(raw)} bytes is not a "
                "multiple of 4)"
            )
        raise InvalidInput(
            f"{where}.image has {len(raw) // 4} float32 values; expected "
            f"{RAW_BYTES // 4} (shape {list(INPUT_SHAPE)}) or a PNG"
        )
    pixels = np.frombuffer(raw, dtype="<f4").reshape(INPUT_SHAPE)
    if not (pixels.min() >= 0.0 and pixels.max() <= 1.0):  # false for NaN too
        if not np.isfinite(pixels).all():
            raise InvalidInput(f"{where}.image contains NaN or Infinity")
        raise InvalidInput(f"{where}.image has values outside [0, 1]")
    return pixels.astype(np.float32, copy=False)  # native order; no copy on little-endian


def _decode_png(raw: bytes, where: str) -> np.ndarray:
    # The size is read from the header before Pillow sees the data: no decompression bomb.
    if len(raw) < 24 or raw[12:16] != b"IHDR":
        raise InvalidInput(f"{where}.image is not a valid PNG (no header)")
    width, height = struct.unpack(">II", raw[16:24])
    if not (0 < width <= MAX_IMAGE_SIDE and 0 < height <= MAX_IMAGE_SIDE):
        raise InvalidInput(
            f"{where}.image is {width}x{height} pixels; at most {MAX_IMAGE_SIDE}x{MAX_IMAGE_SIDE}"
        )
    from PIL import Image

    try:
        with Image.open(io.BytesIO(raw), formats=["PNG"]) as image:
            image.load()
            # A palette with transparency goes through RGBA (Pillow warns otherwise).
            rgb = (image.convert("RGBA") if image.mode == "P" else image).convert("RGB")
    except Exception:  # noqa: BLE001 - Pillow raises many types for corrupt data; all mean 422
        raise InvalidInput(f"{where}.image is not a decodable PNG") from None
    if rgb.size != INPUT_SHAPE[1:][::-1]:
        rgb = rgb.resize((INPUT_SHAPE[2], INPUT_SHAPE[1]), Image.Resampling.BILINEAR)
    pixels = np.asarray(rgb, dtype=np.float32).transpose(2, 0, 1) / np.float32(255.0)
    return np.ascontiguousarray(pixels)


def _load_json(body: bytes) -> Any:
    if not body:
        raise InvalidInput('the body is empty; expected JSON: {"data": [{"image": "..."}]}')
    try:
        return json.loads(body, parse_constant=_reject_constant, parse_float=_finite_float)
    except InvalidInput:
        raise
    except RecursionError:
        raise InvalidInput("the body is not valid JSON (nested too deeply)") from None
    except UnicodeDecodeError:
        raise InvalidInput("the body is not valid JSON (not UTF-8 text)") from None
    except json.JSONDecodeError as error:
        raise InvalidInput(
            f"the body is not valid JSON ({error.msg} at line {error.lineno} column {error.colno})"
        ) from None


def _reject_constant(name: str) -> Any:
    raise InvalidInput(f"the body contains {name}, which JSON does not allow")


def _finite_float(text: str) -> float:
    value = float(text)
    if not np.isfinite(value):
        raise InvalidInput("the body contains a number too large for a float")
    return value
