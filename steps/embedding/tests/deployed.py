"""A champion on the deploy volume, laid out as deploy publishes it: history/<V>/ (kind "deployment": <model>.mar
and deployment.json) and its byte-equal copy model-store/<model>.mar, which find_champion reads.

The archive holds what a .mar holds for the champion: deployment.json, model.pt (a real TorchScript model here),
index.faiss and labels.npy. embedding reads only model.pt (faiss is not among its dependencies), so index.faiss
here is a stand-in; analysis' tests build the real index.
"""

from __future__ import annotations

import io
import json
import zipfile
from pathlib import Path
from typing import Any

import numpy as np

from mnist_ct.artifacts import Producer, atomic_write_bytes, publish

DEPLOY_PRODUCER = Producer("deploy", "0.0.0+test")


def mar_bytes(record: dict[str, Any], members: dict[str, bytes]) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as z:
        z.writestr("deployment.json", json.dumps(record))
        for name, data in members.items():
            z.writestr(name, data)
    return buffer.getvalue()


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
        "labels.npy": _npy(np.arange(10, dtype=np.int64)),
    }
    archive = mar_bytes(record, members)
    folder = deploy_root / "history" / version
    with publish(folder, "deployment", DEPLOY_PRODUCER) as staging:
        (staging.path / f"{model_name}.mar").write_bytes(archive)
        (staging.path / "deployment.json").write_text(json.dumps(record))
    if live:
        atomic_write_bytes(deploy_root / "model-store" / f"{model_name}.mar", archive)
    return folder / f"{model_name}.mar"


def _npy(array: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    np.save(buffer, array)
    return buffer.getvalue()
