"""The work: load model.pt (TorchScript only), check it keeps the serving contract, embed images batch by batch."""

from __future__ import annotations

import io
import time
import warnings
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from mnist_ct.artifacts import ArtifactError, require_torchscript

NORM_TOLERANCE = 1e-3  # as mnist_ct.artifacts checks embeddings on disk
PROBE_IMAGES = 8

Progress = Callable[[Iterable[int], int], Iterator[int]]


def load_torchscript(path: Path) -> torch.jit.ScriptModule:
    """torch.jit.load `path` on the CPU, refusing anything that is not a TorchScript archive (exit 3)."""
    require_torchscript(path)
    return _jit_load(str(path), path, "re-export the model")


def load_torchscript_bytes(data: bytes, name: str, fix: str) -> torch.jit.ScriptModule:
    """The same for a model held in memory (the champion's model.pt, a member of its .mar), called `name`."""
    require_torchscript(data, name)
    return _jit_load(io.BytesIO(data), name, fix)


def _jit_load(source: str | io.BytesIO, name: str | Path, fix: str) -> torch.jit.ScriptModule:
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", DeprecationWarning)  # torch 2.13 deprecates TorchScript
            model = torch.jit.load(source, map_location="cpu")
    except RuntimeError as e:  # a damaged archive: torch raises RuntimeError with a multi-line message
        raise ArtifactError(f"{name}: torch.jit.load failed ({_reason(e)}); {fix}") from None
    return model.eval()


def _reason(e: BaseException) -> str:
    """One line of what went wrong: TorchScript puts its own traceback first and the error itself last."""
    lines = [line.strip() for line in str(e).splitlines() if line.strip()]
    if not lines:
        return e.__class__.__name__
    interpreter = lines[0].startswith("The following operation failed in the TorchScript interpreter")
    return (lines[-1] if interpreter else lines[0])[:300]


def to_input(images: np.ndarray) -> torch.Tensor:
    """uint8 [N,28,28] -> float32 [N,1,28,28] in [0,1] (the serving contract's input)."""
    # A copy: the images may be a read-only memory map, which torch.from_numpy warns about.
    return torch.from_numpy(np.array(images, dtype=np.uint8)).unsqueeze(1).float().div_(255)


def check_output(path: Path | str, out: object, n: int, dim: int | None = None) -> int:
    """Refuse output that breaks the contract (float32 [N,D], finite, rows of unit length, D = `dim`); return D."""
    if not isinstance(out, torch.Tensor):
        raise ArtifactError(f"{path}: the model returns {type(out).__name__}, not a tensor [N,D]")
    if out.ndim != 2 or out.shape[0] != n or out.shape[1] < 1:
        raise ArtifactError(f"{path}: the model returns shape {list(out.shape)} for {n} images, expected [{n},D]")
    if dim is not None and out.shape[1] != dim:
        raise ArtifactError(
            f"{path}: the model returns D={out.shape[1]} for a batch of {n} images, but D={dim} for the first ones"
        )
    if out.dtype != torch.float32:
        raise ArtifactError(f"{path}: the model returns {out.dtype}, expected torch.float32")
    if not torch.isfinite(out).all():
        raise ArtifactError(f"{path}: the model returns NaN or infinite values")
    worst = float((out.norm(dim=1) - 1).abs().max())
    if worst > NORM_TOLERANCE:
        raise ArtifactError(f"{path}: the model's output is not L2-normalised (a row's norm is off by {worst:.3g})")
    return int(out.shape[1])


def run_model(model: torch.jit.ScriptModule, path: Path | str, x: torch.Tensor) -> object:
    """The model's output for `x`; a model that fails on contract input is bad input (exit 3)."""
    try:
        return model(x)
    except (torch.jit.Error, RuntimeError, ValueError, TypeError, IndexError) as e:  # what a model's code raises
        raise ArtifactError(f"{path}: the model fails on float32 {list(x.shape)} input ({_reason(e)})") from None


@torch.inference_mode()
def probe(model: torch.jit.ScriptModule, path: Path | str, images: np.ndarray) -> int:
    """Run the model on a few real images and check the contract; the embedding size D."""
    x = to_input(images[:PROBE_IMAGES])
    return check_output(path, run_model(model, path, x), len(x))


@dataclass
class Throughput:
    images: int
    seconds: float

    @property
    def images_per_second(self) -> float:
        return self.images / self.seconds if self.seconds > 0 else float("nan")


@torch.inference_mode()
def embed_images(
    model: torch.jit.ScriptModule,
    path: Path | str,
    images: np.ndarray,
    batch_size: int,
    dim: int,
    progress: Progress | None = None,
) -> tuple[np.ndarray, Throughput]:
    """Embeddings float32 [N,D] of uint8 images [N,28,28] (may be memory-mapped), batch by batch, each checked."""
    starts = range(0, len(images), batch_size)
    chunks = []
    seconds = 0.0
    for i in progress(starts, len(starts)) if progress else starts:
        x = to_input(images[i : i + batch_size])
        t = time.perf_counter()
        out = run_model(model, path, x)
        seconds += time.perf_counter() - t
        check_output(path, out, len(x), dim)
        assert isinstance(out, torch.Tensor)  # check_output refused anything else
        chunks.append(out.numpy())
    vectors = np.concatenate(chunks) if chunks else np.empty((0, dim), np.float32)
    return vectors.astype(np.float32, copy=False), Throughput(len(images), seconds)
