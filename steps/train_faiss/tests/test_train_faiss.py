"""train_faiss end to end: real embeddings artifacts in, a real index artifact out."""

from __future__ import annotations

import json
from pathlib import Path

import faiss
import numpy as np
import pytest
from faiss_testdata import clustered, random_unit, run_args

from mnist_ct.artifacts import Embeddings, UsageError, read_manifest, read_verified, thread_count
from mnist_ct.artifacts.testing import assert_readme_documents
from mnist_ct.train_faiss.__main__ import build_parser, main
from mnist_ct.train_faiss.factory import parse_factory
from mnist_ct.train_faiss.step import Options


def _labels(n: int) -> np.ndarray:
    return (np.arange(n) % 10).astype(np.int64)


def _index_json(paths) -> dict:
    return json.loads((paths.index / "index.json").read_text())


def _exact_top1(gallery: np.ndarray, queries: np.ndarray) -> np.ndarray:
    return np.argmax(queries.astype(np.float64) @ gallery.astype(np.float64).T, axis=1)


def _measured_recall_at_1(paths, gallery: np.ndarray, queries: np.ndarray) -> float:
    """Recall@1 measured independently: the written index searched, compared with numpy brute force."""
    index = faiss.read_index(str(paths.index / "index.faiss"))
    _, ids = index.search(queries, 1)
    return float(np.mean(ids[:, 0] == _exact_top1(gallery, queries)))


def _only_embeddings_left(paths) -> bool:
    return sorted(p.name for p in paths.model_run.iterdir()) == ["embeddings"]


def test_flat_index_has_recall_exactly_one_and_the_gallery_labels(write_run):
    gallery, queries = clustered(30, 16, seed=1), clustered(8, 16, seed=2)
    paths = write_run(gallery, queries)

    assert main(run_args(paths)) == 0

    info = _index_json(paths)
    assert info["factory"] == "Flat"
    assert info["metric"] == "inner_product"
    assert (info["size"], info["dim"]) == (300, 16)
    assert info["recall_at_1"] == 1.0
    assert info["recall_at_10"] == 1.0
    manifest = read_verified(paths.index, "index")
    assert manifest.inputs == {"embeddings": read_manifest(paths.embeddings).digest}
    assert manifest.meta["recall_at_1"] == 1.0
    assert sorted(manifest.files) == ["index.faiss", "index.json", "labels.npy"]
    np.testing.assert_array_equal(np.load(paths.index / "labels.npy"), gallery.labels)
    index = faiss.read_index(str(paths.index / "index.faiss"))
    assert index.ntotal == 300
    assert index.metric_type == faiss.METRIC_INNER_PRODUCT


def test_ivf_with_one_probe_over_many_lists_reports_its_real_recall(write_run):
    gallery, queries = random_unit(2000, 16, seed=3), random_unit(300, 16, seed=4)
    paths = write_run(Embeddings(gallery, _labels(2000)), Embeddings(queries, _labels(300)))

    assert main(run_args(paths, "--index", "IVF64,Flat", "--nprobe", "1")) == 0

    info = _index_json(paths)
    assert info["search_params"] == {"nprobe": 1}
    assert 0.0 < info["recall_at_1"] < 0.9
    assert info["recall_at_1"] == pytest.approx(_measured_recall_at_1(paths, gallery, queries), abs=1e-9)
    assert info["recall_at_1"] <= info["recall_at_10"] <= 1.0


def test_hnsw_with_a_narrow_beam_reports_its_real_recall(write_run):
    gallery, queries = random_unit(2000, 32, seed=5), random_unit(200, 32, seed=6)
    paths = write_run(Embeddings(gallery, _labels(2000)), Embeddings(queries, _labels(200)))

    assert main(run_args(paths, "--index", "HNSW8", "--ef-search", "1")) == 0

    info = _index_json(paths)
    assert info["faiss_class"] == "IndexHNSWFlat"
    assert info["recall_at_1"] < 0.9
    assert info["recall_at_1"] == pytest.approx(_measured_recall_at_1(paths, gallery, queries), abs=1e-9)


def test_search_parameters_are_saved_with_the_index(write_run):
    paths = write_run(clustered(40, 8, seed=7), clustered(4, 8, seed=8))

    assert main(run_args(paths, "--index", "IVF16,Flat", "--nprobe", "5")) == 0

    index = faiss.read_index(str(paths.index / "index.faiss"))
    assert faiss.extract_index_ivf(index).nprobe == 5


def test_ivf_nprobe_defaults_to_about_the_square_root_of_the_lists(write_run):
    paths = write_run(clustered(40, 8, seed=7), clustered(4, 8, seed=8))

    assert main(run_args(paths, "--index", "IVF16,Flat")) == 0

    assert _index_json(paths)["search_params"] == {"nprobe": 4}


def test_a_rerun_replaces_the_index(write_run):
    paths = write_run(clustered(30, 16, seed=1), clustered(4, 16, seed=2))
    assert main(run_args(paths, "--index", "HNSW16")) == 0
    assert main(run_args(paths, "--index", "Flat")) == 0
    assert _index_json(paths)["factory"] == "Flat"
    assert sorted(p.name for p in paths.model_run.iterdir()) == ["embeddings", "index"]


def test_nan_embeddings_exit_3_with_one_line_and_write_nothing(write_raw_embeddings, capsys):
    train = random_unit(50, 8, seed=1)
    train[7, 3] = np.nan
    paths = write_raw_embeddings(train, random_unit(10, 8, seed=2))

    assert main(run_args(paths)) == 3

    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "NaN" in err[0] and "train.npy" in err[0]
    assert _only_embeddings_left(paths)


def test_unnormalised_embeddings_exit_3_with_one_line_and_write_nothing(write_raw_embeddings, capsys):
    paths = write_raw_embeddings(random_unit(50, 8, seed=1), 3.0 * random_unit(10, 8, seed=2))

    assert main(run_args(paths)) == 3

    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "not L2-normalised" in err[0] and "test.npy" in err[0]
    assert _only_embeddings_left(paths)


def test_threads_0_gives_faiss_every_core_this_process_may_use(write_run):
    paths = write_run(clustered(10, 8, seed=1), clustered(2, 8, seed=2))

    assert main([*run_args(paths)[:-2], "--threads", "0"]) == 0

    assert faiss.omp_get_max_threads() == thread_count(0)


def test_threads_n_gives_faiss_n_threads(write_run):
    paths = write_run(clustered(10, 8, seed=1), clustered(2, 8, seed=2))
    faiss.omp_set_num_threads(thread_count(0))

    assert main(run_args(paths)) == 0  # --threads 1

    assert faiss.omp_get_max_threads() == 1


def test_options_built_in_code_are_checked_too():
    with pytest.raises(UsageError, match="--index 'IDMap,Flat' is not a factory string"):
        Options(index="IDMap,Flat")
    with pytest.raises(UsageError, match="--nprobe 0: --index IVF8,Flat has 8 lists; give 1..8"):
        Options(index="IVF8,Flat", nprobe=0)
    with pytest.raises(UsageError, match="--ef-search 0: give 1..4096"):
        Options(index="HNSW8", ef_search=0)
    with pytest.raises(UsageError, match="--threads -1: give 0..1024"):
        Options(threads=-1)
    assert Options(index=" IVF8,Flat ", nprobe=8).factory == parse_factory("IVF8,Flat")


def test_the_readme_documents_every_option_of_the_parser():
    assert_readme_documents(build_parser(), Path(__file__).parents[1] / "README.md")


def test_help_documents_every_option(capsys):
    assert main(["--help"]) == 0
    out = capsys.readouterr().out
    for option in ("--index", "--nprobe", "--ef-search", "--threads", "--run-id", "--model-root", "--quiet"):
        assert option in out
