"""Run-scoped paths on the three volumes (/data, /model, /deploy-model)."""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

from .errors import ArtifactError, UsageError

DEFAULT_DATA_ROOT = Path("/data")
DEFAULT_MODEL_ROOT = Path("/model")
DEFAULT_DEPLOY_ROOT = Path("/deploy-model")

# KFP run ids are UUIDs; anything that could escape the run folder is refused. Matched whole (fullmatch):
# `$` alone would accept a trailing newline.
_RUN_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,127}")


def check_run_id(run_id: str) -> str:
    """Return `run_id` if it is a safe folder name, else raise UsageError."""
    if not isinstance(run_id, str) or not _RUN_ID.fullmatch(run_id) or ".." in run_id:
        raise UsageError(
            f"invalid run id {run_id!r}: use 1-128 letters, digits, '.', '_' or '-' (starting with a letter or digit)"
        )
    return run_id


def check_root(root: Path) -> Path:
    """A volume root may not exist yet (writers create it), but it must not be a file."""
    root = Path(root)
    if root.exists() and not root.is_dir():
        raise UsageError(f"{root}: is a file, not a folder; pass the volume's folder")
    for above in root.parents:  # the nearest existing folder above a missing root must be a folder
        if above.exists():
            if not above.is_dir():
                raise UsageError(f"{root}: {above} is a file, so this folder cannot exist; pass the volume's folder")
            break
    return root


def confined(root: Path, *parts: str) -> Path:
    """`root/parts...`, refused when an existing part of it is a symlink leading out of `root`.

    Steps write only below the paths this returns, so nothing on a volume follows a link out of its root.
    """
    path = Path(root).joinpath(*parts)
    real_root = Path(root).resolve()
    real = path.resolve()  # follows every existing link; the missing tail stays as written
    if real != real_root and not real.is_relative_to(real_root):
        raise ArtifactError(
            f"{path}: leads out of its volume {root} (to {real}) through a symlink; remove the link or pass "
            "the volume's real folder"
        )
    return path


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
            object.__setattr__(self, name, check_root(Path(getattr(self, name))))

    def cli_args(self) -> list[str]:
        """The core options that name this run and its volumes, as every step's command line takes them."""
        return [
            "--run-id",
            self.run_id,
            "--data-root",
            str(self.data_root),
            "--model-root",
            str(self.model_root),
            "--deploy-root",
            str(self.deploy_root),
        ]

    def raw(self, dataset: str) -> Path:
        """Cache of downloaded source files, shared by all runs."""
        return confined(self.data_root, "raw", dataset)

    @property
    def data_run(self) -> Path:
        return confined(self.data_root, "runs", self.run_id)

    @property
    def model_run(self) -> Path:
        return confined(self.model_root, "runs", self.run_id)

    @property
    def dataset(self) -> Path:
        return confined(self.data_root, "runs", self.run_id, "dataset")

    @property
    def validation(self) -> Path:
        return confined(self.data_root, "runs", self.run_id, "validation")

    @property
    def model(self) -> Path:
        return confined(self.model_root, "runs", self.run_id, "model")

    @property
    def checkpoints(self) -> Path:
        """Training checkpoints (not an artifact: no manifest, only for --resume)."""
        return confined(self.model_root, "runs", self.run_id, "checkpoints")

    @property
    def embeddings(self) -> Path:
        return confined(self.model_root, "runs", self.run_id, "embeddings")

    @property
    def index(self) -> Path:
        return confined(self.model_root, "runs", self.run_id, "index")

    @property
    def analysis(self) -> Path:
        return confined(self.model_root, "runs", self.run_id, "analysis")

    @property
    def model_store(self) -> Path:
        return confined(self.deploy_root, "model-store")

    @property
    def history(self) -> Path:
        return confined(self.deploy_root, "history")

    @property
    def deploy_config(self) -> Path:
        return confined(self.deploy_root, "config")
