"""A champion on the deploy volume, laid out as deploy publishes it, and a run whose embeddings measured it.

deploy makes version V live by publishing history/V/ (kind "deployment": <model>.mar and deployment.json) and
copying the archive to model-store/<model>.mar, which find_champion reads. The archive holds deployment.json,
model.pt, index.faiss (a real FAISS index here) and labels.npy. analysis never loads model.pt (torch is not among
its dependencies: embedding ran it), so model.pt here is a stand-in; embedding's tests embed with a real one.
"""

from __future__ import annotations

import io
from pathlib import Path
from typing import Any

import faiss
import numpy as np
from analysis_testdata import CraftedRun, unit_rows, write_embeddings_artifact, write_index_artifact

from mnist_ct.artifacts import Producer, RunPaths, find_champion, read_manifest
from mnist_ct.artifacts.embeddings import write_embeddings
from mnist_ct.artifacts.testing import publish_deployment

MAJORITY_1NN = {"k": 1, "vote": "majority"}


def npy_bytes(array: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    np.save(buffer, array)
    return buffer.getvalue()


def index_bytes(vectors: np.ndarray) -> bytes:
    """A flat inner-product index of `vectors`, serialised as train_faiss writes index.faiss."""
    index = faiss.IndexFlatIP(vectors.shape[1])
    index.add(np.ascontiguousarray(vectors, dtype=np.float32))
    return faiss.serialize_index(index).tobytes()


def deploy_champion(
    deploy_root: Path,
    version: str,
    gallery: np.ndarray,
    labels: np.ndarray,
    serving: dict[str, Any] = MAJORITY_1NN,
    accuracy: float = 0.95,
    live: bool = True,
    members: dict[str, bytes] | None = None,
) -> Path:
    """Publish version `version` (its index of `gallery`, `labels`) into history and, if `live`, make it live.

    `members` replaces archive members (a broken index, ...). Returns the history copy of the archive.
    """
    record = {"version": version, "run_id": version, "accuracy": accuracy, "serving": serving}
    files = {
        "model.pt": b"stand-in: analysis does not load the model",
        "index.faiss": index_bytes(gallery),
        "labels.npy": npy_bytes(labels.astype(np.int64)),
        **(members or {}),
    }
    return publish_deployment(deploy_root, record, files, live=live)


def embed_for_champion(crafted: CraftedRun, champion_test: np.ndarray | None, meta: Any = "live") -> None:
    """Republish the run's embeddings as embedding does with the live champion (`champion_test`: the test split
    in its model's space; None: no champion) and the index built from them.

    `meta`: the manifest's meta.champion; "live" is what embedding records (the live champion's summary).
    """
    paths: RunPaths = crafted.paths
    if meta == "live":
        live = find_champion(paths.deploy_root)
        dim = None if champion_test is None else int(champion_test.shape[1])
        meta = None if live is None else {**live.summary(), "embedding_dim": dim}
    extra = {"champion/test.npy": champion_test} if champion_test is not None else {}
    inputs = dict(read_manifest(paths.embeddings).inputs)
    write_embeddings(
        paths.embeddings,
        {"train": crafted.gallery, "test": crafted.queries},
        Producer("embedding", "0.3.0"),
        inputs,
        {"champion": meta},
        extra,
    )
    write_index_artifact(paths, crafted.gallery.vectors, crafted.gallery.labels)


def old_layout_embeddings(crafted: CraftedRun) -> None:
    """Embeddings as embedding wrote them before it embedded the champion: no meta.champion at all."""
    inputs = dict(read_manifest(crafted.paths.embeddings).inputs)
    write_embeddings_artifact(crafted.paths, crafted.gallery, crafted.queries, inputs)
    write_index_artifact(crafted.paths, crafted.gallery.vectors, crafted.gallery.labels)


def with_more_errors(crafted: CraftedRun, moves: int) -> np.ndarray:
    """The run's test vectors with `moves` more (rightly classified) queries moved onto another class's gallery
    centre: a champion that makes exactly `moves` more errors on these digits."""
    out = crafted.queries.vectors.copy()
    labels = crafted.queries.labels
    gallery = crafted.gallery
    centres = np.stack(
        [unit_rows(gallery.vectors[gallery.labels == c].mean(axis=0, keepdims=True))[0] for c in range(10)]
    )
    right = [q for q in range(len(out)) if q not in crafted.crafted]
    for q in right[::5][:moves]:  # spread over the classes
        out[q] = centres[(labels[q] + 1) % 10]
    return out
