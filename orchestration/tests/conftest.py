from __future__ import annotations

import dataclasses
import hashlib
import sys
from pathlib import Path

import kfp
import pytest

from mnist_ct.orchestration.__main__ import main
from mnist_ct.orchestration.lock import LOCK_PATH, STEPS, Lock, read_lock, write_lock

sys.path.insert(0, str(Path(__file__).parent))  # kfp_api.py, the fake KFP API server

from kfp_api import FakeKfp  # noqa: E402


def fake_digest(text: str) -> str:
    """A well-formed digest that is obviously not a real image's (sha256 of a label)."""
    return "sha256:" + hashlib.sha256(f"fake image {text}".encode()).hexdigest()


def lock_with(digests: dict[str, str | None], **images: str) -> Lock:
    """The committed lock's entries with the given digests (and image repositories) per step."""
    lock = read_lock(LOCK_PATH)
    for step, digest in digests.items():
        entry = lock.packages[step]
        lock.packages[step] = dataclasses.replace(entry, digest=digest, image=images.get(step, entry.image))
    return lock


def pinned_lock() -> Lock:
    return lock_with({step: fake_digest(step) for step in STEPS})


@pytest.fixture
def pinned_lock_file(tmp_path: Path) -> Path:
    path = tmp_path / "images.lock.json"
    write_lock(pinned_lock(), path)
    return path


@pytest.fixture
def unpinned_lock_file(tmp_path: Path) -> Path:
    """The committed lock as it is before any image is built: no digests."""
    path = tmp_path / "images.lock.json"
    write_lock(lock_with(dict.fromkeys(STEPS)), path)
    return path


@pytest.fixture(scope="session")
def dev_yaml(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from mnist_ct.orchestration.compiling import compile_pipeline

    path = tmp_path_factory.mktemp("dev") / "pipeline.yaml"
    compile_pipeline(lock_with(dict.fromkeys(STEPS)), path, dev=True)
    return path


@pytest.fixture(scope="session")
def strict_yaml(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from mnist_ct.orchestration.compiling import compile_pipeline

    path = tmp_path_factory.mktemp("strict") / "pipeline.yaml"
    compile_pipeline(pinned_lock(), path)
    return path


@pytest.fixture
def isolated_kfp_config(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """kfp.Client reads ~/.config/kfp/context.json and KFP's variables; keep a developer's own out of the tests."""
    monkeypatch.setattr(kfp.Client, "_LOCAL_KFP_CONTEXT", str(tmp_path / "kfp-context.json"))
    for name in ("MNIST_CT_KFP_TOKEN", "KF_PIPELINES_SA_TOKEN_PATH", "KF_PIPELINES_ENDPOINT"):
        monkeypatch.delenv(name, raising=False)


@pytest.fixture
def api(isolated_kfp_config: None):
    """The fake KFP v2beta1 API server (kfp_api.py) on 127.0.0.1."""
    with FakeKfp() as server:
        yield server


def release(api: FakeKfp, lock_file: Path, *extra: str) -> int:
    return main(["release", "--host", api.url, "--lock", str(lock_file), *extra])
