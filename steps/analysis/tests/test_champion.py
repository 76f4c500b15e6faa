"""The champion measured on this run's test digits (its own index and k-NN setting, the version embedding used),
and the blessing: accuracy > baseline and (no champion, or accuracy >= champion's + min_improvement)."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest
from analysis_testdata import cluster_points, one_error_line, run_args, unit_rows
from champion_testdata import (
    deploy_champion,
    embed_for_champion,
    index_bytes,
    old_layout_embeddings,
    with_more_errors,
)
from test_kfp_outputs import _typed_outputs

from mnist_ct.analysis.__main__ import main
from mnist_ct.artifacts import EXIT_BAD_INPUT, EXIT_USAGE, VERSIONS_ENV, find_champion, read_manifest
from mnist_ct.artifacts.testing import read_executor_output

CHALLENGER = 0.92  # the crafted run: 4 errors in 50 test digits


def _metrics(paths) -> dict:
    return json.loads((paths.analysis / "metrics.json").read_text())


def _outputs(tmp_path) -> tuple[list[str], dict[str, object]]:
    files = {name: tmp_path / "kfp" / name for name in ("accuracy", "champion_accuracy", "blessed")}
    args = [f"--{name.replace('_', '-')}-out={path}" for name, path in files.items()]
    return args, files


def _read(files) -> dict[str, str]:
    return {name: path.read_text() for name, path in files.items()}


def _same_as_challenger(crafted) -> None:
    """The champion is this very model: its index is the run's gallery, its test vectors the run's."""
    deploy_champion(crafted.paths.deploy_root, "r0", crafted.gallery.vectors, crafted.gallery.labels)
    embed_for_champion(crafted, crafted.queries.vectors)


def test_without_a_champion_the_baseline_alone_blesses(crafted, tmp_path, capsys):
    embed_for_champion(crafted, None)
    args, files = _outputs(tmp_path)
    assert main([a for a in run_args(crafted.paths, *args) if a != "--quiet"]) == 0
    metrics = _metrics(crafted.paths)
    assert metrics["champion"] is None
    assert metrics["blessing"] == {
        "blessed": True,
        "baseline": 0.8,
        "min_improvement": 0.0,
        "reason": "> baseline 0.8000, no champion",
    }
    assert _read(files) == {"accuracy": "0.92", "champion_accuracy": "-1.0", "blessed": "true"}
    err = capsys.readouterr().err
    line = "challenger 0.9200 (no champion) on this run's 50 test digits: blessed (> baseline 0.8000, no champion)"
    assert line in err, err


def test_without_a_champion_an_accuracy_at_the_baseline_is_not_blessed(crafted, tmp_path):
    embed_for_champion(crafted, None)
    args, files = _outputs(tmp_path)
    assert main(run_args(crafted.paths, *args, "--baseline", "0.92")) == 0
    assert _read(files)["blessed"] == "false"
    assert _metrics(crafted.paths)["blessing"]["reason"] == "<= baseline 0.9200"


def test_old_embeddings_without_champion_meta_are_read_while_nothing_is_live(crafted, tmp_path):
    old_layout_embeddings(crafted)
    args, files = _outputs(tmp_path)
    assert main(run_args(crafted.paths, *args)) == 0
    assert _read(files) == {"accuracy": "0.92", "champion_accuracy": "-1.0", "blessed": "true"}


def test_a_champion_equal_to_the_challenger_has_its_accuracy_and_is_matched_not_beaten(crafted, tmp_path, capsys):
    _same_as_challenger(crafted)
    args, files = _outputs(tmp_path)
    assert main([a for a in run_args(crafted.paths, *args) if a != "--quiet"]) == 0
    metrics = _metrics(crafted.paths)
    champion = find_champion(crafted.paths.deploy_root)
    assert champion is not None
    assert metrics["champion"] == {
        "version": "r0",
        "run_id": "r0",
        "accuracy": metrics["accuracy"],
        "archive_sha256": champion.archive_sha256,
        "k": 1,
        "vote": "majority",
        "recorded_accuracy": 0.95,
    }
    assert _read(files) == {"accuracy": "0.92", "champion_accuracy": "0.92", "blessed": "true"}
    assert metrics["blessing"]["reason"] == ">= champion + 0.0000"
    err = capsys.readouterr().err
    line = "challenger 0.9200 vs champion r0 0.9200 on this run's 50 test digits: blessed (>= champion + 0.0000)"
    assert line in err, err

    assert main(run_args(crafted.paths, *args, "--min-improvement", "0.01")) == 0
    assert _read(files) == {"accuracy": "0.92", "champion_accuracy": "0.92", "blessed": "false"}
    assert _metrics(crafted.paths)["blessing"] == {
        "blessed": False,
        "baseline": 0.8,
        "min_improvement": 0.01,
        "reason": "< champion + 0.0100 = 0.9300",
    }


def test_a_worse_champion_is_beaten_and_a_better_one_is_not(crafted, tmp_path):
    deploy_champion(crafted.paths.deploy_root, "r0", crafted.gallery.vectors, crafted.gallery.labels)
    embed_for_champion(crafted, with_more_errors(crafted, 3))  # 7 errors: 0.86
    args, files = _outputs(tmp_path)
    assert main(run_args(crafted.paths, *args)) == 0
    assert _read(files) == {"accuracy": "0.92", "champion_accuracy": "0.86", "blessed": "true"}
    assert main(run_args(crafted.paths, *args, "--min-improvement", "0.07")) == 0
    assert _read(files)["blessed"] == "false"

    better = unit_rows(cluster_points(crafted.queries.labels, seed=2))  # no crafted errors: 1.0
    embed_for_champion(crafted, better)
    assert main(run_args(crafted.paths, *args)) == 0
    assert _read(files) == {"accuracy": "0.92", "champion_accuracy": "1.0", "blessed": "false"}


def test_the_champion_is_measured_in_its_own_index_with_its_own_serving_setting(crafted, tmp_path):
    # Another model: 12-dimensional vectors, its own gallery; served with a 5-NN distance vote.
    labels = np.repeat(np.arange(10), 7).astype(np.int64)
    own = np.random.default_rng(5).normal(size=(10, 12))
    gallery = unit_rows(own[labels] + 0.05 * np.random.default_rng(6).normal(size=(len(labels), 12)))
    test = unit_rows(own[crafted.queries.labels] + 0.05 * np.random.default_rng(8).normal(size=(50, 12)))
    test[:5] = unit_rows(own[[1, 2, 3, 4, 5]])  # the five zeros it gets wrong
    deploy_champion(crafted.paths.deploy_root, "r0", gallery, labels, serving={"k": 5, "vote": "distance"})
    embed_for_champion(crafted, test)
    args, files = _outputs(tmp_path)
    assert main(run_args(crafted.paths, *args, "--k", "3")) == 0
    metrics = _metrics(crafted.paths)
    assert (metrics["k"], metrics["champion"]["k"], metrics["champion"]["vote"]) == (3, 5, "distance")
    assert _read(files)["champion_accuracy"] == "0.9"


def test_the_champion_embedding_used_is_measured_even_after_another_version_went_live(crafted, tmp_path):
    _same_as_challenger(crafted)
    embedded = read_manifest(crafted.paths.embeddings).meta["champion"]
    # Deployed between embedding and analysis: a version whose index would give every query the wrong class.
    wrong = (crafted.gallery.labels + 1) % 10
    deploy_champion(crafted.paths.deploy_root, "r1", crafted.gallery.vectors, wrong)
    live = find_champion(crafted.paths.deploy_root)
    assert live is not None and live.version == "r1"
    args, files = _outputs(tmp_path)
    assert main(run_args(crafted.paths, *args)) == 0
    metrics = _metrics(crafted.paths)
    assert metrics["champion"]["version"] == "r0" == embedded["version"]
    assert metrics["champion"]["archive_sha256"] == embedded["archive_sha256"]
    assert _read(files)["champion_accuracy"] == "0.92"


def test_the_kfp_metrics_artifact_and_the_manifest_record_the_judgement(crafted, tmp_path, monkeypatch):
    versions = {"preprocess": "0.4.0", "analysis": "0.4.0"}
    monkeypatch.setenv(VERSIONS_ENV, json.dumps(versions))
    _same_as_challenger(crafted)
    output_file, _, args = _typed_outputs(tmp_path)
    assert main(run_args(crafted.paths, *args, "--min-improvement", "0.02")) == 0
    scores = read_executor_output(output_file)["metrics"]
    assert scores["champion_accuracy"] == 0.92 and scores["blessed"] is False and scores["accuracy"] == 0.92
    meta = read_manifest(crafted.paths.analysis).meta
    assert meta["versions"] == versions and meta["champion_accuracy"] == 0.92 and meta["blessed"] is False
    assert _metrics(crafted.paths)["versions"] == versions


def test_the_report_shows_challenger_against_champion_and_why(crafted):
    _same_as_challenger(crafted)
    assert main(run_args(crafted.paths, "--min-improvement", "0.01")) == 0
    html = (crafted.paths.analysis / "report.html").read_text()
    assert '<h2 id="champion">Challenger vs champion</h2>' in html
    assert '<span class="bad">not blessed</span>' in html
    assert "&lt; champion + 0.0100 = 0.9300" in html
    assert "<code>r0</code></td><td>0.9200</td><td>4</td><td>1</td>" in html


@pytest.mark.parametrize(
    ("option", "value"),
    [("--baseline", "1.5"), ("--baseline", "nan"), ("--min-improvement", "2"), ("--model-name", "../x")],
)
def test_bad_input_blessing_options_exit_2_at_parse_time(crafted, capsys, option, value):
    assert main(run_args(crafted.paths, option, value)) == EXIT_USAGE
    last = capsys.readouterr().err.strip().splitlines()[-1]
    assert f"argument {option}" in last, last
    assert not crafted.paths.analysis.exists()


def test_bad_input_a_tampered_champion_archive_exits_3(crafted, capsys):
    _same_as_challenger(crafted)
    archive = crafted.paths.deploy_root / "history" / "r0" / "mnist.mar"
    data = bytearray(archive.read_bytes())
    data[len(data) // 2] ^= 0xFF
    archive.write_bytes(bytes(data))
    assert main(run_args(crafted.paths)) == EXIT_BAD_INPUT
    assert f"{archive}: sha256 " in one_error_line(capsys.readouterr().err)
    assert not crafted.paths.analysis.exists()


def test_bad_input_a_history_entry_rewritten_since_embedding_exits_3(crafted, capsys):
    _same_as_challenger(crafted)
    shutil.rmtree(crafted.paths.deploy_root / "history" / "r0")  # and published again: same version, new archive
    deploy_champion(crafted.paths.deploy_root, "r0", crafted.gallery.vectors, crafted.gallery.labels, accuracy=0.5)
    assert main(run_args(crafted.paths)) == EXIT_BAD_INPUT
    line = one_error_line(capsys.readouterr().err)
    assert "but the embedding step embedded version r0 from an archive with" in line, line


@pytest.mark.parametrize(
    ("members", "needle"),
    [
        ({"index.faiss": b"not an index"}, "FAISS cannot read its index.faiss"),
        ({"labels.npy": b"not an array"}, "its labels.npy is not a readable .npy array"),
        ({"index.faiss": index_bytes(np.eye(16, dtype=np.float32)[:3])}, "index.faiss holds 3 vectors but labels"),
    ],
    ids=["index", "labels", "sizes"],
)
def test_bad_input_a_broken_champion_exits_3(crafted, capsys, members, needle):
    deploy_champion(crafted.paths.deploy_root, "r0", crafted.gallery.vectors, crafted.gallery.labels, members=members)
    embed_for_champion(crafted, crafted.queries.vectors)
    assert main(run_args(crafted.paths)) == EXIT_BAD_INPUT
    line = one_error_line(capsys.readouterr().err)
    assert needle in line and "roll back or redeploy" in line, line


def test_bad_input_a_champion_of_another_dimension_than_its_embeddings_exits_3(crafted, capsys):
    deploy_champion(crafted.paths.deploy_root, "r0", crafted.gallery.vectors, crafted.gallery.labels)
    embed_for_champion(crafted, unit_rows(np.ones((50, 4), np.float32)))
    assert main(run_args(crafted.paths)) == EXIT_BAD_INPUT
    assert "its index.faiss has dimension 16 but" in one_error_line(capsys.readouterr().err)


def test_bad_input_old_embeddings_while_a_champion_is_live_exit_3(crafted, capsys):
    deploy_champion(crafted.paths.deploy_root, "r0", crafted.gallery.vectors, crafted.gallery.labels)
    old_layout_embeddings(crafted)
    assert main(run_args(crafted.paths)) == EXIT_BAD_INPUT
    line = one_error_line(capsys.readouterr().err)
    assert "has no champion embeddings" in line and "mnist version r0 is live" in line, line


def test_bad_input_champion_meta_without_its_vectors_exits_3(crafted, capsys):
    deploy_champion(crafted.paths.deploy_root, "r0", crafted.gallery.vectors, crafted.gallery.labels)
    live = find_champion(crafted.paths.deploy_root)
    assert live is not None
    embed_for_champion(crafted, None, meta=live.summary())
    assert main(run_args(crafted.paths)) == EXIT_BAD_INPUT
    assert "champion/test.npy: not listed in the embeddings manifest" in one_error_line(capsys.readouterr().err)


def test_bad_input_embeddings_of_another_models_champion_exit_3(crafted, capsys):
    _same_as_challenger(crafted)
    assert main(run_args(crafted.paths, "--model-name", "fashion")) == EXIT_BAD_INPUT
    line = one_error_line(capsys.readouterr().err)
    assert "meta.champion is model 'mnist', but analysis compares with --model-name fashion" in line, line
