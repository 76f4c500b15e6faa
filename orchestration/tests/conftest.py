from __future__ import annotations

import dataclasses
import hashlib
import importlib.util
import json
import os
import sys
import urllib.request
from pathlib import Path

import kfp
import pytest

from mnist_ct.orchestration.__main__ import main
from mnist_ct.orchestration.lock import LOCK_PATH, Lock, read_lock, write_lock
from mnist_ct.orchestration.pipeline import ORDER

sys.path.insert(0, str(Path(__file__).parent))  # kfp_api.py, the fake KFP API server

from fake_steps import write_fake_steps  # noqa: E402
from kfp_api import FakeKfp  # noqa: E402

ROOT = Path(__file__).resolve().parents[2]

# The real step packages, for the tests that run them (test_run_local.py, test_faults.py, test_step_defaults.py):
# installed beside orchestration (as in `nox -s pipeline`'s venv), or else each in its own venv under
# .nox/packages/<step> (what `nox -s tests` builds before orchestration's tests; another folder:
# MNIST_CT_STEP_VENVS), run with `run-local --venvs`. Where neither is there those tests skip, unless
# MNIST_CT_REQUIRE_STEPS=1 makes that a failure.
MISSING_STEPS = [s for s in ORDER if importlib.util.find_spec(f"mnist_ct.{s}") is None]
STEP_VENVS = Path(os.environ.get("MNIST_CT_STEP_VENVS", ROOT / ".nox" / "packages"))
HAVE_STEP_VENVS = all((STEP_VENVS / s / "bin" / "python").is_file() for s in ORDER)
REAL_STEPS = not MISSING_STEPS or HAVE_STEP_VENVS
if not REAL_STEPS and os.environ.get("MNIST_CT_REQUIRE_STEPS") == "1":
    raise RuntimeError(f"MNIST_CT_REQUIRE_STEPS=1 but step packages are not installed: {', '.join(MISSING_STEPS)}")
RUNNER_OPTIONS = [] if not MISSING_STEPS else ["--venvs", str(STEP_VENVS)]  # run-local's, for the real steps
needs_real_steps = pytest.mark.skipif(
    not REAL_STEPS,
    reason=f"steps not installed here ({', '.join(MISSING_STEPS)}) nor step venvs under {STEP_VENVS}",
)


def step_python(step: str) -> str:
    """The Python that has the real `step` installed."""
    return sys.executable if not MISSING_STEPS else str(STEP_VENVS / step / "bin" / "python")


def _sha256(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


def fake_image(text: str) -> tuple[bytes, bytes, bytes]:
    """(layer, config, manifest) of a tiny OCI image labelled `text`: not a runnable image, but a real manifest
    a registry accepts, so the pins of the test locks can exist in a real registry (push_image)."""
    layer = f"fake image {text}".encode()
    config = json.dumps(
        {"architecture": "amd64", "os": "linux", "rootfs": {"type": "layers", "diff_ids": [_sha256(layer)]}},
        sort_keys=True,
    ).encode()
    manifest = json.dumps(
        {
            "schemaVersion": 2,
            "mediaType": "application/vnd.oci.image.manifest.v1+json",
            "config": {"mediaType": "application/vnd.oci.image.config.v1+json", "digest": _sha256(config),
                       "size": len(config)},
            "layers": [{"mediaType": "application/vnd.oci.image.layer.v1.tar", "digest": _sha256(layer),
                        "size": len(layer)}],
        },
        sort_keys=True,
    ).encode()  # fmt: skip
    FAKE_IMAGES[_sha256(manifest)] = text
    return layer, config, manifest


FAKE_IMAGES: dict[str, str] = {}  # manifest digest -> label, of every fake image made


def fake_digest(text: str) -> str:
    """The manifest digest of the fake image labelled `text`: well formed, obviously not a real image's."""
    return _sha256(fake_image(text)[2])


def push_image(address: str, repository: str, text: str) -> str:
    """Put the fake image `text` into the registry at `address` (plain HTTP: blobs, then the manifest by
    digest, as the Registry API v2 has it) as `repository`; its digest, as the registry returned it."""
    layer, config, manifest = fake_image(text)
    base = f"http://{address}/v2/{repository}"
    for blob in (layer, config):
        with urllib.request.urlopen(urllib.request.Request(f"{base}/blobs/uploads/", method="POST")) as r:
            location = r.headers["Location"]
        location = location if location.startswith("http") else f"http://{address}{location}"
        upload = f"{location}{'&' if '?' in location else '?'}digest={_sha256(blob)}"
        # octet-stream: with urllib's default (a form), the registry reads the body as form fields.
        put = urllib.request.Request(
            upload, data=blob, method="PUT", headers={"Content-Type": "application/octet-stream"}
        )
        urllib.request.urlopen(put).close()
    put = urllib.request.Request(
        f"{base}/manifests/{_sha256(manifest)}",
        data=manifest,
        method="PUT",
        headers={"Content-Type": "application/vnd.oci.image.manifest.v1+json"},
    )
    with urllib.request.urlopen(put) as r:
        return r.headers["Docker-Content-Digest"]


def lock_with(digests: dict[str, str | None], **images: str) -> Lock:
    """The committed lock's entries with the given digests (and image repositories) per step."""
    lock = read_lock(LOCK_PATH)
    for step, digest in digests.items():
        entry = lock.packages[step]
        lock.packages[step] = dataclasses.replace(entry, digest=digest, image=images.get(step, entry.image))
    return lock


def pinned_lock() -> Lock:
    return lock_with({step: fake_digest(step) for step in ORDER})


@pytest.fixture
def pinned_lock_file(tmp_path: Path) -> Path:
    path = tmp_path / "images.lock.json"
    write_lock(pinned_lock(), path)
    return path


@pytest.fixture
def unpinned_lock_file(tmp_path: Path) -> Path:
    """The committed lock as it is before any image is built: no digests."""
    path = tmp_path / "images.lock.json"
    write_lock(lock_with(dict.fromkeys(ORDER)), path)
    return path


@pytest.fixture(scope="session")
def dev_yaml(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from mnist_ct.orchestration.compiling import compile_pipeline

    path = tmp_path_factory.mktemp("dev") / "pipeline.yaml"
    compile_pipeline(lock_with(dict.fromkeys(ORDER)), path, dev=True)
    return path


@pytest.fixture(scope="session")
def strict_yaml(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from mnist_ct.orchestration.compiling import compile_pipeline

    path = tmp_path_factory.mktemp("strict") / "pipeline.yaml"
    compile_pipeline(pinned_lock(), path)
    return path


@pytest.fixture
def isolated_kfp_config(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """kfp.Client reads ~/.config/kfp/context.json and KFP's variables; keep a developer's own out of the tests
    (and their MNIST_CT_REGISTRY, where release looks the images up)."""
    monkeypatch.setattr(kfp.Client, "_LOCAL_KFP_CONTEXT", str(tmp_path / "kfp-context.json"))
    for name in ("MNIST_CT_KFP_TOKEN", "KF_PIPELINES_SA_TOKEN_PATH", "KF_PIPELINES_ENDPOINT", "MNIST_CT_REGISTRY"):
        monkeypatch.delenv(name, raising=False)


def _load_tools_registry():
    """tools/registry.py (standard library only), loaded by path: the one way the repo starts docker-registry."""
    spec = importlib.util.spec_from_file_location("_mnist_ct_tools_registry", ROOT / "tools" / "registry.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # its dataclass resolves annotations through sys.modules
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="session")
def image_registry(tmp_path_factory: pytest.TempPathFactory):
    """Debian's docker-registry on 127.0.0.1 (a free port): its address. Installed here and by .ci/run."""
    running = _load_tools_registry().start(tmp_path_factory.mktemp("registry"))
    yield running.address
    running.stop()


REGISTRY_PREFIX = "mnist-ct"  # the images go under <address>/mnist-ct, as build-changed --registry pushes them


@pytest.fixture
def api(isolated_kfp_config: None, image_registry: str, monkeypatch: pytest.MonkeyPatch):
    """The fake KFP v2beta1 API server (kfp_api.py) on 127.0.0.1, with the local registry as MNIST_CT_REGISTRY."""
    monkeypatch.setenv("MNIST_CT_REGISTRY", f"{image_registry}/{REGISTRY_PREFIX}")
    with FakeKfp() as server:
        yield server


def push_lock_images(lock_file: Path, address: str) -> None:
    """Push the fake image of every step the lock pins into the registry, under <address>/mnist-ct."""
    for entry in read_lock(lock_file).packages.values():
        if entry.image and entry.digest in FAKE_IMAGES:
            name = f"{REGISTRY_PREFIX}/{entry.image.rsplit('/', 1)[-1]}"
            push_image(address, name, FAKE_IMAGES[entry.digest])


def release(api: FakeKfp, lock_file: Path, *extra: str) -> int:
    """`mnist-ct release` to the fake KFP server, the lock's images first pushed into the local registry (the
    image check then finds them: test_release_images.py tests what it does when they are missing)."""
    push_lock_images(lock_file, os.environ["MNIST_CT_REGISTRY"].split("/", 1)[0])
    return main(["release", "--host", api.url, "--lock", str(lock_file), *extra])


@pytest.fixture(scope="session")
def fake_step_packages(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The folder holding the fake step packages (fake_steps.py)."""
    return write_fake_steps(tmp_path_factory.mktemp("fake-steps"))


@pytest.fixture
def fake_steps(fake_step_packages: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """The fake steps importable by every Python this test starts (PYTHONPATH); no fault injected."""
    monkeypatch.setenv("PYTHONPATH", str(fake_step_packages))
    for name in (
        "MNIST_CT_FAKE_FAIL", "MNIST_CT_FAKE_WAIT", "MNIST_CT_FAKE_ACCURACY", "MNIST_CT_FAKE_CHAMPION",
        "MNIST_CT_FAKE_PROCEED",
    ):  # fmt: skip
        monkeypatch.delenv(name, raising=False)
    return fake_step_packages


def run_local(workdir: Path, *options: str, run_id: str = "r1") -> int:
    """`mnist-ct run-local` in this process, compiled from the committed lock."""
    return main(["run-local", "--workdir", str(workdir), "--run-id", run_id, *options])
