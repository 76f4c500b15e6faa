"""Run-scoped paths on the three volumes (/data, /model, /deploy-model)."""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

from .errors import UsageError

DEFAULT_DATA_ROOT = Path("/data")
DEFAULT_MODEL_ROOT = Path("/model")
DEFAULT_DEPLOY_ROOT = Path("/deploy-model")

# KFP run ids are UUIDs; anything that could escape the run folder is refused.
_RUN_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$")


def check_run_id(run_id: str) -> str:
    """Return `run_id` if it is a safe folder name, else raise UsageError."""
    if not _RUN_ID.match(run_id) or ".." in run_id:
        raise UsageError(
            f"invalid run id {run_id!r}: use 1-128 letters, digits, '.', '_' or '-' (starting with a letter or digit)"
        )
    return run_id


@dataclass(frozen=True)
class RunPaths:
    """Where each artifact of run `run_id` lives; see libs/artifacts/README.md."""

    run_id: str
    data_root: Path = DEFAULT_DATA_ROOT
    model_root: Path = DEFAULT_MODEL_ROOT
    deploy_root: Path = DEFAULT_DEPLOY_ROOT

    def __post_init__(self) -> None:
        check_run_id(self.run_id)
        for name in ("data_root", "model_root", "deploy_root"):
            object.__setattr__(self, name, Path(getattr(self, name)))

    def raw(self, dataset: str) -> Path:
        """Cache of downloaded source files, shared by all runs."""
        return self.data_root / "raw" / dataset

    @property
    def data_run(self) -> Path:
        return self.data_root / "runs" / self.run_id

    @property
    def model_run(self) -> Path:
        return self.model_root / "runs" / self.run_id

    @property
    def dataset(self) -> Path:
        return self.data_run / "dataset"

    @property
    def validation(self) -> Path:
        return self.data_run / "validation"

    @property
    def model(self) -> Path:
        return self.model_run / "model"

    @property
    def checkpoints(self) -> Path:
        """Training checkpoints (not an artifact: no manifest, only for --resume)."""
        return self.model_run / "checkpoints"

    @property
    def embeddings(self) -> Path:
        return self.model_run / "embeddings"

    @property
    def index(self) -> Path:
        return self.model_run / "index"

    @property
    def analysis(self) -> Path:
        return self.model_run / "analysis"

    @property
    def model_store(self) -> Path:
        return self.deploy_root / "model-store"

    @property
    def history(self) -> Path:
        return self.deploy_root / "history"

    @property
    def deploy_config(self) -> Path:
        return self.deploy_root / "config"
