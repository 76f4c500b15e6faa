"""Switching the live version (deploy and rollback both go through here).

    model-store/<model>.mar       the live archive: replaced only by a fsynced temporary sibling and a rename
    config/config.properties      TorchServe's configuration for it (KServe layout, serving_config.py)
    .deploy.lock                  held (flock) while a deploy or rollback runs

The live archive is always one complete version copied from history. The log line (event_log.py) is
written after the switch; if a run dies between the two, the next run finds the live archive's version
(read from the archive itself) differ from the log and records it as live ("recovered").
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import shutil
from collections.abc import Iterator
from pathlib import Path

from mnist_ct.artifacts import ArtifactError, Log, RunPaths, atomic_write_bytes, confined

from .archive import ArchiveInfo, inspect_archive
from .event_log import LINEAGE_KEYS, append_event, live_stack, read_events
from .serving_config import ServingOptions, deployed_properties, render

LOCK_FILE = ".deploy.lock"
CONFIG_FILE = "config.properties"
LEFTOVER_MARKS = (".tmp-", ".staging-", ".old-", ".lock-")  # hidden siblings a killed run leaves (manifest.py)


def write_named(path: Path, data: bytes) -> None:
    """Write a file; an OSError from write() itself (a full disk) names the file, as open() errors do."""
    try:
        with open(path, "wb") as f:
            f.write(data)
    except OSError as e:
        if e.filename is None:
            e.filename = str(path)
        raise


@contextlib.contextmanager
def on_volume(deploy_root: Path) -> Iterator[None]:
    """OSErrors raised without a file name (write() on a full disk, in atomic_write_bytes and publish) name the
    deploy volume, so the one line the user sees says where the disk is full."""
    try:
        yield
    except OSError as e:
        if e.filename is None:
            e.filename = str(deploy_root)
        raise


@contextlib.contextmanager
def locked(deploy_root: Path, log: Log) -> Iterator[None]:
    """One deploy or rollback at a time per deploy root (released by the kernel if we die)."""
    Path(deploy_root).mkdir(parents=True, exist_ok=True)
    fd = os.open(confined(deploy_root, LOCK_FILE), os.O_RDWR | os.O_CREAT, 0o644)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            log(f"waiting for another deploy or rollback on {deploy_root} to finish")
            fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)


def remove_leftovers(paths: RunPaths) -> list[Path]:
    """Hidden temporary files and staging folders of runs that died (only called under the lock)."""
    removed = []
    kserve = paths.deploy_root / "kserve"  # kserve_store.KSERVE_DIR: a .live.tmp- link per model folder
    model_dirs = [p for p in kserve.iterdir() if p.is_dir() and not p.is_symlink()] if kserve.is_dir() else []
    for folder in (paths.model_store, paths.history, paths.deploy_config, *model_dirs):
        if not folder.is_dir():
            continue
        for p in folder.iterdir():
            if p.name.startswith(".") and any(mark in p.name for mark in LEFTOVER_MARKS):
                if p.is_dir() and not p.is_symlink():
                    shutil.rmtree(p, ignore_errors=True)
                else:
                    p.unlink(missing_ok=True)
                removed.append(p)
    return removed


def live_path(paths: RunPaths, model_name: str) -> Path:
    return confined(paths.deploy_root, "model-store", f"{model_name}.mar")


def live_archive(paths: RunPaths, model_name: str, force: bool = False, log: Log | None = None) -> ArchiveInfo | None:
    """The live archive, None if there is none (or, with `force`, if it is unreadable)."""
    path = live_path(paths, model_name)
    if not path.exists():
        return None
    try:
        return inspect_archive(path)
    except ArtifactError as e:
        if not force:
            raise ArtifactError(f"{e} (the live archive; --force replaces it)") from None
        if log is not None:
            log(f"replacing an unreadable live archive: {e}")
        return None


def reconcile(paths: RunPaths, model_name: str, live: ArchiveInfo | None, log: Log) -> list[str]:
    """The live stack from the log, brought in line with the live archive if a run died mid-way."""
    stack = live_stack(read_events(paths.deploy_root), model_name)
    if live is not None and (not stack or stack[-1] != live.version):
        append_event(
            paths.deploy_root,
            {
                "event": "recovered",
                "model": model_name,
                "version": live.version,
                "run_id": live.deployment.get("run_id"),
                "accuracy": live.accuracy,
                "note": "the live archive's version differs from the log (a deploy or rollback died "
                "after publishing); recorded as live",
                **{key: live.deployment.get(key) for key in LINEAGE_KEYS},
            },
        )
        log(f"recovered: the live archive is version {live.version}, the log said {stack[-1] if stack else None}")
        stack.append(live.version)
    return stack


def make_live(paths: RunPaths, model_name: str, archive: Path, expect_version: str) -> ArchiveInfo:
    """Copy a verified history archive over the live one: fsynced temporary sibling + rename."""
    info = inspect_archive(archive)
    if info.version != expect_version or info.model_name != model_name:
        raise ArtifactError(f"{archive}: holds {info.model_name} version {info.version}, expected {expect_version}")
    atomic_write_bytes(live_path(paths, model_name), archive.read_bytes())
    return info


def write_config(paths: RunPaths, model_name: str, options: ServingOptions, serving_root: str, producer: str) -> Path:
    """config/config.properties for the live archive (KServe's TorchServe runtime reads it)."""
    path = confined(paths.deploy_root, "config", CONFIG_FILE)
    comments = [
        f"TorchServe configuration written by {producer}.",
        f"KServe layout: the deploy volume mounted at {serving_root} holds config/{CONFIG_FILE} and",
        f"model-store/{model_name}.mar (the live version is in the archive's MAR-INF/MANIFEST.json).",
    ]
    text = render(deployed_properties(model_name, options, serving_root), comments)
    atomic_write_bytes(path, text.encode())
    return path
