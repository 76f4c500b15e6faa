"""history/<version>/: every deployed version, kept for rollback, as a verified artifact folder.

    history/<version>/<model>.mar        the archive exactly as it went live
    history/<version>/deployment.json    what was deployed: accuracy, lineage, the handler's and TorchServe's settings
    history/<version>/manifest.json      kind "deployment", checksums of both, written last

A version is published complete (staging folder, manifest last, rename) before it can go live, so the live
archive is always a copy of one of these.
"""

from __future__ import annotations

import json
import shutil
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from mnist_ct.artifacts import (
    ArtifactError,
    Log,
    Producer,
    RunPaths,
    confined,
    publish,
    read_manifest,
    sha256_file,
    verify_file,
)
from mnist_ct.artifacts.champion import DEPLOYMENT_KIND, read_deployed

from .archive import SETTINGS_FILE, build_archive
from .candidate import Candidate
from .event_log import now
from .live import write_named
from .serving_config import ServingOptions


def version_folder(paths: RunPaths, version: str) -> Path:
    """history/<version>, refused if a symlink there leads out of the deploy volume."""
    return confined(paths.deploy_root, "history", version)


@dataclass(frozen=True)
class HandlerSettings:
    """What the handler reads from deployment.json besides k and the vote (see handler.py)."""

    max_pixels: int
    threads: int


def deployment_record(
    candidate: Candidate,
    model_name: str,
    handler: HandlerSettings,
    serving: ServingOptions,
    producer: Producer,
    images: dict[str, str],
    versions: dict[str, str],
) -> dict[str, Any]:
    """deployment.json: inside the archive (the handler's settings) and beside it in history.

    `images` and `versions`: every step's image and package version in the run that made the model, with the
    data set's version and manifest digest: which data and which code made this version. Where analysis
    measured the champion, the champion it measured on this run's test split and its verdict too.
    """
    record: dict[str, Any] = {
        "model_name": model_name,
        "version": candidate.run_id,
        "run_id": candidate.run_id,
        "accuracy": candidate.accuracy,
        "deployed_by": {"step": producer.step, "version": producer.version},
        "created": now(),
        "inputs": candidate.inputs,
        "lineage": candidate.lineage,
        "images": images,
        "versions": versions,
        "data_version": candidate.data_version,
        "dataset_sha256": candidate.dataset_sha256,
        # what the handler reads: k and vote as analysis measured the accuracy
        "serving": {
            "k": candidate.k,
            "vote": candidate.vote,
            "max_pixels": handler.max_pixels,
            "threads": handler.threads,
            "version": candidate.run_id,
        },
        "torchserve": serving.to_json(),
    }
    if candidate.measured_champion:
        record["champion"] = champion_json(candidate)
        record["blessing"] = candidate.blessing
    return record


def champion_json(candidate: Candidate) -> dict[str, Any] | None:
    """The champion analysis measured the candidate against (null: nothing was live), as records carry it."""
    c = candidate.champion
    return None if c is None else {"version": c.version, "accuracy": c.accuracy, "archive_sha256": c.archive_sha256}


def existing_entry(paths: RunPaths, candidate: Candidate, model_name: str) -> Path | None:
    """The archive of this exact deployment if history already holds it (a redeploy), else None."""
    folder = version_folder(paths, candidate.run_id)
    mar_name = f"{model_name}.mar"
    if not (folder / "manifest.json").exists():
        return None
    existing = read_manifest(folder, DEPLOYMENT_KIND)
    if mar_name not in existing.files:
        raise ArtifactError(f"{folder}: holds another model than {model_name!r}; use another run id")
    if existing.inputs != candidate.inputs:
        raise ArtifactError(
            f"{folder}: version {candidate.run_id} was deployed from other artifacts; deploy them under a new run id"
        )
    return verify_file(folder, existing, mar_name)


def publish_entry(paths: RunPaths, candidate: Candidate, deployment: dict[str, Any], log: Log) -> Path:
    """Build the archive from the candidate's files and publish history/<version>/; the archive's path."""
    version = candidate.run_id
    model_name = deployment["model_name"]
    folder = version_folder(paths, version)
    with publish(folder, DEPLOYMENT_KIND, Producer(**deployment["deployed_by"]), inputs=candidate.inputs) as staging:
        staged = {}
        for name, src in candidate.sources.items():  # verify the bytes that go in, not only the originals
            dst = staging.path / f".src-{name}"
            shutil.copyfile(src, dst)  # its OSErrors name both files (a full disk included)
            if candidate.manifest_of(name).files[src.name].sha256 != sha256_file(dst):
                raise ArtifactError(f"{src}: changed while being deployed (sha256 differs from its manifest)")
            staged[name] = dst
        t0 = time.perf_counter()
        build_archive(staging.path, model_name, version, staged, deployment)
        for dst in staged.values():
            dst.unlink()
        write_named(staging.path / SETTINGS_FILE, (json.dumps(deployment, indent=2, sort_keys=True) + "\n").encode())
        staging.meta.update(
            {k: deployment[k] for k in ("model_name", "version", "run_id", "accuracy", "serving", "torchserve")}
        )
        log(f"archived {model_name}.mar version {version} in {time.perf_counter() - t0:.1f} s")
    return folder / f"{model_name}.mar"


def verified_archive(paths: RunPaths, version: str, model_name: str) -> Path:
    """history/<version>/<model>.mar, verified against its manifest (what a rollback makes live): read as every
    step reads a deployed version (mnist_ct.artifacts.read_deployed), so a rollback target is a valid champion."""
    return read_deployed(paths.deploy_root, model_name, version).archive
