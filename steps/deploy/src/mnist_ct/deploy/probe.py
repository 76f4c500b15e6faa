"""Probe a candidate before it goes live: load the model, run it on real digits, check it fits the index.

What TorchServe would find out at the first request (or never: a model whose embedding size differs from
the index's answers every request with an error) is checked here, before anything is written:

- model.pt (a verified TorchScript archive) loads, and on real digits as float32 [N,1,28,28] in [0,1] it
  returns float32 [N,D], finite and L2-normalised, the same for a batch of one as within a batch of N
  (TorchServe batches 1..batch_size requests: a model traced for one batch size, or one that mixes the
  rows of a batch, fails here);
- index.faiss loads, measures inner product, holds D-dimensional vectors, one per label (ntotal ==
  len(labels.npy)).

The digits are the first of each class of the built-in mnist-5k (mnist_ct.artifacts), so the probe needs
nothing from the data volume. torch and faiss are imported where they are used, so that `--help` and a
rollback do not wait for them.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from mnist_ct.artifacts import NUM_CLASSES, ArtifactError, Embeddings, check_embeddings
from mnist_ct.artifacts.mnist5k import builtin_csv, read_mnist_csv

from .archive import INDEX_FILE, LABELS_FILE, MODEL_FILE
from .candidate import Candidate

PROBE_PER_CLASS = 2
BATCH_TOLERANCE = 1e-3  # a row may differ this much between a batch of one and a batch of N (float32 kernels)


@dataclass(frozen=True)
class ProbeResult:
    """What the probe measured: the embedding size and the gallery it is searched in."""

    digits: int
    dim: int
    index_size: int
    index_class: str


@functools.cache
def probe_digits() -> tuple[np.ndarray, np.ndarray]:
    """float32 [N,1,28,28] in [0,1] (the serving contract's input) and their labels: real digits, every class."""
    digits = read_mnist_csv(builtin_csv(), per_class=PROBE_PER_CLASS)  # only those rows are parsed
    idx = np.concatenate([np.flatnonzero(digits.labels == c)[:PROBE_PER_CLASS] for c in range(NUM_CLASSES)])
    images = digits.images[idx].astype(np.float32)[:, None, :, :] / np.float32(255.0)
    return np.ascontiguousarray(images), digits.labels[idx]


def check_output(out: Any, n: int, where: str) -> np.ndarray:
    """The model's output for `n` inputs as float32 [n,D] unit rows, or ArtifactError saying what it is instead."""
    import torch

    if not isinstance(out, torch.Tensor):
        raise ArtifactError(f"{where}: returned {type(out).__name__}, not a tensor; the serving contract is [N,D]")
    if out.dtype != torch.float32 or out.ndim != 2 or out.shape[0] != n or out.shape[1] < 1:
        raise ArtifactError(
            f"{where}: returned {str(out.dtype).removeprefix('torch.')} {list(out.shape)}, expected float32 [{n},D]"
        )
    vectors = np.ascontiguousarray(out.detach().cpu().numpy())
    check_embeddings(where, Embeddings(vectors, np.zeros(n, dtype=np.int64)))
    return vectors


def embed(model: Any, images: np.ndarray, where: str) -> np.ndarray:
    """Run the model on float32 [N,1,28,28]; its checked [N,D] output."""
    import torch

    try:
        with torch.inference_mode():
            out = model(torch.from_numpy(images))
    except RuntimeError as e:  # TorchScript reports every failure inside the model as a RuntimeError
        first = (str(e).strip().splitlines() or ["no message"])[-1]
        raise ArtifactError(f"{where}: fails on float32 {list(images.shape)} ({first[:200]})") from None
    return check_output(out, len(images), where)


def load_model(path: Path) -> Any:
    """torch.jit.load a file that candidate.py checked is a TorchScript archive (never torch.load)."""
    import torch

    try:
        return torch.jit.load(str(path), map_location="cpu").eval()
    except RuntimeError as e:
        first = (str(e).strip().splitlines() or ["no message"])[0]
        raise ArtifactError(f"{path}: TorchScript cannot load it ({first[:200]}); re-export the model") from None


def load_index(path: Path) -> Any:
    import faiss

    try:
        return faiss.read_index(str(path))
    except RuntimeError as e:
        first = (str(e).strip().splitlines() or ["no message"])[0]
        raise ArtifactError(f"{path}: FAISS cannot read it ({first[:200]}); rerun train_faiss") from None


def check_index(index: Any, dim: int, n_labels: int, model_path: Path, index_path: Path, labels_path: Path) -> None:
    """The index must search `dim`-dimensional vectors by inner product, one per label."""
    import faiss

    if index.metric_type != faiss.METRIC_INNER_PRODUCT:
        raise ArtifactError(
            f"{index_path}: measures metric {index.metric_type}, not inner product; the handler's scores are cosine "
            "similarities of unit vectors: rebuild it with train_faiss"
        )
    if index.d != dim:
        raise ArtifactError(
            f"{model_path} returns {dim}-dimensional embeddings but {index_path} holds {index.d}-dimensional vectors; "
            "deploy a model with the index built from its own embeddings (rerun embedding and train_faiss)"
        )
    if index.ntotal != n_labels:
        raise ArtifactError(
            f"{index_path} holds {index.ntotal} vectors but {labels_path} has {n_labels} labels; rerun train_faiss"
        )


def probe(candidate: Candidate) -> ProbeResult:
    """Load and run the candidate's model, load its index, check that they fit (module docstring)."""
    model_path = candidate.sources[MODEL_FILE]
    index_path = candidate.sources[INDEX_FILE]
    images, _ = probe_digits()
    model = load_model(model_path)
    where = f"{model_path} on {len(images)} real digits"
    batch = embed(model, images, where)
    one = embed(model, images[:1], f"{model_path} on one digit")
    drift = float(np.abs(one[0] - batch[0]).max())
    if drift > BATCH_TOLERANCE:
        raise ArtifactError(
            f"{model_path}: a digit embeds differently alone than in a batch of {len(images)} (by {drift:.3g}); "
            "TorchServe batches requests, so no answer may depend on the others (traced for one batch size?)"
        )
    dim = int(batch.shape[1])
    index = load_index(index_path)
    check_index(index, dim, candidate.n_labels, model_path, index_path, candidate.sources[LABELS_FILE])
    return ProbeResult(len(images), dim, int(index.ntotal), type(index).__name__)
