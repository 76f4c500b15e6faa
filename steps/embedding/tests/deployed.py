"""A champion on the deploy volume, laid out as deploy publishes it: history/<V>/ (kind "deployment": <model>.mar
and deployment.json) and its byte-equal copy model-store/<model>.mar, which find_champion reads.

The archive holds what a .mar holds for the champion: deployment.json, model.pt (a real TorchScript model here),
index.faiss and labels.npy. embedding reads only model.pt (faiss is not among its dependencies), so index.faiss
here is a stand-in; analysis' tests build the real index.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from mnist_ct.artifacts.testing import npy_bytes, publish_deployment


def deploy_champion(
    deploy_root: Path,
    version: str,
    model_pt: bytes,
    accuracy: float = 0.9,
    model_name: str = "mnist",
    live: bool = True,
) -> Path:
    """Publish version `version` into history and (if `live`) make it the live archive; the history archive."""
    record = {"version": version, "run_id": version, "accuracy": accuracy, "serving": {"k": 1, "vote": "majority"}}
    members = {
        "model.pt": model_pt,
        "index.faiss": b"stand-in: embedding does not read the index",
        "labels.npy": npy_bytes(np.arange(10, dtype=np.int64)),
    }
    return publish_deployment(deploy_root, record, members, model_name, live)
