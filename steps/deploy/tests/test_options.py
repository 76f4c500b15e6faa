"""Options built in code are checked as the parsers check them (UsageError, exit 2 through the entry point)."""

from __future__ import annotations

from pathlib import Path

import pytest

from mnist_ct.artifacts import ArtifactError, UsageError
from mnist_ct.deploy.server import ServeOptions
from mnist_ct.deploy.serving_config import MAX_REQUEST_BYTES, ServingOptions, snapshot_of
from mnist_ct.deploy.step import Options


@pytest.mark.parametrize(
    "kwargs",
    [
        {"model_name": "a/b"},
        {"serving_root": "relative"},
        {"serving_root": "/caf\u00e9"},  # config.properties is read as ISO-8859-1
        {"max_pixels": 10},
        {"max_pixels": True},
        {"threads_per_worker": 0},
        {"threads_per_worker": 2.0},
        {"rollback": True, "force": True},
        {"rollback": True, "serving": ServingOptions()},
        {"rollback": True, "max_pixels": 1000},
        {"rollback": True, "threads_per_worker": 2},
    ],
)
def test_bad_input_options_built_in_code_are_refused(kwargs):
    with pytest.raises(UsageError):
        Options(**kwargs)


def test_options_default_to_what_the_parser_defaults_to():
    o = Options()
    assert (o.model_name, o.serving_root, o.torchserve, o.handler.max_pixels, o.handler.threads) == (
        "mnist",
        "/mnt/models",
        ServingOptions(workers=2, batch_size=8, max_batch_delay_ms=5),
        4096 * 4096,
        1,
    )
    assert Options(serving_root="/srv/models/").serving_root == "/srv/models"


@pytest.mark.parametrize(
    "kwargs",
    [
        {"workers": 0},
        {"workers": 65},
        {"batch_size": 0},
        {"batch_size": 1025},
        {"max_batch_delay_ms": -1},
        {"max_batch_delay_ms": 60_001},
        {"response_timeout_s": 0},
        {"max_request_bytes": 0},
        {"max_request_bytes": MAX_REQUEST_BYTES + 1},
        {"max_request_bytes": 2**31},  # TorchServe's Integer.parseInt would fail on it
        {"workers": True},
        {"workers": "2"},
    ],
)
def test_bad_input_torchserve_settings_outside_what_torchserve_takes(kwargs):
    with pytest.raises(UsageError):
        ServingOptions(**kwargs)


def test_job_queue_holds_every_workers_full_batch():
    assert ServingOptions().job_queue_size == 1000
    assert ServingOptions(workers=64, batch_size=1024).job_queue_size == 2 * 64 * 1024


def test_bad_input_recorded_torchserve_settings_name_their_source():
    with pytest.raises(ArtifactError, match="history/v1/mnist.mar: unusable TorchServe settings"):
        ServingOptions.from_json({"workers": "many"}, "history/v1/mnist.mar")


def test_bad_input_config_with_two_models_in_its_snapshot():
    entry = '{"1.0": {"minWorkers": 1, "batchSize": 1, "maxBatchDelay": 5, "responseTimeout": 120}}'
    snapshot = f'{{"models": {{"a": {entry}, "b": {entry}}}}}'
    with pytest.raises(ArtifactError, match="model_snapshot lists 2 models, expected one"):
        snapshot_of({"model_snapshot": snapshot}, "config.properties")


@pytest.mark.parametrize(
    "kwargs",
    [
        {"port": 70000},
        {"port": 9000, "management_port": 9000},
        {"ready_timeout_s": 0},
        {"ready_timeout_s": 3601},
        {"overrides": {"workers": 0}},
        {"overrides": {"threads": 2}},
    ],
)
def test_bad_input_serve_options_built_in_code_are_refused(kwargs):
    with pytest.raises(UsageError):
        ServeOptions(Path("/deploy-model"), **kwargs)


def test_serve_ports_of_0_may_repeat():
    ServeOptions(Path("/deploy-model"), port=0, management_port=0, metrics_port=0)
