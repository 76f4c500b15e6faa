"""The step, top to bottom: read the train split, train with checkpoints, export and publish the model artifact."""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import torch

from mnist_ct.artifacts import (
    MAX_THREADS,
    ArtifactError,
    KfpOutputs,
    Log,
    Manifest,
    Producer,
    RunPaths,
    UsageError,
    atomic_write_json,
    file_uri,
    publish,
    read_split,
    thread_count,
)

from .disk import refuse_a_file
from .hardware import DEVICES, resolve_device, resolve_precision
from .model import export_torchscript
from .model_card import model_card
from .training import TrainConfig, Trainer

STEP = "train_model"
MODEL_KIND = "model"
# The typed KFP output artifact (--output-artifact model=PATH): model.json, the model card.
ARTIFACTS = {"model": "system.Model"}
# The exported (best) epoch's figures that go into the model artifact's metadata.
EPOCH_FIGURES = ("loss", "train_accuracy", "val_accuracy", "val_nn1_accuracy")


@dataclass(frozen=True)
class Options:
    """What to train (`config`: everything that decides the weights) and where and how to run it."""

    config: TrainConfig = field(default_factory=TrainConfig)
    device: str = "auto"  # auto: cuda if available
    threads: int = 0  # torch CPU threads; 0: every core this process may use
    resume: bool = False  # continue from the run's last checkpoint (made with the same config and data)
    kfp: KfpOutputs = field(default_factory=lambda: KfpOutputs(STEP, ARTIFACTS))  # and MNIST_CT_IMAGES

    def __post_init__(self) -> None:
        if self.device not in DEVICES:
            raise UsageError(f"--device {self.device!r}: choose one of {', '.join(DEVICES)}")
        if not 0 <= self.threads <= MAX_THREADS:
            raise UsageError(f"--threads {self.threads}: must be from 0 to {MAX_THREADS}")


def run(paths: RunPaths, options: Options, log: Log) -> None:
    """Train on the run's train split and publish model/{model.pt,model.json}."""
    t0 = time.perf_counter()
    device = resolve_device(options.device)  # Options built in code: --device cuda without CUDA stops here too
    threads = thread_count(options.threads)
    torch.set_num_threads(threads)
    config = replace(options.config, precision=resolve_precision(options.config.precision, device))
    model_folder, checkpoint_folder = paths.model, paths.checkpoints  # a symlink out of the volume: refused here
    refuse_a_file(model_folder, "model folder")
    refuse_a_file(checkpoint_folder, "checkpoint folder")

    data, split = read_split(paths.dataset, "train")
    if len(split) < 2:
        raise ArtifactError(f"{paths.dataset / 'train'}: {len(split)} images; training needs at least 2")
    log(
        f"data: {len(split)} training images from {paths.dataset}; device {device}, {threads} threads, "
        f"{config.precision}"
    )
    trainer = Trainer(
        config,
        device,
        checkpoint_folder,
        data.digest,
        progress=lambda items, total, desc: log.progress(items, total=total, desc=desc, unit="batch"),
        log=log,
    )
    with log.work():  # training (mnist_ct.artifacts.timing: the step's own work)
        result = trainer.fit(split.images, split.labels, resume=options.resume)
    model_pt = export_torchscript(result.net)
    card = model_card(STEP, config, result, data, device, threads, time.perf_counter() - t0)
    best = card["best"]
    with options.kfp.writing(paths.run_id) as out:
        with publish(model_folder, MODEL_KIND, Producer.of(STEP), inputs={"dataset": data.digest}) as staging:
            (staging.path / "model.pt").write_bytes(model_pt)
            atomic_write_json(staging.path / "model.json", card)
            staging.meta.update(
                embedding_dim=config.embedding_dim,
                best_epoch=result.best_epoch,
                val_accuracy=best["val_accuracy"],
                val_nn1_accuracy=best["val_nn1_accuracy"],
                dataset=data.meta.get("dataset"),
                format="torchscript",
            )
        assert staging.manifest is not None  # set once published
        out.add(
            "model", (model_folder / "model.json").read_bytes(), model_metadata(card, staging.manifest, model_folder)
        )
    log(
        f"model: best epoch {result.best_epoch}/{len(result.history)}, val 1-NN {best['val_nn1_accuracy']:.4f}, "
        f"val acc {best['val_accuracy']:.4f}, trained {card['timing']['train_seconds']:.1f} s, "
        f"this process {card['timing']['process_seconds']:.1f} s -> {model_folder}"
    )


def model_metadata(card: dict[str, Any], manifest: Manifest, folder: Path) -> dict[str, Any]:
    """The model artifact's metadata: what it is, how long it trained, how the exported epoch did, its weights."""
    best = card["best"]
    figures = {key: best[key] if math.isfinite(best[key]) else None for key in EPOCH_FIGURES}  # NaN: no hold-out
    return {
        "framework": "pytorch",
        "format": "torchscript",
        "embedding_dim": card["embedding_dim"],
        "epochs": len(card["epochs"]),
        "best_epoch": card["best_epoch"],
        **figures,
        "sha256": manifest.files["model.pt"].sha256,  # of the weights (model.pt), as its manifest lists it
        "uri": file_uri(folder),
        "dataset_sha256": card["data"]["manifest_digest"],
    }
