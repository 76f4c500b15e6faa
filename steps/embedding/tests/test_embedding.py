"""The step end to end on real digits, and every way a model or data set is refused (exit 3, one line)."""

from __future__ import annotations

import io
import os
import pickle
import zipfile
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import Embedder, publish_model, run_args, torchscript_bytes
from torch import nn

from mnist_ct.artifacts import RunPaths, is_torchscript_archive, read_embeddings, read_manifest
from mnist_ct.embedding.__main__ import main


def one_line_error(capsys) -> str:
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1, err
    assert err[0].startswith("embedding: error: ")
    return err[0]


def test_embeds_both_splits_and_publishes_them_with_lineage(run: RunPaths, digits):
    model = Embedder(8)
    model_manifest = publish_model(run, torchscript_bytes(model))
    assert main(run_args(run)) == 0
    manifest, splits = read_embeddings(run.embeddings)
    assert sorted(splits) == ["test", "train"]
    assert splits["train"].vectors.shape == (300, 8) and splits["test"].vectors.shape == (100, 8)
    assert splits["train"].vectors.dtype == np.float32
    assert np.allclose(np.linalg.norm(splits["test"].vectors, axis=1), 1, atol=1e-5)
    data = read_manifest(run.dataset)
    assert manifest.inputs == {"model": model_manifest.digest, "dataset": data.digest}
    assert manifest.meta["images_per_second"] > 0 and manifest.meta["dim"] == 8

    # The vectors are the model's output for the stored images, in the stored order, with their labels.
    images = np.load(run.dataset / "test" / "images.npy")
    labels = np.load(run.dataset / "test" / "labels.npy")
    expected = model(torch.from_numpy(images).unsqueeze(1).float() / 255).detach().numpy()
    assert np.allclose(splits["test"].vectors, expected, atol=1e-5)
    assert np.array_equal(splits["test"].labels, labels)


def test_batch_size_does_not_change_the_embeddings(run: RunPaths, tmp_path: Path):
    publish_model(run, torchscript_bytes(Embedder(8)))
    assert main([*run_args(run), "--batch-size", "7"]) == 0
    _, small = read_embeddings(run.embeddings)
    assert main([*run_args(run), "--batch-size", "1000"]) == 0
    _, large = read_embeddings(run.embeddings)
    assert np.allclose(small["train"].vectors, large["train"].vectors, atol=1e-6)


class Reduce:
    """Unpickling this creates a marker file: what a malicious model.pt could do instead."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def test_a_pickle_is_refused_without_being_unpickled(run: RunPaths, tmp_path: Path, capsys):
    marker = tmp_path / "unpickled"
    publish_model(run, pickle.dumps(Reduce(marker)))
    assert main(run_args(run)) == 3
    assert "not a TorchScript archive" in one_line_error(capsys)
    assert not marker.exists()
    assert not run.embeddings.exists() and not list(run.model_run.glob(".embeddings.*"))  # nothing written
    pickle.loads(pickle.dumps(Reduce(marker)))  # the marker works: unpickling does create it
    assert marker.exists()


def test_a_torch_save_zip_with_a_pickle_inside_is_refused_unopened(run: RunPaths, tmp_path: Path, capsys):
    marker = tmp_path / "unpickled"
    buffer = io.BytesIO()
    torch.save({"weights": torch.zeros(2), "payload": Reduce(marker)}, buffer)
    publish_model(run, buffer.getvalue())
    assert main(run_args(run)) == 3
    assert "not a TorchScript archive" in one_line_error(capsys)
    assert not marker.exists()
    assert not run.embeddings.exists() and not list(run.model_run.glob(".embeddings.*"))


def test_a_state_dict_is_refused(run: RunPaths, capsys):
    buffer = io.BytesIO()
    torch.save(Embedder(8).state_dict(), buffer)
    publish_model(run, buffer.getvalue())
    assert main(run_args(run)) == 3
    assert "not a TorchScript archive" in one_line_error(capsys)
    assert not run.embeddings.exists()


def test_a_truncated_archive_is_refused(run: RunPaths, capsys):
    publish_model(run, torchscript_bytes(Embedder(8))[:-200])  # the zip directory is at the end
    assert main(run_args(run)) == 3
    assert "not a TorchScript archive" in one_line_error(capsys)


def test_a_torchscript_lookalike_holding_a_python_pickle_is_refused_unpickled(run: RunPaths, tmp_path: Path, capsys):
    # The layout of a TorchScript archive, but data.pkl is a Python pickle with a payload: torch.jit.load's
    # own unpickler only builds TorchScript objects, so it must fail without running the payload.
    marker = tmp_path / "unpickled"
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as z:
        z.writestr("model/data.pkl", pickle.dumps(Reduce(marker), protocol=2))
        z.writestr("model/constants.pkl", pickle.dumps((), protocol=2))
        z.writestr("model/code/__torch__/m.py", "class M(Module):\n  pass\n")
        z.writestr("model/version", "3\n")
    publish_model(run, buffer.getvalue())
    assert main(run_args(run)) == 3
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


class Double(nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.nn.functional.normalize(torch.flatten(x, 1)[:, :8] + 1, dim=1).double()


class WrongInput(nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.nn.functional.normalize(x.view(-1, 10), dim=1)  # expects something else than [N,1,28,28]


@pytest.mark.parametrize(
    ("module", "message"),
    [
        (Unnormalised(), "not L2-normalised"),
        (NaNs(), "NaN"),
        (ThreeDims(), "shape"),
        (Double(), "float64"),
        (WrongInput(), "fails on float32"),
    ],
)
def test_a_model_that_breaks_the_contract_is_refused(run: RunPaths, module, message, capsys):
    publish_model(run, torchscript_bytes(module))
    assert main(run_args(run)) == 3
    assert message in one_line_error(capsys)
    assert not run.embeddings.exists()


class NaNOnTheTenthImage(nn.Module):
    """Passes the probe, then breaks: the refusal must come from the embedding of the split itself."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = torch.nn.functional.normalize(torch.flatten(x, 1)[:, 100:108] + 1, dim=1)
        if x.shape[0] > 9:
            out[9] = float("nan")
        return out


def test_nan_in_a_later_batch_is_refused(run: RunPaths, capsys):
    publish_model(run, torchscript_bytes(NaNOnTheTenthImage()))
    assert main([*run_args(run), "--batch-size", "64"]) == 3
    assert "NaN" in one_line_error(capsys)
    assert not run.embeddings.exists()


def test_model_output_size_must_match_its_manifest(run: RunPaths, capsys):
    publish_model(run, torchscript_bytes(Embedder(8)), dim=16)
    assert main(run_args(run)) == 3
    assert "embedding_dim=16" in one_line_error(capsys)


def test_a_changed_model_file_is_refused(run: RunPaths, capsys):
    publish_model(run, torchscript_bytes(Embedder(8)))
    (run.model / "model.pt").write_bytes(torchscript_bytes(Embedder(4)))
    assert main(run_args(run)) == 3
    assert "the file was changed" in one_line_error(capsys)


def test_missing_model_exits_3(run: RunPaths, capsys):
    assert main(run_args(run)) == 3
    assert "model" in one_line_error(capsys)


def test_missing_data_set_manifest_exits_3(run: RunPaths, capsys):
    publish_model(run, torchscript_bytes(Embedder(8)))
    (run.dataset / "manifest.json").unlink()
    assert main(run_args(run)) == 3
    assert "manifest missing" in one_line_error(capsys)


def test_corrupted_data_set_exits_3_naming_the_file(run: RunPaths, capsys):
    publish_model(run, torchscript_bytes(Embedder(8)))
    path = run.dataset / "test" / "images.npy"
    data = bytearray(path.read_bytes())
    data[-1] ^= 0xFF
    path.write_bytes(bytes(data))
    assert main(run_args(run)) == 3
    assert "test/images.npy" in one_line_error(capsys)
    assert not run.embeddings.exists()


def test_data_set_without_a_test_split_exits_3(tmp_path: Path, digits, capsys):
    from conftest import take

    from mnist_ct.artifacts import Producer, write_dataset

    paths = RunPaths("t", tmp_path / "data", tmp_path / "model", tmp_path / "deploy")
    write_dataset(paths.dataset, {"train": take(*digits, 5)}, Producer("preprocess", "0.1.0"), {})
    publish_model(paths, torchscript_bytes(Embedder(8)))
    assert main(run_args(paths)) == 3
    assert "'test'" in one_line_error(capsys)


def test_bad_batch_size_exits_2(run: RunPaths):
    assert main([*run_args(run), "--batch-size", "0"]) == 2


def test_archive_check_reads_only_the_zip_directory(tmp_path: Path):
    good = tmp_path / "good.pt"
    good.write_bytes(torchscript_bytes(Embedder(8)))
    assert is_torchscript_archive(good)
    plain = tmp_path / "plain.pt"
    plain.write_bytes(pickle.dumps({"a": 1}))
    assert not is_torchscript_archive(plain)
    empty = tmp_path / "empty.pt"
    empty.write_bytes(b"")
    assert not is_torchscript_archive(empty)
