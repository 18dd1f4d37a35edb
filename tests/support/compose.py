"""The compose stack's files as data: the compose file with its variables resolved to their
defaults, the host files each service mounts, and a service's config rewritten for a native run
on 127.0.0.1 (service host names become loopback addresses, container paths become host
paths; nothing else changes)."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import yaml

REPO_ROOT = Path(__file__).resolve().parents[2]
COMPOSE_DIR = REPO_ROOT / "compose"
COMPOSE_FILE = COMPOSE_DIR / "docker-compose.yml"
GPU_FILE = COMPOSE_DIR / "docker-compose.gpu.yml"
ENV_EXAMPLE = COMPOSE_DIR / ".env.example"

_VARIABLE = re.compile(r"\$\{(\w+)(?:(:?[-?])([^}]*))?\}")


def interpolate(text: str, environ: dict[str, str] | None = None) -> str:
    """``text`` with ``${NAME}``, ``${NAME:-default}`` and ``${NAME:?message}`` resolved the
    way docker compose does; a required variable that is unset raises ``KeyError`` carrying
    its message."""
    environ = environ or {}

    def resolve(match: re.Match[str]) -> str:
        name, operator, argument = match.group(1), match.group(2), match.group(3)
        value = environ.get(name)
        if operator in (":-", "-"):
            return value if value else argument
        if operator in (":?", "?"):
            if not value:
                raise KeyError(f"{name}: {argument}")
            return value
        return value or ""

    return _VARIABLE.sub(resolve, text)


def load(path: Path = COMPOSE_FILE) -> dict[str, Any]:
    """A compose file as written (variables unresolved)."""
    data: dict[str, Any] = yaml.safe_load(path.read_text(encoding="utf-8"))
    return data


def resolved(environ: dict[str, str] | None = None) -> dict[str, Any]:
    """The main compose file with its variables resolved from ``environ``."""
    data: dict[str, Any] = yaml.safe_load(
        interpolate(COMPOSE_FILE.read_text(encoding="utf-8"), environ)
    )
    return data


def bind_mounts(compose: dict[str, Any], base: Path = COMPOSE_DIR) -> list[tuple[str, Path, str]]:
    """(service, host path, container path) of every bind mount from the repository; Docker's
    own directories (absolute host paths) are left out."""
    mounts = []
    for name, service in compose["services"].items():
        for volume in service.get("volumes", []):
            source, target = str(volume).split(":")[:2]
            if source.startswith("."):
                mounts.append((name, (base / source).resolve(), target))
    return mounts


def host_path(service: dict[str, Any], container_path: str) -> Path:
    """The repository file or folder a service sees at ``container_path``."""
    for volume in service.get("volumes", []):
        source, target = str(volume).split(":")[:2]
        if source.startswith(".") and container_path.startswith(target):
            return (COMPOSE_DIR / source).resolve() / container_path[len(target) :].lstrip("/")
    raise KeyError(container_path)


def flag(command: list[str], name: str) -> str:
    """The value of ``--name=value`` in a service's command."""
    for argument in command:
        if argument.startswith(f"{name}="):
            return argument.split("=", 1)[1]
    raise KeyError(name)


def native_prometheus_config(
    compose: dict[str, Any], addresses: dict[str, str], rules: Path
) -> str:
    """The Prometheus config compose mounts, for a native run: ``host:port`` of each service
    replaced by ``addresses[host:port]``, the rules folder by ``rules``."""
    service = compose["services"]["prometheus"]
    text = host_path(service, flag(service["command"], "--config.file")).read_text("utf-8")
    for address, native in addresses.items():
        text = text.replace(f'"{address}"', f'"{native}"')
    return text.replace("/etc/prometheus/rules/", f"{rules}/")
