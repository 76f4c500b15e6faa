"""Deploy and roll back: history, the live archive, the deployments log, champion/challenger.

Layout under the deploy root (see README.md):

    model-store/<model>.mar             the live archive (replaced only by an atomic rename)
    history/<version>/<model>.mar       every deployed version (an artifact folder: manifest.json
    history/<version>/deployment.json   with checksums, kind "deployment")
    config/config.properties            TorchServe / KServe configuration
    deployments.jsonl                   append-only log, one JSON object per line, fsynced
    .deploy.lock                        held (flock) while a deploy or rollback runs

Crash safety: the new version is first published complete into history (staging folder, manifest
last, rename), then copied over the live archive with a fsynced temporary sibling and a rename,
so the live .mar is always one complete version. The log line is written last; if a run dies
between the rename and the log line, the next run sees the live archive's version (read from
the archive itself) differ from the log and records it as live ("recovered").
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import math
import os
import shutil
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from mnist_ct.artifacts import (
    ArtifactError,
    Log,
    Manifest,
    Producer,
    RunPaths,
    atomic_write_bytes,
    load_array,
    publish,
    read_manifest,
    read_verified,
    require_torchscript,
    sha256_file,
    verify_file,
)
from mnist_ct.artifacts.manifest import fsync_dir

from .archive import (
    INDEX_FILE,
    LABELS_FILE,
    MODEL_FILE,
    SETTINGS_FILE,
    ArchiveInfo,
    build_archive,
    check_model_name,
    inspect_archive,
)
from .serving_config import ServingOptions, deployed_properties, render

STEP = "deploy"
DEPLOYMENT_KIND = "deployment"
LOG_FILE = "deployments.jsonl"
LOCK_FILE = ".deploy.lock"
CONFIG_FILE = "config.properties"
EXIT_REFUSED = 4
VOTES = ("majority", "distance")


class ChallengerRefused(ArtifactError):
    """The new model is worse than the live one (champion/challenger): exit code 4."""

    exit_code = EXIT_REFUSED


@dataclass(frozen=True)
class DeployRequest:
    model_name: str = "mnist"
    force: bool = False
    serving: ServingOptions = field(default_factory=ServingOptions)
    max_pixels: int = 4096 * 4096  # larger images get 413 from the handler
    threads: int = 1  # torch and faiss threads per worker
    serving_root: str = "/mnt/models"


@dataclass(frozen=True)
class Outcome:
    version: str
    previous: str | None
    accuracy: float | None
    live: Path
    reused: bool = False


# -- the deployments log --------------------------------------------------------------------


def now() -> str:
    return datetime.now(UTC).isoformat(timespec="milliseconds")


def append_event(deploy_root: Path, event: dict[str, Any]) -> None:
    """Append one JSON line to deployments.jsonl with a single write, then fsync it."""
    path = Path(deploy_root) / LOG_FILE
    created = not path.exists()
    line = (json.dumps({"time": now(), **event}, sort_keys=True) + "\n").encode()
    fd = os.open(path, os.O_RDWR | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        size = os.fstat(fd).st_size
        if size and os.pread(fd, 1, size - 1) != b"\n":
            line = b"\n" + line  # a run died mid-line: keep its fragment on a line of its own
        os.write(fd, line)
        os.fsync(fd)
    finally:
        os.close(fd)
    if created:
        fsync_dir(path.parent)


def read_events(deploy_root: Path) -> list[dict[str, Any]]:
    """Every event in the log; a torn line (a run killed mid-write) is skipped."""
    path = Path(deploy_root) / LOG_FILE
    if not path.is_file():
        return []
    events = []
    for raw in path.read_bytes().split(b"\n"):
        try:
            event = json.loads(raw) if raw.strip() else None
        except ValueError:
            continue
        if isinstance(event, dict):
            events.append(event)
    return events


def live_stack(events: list[dict[str, Any]], model_name: str) -> list[str]:
    """The versions that were live, oldest first; the last one is live now. A rollback pops."""
    stack: list[str] = []
    for e in events:
        if e.get("model") != model_name:
            continue
        kind, version = e.get("event"), e.get("version")
        if kind in ("deploy", "recovered") and version:
            if not stack or stack[-1] != version:
                stack.append(version)
        elif kind == "rollback" and version:
            if stack and stack[-1] == e.get("from"):
                stack.pop()
            if not stack or stack[-1] != version:
                stack.append(version)
    return stack


# -- the deploy root ------------------------------------------------------------------------


@contextlib.contextmanager
def locked(deploy_root: Path, log: Log) -> Iterator[None]:
    """One deploy or rollback at a time per deploy root (released by the kernel if we die)."""
    Path(deploy_root).mkdir(parents=True, exist_ok=True)
    fd = os.open(Path(deploy_root) / LOCK_FILE, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            log(f"waiting for another deploy or rollback on {deploy_root} to finish")
            fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)


def remove_leftovers(paths: RunPaths) -> list[Path]:
    """Hidden temporary files and staging folders of runs that died (only called under the lock)."""
    removed = []
    for folder in (paths.model_store, paths.history, paths.deploy_config):
        if not folder.is_dir():
            continue
        for p in folder.iterdir():
            if p.name.startswith(".") and any(t in p.name for t in (".tmp-", ".staging-", ".old-")):
                if p.is_dir():
                    shutil.rmtree(p, ignore_errors=True)
                else:
                    p.unlink(missing_ok=True)
                removed.append(p)
    return removed


def live_path(paths: RunPaths, model_name: str) -> Path:
    return paths.model_store / f"{model_name}.mar"


def live_archive(paths: RunPaths, model_name: str, force: bool = False, log: Log | None = None) -> ArchiveInfo | None:
    """The live archive, None if there is none (or, with `force`, if it is unreadable)."""
    path = live_path(paths, model_name)
    if not path.exists():
        return None
    try:
        return inspect_archive(path)
    except ArtifactError as e:
        if not force:
            raise ArtifactError(f"{e} (the live archive; --force replaces it)") from None
        if log is not None:
            log(f"replacing an unreadable live archive: {e}")
        return None


def reconcile(paths: RunPaths, model_name: str, live: ArchiveInfo | None, log: Log) -> list[str]:
    """The live stack from the log, brought in line with the live archive if a run died mid-way."""
    stack = live_stack(read_events(paths.deploy_root), model_name)
    if live is not None and (not stack or stack[-1] != live.version):
        append_event(
            paths.deploy_root,
            {
                "event": "recovered",
                "model": model_name,
                "version": live.version,
                "run_id": live.deployment.get("run_id"),
                "accuracy": live.accuracy,
                "note": "the live archive's version differs from the log (a deploy or rollback died "
                "after publishing); recorded as live",
            },
        )
        log(f"recovered: the live archive is version {live.version}, the log said {stack[-1] if stack else None}")
        stack.append(live.version)
    return stack


def write_config(paths: RunPaths, model_name: str, options: ServingOptions, serving_root: str) -> Path:
    path = paths.deploy_config / CONFIG_FILE
    comments = [
        f"TorchServe configuration written by mnist-ct deploy {Producer.of(STEP).version}.",
        f"KServe layout: the deploy volume mounted at {serving_root} holds config/{CONFIG_FILE} and",
        f"model-store/{model_name}.mar (the live version is in the archive's MAR-INF/MANIFEST.json).",
    ]
    text = render(deployed_properties(model_name, options, serving_root), comments)
    atomic_write_bytes(path, text.encode())
    return path


# -- reading what deploy needs ---------------------------------------------------------------


@dataclass(frozen=True)
class Candidate:
    """The verified inputs of one run: model, index and the accuracy analysis measured."""

    run_id: str
    model: Manifest
    index: Manifest
    analysis: Manifest
    accuracy: float
    k: int
    vote: str
    sources: dict[str, Path]
    lineage: dict[str, Any]


def _require(folder: Path, manifest: Manifest, names: tuple[str, ...]) -> None:
    for name in names:
        if name not in manifest.files:
            raise ArtifactError(f"{folder / name}: not in {folder / 'manifest.json'}; rerun {manifest.producer.step}")


def _metrics(paths: RunPaths, analysis: Manifest) -> dict[str, Any]:
    path = verify_file(paths.analysis, analysis, "metrics.json")
    try:
        doc = json.loads(path.read_text())
    except ValueError as e:
        raise ArtifactError(f"{path}: not valid JSON ({e})") from None
    accuracy = doc.get("accuracy") if isinstance(doc, dict) else None
    if isinstance(accuracy, bool) or not isinstance(accuracy, (int, float)) or not math.isfinite(accuracy):
        raise ArtifactError(f"{path}: top-level 'accuracy' must be a number in 0..1, got {accuracy!r}")
    if not 0.0 <= accuracy <= 1.0:
        raise ArtifactError(f"{path}: accuracy {accuracy} is outside 0..1")
    return doc


def _describe(m: Manifest) -> dict[str, Any]:
    return {"digest": m.digest, "producer": f"{m.producer.step} {m.producer.version}", "inputs": m.inputs}


def _check_lineage(paths: RunPaths, model: Manifest, index: Manifest, analysis: Manifest) -> dict[str, Any]:
    """The index must come from this model's embeddings, and analysis from this index or them."""
    lineage: dict[str, Any] = {"model": _describe(model), "index": _describe(index), "analysis": _describe(analysis)}
    if not paths.embeddings.exists():
        return lineage
    emb = read_manifest(paths.embeddings, "embeddings")
    lineage["embeddings"] = _describe(emb)
    if model.digest not in emb.inputs.values():
        raise ArtifactError(f"{paths.embeddings}: made from another model than {paths.model}; rerun embedding")
    if emb.digest not in index.inputs.values():
        raise ArtifactError(f"{paths.index}: built from other embeddings than {paths.embeddings}; rerun train_faiss")
    if not {index.digest, emb.digest} & set(analysis.inputs.values()):
        raise ArtifactError(f"{paths.analysis}: measured on another index than {paths.index}; rerun analysis")
    return lineage


def read_candidate(paths: RunPaths) -> Candidate:
    """Verify the manifests and checksums of the model, index and analysis of run `paths.run_id`."""
    model = read_verified(paths.model, "model")
    _require(paths.model, model, (MODEL_FILE,))
    require_torchscript(paths.model / MODEL_FILE)  # a pickle must never go live (TorchServe would unpickle it)
    index = read_verified(paths.index, "index")
    _require(paths.index, index, (INDEX_FILE, LABELS_FILE))
    labels = load_array(paths.index, index, LABELS_FILE)
    if labels.ndim != 1 or labels.dtype.kind not in "iu" or len(labels) == 0:
        raise ArtifactError(f"{paths.index / LABELS_FILE}: must be a non-empty integer [N] array")
    size = next((index.meta[k] for k in ("size", "ntotal") if isinstance(index.meta.get(k), int)), None)
    if size is not None and size != len(labels):
        raise ArtifactError(f"{paths.index}: index.json says {size} vectors but labels.npy has {len(labels)}")
    analysis = read_verified(paths.analysis, "analysis")
    _require(paths.analysis, analysis, ("metrics.json",))
    metrics = _metrics(paths, analysis)
    k = metrics.get("k", analysis.meta.get("k", 1))
    vote = metrics.get("vote", analysis.meta.get("vote", "majority"))
    if not isinstance(k, int) or k < 1 or vote not in VOTES:
        raise ArtifactError(f"{paths.analysis / 'metrics.json'}: k={k!r}, vote={vote!r} are not a k-NN setting")
    return Candidate(
        run_id=paths.run_id,
        model=model,
        index=index,
        analysis=analysis,
        accuracy=float(metrics["accuracy"]),
        k=k,
        vote=vote,
        sources={
            MODEL_FILE: paths.model / MODEL_FILE,
            INDEX_FILE: paths.index / INDEX_FILE,
            LABELS_FILE: paths.index / LABELS_FILE,
        },
        lineage=_check_lineage(paths, model, index, analysis),
    )


# -- deploy and rollback ----------------------------------------------------------------------


def _inputs(c: Candidate) -> dict[str, str]:
    return {"model": c.model.digest, "index": c.index.digest, "analysis": c.analysis.digest}


def _fmt(accuracy: float | None) -> str:
    return "unknown" if accuracy is None else f"{accuracy:.4f}"


def _history_entry(paths: RunPaths, c: Candidate, request: DeployRequest, log: Log) -> tuple[Path, bool]:
    """Publish history/<version>/ (the .mar + deployment.json) unless this exact deployment is there."""
    version = c.run_id
    folder = paths.history / version
    mar_name = f"{request.model_name}.mar"
    if (folder / "manifest.json").exists():
        existing = read_manifest(folder, DEPLOYMENT_KIND)
        if mar_name not in existing.files:
            raise ArtifactError(f"{folder}: holds another model than {request.model_name!r}; use another run id")
        if existing.inputs != _inputs(c):
            raise ArtifactError(
                f"{folder}: version {version} was deployed from other artifacts; deploy them under a new run id"
            )
        verify_file(folder, existing, mar_name)
        return folder / mar_name, True
    deployment = {
        "model_name": request.model_name,
        "version": version,
        "run_id": c.run_id,
        "accuracy": c.accuracy,
        "deployed_by": {"step": STEP, "version": Producer.of(STEP).version},
        "created": now(),
        "inputs": _inputs(c),
        "lineage": c.lineage,
        # what the handler reads: k and vote as analysis measured the accuracy
        "serving": {
            "k": c.k,
            "vote": c.vote,
            "max_pixels": request.max_pixels,
            "threads": request.threads,
            "version": version,
        },
        "torchserve": request.serving.to_json(),
    }
    with publish(folder, DEPLOYMENT_KIND, Producer.of(STEP), inputs=_inputs(c)) as staging:
        staged = {}
        for name, src in c.sources.items():  # verify the bytes that go in, not only the originals
            dst = staging.path / f".src-{name}"
            dst.write_bytes(src.read_bytes())
            manifest = c.model if name == MODEL_FILE else c.index
            if manifest.files[src.name].sha256 != sha256_file(dst):
                raise ArtifactError(f"{src}: changed while being deployed (sha256 differs from its manifest)")
            staged[name] = dst
        t0 = time.perf_counter()
        build_archive(staging.path, request.model_name, version, staged, deployment)
        for dst in staged.values():
            dst.unlink()
        (staging.path / SETTINGS_FILE).write_text(json.dumps(deployment, indent=2, sort_keys=True) + "\n")
        staging.meta.update(
            {k: deployment[k] for k in ("model_name", "version", "run_id", "accuracy", "serving", "torchserve")}
        )
        log(f"archived {mar_name} version {version} in {time.perf_counter() - t0:.1f} s")
    return folder / mar_name, False


def _make_live(paths: RunPaths, model_name: str, archive: Path, expect_version: str) -> ArchiveInfo:
    """Copy a verified history archive over the live one: fsynced temporary sibling + rename."""
    info = inspect_archive(archive)
    if info.version != expect_version or info.model_name != model_name:
        raise ArtifactError(f"{archive}: holds {info.model_name} version {info.version}, expected {expect_version}")
    atomic_write_bytes(live_path(paths, model_name), archive.read_bytes())
    return info


def deploy(paths: RunPaths, request: DeployRequest, log: Log) -> Outcome:
    """Deploy run `paths.run_id` as version <run id> of `request.model_name` (see the module doc)."""
    check_model_name(request.model_name)
    candidate = read_candidate(paths)
    version = candidate.run_id
    with locked(paths.deploy_root, log):
        remove_leftovers(paths)
        live = live_archive(paths, request.model_name, request.force, log)
        reconcile(paths, request.model_name, live, log)
        previous = live.version if live else None
        challenged = live is not None and live.version != version and not request.force
        if challenged and (live.accuracy is None or candidate.accuracy < live.accuracy):
            event = {
                "event": "refused",
                "model": request.model_name,
                "version": version,
                "run_id": candidate.run_id,
                "accuracy": candidate.accuracy,
                "live": live.version,
                "live_accuracy": live.accuracy,
            }
            append_event(paths.deploy_root, event)
            raise ChallengerRefused(
                f"refused: run {version} has accuracy {_fmt(candidate.accuracy)}, below the live version "
                f"{live.version} ({_fmt(live.accuracy)}); the live model stays (use --force to deploy anyway)"
            )
        archive, reused = _history_entry(paths, candidate, request, log)
        info = _make_live(paths, request.model_name, archive, version)
        write_config(paths, request.model_name, request.serving, request.serving_root)
        append_event(
            paths.deploy_root,
            {
                "event": "deploy",
                "model": request.model_name,
                "version": version,
                "run_id": candidate.run_id,
                "accuracy": candidate.accuracy,
                "previous": previous,
                "previous_accuracy": live.accuracy if live else None,
                "forced": request.force,
                "mar_sha256": sha256_file(live_path(paths, request.model_name)),
                "inputs": _inputs(candidate),
            },
        )
    was = "none" if live is None else f"{live.version} {_fmt(live.accuracy)}"
    log(
        f"deployed {request.model_name} version {version} (accuracy {_fmt(info.accuracy)}; previous: {was}) "
        f"-> {live_path(paths, request.model_name)}"
    )
    return Outcome(version, previous, info.accuracy, live_path(paths, request.model_name), reused)


def rollback(paths: RunPaths, model_name: str, serving_root: str, log: Log) -> Outcome:
    """Make the version that was live before the current one live again."""
    check_model_name(model_name)
    with locked(paths.deploy_root, log):
        remove_leftovers(paths)
        live = live_archive(paths, model_name)
        if live is None:
            raise ArtifactError(f"{live_path(paths, model_name)}: no live archive, so nothing to roll back")
        stack = reconcile(paths, model_name, live, log)
        if len(stack) < 2:
            raise ArtifactError(
                f"{paths.deploy_root / LOG_FILE}: version {live.version} is the only one deployed; "
                "nothing to roll back to"
            )
        target = stack[-2]
        folder = paths.history / target
        history = read_verified(folder, DEPLOYMENT_KIND)
        mar = folder / f"{model_name}.mar"
        if mar.name not in history.files:
            raise ArtifactError(f"{folder}: has no {mar.name}")
        info = _make_live(paths, model_name, mar, target)
        options = ServingOptions.from_json(info.deployment.get("torchserve", {}))
        write_config(paths, model_name, options, serving_root)
        append_event(
            paths.deploy_root,
            {
                "event": "rollback",
                "model": model_name,
                "version": target,
                "run_id": info.deployment.get("run_id"),
                "accuracy": info.accuracy,
                "from": live.version,
                "mar_sha256": sha256_file(live_path(paths, model_name)),
            },
        )
    log(f"rolled back {model_name} from version {live.version} to {target} (accuracy {_fmt(info.accuracy)})")
    return Outcome(target, live.version, info.accuracy, live_path(paths, model_name))
