"""The work dir of `run-local`, checked before anything is created in it.

    WORKDIR/data, WORKDIR/model, WORKDIR/deploy-model    the three volumes (data-pvc, train-model-pvc, deploy-model-pvc)
    WORKDIR/kfp/<run id>/                                 pipeline.yaml, run.json, outputs/ (output parameter files,
                                                          ExecutorOutputs), artifacts/ (output artifacts)

Refused: a work dir that is a file (exit 2); one inside a run folder of a volume (`.../data/runs/<id>/...`)
or inside another work dir's volume or kfp folder (exit 2): the steps of this run would write into that
run's artifacts; a volume or kfp folder that is a symlink leading out of the work dir (exit 3): nothing a
run writes follows a link out of its volume; a work dir on a read-only file system, or not writable by
you (exit 5).
"""

from __future__ import annotations

from pathlib import Path

from mnist_ct.artifacts import UsageError, atomic_write_bytes, check_writable, confined
from mnist_ct.orchestration.pipeline import VOLUMES

STATE = "kfp"  # WORKDIR/kfp/<run id>: what the runner keeps of a run
VOLUME_FOLDERS = tuple(v.mount_path.strip("/") for v in VOLUMES)  # data, model, deploy-model


def _enclosing_work_dir(real: Path) -> tuple[Path, str] | None:
    """(another work dir, its folder) that `real` lies in (or is), e.g. (/w, "model") for /w/model/x."""
    for ancestor in real.parents:
        inside = real.relative_to(ancestor).parts[0]
        if inside in (*VOLUME_FOLDERS, STATE) and (ancestor / STATE).is_dir():
            return ancestor, inside
    return None


def _enclosing_run_folder(real: Path) -> Path | None:
    """The run folder `<volume>/runs/<run id>` that `real` lies in (or is), if any."""
    for folder in [real, *real.parents]:
        runs = folder.parent
        if runs.name == "runs" and runs.parent.name in VOLUME_FOLDERS:
            return folder
    return None


def check_workdir(workdir: Path, run_id: str) -> Path:
    """The work dir, resolved, if a run may use it (module docstring); UsageError or ArtifactError otherwise."""
    if Path(workdir).exists() and not Path(workdir).is_dir():
        raise UsageError(f"--workdir {workdir}: is a file, not a folder; pass a folder (created if missing)")
    real = Path(workdir).resolve()
    run_folder = _enclosing_run_folder(real)
    if run_folder is not None:
        raise UsageError(
            f"--workdir {workdir}: lies in the run folder {run_folder} of a volume; its steps would write into "
            "that run's artifacts: choose a folder outside every volume"
        )
    enclosing = _enclosing_work_dir(real)
    if enclosing is not None:
        other, folder = enclosing
        raise UsageError(
            f"--workdir {workdir}: lies in {other / folder}, the {folder} folder of the work dir {other}: "
            "choose a folder outside it"
        )
    for parts in [(folder,) for folder in VOLUME_FOLDERS] + [(STATE,), (STATE, run_id)]:
        confined(real, *parts)  # ArtifactError: a symlink leading out of the work dir
    # A read-only work dir is the environment's problem (exit 5, naming it), found here, before the steps'
    # option checks would each refuse the output files under it.
    check_writable(real / STATE / run_id)
    return real


def write_atomically(path: Path, data: bytes) -> None:
    """`data` into `path` through a temporary sibling and a rename; an OSError names `path` (a full disk's
    ENOSPC from write() or fsync() carries no file name of its own)."""
    try:
        atomic_write_bytes(path, data)
    except OSError as e:
        if e.filename is None:
            raise OSError(e.errno, e.strerror, str(path)) from e
        raise
