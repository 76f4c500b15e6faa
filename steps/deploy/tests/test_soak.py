"""Serving soak: 10,000 requests from 8 clients against a real TorchServe, one worker SIGKILLed midway.

The deployed configuration (2 workers, batches of up to 8 within 5 ms). Slow (~1 min): marked `slow`,
still run in CI. The same soak with its figures written down: bench/soak.py.
"""

from __future__ import annotations

import io

import numpy as np
import pytest
from fixture_run import cli_roots
from PIL import Image
from serving_soak import soak

from mnist_ct.deploy.__main__ import main
from mnist_ct.deploy.server import LocalServer

pytestmark = pytest.mark.slow


def png(pixels: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, "PNG")
    return buffer.getvalue()


@pytest.fixture(scope="module")
def soaked(runs, tmp_path_factory):
    root = tmp_path_factory.mktemp("soak")
    assert main(cli_roots(runs["good"], root / "deploy")) == 0
    images = [png(im) for im in runs["good"].test.images]
    with LocalServer(root / "deploy", workdir=root / "ts") as server:
        result = soak(server, images, total=10_000, clients=8)
        result["ready_at_end"] = server.ready_workers()
    print(
        f"\nsoak: {result['requests']} requests in {result['seconds']} s, {result['failed']} failed "
        f"({result['in_flight_at_kill']} in flight at the kill), recovery {result['recovery']}"
    )
    return result


def test_every_request_gets_an_answer_or_was_in_flight_on_the_killed_worker(soaked):
    assert soaked["requests"] == 10_000
    # TorchServe hands a worker one batch at a time: at most that batch can go down with it, and only
    # requests sent before TorchServe saw the worker die (before the first failure was answered).
    assert soaked["failed"] <= soaked["batch_size"], soaked
    assert soaked["failed_latest_start_after_kill_ms"] <= soaked["failed_first_answer_after_kill_ms"], soaked
    assert soaked["ok"] == 10_000 - soaked["failed"]


def test_requests_succeed_right_after_the_kill_and_the_worker_is_replaced(soaked):
    recovery = soaked["recovery"]
    assert recovery["first_success_sent_after_kill_ms"] is not None
    assert recovery["first_success_sent_after_kill_ms"] < 5_000  # the other worker carries on
    assert 0 < recovery["worker_ready_again_s"] < 60, soaked
    assert soaked["killed_worker"]["replacement_pid"] not in (None, soaked["killed_worker"]["pid"])
    assert soaked["ready_at_end"] == soaked["workers"]


def test_every_image_got_one_label_throughout_with_the_accuracy_analysis_reported(soaked, runs):
    run = runs["good"]
    assert soaked["images_with_one_label"] == soaked["images"] == len(run.test.labels)
    served = np.array([soaked["labels"][i] for i in range(len(run.test.labels))])
    assert np.mean(served == run.test.labels) == pytest.approx(run.accuracy, abs=1e-9)
