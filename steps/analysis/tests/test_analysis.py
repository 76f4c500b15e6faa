"""analysis end to end on a crafted run whose errors are known before it runs."""

from __future__ import annotations

import base64
import csv
import io
import json
import re
import xml.etree.ElementTree as ET
from html.parser import HTMLParser
from pathlib import Path

import faiss
import numpy as np
import pytest
from analysis_testdata import (
    CRAFTED_ERRORS,
    QUERIES_PER_CLASS,
    run_args,
    write_dataset_artifact,
    write_embeddings_artifact,
    write_index_artifact,
    write_model_artifact,
)
from PIL import Image

from mnist_ct.analysis.__main__ import build_parser, main
from mnist_ct.analysis.step import Options
from mnist_ct.artifacts import (
    Embeddings,
    Producer,
    UsageError,
    publish,
    read_manifest,
    read_verified,
    thread_count,
)
from mnist_ct.artifacts.testing import assert_readme_documents

SVG = "{http://www.w3.org/2000/svg}"


def _metrics(paths) -> dict:
    return json.loads((paths.analysis / "metrics.json").read_text())


def test_crafted_errors_give_the_exact_confusion_matrix_and_accuracy(crafted):
    assert main(run_args(crafted.paths)) == 0

    metrics = _metrics(crafted.paths)
    assert crafted.expected_accuracy == 46 / 50
    assert metrics["accuracy"] == crafted.expected_accuracy
    assert metrics["errors"] == len(CRAFTED_ERRORS)
    assert metrics["confusion_matrix"]["matrix"] == crafted.expected_confusion.tolist()
    with open(crafted.paths.analysis / "confusion_matrix.csv", newline="") as f:
        rows = list(csv.reader(f))
    assert rows[0] == ["true\\predicted", *map(str, range(10))]
    assert [[int(v) for v in row[1:]] for row in rows[1:]] == crafted.expected_confusion.tolist()


def test_per_class_figures_follow_from_the_crafted_errors(crafted):
    assert main(run_args(crafted.paths)) == 0

    per_class = _metrics(crafted.paths)["per_class"]
    # 3 loses two queries (to 5 and 8); 7 and 9 lose one each (to 1 and 4).
    assert per_class["3"]["recall"] == pytest.approx(3 / 5)
    assert per_class["7"]["recall"] == pytest.approx(4 / 5)
    assert per_class["3"]["precision"] == 1.0
    for receiver in ("5", "8", "1", "4"):
        assert per_class[receiver]["precision"] == pytest.approx(5 / 6)
        assert per_class[receiver]["f1"] == pytest.approx(2 * (5 / 6) / (5 / 6 + 1))
    assert per_class["0"] == {"precision": 1.0, "recall": 1.0, "f1": 1.0, "support": QUERIES_PER_CLASS}


def test_the_analysis_artifact_is_published_with_its_inputs(crafted):
    assert main(run_args(crafted.paths)) == 0

    manifest = read_verified(crafted.paths.analysis, "analysis")
    assert sorted(manifest.files) == ["confusion_matrix.csv", "metrics.json", "report.html"]
    assert manifest.inputs == {
        "index": read_manifest(crafted.paths.index).digest,
        "embeddings": read_manifest(crafted.paths.embeddings).digest,
        "dataset": read_manifest(crafted.paths.dataset).digest,
    }
    assert manifest.meta["accuracy"] == 46 / 50
    assert (manifest.meta["k"], manifest.meta["vote"]) == (1, "majority")


def test_accuracy_out_holds_the_bare_float_in_a_new_folder(crafted, tmp_path):
    out = tmp_path / "kfp" / "outputs" / "accuracy" / "data"

    assert main(run_args(crafted.paths, "--accuracy-out", str(out))) == 0

    assert out.read_text() == "0.92"
    assert float(out.read_text()) == _metrics(crafted.paths)["accuracy"]


def test_k_and_vote_are_recorded(crafted):
    assert main(run_args(crafted.paths, "--k", "3", "--vote", "distance")) == 0

    metrics = _metrics(crafted.paths)
    assert (metrics["k"], metrics["vote"]) == (3, "distance")
    # A crafted query sits on another class's cluster: all three neighbours agree on the wrong class.
    assert metrics["confusion_matrix"]["matrix"] == crafted.expected_confusion.tolist()


class _Page(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.images: list[dict[str, str]] = []
        self.svgs: list[dict[str, str]] = []
        self.tags: list[str] = []
        self.text: list[str] = []

    def handle_starttag(self, tag, attrs):
        self.tags.append(tag)
        if tag == "img":
            self.images.append({k: v or "" for k, v in attrs})
        if tag == "svg":
            self.svgs.append({k: v or "" for k, v in attrs})

    def handle_data(self, data):
        self.text.append(data)


def _page(paths) -> tuple[_Page, str]:
    raw = (paths.analysis / "report.html").read_text(encoding="utf-8")
    page = _Page()
    page.feed(raw)
    return page, raw


def _png(src: str) -> Image.Image:
    prefix = "data:image/png;base64,"
    assert src.startswith(prefix)
    image = Image.open(io.BytesIO(base64.b64decode(src[len(prefix) :])))
    image.load()
    return image


def _svg(raw: str, label: str) -> ET.Element:
    """The inline figure named `label`, parsed as the standalone SVG it is (well-formed XML)."""
    (svg,) = [s for s in re.findall(r"<svg .*?</svg>", raw, re.S) if f'aria-label="{label}"' in s]
    return ET.fromstring(svg.replace("<svg ", '<svg xmlns="http://www.w3.org/2000/svg" ', 1))


def test_report_is_self_contained_with_heatmap_projection_and_the_misclassified_digits(crafted):
    assert main(run_args(crafted.paths)) == 0

    page, raw = _page(crafted.paths)
    assert [s["aria-label"] for s in page.svgs] == ["confusion matrix heatmap", "PCA projection of the test embeddings"]
    assert all(int(s["width"]) > 300 for s in page.svgs)
    heatmap = _svg(raw, "confusion matrix heatmap")
    cell_tips = {t.text or "" for t in heatmap.iter(f"{SVG}title")}
    for t, p in CRAFTED_ERRORS:
        assert any(tip.startswith(f"true {t}, predicted {p}: ") for tip in cell_tips)
    counts = sorted(int(t.text or "") for t in heatmap.iter(f"{SVG}text") if t.get("fill"))
    assert counts == sorted(int(v) for v in crafted.expected_confusion.ravel() if v)
    projection = _svg(raw, "PCA projection of the test embeddings")
    marked = {tip.text for path in projection.iter(f"{SVG}path") if (tip := path.find(f"{SVG}title")) is not None}
    assert marked == {
        f"test #{q}: true {t}, predicted {p}" for q, (t, p) in zip(crafted.crafted, CRAFTED_ERRORS, strict=True)
    }
    digits = {img["alt"]: img["src"] for img in page.images}
    expected = {
        f"test digit {q}: true {t}, predicted {p}" for q, (t, p) in zip(crafted.crafted, CRAFTED_ERRORS, strict=True)
    }
    assert set(digits) == expected
    for src in digits.values():
        assert _png(src).size == (28, 28)
    assert not {"script", "link", "iframe", "object", "embed", "use", "image"} & set(page.tags)
    assert "http://" not in raw and "https://" not in raw and "href" not in raw
    assert re.findall(r"url\((.*?)\)", raw) == ["#blues-bar"]  # the colour bar's gradient, in the page


def test_report_shows_accuracy_per_class_table_and_lineage(crafted):
    assert main(run_args(crafted.paths)) == 0

    page, raw = _page(crafted.paths)
    text = " ".join(page.text)
    assert "accuracy 92.00%" in text
    assert "most often mistaken for" in text
    assert read_manifest(crafted.paths.dataset).digest in raw  # the data manifest hash, in full
    for step in ("preprocess", "train_model", "embedding", "train_faiss"):
        assert f'<td class="l">{step}</td><td class="l">0.1.0</td>' in raw
    assert "replaced since" not in raw and "missing" not in text


def test_lineage_follows_inputs_back_to_the_data(crafted):
    assert main(run_args(crafted.paths)) == 0

    lineage = {e["artifact"]: e for e in _metrics(crafted.paths)["lineage"]}
    assert set(lineage) == {"index", "embeddings", "model", "dataset"}
    assert lineage["model"]["step"] == "train_model" and lineage["model"]["used_by"] == ["embeddings"]
    assert sorted(lineage["dataset"]["used_by"]) == ["analysis", "embeddings", "model"]
    assert all(e["consistent"] for e in lineage.values())
    assert _metrics(crafted.paths)["data_manifest"] == read_manifest(crafted.paths.dataset).digest


def test_a_model_replaced_after_the_embeddings_is_shown_as_a_broken_lineage(crafted):
    write_model_artifact(crafted.paths, read_manifest(crafted.paths.dataset).digest, note="retrained")

    assert main(run_args(crafted.paths)) == 0

    lineage = {e["artifact"]: e for e in _metrics(crafted.paths)["lineage"]}
    assert lineage["model"]["stale_for"] == ["embeddings"] and not lineage["model"]["consistent"]
    assert "replaced since embeddings used it" in _page(crafted.paths)[1]


def test_a_validation_report_appears_in_the_lineage_when_there_is_one(crafted):
    with publish(crafted.paths.validation, "validation", Producer("validate", "0.1.0")) as staging:
        (staging.path / "report.json").write_text("{}")

    assert main(run_args(crafted.paths)) == 0

    lineage = {e["artifact"]: e for e in _metrics(crafted.paths)["lineage"]}
    assert lineage["validation"]["step"] == "validate"


def test_many_errors_are_sampled_across_classes_up_to_the_limit(paths):
    labels = np.repeat(np.arange(10), 6).astype(np.int64)
    rng = np.random.default_rng(0)
    vectors = rng.normal(size=(60, 8)).astype(np.float32)
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    gallery = Embeddings(vectors, labels)
    queries = Embeddings(vectors.copy(), (labels + 1) % 10)  # every query has a wrong label
    dataset = write_dataset_artifact(paths, queries.labels)
    write_embeddings_artifact(paths, gallery, queries, {"dataset": dataset})
    write_index_artifact(paths, vectors, labels)

    assert main(run_args(paths, "--max-examples", "20")) == 0

    page, raw = _page(paths)
    shown = [img["alt"] for img in page.images if img["alt"].startswith("test digit ")]
    assert len(shown) == 20
    assert {int(alt.split("true ")[1].split(",")[0]) for alt in shown} == set(range(10))
    assert "Showing 20 of 60" in raw
    assert _metrics(paths)["accuracy"] == 0.0


def test_help_documents_every_option(capsys):
    assert main(["--help"]) == 0
    out = capsys.readouterr().out
    for option in (
        "--k",
        "--vote",
        "--accuracy-out",
        "--metrics-out",
        "--ui-metadata-out",
        "--executor-input",
        "--output-artifact",
        "--max-examples",
        "--threads",
        "--run-id",
        "--data-root",
        "--model-root",
    ):
        assert option in out


def test_the_readme_documents_every_option_of_the_parser():
    assert_readme_documents(build_parser(), Path(__file__).parents[1] / "README.md")


def test_threads_0_gives_faiss_every_core_this_process_may_use(crafted):
    args = run_args(crafted.paths)
    assert main([*args[: args.index("--threads")], "--threads", "0"]) == 0

    assert faiss.omp_get_max_threads() == thread_count(0)


def test_options_built_in_code_are_checked_too(tmp_path):
    for bad, needle in (
        ({"k": 0}, "--k 0: give 1..1024"),
        ({"k": 1025}, "--k 1025"),
        ({"vote": "loudest"}, "--vote 'loudest': choose one of majority, distance"),
        ({"max_examples": -1}, "--max-examples -1: give 0..10000"),
        ({"threads": 1025}, "--threads 1025: give 0..1024"),
        ({"accuracy_out": tmp_path}, f"--accuracy-out {tmp_path}: is a folder"),
    ):
        with pytest.raises(UsageError, match=re.escape(needle)):
            Options(**bad)
