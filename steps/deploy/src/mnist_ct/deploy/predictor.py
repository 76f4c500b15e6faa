"""The KServe predictor: the live deployed model behind KServe's Python model server (`kserve.ModelServer`).

It serves the folder deploy writes for it (kserve_store.py: `<dir>/live` -> `<dir>/<version>/`, on a cluster the
deploy volume's kserve/<model> mounted at /mnt/models) with the TorchServe handler's own code: the decoding
(mnist_ct.artifacts.digits), the embedding, the FAISS search and the k-NN vote (handler.DigitService), so both
runtimes give the same answer to the same image.

Requests (every response names the version that answered: `model_version`, and the `x-model-version` header):
- v1 `POST /v1/models/<m>:predict` with a PNG/JPEG body (any Content-Type but JSON) or JSON `{"data": "<base64>"}`
  -> `{"label", "score", "model_version"}`; JSON `{"instances": [{"b64": ...} | "<base64>", ...]}` ->
  `{"predictions": [{"label", "score"}, ...], "model_version"}`;
- Open Inference Protocol v2 `POST /v2/models/<m>/infer`, one input tensor: UINT8 (0..255) or FP32 ([0, 1], the
  model's own input) of shape [N,28,28] or [N,1,28,28], white digit on black as the model takes it; or BYTES [N],
  each a base64 PNG/JPEG, decoded as v1 does -> outputs `label` (INT64 [N]) and `score` (FP32 [N]).
A bad request gets 400 (413 for an image or a request above the limits) with `{"error": "<one line>"}`; the
server stays up.

Rollout: each worker process polls `<dir>/live` (every `poll_s`), loads a new version beside the one it serves
(verified, warmed up), then swaps it in with one assignment: requests in flight finish on the old version, the
next ones get the new one, none fails. A version that does not load is logged and the old one kept.

KServe's server spawns its worker processes (`workers` > 1) and pickles the model into each, so the model
pickles as its settings and loads itself again in the worker; the parent restarts a worker that dies.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import copy
import logging
import logging.config
import os
import threading
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import kserve  # this module is the KServe predictor: imported only to serve (about 5 s)
import numpy as np
from kserve.protocol.rest.multiprocess import server as multiprocess

from mnist_ct.artifacts import ArtifactError
from mnist_ct.artifacts.digits import SIDE, DigitImageError, decode_image

from .handler import DigitService, request_images
from .kserve_store import live_version, read_live

log = logging.getLogger("kserve.mnist_ct")

VERSION_HEADER = "x-model-version"
MAX_IMAGES = 1024  # per request: a bigger batch is a client's mistake, not a workload (413)
DEFAULT_POLL_S = 1.0
LOAD_TIMEOUT_S = 120.0
START_GRACE_S = 120.0  # a new worker's time to import KServe and torch before KServe's ping may kill it
DEFAULT_MAX_REQUEST_BYTES = 64 * 2**20
INPUT_TYPES = [
    {"name": "image", "datatype": "UINT8", "shape": [-1, SIDE, SIDE]},
    {"name": "image", "datatype": "FP32", "shape": [-1, 1, SIDE, SIDE]},
    {"name": "image", "datatype": "BYTES", "shape": [-1]},
]
OUTPUT_TYPES = [
    {"name": "label", "datatype": "INT64", "shape": [-1]},
    {"name": "score", "datatype": "FP32", "shape": [-1]},
]


class RequestTooLarge(DigitImageError):
    def __init__(self, message: str) -> None:
        super().__init__(413, message)


def configure_logging(access_log: bool) -> None:
    """KServe's logging configuration, without uvicorn's line per request unless `access_log` (it costs about a
    third of the throughput on two cores). Done in every worker before KServe would configure it: KServe then
    keeps it (it configures only loggers without handlers), also in a worker it restarts."""
    from kserve.logging import KSERVE_LOG_CONFIG

    config = copy.deepcopy(KSERVE_LOG_CONFIG)
    if not access_log:  # uvicorn's access line and KServe's two timing lines (kserve.trace) per request
        config["loggers"]["uvicorn.access"] = {"handlers": [], "level": "WARNING", "propagate": False}
        config["loggers"]["kserve.trace"]["level"] = "WARNING"
    logging.config.dictConfig(config)


def _install_app_hooks(max_request_bytes: int) -> None:
    """On KServe's FastAPI app (module-level, imported again in every worker): our 400/413 as {"error": ...}, and
    bodies above `max_request_bytes` refused by their Content-Length before they are read."""
    from fastapi.responses import ORJSONResponse
    from kserve.model_server import app

    if getattr(app.state, "mnist_ct_hooks", False):
        return

    async def image_error(_request: Any, exc: Exception) -> ORJSONResponse:
        status = exc.status if isinstance(exc, DigitImageError) else 400
        return ORJSONResponse(status_code=status, content={"error": str(exc)})

    app.add_exception_handler(DigitImageError, image_error)
    app.add_middleware(_BodyLimit, limit=max_request_bytes)
    app.state.mnist_ct_hooks = True


def drop_request_timings() -> None:
    """KServe times every request (timing_asgi's TimingMiddleware, wall and CPU time) only to log it to the
    kserve.trace logger, which configure_logging silences without --access-log; measured, the timing took
    about 15% of a worker's time under load. Called in each worker before KServe builds its app."""
    from kserve.protocol.rest import server as rest

    rest.TimingMiddleware = _Untimed


class _Untimed:
    """Stands in for TimingMiddleware: passes every request through."""

    def __init__(self, app: Any, **_: Any) -> None:
        self.app = app

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        await self.app(scope, receive, send)


class _BodyLimit:
    """ASGI middleware: 413 for a request whose Content-Length is above `limit` (read before the body is)."""

    def __init__(self, app: Any, limit: int) -> None:
        self.app, self.limit = app, limit

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] == "http":
            for name, value in scope.get("headers", ()):
                if name == b"content-length" and value.isdigit() and int(value) > self.limit:
                    body = f'{{"error": "request body of {int(value)} bytes is above the limit of {self.limit}"}}'
                    await send({"type": "http.response.start", "status": 413,
                                "headers": [(b"content-type", b"application/json")]})  # fmt: skip
                    await send({"type": "http.response.body", "body": body.encode()})
                    return
        await self.app(scope, receive, send)


@dataclass(frozen=True)
class Loaded:
    """One version in memory: what answers a request."""

    version: str
    service: DigitService


def load_version(folder: Path) -> Loaded:
    """The live version of `folder` (kserve_store.read_live: verified), loaded and warmed up."""
    version, path = read_live(folder)
    service = DigitService.from_model_dir(path)
    blank = np.zeros((8, SIDE, SIDE), dtype=np.uint8)
    for n in (1, 8, 1):  # TorchScript optimises on its first calls: pay that before the first request
        service.classify(blank[:n])
    return Loaded(version, service)


class DigitPredictor(kserve.Model):
    """kserve.Model serving the live version of `folder`, following its `live` pointer (module docstring)."""

    def __init__(
        self,
        name: str,
        folder: Path,
        poll_s: float = DEFAULT_POLL_S,
        access_log: bool = False,
        max_request_bytes: int = DEFAULT_MAX_REQUEST_BYTES,
        load: bool = True,
    ) -> None:
        super().__init__(name, return_response_headers=True)
        self.folder = Path(folder)
        self.poll_s = poll_s
        self.access_log = access_log
        self.max_request_bytes = max_request_bytes
        self.current: Loaded | None = None
        self._failed: str | None = None
        self._stop = threading.Event()
        self._loaded = threading.Event()
        _install_app_hooks(max_request_bytes)
        if not access_log:
            drop_request_timings()
        if load:
            self.load()

    # -- a worker process gets the settings and loads the model itself -------------------------------------
    def __getstate__(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "folder": str(self.folder),
            "poll_s": self.poll_s,
            "access_log": self.access_log,
            "max_request_bytes": self.max_request_bytes,
        }

    def __setstate__(self, state: dict[str, Any]) -> None:
        """In a new worker: load in the background. KServe's parent pings a worker from the moment it is
        unpickled and kills one that does not answer within 5 s, which a worker still importing torch and
        loading the model on two busy cores would not; until it is loaded, its requests wait (predict)."""
        configure_logging(state["access_log"])
        self.__init__(  # type: ignore[misc]
            state["name"],
            Path(state["folder"]),
            state["poll_s"],
            state["access_log"],
            state["max_request_bytes"],
            load=False,
        )
        threading.Thread(target=self._load_in_background, name="mnist-ct-load", daemon=True).start()

    def _load_in_background(self) -> None:
        try:
            self.load()
        except Exception:  # a worker that cannot load exits: KServe's parent starts another
            log.exception("mnist-ct predictor: cannot load %s", self.folder)
            os._exit(3)

    def load(self) -> bool:
        self.current = load_version(self.folder)
        self.ready = True
        self._loaded.set()
        log.info("mnist-ct predictor: serving %s version %s from %s", self.name, self.current.version, self.folder)
        threading.Thread(target=self._follow_live, name="mnist-ct-live", daemon=True).start()
        return True

    def stop(self) -> None:
        self._stop.set()
        super().stop()

    def _follow_live(self) -> None:
        """Poll the live pointer; load a new version beside the current one, then swap it in (one assignment)."""
        while not self._stop.wait(self.poll_s):
            try:
                version = live_version(self.folder)
            except ArtifactError as e:
                version = None
                if self._failed != str(e):
                    log.error("mnist-ct predictor: %s; still serving %s", e, self._serving())
                    self._failed = str(e)
            if version is None or version == self._serving() or version == self._failed:
                continue
            started = time.monotonic()
            try:
                loaded = load_version(self.folder)
            except Exception as e:  # noqa: BLE001 - a bad version must not take down the good one
                log.error("mnist-ct predictor: version %s does not load (%s); still serving %s", version, e,
                          self._serving())  # fmt: skip
                self._failed = version
                continue
            previous, self.current, self._failed = self._serving(), loaded, None
            log.info("mnist-ct predictor: now serving version %s (was %s; loaded in %.2f s)", loaded.version,
                     previous, time.monotonic() - started)  # fmt: skip

    async def healthy(self) -> bool:
        """Ready once loaded. KServe asks this before every request, so a request that reaches a worker still
        loading (__setstate__) waits for the model instead of failing with 503."""
        if self.current is None:
            await asyncio.to_thread(self._loaded.wait, LOAD_TIMEOUT_S)
        return self.current is not None

    def _serving(self) -> str | None:
        return self.current.version if self.current else None

    def get_input_types(self) -> list[dict[str, Any]]:
        return INPUT_TYPES

    def get_output_types(self) -> list[dict[str, Any]]:
        return OUTPUT_TYPES

    # -- requests ---------------------------------------------------------------------------------------------
    async def predict(
        self, payload: Any, headers: dict[str, str] | None = None, response_headers: dict[str, str] | None = None
    ) -> Any:
        current = self.current  # one version answers the whole request, even if a new one is swapped in meanwhile
        if current is None:  # healthy() waited for the load and said no: KServe answers 503 before predict
            raise RuntimeError("predict before the model loaded")
        if response_headers is not None:
            response_headers[VERSION_HEADER] = current.version
        if isinstance(payload, kserve.InferRequest):
            return self._infer_v2(current, payload)
        blobs, is_list = request_images({"body": payload})
        _check_count(len(blobs))
        results = current.service.classify(np.stack([decode_image(b, current.service.max_pixels) for b in blobs]))
        if is_list:
            return {"predictions": results, "model_version": current.version}
        return {**results[0], "model_version": current.version}

    def _infer_v2(self, current: Loaded, request: Any) -> Any:
        images = v2_images(request, current.service.max_pixels)
        results = current.service.classify(images)
        labels = np.array([r["label"] for r in results], dtype=np.int64)
        scores = np.array([r["score"] for r in results], dtype=np.float32)
        outputs = [
            kserve.InferOutput("label", [len(labels)], "INT64"),
            kserve.InferOutput("score", [len(scores)], "FP32"),
        ]
        outputs[0].set_data_from_numpy(labels, binary_data=False)
        outputs[1].set_data_from_numpy(scores, binary_data=False)
        return kserve.InferResponse(
            response_id=request.id or str(uuid.uuid4()),
            model_name=self.name,
            model_version=current.version,
            infer_outputs=outputs,
        )


def _check_count(n: int) -> None:
    if n > MAX_IMAGES:
        raise RequestTooLarge(f"{n} images in one request, more than {MAX_IMAGES}: split it")


def v2_images(request: Any, max_pixels: int) -> np.ndarray:
    """The images of a v2 request: uint8 [N,28,28] or float32 [N,1,28,28] in [0, 1] (DigitService.classify)."""
    inputs = request.inputs
    if len(inputs) != 1:
        raise DigitImageError(400, f"send one input tensor (image), got {len(inputs)}; {_V2_HOW}")
    tensor = inputs[0]
    shape = [int(s) for s in tensor.shape]
    if not shape or shape[0] < 1:
        raise DigitImageError(400, f"input {tensor.name!r}: shape {shape} has no images; {_V2_HOW}")
    _check_count(shape[0])
    if tensor.datatype == "BYTES":
        if len(shape) != 1:
            raise DigitImageError(400, f"input {tensor.name!r}: BYTES takes shape [N] (one image each), got {shape}")
        return np.stack([decode_image(_image_bytes(v, i), max_pixels) for i, v in enumerate(_as_numpy(tensor))])
    if tensor.datatype not in ("UINT8", "FP32"):
        raise DigitImageError(400, f"input {tensor.name!r}: datatype {tensor.datatype} not served; {_V2_HOW}")
    if shape[1:] not in ([SIDE, SIDE], [1, SIDE, SIDE]):
        raise DigitImageError(400, f"input {tensor.name!r}: shape {shape}; {_V2_HOW}")
    array = _as_numpy(tensor)
    if tensor.datatype == "UINT8":
        return array.reshape(-1, SIDE, SIDE).astype(np.uint8)
    if not np.isfinite(array).all() or array.min() < 0.0 or array.max() > 1.0:
        raise DigitImageError(400, f"input {tensor.name!r}: FP32 values must be finite and in [0, 1]")
    return array.reshape(-1, 1, SIDE, SIDE).astype(np.float32)


_V2_HOW = (
    "send one tensor: UINT8 0..255 or FP32 in [0, 1] of shape [N,28,28] or [N,1,28,28] (white digit on black), "
    "or BYTES [N] of base64 PNG/JPEG"
)


def _as_numpy(tensor: Any) -> np.ndarray:
    try:
        return np.asarray(tensor.as_numpy())
    except (ValueError, TypeError, OverflowError) as e:  # data that does not fill the shape, or out of range
        raise DigitImageError(400, f"input {tensor.name!r}: data does not match {tensor.datatype} {tensor.shape} "
                              f"({e})") from None  # fmt: skip


def _image_bytes(value: Any, i: int) -> bytes:
    """One BYTES element: raw bytes (binary tensor extension) or, in JSON, a base64 string."""
    if isinstance(value, (bytes, bytearray)):
        raw = bytes(value)
        try:  # JSON strings arrive as bytes too: base64 text decodes, a real PNG/JPEG does not
            return base64.b64decode(raw, validate=True)
        except (binascii.Error, ValueError):
            return raw
    if isinstance(value, str):
        try:
            return base64.b64decode(value, validate=True)
        except (binascii.Error, ValueError):
            raise DigitImageError(400, f"element {i} of the BYTES input is not valid base64") from None
    raise DigitImageError(400, f"element {i} of the BYTES input is {type(value).__name__}, not an image")


class PatientProcess(multiprocess.RESTServerProcess):
    """KServe's worker process, taken as alive while it starts (START_GRACE_S).

    KServe's parent pings each worker every 0.5 s and kills one that does not answer within 5 s; a worker answers
    only once it has imported KServe (and, here, torch), which on two busy cores takes longer, so new workers were
    killed and restarted in a loop (seen: 23 restarts in 120 s). A running worker counts as alive for its first
    START_GRACE_S seconds; after that, KServe's own ping decides. Installed by `serve` (module level: KServe
    pickles the process object into each worker, which finds the class by name)."""

    def start(self) -> None:
        self.started = time.monotonic()
        super().start()

    def is_alive(self, timeout: float = 5) -> bool:
        if self._process.is_alive() and time.monotonic() - getattr(self, "started", 0.0) < START_GRACE_S:
            return True
        return bool(super().is_alive(timeout))


def serve(
    name: str,
    folder: Path,
    port: int,
    workers: int,
    poll_s: float = DEFAULT_POLL_S,
    access_log: bool = False,
    max_request_bytes: int = DEFAULT_MAX_REQUEST_BYTES,
    on_ready: Any = None,
) -> None:
    """Load the live version and serve it until SIGINT/SIGTERM (KServe's ModelServer handles both)."""
    import sys

    sys.argv = sys.argv[:1]  # kserve.model_server parses sys.argv when imported (here and in its workers)
    configure_logging(access_log)
    from kserve import ModelServer

    model = DigitPredictor(name, folder, poll_s, access_log, max_request_bytes)
    if on_ready is not None:
        on_ready(model)
    multiprocess.RESTServerProcess = PatientProcess  # the name KServe's parent creates its workers by
    server = ModelServer(http_port=port, workers=workers, enable_grpc=False, enable_latency_logging=False)
    server.start([model])
