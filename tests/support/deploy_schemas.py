"""The custom resources in ``deploy/`` validated against pydantic models generated from their
CRDs: ``cloudcoil-models-prometheus-operator`` (``monitoring.coreos.com/v1``) and
``cloudcoil-models-istio`` (``networking.istio.io/v1``, ``security.istio.io/v1``).

The models ignore unknown fields by default, so validation forbids them (``extra="forbid"``,
which pydantic applies to every nested model), accepts only the CRDs' camelCase names
(``by_name=False``: no ``scrape_timeout`` for ``scrapeTimeout``) and coerces nothing
(``strict=True``). A typo or a field in the wrong place fails offline."""

from __future__ import annotations

from typing import Any

import pytest

_PROMETHEUS = "cloudcoil.models.prometheus_operator.v1"
_NETWORKING = "cloudcoil.models.istio.networking.v1"
_SECURITY = "cloudcoil.models.istio.security.v1"

MODELS: dict[tuple[str, str], str] = {
    ("monitoring.coreos.com/v1", "ServiceMonitor"): _PROMETHEUS,
    ("monitoring.coreos.com/v1", "PrometheusRule"): _PROMETHEUS,
    ("networking.istio.io/v1", "Gateway"): _NETWORKING,
    ("networking.istio.io/v1", "VirtualService"): _NETWORKING,
    ("networking.istio.io/v1", "DestinationRule"): _NETWORKING,
    ("security.istio.io/v1", "PeerAuthentication"): _SECURITY,
    ("security.istio.io/v1", "AuthorizationPolicy"): _SECURITY,
}
"""(apiVersion, kind) of each custom resource to the module holding its model (named kind)."""


def validate_custom(document: dict[str, Any]) -> None:
    """Raise ``pydantic.ValidationError`` when ``document`` fails its CRD model (skips the test
    when the cloudcoil models are not installed)."""
    key = (document["apiVersion"], document["kind"])
    model = getattr(pytest.importorskip(MODELS[key]), document["kind"])
    model.model_validate(document, strict=True, extra="forbid", by_alias=True, by_name=False)
