"""Fixtures: small and read-only volumes (real tmpfs mounts)."""

from __future__ import annotations

import subprocess
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest


@pytest.fixture
def tmpfs() -> Iterator[Callable[..., Path]]:
    """mount(folder, size="200k"): a real small volume at `folder`, unmounted after; remount_read_only(folder).

    Needs root (CI runs as root); skipped where mounting is impossible, since chmod cannot stop root.
    """
    mounted: list[Path] = []

    def mount(folder: Path, size: str = "200k") -> Path:
        folder.mkdir(parents=True, exist_ok=True)
        result = subprocess.run(
            ["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(folder)], capture_output=True
        )
        if result.returncode != 0:
            pytest.skip(f"cannot mount a tmpfs here (needs root): {result.stderr.decode().strip()}")
        mounted.append(folder)
        return folder

    yield mount
    for folder in reversed(mounted):
        subprocess.run(["umount", str(folder)], check=True)
