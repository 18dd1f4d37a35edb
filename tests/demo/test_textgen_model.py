"""The generative model: an ONNX Runtime session computes what NumPy computes from the same
weights, builds are deterministic, padding is masked, the calibrated outputs vary and end
now and then, the tokenizer round-trips, stale files are rebuilt, the provider is reported."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from demo_service import textgen_model as tm


@pytest.fixture(scope="module")
def model(textgen_model_dir: Path) -> tm.LoadedTextModel:
    return tm.load(textgen_model_dir, "v1", "cpu", (1,))


def contexts(seed: int, count: int) -> np.ndarray:
    """Model inputs of every kind: random text of random lengths, a full window, one
    token, only end-of-sequence ids."""
    rows = tm.calibration_contexts(np.random.default_rng(seed), count)
    rows[0] = np.random.default_rng(seed).integers(0, tm.EOS_ID, tm.CONTEXT_WINDOW)
    rows[1] = tm.window([tm.TOKENIZER.encode("A")[0]])
    rows[2] = tm.window([tm.EOS_ID] * 5)
    return rows


def test_session_matches_the_numpy_reference(
    model: tm.LoadedTextModel, textgen_model_dir: Path
) -> None:
    """Logits from onnxruntime equal a NumPy forward pass (every position of every block
    computed) over the weights read back from the same file."""
    batch = contexts(1, 8)
    weights = tm.weights_from_file(tm.model_file(textgen_model_dir, "v1"))
    expected = tm.reference_forward(weights, batch)
    got = model.logits(batch)
    assert got.shape == (8, tm.VOCAB_SIZE)
    assert got.dtype == np.float32
    np.testing.assert_allclose(got, expected, rtol=1e-4, atol=1e-4)
    assert (got.argmax(axis=1) == expected.argmax(axis=1)).all()


def test_batched_and_single_runs_agree(model: tm.LoadedTextModel) -> None:
    """Each row of a batch is what the sequence alone gives: batching changes no logit."""
    batch = contexts(2, 8)
    together = model.logits(batch)
    alone = np.concatenate([model.logits(batch[i : i + 1]) for i in range(len(batch))])
    np.testing.assert_allclose(together, alone, rtol=1e-5, atol=1e-5)


def test_padding_is_masked_and_the_context_matters(model: tm.LoadedTextModel) -> None:
    """What stands in padded positions changes nothing (it is masked), while the tokens
    before the last one do change the prediction (attention reads them)."""
    ids = tm.TOKENIZER.encode("Hello there")
    padded = tm.window(ids)
    junk = padded.copy()
    junk[: tm.CONTEXT_WINDOW - len(ids)] = tm.TOKENIZER.encode("x")[0]
    assert not np.allclose(model.logits(junk[None]), model.logits(padded[None]), atol=1e-3)
    weights = tm.weights_from_file(model.path)
    reference = tm.reference_forward(weights, padded[None])
    np.testing.assert_allclose(model.logits(padded[None]), reference, rtol=1e-4, atol=1e-4)
    other = tm.window(tm.TOKENIZER.encode("Jello where"))
    assert other[-1] == padded[-1]
    assert not np.allclose(model.logits(other[None]), model.logits(padded[None]), atol=1e-2)


def test_builds_are_deterministic_and_versions_differ(
    textgen_model_dir: Path, tmp_path: Path
) -> None:
    """A rebuild of v1 is byte-for-byte the file on disk; v2 has other weights."""
    assert (
        tm.build_model("v1").SerializeToString()
        == tm.model_file(textgen_model_dir, "v1").read_bytes()
    )
    v2 = tm.load(tmp_path, "v2", "cpu", ())
    batch = contexts(3, 8)
    v1 = tm.load(textgen_model_dir, "v1", "cpu", ())
    assert not np.allclose(v1.logits(batch), v2.logits(batch), atol=1e-2)


def test_calibrated_outputs_vary_and_end_modestly(model: tm.LoadedTextModel) -> None:
    """Over random contexts the most likely next character varies, sampling at temperature
    1 is far from one character, the end-of-sequence token has a modest probability (about
    EOS_PROBABILITY) and padding none."""
    logits = model.logits(contexts(4, 128)).astype(np.float64)
    probabilities = np.exp(logits - logits.max(axis=1, keepdims=True))
    probabilities /= probabilities.sum(axis=1, keepdims=True)
    assert len(set(probabilities.argmax(axis=1).tolist())) >= 20
    assert probabilities.max(axis=1).mean() < 0.6
    eos = probabilities[:, tm.EOS_ID].mean()
    assert tm.EOS_PROBABILITY / 3 < eos < tm.EOS_PROBABILITY * 3
    assert probabilities[:, tm.PAD_ID].max() < 1e-30


def test_tokenizer_round_trips_and_replaces_the_unknown() -> None:
    tokenizer = tm.TOKENIZER
    assert len(tm.ALPHABET) == 95
    assert (tm.EOS_ID, tm.PAD_ID, tm.VOCAB_SIZE) == (95, 96, 97)
    text = "Hello, world! ~{}[]`'\"\\ 0123"
    ids = tokenizer.encode(text)
    assert len(ids) == len(text)
    assert all(0 <= i < tm.EOS_ID for i in ids)
    assert tokenizer.decode(ids) == text
    assert tokenizer.encode("a\nb\tc") == tokenizer.encode("a b c")
    assert tokenizer.decode(tokenizer.encode("café ☃")) == "caf? ?"
    assert tokenizer.decode([*tokenizer.encode("ab"), tm.EOS_ID, tm.PAD_ID]) == "ab"
    assert tokenizer.piece(tm.EOS_ID) == ""
    with pytest.raises(ValueError, match="not in the vocabulary"):
        tokenizer.decode([tm.VOCAB_SIZE])


def test_window_left_pads_and_keeps_the_last_tokens() -> None:
    short = tm.window([1, 2, 3])
    assert short.dtype == np.int64
    assert short.shape == (tm.CONTEXT_WINDOW,)
    assert (short[:-3] == tm.PAD_ID).all()
    assert short[-3:].tolist() == [1, 2, 3]
    long = list(range(90)) * 2
    assert tm.window(long).tolist() == long[-tm.CONTEXT_WINDOW :]
    assert (tm.window([]) == tm.PAD_ID).all()


def test_missing_and_stale_files_are_built(tmp_path: Path, textgen_model_dir: Path) -> None:
    """load() builds a missing file, and rebuilds one whose build id is not this code's; the
    provider it reports is the session's."""
    stale = tm.model_file(tmp_path, "v1")
    data = tm.model_file(textgen_model_dir, "v1").read_bytes()
    stale.write_bytes(data.replace(tm.BUILD_ID.encode(), b"tiny-lm/0"))
    loaded = tm.load(tmp_path, "v1", "auto", (1, 8))
    assert stale.read_bytes() == data
    meta = loaded.session.get_modelmeta().custom_metadata_map
    assert meta["build_id"] == tm.BUILD_ID
    assert meta["context_window"] == str(tm.CONTEXT_WINDOW)
    assert loaded.provider == loaded.session.get_providers()[0]
    assert loaded.device == ("cuda:0" if loaded.provider == tm.CUDA_PROVIDER else "cpu")
    assert loaded.load_seconds > 0
    assert not list(tmp_path.glob(".*.tmp")), "no temporary file left behind"


def test_cpu_session_uses_the_threads_asked_for(textgen_model_dir: Path) -> None:
    loaded = tm.load(textgen_model_dir, "v1", "cpu", (), threads=2)
    assert loaded.session.get_providers() == ["CPUExecutionProvider"]
    assert loaded.session.get_session_options().intra_op_num_threads == 2
    assert loaded.device == "cpu"
