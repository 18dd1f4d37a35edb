"""The demo's generative model: a tiny character-level decoder-only transformer built in code.

``tiny-lm`` reads the last :data:`CONTEXT_WINDOW` (32) token ids of a sequence, left-padded
with :data:`PAD_ID`, and returns the logits of the token that comes next:

    input_ids [batch, 32] int64
      → token embedding + learned positional embedding (64 wide)
      → 2 pre-norm blocks, each: LayerNorm → causal self-attention (4 heads of 16; padding
        keys masked) → residual; LayerNorm → MLP with ReLU → residual
      → final LayerNorm → projection to the 97 vocabulary logits
    logits [batch, 97] float32: the last position's only

The first block's MLP is 64→256→64. The last block computes only the last position's query
and MLP (nothing else reaches the output), and that MLP is wide, 64→32768→64: 4.2 M of the
4.3 M parameters (a 17 MB file). Its weights are read once per step whatever the batch, as a
real language model's weights are in each decode step, and that is what makes batching pay:
on a 2-core CPU a step costs about 2 ms for one sequence and 4-5 ms for eight. There is no
key/value cache: every step reads the whole window again, which the fixed window keeps cheap
and which makes sequences at different positions batch together trivially.

Vocabulary (:class:`Tokenizer`): ids 0-94 are the 95 printable ASCII characters (space to
``~``, in code-point order); :data:`EOS_ID` (95) ends a generation; :data:`PAD_ID` (96) fills
the window's left end (masked out of attention, never generated: its logit is pinned far
below every other). Whitespace outside the alphabet (newline, tab...) encodes as a space,
any other character outside it as :data:`PLACEHOLDER` (``?``).

Weights come from a seeded NumPy generator (one seed per version): every build of a version is
byte-for-byte the same file. They are random, so the text is gibberish; the output layer is
calibrated on seeded contexts so that next-token distributions vary with the context (at
temperature 1 the text is varied, not one character repeated) and the end-of-sequence token
has a mean probability of :data:`EOS_PROBABILITY`: sampled generations end on their own,
half of them within about 40 tokens, a few after 200 or more. Greedy decoding mostly runs to
its ``max_tokens``.

:func:`reference_forward` computes the same function in NumPy from the same weights; the
tests hold the ONNX Runtime session to it. ``python -m demo_service.textgen_model [DIR]``
builds the model files.
"""

from __future__ import annotations

import math
import sys
import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

import numpy as np

from demo_service import model as classifier_model
from demo_service.config import DemoSettings

MODEL_NAME = "tiny-lm"
VERSION_SEEDS: Mapping[str, int] = {"v1": 1, "v2": 2}
"""The versions: v2 is the same network with other weights."""
DEFAULT_VERSION = "v1"

ALPHABET = "".join(chr(code) for code in range(32, 127))
"""The 95 printable ASCII characters; a character's id is its index here."""
EOS_ID = len(ALPHABET)  # 95
PAD_ID = EOS_ID + 1  # 96
VOCAB_SIZE = PAD_ID + 1  # 97
PLACEHOLDER = "?"
"""What a character outside the alphabet (other than whitespace) encodes as."""

CONTEXT_WINDOW = 32
"""Positions the model reads: the last 32 tokens of a sequence (prompt and generated text)."""
EMBEDDING = 64
HEADS = 4
HEAD_SIZE = EMBEDDING // HEADS
MLP_WIDTHS = (4 * EMBEDDING, 32768)
"""Hidden units of each block's MLP. The last block's MLP only sees the last position, so it
is wide: its weights are read once per step whatever the batch."""
LAYERS = len(MLP_WIDTHS)
LAYER_NORM_EPSILON = 1e-5
MASKED = -1e9
"""Added to the attention score of a masked key (a later position or padding)."""
PAD_LOGIT = -100.0
"""The padding token's logit: never generated."""
LOGIT_SPREAD = 3.0
"""Standard deviation of each character's logit over the calibration contexts."""
EOS_SPREAD = 1.0
"""Standard deviation of the end-of-sequence logit: lower, so that its probability varies
less with the context (no context ends every generation at once, none never ends)."""
EOS_PROBABILITY = 1 / 60
"""Mean probability of the end-of-sequence token over the calibration contexts."""
CALIBRATION_CONTEXTS = 128

INPUT_NAME = "input_ids"
OUTPUT_NAME = "logits"
OPSET = 17
IR_VERSION = 9  # what onnxruntime 1.17+ reads; onnx 1.23 would write 11+ by default
BUILD_ID = "tiny-lm/1"
"""Stored in each file's metadata; a file with another id is rebuilt (architecture changed)."""
CUDA_PROVIDER = classifier_model.CUDA_PROVIDER
DEFAULT_THREADS = 1
"""ONNX Runtime intra-op threads on the CPU: one leaves the other core of a 2-core machine to
the event loop (HTTP, tokenizing, streaming); a second thread saves little on matrices this
small. Threads never spin between steps."""


# --- the vocabulary ---------------------------------------------------------------------------


class Tokenizer:
    """Characters to ids and back. ``encode`` never fails: whitespace outside the alphabet
    becomes a space, any other unknown character :data:`PLACEHOLDER`. ``decode`` drops the
    end-of-sequence and padding ids."""

    vocab_size = VOCAB_SIZE
    eos_id = EOS_ID
    pad_id = PAD_ID

    def __init__(self) -> None:
        self._ids = {character: index for index, character in enumerate(ALPHABET)}
        self._placeholder = self._ids[PLACEHOLDER]
        self._space = self._ids[" "]

    def encode(self, text: str) -> list[int]:
        ids = self._ids
        return [
            ids.get(character, self._space if character.isspace() else self._placeholder)
            for character in text
        ]

    def decode(self, ids: Iterable[int]) -> str:
        characters = []
        for token in ids:
            token = int(token)
            if 0 <= token < EOS_ID:
                characters.append(ALPHABET[token])
            elif token not in (EOS_ID, PAD_ID):
                raise ValueError(f"token id {token} is not in the vocabulary (0..{PAD_ID})")
        return "".join(characters)

    def piece(self, token: int) -> str:
        """The text of one id: its character, or ``""`` for the end-of-sequence and padding."""
        return ALPHABET[token] if 0 <= token < EOS_ID else ""


TOKENIZER = Tokenizer()


def window(ids: Sequence[int]) -> np.ndarray:
    """The model input of one sequence: its last :data:`CONTEXT_WINDOW` ids, left-padded."""
    row = np.full(CONTEXT_WINDOW, PAD_ID, np.int64)
    tail = ids[-CONTEXT_WINDOW:]
    if len(tail):
        row[CONTEXT_WINDOW - len(tail) :] = tail
    return row


# --- the weights ------------------------------------------------------------------------------


@dataclass(frozen=True)
class Block:
    """One transformer block. Matrices are (in, out)."""

    norm1: tuple[np.ndarray, np.ndarray]  # scale, bias (EMBEDDING,)
    query: np.ndarray
    key: np.ndarray
    value: np.ndarray
    attention_out: np.ndarray
    norm2: tuple[np.ndarray, np.ndarray]
    mlp_in: tuple[np.ndarray, np.ndarray]  # (EMBEDDING, width), (width,)
    mlp_out: tuple[np.ndarray, np.ndarray]  # (width, EMBEDDING), (EMBEDDING,)


@dataclass(frozen=True)
class Weights:
    """Every parameter of the network, as NumPy float32 arrays."""

    token_embedding: np.ndarray  # (VOCAB_SIZE, EMBEDDING)
    position_embedding: np.ndarray  # (CONTEXT_WINDOW, EMBEDDING)
    blocks: tuple[Block, ...]
    final_norm: tuple[np.ndarray, np.ndarray]
    output: tuple[np.ndarray, np.ndarray]  # (EMBEDDING, VOCAB_SIZE), (VOCAB_SIZE,)


def make_weights(seed: int) -> Weights:
    """Weights from ``numpy.random.default_rng(seed)``: embeddings of unit scale, matrices
    scaled by ``1/sqrt(fan_in)``, layer norms near identity; then the output layer calibrated
    on seeded contexts (random text of random lengths): each token's logit centred and scaled
    to :data:`LOGIT_SPREAD`, the end-of-sequence bias set so that its mean probability is
    :data:`EOS_PROBABILITY`, the padding logit pinned at :data:`PAD_LOGIT`."""
    rng = np.random.default_rng(seed)

    def matrix(rows: int, columns: int, gain: float = 1.0) -> np.ndarray:
        values: np.ndarray = rng.standard_normal((rows, columns), dtype=np.float32)
        values *= np.float32(gain / math.sqrt(rows))
        return values

    def norm() -> tuple[np.ndarray, np.ndarray]:
        scale = 1.0 + 0.1 * rng.standard_normal(EMBEDDING, dtype=np.float32)
        return scale.astype(np.float32), 0.02 * rng.standard_normal(EMBEDDING, dtype=np.float32)

    token_embedding = rng.standard_normal((VOCAB_SIZE, EMBEDDING), dtype=np.float32)
    token_embedding[PAD_ID] = 0.0
    position_embedding = 0.5 * rng.standard_normal((CONTEXT_WINDOW, EMBEDDING), dtype=np.float32)
    blocks = []
    for width in MLP_WIDTHS:
        blocks.append(
            Block(
                norm1=norm(),
                query=matrix(EMBEDDING, EMBEDDING, 2.0),
                key=matrix(EMBEDDING, EMBEDDING, 2.0),
                value=matrix(EMBEDDING, EMBEDDING),
                attention_out=matrix(EMBEDDING, EMBEDDING),
                norm2=norm(),
                mlp_in=(
                    matrix(EMBEDDING, width),
                    0.02 * rng.standard_normal(width, dtype=np.float32),
                ),
                mlp_out=(
                    matrix(width, EMBEDDING),
                    0.02 * rng.standard_normal(EMBEDDING, dtype=np.float32),
                ),
            )
        )
    output = matrix(EMBEDDING, VOCAB_SIZE)
    output[:, PAD_ID] = 0.0
    partial = Weights(
        token_embedding,
        position_embedding,
        tuple(blocks),
        norm(),
        (output, np.zeros(VOCAB_SIZE, np.float32)),
    )
    contexts = calibration_contexts(rng, CALIBRATION_CONTEXTS)
    logits = _hidden(partial, contexts) @ output.astype(np.float64)
    target = np.full(VOCAB_SIZE, LOGIT_SPREAD)
    target[EOS_ID] = EOS_SPREAD
    target[PAD_ID] = 0.0
    scale = target / np.maximum(logits.std(axis=0), 1e-12)
    bias = -logits.mean(axis=0) * scale
    bias[EOS_ID] += _eos_shift(logits * scale + bias)
    bias[PAD_ID] = PAD_LOGIT
    return Weights(
        token_embedding,
        position_embedding,
        tuple(blocks),
        partial.final_norm,
        ((output * scale).astype(np.float32), bias.astype(np.float32)),
    )


def calibration_contexts(rng: np.random.Generator, count: int) -> np.ndarray:
    """``count`` model inputs: random printable text, 1 to :data:`CONTEXT_WINDOW` long."""
    rows = np.full((count, CONTEXT_WINDOW), PAD_ID, np.int64)
    lengths = rng.integers(1, CONTEXT_WINDOW + 1, count)
    for row, length in zip(rows, lengths, strict=True):
        row[CONTEXT_WINDOW - length :] = rng.integers(0, EOS_ID, length)
    return rows


def _eos_shift(logits: np.ndarray) -> float:
    """What to add to the end-of-sequence logit for its mean probability (softmax over every
    token but padding) to be :data:`EOS_PROBABILITY`: bisection, the mean rising with it."""
    usable = logits[:, : EOS_ID + 1]
    low, high = -50.0, 50.0
    for _ in range(60):
        shift = (low + high) / 2
        shifted = usable.copy()
        shifted[:, EOS_ID] += shift
        shifted -= shifted.max(axis=1, keepdims=True)
        exp = np.exp(shifted)
        probability = float((exp[:, EOS_ID] / exp.sum(axis=1)).mean())
        if probability < EOS_PROBABILITY:
            low = shift
        else:
            high = shift
    return (low + high) / 2


# --- the ONNX graph ---------------------------------------------------------------------------


def build_model(version: str) -> Any:
    """The ONNX ``ModelProto`` of ``version`` (imports ``onnx``: only needed to build)."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    weights = make_weights(VERSION_SEEDS[version])
    initializers: list[Any] = []
    nodes: list[Any] = []

    def constant(name: str, value: np.ndarray) -> str:
        initializers.append(numpy_helper.from_array(value, name))
        return name

    def node(op: str, inputs: list[str], output: str, **attributes: Any) -> str:
        nodes.append(helper.make_node(op, inputs, [output], name=output, **attributes))
        return output

    def layer_norm(x: str, params: tuple[np.ndarray, np.ndarray], name: str) -> str:
        scale = constant(f"{name}.scale", params[0])
        bias = constant(f"{name}.bias", params[1])
        return node(
            "LayerNormalization", [x, scale, bias], name, axis=-1, epsilon=LAYER_NORM_EPSILON
        )

    def linear(x: str, matrix: np.ndarray, name: str, bias: np.ndarray | None = None) -> str:
        product = node("MatMul", [x, constant(f"{name}.weight", matrix)], f"{name}.matmul")
        if bias is None:
            return product
        return node("Add", [product, constant(f"{name}.bias", bias)], name)

    heads_shape = constant("shape.heads", np.array([0, 0, HEADS, HEAD_SIZE], np.int64))
    merged_shape = constant("shape.merged", np.array([0, 0, EMBEDDING], np.int64))

    def split_heads(x: str, name: str, transpose_to: list[int]) -> str:
        shaped = node("Reshape", [x, heads_shape], f"{name}.heads")
        return node("Transpose", [shaped], f"{name}.t", perm=transpose_to)

    # Embeddings.
    tokens = node(
        "Gather",
        [constant("token_embedding", weights.token_embedding), INPUT_NAME],
        "embed.tokens",
        axis=0,
    )
    x = node("Add", [tokens, constant("position_embedding", weights.position_embedding)], "embed")
    # Masks: a key is masked for a query when it comes later (causal) or is padding.
    causal = np.triu(np.full((CONTEXT_WINDOW, CONTEXT_WINDOW), MASKED, np.float32), k=1)
    causal_mask = constant("mask.causal", causal)
    is_pad = node(
        "Equal", [INPUT_NAME, constant("pad_id", np.array(PAD_ID, np.int64))], "mask.is_pad"
    )
    pad_float = node("Cast", [is_pad], "mask.pad_float", to=TensorProto.FLOAT)
    pad_scores = node("Mul", [pad_float, constant("mask.value", _f32(MASKED))], "mask.pad_scores")
    pad_mask = node(
        "Unsqueeze", [pad_scores, constant("axes.heads", np.array([1, 2], np.int64))], "mask.pad"
    )  # [batch, 1, 1, W]
    full_mask = node("Add", [pad_mask, causal_mask], "mask.full")  # [batch, 1, W, W]
    last = (
        constant("slice.start", np.array([CONTEXT_WINDOW - 1], np.int64)),
        constant("slice.end", np.array([CONTEXT_WINDOW], np.int64)),
        constant("slice.axis", np.array([1], np.int64)),
    )
    scale = constant("attention.scale", _f32(1.0 / math.sqrt(HEAD_SIZE)))

    for index, block in enumerate(weights.blocks):
        name = f"block{index + 1}"
        final = index == len(weights.blocks) - 1
        normed = layer_norm(x, block.norm1, f"{name}.norm1")
        queries_in = node("Slice", [normed, *last], f"{name}.last") if final else normed
        residual = node("Slice", [x, *last], f"{name}.residual") if final else x
        query = split_heads(
            linear(queries_in, block.query, f"{name}.query"), f"{name}.q", [0, 2, 1, 3]
        )  # [batch, heads, queries, head]
        key = split_heads(
            linear(normed, block.key, f"{name}.key"), f"{name}.k", [0, 2, 3, 1]
        )  # [batch, heads, head, W]
        value = split_heads(
            linear(normed, block.value, f"{name}.value"), f"{name}.v", [0, 2, 1, 3]
        )  # [batch, heads, W, head]
        scores = node("Mul", [node("MatMul", [query, key], f"{name}.qk"), scale], f"{name}.scores")
        masked = node("Add", [scores, pad_mask if final else full_mask], f"{name}.masked")
        attention = node("Softmax", [masked], f"{name}.attention", axis=-1)
        mixed = node("MatMul", [attention, value], f"{name}.mixed")
        merged = node(
            "Reshape",
            [node("Transpose", [mixed], f"{name}.mixed.t", perm=[0, 2, 1, 3]), merged_shape],
            f"{name}.merged",
        )
        x = node(
            "Add",
            [residual, linear(merged, block.attention_out, f"{name}.attn_out")],
            f"{name}.after_attention",
        )
        normed = layer_norm(x, block.norm2, f"{name}.norm2")
        hidden = linear(normed, block.mlp_in[0], f"{name}.mlp_in", block.mlp_in[1])
        hidden = node("Relu", [hidden], f"{name}.relu")
        mlp = linear(hidden, block.mlp_out[0], f"{name}.mlp_out", block.mlp_out[1])
        x = node("Add", [x, mlp], f"{name}.out")
    final_normed = layer_norm(x, weights.final_norm, "final_norm")  # [batch, 1, EMBEDDING]
    logits = linear(final_normed, weights.output[0], "lm_head", weights.output[1])
    node("Squeeze", [logits, constant("axes.position", np.array([1], np.int64))], OUTPUT_NAME)

    graph = helper.make_graph(
        nodes,
        f"{MODEL_NAME}-{version}",
        [helper.make_tensor_value_info(INPUT_NAME, TensorProto.INT64, ["batch", CONTEXT_WINDOW])],
        [helper.make_tensor_value_info(OUTPUT_NAME, TensorProto.FLOAT, ["batch", VOCAB_SIZE])],
        initializers,
    )
    model = helper.make_model(
        graph,
        opset_imports=[helper.make_opsetid("", OPSET)],
        ir_version=IR_VERSION,
        producer_name="aiobs-demo",
        doc_string="aiobs demo character-level language model (seeded random weights: a "
        "stand-in, not trained)",
    )
    helper.set_model_props(
        model,
        {
            "build_id": BUILD_ID,
            "version": version,
            "context_window": str(CONTEXT_WINDOW),
            "vocabulary": "printable ASCII 32-126, then <eos>, <pad>",
        },
    )
    onnx.checker.check_model(model)
    return model


def _f32(value: float) -> np.ndarray:
    return np.array(value, np.float32)


def model_file(directory: Path, version: str) -> Path:
    return directory / f"{MODEL_NAME}-{version}.onnx"


def write_model(directory: Path, version: str) -> Path:
    """Build ``version`` into ``directory`` atomically (concurrent builders are safe)."""
    return classifier_model.save_atomically(
        model_file(directory, version), build_model(version).SerializeToString()
    )


# --- the NumPy reference ----------------------------------------------------------------------


def weights_from_file(path: Path) -> Weights:
    """Read the parameters back out of a model file (for the reference computation)."""
    import onnx
    from onnx import numpy_helper

    tensors = {t.name: numpy_helper.to_array(t) for t in onnx.load(str(path)).graph.initializer}

    def pair(name: str) -> tuple[np.ndarray, np.ndarray]:
        return tensors[f"{name}.scale"], tensors[f"{name}.bias"]

    blocks = tuple(
        Block(
            norm1=pair(f"block{i}.norm1"),
            query=tensors[f"block{i}.query.weight"],
            key=tensors[f"block{i}.key.weight"],
            value=tensors[f"block{i}.value.weight"],
            attention_out=tensors[f"block{i}.attn_out.weight"],
            norm2=pair(f"block{i}.norm2"),
            mlp_in=(tensors[f"block{i}.mlp_in.weight"], tensors[f"block{i}.mlp_in.bias"]),
            mlp_out=(tensors[f"block{i}.mlp_out.weight"], tensors[f"block{i}.mlp_out.bias"]),
        )
        for i in range(1, LAYERS + 1)
    )
    return Weights(
        tensors["token_embedding"],
        tensors["position_embedding"],
        blocks,
        pair("final_norm"),
        (tensors["lm_head.weight"], tensors["lm_head.bias"]),
    )


def reference_forward(weights: Weights, ids: np.ndarray) -> np.ndarray:
    """The network in plain NumPy (float64), every position computed in full: the logits
    (``[batch, VOCAB_SIZE]``) of the next token after the last position of ``ids``
    (``[batch, CONTEXT_WINDOW]`` int64, left-padded with :data:`PAD_ID`)."""
    matrix, bias = weights.output
    logits: np.ndarray = _hidden(weights, ids) @ matrix.astype(np.float64) + bias
    return logits


def _hidden(weights: Weights, ids: np.ndarray) -> np.ndarray:
    """The input of the output layer (float64): the last position after the final norm."""
    x = weights.token_embedding.astype(np.float64)[ids] + weights.position_embedding
    batch, width = ids.shape
    causal = np.triu(np.full((width, width), MASKED), k=1)
    mask = causal[None, None] + np.where(ids == PAD_ID, MASKED, 0.0)[:, None, None, :]
    for index, block in enumerate(weights.blocks):
        normed = _layer_norm(x, block.norm1)

        def heads(matrix: np.ndarray, normed: np.ndarray = normed) -> np.ndarray:
            projected: np.ndarray = normed @ matrix.astype(np.float64)
            split: np.ndarray = projected.reshape(batch, width, HEADS, HEAD_SIZE)
            transposed: np.ndarray = split.transpose(0, 2, 1, 3)
            return transposed

        query, key, value = heads(block.query), heads(block.key), heads(block.value)
        scores = query @ key.transpose(0, 1, 3, 2) / math.sqrt(HEAD_SIZE) + mask
        scores -= scores.max(axis=-1, keepdims=True)
        attention = np.exp(scores)
        attention /= attention.sum(axis=-1, keepdims=True)
        mixed = (attention @ value).transpose(0, 2, 1, 3).reshape(batch, width, EMBEDDING)
        x = x + mixed @ block.attention_out.astype(np.float64)
        if index == len(weights.blocks) - 1:
            x = x[:, -1:]  # the rest of the last block only matters at the last position
        hidden = _layer_norm(x, block.norm2) @ block.mlp_in[0].astype(np.float64)
        hidden = np.maximum(hidden + block.mlp_in[1], 0.0)
        x = x + hidden @ block.mlp_out[0].astype(np.float64) + block.mlp_out[1]
    result: np.ndarray = _layer_norm(x[:, -1], weights.final_norm)
    return result


def _layer_norm(x: np.ndarray, params: tuple[np.ndarray, np.ndarray]) -> np.ndarray:
    mean = x.mean(axis=-1, keepdims=True)
    variance = ((x - mean) ** 2).mean(axis=-1, keepdims=True)
    normed: np.ndarray = (x - mean) / np.sqrt(variance + LAYER_NORM_EPSILON)
    result: np.ndarray = normed * params[0] + params[1]
    return result


# --- the runtime ------------------------------------------------------------------------------


@dataclass(frozen=True)
class LoadedTextModel:
    """One version in an ONNX Runtime session, warmed up."""

    version: str
    path: Path
    session: Any
    provider: str
    load_seconds: float
    name: ClassVar[str] = MODEL_NAME
    tokenizer: ClassVar[Tokenizer] = TOKENIZER
    context_window: ClassVar[int] = CONTEXT_WINDOW

    @property
    def device(self) -> str:
        """``cuda:0`` or ``cpu``: the ``device`` label of ``ai_model_info``."""
        return "cuda:0" if self.provider == CUDA_PROVIDER else "cpu"

    def logits(self, ids: np.ndarray) -> np.ndarray:
        """Next-token logits ``[batch, VOCAB_SIZE]`` float32 of model inputs ``[batch,
        CONTEXT_WINDOW]`` int64 (see :func:`window`). Thread-safe."""
        outputs = self.session.run([OUTPUT_NAME], {INPUT_NAME: ids})
        logits: np.ndarray = outputs[0]
        return logits


def load(
    directory: Path,
    version: str = DEFAULT_VERSION,
    device: str = "auto",
    warmup_batches: tuple[int, ...] = (1, 8),
    *,
    threads: int = DEFAULT_THREADS,
) -> LoadedTextModel:
    """Open ``version`` from ``directory`` (building the file first if it is missing or from
    another build), then run one batch of each size in ``warmup_batches``."""
    started = time.perf_counter()
    path = model_file(directory, version)
    session = classifier_model.open_built(
        path, BUILD_ID, lambda: write_model(directory, version), device, threads
    )
    model = LoadedTextModel(version, path, session, session.get_providers()[0], 0.0)
    for size in warmup_batches:
        model.logits(np.full((size, CONTEXT_WINDOW), PAD_ID - 1, np.int64))
    return LoadedTextModel(version, path, session, model.provider, time.perf_counter() - started)


def main(argv: list[str] | None = None) -> int:
    """``python -m demo_service.textgen_model [DIR]``: build every version into DIR (default:
    ``MODEL_PATH`` or its default)."""
    args = sys.argv[1:] if argv is None else argv
    directory = Path(args[0]) if args else DemoSettings.from_env().model_path
    for version in VERSION_SEEDS:
        print(write_model(directory, version))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
