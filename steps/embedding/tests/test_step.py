"""The step end to end on real digits: both splits embedded with the run's model, in order, with lineage."""

from __future__ import annotations

import os
import pickle
from pathlib import Path

import numpy as np
import torch
from conftest import Embedder, publish_model, torchscript_bytes

from mnist_ct.artifacts import RunPaths, is_torchscript_archive, read_embeddings, read_manifest
from mnist_ct.artifacts.testing import assert_readme_documents, run_args
from mnist_ct.embedding.__main__ import build_parser, main
from mnist_ct.embedding.embed import embed_images, load_torchscript

README = Path(__file__).parents[1] / "README.md"


def test_the_readme_documents_every_option_of_the_parser():
    assert_readme_documents(build_parser(), README)


def test_embeds_both_splits_and_publishes_them_with_lineage(published_run: RunPaths):
    model = Embedder(8)
    model_manifest = publish_model(published_run, torchscript_bytes(model))
    assert main(run_args(published_run)) == 0
    manifest, splits = read_embeddings(published_run.embeddings)
    assert sorted(splits) == ["test", "train"]
    assert splits["train"].vectors.shape == (300, 8) and splits["test"].vectors.shape == (100, 8)
    assert splits["train"].vectors.dtype == np.float32
    assert np.allclose(np.linalg.norm(splits["test"].vectors, axis=1), 1, atol=1e-5)
    data = read_manifest(published_run.dataset)
    assert manifest.inputs == {"model": model_manifest.digest, "dataset": data.digest}
    assert manifest.meta["images_per_second"] > 0 and manifest.meta["dim"] == 8
    assert manifest.meta["batch_size"] == 512 and manifest.meta["threads"] == len(os.sched_getaffinity(0))

    # The vectors are the model's output for the stored images, in the stored order, with their labels.
    images = np.load(published_run.dataset / "test" / "images.npy")
    labels = np.load(published_run.dataset / "test" / "labels.npy")
    expected = model(torch.from_numpy(images).unsqueeze(1).float() / 255).detach().numpy()
    assert np.allclose(splits["test"].vectors, expected, atol=1e-5)
    assert np.array_equal(splits["test"].labels, labels)


def test_batch_size_does_not_change_the_embeddings(published_run: RunPaths):
    publish_model(published_run, torchscript_bytes(Embedder(8)))
    assert main([*run_args(published_run), "--batch-size", "7", "--threads", "1"]) == 0
    manifest, small = read_embeddings(published_run.embeddings)
    assert manifest.meta["batch_size"] == 7 and manifest.meta["threads"] == 1
    assert main([*run_args(published_run), "--batch-size", "1000"]) == 0
    _, large = read_embeddings(published_run.embeddings)
    assert np.allclose(small["train"].vectors, large["train"].vectors, atol=1e-6)


def test_a_model_trained_on_other_data_is_embedded_with_a_note(published_run: RunPaths, capsys):
    publish_model(published_run, torchscript_bytes(Embedder(8)))
    (published_run.dataset / "manifest.json").write_text((published_run.dataset / "manifest.json").read_text() + " ")
    assert main([a for a in run_args(published_run) if a != "--quiet"]) == 0
    assert "note: the model was trained on another data set" in capsys.readouterr().err


def test_no_images_give_no_embeddings(tmp_path: Path):
    path = tmp_path / "model.pt"
    path.write_bytes(torchscript_bytes(Embedder(4)))
    vectors, throughput = embed_images(load_torchscript(path), path, np.empty((0, 28, 28), np.uint8), 8, 4)
    assert vectors.shape == (0, 4) and vectors.dtype == np.float32 and throughput.images == 0


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
