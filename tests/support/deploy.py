"""Helpers for the deploy/ tests: render a kustomization with kubectl, offline."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
DEPLOY = ROOT / "deploy"
KUSTOMIZATIONS = {
    "cpu": DEPLOY / "k8s" / "overlays" / "cpu",
    "gpu": DEPLOY / "k8s" / "overlays" / "gpu",
    "prometheus-adapter": DEPLOY / "k8s" / "prometheus-adapter",
    "istio": DEPLOY / "istio",
}
KUBECTL = shutil.which("kubectl")
needs_kubectl = pytest.mark.skipif(
    KUBECTL is None, reason="kubectl (with its built-in kustomize) is not installed"
)
_cache: dict[str, list[dict[str, Any]]] = {}


def render(name: str) -> list[dict[str, Any]]:
    """The documents ``kubectl kustomize`` renders for one of KUSTOMIZATIONS (cached)."""
    if name not in _cache:
        assert KUBECTL is not None
        result = subprocess.run(
            [KUBECTL, "kustomize", str(KUSTOMIZATIONS[name])],
            capture_output=True, text=True, timeout=60, check=False,
        )  # fmt: skip
        assert result.returncode == 0, result.stderr
        _cache[name] = [doc for doc in yaml.safe_load_all(result.stdout) if doc]
    return [dict(doc) for doc in _cache[name]]


def one(documents: list[dict[str, Any]], kind: str, name: str) -> dict[str, Any]:
    """The document of ``kind`` named ``name``."""
    found = [d for d in documents if d["kind"] == kind and d["metadata"]["name"] == name]
    assert len(found) == 1, f"{kind}/{name}: {len(found)} found"
    return found[0]


KUBERNETES_VERSION = "1.32.0"
"""The Kubernetes API the built-in kinds are validated against (kubectl's version here)."""


def validate(document: dict[str, Any]) -> None:
    """Raise when ``document`` fails its schema: its CRD-derived model (deploy_schemas) for
    custom resources, kubernetes-validate --strict for built-in kinds (skips the test when
    the package needed is not installed)."""
    from tests.support.deploy_schemas import MODELS, validate_custom

    if (document["apiVersion"], document["kind"]) in MODELS:
        validate_custom(document)
        return
    kubernetes_validate = pytest.importorskip("kubernetes_validate")
    kubernetes_validate.validate(document, KUBERNETES_VERSION, strict=True)
