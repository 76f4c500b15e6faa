"""Fixtures: a run folder per test, FAISS on one thread."""

from __future__ import annotations

from pathlib import Path

import faiss
import pytest
from analysis_testdata import CraftedRun, write_crafted_run

from mnist_ct.artifacts import RunPaths


@pytest.fixture(autouse=True)
def _one_faiss_thread() -> None:
    faiss.omp_set_num_threads(1)


@pytest.fixture
def paths(tmp_path: Path) -> RunPaths:
    return RunPaths("t1", tmp_path / "data", tmp_path / "model", tmp_path / "deploy")


@pytest.fixture
def crafted(paths: RunPaths) -> CraftedRun:
    return write_crafted_run(paths)
