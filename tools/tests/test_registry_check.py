"""build-changed --push also rebuilds an unchanged step whose locked digest is not in the push registry.

Fast: a fixture repo, a real docker-registry on 127.0.0.1 (tools/registry.py) holding small hand-made
manifests, and no image build (test_images.py rebuilds a real image for an empty registry). What is checked
here is the decision: the reason printed with the plan, the tests skipped, nothing asked without --push,
nothing built when the registry cannot answer.
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import json
import shutil
import socket
import threading
import time
import urllib.request

import pytest

from tools import delivery, monorepo, registry

if shutil.which("docker-registry") is None:
    pytest.skip(
        "docker-registry is not installed here (apt-get install docker-registry; .ci/run does)", allow_module_level=True
    )


def sha256(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


def push_manifest(address: str, repository: str, label: str) -> str:
    """A config blob and an OCI manifest naming it, pushed over plain HTTP; the manifest's digest."""
    config = json.dumps({"architecture": "amd64", "os": "linux", "label": label}).encode()
    base = f"http://{address}/v2/{repository}"
    with urllib.request.urlopen(urllib.request.Request(f"{base}/blobs/uploads/", method="POST")) as r:
        location = r.headers["Location"]
    # octet-stream: with urllib's default (a form), the registry reads the body as form fields.
    headers = {"Content-Type": "application/octet-stream"}
    put = urllib.request.Request(f"{location}&digest={sha256(config)}", data=config, method="PUT", headers=headers)
    urllib.request.urlopen(put).close()
    manifest = json.dumps({
        "schemaVersion": 2, "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "config": {"mediaType": "application/vnd.oci.image.config.v1+json", "digest": sha256(config),
                   "size": len(config)},
        "layers": [],
    }).encode()  # fmt: skip
    headers = {"Content-Type": "application/vnd.oci.image.manifest.v1+json"}
    put = urllib.request.Request(f"{base}/manifests/{sha256(manifest)}", data=manifest, method="PUT", headers=headers)
    with urllib.request.urlopen(put) as r:
        return r.headers["Docker-Content-Digest"]


@pytest.fixture(scope="module")
def local_registry(tmp_path_factory):
    running = registry.start(tmp_path_factory.mktemp("registry"))
    yield running
    running.stop()


@pytest.fixture
def pinned(repo, local_registry):
    """The fixture repo with every package recorded and each step pinned to a manifest in the registry."""
    repo.record_all()
    lockmod = monorepo.lock_module(repo.root)
    lock = lockmod.read_lock(repo.lock_path)
    for name in ("tiny", "other"):
        digest = push_manifest(local_registry.address, f"mnist-ct/mnist-ct-{name}", f"{name} {repo.root}")
        lock.packages[name] = dataclasses.replace(lock.packages[name], digest=digest)
    lockmod.write_lock(lock, repo.lock_path)
    return repo


def build_changed(repo, address: str, **options):
    lines: list[str] = []
    tested: list[str] = []
    report = delivery.build_changed(
        repo.root, registry=f"{address}/mnist-ct", lock_path=repo.lock_path,
        run_tests=lambda package: tested.append(package.name), log=lines.append, **options,
    )  # fmt: skip
    return report, lines, tested


def test_every_pinned_image_present_builds_nothing_in_seconds(pinned, local_registry):
    started = time.monotonic()
    report, lines, tested = build_changed(pinned, local_registry.address, push=True)
    assert time.monotonic() - started < 10
    assert report.changed == [] and report.not_in_registry == [] and tested == []
    assert lines == [lines[0]] and lines[0].startswith(
        f"nothing to build: no package changed (lock), every pinned image is in {local_registry.address}/mnist-ct"
    )


def test_a_pinned_digest_absent_from_the_registry_is_rebuilt_untested(pinned, local_registry):
    address = local_registry.address
    lock_before = pinned.lock_path.read_text()
    todo = delivery.plan_build(pinned.root, since=None, lock_path=pinned.lock_path, only=None, rebuild_all=False)
    assert todo.ordered == []
    lock = monorepo.lock_module(pinned.root).read_lock(pinned.lock_path)
    # Another registry (an empty prefix of the same one) holds neither image: both steps are rebuilt.
    assert delivery.add_missing_images(pinned.root, todo, lock, f"{address}/empty", None) == ["other", "tiny"]
    assert todo.ordered == ["other", "tiny"]
    assert todo.reasons["tiny"] == f"not in {address}/empty (the lock pins {lock.packages['tiny'].digest[:19]}...)"
    report = delivery.Report(todo.mode, None, todo.ordered)
    tested: list[str] = []
    lines: list[str] = []
    delivery.run_package_tests(todo, lambda package: tested.append(package.name), report, lines.append)
    assert tested == [] and lines == [
        f"{n}: tests skipped: its inputs equal the lock's input hash (tested when it was pinned)"
        for n in ("other", "tiny")
    ]
    # --only narrows the registry rebuilds as it narrows the changed packages.
    todo = delivery.plan_build(pinned.root, since=None, lock_path=pinned.lock_path, only=["tiny"], rebuild_all=False)
    assert delivery.add_missing_images(pinned.root, todo, lock, f"{address}/empty", ["tiny"]) == ["tiny"]
    assert pinned.lock_path.read_text() == lock_before


def test_a_changed_step_keeps_its_reason_and_its_tests(pinned, local_registry):
    pinned.set_version("other", "0.1.1")
    main = pinned.root / "steps/other/src/mnist_ct/other/__init__.py"
    main.write_text("VALUE = 2\n")
    todo = delivery.plan_build(pinned.root, since=None, lock_path=pinned.lock_path, only=None, rebuild_all=False)
    lock = monorepo.lock_module(pinned.root).read_lock(pinned.lock_path)
    assert delivery.add_missing_images(pinned.root, todo, lock, f"{local_registry.address}/empty", None) == ["tiny"]
    assert todo.ordered == ["other", "tiny"] and todo.untested == ["tiny"]
    assert todo.reasons["other"].startswith("its files (or constraints.txt) changed")


def test_an_unreachable_registry_is_one_error_and_nothing_is_built(pinned):
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]  # closed again: nothing listens there
    lock_before = pinned.lock_path.read_text()
    with pytest.raises(delivery.DeliveryError) as caught:
        build_changed(pinned, f"127.0.0.1:{port}", push=True)
    message = str(caught.value)
    assert len(message.splitlines()) == 1
    assert (
        message.startswith(f"registry check: cannot reach the registry 127.0.0.1:{port}") and "nothing built" in message
    )
    assert pinned.lock_path.read_text() == lock_before


def test_without_push_no_registry_is_asked(pinned):
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    report, lines, _ = build_changed(pinned, f"127.0.0.1:{port}", push=False)  # would fail if it were asked
    assert report.changed == [] and lines[0].startswith("nothing to build: no package changed (lock) [")


def test_the_cli_exits_1_with_one_line_when_the_registry_cannot_answer(pinned, monkeypatch, capsys):
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    monkeypatch.setattr(delivery, "ROOT", pinned.root)
    assert delivery.main(["build-changed", "--push", "--registry", f"127.0.0.1:{port}/mnist-ct"]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error: registry check: cannot reach the registry")


def test_a_host_that_does_not_speak_http_is_one_error_and_nothing_is_built(pinned):
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen()

    def answer_garbage() -> None:
        with contextlib.suppress(OSError):
            while True:
                conn, _ = listener.accept()
                with conn:
                    conn.recv(65536)
                    conn.sendall(b"SSH-2.0-OpenSSH_9.2\r\n")  # an ssh port given as --registry

    threading.Thread(target=answer_garbage, daemon=True).start()
    lock_before = pinned.lock_path.read_text()
    try:
        with pytest.raises(delivery.DeliveryError) as caught:
            build_changed(pinned, f"127.0.0.1:{listener.getsockname()[1]}", push=True)
    finally:
        listener.close()
    message = str(caught.value)
    assert len(message.splitlines()) == 1 and "did not answer in HTTP" in message and "nothing built" in message
    assert pinned.lock_path.read_text() == lock_before
