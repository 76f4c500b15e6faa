"""orchestration/images.lock.json: per package, its version and input hash; per step, its pinned image.

Pure standard library, so the noxfile (change detection, build-changed) can use it without kfp.

    {
      "registry": "ghcr.io/mnist-ct",
      "packages": {
        "preprocess": {"version": "0.1.0", "input_hash": "sha256:...",
                       "image": "ghcr.io/mnist-ct/mnist-ct-preprocess", "digest": "sha256:..."},
        "artifacts": {"version": "0.1.0", "input_hash": "sha256:..."}
      }
    }

Only steps have `image` and `digest`; `input_hash` and `digest` are null until the first build. Which
packages are steps is not listed here: the delivery tooling writes an entry for each package it discovers
(steps/*/pyproject.toml), and the pipeline's step table (pipeline.py STEPS) is the one list of steps
the pipeline runs; a test checks that the lock's step entries are those steps.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
from dataclasses import dataclass
from pathlib import Path

# The lock beside these sources: right for a checkout or an editable install, meaningless for a wheel
# installed into a venv (it would point into site-packages), hence find_lock().
LOCK_PATH = Path(__file__).resolve().parents[3] / "images.lock.json"
LOCK_IN_REPO = Path("orchestration") / "images.lock.json"
DIGEST = re.compile(r"^sha256:[0-9a-f]{64}$")


class LockError(Exception):
    """The lock is missing, malformed, or does not pin what is asked of it (one line)."""


@dataclass(frozen=True)
class LockEntry:
    version: str
    input_hash: str | None = None
    image: str | None = None  # repository without tag or digest, e.g. ghcr.io/mnist-ct/mnist-ct-deploy
    digest: str | None = None  # sha256:<64 hex> as returned by the registry

    def reference(self) -> str:
        """`repo@sha256:...`; LockError if the entry is not pinned by a well-formed digest."""
        if self.image is None:
            raise LockError("no image repository")
        if self.digest is None:
            raise LockError(f"{self.image} is not pinned (no digest yet; run `nox -s build-changed`)")
        if not DIGEST.match(self.digest):
            raise LockError(f"{self.image}: digest {self.digest!r} is not sha256:<64 hex digits>")
        return f"{self.image}@{self.digest}"


@dataclass
class Lock:
    registry: str
    packages: dict[str, LockEntry]

    def entry(self, name: str) -> LockEntry:
        if name not in self.packages:
            raise LockError(f"{name}: no entry in the image lock; add it with `nox -s build-changed`")
        return self.packages[name]

    def image_ref(self, step: str) -> str:
        """The pinned `repo@sha256:...` of a step; LockError naming the step otherwise."""
        try:
            return self.entry(step).reference()
        except LockError as e:
            raise LockError(f"step {step}: {e}") from None

    def content_hash(self) -> str:
        """sha256 (hex) of the lock's canonical JSON: names a pipeline release, whatever the file's layout."""
        canonical = json.dumps(self.to_json(), sort_keys=True, separators=(",", ":"))
        return hashlib.sha256(canonical.encode()).hexdigest()

    def to_json(self) -> dict:
        packages = {}
        for name in sorted(self.packages):
            e = self.packages[name]
            doc = {"version": e.version, "input_hash": e.input_hash}
            if e.image is not None:
                doc |= {"image": e.image, "digest": e.digest}
            packages[name] = doc
        return {"registry": self.registry, "packages": packages}


def find_lock(start: Path | None = None) -> Path:
    """The repository's lock: `orchestration/images.lock.json` in the working directory or the nearest folder
    above it that has one (as git finds .git), else the one beside these sources (an editable install).

    An installed `mnist-ct` (a wheel in a venv, as the workflows install it) thus pins the images of the
    checkout it runs in; LockError when there is none.
    """
    start = Path.cwd() if start is None else start
    for folder in (start, *start.resolve().parents):
        candidate = folder / LOCK_IN_REPO
        if candidate.is_file():
            return candidate
    if LOCK_PATH.is_file():
        return LOCK_PATH
    raise LockError(
        f"image lock not found: no {LOCK_IN_REPO} in {start} or any folder above it; "
        "run from the repository or pass --lock PATH"
    )


def read_lock(path: Path = LOCK_PATH) -> Lock:
    try:
        doc = json.loads(Path(path).read_text())
        packages = {}
        for name, e in doc["packages"].items():
            image = e.get("image")
            if image is not None and ("@" in image or ":" in image.rsplit("/", 1)[-1]):
                raise LockError(f"{path}: {name}: image {image!r} must be a repository, without tag or digest")
            packages[name] = LockEntry(e["version"], e.get("input_hash"), image, e.get("digest"))
        return Lock(doc["registry"], packages)
    except FileNotFoundError:
        raise LockError(f"{path}: image lock not found") from None
    except (ValueError, KeyError, TypeError, AttributeError) as e:
        raise LockError(f"{path}: malformed image lock ({e.__class__.__name__}: {e})") from None


def write_lock(lock: Lock, path: Path = LOCK_PATH) -> None:
    """Write atomically (temp sibling + rename), sorted, so diffs stay small."""
    path = Path(path)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    tmp.write_text(json.dumps(lock.to_json(), indent=2) + "\n")
    os.replace(tmp, path)
