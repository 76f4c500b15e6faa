"""The step end to end: train on a tiny real data set, publish the model artifact, stop early, resume."""

from __future__ import annotations

import json
import math
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import SMALL, load_model, one_line_error

from mnist_ct.artifacts import Producer, RunPaths, Split, read_manifest, read_verified, write_dataset
from mnist_ct.artifacts.testing import assert_readme_documents, run_args, take
from mnist_ct.train_model.__main__ import build_parser, main
from mnist_ct.train_model.checkpoints import STATE_FILE, epoch_checkpoint
from mnist_ct.train_model.training import TrainConfig, Trainer, to_input

README = Path(__file__).parents[1] / "README.md"


def test_the_readme_documents_every_option_of_the_parser():
    assert_readme_documents(build_parser(), README)


def test_trains_and_publishes_a_model_that_keeps_the_serving_contract(trained_run: RunPaths, digits: Split):
    manifest = read_verified(trained_run.model, "model")
    assert set(manifest.files) == {"model.pt", "model.json"}
    assert manifest.inputs == {"dataset": read_manifest(trained_run.dataset).digest}
    assert manifest.producer.step == "train_model" and manifest.meta["embedding_dim"] == 16

    card = json.loads((trained_run.model / "model.json").read_text())
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
    assert card["config"]["precision"] in ("fp32", "bf16")  # auto is resolved
    assert card["environment"]["threads"] == 1

    model = load_model(trained_run.model / "model.pt")
    x = torch.from_numpy(digits.images[:7]).unsqueeze(1).float() / 255
    out = model(x)
    assert out.dtype == torch.float32 and out.shape == (7, 16)
    assert torch.allclose(out.norm(dim=1), torch.ones(7), atol=1e-5)
    assert epoch_checkpoint(trained_run.checkpoints, 1).is_file() and (trained_run.checkpoints / STATE_FILE).is_file()


def test_by_default_nothing_is_held_out_and_the_last_epoch_is_exported(published_run: RunPaths):
    small = [a for a in SMALL if a not in ("--val-fraction", "0.1")] + ["--epochs", "2"]
    assert main([*run_args(published_run), *small]) == 0
    card = json.loads((published_run.model / "model.json").read_text())
    assert card["data"]["train_size"] == 300 and card["data"]["val_size"] == 0 and card["best_epoch"] == 2
    assert math.isnan(card["best"]["val_nn1_accuracy"]) and card["epochs"][0]["val_seconds"] < 0.01
    assert (
        card["training_flops_per_image"] == 3 * card["forward_flops_per_image"] - 2 * 9 * 8 * 28 * 28 + 3 * 2 * 16 * 10
    )


def test_batchnorm_statistics_are_those_of_the_clean_training_images_under_the_final_weights(
    tmp_path: Path, digits: Split
):
    images, labels = digits.images[:101], digits.labels[:101]
    config = TrainConfig(epochs=2, batch_size=32, widths=(4, 4, 4), embedding_dim=8)
    net = Trainer(config, torch.device("cpu"), tmp_path, "x").fit(images, labels).net
    x = to_input(torch.from_numpy(np.array(images)), torch.device("cpu"))
    conv, pool, bn = net.features[0], net.features[1], net.features[2]
    assert isinstance(bn, torch.nn.BatchNorm2d) and not net.training
    with torch.no_grad():
        act = pool(conv((x - net.mean) / net.std))
    torch.testing.assert_close(bn.running_mean, act.mean((0, 2, 3)), rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(bn.running_var, act.var((0, 2, 3)), rtol=1e-3, atol=1e-5)


def test_bf16_training_still_exports_a_float32_model(published_run: RunPaths):
    assert main([*run_args(published_run), *SMALL, "--precision", "bf16"]) == 0
    card = json.loads((published_run.model / "model.json").read_text())
    assert card["config"]["precision"] == "bf16"
    out = load_model(published_run.model / "model.pt")(torch.rand(3, 1, 28, 28))
    assert out.dtype == torch.float32 and torch.allclose(out.norm(dim=1), torch.ones(3), atol=1e-5)


def test_a_few_epochs_learn_the_digits(published_run: RunPaths):
    options = ["--epochs", "6", "--batch-size", "32", "--widths", "16,32,32", "--threads", "2", "--val-fraction", "0.1"]
    assert main([*run_args(published_run), *options]) == 0
    card = json.loads((published_run.model / "model.json").read_text())
    assert card["best"]["val_nn1_accuracy"] >= 0.8, card["epochs"]  # 270 training digits; chance is 0.1
    assert card["epochs"][-1]["loss"] < card["epochs"][0]["loss"]


def test_same_seed_same_weights_other_seed_other_weights(tmp_path: Path, digits: Split):
    outputs = []
    x = torch.rand(4, 1, 28, 28, generator=torch.Generator().manual_seed(0))
    for run_id, seed in [("a", "1"), ("b", "1"), ("c", "2")]:
        paths = RunPaths(run_id, tmp_path / "data", tmp_path / "model", tmp_path / "deploy")
        write_dataset(paths.dataset, {"train": take(digits, 20)}, Producer("preprocess", "0.1.0"), {})
        assert main([*run_args(paths), *SMALL, "--epochs", "2", "--seed", seed]) == 0
        outputs.append(load_model(paths.model / "model.pt")(x))
    assert torch.equal(outputs[0], outputs[1]) and not torch.equal(outputs[0], outputs[2])


def test_early_stopping_ends_training_and_keeps_the_best_epoch(published_run: RunPaths):
    # lr so small that nothing improves after the first epochs: patience 1 must stop well before 30.
    assert main([*run_args(published_run), *SMALL, "--epochs", "30", "--lr", "1e-7", "--patience", "1"]) == 0
    card = json.loads((published_run.model / "model.json").read_text())
    assert card["stopped_early"] and len(card["epochs"]) < 30
    scores = [e["val_nn1_accuracy"] for e in card["epochs"]]
    assert card["best"]["val_nn1_accuracy"] >= max(scores) - 0.2  # within the noise of 30 validation images
    assert scores.index(max(scores)) == len(scores) - 2  # stopped one epoch after the last rise


def test_without_resume_the_old_checkpoints_are_discarded(trained_run: RunPaths):
    stale = epoch_checkpoint(trained_run.checkpoints, 7)
    stale.write_bytes(b"from an earlier attempt")
    assert main([*run_args(trained_run), *SMALL]) == 0
    assert sorted(p.name for p in trained_run.checkpoints.iterdir()) == ["epoch-001.pt", STATE_FILE]


def test_resume_of_a_finished_run_ignores_half_written_checkpoints(trained_run: RunPaths):
    x = torch.rand(5, 1, 28, 28, generator=torch.Generator().manual_seed(0))
    before = load_model(trained_run.model / "model.pt")(x)
    # What a write killed halfway leaves: atomic_write_bytes's temporaries, never the files resume reads.
    for name in (".epoch-002.pt.tmp-0123456789ab", ".state.pt.tmp-0123456789ab"):
        (trained_run.checkpoints / name).write_bytes(b"half of a checkpoint")
    assert main([*run_args(trained_run), *SMALL, "--resume"]) == 0
    card = json.loads((trained_run.model / "model.json").read_text())
    assert card["resumed_from_epoch"] == 1 and [e["epoch"] for e in card["epochs"]] == [1]
    after = load_model(trained_run.model / "model.pt")(x)
    assert torch.allclose(after, before, atol=1e-6)  # the same weights (the JIT may round differently)
    assert sorted(p.name for p in trained_run.checkpoints.iterdir()) == ["epoch-001.pt", STATE_FILE]


def test_resume_without_a_checkpoint_starts_from_epoch_1(published_run: RunPaths):
    assert main([*run_args(published_run), *SMALL, "--resume"]) == 0
    card = json.loads((published_run.model / "model.json").read_text())
    assert card["resumed_from_epoch"] == 0 and len(card["epochs"]) == 1


def test_threads_0_means_every_core_this_process_may_use(published_run: RunPaths):
    args = SMALL[: SMALL.index("--threads")]
    assert main([*run_args(published_run), *args, "--threads", "0"]) == 0
    card = json.loads((published_run.model / "model.json").read_text())
    assert card["environment"]["threads"] == len(os.sched_getaffinity(0))


def _subprocess_env() -> dict[str, str]:
    return {**os.environ, "PYTHONUNBUFFERED": "1"}


def _wait_for_first_checkpoint(proc: subprocess.Popen[bytes], paths: RunPaths) -> None:
    deadline = time.monotonic() + 120
    while not epoch_checkpoint(paths.checkpoints, 1).is_file() or not (paths.checkpoints / STATE_FILE).is_file():
        assert proc.poll() is None, "training ended before its first checkpoint"
        assert time.monotonic() < deadline, "no checkpoint after 120 s"
        time.sleep(0.002)


@pytest.mark.slow
def test_killed_run_resumes_to_the_same_weights_as_an_uninterrupted_one(tmp_path: Path, digits: Split):
    splits = {"train": take(digits, 80), "test": take(digits, 10, skip=80)}
    opts = ["--epochs", "3", "--batch-size", "32", "--widths", "16,32,32", "--threads", "1", "--val-fraction", "0.1"]
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
        _wait_for_first_checkpoint(proc, killed)
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


def test_sigterm_stops_training_with_exit_143_and_publishes_nothing(
    published_run: RunPaths, monkeypatch: pytest.MonkeyPatch, capsys
):
    checkpoint = Trainer._checkpoint

    def checkpoint_then_sigterm(self: Trainer, *args):
        weights = checkpoint(self, *args)
        os.kill(os.getpid(), signal.SIGTERM)  # a pod being stopped, right after the first checkpoint is handed over
        return weights

    monkeypatch.setattr(Trainer, "_checkpoint", checkpoint_then_sigterm)
    assert main([*run_args(published_run), *SMALL, "--epochs", "3"]) == 143
    line = one_line_error(capsys)
    assert line == "train_model: error: terminated (SIGTERM); nothing half-written was left"
    assert not published_run.model.exists() and not list(published_run.model_run.glob(".model.*"))
    # The finished checkpoint stays for --resume, and nothing half-written beside it.
    assert sorted(p.name for p in published_run.checkpoints.iterdir()) == ["epoch-001.pt", STATE_FILE]
