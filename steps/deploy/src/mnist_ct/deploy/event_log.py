"""deployments.jsonl: the deploy root's append-only log of every deploy, rollback, refusal and recovery.

One JSON object per line, each written with a single write() and fsynced. A run killed mid-write leaves a
torn line: readers skip it, and the next append starts on a fresh line. The log is the history of what was
live; the live archive itself is the truth of what is live now (live.py reconciles the two).
"""

from __future__ import annotations

import json
import os
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from mnist_ct.artifacts import fsync_dir

LOG_FILE = "deployments.jsonl"
LIVE_EVENTS = ("deploy", "recovered")  # events that make their version live (a rollback does too, see live_stack)
# What every event that makes a version live records from its deployment.json: which images, which step versions
# and which data made it.
LINEAGE_KEYS = ("images", "versions", "data_version", "dataset_sha256")


def now() -> str:
    """The time stamp every event and deployment record carries (UTC, milliseconds)."""
    return datetime.now(UTC).isoformat(timespec="milliseconds")


def log_path(deploy_root: Path) -> Path:
    return Path(deploy_root) / LOG_FILE


def append_event(deploy_root: Path, event: dict[str, Any]) -> None:
    """Append one JSON line to deployments.jsonl with a single write, then fsync it."""
    path = log_path(deploy_root)
    created = not path.exists()
    line = (json.dumps({"time": now(), **event}, sort_keys=True) + "\n").encode()
    fd = os.open(path, os.O_RDWR | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        size = os.fstat(fd).st_size
        if size and os.pread(fd, 1, size - 1) != b"\n":
            line = b"\n" + line  # a run died mid-line: keep its fragment on a line of its own
        os.write(fd, line)
        os.fsync(fd)
    finally:
        os.close(fd)
    if created:
        fsync_dir(path.parent)


def read_events(deploy_root: Path) -> list[dict[str, Any]]:
    """Every event in the log, oldest first; a torn line (a run killed mid-write) is skipped."""
    path = log_path(deploy_root)
    if not path.is_file():
        return []
    events = []
    for raw in path.read_bytes().split(b"\n"):
        try:
            event = json.loads(raw) if raw.strip() else None
        except ValueError:
            continue
        if isinstance(event, dict):
            events.append(event)
    return events


def live_stack(events: list[dict[str, Any]], model_name: str) -> list[str]:
    """The versions of `model_name` that were live, oldest first; the last one is live now. A rollback pops."""
    stack: list[str] = []
    for e in events:
        if e.get("model") != model_name:
            continue
        kind, version = e.get("event"), e.get("version")
        if not isinstance(version, str) or not version:
            continue
        if kind in LIVE_EVENTS:
            if not stack or stack[-1] != version:
                stack.append(version)
        elif kind == "rollback":
            if stack and stack[-1] == e.get("from"):
                stack.pop()
            if not stack or stack[-1] != version:
                stack.append(version)
    return stack


def _accuracy(value: Any) -> str | None:
    return f"{value:.4f}" if isinstance(value, (int, float)) and not isinstance(value, bool) else None


def describe(event: dict[str, Any]) -> list[str]:
    """An event as `deploy history` prints it: one line, then the data and the image of every step that made it."""
    shown = _accuracy(event.get("accuracy")) or "unknown"
    head = f"{event.get('time', '?')}  {event.get('event', '?')}  {event.get('model', '?')}"
    head += f" version {event.get('version', '?')}  accuracy {shown}"
    if event.get("event") == "deploy":
        head += f"  (previous: {event.get('previous') or 'none'}{', forced' if event.get('forced') else ''})"
    elif event.get("event") == "rollback":
        head += f"  (from {event.get('from', '?')})"
    elif event.get("event") == "refused":
        head += f"  (live {event.get('live', '?')} has {event.get('live_accuracy')})"
    champion = _accuracy(event.get("champion_accuracy"))
    if champion is not None:  # analysis measured the champion on the run's test split (older events lack it)
        head += f"  champion {event.get('champion', '?')} {champion} on the same test split"
    lines = [head]
    if event.get("event") == "refused" and isinstance(event.get("reason"), str):
        lines.append(f"    reason: {event['reason']}")
    if event.get("event") in (*LIVE_EVENTS, "rollback"):
        data = event.get("data_version") or "not recorded"
        digest = event.get("dataset_sha256") or "not recorded"
        lines.append(f"    data: version {data}, data set manifest sha256 {digest}")
        versions = event.get("versions")
        if isinstance(versions, dict) and versions:  # recorded since deploy 0.4.0, from a compiled pipeline
            lines.append("    versions: " + ", ".join(f"{step} {version}" for step, version in versions.items()))
        images = event.get("images")
        if isinstance(images, dict) and images:
            lines.extend(f"    image {step}: {image}" for step, image in images.items())
        else:
            lines.append("    images: not given (the run was not started from a compiled pipeline)")
    return lines
