"""Factory strings: the grammar, the probe in a child process, and what depends on the data."""

from __future__ import annotations

import faiss
import pytest

from mnist_ct.artifacts import UsageError
from mnist_ct.train_faiss import factory
from mnist_ct.train_faiss.factory import (
    FactorySpec,
    check_factory,
    faiss_reason,
    parse_factory,
    probe_factory,
    tiny_build,
)


@pytest.mark.parametrize(
    ("text", "spec"),
    [
        ("Flat", FactorySpec("Flat")),
        (" Flat ", FactorySpec("Flat")),
        ("HNSW32", FactorySpec("HNSW32", hnsw_m=32)),
        ("HNSW2", FactorySpec("HNSW2", hnsw_m=2)),
        ("PQ4", FactorySpec("PQ4", pq_m=4)),
        ("IVF64,Flat", FactorySpec("IVF64,Flat", lists=64)),
        ("IVF65536,Flat", FactorySpec("IVF65536,Flat", lists=65536)),
        ("IVF64,PQ8", FactorySpec("IVF64,PQ8", lists=64, pq_m=8)),
        ("OPQ8,IVF64,PQ8", FactorySpec("OPQ8,IVF64,PQ8", lists=64, pq_m=8, opq=True)),
    ],
)
def test_the_grammar_reads_the_numbers_of_each_supported_form(text, spec):
    assert parse_factory(text) == spec


@pytest.mark.parametrize(
    ("text", "needle"),
    [
        ("HNSW0", "HNSW's M (links per node) must be from 2 to 256, got 0"),
        ("HNSW1", "must be from 2 to 256, got 1"),
        ("HNSW257", "must be from 2 to 256, got 257"),
        ("IVF0,Flat", "IVF's n (lists) must be from 1 to 65536, got 0"),
        ("IVF65537,Flat", "got 65537"),
        ("PQ0", "PQ's m (sub-quantizers) must be from 1 to 256, got 0"),
        ("IVF64,PQ0", "got 0"),
        ("OPQ8,IVF64,PQ4", "OPQ and PQ must have the same number of sub-quantizers (OPQ8 but PQ4)"),
        ("Flat,Flat", "'Flat,Flat' is not a factory string train_faiss supports"),
        ("", "'' is not a factory string"),
        ("   ", "'' is not a factory string"),
        ("flat", "'flat' is not"),
        ("HNSW-1", "'HNSW-1' is not"),
        ("IVF99999999999,Flat", "is not"),  # FAISS itself fails on it with "C++ exception stoi"
        ("HNSW\u0663\u0662", "is not"),  # Arabic-Indic digits: \d would take them, FAISS cannot
        ("IDMap,Flat", "is not"),  # FAISS makes it, but it cannot add vectors without ids
        ("PQ8x0", "is not"),  # SIGFPE/SIGSEGV in FAISS's training
        ("IVF64_HNSW0,Flat", "is not"),  # SIGABRT in FAISS
        ("IVF64, Flat", "is not"),
    ],
)
def test_the_grammar_refuses_what_it_does_not_support(text, needle):
    with pytest.raises(UsageError, match="--index") as refused:
        parse_factory(text)
    assert needle in str(refused.value)
    assert "use Flat (exact), HNSW<M>" in str(refused.value) or "must" in str(refused.value)


@pytest.mark.parametrize(
    ("spec", "signal_name"),
    [(FactorySpec("HNSW0", hnsw_m=0), "SIGABRT"), (FactorySpec("HNSW1", hnsw_m=1), "SIGSEGV")],
)
def test_the_probe_reports_a_faiss_crash_by_its_signal(spec, signal_name):
    assert probe_factory(spec) == f"FAISS crashes ({signal_name}) building it, even on 256 tiny vectors"


def test_the_probe_reports_a_faiss_error_in_the_child():
    assert probe_factory(FactorySpec("IVF0,Flat", lists=0)) == "FAISS cannot build it (Error: 'cur_nprobe > 0' failed)"


def test_the_probe_gives_up_on_a_child_that_does_not_finish():
    assert probe_factory(FactorySpec("HNSW32", hnsw_m=32), timeout_s=0.0) == (
        "FAISS did not finish building it on 256 tiny vectors in 0 s"
    )


SUPPORTED_EXAMPLES = ["Flat", "HNSW32", "PQ4", "IVF64,Flat", "IVF65536,Flat", "IVF64,PQ8", "OPQ8,IVF64,PQ8"]


@pytest.mark.parametrize("text", SUPPORTED_EXAMPLES)
def test_every_supported_form_survives_the_probe(text):
    assert probe_factory(parse_factory(text)) is None


def test_the_tiny_build_trains_fills_and_searches_in_process():
    tiny_build(parse_factory("OPQ4,IVF4096,PQ4"))  # probes IVF64: 4096 lists need 4096 points


def test_the_probe_trains_at_most_64_lists():
    assert parse_factory("OPQ4,IVF4096,PQ4").probe_text() == "OPQ4,IVF64,PQ4"
    assert parse_factory("IVF16,Flat").probe_text() == "IVF16,Flat"
    assert parse_factory("HNSW32").probe_text() == "HNSW32"


def test_check_factory_turns_a_probe_failure_into_a_usage_error(monkeypatch):
    monkeypatch.setattr(factory, "HNSW_M", (0, 256))  # as if the grammar let a crashing value through
    with pytest.raises(UsageError, match=r"--index HNSW0: FAISS crashes \(SIGABRT\)"):
        check_factory("HNSW0")


@pytest.mark.parametrize(
    ("text", "dim", "size", "needle"),
    [
        ("IVF64,PQ7", 16, 1000, "PQ with 7 sub-quantizers needs an embedding dimension divisible by 7"),
        ("PQ3", 16, 1000, "choose m among [1, 2, 4, 8, 16]"),
        ("OPQ6,IVF8,PQ6", 16, 1000, "OPQ and PQ with 6 sub-quantizers"),
        ("IVF1000,Flat", 16, 300, "cannot be trained on a gallery of 300 vectors (1000 IVF lists need at least 1000)"),
        ("PQ4", 16, 255, "PQ needs at least 256 (its codebook's centroids)"),
        ("IVF8,PQ4", 16, 100, "8 IVF lists need at least 8; PQ needs at least 256"),
    ],
)
def test_what_depends_on_the_data_is_refused_before_training(text, dim, size, needle):
    with pytest.raises(UsageError, match="--index") as refused:
        parse_factory(text).check_fits(dim, size)
    assert needle in str(refused.value)


@pytest.mark.parametrize(("text", "dim", "size"), [("IVF64,PQ8", 16, 256), ("IVF300,Flat", 8, 300), ("HNSW32", 3, 1)])
def test_what_fits_the_data_passes(text, dim, size):
    parse_factory(text).check_fits(dim, size)


def test_faiss_reason_keeps_the_human_part():
    with pytest.raises(RuntimeError) as raised:
        faiss.index_factory(8, "Bogus", faiss.METRIC_INNER_PRODUCT)
    assert faiss_reason(raised.value) == "could not parse index string Bogus"
