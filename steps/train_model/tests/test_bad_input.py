"""Bad input, as a hostile user would give it: every option, every file the step reads, every folder it writes.

Each case exits with its code and one stderr line naming the option or path, and publishes nothing.
"""

from __future__ import annotations

import io
import math
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import SMALL, one_line_error

from mnist_ct.artifacts import (
    EXIT_BAD_INPUT,
    EXIT_ENVIRONMENT,
    EXIT_USAGE,
    Producer,
    RunPaths,
    Split,
    UsageError,
    write_dataset,
)
from mnist_ct.artifacts.testing import publish_run, run_args, take, tmpfs_volume
from mnist_ct.train_model.__main__ import main
from mnist_ct.train_model.checkpoints import STATE_FILE, epoch_checkpoint, save_checkpoint
from mnist_ct.train_model.step import Options
from mnist_ct.train_model.training import TrainConfig


def nothing_published(paths: RunPaths) -> bool:
    """No model artifact and no staging of one."""
    run = paths.model_root / "runs" / paths.run_id
    return not (run / "model").exists() and not list(run.glob(".model.*"))


BAD_OPTIONS = [
    ("--epochs", "0"),
    ("--epochs", "10001"),
    ("--epochs", "-1"),
    ("--epochs", "2.5"),
    ("--batch-size", "1"),
    ("--batch-size", "65537"),
    ("--lr", "0"),
    ("--lr", "-0.1"),
    ("--lr", "nan"),
    ("--lr", "inf"),
    ("--lr", "11"),
    ("--lr", "fast"),
    ("--weight-decay", "-1e-4"),
    ("--weight-decay", "nan"),
    ("--weight-decay", "inf"),
    ("--embedding-dim", "1"),
    ("--embedding-dim", "4097"),
    ("--widths", "8,16"),
    ("--widths", "8,16,16,16"),
    ("--widths", "0,16,16"),
    ("--widths", "8,16,1025"),
    ("--widths", "a,b,c"),
    ("--widths", ""),
    ("--blocks", "1,1,17"),
    ("--blocks", "1,-1,1"),
    ("--margin", "-0.1"),
    ("--margin", "1.6"),
    ("--margin", "nan"),
    ("--scale", "0"),
    ("--scale", "-32"),
    ("--scale", "inf"),
    ("--label-smoothing", "1"),
    ("--label-smoothing", "-0.1"),
    ("--val-fraction", "0.9"),
    ("--val-fraction", "-0.1"),
    ("--val-fraction", "nan"),
    ("--patience", "-1"),
    ("--patience", "10001"),
    ("--seed", "-1"),
    ("--seed", str(2**32)),
    ("--seed", "1e3"),
    ("--threads", "-1"),
    ("--threads", "1025"),
    ("--device", "tpu"),
    ("--precision", "fp16"),
]


@pytest.mark.parametrize(("option", "value"), BAD_OPTIONS, ids=[f"{o}={v}" for o, v in BAD_OPTIONS])
def test_bad_input_an_option_out_of_range_exits_2_at_parse_time(tmp_path: Path, capsys, option: str, value: str):
    paths = RunPaths("t", tmp_path / "data", tmp_path / "model", tmp_path / "deploy")
    assert main([*run_args(paths), *SMALL, f"{option}={value}"]) == EXIT_USAGE
    last = capsys.readouterr().err.strip().splitlines()[-1]  # argparse: the usage, then one error line
    assert last.startswith("python -m mnist_ct.train_model: error: argument ") and option in last, last
    assert not (tmp_path / "model").exists() and not (tmp_path / "data").exists()  # nothing created


@pytest.mark.parametrize(
    ("option", "value"),
    [("--epochs", "10000"), ("--batch-size", "65536"), ("--lr", "10"), ("--seed", str(2**32 - 1)), ("--margin", "0")],
)
def test_an_option_at_its_limit_is_accepted(option: str, value: str):
    from mnist_ct.train_model.__main__ import build_parser, options_from_args

    args = build_parser().parse_args(["--run-id", "t", option, value])
    assert options_from_args(args).config.to_json()[option[2:].replace("-", "_")] == pytest.approx(float(value))


def test_bad_input_patience_without_a_validation_part_exits_2_before_any_work(tmp_path: Path, capsys):
    paths = RunPaths("t", tmp_path / "data", tmp_path / "model", tmp_path / "deploy")
    assert main([*run_args(paths), *SMALL, "--patience", "2", "--val-fraction", "0"]) == EXIT_USAGE
    assert "--val-fraction > 0" in one_line_error(capsys)
    assert not (tmp_path / "model").exists()


@pytest.mark.parametrize(
    "build",
    [
        lambda: Options(TrainConfig(patience=1, val_fraction=0.0)),
        lambda: Options(TrainConfig(widths=(8, 16))),  # type: ignore[arg-type]
        lambda: Options(TrainConfig(precision="fp16")),
        lambda: Options(device="tpu"),
        lambda: Options(threads=-1),
    ],
)
def test_bad_input_options_built_in_code_are_checked_too(build):
    with pytest.raises(UsageError):
        build()


def test_bad_input_a_model_root_that_is_a_file_exits_2(tmp_path: Path, capsys):
    (tmp_path / "model").write_text("not a folder")
    argv = ["--run-id", "t", "--data-root", str(tmp_path / "data"), "--model-root", str(tmp_path / "model")]
    assert main([*argv, *SMALL]) == EXIT_USAGE
    assert "is a file, not a folder" in capsys.readouterr().err


def test_bad_input_cuda_without_a_gpu_exits_2_before_any_work(published_run: RunPaths, capsys):
    if torch.cuda.is_available():
        pytest.skip("this machine has a GPU")
    assert main([*run_args(published_run), *SMALL, "--device", "cuda"]) == EXIT_USAGE
    assert "no CUDA device" in one_line_error(capsys)
    assert not published_run.model_run.exists()  # not even the checkpoint folder


def test_bad_input_a_missing_data_set_exits_3(tmp_path: Path, capsys):
    paths = RunPaths("none", tmp_path / "data", tmp_path / "model", tmp_path / "deploy")
    assert main([*run_args(paths), *SMALL]) == EXIT_BAD_INPUT
    assert str(paths.dataset) in one_line_error(capsys)
    assert not paths.model_run.exists()


def test_bad_input_a_data_set_without_its_manifest_exits_3(published_run: RunPaths, capsys):
    (published_run.dataset / "manifest.json").unlink()
    assert main([*run_args(published_run), *SMALL]) == EXIT_BAD_INPUT
    assert "manifest missing" in one_line_error(capsys)
    assert nothing_published(published_run)


def test_bad_input_a_garbled_manifest_exits_3(published_run: RunPaths, capsys):
    (published_run.dataset / "manifest.json").write_text("{not json")
    assert main([*run_args(published_run), *SMALL]) == EXIT_BAD_INPUT
    assert "not a valid manifest" in one_line_error(capsys)


@pytest.mark.parametrize("damage", ["flip", "truncate"])
def test_bad_input_corrupted_or_truncated_images_exit_3_naming_the_file(published_run: RunPaths, capsys, damage):
    path = published_run.dataset / "train" / "images.npy"
    data = bytearray(path.read_bytes())
    if damage == "flip":
        data[-5] ^= 0xFF
    else:
        del data[len(data) // 2 :]
    path.write_bytes(bytes(data))
    assert main([*run_args(published_run), *SMALL]) == EXIT_BAD_INPUT
    assert f"{path}:" in one_line_error(capsys)
    assert nothing_published(published_run)


def test_bad_input_a_folder_where_the_images_should_be_exits_3(published_run: RunPaths, capsys):
    path = published_run.dataset / "train" / "images.npy"
    path.unlink()
    path.mkdir()
    assert main([*run_args(published_run), *SMALL]) == EXIT_BAD_INPUT
    assert str(path) in one_line_error(capsys)


@pytest.mark.parametrize("per_class", [0, 1])
def test_bad_input_a_train_split_too_small_to_train_on_exits_3(tmp_path: Path, digits: Split, capsys, per_class):
    paths = RunPaths("t", tmp_path / "data", tmp_path / "model", tmp_path / "deploy")
    one = take(digits, 1)
    train = Split(one.images[:per_class], one.labels[:per_class])  # no image, or a single one
    write_dataset(paths.dataset, {"train": train}, Producer("preprocess", "0.1.0"), {})
    assert main([*run_args(paths), *SMALL]) == EXIT_BAD_INPUT
    assert f"{paths.dataset / 'train'}: {per_class} images" in one_line_error(capsys)
    assert nothing_published(paths)


def test_bad_input_a_model_folder_that_is_a_symlink_out_of_the_volume_exits_3(
    published_run: RunPaths, tmp_path, capsys
):
    outside = tmp_path / "outside"
    outside.mkdir()
    published_run.model_run.mkdir(parents=True)
    (published_run.model_run / "model").symlink_to(outside)
    assert main([*run_args(published_run), *SMALL]) == EXIT_BAD_INPUT
    assert "leads out of its volume" in one_line_error(capsys)
    assert list(outside.iterdir()) == [] and not published_run.checkpoints.exists()


def test_bad_input_a_checkpoint_folder_that_is_a_symlink_out_of_the_volume_exits_3(
    published_run: RunPaths, tmp_path: Path, capsys
):
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "epoch-001.pt").write_bytes(b"someone else's file")  # without --resume it would be discarded
    published_run.model_run.mkdir(parents=True)
    published_run.checkpoints.symlink_to(outside)
    assert main([*run_args(published_run), *SMALL]) == EXIT_BAD_INPUT
    line = one_line_error(capsys)
    assert f"{published_run.model_run / 'checkpoints'}: leads out of its volume" in line
    assert [p.name for p in outside.iterdir()] == ["epoch-001.pt"]
    assert nothing_published(published_run)


@pytest.mark.parametrize("folder", ["checkpoints", "model"])
def test_bad_input_a_file_where_a_folder_it_writes_belongs_exits_3(published_run: RunPaths, capsys, folder):
    published_run.model_run.mkdir(parents=True)
    (published_run.model_run / folder).write_text("someone's notes")
    assert main([*run_args(published_run), *SMALL]) == EXIT_BAD_INPUT
    assert f"{published_run.model_run / folder}: is a file where the" in one_line_error(capsys)
    assert (published_run.model_run / folder).read_text() == "someone's notes"
    assert sorted(p.name for p in published_run.model_run.iterdir()) == [folder]  # nothing else written


@pytest.mark.parametrize(
    ("extra", "named"),
    [
        (["--lr", "0.1"], "--lr 0.1 (checkpoint: 0.006)"),
        (["--epochs", "2", "--seed", "3"], "--epochs 2 (checkpoint: 1), --seed 3 (checkpoint: 0)"),
        (["--widths", "8,16,32"], "--widths 8,16,32 (checkpoint: 8,16,16)"),
        (["--no-augment", "--hflip"], "--hflip True (checkpoint: False), --no-augment True (checkpoint: False)"),
    ],
)
def test_bad_input_resume_with_other_options_exits_3_naming_each(trained_run: RunPaths, capsys, extra, named):
    before = (trained_run.model / "model.pt").read_bytes()
    assert main([*run_args(trained_run), *SMALL, *extra, "--resume"]) == EXIT_BAD_INPUT
    line = one_line_error(capsys)
    assert f"{trained_run.checkpoints / STATE_FILE}: the checkpoint was made with other options: {named}" in line
    assert (trained_run.model / "model.pt").read_bytes() == before  # the earlier model stays as it was


def test_bad_input_resume_on_other_data_exits_3(trained_run: RunPaths, digits: Split, capsys):
    write_dataset(trained_run.dataset, {"train": take(digits, 20, skip=100)}, Producer("preprocess", "0.1.0"), {})
    assert main([*run_args(trained_run), *SMALL, "--resume"]) == EXIT_BAD_INPUT
    assert "made on other data" in one_line_error(capsys)


def _torch_bytes(obj: object) -> bytes:
    buffer = io.BytesIO()
    torch.save(obj, buffer)
    return buffer.getvalue()


def _damage(checkpoints: Path, how: str) -> Path:
    """Damage one checkpoint file the way `how` says; the path that must be named."""
    state, weights = checkpoints / STATE_FILE, epoch_checkpoint(checkpoints, 1)
    if how == "state truncated":
        state.write_bytes(state.read_bytes()[:1000])
        return state
    if how == "state is text":
        state.write_text("hello")
        return state
    if how == "state is empty":
        state.write_bytes(b"")
        return state
    if how == "state holds a tensor":
        state.write_bytes(_torch_bytes(torch.zeros(3)))
        return state
    if how == "state without fingerprint":
        state.write_bytes(_torch_bytes({"epoch": 1}))
        return state
    if how == "state names epoch 0":
        saved = torch.load(state, weights_only=True)
        save_checkpoint(state, {**saved, "epoch": 0})
        return state
    if how == "state without history":
        saved = torch.load(state, weights_only=True)
        save_checkpoint(state, {k: v for k, v in saved.items() if k != "history"})
        return state
    if how == "weights missing":
        weights.unlink()
        return weights
    if how == "weights truncated":
        weights.write_bytes(weights.read_bytes()[:-100])
        return weights
    if how == "weights of another network":
        saved = torch.load(weights, weights_only=True)
        save_checkpoint(weights, {**saved, "net": {k: v[:1] if v.ndim else v for k, v in saved["net"].items()}})
        return weights
    raise AssertionError(how)


DAMAGES = [
    "state truncated",
    "state is text",
    "state is empty",
    "state holds a tensor",
    "state without fingerprint",
    "state names epoch 0",
    "state without history",
    "weights missing",
    "weights truncated",
    "weights of another network",
]


@pytest.mark.parametrize("how", DAMAGES)
def test_bad_input_a_damaged_checkpoint_on_resume_exits_3_naming_it(trained_run: RunPaths, capsys, how):
    path = _damage(trained_run.checkpoints, how)
    shutil.rmtree(trained_run.model)
    assert main([*run_args(trained_run), *SMALL, "--resume"]) == EXIT_BAD_INPUT
    line = one_line_error(capsys)
    assert f"{path}:" in line and "rerun without --resume" in line, line
    assert nothing_published(trained_run)


def test_bad_input_a_folder_where_the_checkpoint_state_should_be_exits_3(trained_run: RunPaths, capsys):
    state = trained_run.checkpoints / STATE_FILE
    state.unlink()
    state.mkdir()
    assert main([*run_args(trained_run), *SMALL, "--resume"]) == EXIT_BAD_INPUT
    assert f"{state}: Is a directory" in one_line_error(capsys)


def test_bad_input_training_that_diverges_exits_3_and_publishes_nothing(published_run: RunPaths, capsys):
    # A logit scale near float32's largest value overflows the loss in the first epoch.
    assert main([*run_args(published_run), *SMALL, "--scale", "1e38"]) == EXIT_BAD_INPUT
    line = one_line_error(capsys)
    assert "training diverged" in line and "--scale (1e+38)" in line
    assert nothing_published(published_run) and not epoch_checkpoint(published_run.checkpoints, 1).exists()


def _volume_tree(root: Path) -> list[str]:
    return sorted(str(p.relative_to(root)) for p in root.rglob("*"))


def test_bad_input_a_full_model_volume_exits_5_naming_the_checkpoint(tmp_path: Path, full_volume: Path, capsys):
    paths = publish_run(tmp_path)
    paths = RunPaths("t", paths.data_root, full_volume, paths.deploy_root)
    assert main([*run_args(paths), *SMALL]) == EXIT_ENVIRONMENT
    line = one_line_error(capsys)
    assert f"{paths.checkpoints}" in line and "No space left on device; the disk is full" in line, line
    assert nothing_published(paths)
    # No checkpoint at all, and no half-written one where --resume would look.
    assert not paths.checkpoints.exists() or _volume_tree(paths.checkpoints) == []


def test_bad_input_a_disk_that_fills_while_publishing_exits_5_and_keeps_the_checkpoints(
    trained_run: RunPaths, tmp_path: Path, capsys
):
    # A volume with room for this run's checkpoints but not for model.pt as well.
    checkpoint_pages = sum(math.ceil(p.stat().st_size / 4096) for p in trained_run.checkpoints.iterdir())
    with tmpfs_volume(tmp_path / "small", size_kib=4 * checkpoint_pages + 16) as small:
        paths = RunPaths("t", trained_run.data_root, small, trained_run.deploy_root)
        assert main([*run_args(paths), *SMALL]) == EXIT_ENVIRONMENT
        line = one_line_error(capsys)
        assert f"{paths.model}: No space left on device; the disk is full" in line, line
        assert nothing_published(paths)
        assert _volume_tree(paths.model_run) == ["checkpoints", "checkpoints/epoch-001.pt", "checkpoints/state.pt"]
        assert torch.load(paths.checkpoints / STATE_FILE, weights_only=True)["epoch"] == 1  # finished, whole


def test_bad_input_a_read_only_model_volume_exits_5(tmp_path: Path, read_only_volume: Path, capsys):
    paths = publish_run(tmp_path)
    paths = RunPaths("t", paths.data_root, read_only_volume, paths.deploy_root)
    assert main([*run_args(paths), *SMALL]) == EXIT_ENVIRONMENT
    line = one_line_error(capsys)
    assert str(read_only_volume) in line and "Read-only file system" in line, line


def test_state_file_loads_as_plain_tensors_only(trained_run: RunPaths):
    # weights_only=True: the checkpoint files hold tensors and plain containers, nothing else is unpickled.
    state = torch.load(trained_run.checkpoints / STATE_FILE, weights_only=True)
    assert set(state) == {"epoch", "fingerprint", "optimizer", "history"}
    assert isinstance(np.asarray(state["history"][0]["loss"]).item(), float)
