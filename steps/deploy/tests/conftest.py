"""Fixtures: two real runs (a good model and a worse one) built once per session, and deploy roots."""

from __future__ import annotations

from pathlib import Path

import pytest
from fixture_run import FixtureRun, build_run


@pytest.fixture(scope="session")
def runs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, FixtureRun]:
    """`good`: the full gallery; `worse`: the same network with one gallery image per class."""
    root = tmp_path_factory.mktemp("runs")
    good = build_run(root, "good")
    worse = build_run(root, "worse", gallery_per_class=1)
    assert worse.accuracy < good.accuracy, "the fixture needs a real accuracy gap"
    return {"good": good, "worse": worse}


@pytest.fixture
def deploy_root(tmp_path: Path) -> Path:
    return tmp_path / "deploy"
