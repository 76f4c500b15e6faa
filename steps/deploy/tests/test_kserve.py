"""A real KServe predictor (`python -m mnist_ct.deploy serve --runtime kserve`, KServe's ModelServer with two
spawned workers) on a deployed run: answers equal to the TorchServe handler's, v1 and v2, errors, a rollout and a
rollback under load without a failed request, a killed worker. Slow (KServe imports in ~5 s per process): marked
`slow`, still run in CI.
"""

from __future__ import annotations

import base64
import http.client
import io
import json
import os
import signal
import threading
import time
import zipfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import psutil
import pytest
from fixture_run import FixtureRun, cli_roots
from PIL import Image

from mnist_ct.deploy.__main__ import main
from mnist_ct.deploy.handler import DigitService
from mnist_ct.deploy.server import LocalPredictor

pytestmark = pytest.mark.slow


def png(pixels: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, "PNG")
    return buffer.getvalue()


class Client:
    """One keep-alive connection to the predictor."""

    def __init__(self, port: int) -> None:
        self.port = port
        self.conn = http.client.HTTPConnection("127.0.0.1", port, timeout=60)

    def post(self, path: str, body: bytes, content_type: str) -> tuple[int, Any, dict[str, str]]:
        self.conn.request("POST", path, body, {"Content-Type": content_type})
        r = self.conn.getresponse()
        data = r.read()
        try:
            parsed = json.loads(data)
        except ValueError:
            parsed = data.decode(errors="replace")
        return r.status, parsed, {k.lower(): v for k, v in r.getheaders()}

    def v1(self, predictor: LocalPredictor, body: bytes, content_type: str = "image/png") -> tuple[int, Any]:
        status, parsed, headers = self.post(predictor.predict_path, body, content_type)
        if status == 200:
            assert headers["x-model-version"] == parsed["model_version"]
        return status, parsed

    def v2(self, predictor: LocalPredictor, inputs: list[dict[str, Any]]) -> tuple[int, Any]:
        body = json.dumps({"id": "t", "inputs": inputs}).encode()
        status, parsed, _ = self.post(predictor.infer_path, body, "application/json")
        return status, parsed


@pytest.fixture(scope="module")
def deployed(runs: dict[str, FixtureRun], tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("kserve") / "deploy"
    assert main([*cli_roots(runs["good"], root), "--quiet"]) == 0
    return root


@pytest.fixture(scope="module")
def predictor(deployed: Path) -> Iterator[LocalPredictor]:
    with LocalPredictor(deployed, poll_s=0.5) as served:
        yield served


def torchserve_handler(deploy_root: Path, version: str, tmp: Path) -> DigitService:
    """The TorchServe handler's service on the unpacked archive of `version`, as TorchServe's worker loads it."""
    with zipfile.ZipFile(deploy_root / "history" / version / "mnist.mar") as z:
        z.extractall(tmp)
    return DigitService.from_model_dir(tmp)


def test_v1_png_answers_equal_the_torchserve_handler_and_the_analysis_accuracy(runs, deployed, predictor, tmp_path):
    test = runs["good"].test
    handler = torchserve_handler(deployed, "good", tmp_path)
    client = Client(predictor.port)
    images = [png(im) for im in test.images]
    answers = [client.v1(predictor, image) for image in images]
    assert all(status == 200 for status, _ in answers), answers[:3]
    assert {body["model_version"] for _, body in answers} == {"good"}
    expected = handler.handle([{"body": image} for image in images], None)  # one batch, as TorchServe may send
    assert [b["label"] for _, b in answers] == [e["label"] for e in expected]
    # A batch of 200 and 200 single images differ in float rounding only.
    assert [b["score"] for _, b in answers] == pytest.approx([e["score"] for e in expected], abs=1e-5)
    labels = np.array([body["label"] for _, body in answers])
    assert np.mean(labels == test.labels) == pytest.approx(runs["good"].accuracy, abs=1e-9)


def test_v1_json_instances_and_base64_get_the_same_answers(runs, predictor):
    client = Client(predictor.port)
    image = png(runs["good"].test.images[3])
    status, single = client.v1(predictor, image)
    assert status == 200
    answer = {"label": single["label"], "score": single["score"]}
    b64 = base64.b64encode(image).decode()
    body = json.dumps({"instances": [{"b64": b64}, b64, {"data": b64}]}).encode()
    assert client.v1(predictor, body, "application/json") == (
        200,
        {"predictions": [answer, answer, answer], "model_version": "good"},
    )
    assert client.v1(predictor, json.dumps({"data": b64}).encode(), "application/json") == (200, single)
    jpeg = io.BytesIO()
    Image.fromarray(runs["good"].test.images[3]).save(jpeg, "JPEG", quality=95)
    assert client.v1(predictor, jpeg.getvalue(), "image/jpeg")[0] == 200


def test_v2_tensors_uint8_float32_and_bytes_get_the_same_answers(runs, predictor):
    client = Client(predictor.port)
    images = runs["good"].test.images[:5]
    status, _ = client.v1(predictor, png(images[0]))
    expected = [client.v1(predictor, png(im))[1] for im in images]
    labels = [e["label"] for e in expected]
    inputs = {
        "uint8 [N,28,28]": [{"name": "image", "shape": [5, 28, 28], "datatype": "UINT8",
                             "data": images.reshape(-1).tolist()}],
        "fp32 [N,1,28,28]": [{"name": "image", "shape": [5, 1, 28, 28], "datatype": "FP32",
                              "data": (images.astype(np.float32) / 255.0).reshape(-1).tolist()}],
        "bytes [N] base64 PNG": [{"name": "image", "shape": [5], "datatype": "BYTES",
                                  "data": [base64.b64encode(png(im)).decode() for im in images]}],
    }  # fmt: skip
    for what, tensors in inputs.items():
        status, body = client.v2(predictor, tensors)
        assert status == 200, (what, body)
        assert body["model_name"] == "mnist" and body["model_version"] == "good" and body["id"] == "t"
        outputs = {o["name"]: o for o in body["outputs"]}
        assert outputs["label"]["datatype"] == "INT64" and outputs["label"]["shape"] == [5]
        assert outputs["label"]["data"] == labels, what
        assert outputs["score"]["data"] == pytest.approx([e["score"] for e in expected], abs=1e-5), what


def test_bad_requests_get_4xx_with_one_line_and_the_workers_stay_up(runs, predictor):
    workers = sorted(predictor.worker_pids())
    client = Client(predictor.port)
    huge = io.BytesIO()
    Image.new("L", (5000, 5000)).save(huge, "PNG")
    digit = runs["good"].test.images[0]
    tensor = {"name": "image", "datatype": "UINT8", "shape": [1, 28, 28], "data": digit.reshape(-1).tolist()}
    v1 = {
        "garbage": (os.urandom(2000), "application/octet-stream", 400),
        "empty": (b"", "image/png", 400),
        "truncated png": (png(digit)[:60], "image/png", 400),
        "25 Mpixel": (huge.getvalue(), "image/png", 413),
        "bad json": (b"{not json", "application/json", 400),
        "json list": (b"[1, 2]", "application/json", 400),
        "not base64": (json.dumps({"data": "%%%"}).encode(), "application/json", 400),
        "empty instances": (json.dumps({"instances": []}).encode(), "application/json", 400),
        "too many": (json.dumps({"instances": ["AAAA"] * 1025}).encode(), "application/json", 413),
    }
    for what, (body, ctype, code) in v1.items():
        status, answer = client.v1(predictor, body, ctype)
        assert status == code, (what, answer)
        assert isinstance(answer, dict) and len(str(answer.get("error", answer.get("detail", "")))) > 0, what
        assert "\n" not in json.dumps(answer), what
    v2 = {
        "two inputs": [tensor, tensor],
        "shape": [{**tensor, "shape": [1, 27, 29]}],
        "data short": [{**tensor, "data": tensor["data"][:-1]}],
        "uint8 over 255": [{**tensor, "data": [300] * 784}],
        "fp32 out of range": [{**tensor, "datatype": "FP32", "data": [2.0] * 784}],
        "int32": [{**tensor, "datatype": "INT32"}],
        "bytes not base64": [{"name": "image", "datatype": "BYTES", "shape": [1], "data": ["%%%"]}],
    }
    for what, tensors in v2.items():
        status, answer = client.v2(predictor, tensors)
        assert 400 <= status < 500, (what, status, answer)
    assert client.v1(predictor, png(digit))[0] == 200
    assert sorted(predictor.worker_pids()) == workers, "a worker died on bad input"


class Load:
    """8 clients posting test digits until stopped: every answer's (time, version), every failure."""

    def __init__(self, predictor: LocalPredictor, images: list[bytes], clients: int = 8) -> None:
        self.predictor, self.images = predictor, images
        self.answers: list[tuple[float, str]] = []
        self.failures: list[Any] = []
        self._stop = threading.Event()
        self._threads = [threading.Thread(target=self._work, args=(n,)) for n in range(clients)]

    def _work(self, n: int) -> None:
        client = Client(self.predictor.port)
        i = n
        while not self._stop.is_set():
            try:
                status, body = client.v1(self.predictor, self.images[i % len(self.images)])
            except (OSError, http.client.HTTPException) as e:
                self.failures.append(repr(e))
                client = Client(self.predictor.port)
                continue
            if status == 200:
                self.answers.append((time.monotonic(), body["model_version"]))
            else:
                self.failures.append((status, body))
            i += 8

    def __enter__(self) -> Load:
        for t in self._threads:
            t.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        for t in self._threads:
            t.join()

    def wait_for(self, version: str, timeout_s: float) -> float:
        """Seconds until `version` answers (and keeps answering), from now."""
        start = time.monotonic()
        while time.monotonic() - start < timeout_s:
            recent = [v for t, v in self.answers[-50:]]
            if recent and all(v == version for v in recent[-16:]):
                return next(t for t, v in self.answers if t >= start and v == version) - start
            time.sleep(0.05)
        raise AssertionError(f"version {version} did not answer within {timeout_s} s: {self.answers[-5:]}")


def test_a_deploy_and_a_rollback_switch_the_answering_version_under_load_without_a_failed_request(
    runs, deployed, predictor
):
    images = [png(im) for im in runs["good"].test.images[:100]]
    with Load(predictor, images) as load:
        time.sleep(1.0)
        assert main([*cli_roots(runs["worse"], deployed), "--force", "--quiet"]) == 0
        assert load.wait_for("worse", 10.0) < 10.0
        assert main(["--rollback", "--deploy-root", str(deployed), "--quiet"]) == 0
        assert load.wait_for("good", 10.0) < 10.0
        time.sleep(0.5)
    assert load.failures == []
    versions = [v for _, v in load.answers]
    assert {"good", "worse"} <= set(versions) and versions[-1] == "good"
    assert len(versions) > 200


def test_a_version_that_does_not_load_is_logged_and_the_live_one_keeps_answering(runs, deployed, predictor):
    folder = deployed / "kserve" / "mnist"
    broken = folder / "broken"
    broken.mkdir()
    (broken / "model.pt").write_bytes(b"not a model")  # no manifest: never verified, never loaded
    tmp = folder / ".live.tmp-test"
    tmp.symlink_to("broken")
    os.replace(tmp, folder / "live")
    client = Client(predictor.port)
    image = png(runs["good"].test.images[0])
    try:
        deadline = time.monotonic() + 5
        while time.monotonic() < deadline:
            assert client.v1(predictor, image) == (200, client.v1(predictor, image)[1])
            time.sleep(0.2)
        assert client.v1(predictor, image)[1]["model_version"] == "good"
        assert "version broken does not load" in Path(str(predictor.log_path)).read_text()
    finally:
        tmp.symlink_to("good")
        os.replace(tmp, folder / "live")


def test_a_killed_worker_loses_only_its_requests_in_flight_and_is_replaced(runs, predictor):
    images = [png(im) for im in runs["good"].test.images[:100]]
    before = predictor.worker_pids()
    assert len(before) == 2
    with Load(predictor, images) as load:
        time.sleep(1.0)
        os.kill(before[0], signal.SIGKILL)
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and (
            before[0] in predictor.worker_pids() or len(predictor.worker_pids()) < 2
        ):
            time.sleep(0.2)
        served_after_kill = len(load.answers)
        time.sleep(1.0)
    after = predictor.worker_pids()
    assert before[0] not in after and len(after) == 2, (before, after)
    assert len(load.answers) > served_after_kill  # the other worker kept answering
    assert len(load.failures) <= 8, load.failures  # at most one request in flight per client
    assert psutil.Process(predictor.pid()).is_running()
