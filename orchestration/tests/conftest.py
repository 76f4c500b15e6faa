from __future__ import annotations

import dataclasses
import hashlib
import importlib.util
import os
import sys
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


@pytest.fixture(scope="session")
def fake_step_packages(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The folder holding the fake step packages (fake_steps.py)."""
    return write_fake_steps(tmp_path_factory.mktemp("fake-steps"))


@pytest.fixture
def fake_steps(fake_step_packages: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """The fake steps importable by every Python this test starts (PYTHONPATH); no fault injected."""
    monkeypatch.setenv("PYTHONPATH", str(fake_step_packages))
    for name in ("MNIST_CT_FAKE_FAIL", "MNIST_CT_FAKE_WAIT", "MNIST_CT_FAKE_ACCURACY"):
        monkeypatch.delenv(name, raising=False)
    return fake_step_packages


def run_local(workdir: Path, *options: str, run_id: str = "r1") -> int:
    """`mnist-ct run-local` in this process, compiled from the committed lock."""
    return main(["run-local", "--workdir", str(workdir), "--run-id", run_id, *options])
