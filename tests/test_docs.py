"""The docs are checked against the code they describe, so neither drifts."""

from __future__ import annotations

import dataclasses
import re
from pathlib import Path

from aiobs import Settings, catalog
from aiobs._settings import ENVIRONMENT_VARIABLES

DOCS = Path(__file__).resolve().parent.parent / "docs"


def test_metrics_doc_lists_every_catalog_metric() -> None:
    """Each catalog metric has a row with its type and labels, and no row is extra."""
    text = (DOCS / "metrics.md").read_text()
    rows = dict(re.findall(r"^\| `([a-z_]+)` \| (.+?) \|$", text, flags=re.MULTILINE))
    assert set(rows) == {metric.name for metric in catalog.METRICS}
    for metric in catalog.METRICS:
        kind, labels, _ = (cell.strip() for cell in rows[metric.name].split("|", 2))
        assert kind == metric.kind
        assert labels == (", ".join(metric.labels) or "—")


def test_configuration_doc_lists_every_setting_and_variable() -> None:
    """Every settings field and every environment variable aiobs reads is documented."""
    text = (DOCS / "configuration.md").read_text()
    for field in dataclasses.fields(Settings):
        assert f"| `{field.name}` |" in text, field.name
    for variable in ENVIRONMENT_VARIABLES:
        assert f"`{variable}`" in text, variable
