"""Small real training runs on the built-in digits (the mnist_ct.artifacts pytest plugin serves the data)."""

from __future__ import annotations

import shutil
import warnings
from collections.abc import Iterator
from pathlib import Path

import pytest
import torch

from mnist_ct.artifacts import RunPaths
from mnist_ct.artifacts.testing import publish_run, run_args
from mnist_ct.train_model.__main__ import main

# A network small enough that one epoch over 300 digits takes well under a second. With a hold-out (the
# default holds out nothing), so the validation, best-epoch and early-stopping paths run too.
SMALL = [
    *("--epochs", "1", "--batch-size", "32", "--widths", "8,16,16", "--embedding-dim", "16", "--threads", "1"),
    *("--val-fraction", "0.1"),
]


@pytest.fixture(autouse=True)
def _two_threads() -> Iterator[None]:
    threads = torch.get_num_threads()
    torch.set_num_threads(2)  # the CI machine has two cores, shared
    yield
    torch.set_num_threads(threads)


def load_model(path: Path) -> torch.jit.ScriptModule:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        return torch.jit.load(str(path))


def one_line_error(capsys: pytest.CaptureFixture[str]) -> str:
    """The one line a failed run wrote on stderr."""
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1, err
    assert err[0].startswith("train_model: error: ") and "Traceback" not in err[0]
    return err[0]


def run_paths(root: Path) -> RunPaths:
    """Run "t" of the volumes under `root` (as publish_run lays them out)."""
    return RunPaths("t", root / "data", root / "model", root / "deploy")


@pytest.fixture(scope="session")
def _trained_once(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("trained")
    paths = publish_run(root)
    assert main([*run_args(paths), *SMALL]) == 0
    return root


@pytest.fixture
def trained_run(_trained_once: Path, tmp_path: Path) -> RunPaths:
    """A copy of run "t" after a SMALL training run: its data set, model and checkpoints (trained once per session)."""
    root = tmp_path / "trained"
    shutil.copytree(_trained_once, root, symlinks=True)
    return run_paths(root)
