"""The deploy step, top to bottom: check the run, probe its model, refuse a worse challenger, go live.

Deploy (run R):
1. read_candidate: R's model, index and analysis, verified, with their lineage (candidate.py);
2. probe: load model.pt, run it on real digits, check the output against the index (probe.py);
   nothing has touched the deploy volume up to here, so bad input leaves it as it was;
3. under the deploy root's lock: clean up what a killed run left, reconcile the log with the live archive,
   refuse a worse challenger (exit 4, logged; --force deploys anyway): where analysis measured the champion
   (metrics.json `champion`), the live version must still be the one it measured and the run's accuracy may
   not be below the champion's on the same test split; for an older analysis, not below the live version's
   recorded accuracy;
4. publish history/R/ (the .mar and deployment.json, history.py), copy it over the live archive, write
   config.properties (live.py), and log the deploy last (event_log.py).

Rollback (--rollback) is an option of the same step, not a second command: it is the same switch of the
live version (live.py) from the other direction, under the same lock, log and exit codes, so a user finds
both in one `--help` and the pipeline's image keeps one entry point.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from mnist_ct.artifacts import (
    ArtifactError,
    ArtifactWriter,
    KfpOutputs,
    Log,
    Producer,
    RunPaths,
    UsageError,
    atomic_write_bytes,
    check_run_id,
    file_uri,
    sha256_file,
)

from .archive import SETTINGS_FILE, ArchiveInfo, check_model_name
from .candidate import Candidate, read_candidate
from .event_log import LINEAGE_KEYS, LOG_FILE, append_event
from .history import (
    HandlerSettings,
    deployment_record,
    existing_entry,
    publish_entry,
    verified_archive,
)
from .kserve_store import live_version, model_dir, publish_version, switch_live
from .live import (
    live_archive,
    live_path,
    locked,
    make_live,
    on_volume,
    reconcile,
    remove_leftovers,
    write_config,
)
from .manifests import ClusterSettings, render
from .probe import probe
from .serving_config import KSERVE_ROOT, ServingOptions

STEP = "deploy"
EXIT_REFUSED = 4
DEFAULT_MODEL_NAME = "mnist"
DEFAULT_PVC = "deploy-model-pvc"  # the deploy volume's claim, as the pipeline mounts it
# Pillow's own decompression-bomb limit (PIL.Image.MAX_IMAGE_PIXELS): beyond it Pillow refuses to decode.
MAX_PIXELS_LIMIT = 89_478_485
MIN_PIXELS_LIMIT = 28 * 28  # the handler must accept at least a digit at the model's own size
DEFAULT_MAX_PIXELS = 4096 * 4096
MAX_THREADS_PER_WORKER = 1024  # as --threads everywhere (mnist_ct.artifacts.MAX_THREADS)
# The typed KFP output artifact (--output-artifact model=PATH): the deployment record of the archive made live.
ARTIFACTS = {"model": "system.Model"}


class ChallengerRefused(ArtifactError):
    """The new model is worse than the live one (champion/challenger): exit code 4."""

    exit_code = EXIT_REFUSED


def check_serving_root(root: str) -> str:
    """An absolute POSIX path that config.properties can hold as is: printable ASCII (Java reads the file as
    ISO-8859-1), no backslash (its escape character)."""
    if not root.startswith("/") or any(c == "\\" or not (c.isascii() and c.isprintable()) for c in root):
        raise UsageError(
            f"invalid --serving-root {root!r}: give the absolute path where the server mounts the deploy volume "
            f"(such as {KSERVE_ROOT}) in printable ASCII, without backslashes"
        )
    return root.rstrip("/") or "/"


@dataclass(frozen=True)
class Options:
    """What to deploy and how it is served; `rollback` makes the previous version live again instead.

    `serving`, `max_pixels` and `threads_per_worker` are built into the archive (None: the defaults). A
    rollback restores its version exactly as it was deployed, so it refuses them, and --force.
    """

    model_name: str = DEFAULT_MODEL_NAME
    force: bool = False
    rollback: bool = False
    serving_root: str = KSERVE_ROOT
    serving: ServingOptions | None = None
    max_pixels: int | None = None
    threads_per_worker: int | None = None
    predictor_image: str | None = None  # for the cluster manifests; None: this step's image (MNIST_CT_IMAGES)
    pvc: str = DEFAULT_PVC
    kfp: KfpOutputs = field(default_factory=lambda: KfpOutputs(STEP, ARTIFACTS))  # and MNIST_CT_IMAGES
    versions: Mapping[str, str] = field(default_factory=dict)  # MNIST_CT_STEP_VERSIONS, read with the options

    def __post_init__(self) -> None:
        check_model_name(self.model_name)
        if self.predictor_image is not None:
            ClusterSettings(self.predictor_image, self.pvc)  # pinned by digest, a valid PVC name (UsageError)
        object.__setattr__(self, "serving_root", check_serving_root(self.serving_root))
        for option, value, low, high in (
            ("--max-pixels", self.max_pixels, MIN_PIXELS_LIMIT, MAX_PIXELS_LIMIT),
            ("--threads-per-worker", self.threads_per_worker, 1, MAX_THREADS_PER_WORKER),
        ):
            whole = isinstance(value, int) and not isinstance(value, bool)
            if value is not None and not (whole and low <= value <= high):
                raise UsageError(f"{option} must be a whole number from {low} to {high}, got {value!r}")
        if self.rollback:
            given = [
                option
                for option, value in (
                    ("--force", self.force),
                    ("--workers/--batch-size/--max-batch-delay/--max-request-mb", self.serving is not None),
                    ("--max-pixels", self.max_pixels is not None),
                    ("--threads-per-worker", self.threads_per_worker is not None),
                )
                if value
            ]
            if given:
                raise UsageError(
                    f"--rollback restores the previous version as it was deployed; drop {', '.join(given)}"
                )

    @property
    def handler(self) -> HandlerSettings:
        return HandlerSettings(
            max_pixels=DEFAULT_MAX_PIXELS if self.max_pixels is None else self.max_pixels,
            threads=1 if self.threads_per_worker is None else self.threads_per_worker,
        )

    @property
    def torchserve(self) -> ServingOptions:
        return self.serving or ServingOptions()

    def cluster(self, workers: int, log: Log) -> ClusterSettings | None:
        """Where the manifests' predictor runs: --predictor-image, else this step's own image as the pipeline
        pinned it; None (logged) when neither names an image pinned by digest."""
        image = self.predictor_image or self.kfp.image
        try:
            return ClusterSettings(image or "", self.pvc, workers=workers)
        except UsageError as e:
            why = "no image known (MNIST_CT_IMAGES names none, no --predictor-image)" if not image else str(e)
            log(f"cluster manifests not written: {why}")
            return None


def run(paths: RunPaths, options: Options, log: Log) -> int | None:
    """Deploy run `paths.run_id`, or with `options.rollback` make the previous version live again."""
    if options.rollback:
        roll_back(paths, options, log)
    else:
        deploy(paths, options, log)
    return 0


def _fmt(accuracy: float | None) -> str:
    return "unknown" if accuracy is None else f"{accuracy:.4f}"


def deploy(paths: RunPaths, options: Options, log: Log) -> None:
    """Deploy run `paths.run_id` as version <run id> of `options.model_name` (the module docstring)."""
    candidate = read_candidate(paths)
    probed = probe(candidate)
    log(
        f"probed {candidate.sources['model.pt']}: {probed.digits} real digits -> unit [N,{probed.dim}], the "
        f"dimension of {probed.index_class} with {probed.index_size} vectors"
    )
    producer = Producer.of(STEP)
    name, version = options.model_name, candidate.run_id
    # The run's images and step versions as analysis recorded them (so a deploy by hand still knows them), else
    # this task's.
    images = candidate.images or dict(options.kfp.images)
    versions = candidate.versions or dict(options.versions)
    with (
        on_volume(paths.deploy_root),
        locked(paths.deploy_root, log),
        options.kfp.writing(paths.run_id) as out,  # moved into place once the log line is written
    ):
        remove_leftovers(paths)
        live = live_archive(paths, name, options.force, log)
        reconcile(paths, name, live, log)
        follow_live_archive(paths, live, producer)
        if not options.force:
            refuse_a_worse_challenger(paths, candidate, name, live)
        with log.work():  # archiving (timing.py: the step's own work; the probe above is a check)
            archive = existing_entry(paths, candidate, name)
            if archive is None:
                record = deployment_record(
                    candidate, name, options.handler, options.torchserve, producer, images, versions
                )
                archive = publish_entry(paths, candidate, record, log)
        add_model_artifact(out, archive)  # staged before going live: a full disk stops the deploy before it
        with log.work():  # and publishing: the archive live, TorchServe's config, the KServe version
            info = make_live(paths, name, archive, version)
            write_config(paths, name, options.torchserve, options.serving_root, f"mnist-ct deploy {producer.version}")
            serve_on_kserve(paths, info, options.cluster(options.torchserve.workers, log), producer)
        recorded = info.deployment
        append_event(
            paths.deploy_root,
            {
                "event": "deploy",
                "model": name,
                "version": version,
                "run_id": candidate.run_id,
                "accuracy": candidate.accuracy,
                "previous": live.version if live else None,
                "previous_accuracy": live.accuracy if live else None,
                **champion_fields(candidate),
                "forced": options.force,
                "mar_sha256": sha256_file(live_path(paths, name)),
                "inputs": candidate.inputs,
                **{key: recorded.get(key) for key in LINEAGE_KEYS},
            },
        )
    was = "none" if live is None else f"{live.version} {_fmt(live.accuracy)}"
    if candidate.champion is not None:
        was += f" ({_fmt(candidate.champion.accuracy)} on this run's test split)"
    log(
        f"deployed {name} version {version} (accuracy {_fmt(info.accuracy)}; previous: {was}) "
        f"-> {live_path(paths, name)}"
    )


def add_model_artifact(out: ArtifactWriter, archive: Path) -> None:
    """The KFP `model` artifact: the deployment record of `archive` (history/<version>/), which goes live."""
    record_bytes = (archive.parent / SETTINGS_FILE).read_bytes()
    record: dict[str, Any] = json.loads(record_bytes)
    metadata = {
        "model_name": record.get("model_name"),
        "version": record.get("version"),
        "accuracy": record.get("accuracy"),
        "archive_sha256": sha256_file(archive),
        "uri": file_uri(archive),
        "live": True,  # the artifact is only written once the archive is live (writing() commits after)
        **{key: record.get(key) for key in LINEAGE_KEYS},
    }
    out.add("model", record_bytes, metadata)


def champion_fields(candidate: Candidate) -> dict[str, Any]:
    """What a deploy or refusal event records of the champion analysis measured (None: none, or not measured)."""
    champion = candidate.champion
    return {
        "champion": champion.version if champion else None,
        "champion_accuracy": champion.accuracy if champion else None,
    }


def refusal(candidate: Candidate, live: ArchiveInfo | None) -> str | None:
    """Why the candidate may not replace the live version (None: it may). Redeploying the live run is no challenge.

    Where analysis measured the champion, the comparison is of its two figures, both on this run's test split,
    and only holds while the version it measured is still the live one. An older analysis (no `champion` in
    metrics.json) is compared with the accuracy the live version recorded when it was deployed.
    """
    run = candidate.run_id
    if live is not None and live.version == run:
        return None
    if not candidate.measured_champion:
        if live is None or (live.accuracy is not None and candidate.accuracy >= live.accuracy):
            return None
        return (
            f"run {run} has accuracy {_fmt(candidate.accuracy)}, below the live version {live.version} "
            f"({_fmt(live.accuracy)})"
        )
    champion = candidate.champion
    measured = "no champion (nothing was live)" if champion is None else f"champion version {champion.version}"
    if live is None:
        if champion is None:
            return None
        return f"analysis measured run {run} against {measured}, but nothing is live now; rerun analysis"
    if champion is None or champion.version != live.version:
        return (
            f"analysis measured run {run} against {measured}, but version {live.version} is live now "
            "(deployed since); rerun analysis to measure the run against it"
        )
    if champion.archive_sha256 is not None and champion.archive_sha256 != sha256_file(live.path):
        return (
            f"the live archive {live.path} of version {live.version} is not the one analysis measured run {run} "
            f"against (sha256 {champion.archive_sha256[:12]}); rerun analysis"
        )
    if candidate.accuracy < champion.accuracy:
        return (
            f"run {run} has accuracy {_fmt(candidate.accuracy)}, below the champion version {champion.version} "
            f"({_fmt(champion.accuracy)} on the same test split)"
        )
    return None


def refuse_a_worse_challenger(paths: RunPaths, candidate: Candidate, model_name: str, live: ArchiveInfo | None) -> None:
    """Champion/challenger: log the refusal (with its reason) and raise ChallengerRefused (exit 4) if `refusal`
    names one."""
    reason = refusal(candidate, live)
    if reason is None:
        return
    append_event(
        paths.deploy_root,
        {
            "event": "refused",
            "model": model_name,
            "version": candidate.run_id,
            "run_id": candidate.run_id,
            "accuracy": candidate.accuracy,
            "live": live.version if live else None,
            "live_accuracy": live.accuracy if live else None,
            **champion_fields(candidate),
            "reason": reason,
        },
    )
    raise ChallengerRefused(f"refused: {reason}; the live model stays (use --force to deploy anyway)")


def roll_back(paths: RunPaths, options: Options, log: Log) -> None:
    """Make the version that was live before the current one live again."""
    name = options.model_name
    if not live_path(paths, name).exists():
        raise ArtifactError(f"{live_path(paths, name)}: no live archive, so nothing to roll back")
    with (
        on_volume(paths.deploy_root),
        locked(paths.deploy_root, log),
        options.kfp.writing(paths.run_id) as out,
    ):
        remove_leftovers(paths)
        live = live_archive(paths, name)
        if live is None:
            raise ArtifactError(f"{live_path(paths, name)}: no live archive, so nothing to roll back")
        stack = reconcile(paths, name, live, log)
        producer = Producer.of(STEP)
        follow_live_archive(paths, live, producer)
        if len(stack) < 2:
            raise ArtifactError(
                f"{paths.deploy_root / LOG_FILE}: version {live.version} is the only one deployed; "
                "nothing to roll back to"
            )
        target = stack[-2]
        try:
            check_run_id(target)
        except UsageError:
            raise ArtifactError(
                f"{paths.deploy_root / LOG_FILE}: names version {target!r}, which is not a run id; fix the log"
            ) from None
        archive = verified_archive(paths, target, name)
        add_model_artifact(out, archive)
        info = make_live(paths, name, archive, target)
        serving = ServingOptions.from_json(info.deployment.get("torchserve", {}), info.path)
        write_config(paths, name, serving, options.serving_root, f"mnist-ct deploy {producer.version}")
        serve_on_kserve(paths, info, options.cluster(serving.workers, log), producer)
        append_event(
            paths.deploy_root,
            {
                "event": "rollback",
                "model": name,
                "version": target,
                "run_id": info.deployment.get("run_id"),
                "accuracy": info.accuracy,
                "from": live.version,
                "mar_sha256": sha256_file(live_path(paths, name)),
                **{key: info.deployment.get(key) for key in LINEAGE_KEYS},
            },
        )
    log(f"rolled back {name} from version {live.version} to {target} (accuracy {_fmt(info.accuracy)})")


def serve_on_kserve(paths: RunPaths, info: ArchiveInfo, cluster: ClusterSettings | None, producer: Producer) -> None:
    """The version just made live, as the KServe predictor loads it (kserve_store.py): its folder, the `live`
    pointer switched to it (a running predictor follows it), and the cluster manifests for it."""
    publish_version(paths.deploy_root, info, producer)
    switch_live(paths.deploy_root, info.model_name, info.version)
    if cluster is not None:
        for file_name, data in render(info.model_name, info.version, cluster).items():
            atomic_write_bytes(model_dir(paths.deploy_root, info.model_name) / file_name, data)


def follow_live_archive(paths: RunPaths, live: ArchiveInfo | None, producer: Producer) -> None:
    """A run that died between switching the live archive and the KServe pointer left them apart: the archive
    wins, as it does for the log (reconcile)."""
    if live is None:
        return
    try:
        pointer = live_version(model_dir(paths.deploy_root, live.model_name))
    except ArtifactError:
        pointer = None
    if pointer != live.version:
        serve_on_kserve(paths, live, None, producer)  # the manifests follow with this run's own switch
