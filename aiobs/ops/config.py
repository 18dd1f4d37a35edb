"""The public configuration of the operations generators, and how their commands read it.

:class:`RulesConfig` (``aiobs rules``), :class:`DashboardsConfig` (``aiobs dashboards``) and
:class:`DeployConfig` (``aiobs deploy``, which also takes the other two) are frozen
dataclasses. Each command sets every field from a command-line option (``--slo-target`` for
``slo_target``) or from a key of the same name in the YAML file of ``--config FILE``; an option
overrides the file, and the file overrides the command's defaults, which are the demo's values.
One file serves all three commands: a key that only another command uses is accepted and
ignored, a key no command knows is an error. docs/operations.md lists them all.
"""

from __future__ import annotations

import argparse
import dataclasses
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import yaml

from aiobs.ops.labels import Labels, check_labels, check_namespace, check_value, matchers
from aiobs.ops.rules.config import RulesConfig

__all__ = ["DashboardsConfig", "DeployConfig", "OptionError", "RulesConfig"]

UID = re.compile(r"[a-zA-Z0-9_-]+")
LONGEST_UID_SUFFIX = "-telemetry-health"
"""The longest part of a dashboard uid after its prefix (Grafana allows 40 characters)."""
NAME = re.compile(r"[a-z0-9]([-a-z0-9]*[a-z0-9])?")
"""A Kubernetes object name as a DNS label."""


@dataclass(frozen=True)
class DashboardsConfig:
    """Everything the generated Grafana dashboards take about the service they show.

    ``aiobs dashboards generate|check`` (and ``aiobs deploy``) set each field from an option or
    a ``--config`` YAML key of the same name; in Python, ``render(config=DashboardsConfig(...))``
    of ``aiobs.ops.dashboards.generator``. The defaults give the repository's ``dashboards/``.
    """

    job: str = "aiobs-demo"
    """Default of the dashboards' Job variable: the ``job`` label Prometheus gives the
    service (the variable lists every job exposing ``ai_service_ready``)."""
    datasource: str = "Prometheus"
    """Default of the Data source variable: the name of a Prometheus datasource in Grafana."""
    namespace: str = ""
    """When set, every query (and the Job variable's list) also selects
    ``namespace="<namespace>"``; empty selects none."""
    labels: Labels = ()
    """Further ``(label, value)`` pairs every query selects, e.g. ``(("cluster", "eu1"),)``."""
    title_prefix: str = "aiobs"
    """What each title starts with before `` / Inference`` (and the other dashboards' names)."""
    uid_prefix: str = "aiobs"
    """What each uid (and file name) starts with before ``-inference`` and the others; letters,
    digits, ``-`` and ``_``, short enough for Grafana's 40-character uids."""
    tags: tuple[str, ...] = ("aiobs",)
    """The dashboards' tags; the dropdown linking them lists the dashboards with these tags."""

    def __post_init__(self) -> None:
        check_value("job", self.job)
        check_namespace("namespace", self.namespace)
        check_labels("labels", self.labels)
        if not isinstance(self.datasource, str) or not self.datasource:
            raise ValueError(f"datasource must be a non-empty name, not {self.datasource!r}")
        if not isinstance(self.title_prefix, str) or not self.title_prefix.strip():
            raise ValueError(f"title_prefix must be non-empty, not {self.title_prefix!r}")
        if not isinstance(self.uid_prefix, str) or not UID.fullmatch(self.uid_prefix):
            raise ValueError(
                f"uid_prefix must be letters, digits, '-' and '_', not {self.uid_prefix!r}"
            )
        if len(self.uid_prefix + LONGEST_UID_SUFFIX) > 40:
            raise ValueError(
                f"uid_prefix must be at most {40 - len(LONGEST_UID_SUFFIX)} characters"
                f" (Grafana uids have 40), not {len(self.uid_prefix)}"
            )
        if (
            not isinstance(self.tags, tuple)
            or not self.tags
            or not all(isinstance(tag, str) and tag for tag in self.tags)
        ):
            raise ValueError(f"tags must be one or more non-empty strings, not {self.tags!r}")

    def matchers(self) -> list[str]:
        """The matchers every query adds to ``job=~"$job"``: namespace and labels."""
        return matchers(self.namespace, self.labels)


@dataclass(frozen=True)
class DeployConfig:
    """The Kubernetes objects ``aiobs deploy generate`` writes around the rules and dashboards:
    a PrometheusRule and one Grafana dashboard ConfigMap per dashboard.

    The rules and dashboards inside come from a :class:`RulesConfig` and a
    :class:`DashboardsConfig` (the same options; ``job`` selects in both). The defaults give
    the repository's ``deploy/k8s/base/``.
    """

    name: str = ""
    """The ``app.kubernetes.io/name`` label of the objects and the start of the
    PrometheusRule's name (``<name>-rules``); empty means the job."""
    namespace: str = ""
    """``metadata.namespace`` of the objects (and, through the rules and dashboards configs,
    a ``namespace`` matcher of every query); empty leaves it to ``kubectl -n`` or kustomize."""
    rule_labels: Labels = (("release", "prometheus"),)
    """Labels of the PrometheusRule beside the name: what the Prometheus's ``ruleSelector``
    selects (kube-prometheus-stack's default is its release name)."""
    dashboard_folder: str = "aiobs"
    """The ``grafana_folder`` annotation of the ConfigMaps: the Grafana folder the sidecar
    puts the dashboards in."""

    def __post_init__(self) -> None:
        if not isinstance(self.name, str) or (
            self.name and (len(self.name) > 57 or not NAME.fullmatch(self.name))
        ):
            raise ValueError(
                "name must be a Kubernetes name (lower-case letters, digits and '-',"
                f" at most 57 characters) or empty, not {self.name!r}"
            )
        check_namespace("namespace", self.namespace)
        if not isinstance(self.rule_labels, tuple) or not all(
            isinstance(pair, tuple)
            and len(pair) == 2
            and all(isinstance(part, str) and part for part in pair)
            for pair in self.rule_labels
        ):
            raise ValueError(f"rule_labels must be (label, value) pairs, not {self.rule_labels!r}")
        if not isinstance(self.dashboard_folder, str) or not self.dashboard_folder:
            raise ValueError(f"dashboard_folder must be non-empty, not {self.dashboard_folder!r}")


# ---- the commands' options and the YAML file ------------------------------------------------

CONFIGS: tuple[type[Any], ...] = (RulesConfig, DashboardsConfig, DeployConfig)
HIDDEN = frozenset({"time_scale"})
"""Fields no option or key sets (``time_scale`` shrinks the rules' windows in tests)."""
OPTION_OF = {"labels": "--label", "tags": "--tag", "rule_labels": "--rule-label"}
"""Options that name one item and are given once per item."""
PAIRS = "Labels"
"""How the label-pair fields are annotated (as text: the modules postpone annotations)."""
STRINGS = "tuple[str, ...]"


class OptionError(ValueError):
    """A bad option, YAML file or key; the message names it. The commands exit 2 on it."""


def option(name: str) -> str:
    """The command-line option of the field ``name``: ``slo_target`` -> ``--slo-target``."""
    return OPTION_OF.get(name, "--" + name.replace("_", "-"))


def _fields(config: type[Any]) -> list[dataclasses.Field[Any]]:
    return [field for field in dataclasses.fields(config) if field.name not in HIDDEN]


def keys() -> list[str]:
    """Every YAML key (and field) some command takes, sorted."""
    return sorted({field.name for config in CONFIGS for field in _fields(config)})


def add_options(
    parser: argparse.ArgumentParser,
    configs: Sequence[type[Any]],
    defaults: Mapping[str, object] | None = None,
) -> None:
    """``--config FILE`` and one option per field of ``configs`` (a field they share, once).

    Every option defaults to None, so that :func:`resolve` sees which were given."""
    defaults = defaults or {}
    parser.add_argument(
        "--config",
        metavar="FILE",
        type=Path,
        help="YAML file of settings (keys as the options, '_' for '-'); options override it",
    )
    seen: set[str] = set()
    for config in configs:
        for field in _fields(config):
            if field.name in seen:
                continue
            seen.add(field.name)
            default: Any = defaults.get(field.name, field.default)
            if field.type == PAIRS:
                shown = " ".join(f"{k}={v}" for k, v in default) or "none"
                parser.add_argument(
                    option(field.name),
                    dest=field.name,
                    action="append",
                    metavar="LABEL=VALUE",
                    help=f"{field.name}, once per label (default: {shown})",
                )
            elif field.type == STRINGS:
                parser.add_argument(
                    option(field.name),
                    dest=field.name,
                    action="append",
                    metavar="VALUE",
                    help=f"{field.name}, once per value (default: {' '.join(default)})",
                )
            else:
                parser.add_argument(
                    option(field.name),
                    dest=field.name,
                    metavar="NUMBER" if field.type == "float" else "TEXT",
                    help=f"{field.name} (default: {default!r})",
                )


def load_file(path: Path | None) -> dict[str, Any]:
    """The keys and values of a ``--config`` file (none without one); an unknown key, a file
    that is no mapping or no YAML raise :class:`OptionError` naming it."""
    if path is None:
        return {}
    try:
        document = yaml.safe_load(path.read_text(encoding="utf-8"))
    except OSError as error:
        raise OptionError(f"--config: cannot read {path}: {error.strerror}") from None
    except UnicodeDecodeError:
        raise OptionError(f"--config: {path} is not UTF-8 text") from None
    except yaml.YAMLError as error:
        raise OptionError(f"--config: {path} is not YAML: {error}") from None
    if document is None:
        return {}
    if not isinstance(document, dict):
        raise OptionError(f"--config: {path} must hold a mapping of keys, not {document!r}")
    known = keys()
    for key in document:
        if key not in known:
            raise OptionError(
                f"{path}: unknown key {key!r}; the keys are: {', '.join(known)}"
            )
    return document


def _from_option(field: dataclasses.Field[Any], given: Any) -> Any:
    if field.type == PAIRS:
        pairs = []
        for item in given:
            label, equals, value = item.partition("=")
            if not equals or not label:
                raise ValueError(f"takes LABEL=VALUE, not {item!r}")
            pairs.append((label, value))
        return tuple(pairs)
    if field.type == STRINGS:
        return tuple(given)
    if field.type == "float":
        try:
            return float(given)
        except ValueError:
            raise ValueError(f"takes a number, not {given!r}") from None
    return given


def _from_key(field: dataclasses.Field[Any], given: Any) -> Any:
    if field.type == PAIRS:
        if not isinstance(given, dict):
            raise ValueError(f"must be a mapping of label: value, not {given!r}")
        pairs = []
        for label, value in given.items():
            if isinstance(value, bool) or not isinstance(value, (str, int, float)):
                raise ValueError(f"the value of {label!r} must be text")
            pairs.append((str(label), str(value)))
        return tuple(pairs)
    if field.type == STRINGS:
        if isinstance(given, str):
            given = [given]
        if not isinstance(given, list) or not all(isinstance(item, str) for item in given):
            raise ValueError(f"must be a list of strings, not {given!r}")
        return tuple(given)
    if field.type == "float":
        if isinstance(given, bool) or not isinstance(given, (int, float)):
            raise ValueError(f"must be a number, not {given!r}")
        return float(given)
    if not isinstance(given, str):
        raise ValueError(f"must be a string, not {given!r}")
    return given


Config = TypeVar("Config")


def resolve(
    config: type[Config],
    arguments: argparse.Namespace,
    from_file: Mapping[str, Any],
    defaults: Mapping[str, object] | None = None,
) -> Config:
    """``config`` from the options given (``arguments``), else the file's keys, else
    ``defaults``, else the field's default. :class:`OptionError` names the bad option or key."""
    defaults = defaults or {}
    values: dict[str, Any] = {}
    source: dict[str, str] = {}
    for field in _fields(config):
        given = getattr(arguments, field.name, None)
        try:
            if given is not None:
                source[field.name] = option(field.name)
                values[field.name] = _from_option(field, given)
            elif field.name in from_file:
                source[field.name] = f"key {field.name!r} of {arguments.config}"
                values[field.name] = _from_key(field, from_file[field.name])
            elif field.name in defaults:
                values[field.name] = defaults[field.name]
        except ValueError as error:
            raise OptionError(f"{source[field.name]}: {error}") from None
    try:
        return config(**values)
    except ValueError as error:
        message = str(error)
        named = [name for name in source if message.startswith(name)]
        where = source[max(named, key=len)] + ": " if named else ""
        raise OptionError(where + message) from None
