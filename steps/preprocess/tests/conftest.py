"""Fixtures: a tiny idx data set folder, a real HTTP server on 127.0.0.1, a mirror that is down (small volumes: the
plugin's `tmpfs`, mnist_ct.artifacts.testing)."""

from __future__ import annotations

import socket
from pathlib import Path

import pytest
from idx_files import write_idx_folder
from local_http import Server


@pytest.fixture
def idx_folder(tmp_path: Path) -> Path:
    folder = tmp_path / "source"
    write_idx_folder(folder)
    return folder


@pytest.fixture
def server():
    s = Server()
    yield s
    s.close()


@pytest.fixture
def dead_url() -> str:
    """A URL on 127.0.0.1 where nothing listens (a mirror that is down)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    return f"http://127.0.0.1:{port}"
