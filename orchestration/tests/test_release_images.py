"""`mnist-ct release` refuses to upload a pipeline whose pinned images are not in their registry.

Against the fake KFP API server (kfp_api.py) and a real docker-registry on 127.0.0.1 holding the test locks'
fake images (conftest.push_image): the check runs before any request reaches KFP, --dry-run included.
"""

from __future__ import annotations

import socket
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

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


def test_a_registry_that_is_a_web_server_is_exit_4_not_every_image_present(api, pinned_lock_file, capsys):

    class AnyPath200(BaseHTTPRequestHandler):  # a web UI or a proxy's login page: 200 for every path
        def log_message(self, *args) -> None:
            pass

        def do_HEAD(self) -> None:
            self.send_response(200)
            self.send_header("Content-Length", "0")
            self.end_headers()

    server = ThreadingHTTPServer(("127.0.0.1", 0), AnyPath200)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        assert release(api, pinned_lock_file, "--registry", f"127.0.0.1:{server.server_port}/mnist-ct") == 4
    finally:
        server.shutdown()
        server.server_close()
    line = one_line(capsys)
    assert "not a registry v2 answer" in line and "--skip-image-check" in line
    assert api.state.requests == []


@pytest.mark.parametrize("prefix", ["http://127.0.0.1:5000/mnist-ct", "127.0.0.1:5000/Mnist CT"])
def test_a_registry_option_that_is_not_a_prefix_is_bad_usage_before_any_request(api, pinned_lock_file, prefix, capsys):
    assert release(api, pinned_lock_file, "--registry", prefix) == 2
    line = one_line(capsys)
    assert f"--registry / MNIST_CT_REGISTRY {prefix!r} is not a registry prefix" in line
    assert api.state.requests == []


def test_compile_check_images_refuses_a_missing_image_before_writing_the_pipeline(
    api, tmp_path, image_registry, capsys
):
    """The release job runs `compile --check-images` before the GitHub release: no release of unpullable images."""
    lock_file = tmp_path / "lock.json"
    write_lock(lock_with({**{s: fake_digest(s) for s in ORDER}, "validate": fake_digest("never pushed")}), lock_file)
    for step in [s for s in ORDER if s != "validate"]:
        push_image(image_registry, f"{REGISTRY_PREFIX}/mnist-ct-{step.replace('_', '-')}", step)
    out = tmp_path / "pipeline.yaml"
    assert main(["compile", "-o", str(out), "--lock", str(lock_file), "--check-images"]) == 3
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("mnist-ct compile: error: 1 of 7 pinned images are not in"), lines
    assert "mnist-ct-validate@" in lines[0] and not out.exists()
    push_image(image_registry, f"{REGISTRY_PREFIX}/mnist-ct-validate", "never pushed")
    assert main(["compile", "-o", str(out), "--lock", str(lock_file), "--check-images"]) == 0
    assert out.is_file() and "all 7 pinned images are in" in capsys.readouterr().out


def test_compile_without_check_images_asks_no_registry(tmp_path, pinned_lock_file, monkeypatch, capsys):
    monkeypatch.setenv("MNIST_CT_REGISTRY", "127.0.0.1:1/nothing-listens")
    assert main(["compile", "-o", str(tmp_path / "p.yaml"), "--lock", str(pinned_lock_file)]) == 0
    assert "pinned images" not in capsys.readouterr().out
