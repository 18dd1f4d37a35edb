"""The docs are checked against the code they describe, so neither drifts."""

from __future__ import annotations

import dataclasses
from pathlib import Path

from aiobs import Settings, catalog
from aiobs._settings import ENVIRONMENT_VARIABLES
from aiobs.ops.docs import metrics_markdown

DOCS = Path(__file__).resolve().parent.parent / "docs"


def test_metrics_doc_is_generated_from_the_catalog() -> None:
    """docs/metrics.md is exactly what `aiobs docs metrics` generates: a catalog change
    without regenerating it fails here."""
    assert (DOCS / "metrics.md").read_text() == metrics_markdown()


def test_metrics_doc_has_a_row_per_metric() -> None:
    """Every catalog metric has a row with its type, unit and labels."""
    text = metrics_markdown()
    for metric in catalog.METRICS:
        labels = ", ".join(metric.labels) or "—"
        assert f"| `{metric.name}` | {metric.kind} | {metric.unit} | {labels} |" in text


def test_configuration_doc_lists_every_setting_and_variable() -> None:
    """Every settings field and every environment variable aiobs reads is documented."""
    text = (DOCS / "configuration.md").read_text()
    for field in dataclasses.fields(Settings):
        assert f"| `{field.name}` |" in text, field.name
    for variable in ENVIRONMENT_VARIABLES:
        assert f"`{variable}`" in text, variable
