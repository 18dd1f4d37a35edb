"""``python -m demo_service.example_request``: print a ready request body for curl.

    python -m demo_service.example_request | curl -s -H 'Content-Type: application/json' \\
        --data-binary @- http://127.0.0.1:8000/v1/inference

Options: ``--count N`` images (default 1), ``--raw`` for raw float32 pixels instead of PNGs,
``--model-version v2``, ``--seed S`` for other pictures. The pictures are synthetic (colour
gradients with a disc), made in code: nothing is downloaded.
"""

from __future__ import annotations

import argparse
import base64
import io
import json
import sys

import numpy as np

from demo_service.model import VERSION_SEEDS, synthetic_images


def encode_png(image: np.ndarray) -> str:
    """base64 of a PNG of a 3x64x64 float image in [0, 1]."""
    from PIL import Image

    pixels = (np.clip(image, 0.0, 1.0) * 255).round().astype(np.uint8).transpose(1, 2, 0)
    out = io.BytesIO()
    Image.fromarray(pixels, "RGB").save(out, format="PNG")
    return base64.b64encode(out.getvalue()).decode("ascii")


def encode_raw(image: np.ndarray) -> str:
    """base64 of the image's 12288 little-endian float32 values (channel, row, column)."""
    return base64.b64encode(image.astype("<f4").tobytes()).decode("ascii")


def request_body(
    count: int = 1, *, raw: bool = False, model_version: str | None = None, seed: int = 0
) -> dict[str, object]:
    encode = encode_raw if raw else encode_png
    pictures = synthetic_images(np.random.default_rng(seed), count)
    body: dict[str, object] = {"data": [{"image": encode(picture)} for picture in pictures]}
    if model_version is not None:
        body["model_version"] = model_version
    return body


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m demo_service.example_request",
        description="Print a JSON request body for POST /v1/inference.",
    )
    parser.add_argument("--count", type=int, default=1, help="images in the request")
    parser.add_argument("--raw", action="store_true", help="raw float32 pixels, not PNG")
    parser.add_argument(
        "--model-version",
        choices=list(VERSION_SEEDS),
        default=None,
        help="default: the service's first MODEL_VERSIONS entry",
    )
    parser.add_argument("--seed", type=int, default=0, help="which synthetic pictures")
    args = parser.parse_args(argv)
    if args.count < 1:
        parser.error("--count must be at least 1")
    body = request_body(args.count, raw=args.raw, model_version=args.model_version, seed=args.seed)
    json.dump(body, sys.stdout)
    sys.stdout.write("\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
