"""A small but real pipeline run for deploy's tests and the serving benchmark (bench/serve.py, bench/soak.py).

Real MNIST digits (the 5,000 built into mnist-ct-artifacts, through its test plugin), a tiny CNN trained
for a few seconds and exported with torch.jit.script following the serving contract, a faiss IndexFlatIP
over its train embeddings, and the k-NN accuracy on the test split: every artifact published through
mnist_ct.artifacts in the contract's layout (dataset, model, embeddings, index, analysis), with the
lineage digests the real steps record.
"""

from __future__ import annotations

import functools
import io
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from mnist_ct.artifacts import (
    Embeddings,
    Producer,
    RunPaths,
    Split,
    find_champion,
    publish,
    read_dataset,
    read_manifest,
    read_verified,
    sha256_file,
    write_embeddings,
)
from mnist_ct.artifacts.knn import knn_vote
from mnist_ct.artifacts.mnist5k import mnist5k, publish_run, take  # no pytest: bench/ imports this too

FIXTURE = "0+fixture"


@functools.cache
def trained_model(per_class_train: int = 60, steps: int = 100, dim: int = 32, seed: int = 0) -> bytes:
    """A TorchScript embedding net (float32 [N,1,28,28] in [0,1] -> unit [N,dim]) as model.pt bytes."""
    import torch
    from torch import nn

    torch.manual_seed(seed)
    torch.set_num_threads(1)

    class EmbeddingNet(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.features = nn.Sequential(
                nn.Conv2d(1, 8, 3, padding=1),
                nn.ReLU(),
                nn.MaxPool2d(2),
                nn.Conv2d(8, 16, 3, padding=1),
                nn.ReLU(),
                nn.MaxPool2d(2),
                nn.Flatten(),
                nn.Linear(16 * 7 * 7, dim),
            )

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return nn.functional.normalize(self.features(x), dim=1)

    train = take(mnist5k(), per_class_train)
    x = torch.from_numpy(train.images.astype(np.float32) / 255.0).unsqueeze(1)
    y = torch.from_numpy(train.labels)
    net = EmbeddingNet()
    head = nn.Parameter(torch.randn(10, dim) * 0.1)
    opt = torch.optim.Adam([*net.parameters(), head], lr=3e-3)
    for _ in range(steps):  # a cosine-softmax classifier over the unit embeddings
        batch = torch.randint(0, len(x), (32,))
        logits = 10.0 * net(x[batch]) @ nn.functional.normalize(head, dim=1).T
        loss = nn.functional.cross_entropy(logits, y[batch])
        opt.zero_grad()
        loss.backward()
        opt.step()
    return script_bytes(net.eval())


def script_bytes(module: object) -> bytes:
    """torch.jit.script + torch.jit.save of `module`, as the bytes of a model.pt."""
    import torch

    buffer = io.BytesIO()
    torch.jit.save(torch.jit.script(module), buffer)
    return buffer.getvalue()


def embed(model_pt: bytes, images: np.ndarray) -> np.ndarray:
    import torch

    model = torch.jit.load(io.BytesIO(model_pt))
    with torch.inference_mode():
        out = model(torch.from_numpy(images.astype(np.float32) / 255.0).unsqueeze(1))
    return np.ascontiguousarray(out.numpy(), dtype=np.float32)


@dataclass
class FixtureRun:
    paths: RunPaths
    accuracy: float
    test: Split


def build_run(
    root: Path,
    run_id: str,
    per_class_train: int = 60,
    per_class_test: int = 20,
    gallery_per_class: int | None = None,
    steps: int = 100,
) -> FixtureRun:
    """Publish dataset, model, embeddings, index and analysis of run `run_id` under `root`/{data,model}.

    `gallery_per_class` keeps only that many train images per class in the index: a real, worse
    model (lower accuracy) for champion/challenger tests, without training another network.
    """
    import faiss

    paths = publish_run(root, run_id, per_class_train, per_class_test)  # the data set, as preprocess would
    dataset, splits = read_dataset(paths.dataset)
    train, test = splits["train"], splits["test"]
    model_pt = trained_model(per_class_train, steps)
    with publish(paths.model, "model", Producer("train_model", FIXTURE), {"dataset": dataset.digest}) as staging:
        (staging.path / "model.pt").write_bytes(model_pt)
        (staging.path / "model.json").write_text(json.dumps({"embedding_dim": 32, "steps": steps}))
    assert staging.manifest is not None
    model = staging.manifest

    gallery = np.arange(len(train))
    if gallery_per_class is not None:
        gallery = np.concatenate([np.flatnonzero(train.labels == c)[:gallery_per_class] for c in range(10)])
    train_e = Embeddings(embed(model_pt, train.images[gallery]), train.labels[gallery])
    test_e = Embeddings(embed(model_pt, test.images), test.labels)
    emb = write_embeddings(
        paths.embeddings,
        {"train": train_e, "test": test_e},
        Producer("embedding", FIXTURE),
        {"model": model.digest, "dataset": dataset.digest},
        {},
    )

    index = faiss.IndexFlatIP(train_e.vectors.shape[1])
    index.add(train_e.vectors)
    with publish(paths.index, "index", Producer("train_faiss", FIXTURE), {"embeddings": emb.digest}) as staging:
        faiss.write_index(index, str(staging.path / "index.faiss"))
        np.save(staging.path / "labels.npy", train_e.labels)
        (staging.path / "index.json").write_text(json.dumps({"factory": "Flat", "metric": "inner_product"}))
        staging.meta["size"] = int(index.ntotal)
    assert staging.manifest is not None

    scores, nearest = index.search(test_e.vectors, 1)
    predicted, _ = knn_vote(train_e.labels[nearest], scores, "majority")  # as analysis measures it
    accuracy = float((predicted == test_e.labels).mean())
    inputs = {"index": staging.manifest.digest, "embeddings": emb.digest}
    with publish(paths.analysis, "analysis", Producer("analysis", FIXTURE), inputs) as staging:
        metrics = {"accuracy": accuracy, "k": 1, "vote": "majority", "n_queries": len(test)}
        (staging.path / "metrics.json").write_text(json.dumps(metrics))
    return FixtureRun(paths, accuracy, test)


def cli_roots(run: FixtureRun, deploy_root: Path) -> list[str]:
    """The core command-line options that point deploy at `run` and `deploy_root`."""
    p = run.paths
    return [
        "--run-id",
        p.run_id,
        "--data-root",
        str(p.data_root),
        "--model-root",
        str(p.model_root),
        "--deploy-root",
        str(deploy_root),
        "--quiet",
    ]


def replace_listed_file(folder: Path, name: str, data: bytes) -> None:
    """Overwrite `folder/name` and make its manifest entry match: only deploy's own checks stand in the way."""
    path = folder / name
    path.write_bytes(data)
    manifest_path = folder / "manifest.json"
    doc = json.loads(manifest_path.read_text())
    doc["files"][name] = {"sha256": sha256_file(path), "bytes": path.stat().st_size}
    manifest_path.write_text(json.dumps(doc))
    read_manifest(folder)  # still a valid manifest


def measure_champion(deploy_root: Path, test: Split, model_name: str = "mnist") -> dict[str, Any] | None:
    """metrics.json's `champion` as analysis measures it: the live champion (find_champion, verified) run on
    `test`, this run's test split, with its own model.pt, index, labels and k-NN setting; None if nothing is live."""
    import faiss

    champion = find_champion(deploy_root, model_name)
    if champion is None:
        return None
    index = faiss.deserialize_index(np.frombuffer(champion.member("index.faiss"), dtype=np.uint8))
    labels = np.load(io.BytesIO(champion.member("labels.npy")), allow_pickle=False)
    k, vote = champion.serving["k"], champion.serving["vote"]
    scores, ids = index.search(embed(champion.member("model.pt"), test.images), k)
    predicted, _ = knn_vote(labels[ids], scores, vote)
    return {
        "version": champion.version,
        "run_id": champion.run_id,
        "accuracy": float((predicted == test.labels).mean()),
        "archive_sha256": champion.archive_sha256,
        "k": k,
        "vote": vote,
    }


def record_champion(run: FixtureRun, model_root: Path, champion: Any, versions: dict[str, str] | None = None) -> None:
    """Republish `run`'s analysis in `model_root` (a copy of its model volume) as an analysis that measures the
    champion writes it: metrics.json with `champion` (as given: measure_champion's, None, or a bad value) and
    `blessing`, and the step versions in its manifest."""
    folder = model_root / "runs" / run.paths.run_id / "analysis"
    recorded = read_verified(folder, "analysis")
    metrics = json.loads((folder / "metrics.json").read_text())
    accuracy = metrics["accuracy"]
    rival = champion.get("accuracy") if isinstance(champion, dict) else None
    blessed = champion is None or (isinstance(rival, (int, float)) and accuracy >= rival)
    metrics["champion"] = champion
    metrics["blessing"] = {"blessed": blessed, "baseline": 0.8, "min_improvement": 0.0, "reason": "fixture"}
    with publish(folder, "analysis", Producer("analysis", FIXTURE), recorded.inputs) as staging:
        (staging.path / "metrics.json").write_text(json.dumps(metrics))
        staging.meta.update(recorded.meta)
        if versions is not None:
            staging.meta["versions"] = versions
