"""A real TorchServe on 127.0.0.1 (free ports) serving the deployed archive: answers, errors, batching.

One instance for the module, started the way a user starts it (`python -m mnist_ct.deploy serve`, a
child process): every test talks to it, and the last one stops it with SIGTERM. Slow (a cold start is
~10-30 s): marked `slow`, still run in CI. Needs Java 17.
"""

from __future__ import annotations

import base64
import http.client
import io
import json
import os
import signal
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import psutil
import pytest
from fixture_run import cli_roots
from PIL import Image

from mnist_ct.deploy.__main__ import main
from mnist_ct.deploy.server import fetch, free_port

pytestmark = pytest.mark.slow


def png(pixels: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, "PNG")
    return buffer.getvalue()


def multipart(field: str, filename: str, data: bytes) -> tuple[bytes, str]:
    boundary = "mnist-ct-test-boundary"
    body = (
        (
            f'--{boundary}\r\nContent-Disposition: form-data; name="{field}"; filename="{filename}"\r\n'
            f"Content-Type: image/png\r\n\r\n"
        ).encode()
        + data
        + f"\r\n--{boundary}--\r\n".encode()
    )
    return body, f"multipart/form-data; boundary={boundary}"


@dataclass
class Served:
    """The `serve` command running in a child process, and where it answers."""

    proc: subprocess.Popen
    ports: dict[str, int]
    model_name: str
    workdir: Path
    cwd: Path

    @property
    def predict_url(self) -> str:
        return f"http://127.0.0.1:{self.ports['inference']}/predictions/{self.model_name}"

    def model_status(self) -> list[dict]:
        status, body = fetch(f"http://127.0.0.1:{self.ports['management']}/models/{self.model_name}")
        assert status == 200, body
        return body

    def stop(self) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        return self.proc.wait(timeout=60)


@pytest.fixture(scope="module")
def server(runs, tmp_path_factory):
    """The good run deployed and served by `serve`: one worker that batches up to 8 requests within 100 ms."""
    root = tmp_path_factory.mktemp("serving")
    assert main([*cli_roots(runs["good"], root / "deploy"), "--workers", "1"]) == 0
    ports = {"inference": free_port(), "management": free_port(), "metrics": free_port()}
    cmd = [sys.executable, "-m", "mnist_ct.deploy", "serve", "--runtime", "torchserve"]
    cmd += ["--deploy-root", str(root / "deploy")]
    cmd += ["--port", str(ports["inference"]), "--management-port", str(ports["management"])]
    cmd += ["--metrics-port", str(ports["metrics"]), "--batch-size", "8", "--max-batch-delay", "100"]
    cmd += ["--workdir", str(root / "ts")]
    (root / "cwd").mkdir()
    proc = subprocess.Popen(cmd, stderr=subprocess.PIPE, text=True, cwd=root / "cwd")
    served = Served(proc, ports, "mnist", root / "ts", root / "cwd")
    try:
        line = ""
        deadline = time.monotonic() + 300
        assert proc.stderr is not None
        while "serving" not in line and time.monotonic() < deadline:
            line = proc.stderr.readline()
            assert line or proc.poll() is None, "serve exited before it was ready"
        assert f"at {served.predict_url} " in line, line
        yield served
    finally:
        served.stop()


def worker_pids(server: Served) -> list[int]:
    return [w["pid"] for entry in server.model_status() for w in entry["workers"] if w["status"] == "READY"]


def test_png_test_digits_get_the_accuracy_analysis_reported(runs, server):
    test = runs["good"].test
    with ThreadPoolExecutor(8) as pool:  # 8 in flight: the worker's batches fill up
        answers = list(pool.map(lambda im: fetch(server.predict_url, png(im)), test.images))
    assert all(status == 200 for status, _ in answers)
    labels = np.array([body["label"] for _, body in answers])
    assert np.mean(labels == test.labels) == pytest.approx(runs["good"].accuracy, abs=1e-3)
    assert all(0.0 < body["score"] <= 1.0001 for _, body in answers)


def test_multipart_base64_json_and_kserve_instances_are_answered(runs, server):
    test = runs["good"].test
    image, label = png(test.images[1]), int(test.labels[1])
    expected = fetch(server.predict_url, image)[1]
    body, ctype = multipart("data", "digit.png", image)
    assert fetch(server.predict_url, body, ctype) == (200, expected)
    b64 = base64.b64encode(image).decode()
    assert fetch(server.predict_url, json.dumps({"data": b64}).encode(), "application/json") == (200, expected)
    instances = json.dumps({"instances": [{"data": b64}, {"data": b64}]}).encode()
    assert fetch(server.predict_url, instances, "application/json") == (200, {"predictions": [expected, expected]})
    assert expected["label"] == label or runs["good"].accuracy < 1.0


def test_bad_inputs_get_4xx_and_the_worker_stays_up(runs, server):
    pids = worker_pids(server)
    url = server.predict_url
    huge = io.BytesIO()
    Image.new("L", (5000, 5000)).save(huge, "PNG")  # ~25 kB, 25 Mpixel
    cases = {
        "garbage": fetch(url, os.urandom(2000), "application/octet-stream"),
        "empty": fetch(url, b"", "image/png"),
        "text": fetch(url, b"this is not a digit", "text/plain"),
        "truncated": fetch(url, png(runs["good"].test.images[0])[:40]),
        "bad json": fetch(url, b'{"data": 12}', "application/json"),
        "huge image": fetch(url, huge.getvalue()),
    }
    for name, (status, body) in cases.items():
        assert 400 <= status < 500, (name, status, body)
        assert isinstance(body, dict) and body.get("message"), (name, body)
    assert cases["huge image"][0] == 413
    # A body over max_request_size: TorchServe answers 413 from the headers alone.
    conn = http.client.HTTPConnection("127.0.0.1", server.ports["inference"], timeout=10)
    conn.putrequest("POST", f"/predictions/{server.model_name}")
    conn.putheader("Content-Type", "image/png")
    conn.putheader("Content-Length", str(64 * 2**20))
    conn.putheader("Expect", "100-continue")
    conn.endheaders()
    assert conn.getresponse().status == 413
    conn.close()
    status, body = fetch(url, png(runs["good"].test.images[0]))
    assert status == 200 and isinstance(body["label"], int)
    assert worker_pids(server) == pids  # the same worker process answered throughout


def test_a_concurrent_batch_with_one_bad_item_answers_every_good_one(runs, server):
    test = runs["good"].test
    expected = [fetch(server.predict_url, png(im))[1]["label"] for im in test.images[:7]]
    bodies = [png(im) for im in test.images[:7]]
    bodies.insert(3, b"\x89PNG\r\n\x1a\n but then garbage")
    with ThreadPoolExecutor(8) as pool:  # 8 at once: one worker batches them (batch 8, 100 ms)
        answers = list(pool.map(lambda b: fetch(server.predict_url, b), bodies))
    assert answers[3][0] == 400
    good = answers[:3] + answers[4:]
    assert [s for s, _ in good] == [200] * 7
    assert [b["label"] for _, b in good] == expected


def test_serve_stops_cleanly_on_sigterm_with_its_workers_and_logs_in_its_workdir(runs, server):
    """Last in the module: it stops the module's server."""
    # Ready meant ready: serve said "serving" only once a worker was READY, and it still answers.
    status, body = fetch(server.predict_url, png(runs["good"].test.images[0]))
    assert status == 200 and isinstance(body["label"], int)
    workers = [w["pid"] for entry in server.model_status() for w in entry["workers"]]
    assert server.stop() == 0
    assert "stopped" in server.proc.stderr.read()
    with pytest.raises(OSError):
        fetch(server.predict_url, png(runs["good"].test.images[0]), timeout=2)
    assert not any(psutil.pid_exists(pid) and psutil.Process(pid).status() != psutil.STATUS_ZOMBIE for pid in workers)
    assert (server.workdir / "logs").is_dir() and not (server.cwd / "logs").exists()
    # The worker voted with the archive's own copy of the k-NN vote (TorchServe put the model dir on its path).
    assert "vote from mnist_ct_knn" in (server.workdir / "logs" / "model_log.log").read_text()
