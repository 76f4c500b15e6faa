"""The run's lineage: every upstream artifact, its producer step and version, followed by manifest digest."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path

from mnist_ct.artifacts import MANIFEST, ArtifactError, Manifest, RunPaths, read_manifest


@dataclass
class LineageEntry:
    artifact: str  # the input name: "dataset", "model", "embeddings", ...
    folder: str
    step: str | None  # None: the artifact could not be read
    version: str | None
    created: str | None
    digest: str | None  # sha256 of its manifest.json as it is now
    used_by: list[str]  # the artifacts that name it in their inputs
    stale_for: list[str]  # those of them that recorded another digest: it was replaced since

    @property
    def consistent(self) -> bool:
        """Readable, and the very artifact its consumers were made from."""
        return self.digest is not None and not self.stale_for

    def to_json(self) -> dict:
        return {**asdict(self), "consistent": self.consistent}


def artifact_folders(paths: RunPaths) -> dict[str, Path]:
    """Where each artifact named in a manifest's `inputs` lives within the run."""
    return {
        "dataset": paths.dataset,
        "validation": paths.validation,
        "model": paths.model,
        "embeddings": paths.embeddings,
        "index": paths.index,
    }


def trace(paths: RunPaths, roots: dict[str, Manifest]) -> list[LineageEntry]:
    """Walk `inputs` from the given manifests back to the data, breadth first, each artifact once.

    `roots` are manifests already read (and verified) by the caller, by artifact name. An input
    that is not found, or whose manifest changed since it was recorded, is reported, not raised:
    the report shows a broken lineage rather than hiding it.
    """
    folders = artifact_folders(paths)
    entries: dict[str, LineageEntry] = {}
    manifests: dict[str, Manifest | None] = dict(roots)
    queue: list[tuple[str, str | None, str | None]] = [(name, None, None) for name in roots]
    while queue:
        name, recorded, consumer = queue.pop(0)
        if name not in entries:
            folder = folders.get(name)
            if name not in manifests:
                manifests[name] = _try_read(folder)
            manifest = manifests[name]
            entries[name] = LineageEntry(
                artifact=name,
                folder=str(folder) if folder else "(unknown artifact name)",
                step=manifest.producer.step if manifest else None,
                version=manifest.producer.version if manifest else None,
                created=manifest.created if manifest else None,
                digest=manifest.digest if manifest else None,
                used_by=[],
                stale_for=[],
            )
            if manifest:
                for input_name, digest in sorted(manifest.inputs.items()):
                    queue.append((input_name, digest, name))
        entry = entries[name]
        if consumer and consumer not in entry.used_by:
            entry.used_by.append(consumer)
            if recorded != entry.digest:
                entry.stale_for.append(consumer)
    # Validation checks the data set but nothing names it as an input: show it when it exists.
    if "validation" not in entries and (folders["validation"] / MANIFEST).is_file():
        manifest = _try_read(folders["validation"])
        if manifest:
            entries["validation"] = LineageEntry(
                "validation",
                str(folders["validation"]),
                manifest.producer.step,
                manifest.producer.version,
                manifest.created,
                manifest.digest,
                [],
                [],
            )
    return list(entries.values())


def _try_read(folder: Path | None) -> Manifest | None:
    if folder is None:
        return None
    try:
        return read_manifest(folder)
    except ArtifactError:
        return None
