"""The step end to end: train on a tiny real data set, publish the model artifact, refuse bad input, resume."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import run_args, take

from mnist_ct.artifacts import Producer, RunPaths, read_manifest, read_verified, write_dataset
from mnist_ct.train_model.__main__ import main
from mnist_ct.train_model.training import STATE_FILE, epoch_checkpoint

SMALL = ["--epochs", "1", "--batch-size", "32", "--widths", "8,16,16", "--embedding-dim", "16", "--threads", "1"]


def load_model(path: Path) -> torch.jit.ScriptModule:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        return torch.jit.load(str(path))


def test_trains_and_publishes_a_model_that_keeps_the_serving_contract(run: RunPaths, digits):
    assert main([*run_args(run), *SMALL]) == 0
    manifest = read_verified(run.model, "model")
    assert set(manifest.files) == {"model.pt", "model.json"}
    assert manifest.inputs == {"dataset": read_manifest(run.dataset).digest}
    assert manifest.producer.step == "train_model" and manifest.meta["embedding_dim"] == 16

    card = json.loads((run.model / "model.json").read_text())
    assert card["embedding_dim"] == 16 and card["architecture"]["widths"] == [8, 16, 16]
    assert card["data"] == {
        "manifest_digest": manifest.inputs["dataset"],
        "dataset": "mnist-5k",
        "train_size": 270,
        "val_size": 30,
    }
    assert [e["epoch"] for e in card["epochs"]] == [1] and card["best_epoch"] == 1
    assert 0 <= card["epochs"][0]["val_nn1_accuracy"] <= 1 and card["config"]["seed"] == 0
    assert card["step"]["name"] == "train_model" and card["forward_flops_per_image"] > 0

    model = load_model(run.model / "model.pt")
    images, _ = digits
    x = torch.from_numpy(images[:7]).unsqueeze(1).float() / 255
    out = model(x)
    assert out.dtype == torch.float32 and out.shape == (7, 16)
    assert torch.allclose(out.norm(dim=1), torch.ones(7), atol=1e-5)
    assert (run.checkpoints / "epoch-001.pt").is_file()


def test_bf16_training_still_exports_a_float32_model(run: RunPaths):
    assert main([*run_args(run), *SMALL, "--precision", "bf16"]) == 0
    card = json.loads((run.model / "model.json").read_text())
    assert card["config"]["precision"] == "bf16"
    out = load_model(run.model / "model.pt")(torch.rand(3, 1, 28, 28))
    assert out.dtype == torch.float32 and torch.allclose(out.norm(dim=1), torch.ones(3), atol=1e-5)


def test_auto_precision_is_resolved_in_the_model_card(run: RunPaths):
    assert main([*run_args(run), *SMALL]) == 0
    card = json.loads((run.model / "model.json").read_text())
    assert card["config"]["precision"] in ("fp32", "bf16")


def test_a_few_epochs_learn_the_digits(run: RunPaths):
    assert main([*run_args(run), "--epochs", "6", "--batch-size", "32", "--threads", "2"]) == 0
    card = json.loads((run.model / "model.json").read_text())
    best = card["best"]
    assert best["val_nn1_accuracy"] >= 0.8, card["epochs"]  # 270 training digits; chance is 0.1
    assert card["epochs"][-1]["loss"] < card["epochs"][0]["loss"]


def test_same_seed_same_weights_other_seed_other_weights(tmp_path: Path, digits):
    images, labels = digits
    outputs = []
    for run_id, seed in [("a", "1"), ("b", "1"), ("c", "2")]:
        paths = RunPaths(run_id, tmp_path / "data", tmp_path / "model", tmp_path / "deploy")
        write_dataset(paths.dataset, {"train": take(images, labels, 20)}, Producer("preprocess", "0.1.0"), {})
        assert main([*run_args(paths), *SMALL, "--epochs", "2", "--seed", seed]) == 0
        outputs.append(load_model(paths.model / "model.pt")(torch.rand(4, 1, 28, 28, generator=torch.Generator())))
    assert torch.equal(outputs[0], outputs[1]) and not torch.equal(outputs[0], outputs[2])


def test_early_stopping_ends_training_and_keeps_the_best_epoch(run: RunPaths):
    # lr so small that nothing improves after the first epochs: patience 1 must stop well before 30.
    assert main([*run_args(run), *SMALL, "--epochs", "30", "--lr", "1e-7", "--patience", "1"]) == 0
    card = json.loads((run.model / "model.json").read_text())
    assert card["stopped_early"] and len(card["epochs"]) < 30
    scores = [e["val_nn1_accuracy"] for e in card["epochs"]]
    assert card["best"]["val_nn1_accuracy"] >= max(scores) - 0.2  # within the noise of 30 validation images
    assert scores.index(max(scores)) == len(scores) - 2  # stopped one epoch after the last rise


def one_line_error(capsys) -> str:
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1, err
    return err[0]


def test_missing_data_set_exits_3_with_one_line(tmp_path: Path, capsys):
    paths = RunPaths("none", tmp_path / "data", tmp_path / "model", tmp_path / "deploy")
    assert main([*run_args(paths), *SMALL]) == 3
    line = one_line_error(capsys)
    assert line.startswith("train_model: error: ") and "dataset" in line
    assert not paths.model.exists()


def test_missing_manifest_exits_3(run: RunPaths, capsys):
    (run.dataset / "manifest.json").unlink()
    assert main([*run_args(run), *SMALL]) == 3
    assert "manifest missing" in one_line_error(capsys)


def test_corrupted_images_exit_3_naming_the_file(run: RunPaths, capsys):
    path = run.dataset / "train" / "images.npy"
    data = bytearray(path.read_bytes())
    data[-5] ^= 0xFF
    path.write_bytes(bytes(data))
    assert main([*run_args(run), *SMALL]) == 3
    line = one_line_error(capsys)
    assert "train/images.npy" in line and "sha256" in line
    assert not run.model.exists()


def test_garbled_manifest_exits_3(run: RunPaths, capsys):
    (run.dataset / "manifest.json").write_text("{not json")
    assert main([*run_args(run), *SMALL]) == 3
    assert "not a valid manifest" in one_line_error(capsys)


@pytest.mark.parametrize("bad", [["--epochs", "0"], ["--val-fraction", "0.95"], ["--widths", "8,16"]])
def test_bad_options_exit_2(run: RunPaths, bad):
    try:
        code = main([*run_args(run), *SMALL, *bad])
    except SystemExit as e:  # argparse exits by itself on a malformed value
        code = e.code
    assert code == 2
    assert not run.model.exists()


def test_cuda_without_a_gpu_is_refused(run: RunPaths, capsys):
    if torch.cuda.is_available():
        pytest.skip("this machine has a GPU")
    assert main([*run_args(run), *SMALL, "--device", "cuda"]) == 2
    assert "no CUDA device" in one_line_error(capsys)


def test_resume_refuses_a_checkpoint_made_with_other_options(run: RunPaths, capsys):
    assert main([*run_args(run), *SMALL]) == 0
    capsys.readouterr()
    assert main([*run_args(run), *SMALL, "--lr", "0.1", "--resume"]) == 3
    assert "other options" in one_line_error(capsys)


def _subprocess_env() -> dict[str, str]:
    return {**os.environ, "PYTHONUNBUFFERED": "1"}


@pytest.mark.slow
def test_killed_run_resumes_to_the_same_weights_as_an_uninterrupted_one(tmp_path: Path, digits):
    images, labels = digits
    splits = {"train": take(images, labels, 80), "test": take(images, labels, 10, skip=80)}
    opts = ["--epochs", "3", "--batch-size", "32", "--widths", "16,32,32", "--threads", "1"]
    runs = {}
    for run_id in ("straight", "killed"):
        runs[run_id] = RunPaths(run_id, tmp_path / "data", tmp_path / "model", tmp_path / "deploy")
        write_dataset(runs[run_id].dataset, splits, Producer("preprocess", "0.1.0"), {"dataset": "mnist-5k"})
    straight, killed = runs["straight"], runs["killed"]
    assert main([*run_args(straight), *opts]) == 0

    proc = subprocess.Popen(
        [sys.executable, "-m", "mnist_ct.train_model", *run_args(killed), *opts],
        env=_subprocess_env(),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        deadline = time.monotonic() + 120
        while not epoch_checkpoint(killed.checkpoints, 1).is_file() or not (killed.checkpoints / STATE_FILE).is_file():
            assert proc.poll() is None, "training ended before its first checkpoint"
            assert time.monotonic() < deadline, "no checkpoint after 120 s"
            time.sleep(0.002)
        proc.send_signal(signal.SIGKILL)
    finally:
        proc.wait()
    assert proc.returncode == -signal.SIGKILL
    assert not killed.model.exists() and not epoch_checkpoint(killed.checkpoints, 3).exists(), "killed too late"

    assert main([*run_args(killed), *opts, "--resume"]) == 0
    a = json.loads((straight.model / "model.json").read_text())
    b = json.loads((killed.model / "model.json").read_text())
    assert b["resumed_from_epoch"] in (1, 2)
    timing = {"train_seconds", "val_seconds", "images_per_second"}
    strip = lambda card: [{k: v for k, v in e.items() if k not in timing} for e in card["epochs"]]  # noqa: E731
    assert strip(a) == strip(b) and a["best_epoch"] == b["best_epoch"]
    for epoch in (1, 2, 3):
        wa = torch.load(epoch_checkpoint(straight.checkpoints, epoch), weights_only=True)
        wb = torch.load(epoch_checkpoint(killed.checkpoints, epoch), weights_only=True)
        assert all(torch.equal(wa["net"][k], wb["net"][k]) for k in wa["net"]), f"epoch {epoch} differs"
    x = torch.rand(16, 1, 28, 28, generator=torch.Generator().manual_seed(0))
    assert torch.equal(load_model(straight.model / "model.pt")(x), load_model(killed.model / "model.pt")(x))
    assert np.isfinite(b["best"]["val_nn1_accuracy"])
