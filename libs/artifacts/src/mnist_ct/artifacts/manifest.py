"""Manifests and atomic publish: an artifact folder is finished exactly when its manifest.json exists.

A step writes into a temporary sibling folder, fsyncs every file, writes manifest.json last, and
renames the folder into place. Readers verify the manifest (schema, kind, size and sha256 of every
file) before they trust a byte, and fail with one line naming the file.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import hashlib
import json
import os
import shutil
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from importlib import metadata
from pathlib import Path
from typing import Any

from .errors import ArtifactError

MANIFEST = "manifest.json"
SCHEMA = "mnist-ct/artifact/v1"
_CHUNK = 1 << 20


@dataclass(frozen=True)
class Producer:
    """The step (and its package version) that wrote an artifact."""

    step: str
    version: str

    @classmethod
    def of(cls, step: str) -> Producer:
        """The installed version of step `step` (distribution `mnist-ct-<step>`)."""
        dist = "mnist-ct-" + step.replace("_", "-")
        try:
            version = metadata.version(dist)
        except metadata.PackageNotFoundError:
            version = "0+unknown"
        return cls(step, version)


@dataclass(frozen=True)
class FileEntry:
    sha256: str
    bytes: int


@dataclass
class Manifest:
    """What manifest.json says about one artifact folder."""

    kind: str
    producer: Producer
    files: dict[str, FileEntry]
    meta: dict[str, Any] = field(default_factory=dict)
    inputs: dict[str, str] = field(default_factory=dict)
    created: str = ""
    digest: str = ""  # sha256 of manifest.json itself: how later artifacts name their inputs

    def to_json(self) -> dict[str, Any]:
        return {
            "schema": SCHEMA,
            "kind": self.kind,
            "producer": {"step": self.producer.step, "version": self.producer.version},
            "created": self.created,
            "inputs": self.inputs,
            "files": {k: {"sha256": v.sha256, "bytes": v.bytes} for k, v in sorted(self.files.items())},
            "meta": self.meta,
        }


def sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(_CHUNK):
            h.update(chunk)
    return h.hexdigest()


def fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _fsync_file(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def atomic_write_bytes(path: Path, data: bytes) -> None:
    """Write `data` to `path` via a fsynced temporary sibling and a rename."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp-{uuid.uuid4().hex[:12]}")
    try:
        with os_errors_named(path), open(tmp, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
    fsync_dir(path.parent)


def atomic_write_json(path: Path, obj: Any) -> None:
    atomic_write_bytes(path, (json.dumps(obj, indent=2, sort_keys=True) + "\n").encode())


@dataclass
class Staging:
    """The temporary folder a step fills; `meta` and `inputs` go into the manifest."""

    path: Path
    meta: dict[str, Any] = field(default_factory=dict)
    inputs: dict[str, str] = field(default_factory=dict)
    manifest: Manifest | None = None  # set once published


@contextlib.contextmanager
def publish(final: Path, kind: str, producer: Producer, inputs: dict[str, str] | None = None) -> Iterator[Staging]:
    """Stage an artifact folder and publish it atomically when the block ends without error.

    Files are written under `staging.path`; on success every file is hashed and fsynced, the
    manifest is written last, and the folder is renamed to `final` (replacing an older one).
    On error, or if the process dies, only a hidden `.<name>.staging-*` sibling remains, which the
    next publish of the same artifact removes once no live process holds it (`_remove_abandoned`).
    """
    final = Path(final)
    final.parent.mkdir(parents=True, exist_ok=True)
    if final.is_symlink() or (final.exists() and not final.is_dir()):
        raise ArtifactError(f"{final}: is a file (or a link) where the artifact folder belongs; remove it and rerun")
    _remove_abandoned(final)
    token = uuid.uuid4().hex[:12]
    with _writer_lock(final, token), os_errors_named(final):
        staging = Staging(final.parent / f".{final.name}.staging-{token}", inputs=dict(inputs or {}))
        staging.path.mkdir()
        try:
            yield staging
            files: dict[str, FileEntry] = {}
            for p in sorted(staging.path.rglob("*")):
                if p.is_file():
                    rel = p.relative_to(staging.path).as_posix()
                    if rel == MANIFEST:
                        raise ArtifactError(f"{final}: a step may not write {MANIFEST} itself")
                    _fsync_file(p)
                    files[rel] = FileEntry(sha256_file(p), p.stat().st_size)
            for d in sorted({p.parent for p in staging.path.rglob("*")}, reverse=True):
                fsync_dir(d)
            manifest = Manifest(
                kind=kind,
                producer=producer,
                files=files,
                meta=staging.meta,
                inputs=staging.inputs,
                created=datetime.now(UTC).isoformat(timespec="seconds"),
            )
            data = (json.dumps(manifest.to_json(), indent=2, sort_keys=True) + "\n").encode()
            manifest.digest = hashlib.sha256(data).hexdigest()
            atomic_write_bytes(staging.path / MANIFEST, data)
            _swap_into_place(staging.path, final, final.parent / f".{final.name}.old-{token}")
            staging.manifest = manifest
        finally:
            shutil.rmtree(staging.path, ignore_errors=True)


@contextlib.contextmanager
def os_errors_named(path: Path) -> Iterator[None]:
    """Give `path` to an OSError raised inside that names no file, so its one-line error says where.

    A write that fills the disk raises ENOSPC from write() without a file name; numpy's short write
    ("47040 requested and 12160 written") has no errno either, and on a regular file means a full disk.
    """
    try:
        yield
    except OSError as e:
        if e.filename is not None:
            raise
        code = e.errno if e.errno is not None else (errno.ENOSPC if "written" in str(e) else errno.EIO)
        reason = e.strerror or f"{os.strerror(code)} ({e})"
        raise OSError(code, reason, str(path)) from e


@contextlib.contextmanager
def _writer_lock(final: Path, token: str) -> Iterator[None]:
    """Hold `.<name>.lock-<token>` locked while staging: the kernel drops the lock when the writer dies."""
    lock = final.parent / f".{final.name}.lock-{token}"
    fd = os.open(lock, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
    try:
        with contextlib.suppress(OSError):  # a file system without locks (some FUSE mounts): no cleanup, no harm
            fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        lock.unlink(missing_ok=True)
        os.close(fd)


def _remove_abandoned(final: Path) -> None:
    """Remove the staging and moved-aside folders of earlier writers of `final` that died (their lock is free)."""
    for lock in final.parent.glob(f".{final.name}.lock-*"):
        token = lock.name.rsplit("-", 1)[-1]
        try:
            fd = os.open(lock, os.O_RDWR)
        except FileNotFoundError:  # its writer finished meanwhile
            continue
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:  # a live writer (another process publishing the same artifact), or no locks here
            os.close(fd)
            continue
        try:
            for leftover in (f".{final.name}.staging-{token}", f".{final.name}.old-{token}"):
                shutil.rmtree(final.parent / leftover, ignore_errors=True)
            lock.unlink(missing_ok=True)
        finally:
            os.close(fd)


def _swap_into_place(staging: Path, final: Path, old: Path) -> None:
    moved_aside = False
    if final.exists():
        os.rename(final, old)
        moved_aside = True
    os.rename(staging, final)
    fsync_dir(final.parent)
    if moved_aside:
        shutil.rmtree(old, ignore_errors=True)


def read_manifest(folder: Path, kind: str | None = None) -> Manifest:
    """Parse `folder/manifest.json` (no checksums); raise ArtifactError naming what is wrong."""
    folder = Path(folder)
    path = folder / MANIFEST
    if not folder.is_dir():
        raise ArtifactError(f"{folder}: artifact folder not found; run the step that produces it first")
    if not path.is_file():
        raise ArtifactError(
            f"{path}: manifest missing, so {folder} is incomplete (a step died while writing it?); rerun its producer"
        )
    raw = path.read_bytes()
    try:
        doc = json.loads(raw)
        if doc.get("schema") != SCHEMA:
            raise ArtifactError(f"{path}: schema is {doc.get('schema')!r}, expected {SCHEMA!r}")
        manifest = Manifest(
            kind=doc["kind"],
            producer=Producer(doc["producer"]["step"], doc["producer"]["version"]),
            files={k: FileEntry(v["sha256"], int(v["bytes"])) for k, v in doc["files"].items()},
            meta=doc.get("meta", {}),
            inputs=doc.get("inputs", {}),
            created=doc.get("created", ""),
            digest=hashlib.sha256(raw).hexdigest(),
        )
    except (ValueError, KeyError, TypeError, AttributeError) as e:
        raise ArtifactError(f"{path}: not a valid manifest ({e.__class__.__name__}: {e})") from None
    if kind is not None and manifest.kind != kind:
        raise ArtifactError(f"{path}: artifact kind is {manifest.kind!r}, expected {kind!r}")
    for rel in manifest.files:
        parts = rel.split("/")
        if rel.startswith("/") or ".." in parts or "" in parts or rel == MANIFEST:
            raise ArtifactError(f"{path}: lists {rel!r}, which is not a file inside {folder}; the manifest lies")
    return manifest


def verify_file(folder: Path, manifest: Manifest, rel: str) -> Path:
    """Check one listed file's size and sha256; return its path."""
    path = Path(folder) / rel
    entry = manifest.files.get(rel)
    if entry is None:
        raise ArtifactError(f"{path}: not listed in {Path(folder) / MANIFEST}")
    if path.is_symlink():
        raise ArtifactError(f"{path}: is a symlink; an artifact holds its own files, so it is refused")
    if not path.is_file():
        raise ArtifactError(f"{path}: listed in the manifest but missing")
    size = path.stat().st_size
    if size != entry.bytes:
        raise ArtifactError(
            f"{path}: size {size} bytes, manifest says {entry.bytes}; the file was changed or truncated"
        )
    digest = sha256_file(path)
    if digest != entry.sha256:
        raise ArtifactError(
            f"{path}: sha256 {digest[:16]}... does not match the manifest's {entry.sha256[:16]}...; file changed"
        )
    return path


def read_verified(folder: Path, kind: str | None = None) -> Manifest:
    """Read the manifest and verify every file it lists."""
    manifest = read_manifest(folder, kind)
    for rel in sorted(manifest.files):
        verify_file(folder, manifest, rel)
    return manifest
