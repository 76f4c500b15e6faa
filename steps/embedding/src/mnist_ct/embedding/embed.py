"""The step's work: load model.pt (TorchScript only), check it keeps the serving contract, embed both splits."""

from __future__ import annotations

import time
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from mnist_ct.artifacts import (
    ArtifactError,
    Embeddings,
    Log,
    Manifest,
    Producer,
    RunPaths,
    read_manifest,
    read_split,
    require_torchscript,
    verify_file,
    write_embeddings,
)

STEP = "embedding"
MODEL_KIND = "model"
NORM_TOLERANCE = 1e-3  # as mnist_ct.artifacts checks embeddings on disk


def load_torchscript(path: Path) -> torch.jit.ScriptModule:
    """torch.jit.load `path` on the CPU, refusing anything that is not a TorchScript archive (exit 3)."""
    require_torchscript(path)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", DeprecationWarning)  # torch 2.13 deprecates TorchScript
            model = torch.jit.load(str(path), map_location="cpu")
    except Exception as e:  # a damaged archive: torch raises RuntimeError with a multi-line message
        first = str(e).strip().splitlines()[0] if str(e).strip() else e.__class__.__name__
        raise ArtifactError(f"{path}: torch.jit.load failed ({first}); re-export the model") from None
    return model.eval()


def _to_input(images: np.ndarray) -> torch.Tensor:
    """uint8 [N,28,28] -> float32 [N,1,28,28] in [0,1] (the serving contract's input)."""
    # A copy: the images may be a read-only memory map, which torch.from_numpy warns about.
    return torch.from_numpy(np.array(images, dtype=np.uint8)).unsqueeze(1).float().div_(255)


def check_output(path: Path, out: object, n: int) -> int:
    """Refuse output that breaks the contract (float32 [N,D], finite, rows of unit length); return D."""
    if not isinstance(out, torch.Tensor):
        raise ArtifactError(f"{path}: the model returns {type(out).__name__}, not a tensor [N,D]")
    if out.ndim != 2 or out.shape[0] != n or out.shape[1] < 1:
        raise ArtifactError(f"{path}: the model returns shape {list(out.shape)} for {n} images, expected [{n},D]")
    if out.dtype != torch.float32:
        raise ArtifactError(f"{path}: the model returns {out.dtype}, expected torch.float32")
    if not torch.isfinite(out).all():
        raise ArtifactError(f"{path}: the model returns NaN or infinite values")
    worst = float((out.norm(dim=1) - 1).abs().max())
    if worst > NORM_TOLERANCE:
        raise ArtifactError(f"{path}: the model's output is not L2-normalised (a row's norm is off by {worst:.3g})")
    return int(out.shape[1])


@torch.inference_mode()
def probe(model: torch.jit.ScriptModule, path: Path, images: np.ndarray) -> int:
    """Run the model on a few real images and check the contract; the embedding size D."""
    x = _to_input(images)
    try:
        out = model(x)
    except Exception as e:
        first = str(e).strip().splitlines()[0] if str(e).strip() else e.__class__.__name__
        raise ArtifactError(f"{path}: the model fails on float32 {list(x.shape)} input ({first})") from None
    return check_output(path, out, len(x))


@dataclass
class Throughput:
    images: int
    seconds: float

    @property
    def images_per_second(self) -> float:
        return self.images / self.seconds if self.seconds > 0 else float("nan")


@torch.inference_mode()
def embed_images(
    model: torch.jit.ScriptModule, path: Path, images: np.ndarray, batch_size: int, progress=None
) -> tuple[np.ndarray, Throughput]:
    """Embeddings float32 [N,D] of uint8 images [N,28,28] (may be memory-mapped), batch by batch."""
    starts = range(0, len(images), batch_size)
    chunks = []
    seconds = 0.0
    for i in progress(starts, len(starts)) if progress else starts:
        x = _to_input(images[i : i + batch_size])
        t = time.perf_counter()
        out = model(x)
        seconds += time.perf_counter() - t
        check_output(path, out, len(x))
        chunks.append(out.numpy())
    return np.concatenate(chunks).astype(np.float32, copy=False), Throughput(len(images), seconds)


def embedding_step(paths: RunPaths, batch_size: int, threads: int, log: Log) -> Manifest:
    """Embed the train split (gallery) and the test split (queries) and publish them."""
    torch.set_num_threads(threads)
    model_manifest = read_manifest(paths.model, MODEL_KIND)
    model_path = verify_file(paths.model, model_manifest, "model.pt")
    model = load_torchscript(model_path)
    data_manifest, train = read_split(paths.dataset, "train", mmap=True)
    _, test = read_split(paths.dataset, "test", mmap=True)
    dim = probe(model, model_path, train.images[:8])
    expected = model_manifest.meta.get("embedding_dim")
    if expected is not None and expected != dim:
        raise ArtifactError(f"{model_path}: the model returns D={dim}, but its manifest says embedding_dim={expected}")
    if model_manifest.inputs.get("dataset") not in (None, data_manifest.digest):
        log(f"note: the model was trained on another data set than {paths.dataset} (manifest digests differ)")

    splits, timing = {}, {}
    for name, split in (("train", train), ("test", test)):
        vectors, tp = embed_images(
            model,
            model_path,
            split.images,
            batch_size,
            lambda it, n, name=name: log.progress(it, total=n, desc=name, unit="batch"),
        )
        splits[name] = Embeddings(vectors, np.asarray(split.labels, dtype=np.int64))
        timing[name] = tp
        log(
            f"{name}: {tp.images} images -> [{tp.images},{dim}] in {tp.seconds:.2f} s "
            f"({tp.images_per_second:.0f} images/s)"
        )
    total = Throughput(sum(t.images for t in timing.values()), sum(t.seconds for t in timing.values()))
    meta = {
        "batch_size": batch_size,
        "threads": threads,
        "images_per_second": total.images_per_second,
        "seconds": {name: t.seconds for name, t in timing.items()},
        "model": {"embedding_dim": dim, "producer": model_manifest.producer.version},
    }
    manifest = write_embeddings(
        paths.embeddings,
        splits,
        Producer.of(STEP),
        {"model": model_manifest.digest, "dataset": data_manifest.digest},
        meta,
    )
    log(f"embeddings: {total.images} images at {total.images_per_second:.0f} images/s -> {paths.embeddings}")
    return manifest
