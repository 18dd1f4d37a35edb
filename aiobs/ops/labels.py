"""Label selectors shared by the rules, dashboards and deploy generators: which series of a
service they select (``job``, ``namespace`` and any further ``label=value`` matchers), and the
checks that keep those values valid PromQL and Kubernetes names."""

from __future__ import annotations

import re
from collections.abc import Iterable

LABEL_NAME = re.compile(r"[a-zA-Z_][a-zA-Z0-9_]*")
"""A Prometheus label name."""
NAMESPACE = re.compile(r"[a-z0-9]([-a-z0-9]*[a-z0-9])?")
"""A Kubernetes namespace: an RFC 1123 label (at most 63 characters)."""
RESERVED = ("job", "namespace", "le")
"""Labels that have an option of their own (``job``, ``namespace``) or belong to histograms."""

Labels = tuple[tuple[str, str], ...]
"""Label name and value pairs, in the order given: ``(("cluster", "eu1"),)``."""


def check_value(name: str, value: str) -> None:
    """A label value a PromQL string literal holds as it is: non-empty, no quote or backslash."""
    if not isinstance(value, str) or not value or '"' in value or "\\" in value:
        raise ValueError(f"{name} must be a plain non-empty label value, not {value!r}")


def check_namespace(name: str, value: str) -> None:
    """Empty (no namespace) or a Kubernetes namespace name."""
    if not isinstance(value, str) or (
        value and (len(value) > 63 or not NAMESPACE.fullmatch(value))
    ):
        raise ValueError(
            f"{name} must be a Kubernetes namespace (lower-case letters, digits and '-',"
            f" at most 63 characters) or empty, not {value!r}"
        )


def check_labels(name: str, labels: Labels) -> None:
    """Pairs of a label name (no reserved one, none twice) and a plain value."""
    if not isinstance(labels, tuple):
        raise ValueError(f"{name} must be a tuple of (label, value) pairs, not {labels!r}")
    seen = set()
    for pair in labels:
        if not (isinstance(pair, tuple) and len(pair) == 2):
            raise ValueError(f"{name} must hold (label, value) pairs, not {pair!r}")
        label, value = pair
        if not isinstance(label, str) or not LABEL_NAME.fullmatch(label):
            raise ValueError(f"{name}: {label!r} is not a Prometheus label name")
        if label in RESERVED:
            raise ValueError(f"{name}: {label!r} has its own option or cannot be selected")
        if label in seen:
            raise ValueError(f"{name}: {label!r} is given twice")
        seen.add(label)
        check_value(f"{name}: {label}", value)


def matchers(namespace: str, labels: Labels) -> list[str]:
    """``namespace="..."`` (when set) and one ``label="value"`` per pair."""
    pairs: Iterable[tuple[str, str]] = ((("namespace", namespace),) if namespace else ()) + labels
    return [f'{label}="{value}"' for label, value in pairs]
