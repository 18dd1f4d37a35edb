"""The demo's model: an ONNX Runtime session computes what NumPy computes from the same
weights, builds are deterministic, stale files are rebuilt, the provider in use is the
one reported, and ONNX Runtime's CUDA noise never reaches the terminal."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnxruntime
import pytest

from demo_service import model as demo_model
from tests.demo.conftest import images


@pytest.mark.parametrize("version", list(demo_model.VERSION_SEEDS))
def test_session_matches_the_numpy_reference(model_dir: Path, version: str) -> None:
    """Probabilities from onnxruntime equal a NumPy forward pass over the weights read
    back from the same file, for photographs-like and noise inputs alike."""
    loaded = demo_model.load(model_dir, version, "cpu", (1,))
    batch = np.concatenate(
        [images(5, seed=3), np.random.default_rng(4).random((3, 3, 64, 64), np.float32)]
    )
    expected = demo_model.reference_forward(
        demo_model.weights_from_file(demo_model.model_file(model_dir, version)), batch
    )
    got = loaded.predict(batch)
    assert got.shape == (8, len(demo_model.LABELS))
    np.testing.assert_allclose(got, expected, rtol=1e-4, atol=1e-5)
    assert (got.argmax(axis=1) == expected.argmax(axis=1)).all()
    np.testing.assert_allclose(got.sum(axis=1), 1.0, rtol=1e-5)


def test_batched_and_single_runs_agree(model_dir: Path) -> None:
    """Each row of a batch is what the image alone gives: batching changes no answer."""
    loaded = demo_model.load(model_dir, "v1", "cpu", ())
    batch = images(6, seed=5)
    together = loaded.predict(batch)
    alone = np.concatenate([loaded.predict(batch[i : i + 1]) for i in range(len(batch))])
    np.testing.assert_allclose(together, alone, rtol=1e-4, atol=1e-6)


def test_versions_differ_and_builds_are_deterministic(model_dir: Path) -> None:
    """A rebuild of v1 is byte-for-byte the file on disk; v2 has other weights, so the
    two versions disagree on some images (a canary has something to compare)."""
    rebuilt = demo_model.build_model("v1").SerializeToString()
    assert rebuilt == demo_model.model_file(model_dir, "v1").read_bytes()
    batch = images(16, seed=6)
    v1 = demo_model.load(model_dir, "v1", "cpu", ()).predict(batch)
    v2 = demo_model.load(model_dir, "v2", "cpu", ()).predict(batch)
    assert not np.allclose(v1, v2, atol=1e-3)


def test_predictions_spread_over_classes_and_confidences(model_dir: Path) -> None:
    """The calibrated last layer gives varied labels and confidences, as a trained model
    would (dashboards of ai_prediction_confidence then show a distribution)."""
    probabilities = demo_model.load(model_dir, "v1", "cpu", ()).predict(images(128, seed=7))
    assert len(set(probabilities.argmax(axis=1).tolist())) >= 5
    top = probabilities.max(axis=1)
    assert top.min() < 0.5 < top.max()


def test_missing_and_stale_files_are_built(tmp_path: Path, model_dir: Path) -> None:
    """load() builds a missing file, and rebuilds one whose build id is not this code's."""
    stale = demo_model.model_file(tmp_path, "v1")
    data = demo_model.model_file(model_dir, "v1").read_bytes()
    stale.write_bytes(data.replace(demo_model.BUILD_ID.encode(), b"demo-cnn/0"))
    loaded = demo_model.load(tmp_path, "v1", "cpu", (1,))
    assert stale.read_bytes() == data
    meta = loaded.session.get_modelmeta().custom_metadata_map
    assert meta["build_id"] == demo_model.BUILD_ID
    assert meta["labels"].split(",") == list(demo_model.LABELS)
    assert loaded.load_seconds > 0
    assert not list(tmp_path.glob(".*.tmp")), "no temporary file left behind"


def test_auto_device_falls_back_to_cpu_quietly(
    model_dir: Path, capfd: pytest.CaptureFixture[str]
) -> None:
    """Without a usable GPU, 'auto' runs on the CPU provider, reports device 'cpu', and
    onnxruntime's CUDA load error is not printed."""
    loaded = demo_model.load(model_dir, "v1", "auto", (1,))
    if loaded.provider == demo_model.CUDA_PROVIDER:
        pytest.skip("a working CUDA provider: nothing falls back here")
    assert loaded.provider == demo_model.CPU_PROVIDER
    assert loaded.session.get_providers() == [demo_model.CPU_PROVIDER]
    assert loaded.device == "cpu"
    captured = capfd.readouterr()
    assert "onnxruntime" not in captured.err + captured.out


def test_cuda_device_fails_clearly_without_cuda(model_dir: Path) -> None:
    """INFERENCE_DEVICE=cuda never falls back silently."""
    if "CUDAExecutionProvider" in onnxruntime.get_available_providers():
        loaded = demo_model.load(model_dir, "v1", "auto", ())
        if loaded.provider == demo_model.CUDA_PROVIDER:
            pytest.skip("a working CUDA provider")
    with pytest.raises(RuntimeError, match="INFERENCE_DEVICE=cuda"):
        demo_model.open_session(demo_model.model_file(model_dir, "v1"), "cuda")
