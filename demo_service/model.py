"""The demo's model: a small VGG-style image classifier built deterministically in code.

``3x64x64`` float32 pixels in ``[0, 1]`` → per-channel normalisation → three blocks of 3x3
convolutions with ReLU, each ending in a 2x2 max-pool (32; 64; 128, 128 channels) → a
fully connected layer of 4096 units with ReLU → ten class scores → softmax: 34 M parameters,
a 135 MB file. Weights come from a seeded NumPy generator (one seed per model version), so
every build of a version is byte-for-byte the same model.

The big fully connected layer is what makes batching pay, as in VGG or AlexNet: one image
alone reads all of its 134 MB of weights for little arithmetic, a batch of 32 reads them once.
On a 2-core CPU one image alone takes about 3 ms, in a batch of 32 about 0.6 ms.

:func:`reference_forward` computes the same function in NumPy from the same weights; the
tests hold the ONNX Runtime session to it. ``python -m demo_service.model [DIR]`` builds the
model files (the container image does it at build time).
"""

from __future__ import annotations

import logging
import os
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from demo_service.config import VERSION_SEEDS, DemoSettings

MODEL_NAME = "demo-cnn"
LABELS = (
    "airplane",
    "automobile",
    "bird",
    "cat",
    "deer",
    "dog",
    "frog",
    "horse",
    "ship",
    "truck",
)
INPUT_NAME = "image"
OUTPUT_NAME = "probabilities"
CHANNELS, HEIGHT, WIDTH = INPUT_SHAPE = (3, 64, 64)
CONV_BLOCKS = ((32,), (64,), (128, 128))
"""Output channels of each 3x3 convolution, block by block; each block ends in a 2x2 pool."""
HIDDEN_UNITS = 4096
MEAN = (0.485, 0.456, 0.406)
STD = (0.229, 0.224, 0.225)
LOGIT_SPREAD = 2.0
"""Standard deviation of each class score over the calibration images."""
CALIBRATION_IMAGES = 32
OPSET = 17
IR_VERSION = 9  # what onnxruntime 1.17+ reads; onnx 1.23 would write 11+ by default
BUILD_ID = "demo-cnn/3"
"""Stored in each file's metadata; a file with another id is rebuilt (architecture changed)."""
CUDA_PROVIDER = "CUDAExecutionProvider"
CPU_PROVIDER = "CPUExecutionProvider"

_log = logging.getLogger("demo_service.model")


@dataclass(frozen=True)
class Weights:
    """Every parameter of the network, as NumPy float32 arrays."""

    blocks: tuple[tuple[tuple[np.ndarray, np.ndarray], ...], ...]
    """Per block, its convolutions: kernel (out, in, 3, 3) and bias (out,)."""
    dense: tuple[tuple[np.ndarray, np.ndarray], ...]  # (in, out), (out,)


def make_weights(seed: int) -> Weights:
    """He-initialised weights from ``numpy.random.default_rng(seed)``, with the last layer
    calibrated on seeded synthetic images: its logits centred per class (no class wins by
    construction) and scaled so that top-1 confidences spread out as a trained model's do."""
    rng = np.random.default_rng(seed)
    blocks = []
    channels_in = CHANNELS
    for block_channels in CONV_BLOCKS:
        convolutions = []
        for channels_out in block_channels:
            fan_in = channels_in * 9
            kernel = rng.standard_normal((channels_out, channels_in, 3, 3), dtype=np.float32)
            kernel *= np.float32(np.sqrt(2.0 / fan_in))
            bias = rng.standard_normal(channels_out, dtype=np.float32) * np.float32(0.01)
            convolutions.append((kernel, bias))
            channels_in = channels_out
        blocks.append(tuple(convolutions))
    side = HEIGHT // 2 ** len(CONV_BLOCKS)
    features = channels_in * side * side
    hidden = rng.standard_normal((features, HIDDEN_UNITS), dtype=np.float32)
    hidden *= np.float32(np.sqrt(2.0 / features))
    hidden_bias = rng.standard_normal(HIDDEN_UNITS, dtype=np.float32) * np.float32(0.01)
    output = rng.standard_normal((HIDDEN_UNITS, len(LABELS)), dtype=np.float32)
    partial = Weights(tuple(blocks), ((hidden, hidden_bias),))
    calibration = synthetic_images(rng, CALIBRATION_IMAGES)
    logits = _features(partial, calibration, np.float32) @ output
    scale = LOGIT_SPREAD / float(logits.std(axis=0).mean())
    output_bias = -logits.mean(axis=0) * scale
    return Weights(
        tuple(blocks),
        (
            (hidden, hidden_bias),
            (output * np.float32(scale), output_bias.astype(np.float32)),
        ),
    )


def synthetic_images(rng: np.random.Generator, count: int) -> np.ndarray:
    """``count`` float32 images in [0, 1]: smooth colour gradients with a bright disc, some
    noise on top — a stand-in for photographs."""
    ys, xs = np.mgrid[0:HEIGHT, 0:WIDTH].astype(np.float32) / np.float32(HEIGHT - 1)
    images = np.empty((count, *INPUT_SHAPE), np.float32)
    for index in range(count):
        slope = rng.uniform(-1.0, 1.0, (CHANNELS, 2)).astype(np.float32)
        base = rng.uniform(0.0, 1.0, (CHANNELS, 1, 1)).astype(np.float32)
        image = base + 0.5 * (slope[:, :1, None] * xs + slope[:, 1:, None] * ys)
        centre, radius = rng.uniform(0.2, 0.8, 2), rng.uniform(0.1, 0.3)
        disc = (xs - centre[0]) ** 2 + (ys - centre[1]) ** 2 < radius**2
        image[:, disc] = rng.uniform(0.0, 1.0, (CHANNELS, 1)).astype(np.float32)
        image += rng.normal(0.0, 0.05, INPUT_SHAPE).astype(np.float32)
        images[index] = image
    return np.clip(images, 0.0, 1.0)


def build_model(version: str) -> Any:
    """The ONNX ``ModelProto`` of ``version`` (imports ``onnx``: only needed to build)."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    weights = make_weights(VERSION_SEEDS[version])
    shape = (1, CHANNELS, 1, 1)
    initializers = [
        numpy_helper.from_array(np.array(MEAN, np.float32).reshape(shape), "mean"),
        numpy_helper.from_array(np.array(STD, np.float32).reshape(shape), "std"),
    ]
    nodes = [
        helper.make_node("Sub", [INPUT_NAME, "mean"], ["centred"]),
        helper.make_node("Div", ["centred", "std"], ["normalised"]),
    ]
    current = "normalised"
    for index, convolutions in enumerate(weights.blocks):
        block = f"block{index + 1}"
        for number, (kernel, bias) in enumerate(convolutions):
            conv = f"{block}.conv{number + 1}"
            initializers += [
                numpy_helper.from_array(kernel, f"{conv}.kernel"),
                numpy_helper.from_array(bias, f"{conv}.bias"),
            ]
            nodes += [
                helper.make_node(
                    "Conv",
                    [current, f"{conv}.kernel", f"{conv}.bias"],
                    [conv],
                    kernel_shape=[3, 3],
                    pads=[1, 1, 1, 1],
                ),
                helper.make_node("Relu", [conv], [f"{conv}.relu"]),
            ]
            current = f"{conv}.relu"
        nodes.append(
            helper.make_node(
                "MaxPool", [current], [f"{block}.pool"], kernel_shape=[2, 2], strides=[2, 2]
            )
        )
        current = f"{block}.pool"
    nodes.append(helper.make_node("Flatten", [current], ["features"], axis=1))
    current = "features"
    for index, (matrix, bias) in enumerate(weights.dense):
        layer = f"dense{index + 1}"
        initializers += [
            numpy_helper.from_array(matrix, f"{layer}.weight"),
            numpy_helper.from_array(bias, f"{layer}.bias"),
        ]
        nodes.append(
            helper.make_node("Gemm", [current, f"{layer}.weight", f"{layer}.bias"], [layer])
        )
        current = layer
        if index < len(weights.dense) - 1:
            nodes.append(helper.make_node("Relu", [layer], [f"{layer}.relu"]))
            current = f"{layer}.relu"
    nodes.append(helper.make_node("Softmax", [current], [OUTPUT_NAME], axis=1))
    graph = helper.make_graph(
        nodes,
        f"{MODEL_NAME}-{version}",
        [helper.make_tensor_value_info(INPUT_NAME, TensorProto.FLOAT, ["batch", *INPUT_SHAPE])],
        [helper.make_tensor_value_info(OUTPUT_NAME, TensorProto.FLOAT, ["batch", len(LABELS)])],
        initializers,
    )
    model = helper.make_model(
        graph,
        opset_imports=[helper.make_opsetid("", OPSET)],
        ir_version=IR_VERSION,
        producer_name="aiobs-demo",
        doc_string="aiobs demo image classifier (seeded random weights: a stand-in, not trained)",
    )
    helper.set_model_props(
        model,
        {"build_id": BUILD_ID, "version": version, "labels": ",".join(LABELS)},
    )
    onnx.checker.check_model(model)
    return model


def model_file(directory: Path, version: str) -> Path:
    return directory / f"{MODEL_NAME}-{version}.onnx"


def write_model(directory: Path, version: str) -> Path:
    """Build ``version`` into ``directory`` atomically (concurrent builders are safe)."""
    return save_atomically(model_file(directory, version), build_model(version).SerializeToString())


def save_atomically(path: Path, payload: bytes) -> Path:
    """Write ``payload`` to ``path`` through a temporary file renamed over it: a reader (or
    another builder) sees the old file or the whole new one."""
    path.parent.mkdir(parents=True, exist_ok=True)
    handle, temporary = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(handle, "wb") as out:
            out.write(payload)
        os.chmod(temporary, 0o644)
        os.replace(temporary, path)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise
    return path


# --- the NumPy reference ----------------------------------------------------------------------


def weights_from_file(path: Path) -> Weights:
    """Read the parameters back out of a model file (for the reference computation)."""
    import onnx
    from onnx import numpy_helper

    tensors = {t.name: numpy_helper.to_array(t) for t in onnx.load(str(path)).graph.initializer}
    blocks = tuple(
        tuple(
            (tensors[f"block{i}.conv{j}.kernel"], tensors[f"block{i}.conv{j}.bias"])
            for j in range(1, len(channels) + 1)
        )
        for i, channels in enumerate(CONV_BLOCKS, 1)
    )
    dense = tuple((tensors[f"dense{i}.weight"], tensors[f"dense{i}.bias"]) for i in (1, 2))
    return Weights(blocks, dense)


def reference_forward(weights: Weights, images: np.ndarray) -> np.ndarray:
    """The network in plain NumPy (float64): class probabilities of ``images`` (Nx3x64x64)."""
    matrix, bias = weights.dense[-1]
    logits = _features(weights, images) @ matrix.astype(np.float64) + bias
    logits -= logits.max(axis=1, keepdims=True)
    exp = np.exp(logits)
    probabilities: np.ndarray = exp / exp.sum(axis=1, keepdims=True)
    return probabilities


def _features(
    weights: Weights, images: np.ndarray, dtype: type[np.floating[Any]] = np.float64
) -> np.ndarray:
    """The input of the last layer: everything but the class scores."""
    x = images.astype(dtype)
    mean = np.array(MEAN, dtype).reshape(1, 3, 1, 1)
    x = (x - mean) / np.array(STD, dtype).reshape(1, 3, 1, 1)
    for convolutions in weights.blocks:
        for kernel, bias in convolutions:
            padded = np.pad(x, ((0, 0), (0, 0), (1, 1), (1, 1)))
            windows = np.lib.stride_tricks.sliding_window_view(padded, (3, 3), axis=(2, 3))
            # windows: (N, C, H, W, 3, 3) · kernel: (O, C, 3, 3) → (N, H, W, O)
            x = np.tensordot(windows, kernel.astype(dtype), axes=([1, 4, 5], [1, 2, 3]))
            x = np.maximum(x.transpose(0, 3, 1, 2) + bias.reshape(1, -1, 1, 1), 0.0)
        n, c, h, w = x.shape
        x = x.reshape(n, c, h // 2, 2, w // 2, 2).max(axis=(3, 5))
    x = x.reshape(x.shape[0], -1)
    for matrix, bias in weights.dense[:1]:
        x = np.maximum(x @ matrix.astype(dtype, copy=False) + bias, 0.0)
    return x


# --- the runtime ------------------------------------------------------------------------------


@dataclass(frozen=True)
class LoadedModel:
    """One version in an ONNX Runtime session, warmed up."""

    version: str
    path: Path
    session: Any
    provider: str
    load_seconds: float

    @property
    def device(self) -> str:
        """``cuda:0`` or ``cpu``: the ``device`` label of ``ai_model_info``."""
        return "cuda:0" if self.provider == CUDA_PROVIDER else "cpu"

    def predict(self, images: np.ndarray) -> np.ndarray:
        """Class probabilities (Nx10) of a float32 batch (Nx3x64x64). Thread-safe."""
        outputs = self.session.run([OUTPUT_NAME], {INPUT_NAME: images})
        probabilities: np.ndarray = outputs[0]
        return probabilities


_SESSION_LOCK = threading.Lock()
"""ONNX Runtime's log severity is process-wide: sessions are made one at a time, so that one
being made never logs while another's noise is silenced."""


def open_session(path: Path, device: str, threads: int | None = None) -> Any:
    """An ONNX Runtime session on CUDA when asked for and available, else on the CPU (with
    ``threads`` intra-op threads; ONNX Runtime's default when None).

    ONNX Runtime logs an error for every session whose CUDA provider cannot load (no GPU,
    no CUDA libraries); that noise is silenced while the session is made. The provider in
    use is whatever ``session.get_providers()`` lists first (``get_device()`` only says
    what the package was built for).
    """
    import onnxruntime

    options = onnxruntime.SessionOptions()
    # Spinning worker threads would take the cores the event loop needs between batches.
    options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    if threads is not None:
        options.intra_op_num_threads = threads
        options.inter_op_num_threads = 1
    providers: list[Any] = [CPU_PROVIDER]
    try_cuda = device != "cpu" and CUDA_PROVIDER in onnxruntime.get_available_providers()
    if try_cuda:
        providers.insert(0, (CUDA_PROVIDER, {"device_id": 0}))
    with _SESSION_LOCK:
        onnxruntime.set_default_logger_severity(4 if try_cuda else 3)
        try:
            session = onnxruntime.InferenceSession(str(path), options, providers=providers)
        finally:
            onnxruntime.set_default_logger_severity(3)
    if device == "cuda" and session.get_providers()[0] != CUDA_PROVIDER:
        raise RuntimeError(
            "INFERENCE_DEVICE=cuda: the CUDA execution provider is not available "
            "(onnxruntime-gpu, a GPU and its CUDA libraries are needed)"
        )
    return session


def open_built(
    path: Path, build_id: str, build: Callable[[], Path], device: str, threads: int | None = None
) -> Any:
    """A session on the model file at ``path``, built first by ``build`` when it is missing
    or records another build than ``build_id`` (its ``build_id`` metadata)."""
    if path.exists():
        session = open_session(path, device, threads)
        stored = session.get_modelmeta().custom_metadata_map.get("build_id")
        if stored == build_id:
            return session
        _log.info("model file %s is from build %s; rebuilding", path, stored)
    build()
    return open_session(path, device, threads)


def load(
    directory: Path, version: str, device: str, warmup_batches: tuple[int, ...]
) -> LoadedModel:
    """Open ``version`` from ``directory`` (building the file first if it is missing or from
    another build), then run one batch of each size in ``warmup_batches``."""
    started = time.perf_counter()
    path = model_file(directory, version)
    session = open_built(path, BUILD_ID, lambda: write_model(directory, version), device)
    model = LoadedModel(version, path, session, session.get_providers()[0], 0.0)
    for size in warmup_batches:
        model.predict(np.zeros((size, *INPUT_SHAPE), np.float32))
    return LoadedModel(version, path, session, model.provider, time.perf_counter() - started)


def main(argv: list[str] | None = None) -> int:
    """``python -m demo_service.model [DIR]``: build every version into DIR (default:
    ``MODEL_PATH`` or its default)."""
    args = sys.argv[1:] if argv is None else argv
    directory = Path(args[0]) if args else DemoSettings.from_env().model_path
    for version in VERSION_SEEDS:
        print(write_model(directory, version))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
