"""Fixtures of the core's unit tests; their helpers are in unit_helpers.py (import it by that name)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import app_writer
import pytest


@pytest.fixture
def start_writer() -> Iterator[Any]:
    """Factory: start_writer(db, rate=..., journal_mode=..., no_autocheckpoint=...) -> a started
    ``app_writer`` subprocess (ready: one commit done), stopped after the test."""
    writers: list[Any] = []

    def factory(db: Path | str, **options: Any) -> Any:
        options.setdefault("status_interval", 0.005)
        writer = app_writer.start_writer(db, **options)
        writers.append(writer)
        writer.wait_ready()
        return writer

    yield factory
    for writer in writers:
        if writer.running():
            writer.stop()
        else:
            writer.close()


@pytest.fixture
def backup_dir(tmp_path: Path) -> Path:
    """A backup folder path that does not exist yet (the snapshot creates it)."""
    return tmp_path / "backups"
