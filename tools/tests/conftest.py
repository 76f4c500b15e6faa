"""Fixture monorepos in temporary git repositories (a lib, steps that use it, the real lock module)."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO))

# orchestration's standard-library modules that tools/ loads by path (the lock; engine detection; registries).
LOCK_MODULE = "orchestration/src/mnist_ct/orchestration/lock.py"
CONTAINERS_MODULE = "orchestration/src/mnist_ct/orchestration/containers.py"
REGISTRY_MODULE = "orchestration/src/mnist_ct/orchestration/registry.py"


def pytest_configure(config):
    config.addinivalue_line("markers", "slow: builds real images (minutes); still runs in CI")


def git(root: Path, *args: str) -> str:
    env = {"GIT_AUTHOR_NAME": "t", "GIT_AUTHOR_EMAIL": "t@t", "GIT_COMMITTER_NAME": "t", "GIT_COMMITTER_EMAIL": "t@t"}
    done = subprocess.run(["git", *args], cwd=root, capture_output=True, text=True, env={**os.environ, **env})
    assert done.returncode == 0, done.stderr
    return done.stdout


def pyproject(name: str, version: str = "0.1.0", deps: tuple[str, ...] = ()) -> str:
    return (
        f'[project]\nname = "{name}"\nversion = "{version}"\nrequires-python = ">=3.11"\n'
        f"dependencies = {json.dumps(list(deps))}\n\n"
        '[project.optional-dependencies]\ntest = ["pytest"]\n\n'
        '[build-system]\nrequires = ["hatchling"]\nbuild-backend = "hatchling.build"\n\n'
        '[tool.hatch.build.targets.wheel]\npackages = ["src/mnist_ct"]\n'
    )


STEP_MAIN = """\
import argparse

import numpy as np

from mnist_ct.tinylib import greeting


def main(argv=None):
    parser = argparse.ArgumentParser(prog="python -m mnist_ct.{name}", description="A fixture step.")
    parser.add_argument("--run-id", required=True, help="the run id")
    args = parser.parse_args(argv)
    print(greeting(args.run_id), int(np.arange(4).sum()))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
"""

STEP_TEST = """\
from mnist_ct.{name}.__main__ import main


def test_main_prints_the_greeting(capsys):
    assert main(["--run-id", "r1"]) == 0
    assert capsys.readouterr().out == "hello r1 6\\n"
"""


TINYLIB_TEST = """\
from mnist_ct.tinylib import greeting


def test_greeting():
    assert greeting("you") == "hello you"
"""


class FixtureRepo:
    """A small monorepo: libs/tinylib; steps/tiny (tinylib + numpy); steps/other (no deps)."""

    def __init__(self, root: Path, *, tooling: bool = False, other: bool = True):
        self.root = root
        w = self.write
        w("constraints.txt", (REPO / "constraints.txt").read_text())
        w(".gitignore", ".nox/\n__pycache__/\n*.log\n")
        w("libs/tinylib/pyproject.toml", pyproject("mnist-ct-tinylib"))
        w("libs/tinylib/README.md", "# tinylib\n")
        w("libs/tinylib/src/mnist_ct/tinylib/__init__.py", 'def greeting(who):\n    return f"hello {who}"\n')
        w("libs/tinylib/tests/test_tinylib.py", TINYLIB_TEST)
        self.add_step("tiny", deps=("mnist-ct-tinylib", "numpy"))
        if other:
            self.add_step("other", deps=())
        for module in (LOCK_MODULE, CONTAINERS_MODULE, REGISTRY_MODULE):
            w(module, (REPO / module).read_text())
        w("orchestration/images.lock.json", json.dumps({"registry": "ghcr.io/mnist-ct-test", "packages": {}}))
        if tooling:
            shutil.copytree(REPO / "tools", root / "tools", ignore=shutil.ignore_patterns("tests", "__pycache__"))
            shutil.copy(REPO / "noxfile.py", root / "noxfile.py")
        git(root, "init", "-q", "-b", "main")
        self.commit("initial")

    def write(self, rel: str, text: str) -> Path:
        path = self.root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
        return path

    def add_step(self, name: str, deps: tuple[str, ...], version: str = "0.1.0") -> None:
        w = self.write
        w(f"steps/{name}/pyproject.toml", pyproject(f"mnist-ct-{name}", version, deps))
        w(f"steps/{name}/README.md", f"# {name}\n")
        w(f"steps/{name}/CHANGELOG.md", "## 0.1.0 - first release\n")
        if "numpy" in deps:
            w(f"steps/{name}/src/mnist_ct/{name}/__init__.py", "")
            w(f"steps/{name}/src/mnist_ct/{name}/__main__.py", STEP_MAIN.format(name=name))
            w(f"steps/{name}/tests/test_{name}.py", STEP_TEST.format(name=name))
            from tools import delivery

            w(f"steps/{name}/Dockerfile", delivery.render_dockerfile(name))
        else:
            w(f"steps/{name}/src/mnist_ct/{name}/__init__.py", "VALUE = 1\n")

    def set_version(self, name: str, version: str) -> None:
        path = next(self.root.glob(f"*/{name}/pyproject.toml"))
        path.write_text(re.sub(r'(?m)^version = ".*"$', f'version = "{version}"', path.read_text(), count=1))

    def commit(self, message: str) -> None:
        git(self.root, "add", "-A")
        git(self.root, "commit", "-q", "--allow-empty", "-m", message)

    @property
    def lock_path(self) -> Path:
        return self.root / "orchestration" / "images.lock.json"

    def record_all(self) -> None:
        """Write every package's current version and input hash to the lock (as a build would)."""
        from tools import monorepo

        lockmod = monorepo.lock_module(self.root)
        lock = lockmod.read_lock(self.lock_path)
        packages = monorepo.discover(self.root)
        for name, p in packages.items():
            image = f"{lock.registry}/{p.dist}" if p.kind == "step" else None
            digest = "sha256:" + "0" * 64 if image else None
            input_hash = monorepo.input_hash(self.root, p, packages)
            lock.packages[name] = lockmod.LockEntry(p.version, input_hash, image, digest)
        lockmod.write_lock(lock, self.lock_path)


@pytest.fixture
def repo(tmp_path: Path) -> FixtureRepo:
    return FixtureRepo(tmp_path / "repo")
