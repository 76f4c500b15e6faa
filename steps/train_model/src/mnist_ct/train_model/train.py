"""The step's work: read the train split, train, export model.pt + model.json as the "model" artifact."""

from __future__ import annotations

import platform
import time
from dataclasses import replace
from typing import Any

import torch

from mnist_ct.artifacts import Log, Manifest, Producer, RunPaths, atomic_write_json, publish, read_split

from .model import export_torchscript, forward_flops
from .training import TrainConfig, Trainer, TrainResult, resolve_device, resolve_precision

MODEL_KIND = "model"
STEP = "train_model"


def model_card(
    config: TrainConfig, result: TrainResult, data: Manifest, device: torch.device, threads: int, seconds: float
) -> dict[str, Any]:
    """model.json: what the model is, how it was trained, on what, and how it did each epoch."""
    best = next(h for h in result.history if h.epoch == result.best_epoch)
    return {
        "architecture": config.architecture.to_json(),
        "embedding_dim": config.embedding_dim,
        "parameters": sum(p.numel() for p in result.net.parameters()),
        "forward_flops_per_image": forward_flops(result.net),
        "input": {"shape": ["N", 1, 28, 28], "dtype": "float32", "range": [0.0, 1.0], "digit": "white on black"},
        "output": {"shape": ["N", config.embedding_dim], "dtype": "float32", "l2_normalised": True},
        "head": {"type": "arcface", "classes": 10, "scale": config.scale, "margin": config.margin},
        "config": config.to_json(),
        "epochs": [h.to_json() for h in result.history],
        "best_epoch": result.best_epoch,
        "best": best.to_json(),
        "stopped_early": result.stopped_early,
        "resumed_from_epoch": result.resumed_from,
        "data": {
            "manifest_digest": data.digest,
            "dataset": data.meta.get("dataset"),
            "train_size": result.train_size,
            "val_size": result.val_size,
        },
        "step": {"name": STEP, "version": Producer.of(STEP).version},
        "environment": {
            "device": str(device),
            "threads": threads,
            "torch": torch.__version__,
            "python": platform.python_version(),
        },
        "timing": {
            "train_seconds": sum(h.train_seconds for h in result.history),
            "val_seconds": sum(h.val_seconds for h in result.history),
            "process_seconds": seconds,  # this invocation only (a resumed run started later)
        },
    }


def train_step(
    paths: RunPaths, config: TrainConfig, device_name: str, threads: int, resume: bool, log: Log
) -> Manifest:
    """Train on the run's train split and publish model/{model.pt,model.json}."""
    t0 = time.perf_counter()
    torch.set_num_threads(threads)
    device = resolve_device(device_name)
    config = replace(config, precision=resolve_precision(config.precision, device))
    data, split = read_split(paths.dataset, "train")
    log(
        f"data: {len(split)} training images from {paths.dataset}; device {device}, {threads} threads, "
        f"{config.precision}"
    )
    trainer = Trainer(
        config,
        device,
        paths.checkpoints,
        data.digest,
        progress=lambda items, total, desc: log.progress(items, total=total, desc=desc, unit="batch"),
        log=log,
    )
    result = trainer.fit(split.images, split.labels, resume=resume)
    model_pt = export_torchscript(result.net)
    card = model_card(config, result, data, device, threads, time.perf_counter() - t0)
    best = card["best"]
    with publish(paths.model, MODEL_KIND, Producer.of(STEP), inputs={"dataset": data.digest}) as staging:
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
    assert staging.manifest is not None
    log(
        f"model: best epoch {result.best_epoch}/{len(result.history)}, val 1-NN {best['val_nn1_accuracy']:.4f}, "
        f"val acc {best['val_accuracy']:.4f}, trained {card['timing']['train_seconds']:.1f} s, "
        f"this process {card['timing']['process_seconds']:.1f} s -> {paths.model}"
    )
    return staging.manifest
