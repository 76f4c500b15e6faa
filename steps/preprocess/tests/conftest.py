"""Fixtures: a tiny idx data set folder, a real HTTP server on 127.0.0.1, a mirror that is down, small volumes."""

from __future__ import annotations

import socket
import subprocess
from collections.abc import Callable, Iterator
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


@pytest.fixture
def tmpfs() -> Iterator[Callable[..., Path]]:
    """mount(folder, size="200k", read_only=False): a real small (or read-only) volume at `folder`, unmounted after.

    Needs root (CI runs as root); skipped where mounting is impossible, since chmod cannot stop root.
    """
    mounted: list[Path] = []

    def mount(folder: Path, size: str = "200k", read_only: bool = False) -> Path:
        folder.mkdir(parents=True, exist_ok=True)
        options = f"size={size}" + (",ro" if read_only else "")
        result = subprocess.run(["mount", "-t", "tmpfs", "-o", options, "tmpfs", str(folder)], capture_output=True)
        if result.returncode != 0:
            pytest.skip(f"cannot mount a tmpfs here (needs root): {result.stderr.decode().strip()}")
        mounted.append(folder)
        return folder

    yield mount
    for folder in reversed(mounted):
        subprocess.run(["umount", str(folder)], check=True)
