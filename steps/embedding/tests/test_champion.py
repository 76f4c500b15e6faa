"""With a champion live on the deploy volume, the run's test split is embedded with the champion's model.pt too:
champion/test.npy in the embeddings artifact, and the champion's record in its manifest (for analysis)."""

from __future__ import annotations

import pickle
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import Embedder, nothing_published, one_line_error, publish_model, torchscript_bytes
from deployed import deploy_champion
from test_bad_input import Reduce
from torch import nn

from mnist_ct.artifacts import (
    EXIT_BAD_INPUT,
    EXIT_USAGE,
    ArtifactError,
    Embeddings,
    Producer,
    RunPaths,
    find_champion,
    read_embeddings,
    read_manifest,
    write_embeddings,
)
from mnist_ct.artifacts.embeddings import read_vectors
from mnist_ct.artifacts.testing import run_args
from mnist_ct.embedding.__main__ import main


def seeded(dim: int, seed: int) -> Embedder:
    torch.manual_seed(seed)
    return Embedder(dim)


def expected_vectors(paths: RunPaths, model: nn.Module) -> np.ndarray:
    images = np.load(paths.dataset / "test" / "images.npy")
    with torch.inference_mode():
        return model(torch.from_numpy(images).unsqueeze(1).float() / 255).numpy()


def test_without_a_champion_the_embeddings_record_none_and_hold_no_champion_file(published_run: RunPaths, capsys):
    publish_model(published_run, torchscript_bytes(seeded(8, 0)))
    assert main([a for a in run_args(published_run) if a != "--quiet"]) == 0
    manifest, splits = read_embeddings(published_run.embeddings)
    assert manifest.meta["champion"] is None
    assert sorted(manifest.files) == ["test.npy", "test_labels.npy", "train.npy", "train_labels.npy"]
    assert sorted(splits) == ["test", "train"]
    assert "no champion: nothing live for model 'mnist'" in capsys.readouterr().err


def test_the_champion_embeds_the_test_split_with_its_own_model(published_run: RunPaths):
    champion_model = seeded(4, 1)  # another model, another embedding size than the challenger's
    deploy_champion(published_run.deploy_root, "r0", torchscript_bytes(champion_model), accuracy=0.91)
    publish_model(published_run, torchscript_bytes(seeded(8, 0)))
    assert main(run_args(published_run)) == 0

    manifest, splits = read_embeddings(published_run.embeddings)
    assert sorted(splits) == ["test", "train"]  # champion/test.npy is no split: readers of the old layout see none
    vectors = read_vectors(published_run.embeddings, manifest, "champion/test.npy")
    assert vectors.shape == (100, 4) and vectors.dtype == np.float32
    assert np.allclose(vectors, expected_vectors(published_run, champion_model), atol=1e-5)
    champion = find_champion(published_run.deploy_root)
    assert champion is not None
    assert manifest.meta["champion"] == {**champion.summary(), "embedding_dim": 4, "file": "champion/test.npy"}
    assert manifest.meta["champion"]["version"] == "r0" and manifest.meta["champion"]["recorded_accuracy"] == 0.91
    assert manifest.meta["dim"] == 8 and set(manifest.meta["seconds"]) == {"train", "test", "champion"}


def test_a_champion_with_the_challengers_model_gives_the_same_vectors(published_run: RunPaths):
    model = torchscript_bytes(seeded(8, 0))
    deploy_champion(published_run.deploy_root, "r0", model)
    publish_model(published_run, model)
    assert main([*run_args(published_run), "--batch-size", "7"]) == 0
    manifest, splits = read_embeddings(published_run.embeddings)
    champion = read_vectors(published_run.embeddings, manifest, "champion/test.npy")
    assert np.array_equal(champion, splits["test"].vectors)


def test_the_live_version_is_the_one_embedded_and_recorded(published_run: RunPaths):
    deploy_champion(published_run.deploy_root, "r0", torchscript_bytes(seeded(4, 1)))
    deploy_champion(published_run.deploy_root, "r1", torchscript_bytes(seeded(6, 2)))  # deployed since: live
    deploy_champion(published_run.deploy_root, "r2", torchscript_bytes(seeded(5, 3)), live=False)  # history only
    publish_model(published_run, torchscript_bytes(seeded(8, 0)))
    assert main(run_args(published_run)) == 0
    manifest = read_manifest(published_run.embeddings)
    assert manifest.meta["champion"]["version"] == "r1" and manifest.meta["champion"]["embedding_dim"] == 6


def test_another_model_name_has_its_own_champion(published_run: RunPaths):
    deploy_champion(published_run.deploy_root, "r0", torchscript_bytes(seeded(4, 1)))
    publish_model(published_run, torchscript_bytes(seeded(8, 0)))
    assert main([*run_args(published_run), "--model-name", "fashion"]) == 0
    assert read_manifest(published_run.embeddings).meta["champion"] is None


def test_bad_input_an_invalid_model_name_exits_2(published_run: RunPaths, capsys):
    assert main([*run_args(published_run), "--model-name", "../mnist"]) == EXIT_USAGE
    last = capsys.readouterr().err.strip().splitlines()[-1]
    assert "argument --model-name: invalid model name '../mnist'" in last, last


def test_bad_input_a_live_archive_that_differs_from_its_history_copy_exits_3(published_run: RunPaths, capsys):
    deploy_champion(published_run.deploy_root, "r0", torchscript_bytes(seeded(4, 1)))
    live = published_run.deploy_root / "model-store" / "mnist.mar"
    live.write_bytes(live.read_bytes() + b"\0")  # tampered with after deploy
    publish_model(published_run, torchscript_bytes(seeded(8, 0)))
    assert main(run_args(published_run)) == EXIT_BAD_INPUT
    assert f"{live}: differs from " in one_line_error(capsys)
    assert nothing_published(published_run)


def test_bad_input_a_tampered_history_archive_exits_3(published_run: RunPaths, capsys):
    archive = deploy_champion(published_run.deploy_root, "r0", torchscript_bytes(seeded(4, 1)))
    data = bytearray(archive.read_bytes())
    data[len(data) // 2] ^= 0xFF
    archive.write_bytes(bytes(data))
    publish_model(published_run, torchscript_bytes(seeded(8, 0)))
    assert main(run_args(published_run)) == EXIT_BAD_INPUT
    assert f"{archive}" in one_line_error(capsys)
    assert nothing_published(published_run)


def test_bad_input_a_champion_model_that_is_a_pickle_is_refused_unopened(
    published_run: RunPaths, tmp_path: Path, capsys
):
    marker = tmp_path / "unpickled"
    archive = deploy_champion(published_run.deploy_root, "r0", pickle.dumps(Reduce(marker)))
    publish_model(published_run, torchscript_bytes(seeded(8, 0)))
    assert main(run_args(published_run)) == EXIT_BAD_INPUT
    line = one_line_error(capsys)
    assert f"{archive} member model.pt: not a TorchScript archive" in line, line
    assert not marker.exists() and nothing_published(published_run)


class Unnormalised(nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.flatten(x, 1)[:, :8] + 1


def test_bad_input_a_champion_model_that_breaks_the_contract_exits_3(published_run: RunPaths, capsys):
    archive = deploy_champion(published_run.deploy_root, "r0", torchscript_bytes(Unnormalised()))
    publish_model(published_run, torchscript_bytes(seeded(8, 0)))
    assert main(run_args(published_run)) == EXIT_BAD_INPUT
    line = one_line_error(capsys)
    assert f"{archive} member model.pt: the model's output is not L2-normalised" in line, line
    assert nothing_published(published_run)


@pytest.mark.parametrize("rel", ["test.npy", "test_labels.npy", "../champion.npy", "/abs.npy", "champion/test.txt"])
def test_bad_input_an_extra_file_that_is_no_plain_npy_beside_the_splits_is_refused(published_run: RunPaths, rel):
    vectors = np.eye(4, dtype=np.float32)
    splits = {"test": Embeddings(vectors, np.arange(4, dtype=np.int64))}
    with pytest.raises(ArtifactError, match="not a valid extra embeddings file"):
        write_embeddings(published_run.embeddings, splits, Producer("embedding", "0.0.0"), {}, {}, {rel: vectors})
    assert nothing_published(published_run)
