"""Bad input, as a hostile user would give it: every option, the model and data set the step reads, the folder
it writes. Each case exits with its code and one stderr line naming the option or file, and publishes nothing."""

from __future__ import annotations

import contextlib
import io
import os
import pickle
import subprocess
import zipfile
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import Embedder, nothing_published, one_line_error, publish_model, torchscript_bytes
from torch import nn

from mnist_ct.artifacts import (
    EXIT_BAD_INPUT,
    EXIT_ENVIRONMENT,
    EXIT_USAGE,
    Producer,
    RunPaths,
    Split,
    UsageError,
    publish,
    write_dataset,
)
from mnist_ct.artifacts.testing import mnist5k, publish_run, run_args, take, tmpfs_volume
from mnist_ct.embedding.__main__ import main
from mnist_ct.embedding.step import Options

BAD_OPTIONS = [
    ("--batch-size", "0"),
    ("--batch-size", "-1"),
    ("--batch-size", "65537"),
    ("--batch-size", "1.5"),
    ("--batch-size", "many"),
    ("--threads", "-1"),
    ("--threads", "1025"),
    ("--threads", "nan"),
]


@pytest.mark.parametrize(("option", "value"), BAD_OPTIONS, ids=[f"{o}={v}" for o, v in BAD_OPTIONS])
def test_bad_input_an_option_out_of_range_exits_2_at_parse_time(tmp_path: Path, capsys, option: str, value: str):
    paths = RunPaths("t", tmp_path / "data", tmp_path / "model", tmp_path / "deploy")
    assert main([*run_args(paths), f"{option}={value}"]) == EXIT_USAGE
    last = capsys.readouterr().err.strip().splitlines()[-1]  # argparse: the usage, then one error line
    assert last.startswith("python -m mnist_ct.embedding: error: argument ") and option in last, last
    assert list(tmp_path.iterdir()) == []  # nothing created


@pytest.mark.parametrize("values", [{"batch_size": 0}, {"batch_size": 65537}, {"threads": -1}])
def test_bad_input_options_built_in_code_are_checked_too(values):
    with pytest.raises(UsageError):
        Options(**values)


def test_the_largest_batch_is_accepted(published_run: RunPaths):
    publish_model(published_run, torchscript_bytes(Embedder(8)))
    assert main([*run_args(published_run), "--batch-size", "65536"]) == 0


def test_bad_input_a_model_root_that_is_a_file_exits_2(tmp_path: Path, capsys):
    (tmp_path / "model").write_text("not a folder")
    assert main(["--run-id", "t", "--model-root", str(tmp_path / "model")]) == EXIT_USAGE
    assert "is a file, not a folder" in capsys.readouterr().err


class Reduce:
    """Unpickling this creates a marker file: what a malicious model.pt could do instead."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def test_bad_input_a_pickle_is_refused_without_being_unpickled(published_run: RunPaths, tmp_path: Path, capsys):
    marker = tmp_path / "unpickled"
    publish_model(published_run, pickle.dumps(Reduce(marker)))
    assert main(run_args(published_run)) == EXIT_BAD_INPUT
    assert "not a TorchScript archive" in one_line_error(capsys)
    assert not marker.exists() and nothing_published(published_run)
    pickle.loads(pickle.dumps(Reduce(marker)))  # the marker works: unpickling does create it
    assert marker.exists()


def test_bad_input_a_torch_save_zip_with_a_pickle_inside_is_refused_unopened(
    published_run: RunPaths, tmp_path: Path, capsys
):
    marker = tmp_path / "unpickled"
    buffer = io.BytesIO()
    torch.save({"weights": torch.zeros(2), "payload": Reduce(marker)}, buffer)
    publish_model(published_run, buffer.getvalue())
    assert main(run_args(published_run)) == EXIT_BAD_INPUT
    assert "not a TorchScript archive" in one_line_error(capsys)
    assert not marker.exists() and nothing_published(published_run)


def test_bad_input_a_state_dict_is_refused(published_run: RunPaths, capsys):
    buffer = io.BytesIO()
    torch.save(Embedder(8).state_dict(), buffer)
    publish_model(published_run, buffer.getvalue())
    assert main(run_args(published_run)) == EXIT_BAD_INPUT
    assert "not a TorchScript archive" in one_line_error(capsys)
    assert nothing_published(published_run)


@pytest.mark.parametrize("data", [b"", b"hello", "truncated"])
def test_bad_input_an_empty_garbage_or_truncated_model_is_refused(published_run: RunPaths, capsys, data):
    if data == "truncated":
        data = torchscript_bytes(Embedder(8))[:-200]  # the zip directory is at the end
    publish_model(published_run, data)
    assert main(run_args(published_run)) == EXIT_BAD_INPUT
    assert f"{published_run.model / 'model.pt'}: not a TorchScript archive" in one_line_error(capsys)
    assert nothing_published(published_run)


def test_bad_input_a_torchscript_lookalike_holding_a_python_pickle_is_refused_unpickled(
    published_run: RunPaths, tmp_path: Path, capsys
):
    # The layout of a TorchScript archive, but data.pkl is a Python pickle with a payload: torch.jit.load's
    # own unpickler only builds TorchScript objects, so it must fail without running the payload.
    marker = tmp_path / "unpickled"
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as z:
        z.writestr("model/data.pkl", pickle.dumps(Reduce(marker), protocol=2))
        z.writestr("model/constants.pkl", pickle.dumps((), protocol=2))
        z.writestr("model/code/__torch__/m.py", "class M(Module):\n  pass\n")
        z.writestr("model/version", "3\n")
    publish_model(published_run, buffer.getvalue())
    assert main(run_args(published_run)) == EXIT_BAD_INPUT
    assert "torch.jit.load failed" in one_line_error(capsys)
    assert not marker.exists()


class Unnormalised(nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.flatten(x, 1)[:, :8] * 3 + 1


class NaNs(nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.full((x.shape[0], 8), float("nan"))


class ThreeDims(nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.nn.functional.normalize(torch.flatten(x, 1)[:, :8] + 1, dim=1).unsqueeze(2)


class OneRowTooFew(nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.nn.functional.normalize(torch.flatten(x, 1)[1:, :8] + 1, dim=1)


class Double(nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.nn.functional.normalize(torch.flatten(x, 1)[:, :8] + 1, dim=1).double()


class Pair(nn.Module):
    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        out = torch.nn.functional.normalize(torch.flatten(x, 1)[:, :8] + 1, dim=1)
        return out, out


class WrongInput(nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.nn.functional.normalize(x.view(-1, 10), dim=1)  # expects something else than [N,1,28,28]


class Raises(nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        raise ValueError("this model refuses to work")


@pytest.mark.parametrize(
    ("module", "message"),
    [
        (Unnormalised(), "not L2-normalised"),
        (NaNs(), "NaN"),
        (ThreeDims(), "shape [8, 8, 1] for 8 images"),
        (OneRowTooFew(), "shape [7, 8] for 8 images"),
        (Double(), "float64"),
        (Pair(), "returns tuple"),
        (WrongInput(), "fails on float32 [8, 1, 28, 28] input"),
        (Raises(), "this model refuses to work"),
    ],
    ids=lambda v: type(v).__name__ if isinstance(v, nn.Module) else "",
)
def test_bad_input_a_model_that_breaks_the_contract_is_refused(published_run: RunPaths, module, message, capsys):
    publish_model(published_run, torchscript_bytes(module))
    assert main(run_args(published_run)) == EXIT_BAD_INPUT
    line = one_line_error(capsys)
    assert f"{published_run.model / 'model.pt'}: " in line and message in line, line
    assert nothing_published(published_run)


class NaNOnTheTenthImage(nn.Module):
    """Passes the probe, then breaks: the refusal must come from the embedding of the split itself."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = torch.nn.functional.normalize(torch.flatten(x, 1)[:, 100:108] + 1, dim=1)
        if x.shape[0] > 9:
            out[9] = float("nan")
        return out


class FailsOnOneImage(nn.Module):
    """Passes the probe (8 images), then fails on a last batch of a single image."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.shape[0] == 1:
            raise RuntimeError("cannot embed a batch of one")
        return torch.nn.functional.normalize(torch.flatten(x, 1)[:, 100:108] + 1, dim=1)


class SizeDependsOnTheBatch(nn.Module):
    """Passes the probe with D=8, then returns D=4 for larger batches."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        d = 8 if x.shape[0] <= 8 else 4
        return torch.nn.functional.normalize(torch.flatten(x, 1)[:, 100 : 100 + d] + 1, dim=1)


@pytest.mark.parametrize(
    ("module", "batch", "message"),
    [
        (NaNOnTheTenthImage(), "64", "NaN"),
        (FailsOnOneImage(), "299", "fails on float32 [1, 1, 28, 28] input (builtins.RuntimeError: cannot"),
        (SizeDependsOnTheBatch(), "64", "returns D=4 for a batch of 64 images, but D=8 for the first ones"),
    ],
    ids=["nan-later", "fails-on-the-last-batch", "d-changes"],
)
def test_bad_input_a_model_that_breaks_the_contract_in_a_later_batch_is_refused(
    published_run: RunPaths, capsys, module, batch, message
):
    publish_model(published_run, torchscript_bytes(module))
    assert main([*run_args(published_run), "--batch-size", batch]) == EXIT_BAD_INPUT
    assert message in one_line_error(capsys)
    assert nothing_published(published_run)


@pytest.mark.parametrize("dim", [16, "8", -1])
def test_bad_input_a_model_whose_size_differs_from_its_manifest_is_refused(published_run: RunPaths, capsys, dim):
    publish_model(published_run, torchscript_bytes(Embedder(8)), dim=dim)
    assert main(run_args(published_run)) == EXIT_BAD_INPUT
    assert f"the model returns D=8, but its manifest says embedding_dim={dim!r}" in one_line_error(capsys)


def test_bad_input_a_changed_model_file_is_refused(published_run: RunPaths, capsys):
    publish_model(published_run, torchscript_bytes(Embedder(8)))
    (published_run.model / "model.pt").write_bytes(torchscript_bytes(Embedder(4)))
    assert main(run_args(published_run)) == EXIT_BAD_INPUT
    assert "the file was changed" in one_line_error(capsys)


def test_bad_input_a_missing_model_exits_3(published_run: RunPaths, capsys):
    assert main(run_args(published_run)) == EXIT_BAD_INPUT
    assert f"{published_run.model}: artifact folder not found" in one_line_error(capsys)


def test_bad_input_a_folder_where_model_pt_should_be_exits_3(published_run: RunPaths, capsys):
    publish_model(published_run, torchscript_bytes(Embedder(8)))
    (published_run.model / "model.pt").unlink()
    (published_run.model / "model.pt").mkdir()
    assert main(run_args(published_run)) == EXIT_BAD_INPUT
    assert f"{published_run.model / 'model.pt'}: listed in the manifest but missing" in one_line_error(capsys)


def test_bad_input_an_artifact_of_another_kind_as_the_model_exits_3(published_run: RunPaths, capsys):
    with publish(published_run.model, "dataset", Producer("preprocess", "0.1.0")) as staging:
        (staging.path / "model.pt").write_bytes(torchscript_bytes(Embedder(8)))
    assert main(run_args(published_run)) == EXIT_BAD_INPUT
    assert "artifact kind is 'dataset', expected 'model'" in one_line_error(capsys)


def test_bad_input_a_data_set_without_its_manifest_exits_3(published_run: RunPaths, capsys):
    publish_model(published_run, torchscript_bytes(Embedder(8)))
    (published_run.dataset / "manifest.json").unlink()
    assert main(run_args(published_run)) == EXIT_BAD_INPUT
    assert "manifest missing" in one_line_error(capsys)


def test_bad_input_a_corrupted_data_set_exits_3_naming_the_file(published_run: RunPaths, capsys):
    publish_model(published_run, torchscript_bytes(Embedder(8)))
    path = published_run.dataset / "test" / "images.npy"
    data = bytearray(path.read_bytes())
    data[-1] ^= 0xFF
    path.write_bytes(bytes(data))
    assert main(run_args(published_run)) == EXIT_BAD_INPUT
    assert f"{path}:" in one_line_error(capsys)
    assert nothing_published(published_run)


def _publish_arrays(paths: RunPaths, images: np.ndarray, labels: np.ndarray) -> None:
    """A data set whose test split holds exactly these arrays (write_dataset would refuse bad ones)."""
    train = take(mnist5k(), 3)
    with publish(paths.dataset, "dataset", Producer("preprocess", "0.1.0")) as staging:
        for name, (im, lb) in {"train": (train.images, train.labels), "test": (images, labels)}.items():
            (staging.path / name).mkdir()
            np.save(staging.path / name / "images.npy", im)
            np.save(staging.path / name / "labels.npy", lb)


@pytest.mark.parametrize(
    ("images", "labels", "message"),
    [
        (np.zeros((4, 28, 28), np.float32), np.zeros(4, np.int64), "images must be uint8 [N,28,28]"),
        (np.zeros((4, 28, 29), np.uint8), np.zeros(4, np.int64), "images must be uint8 [N,28,28]"),
        (np.zeros((4, 28, 28), np.uint8), np.zeros(3, np.int64), "4 images but 3 labels"),
        (np.zeros((4, 28, 28), np.uint8), np.full(4, 10, np.int64), "labels must be in 0..9"),
    ],
    ids=["float-images", "wrong-shape", "fewer-labels", "label-10"],
)
def test_bad_input_a_split_that_breaks_the_data_contract_exits_3(
    tmp_path: Path, capsys, images: np.ndarray, labels: np.ndarray, message: str
):
    paths = RunPaths("t", tmp_path / "data", tmp_path / "model", tmp_path / "deploy")
    _publish_arrays(paths, images, labels)
    publish_model(paths, torchscript_bytes(Embedder(8)))
    assert main(run_args(paths)) == EXIT_BAD_INPUT
    line = one_line_error(capsys)
    assert f"{paths.dataset / 'test'}:" in line and message in line, line
    assert nothing_published(paths)


def test_bad_input_a_data_set_without_a_test_split_exits_3(tmp_path: Path, digits: Split, capsys):
    paths = RunPaths("t", tmp_path / "data", tmp_path / "model", tmp_path / "deploy")
    write_dataset(paths.dataset, {"train": take(digits, 5)}, Producer("preprocess", "0.1.0"), {})
    publish_model(paths, torchscript_bytes(Embedder(8)))
    assert main(run_args(paths)) == EXIT_BAD_INPUT
    assert "no complete 'test' split" in one_line_error(capsys)


def test_bad_input_an_empty_test_split_exits_3(tmp_path: Path, digits: Split, capsys):
    paths = RunPaths("t", tmp_path / "data", tmp_path / "model", tmp_path / "deploy")
    empty = Split(np.empty((0, 28, 28), np.uint8), np.empty(0, np.int64))
    write_dataset(paths.dataset, {"train": take(digits, 5), "test": empty}, Producer("preprocess", "0.1.0"), {})
    publish_model(paths, torchscript_bytes(Embedder(8)))
    assert main(run_args(paths)) == EXIT_BAD_INPUT
    assert f"{paths.dataset / 'test'}: no images to embed" in one_line_error(capsys)
    assert nothing_published(paths)


def test_bad_input_an_embeddings_folder_that_is_a_symlink_out_of_the_volume_exits_3(
    published_run: RunPaths, tmp_path: Path, capsys
):
    publish_model(published_run, torchscript_bytes(Embedder(8)))
    outside = tmp_path / "outside"
    outside.mkdir()
    published_run.embeddings.symlink_to(outside)
    assert main(run_args(published_run)) == EXIT_BAD_INPUT
    assert f"{published_run.model_run / 'embeddings'}: leads out of its volume" in one_line_error(capsys)
    assert list(outside.iterdir()) == []


def test_bad_input_a_file_where_the_embeddings_folder_belongs_exits_3(published_run: RunPaths, capsys):
    publish_model(published_run, torchscript_bytes(Embedder(8)))
    published_run.embeddings.write_text("someone's notes")
    assert main(run_args(published_run)) == EXIT_BAD_INPUT
    assert f"{published_run.embeddings}: is a file" in one_line_error(capsys)
    assert published_run.embeddings.read_text() == "someone's notes"


def test_bad_input_a_full_model_volume_exits_5_naming_the_embeddings(tmp_path: Path, capsys):
    data = publish_run(tmp_path)
    with tmpfs_volume(tmp_path / "small", size_kib=64) as small:
        paths = RunPaths("t", data.data_root, small, data.deploy_root)
        publish_model(paths, torchscript_bytes(Embedder(8)))
        with open(small / "filler", "wb", buffering=0) as f, contextlib.suppress(OSError):
            f.write(b"\0" * (64 * 1024))  # what the model left free: less than the 13 KiB of embeddings
        assert main(run_args(paths)) == EXIT_ENVIRONMENT
        line = one_line_error(capsys)
        assert f"{paths.embeddings}: No space left on device; the disk is full" in line, line
        assert nothing_published(paths)


def test_bad_input_a_read_only_model_volume_exits_5(tmp_path: Path, capsys):
    data = publish_run(tmp_path)
    with tmpfs_volume(tmp_path / "ro", size_kib=256) as volume:
        paths = RunPaths("t", data.data_root, volume, data.deploy_root)
        publish_model(paths, torchscript_bytes(Embedder(8)))
        subprocess.run(["mount", "-o", "remount,ro", str(volume)], check=True)
        assert main(run_args(paths)) == EXIT_ENVIRONMENT
        line = one_line_error(capsys)
        assert str(paths.model_run) in line and "Read-only file system" in line, line
        assert nothing_published(paths)
