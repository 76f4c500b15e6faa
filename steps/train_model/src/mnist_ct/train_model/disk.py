"""Writing to the model volume: the folders it writes are checked before any work."""

from __future__ import annotations

from pathlib import Path

from mnist_ct.artifacts import ArtifactError


def refuse_a_file(folder: Path, what: str) -> None:
    """A folder the step writes may be missing, but not a file (publish would set the file aside, hidden)."""
    if folder.exists() and not folder.is_dir():
        raise ArtifactError(f"{folder}: is a file where the {what} belongs; remove it")
