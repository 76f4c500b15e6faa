"""The index functions on arrays: recall against exact search, FAISS messages and warnings."""

from __future__ import annotations

import faiss
import numpy as np
import pytest
from faiss_testdata import random_unit

from mnist_ct.artifacts import UsageError
from mnist_ct.train_faiss.index import build_index, faiss_reason, recall_at


def test_recall_of_an_exact_index_is_one():
    gallery, queries = random_unit(500, 16, seed=1), random_unit(100, 16, seed=2)
    built = build_index(gallery, "Flat")
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
    built = build_index(gallery, "PQ4")
    assert built.warnings and all("training points" in w for w in built.warnings)
    assert len(built.warnings) == len(set(built.warnings))
    assert "WARNING" not in capfd.readouterr().err


def test_factory_strings_are_trimmed():
    assert build_index(random_unit(20, 8, seed=7), " Flat ").spec == "Flat"


def test_faiss_reason_keeps_the_human_part():
    try:
        faiss.index_factory(8, "Bogus", faiss.METRIC_INNER_PRODUCT)
    except RuntimeError as e:
        assert faiss_reason(e) == "could not parse index string Bogus"
    else:  # pragma: no cover
        pytest.fail("faiss accepted a bogus factory string")


def test_an_index_that_cannot_add_plain_vectors_is_a_usage_error():
    with pytest.raises(UsageError, match="IDMap,Flat"):
        build_index(random_unit(20, 8, seed=8), "IDMap,Flat")
