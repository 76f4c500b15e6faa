"""The KServe predictor in this process, on a real deployed run: what test_kserve.py checks over HTTP in KServe's
spawned workers (which coverage does not follow), here through the model's own entry points."""

from __future__ import annotations

import asyncio
import base64
import io
import logging
import os
import pickle
import time
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from fixture_run import cli_roots
from kserve import InferInput, InferRequest
from PIL import Image

from mnist_ct.artifacts.digits import DigitImageError
from mnist_ct.deploy import predictor
from mnist_ct.deploy.__main__ import main


def png(pixels: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, "PNG")
    return buffer.getvalue()


@pytest.fixture
def served(runs, deploy_root):
    assert main([*cli_roots(runs["good"], deploy_root), "--quiet"]) == 0
    model = predictor.DigitPredictor("mnist", deploy_root / "kserve" / "mnist", poll_s=0.05)
    yield model
    model.stop()


def predict(model: predictor.DigitPredictor, payload: Any) -> tuple[Any, dict[str, str]]:
    headers: dict[str, str] = {}
    return asyncio.run(model.predict(payload, {}, headers)), headers


def v2(name: str, datatype: str, shape: list[int], data: list) -> InferRequest:
    return InferRequest("mnist", [InferInput(name, shape, datatype, data)], request_id="r1")


def test_v1_and_v2_answers_agree_and_name_the_version(runs, served):
    images = runs["good"].test.images[:4]
    single, headers = predict(served, png(images[0]))
    assert headers == {"x-model-version": "good"} and single["model_version"] == "good"
    b64 = base64.b64encode(png(images[0])).decode()
    listed, _ = predict(served, {"instances": [b64, {"b64": b64}]})
    answer = {"label": single["label"], "score": single["score"]}
    assert listed == {"predictions": [answer, answer], "model_version": "good"}
    expected = [predict(served, png(im))[0]["label"] for im in images]
    for request in (
        v2("image", "UINT8", [4, 28, 28], images.reshape(-1).tolist()),
        v2("image", "FP32", [4, 1, 28, 28], (images / 255.0).astype(np.float32).reshape(-1).tolist()),
        v2("image", "BYTES", [4], [base64.b64encode(png(im)).decode() for im in images]),
    ):
        response, _ = predict(served, request)
        assert response.model_version == "good" and response.id == "r1"
        labels = {o.name: o for o in response.outputs}["label"].as_numpy().tolist()
        assert labels == expected
    assert served.get_input_types()[0]["datatype"] == "UINT8" and served.get_output_types()[0]["name"] == "label"
    assert asyncio.run(served.healthy())


@pytest.mark.parametrize(
    ("request_", "status"),
    [
        (v2("image", "UINT8", [1, 27, 28], [0] * 756), 400),
        (v2("image", "INT32", [1, 28, 28], [0] * 784), 400),
        (v2("image", "FP32", [1, 28, 28], [1.5] * 784), 400),
        (v2("image", "FP32", [1, 28, 28], [float("nan")] * 784), 400),
        (v2("image", "UINT8", [1, 28, 28], [0] * 700), 400),
        (v2("image", "BYTES", [1, 1], ["AAAA"]), 400),
        (v2("image", "BYTES", [1], ["%%%"]), 400),
        (v2("image", "UINT8", [0, 28, 28], []), 400),
        (v2("image", "UINT8", [1025, 28, 28], [0] * 1025 * 784), 413),
    ],
)
def test_bad_v2_tensors_are_4xx_naming_the_input(served, request_, status):
    with pytest.raises(DigitImageError) as e:
        predict(served, request_)
    assert e.value.status == status and "\n" not in e.value.message


def test_two_inputs_and_raw_bytes_elements(runs, served):
    tensor = InferInput("image", [1, 28, 28], "UINT8", [0] * 784)
    with pytest.raises(DigitImageError, match="one input tensor"):
        predict(served, InferRequest("mnist", [tensor, tensor]))
    raw = png(runs["good"].test.images[0])
    assert predictor._image_bytes(raw, 0) == raw  # the binary tensor extension: bytes as they are
    assert predictor._image_bytes(base64.b64encode(raw), 0) == raw  # JSON strings arrive as bytes too
    with pytest.raises(DigitImageError, match="not an image"):
        predictor._image_bytes(7, 0)


def test_a_new_live_version_is_swapped_in_and_a_broken_one_is_logged_and_kept_out(runs, deploy_root, served, caplog):
    assert main([*cli_roots(runs["worse"], deploy_root), "--force", "--quiet"]) == 0
    deadline = time.monotonic() + 10
    while served.current.version != "worse" and time.monotonic() < deadline:
        time.sleep(0.05)
    assert predict(served, png(runs["good"].test.images[0]))[0]["model_version"] == "worse"
    folder = deploy_root / "kserve" / "mnist"
    (folder / "broken").mkdir()
    caplog.set_level(logging.INFO, logger="kserve.mnist_ct")
    logging.getLogger("kserve.mnist_ct").addHandler(caplog.handler)  # KServe's "kserve" logger does not propagate
    for target in ("broken", "../outside"):
        tmp = folder / ".live.tmp-test"
        tmp.symlink_to(target)
        os.replace(tmp, folder / "live")
        time.sleep(0.5)
        assert served.current.version == "worse"
    logging.getLogger("kserve.mnist_ct").removeHandler(caplog.handler)
    assert "version broken does not load" in caplog.text and "still serving worse" in caplog.text


def test_a_pickled_predictor_loads_itself_in_the_background_as_a_worker_does(served):
    state = pickle.dumps(served)
    assert len(state) < 2000  # settings, not the model
    worker = pickle.loads(state)
    try:
        assert asyncio.run(worker.healthy()) and worker.current.version == "good"
    finally:
        worker.stop()
    assert not logging.getLogger("uvicorn.access").handlers  # no access log without --access-log


def test_a_body_over_the_limit_is_413_before_it_is_read():
    sent: list[dict] = []

    async def app(scope, receive, send):
        sent.append({"reached": True})

    async def send(message):
        sent.append(message)

    limit = predictor._BodyLimit(app, limit=10)
    asyncio.run(limit({"type": "http", "headers": [(b"content-length", b"11")]}, None, send))
    assert sent[0]["status"] == 413 and b"above the limit of 10" in sent[1]["body"]
    sent.clear()
    asyncio.run(limit({"type": "http", "headers": [(b"content-length", b"10")]}, None, send))
    assert sent == [{"reached": True}]


def test_a_starting_worker_counts_as_alive_until_its_grace_ends(monkeypatch):
    process = predictor.PatientProcess.__new__(predictor.PatientProcess)

    class Running:
        def is_alive(self) -> bool:
            return True

    process._process = Running()
    process.started = time.monotonic()
    assert process.is_alive()  # no ping sent while it imports
    pinged: list[float] = []
    monkeypatch.setattr(predictor.multiprocess.RESTServerProcess, "is_alive", lambda self, t=5: pinged.append(t))
    process.started = time.monotonic() - predictor.START_GRACE_S - 1
    assert not process.is_alive() and pinged == [5]  # after the grace KServe's ping decides


def test_serve_refuses_a_folder_with_nothing_live(tmp_path):
    with pytest.raises(Exception, match="no live model"):
        predictor.load_version(Path(tmp_path))
