"""TorchServe handler for the mnist-ct digit retriever; deploy packs this file into the .mar.

Runs inside TorchServe's Python worker, so it imports only numpy, Pillow, torch and faiss, and the k-NN
vote: mnist_ct_knn.py, the copy of mnist_ct/artifacts/knn.py that deploy puts beside it in the archive
(TorchServe puts the unpacked archive on the worker's sys.path), so the archive needs no mnist_ct package
and the handler votes exactly as analysis measured. TorchServe calls the module-level
`handle(data, context)`: first with `data=None` to load, then once per batch of requests.

Per request, one image of a digit, any size, PNG or JPEG, sent as
- the raw body (`Content-Type: image/png`, `image/jpeg` or `application/octet-stream`),
- a multipart form file (one field; or the field named `data`, `file` or `image`),
- JSON `{"data": "<base64>"}` (also `image`/`b64`, or `{"data": {"b64": ...}}`), or KServe v1
  JSON `{"instances": [<instance>, ...]}` with one such object (or bare base64 string) per image,
is answered `{"label": int, "score": float}` (`{"predictions": [...]}` for `instances`).

Preprocessing (serving contract: float32 [N,1,28,28] in [0,1], white digit on black):
- transparency: if the image has a non-trivial alpha channel, the alpha channel is the ink (so a
  digit drawn on a transparent canvas works whatever its colour); otherwise the luminance is used;
- size: resized to 28x28 with Pillow's antialiased bilinear filter (a 28x28 image is used as is);
- polarity: if the mean of the 28x28 image's border pixels is above 127 the image is taken as
  dark-on-light (a scan, a photo of paper) and inverted, so MNIST's white-on-black always reaches
  the model.

Then embedding (TorchScript model.pt), search of the k nearest gallery embeddings in index.faiss
(inner product on unit vectors = cosine), label by the k-NN vote (knn_vote) among their labels.npy
labels; the score is the cosine similarity to the nearest gallery image of the chosen label.

A bad item gets its own 4xx (`context.set_response_status(code, idx=i)`) with a JSON message,
and the other items of the batch are still answered: 400 for anything that is not a decodable PNG
or JPEG, 413 for an image above `max_pixels`. No input can raise out of `handle`.
"""

from __future__ import annotations

import base64
import binascii
import json
import logging
import os
from pathlib import Path
from typing import Any

import numpy as np

try:  # the copies in the archive, beside this file (TorchServe)
    from mnist_ct_digits import DEFAULT_MAX_PIXELS, HOW_TO_SEND, PHRASES, decode_image
    from mnist_ct_digits import DigitImageError as RequestError
    from mnist_ct_knn import knn_vote
except ImportError:  # outside TorchServe (tests, the installed package): the same files, where they live
    from mnist_ct.artifacts.digits import DEFAULT_MAX_PIXELS, HOW_TO_SEND, PHRASES, decode_image
    from mnist_ct.artifacts.digits import DigitImageError as RequestError
    from mnist_ct.artifacts.knn import knn_vote

log = logging.getLogger(__name__)

SETTINGS_FILE = "deployment.json"
FILE_FIELDS = ("data", "file", "image", "body")
JSON_FIELDS = ("data", "image", "b64")


def _b64(value: Any, where: str) -> bytes:
    if isinstance(value, dict) and isinstance(value.get("b64"), str):
        value = value["b64"]
    if not isinstance(value, str):
        raise RequestError(400, f"{where} must be a base64 string, got {type(value).__name__}")
    text = value.strip()
    if text.startswith("data:") and "," in text:  # a data URL: data:image/png;base64,....
        text = text.split(",", 1)[1]
    try:
        return base64.b64decode("".join(text.split()), validate=True)
    except (binascii.Error, ValueError):
        raise RequestError(400, f"{where} is not valid base64") from None


def _from_json_object(obj: Any, where: str) -> bytes:
    if isinstance(obj, str):
        return _b64(obj, where)
    if isinstance(obj, dict):
        for key in JSON_FIELDS:
            if key in obj:
                return _b64(obj[key], f"{where}.{key}")
    raise RequestError(400, f'{where} must be {{"data": "<base64 PNG/JPEG>"}}; {HOW_TO_SEND}')


def request_images(row: Any) -> tuple[list[bytes], bool]:
    """The image bytes one TorchServe request carries, and whether it is a KServe `instances` list."""
    if isinstance(row, (bytes, bytearray, str)) or (isinstance(row, dict) and "b64" in row):
        row = {"data": row}  # an instance handed over by TorchServe's KServe envelope
    if not isinstance(row, dict) or not row:
        raise RequestError(400, f"empty request: {HOW_TO_SEND}")
    fields = [k for k in FILE_FIELDS if k in row] or list(row)
    if len(fields) > 1 and not any(k in row for k in FILE_FIELDS):
        raise RequestError(400, f"multipart request with fields {sorted(row)}: send one file field named 'data'")
    value = row[fields[0]]
    if isinstance(value, (bytes, bytearray)):
        if not value:
            raise RequestError(400, f"empty request body: {HOW_TO_SEND}")
        return [bytes(value)], False
    if isinstance(value, dict) and "instances" in value:
        instances = value["instances"]
        if not isinstance(instances, list) or not instances:
            raise RequestError(400, '"instances" must be a non-empty list of {"data": "<base64>"} objects')
        return [_from_json_object(v, f"instances[{i}]") for i, v in enumerate(instances)], True
    if isinstance(value, dict):
        return [_from_json_object(value, "JSON body")], False
    if isinstance(value, str):
        if fields[0] != "body":  # {"data": "<base64>"} as a KServe envelope instance or a text form field
            return [_b64(value, fields[0])], False
        raise RequestError(400, f"the body is text, not an image: {HOW_TO_SEND}")
    raise RequestError(400, f"unsupported request body ({type(value).__name__}): {HOW_TO_SEND}")


# -- retrieval ------------------------------------------------------------------------------


def answers(gallery_labels: np.ndarray, scores: np.ndarray, ids: np.ndarray, vote: str) -> list[dict[str, Any]]:
    """One {"label", "score"} per query from FAISS's search result (inner products and ids [N,k], nearest first).

    The vote is knn_vote, the one analysis measured the accuracy with; id -1 (FAISS's "no neighbour") does
    not vote, and a query with no neighbour at all is answered label -1, score 0.
    """
    neighbour_labels = np.where(ids >= 0, gallery_labels[np.clip(ids, 0, None)], -1)
    labels, best = knn_vote(neighbour_labels, scores, vote)
    return [{"label": int(label), "score": round(float(score), 6)} for label, score in zip(labels, best, strict=True)]


class DigitService:
    """The loaded model, index and labels; answers batches of requests."""

    def __init__(self, model_dir: Path, settings: dict[str, Any]) -> None:
        import faiss
        import torch

        threads = int(settings.get("threads", 1))
        torch.set_num_threads(threads)
        faiss.omp_set_num_threads(threads)
        self.torch = torch
        self.model = torch.jit.load(str(model_dir / "model.pt"), map_location="cpu").eval()
        self.index = faiss.read_index(str(model_dir / "index.faiss"))
        self.labels = np.load(model_dir / "labels.npy", allow_pickle=False).astype(np.int64)
        if self.index.ntotal != len(self.labels):
            raise RuntimeError(f"index.faiss holds {self.index.ntotal} vectors but labels.npy {len(self.labels)}")
        self.k = max(1, min(int(settings.get("k", 1)), len(self.labels)))
        self.vote = str(settings.get("vote", "majority"))
        self.max_pixels = int(settings.get("max_pixels", DEFAULT_MAX_PIXELS))
        log.info(
            "mnist-ct handler: version %s, %d gallery vectors, k=%d (%s vote from %s), %d thread(s)",
            settings.get("version"),
            len(self.labels),
            self.k,
            self.vote,
            knn_vote.__module__,
            threads,
        )

    @classmethod
    def from_model_dir(cls, model_dir: Path) -> DigitService:
        settings_path = model_dir / SETTINGS_FILE
        settings = json.loads(settings_path.read_text()) if settings_path.is_file() else {}
        return cls(model_dir, settings.get("serving", settings))

    def classify(self, images: np.ndarray) -> list[dict[str, Any]]:
        """uint8 [N,28,28] as decoded, or float32 [N,1,28,28] in [0,1] (the model's input, which the KServe
        predictor's v2 tensors may send as is) -> one {"label", "score"} per image."""
        if len(images) == 0:
            return []
        pixels = images.astype(np.float32) / 255.0 if images.dtype == np.uint8 else images.astype(np.float32)
        x = self.torch.from_numpy(np.ascontiguousarray(pixels)).reshape(-1, 1, 28, 28)
        with self.torch.inference_mode():
            emb = self.model(x)
        vectors = np.ascontiguousarray(emb.numpy(), dtype=np.float32)
        scores, ids = self.index.search(vectors, self.k)
        return answers(self.labels, scores, ids, self.vote)

    def handle(self, data: list[Any], context: Any) -> list[Any]:
        """One answer per request; a bad request gets its own 4xx and does not affect the others."""
        answers: list[Any] = [None] * len(data)
        decoded: list[np.ndarray] = []
        owners: list[tuple[int, bool]] = []  # (request index, is an instances list) per decoded image
        for i, row in enumerate(data):
            try:
                blobs, is_list = request_images(row)
                images = [decode_image(b, self.max_pixels) for b in blobs]
            except RequestError as e:
                answers[i] = e.body()
                _set_status(context, e.status, i)
                continue
            except Exception as e:  # noqa: BLE001 - never let one input take down the batch
                log.exception("unexpected error reading request %d", i)
                answers[i] = RequestError(400, f"unreadable request ({type(e).__name__})").body()
                _set_status(context, 400, i)
                continue
            decoded.extend(images)
            owners.extend([(i, is_list)] * len(images))
        results = self.classify(np.stack(decoded)) if decoded else []
        for (i, is_list), result in zip(owners, results, strict=True):
            if is_list:
                if answers[i] is None:
                    answers[i] = {"predictions": []}
                answers[i]["predictions"].append(result)
            else:
                answers[i] = result
        return answers


def _set_status(context: Any, status: int, idx: int) -> None:
    if context is not None:
        try:
            context.set_response_status(status, PHRASES.get(status, ""), idx=idx)
        except Exception:  # noqa: BLE001 - an envelope may hide the per-request processors
            log.warning("could not set status %d for request %d", status, idx)


_service: DigitService | None = None


def handle(data: list[Any] | None, context: Any) -> list[Any] | None:
    """TorchServe's entry point: load on the first call (data is None), then answer each batch."""
    global _service
    if _service is None:
        model_dir = Path(context.system_properties.get("model_dir") or os.getcwd())
        _service = DigitService.from_model_dir(model_dir)
    if data is None:
        return None
    return _service.handle(data, context)
