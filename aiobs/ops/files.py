"""Generated files on disk: writing them and telling which checked-in copies are stale, the
same for every generator."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path


def write_files(directory: Path, files: Mapping[str, str]) -> list[Path]:
    """Write each name -> text of ``files`` into ``directory`` (created); the paths written."""
    directory.mkdir(parents=True, exist_ok=True)
    written = []
    for name, text in files.items():
        path = directory / name
        path.write_text(text, encoding="utf-8")
        written.append(path)
    return written


def stale_files(directory: Path, files: Mapping[str, str]) -> list[Path]:
    """The paths under ``directory`` that are missing or differ from ``files``."""
    return [
        directory / name
        for name, text in files.items()
        if not (directory / name).is_file()
        or (directory / name).read_text(encoding="utf-8") != text
    ]
