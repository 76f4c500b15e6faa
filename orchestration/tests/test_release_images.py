"""`mnist-ct release` refuses to upload a pipeline whose pinned images are not in their registry.

Against the fake KFP API server (kfp_api.py) and a real docker-registry on 127.0.0.1 holding the test locks'
fake images (conftest.push_image): the check runs before any request reaches KFP, --dry-run included.
"""

from __future__ import annotations

import socket

import pytest
from conftest import REGISTRY_PREFIX, fake_digest, lock_with, push_image, push_lock_images

from mnist_ct.orchestration.__main__ import main
from mnist_ct.orchestration.lock import write_lock
from mnist_ct.orchestration.pipeline import ORDER


def release(api, lock_file, *extra: str) -> int:
    """`mnist-ct release` as a user runs it: no images pushed for it by the test helper."""
    return main(["release", "--host", api.url, "--lock", str(lock_file), *extra])


def one_line(capsys) -> str:
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("mnist-ct release: error: "), lines
    return lines[0]


@pytest.fixture
def prefix(api, image_registry) -> str:
    """Where the api fixture's MNIST_CT_REGISTRY points: <address>/mnist-ct."""
    return f"{image_registry}/{REGISTRY_PREFIX}"


def test_every_image_present_uploads(api, pinned_lock_file, image_registry, prefix, capsys):
    push_lock_images(pinned_lock_file, image_registry)
    assert release(api, pinned_lock_file) == 0
    assert len(api.state.uploads) == 2  # the pipeline's first version, then the named one
    assert f"images: all {len(ORDER)} pinned images are in {prefix}" in capsys.readouterr().out


def test_one_missing_image_is_refused_in_one_line_before_any_request_to_kfp(api, tmp_path, image_registry, capsys):
    lock_file = tmp_path / "lock.json"
    write_lock(
        lock_with({**{s: fake_digest(s) for s in ORDER}, "deploy": fake_digest("deploy never pushed")}), lock_file
    )
    for step in [s for s in ORDER if s != "deploy"]:
        push_image(image_registry, f"{REGISTRY_PREFIX}/mnist-ct-{step.replace('_', '-')}", step)
    for extra in ([], ["--dry-run"], ["--run"]):
        assert release(api, lock_file, *extra) == 3
        line = one_line(capsys)
        missing = f"{image_registry}/{REGISTRY_PREFIX}/mnist-ct-deploy@{fake_digest('deploy never pushed')}"
        assert f"1 of {len(ORDER)} pinned images are not in {image_registry}: {missing};" in line
        assert "--skip-image-check" in line
    assert api.state.requests == []


def test_skip_image_check_uploads_without_looking(api, tmp_path, capsys):
    lock_file = tmp_path / "lock.json"
    write_lock(lock_with({s: fake_digest(f"{s} never pushed") for s in ORDER}), lock_file)
    assert release(api, lock_file) == 3
    capsys.readouterr()
    assert release(api, lock_file, "--skip-image-check") == 0
    assert len(api.state.uploads) == 2
    assert "images: not checked (--skip-image-check)" in capsys.readouterr().out


def test_registry_option_wins_over_the_environment(api, pinned_lock_file, image_registry, capsys):
    push_image(image_registry, "elsewhere/mnist-ct-deploy", "deploy")  # only one of them under elsewhere/
    assert release(api, pinned_lock_file, "--registry", f"{image_registry}/elsewhere") == 3
    line = one_line(capsys)
    assert f"{len(ORDER) - 1} of {len(ORDER)} pinned images are not in {image_registry}" in line
    assert "elsewhere/mnist-ct-deploy@" not in line and f"{image_registry}/elsewhere/mnist-ct-analysis@" in line


def test_without_a_registry_the_locks_own_repositories_are_looked_up(api, tmp_path, image_registry, monkeypatch):
    monkeypatch.delenv("MNIST_CT_REGISTRY")
    images = {s: f"{image_registry}/pinned-here/mnist-ct-{s.replace('_', '-')}" for s in ORDER}
    lock_file = tmp_path / "lock.json"
    write_lock(lock_with({s: fake_digest(s) for s in ORDER}, **images), lock_file)
    for s in ORDER:
        push_image(image_registry, images[s].split("/", 1)[1], s)
    assert release(api, lock_file, "--dry-run") == 0


def test_an_unreachable_registry_is_exit_4_before_any_request_to_kfp(api, pinned_lock_file, capsys):
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]  # closed again: nothing listens there
    assert release(api, pinned_lock_file, "--registry", f"127.0.0.1:{port}/mnist-ct") == 4
    line = one_line(capsys)
    assert f"image check: cannot reach the registry 127.0.0.1:{port}" in line and "--skip-image-check" in line
    assert api.state.requests == []
