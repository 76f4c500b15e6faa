"""model.json: what the model is, how it was trained, on what data, and how it did each epoch."""

from __future__ import annotations

import platform
from typing import Any

import torch

from mnist_ct.artifacts import Manifest, Producer

from .model import forward_flops, training_flops
from .training import TrainConfig, TrainResult


def model_card(
    step: str,
    config: TrainConfig,
    result: TrainResult,
    data: Manifest,
    device: torch.device,
    threads: int,
    seconds: float,
) -> dict[str, Any]:
    """The card of the model `result` holds, trained by `step` with `config` on the data set `data`."""
    best = next(h for h in result.history if h.epoch == result.best_epoch)
    return {
        "architecture": config.architecture.to_json(),
        "embedding_dim": config.embedding_dim,
        "parameters": sum(p.numel() for p in result.net.parameters()),
        "forward_flops_per_image": forward_flops(result.net),
        # forward + backward of every conv and linear (model.training_flops); trained in config.precision
        "training_flops_per_image": training_flops(result.net, config.embedding_dim),
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
        "step": {"name": step, "version": Producer.of(step).version},
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
