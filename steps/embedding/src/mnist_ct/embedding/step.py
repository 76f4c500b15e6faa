"""The step, top to bottom: read the verified model and data set, embed both splits (and the test split with the
champion's model, when one is live), publish the embeddings."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from mnist_ct.artifacts import (
    DEFAULT_MODEL_NAME,
    MAX_THREADS,
    ArtifactError,
    Embeddings,
    Log,
    Producer,
    RunPaths,
    UsageError,
    check_model_name,
    find_champion,
    read_manifest,
    read_split,
    thread_count,
    verify_file,
    write_embeddings,
)
from mnist_ct.artifacts.champion import MODEL_MEMBER, Champion

from .embed import Progress, Throughput, embed_images, load_torchscript, load_torchscript_bytes, probe

STEP = "embedding"
MODEL_KIND = "model"
MAX_BATCH = 65_536
SPLITS = ("train", "test")  # the gallery and the queries
CHAMPION_FILE = "champion/test.npy"  # the test split embedded by the champion's model, for analysis


@dataclass(frozen=True)
class Options:
    batch_size: int = 512  # images per forward pass
    threads: int = 0  # torch CPU threads; 0: every core this process may use
    model_name: str = DEFAULT_MODEL_NAME  # the served model whose champion embeds the test split too

    def __post_init__(self) -> None:
        check_model_name(self.model_name)
        if not 1 <= self.batch_size <= MAX_BATCH:
            raise UsageError(f"--batch-size {self.batch_size}: must be from 1 to {MAX_BATCH}")
        if not 0 <= self.threads <= MAX_THREADS:
            raise UsageError(f"--threads {self.threads}: must be from 0 to {MAX_THREADS}")


def run(paths: RunPaths, options: Options, log: Log) -> None:
    """Embed the train split (gallery) and the test split (queries) and publish them."""
    threads = thread_count(options.threads)
    torch.set_num_threads(threads)
    out = paths.embeddings  # a symlink out of the volume is refused here, before any work
    if out.exists() and not out.is_dir():
        raise ArtifactError(f"{out}: is a file where the embeddings folder belongs; remove it")

    model_manifest = read_manifest(paths.model, MODEL_KIND)
    model_path = verify_file(paths.model, model_manifest, "model.pt")
    model = load_torchscript(model_path)
    data_manifest, train = read_split(paths.dataset, "train", mmap=True)
    _, test = read_split(paths.dataset, "test", mmap=True)
    for name, split in zip(SPLITS, (train, test), strict=True):
        if len(split) == 0:
            raise ArtifactError(f"{paths.dataset / name}: no images to embed; rerun preprocess")
    dim = probe(model, model_path, train.images)
    expected = model_manifest.meta.get("embedding_dim")
    if expected is not None and expected != dim:
        says = f"its manifest says embedding_dim={expected!r}"
        raise ArtifactError(f"{model_path}: the model returns D={dim}, but {says}; rerun train_model")
    if model_manifest.inputs.get("dataset") not in (None, data_manifest.digest):
        log(f"note: the model was trained on another data set than {paths.dataset} (manifest digests differ)")
    # Found (and its model checked) before any work: a champion that cannot be trusted fails the run here.
    champion = find_champion(paths.deploy_root, options.model_name)
    if champion is not None:
        champion_name = f"{champion.archive} member {MODEL_MEMBER}"
        fix = f"the champion ({options.model_name} version {champion.version}) is broken: roll back or redeploy"
        champion_model = load_torchscript_bytes(champion.member(MODEL_MEMBER), champion_name, fix)
        champion_dim = probe(champion_model, champion_name, test.images)
    else:
        log(f"no champion: nothing live for model {options.model_name!r} on {paths.deploy_root}")

    splits, timing = {}, {}
    for name, split in zip(SPLITS, (train, test), strict=True):
        with log.work():  # the forward passes (timing.py: the step's own work)
            vectors, tp = embed_images(
                model, model_path, split.images, options.batch_size, dim, progress_bar(log, name)
            )
        splits[name] = Embeddings(vectors, np.asarray(split.labels, dtype=np.int64))
        timing[name] = tp
        log(
            f"{name}: {tp.images} images -> [{tp.images},{dim}] in {tp.seconds:.2f} s "
            f"({tp.images_per_second:.0f} images/s)"
        )
    total = Throughput(sum(t.images for t in timing.values()), sum(t.seconds for t in timing.values()))
    extra = {}
    if champion is not None:
        with log.work():
            vectors, tp = embed_images(
                champion_model,
                champion_name,
                test.images,
                options.batch_size,
                champion_dim,
                progress_bar(log, "champion"),
            )
        extra[CHAMPION_FILE] = vectors
        timing["champion"] = tp
        log(
            f"champion {champion.version}: test: {tp.images} images -> [{tp.images},{champion_dim}] in "
            f"{tp.seconds:.2f} s ({tp.images_per_second:.0f} images/s)"
        )
    meta = {
        "batch_size": options.batch_size,
        "threads": threads,
        "images_per_second": total.images_per_second,
        "seconds": {name: t.seconds for name, t in timing.items()},
        "model": {"embedding_dim": dim, "producer": model_manifest.producer.version},
        # Which champion embedded champion/test.npy: analysis reads exactly this version back from history.
        "champion": champion_meta(champion, extra),
    }
    inputs = {"model": model_manifest.digest, "dataset": data_manifest.digest}
    write_embeddings(out, splits, Producer.of(STEP), inputs, meta, extra)  # publish() names the folder on OS errors
    log(f"embeddings: {total.images} images at {total.images_per_second:.0f} images/s -> {out}")


def champion_meta(champion: Champion | None, extra: dict[str, np.ndarray]) -> dict[str, object] | None:
    """The manifest's record of the champion (its summary and embedding size), None when there is none."""
    if champion is None:
        return None
    return {**champion.summary(), "embedding_dim": int(extra[CHAMPION_FILE].shape[1]), "file": CHAMPION_FILE}


def progress_bar(log: Log, name: str) -> Progress:
    """A progress bar over the batches of split `name` (shown on a terminal only)."""
    return lambda batches, total: log.progress(batches, total=total, desc=name, unit="batch")
