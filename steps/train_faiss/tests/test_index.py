"""The index functions on arrays: recall against exact search, FAISS messages and warnings."""

from __future__ import annotations

import faiss
import numpy as np
import pytest
from faiss_testdata import random_unit

from mnist_ct.artifacts import UsageError
from mnist_ct.train_faiss.factory import FactorySpec, parse_factory
from mnist_ct.train_faiss.index import build_index, make_index, recall_at, search_params


def test_recall_of_an_exact_index_is_one():
    gallery, queries = random_unit(500, 16, seed=1), random_unit(100, 16, seed=2)
    built = build_index(gallery, parse_factory("Flat"))
    recalls, ms = recall_at(built.index, gallery, queries)
    assert recalls == {1: 1.0, 10: 1.0}
    assert ms >= 0.0


def test_a_tie_with_the_exact_neighbour_is_not_a_miss():
    gallery = random_unit(50, 8, seed=3)
    gallery[1] = gallery[0]  # two identical gallery vectors: either is a correct nearest neighbour
    queries = gallery[:1].copy()
    # The same vectors stored in reverse order: this index answers id 1 where exact search answers id 0.
    reversed_ids = faiss.IndexIDMap(faiss.IndexFlatIP(8))
    reversed_ids.add_with_ids(gallery[::-1].copy(), np.arange(50)[::-1].copy())
    assert reversed_ids.search(queries, 1)[1][0, 0] == 1

    recalls, _ = recall_at(reversed_ids, gallery, queries)
    assert recalls[1] == 1.0


def test_recall_counts_a_query_whose_neighbour_is_missing_as_a_miss():
    gallery, queries = random_unit(200, 8, seed=4), random_unit(20, 8, seed=5)
    empty_half = faiss.IndexIDMap(faiss.IndexFlatIP(8))
    empty_half.add_with_ids(gallery[:100].copy(), np.arange(100))  # ids 100..199 never answered
    exact = np.argmax(queries @ gallery.T, axis=1)

    recalls, _ = recall_at(empty_half, gallery, queries, ks=(1,))

    assert recalls[1] == pytest.approx(np.mean(exact < 100))


def test_pq_training_warnings_are_collected_once_each(capfd):
    gallery = random_unit(300, 8, seed=6)
    built = build_index(gallery, parse_factory("PQ4"))
    assert built.warnings and all("training points" in w for w in built.warnings)
    assert len(built.warnings) == len(set(built.warnings))
    assert "WARNING" not in capfd.readouterr().err


def test_search_parameters_default_to_about_sqrt_lists_and_ef_64():
    assert search_params(parse_factory("IVF16,Flat"), None, None) == {"nprobe": 4}
    assert search_params(parse_factory("IVF2,Flat"), None, None) == {"nprobe": 1}
    assert search_params(parse_factory("HNSW8"), None, None) == {"efSearch": 64}
    assert search_params(parse_factory("IVF16,PQ4"), 3, None) == {"nprobe": 3}
    assert search_params(parse_factory("Flat"), None, None) == {}


def test_a_string_faiss_refuses_for_the_dimension_is_a_usage_error():
    # check_fits refuses this before make_index is reached; make_index still answers in one line.
    with pytest.raises(UsageError, match=r"--index PQ3: FAISS cannot make it for dimension 16 \(The dimension"):
        make_index(FactorySpec("PQ3", pq_m=3), 16)


def test_a_faiss_error_while_training_is_a_usage_error():
    # As if check_fits had let too small a gallery through: FAISS's own refusal becomes one line.
    unchecked = FactorySpec("IVF64,Flat")  # no lists recorded, so check_fits sees nothing to refuse
    with pytest.raises(UsageError, match="cannot be built over 20 gallery vectors of dimension 8: Number of training"):
        build_index(random_unit(20, 8, seed=8), unchecked)
