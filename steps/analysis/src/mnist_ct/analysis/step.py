"""The step, top to bottom: read index, embeddings and data set; classify; measure the champion on the same test
digits; bless or not; publish metrics and the report."""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import faiss
import numpy as np

from mnist_ct.artifacts import (
    DEFAULT_MODEL_NAME,
    MAX_THREADS,
    ArtifactError,
    ArtifactWriter,
    Embeddings,
    KfpOutputs,
    Log,
    Manifest,
    Producer,
    RunPaths,
    Split,
    UsageError,
    check_distinct,
    check_model_name,
    check_output_file,
    check_writable,
    file_uri,
    os_errors_named,
    publish,
    read_embeddings,
    read_split,
    thread_count,
)

from . import kfp_outputs
from .champion import Blessing, ChampionResult, bless, measure_champion, verdict_line
from .classify import VOTES, Neighbours, predicted_labels, search
from .figures import confusion_svg, projection_svg
from .index_artifact import IndexArtifact, read_index
from .lineage import LineageEntry, trace
from .metrics import Evaluation, confusion_csv, evaluate
from .report import Misclassified, ReportData, render

STEP = "analysis"
ANALYSIS_KIND = "analysis"
GALLERY, QUERIES = "train", "test"
MAX_K = 1024  # a vote over more neighbours than this no longer says much about the nearest ones
MAX_EXAMPLES = 10_000  # misclassified digits shown in the report (each one an inline PNG)


@dataclass(frozen=True)
class Options:
    k: int = 1
    vote: str = "majority"
    accuracy_out: Path | None = None
    metrics_out: Path | None = None
    ui_metadata_out: Path | None = None
    max_examples: int = 100
    threads: int = 0  # FAISS (OpenMP) threads; 0: every core this process may use
    baseline: float = 0.8  # blessed only above this accuracy
    min_improvement: float = 0.0  # ... and only at least this much above the champion's, on the same digits
    model_name: str = DEFAULT_MODEL_NAME  # the served model whose champion is measured
    champion_accuracy_out: Path | None = None
    blessed_out: Path | None = None
    versions: Mapping[str, str] = field(default_factory=dict)  # MNIST_CT_STEP_VERSIONS, recorded for deploy
    # The typed KFP artifacts (metrics, confusion_matrix, report) and MNIST_CT_IMAGES, checked when made.
    kfp: KfpOutputs = field(default_factory=lambda: KfpOutputs(STEP, kfp_outputs.ARTIFACTS))

    def __post_init__(self) -> None:
        if not 1 <= self.k <= MAX_K:
            raise UsageError(f"--k {self.k}: give 1..{MAX_K} neighbours per query")
        if self.vote not in VOTES:
            raise UsageError(f"--vote {self.vote!r}: choose one of {', '.join(VOTES)}")
        if not 0 <= self.max_examples <= MAX_EXAMPLES:
            raise UsageError(f"--max-examples {self.max_examples}: give 0..{MAX_EXAMPLES}")
        if not 0 <= self.threads <= MAX_THREADS:
            raise UsageError(f"--threads {self.threads}: give 0..{MAX_THREADS} (0: every core this process may use)")
        if not 0.0 <= self.baseline <= 1.0:
            raise UsageError(f"--baseline {self.baseline}: give an accuracy in 0..1")
        if not -1.0 <= self.min_improvement <= 1.0:
            raise UsageError(f"--min-improvement {self.min_improvement}: give -1..1 (an accuracy difference)")
        check_model_name(self.model_name)
        for option, path in self.output_files().items():
            check_output_file(option, path)
        check_distinct({**self.output_files(), **self.kfp.output_files()})
        for path in self.output_files().values():
            check_writable(path)  # a read-only volume: exit 5 before any work (the KFP files are checked too)

    def output_files(self) -> dict[str, Path]:
        """The files written outside the artifact besides the typed KFP artifacts, by the option that names them."""
        files = {
            "--accuracy-out": self.accuracy_out,
            "--champion-accuracy-out": self.champion_accuracy_out,
            "--blessed-out": self.blessed_out,
            "--metrics-out": self.metrics_out,
            "--ui-metadata-out": self.ui_metadata_out,
        }
        return {option: Path(path) for option, path in files.items() if path is not None}


@dataclass
class Inputs:
    embeddings_manifest: Manifest
    gallery: Embeddings
    queries: Embeddings
    index: IndexArtifact
    data_manifest: Manifest
    test: Split


def read_inputs(paths: RunPaths) -> Inputs:
    """Read and cross-check everything analysis needs; any inconsistency is one ArtifactError."""
    emb_manifest, splits = read_embeddings(paths.embeddings)
    for name in (GALLERY, QUERIES):
        if name not in splits:
            raise ArtifactError(
                f"{paths.embeddings}: no {name!r} split (has {sorted(splits)}); rerun the embedding step"
            )
    index = read_index(paths.index)
    if index.manifest.inputs.get("embeddings") != emb_manifest.digest:
        raise ArtifactError(
            f"{paths.index}: built from other embeddings than {paths.embeddings} holds now "
            "(manifest sha256 differs); rerun train_faiss"
        )
    gallery, queries = splits[GALLERY], splits[QUERIES]
    if gallery.vectors.shape[1] != queries.vectors.shape[1]:
        raise ArtifactError(
            f"{paths.embeddings}: train and test embeddings differ in dimension "
            f"({gallery.vectors.shape[1]} vs {queries.vectors.shape[1]}); rerun the embedding step"
        )
    if index.dim != queries.vectors.shape[1]:
        raise ArtifactError(
            f"{paths.index / 'index.faiss'} has dimension {index.dim} but {paths.embeddings / 'test.npy'} has "
            f"{queries.vectors.shape[1]}; they come from different models: rerun train_faiss"
        )
    data_manifest, test = read_split(paths.dataset, QUERIES, mmap=True)
    recorded = emb_manifest.inputs.get("dataset")
    if recorded is not None and recorded != data_manifest.digest:
        raise ArtifactError(
            f"{paths.embeddings}: computed from another data set than {paths.dataset} holds now "
            "(manifest sha256 differs); rerun the embedding step"
        )
    if len(test) != len(queries) or not np.array_equal(np.asarray(test.labels), queries.labels):
        raise ArtifactError(
            f"{paths.dataset}: the test split ({len(test)} digits) does not match the test embeddings "
            f"({len(queries)}) digit for digit; rerun the embedding step"
        )
    return Inputs(emb_manifest, gallery, queries, index, data_manifest, test)


def pick_misclassified(
    evaluation: Evaluation, neighbours: Neighbours, images: np.ndarray, limit: int
) -> list[Misclassified]:
    """Up to `limit` errors, taken in turn from each true class, shown ordered by true class."""
    wrong = np.flatnonzero(evaluation.y_true != evaluation.y_pred)
    by_class = [list(wrong[evaluation.y_true[wrong] == c]) for c in range(10)]
    picked: list[int] = []
    while len(picked) < min(limit, len(wrong)):
        for queue in by_class:
            if queue and len(picked) < limit:
                picked.append(int(queue.pop(0)))
    picked.sort(key=lambda q: (int(evaluation.y_true[q]), int(evaluation.y_pred[q]), q))
    return [
        Misclassified(
            query=q,
            image=np.asarray(images[q]),
            true=int(evaluation.y_true[q]),
            predicted=int(evaluation.y_pred[q]),
            score=float(neighbours.scores[q, 0]) if neighbours.ids[q, 0] >= 0 else float("nan"),
        )
        for q in picked
    ]


def metrics_document(
    run_id: str,
    options: Options,
    evaluation: Evaluation,
    inputs: Inputs,
    lineage: list[LineageEntry],
    champion: ChampionResult | None,
    blessing: Blessing,
) -> dict[str, Any]:
    info = inputs.index.info
    return {
        "accuracy": evaluation.accuracy,
        "run_id": run_id,
        "k": options.k,
        "vote": options.vote,
        "queries": len(evaluation.y_true),
        "gallery": int(inputs.index.index.ntotal),
        "errors": evaluation.errors,
        "unanswered": evaluation.unanswered,
        "macro_avg": evaluation.macro(),
        "per_class": evaluation.per_class(),
        "confusion_matrix": {
            "rows": "true class",
            "columns": "predicted class",
            "labels": list(range(10)),
            "matrix": evaluation.confusion.tolist(),
        },
        "index": {
            key: info.get(key) for key in ("factory", "metric", "size", "search_params", "recall_at_1", "recall_at_10")
        },
        "data_manifest": inputs.data_manifest.digest,
        "data_version": inputs.data_manifest.meta.get("data_version"),
        "lineage": [entry.to_json() for entry in lineage],
        "images": dict(options.kfp.images),  # MNIST_CT_IMAGES: every step's image; {} when run by hand
        "versions": dict(options.versions),  # MNIST_CT_STEP_VERSIONS likewise
        "champion": champion.to_json() if champion else None,
        "blessing": blessing.to_json(),
    }


def run(paths: RunPaths, options: Options, log: Log) -> None:
    """Classify every test embedding by k-NN in the index, publish the analysis, write the KFP outputs."""
    faiss.omp_set_num_threads(thread_count(options.threads))
    inputs = read_inputs(paths)
    ntotal = int(inputs.index.index.ntotal)
    if options.k > ntotal:
        raise UsageError(f"--k {options.k} is more than the {ntotal} vectors in the index {paths.index}")
    with log.work():  # search + metrics + report (mnist_ct.artifacts.timing: the step's own work)
        neighbours = search(inputs.index.index, inputs.index.labels, np.asarray(inputs.queries.vectors), options.k)
        evaluation = evaluate(inputs.queries.labels, predicted_labels(neighbours, options.vote))
        champion = measure_champion(paths, options.model_name, inputs.embeddings_manifest, inputs.queries.labels)
        blessing = bless(evaluation.accuracy, champion, options.baseline, options.min_improvement)

        lineage = trace(
            paths,
            {"index": inputs.index.manifest, "embeddings": inputs.embeddings_manifest, "dataset": inputs.data_manifest},
        )
        for entry in lineage:
            if entry.artifact in ("index", "embeddings", "dataset"):
                entry.used_by.append(STEP)
        document = metrics_document(paths.run_id, options, evaluation, inputs, lineage, champion, blessing)
        report = render(
            ReportData(
                run_id=paths.run_id,
                k=options.k,
                vote=options.vote,
                evaluation=evaluation,
                gallery_size=ntotal,
                index_info=inputs.index.info,
                lineage=lineage,
                data_digest=inputs.data_manifest.digest,
                dataset_meta=inputs.data_manifest.meta,
                images=dict(options.kfp.images),
                champion=champion,
                blessing=blessing,
                confusion_svg=confusion_svg(evaluation.confusion),
                projection_svg=projection_svg(
                    np.asarray(inputs.gallery.vectors),
                    np.asarray(inputs.queries.vectors),
                    evaluation.y_true,
                    evaluation.y_pred,
                ),
                misclassified=pick_misclassified(evaluation, neighbours, inputs.test.images, options.max_examples),
            )
        )

    upstream = {
        "index": inputs.index.manifest.digest,
        "embeddings": inputs.embeddings_manifest.digest,
        "dataset": inputs.data_manifest.digest,
    }
    files = {
        "metrics.json": (json.dumps(document, indent=2, sort_keys=True) + "\n").encode(),
        "confusion_matrix.csv": confusion_csv(evaluation.confusion).encode(),
        "report.html": report.encode("utf-8"),
    }
    # The KFP files are written beside their places first and moved in only once the artifact is published:
    # a full disk on either side leaves neither.
    with options.kfp.writing(paths.run_id) as out:
        add_kfp_files(out, options, evaluation, files, paths.analysis, champion, blessing)
        with publish(paths.analysis, ANALYSIS_KIND, Producer.of(STEP), inputs=upstream) as staging:
            for name, data in files.items():
                write_file(staging.path / name, data)
            staging.meta.update(
                {
                    "accuracy": evaluation.accuracy,
                    "k": options.k,
                    "vote": options.vote,
                    "queries": len(evaluation.y_true),
                    "errors": evaluation.errors,
                    # The run's lineage for deploy: which data and which images made this model.
                    "data_version": inputs.data_manifest.meta.get("data_version"),
                    "images": dict(options.kfp.images),
                    "versions": dict(options.versions),
                    "champion_accuracy": champion_accuracy(champion),
                    "blessed": blessing.blessed,
                }
            )
    log(
        f"accuracy {evaluation.accuracy:.4f} ({options.k}-NN, {options.vote} vote) on {len(evaluation.y_true)} "
        f"queries, {evaluation.errors} errors -> {paths.analysis}"
    )
    log(verdict_line(evaluation.accuracy, len(evaluation.y_true), champion, blessing))


def champion_accuracy(champion: ChampionResult | None) -> float:
    """The champion's accuracy on this run's test split; -1.0 when there is none (the KFP parameter's value)."""
    return champion.accuracy if champion else -1.0


def write_file(path: Path, data: bytes) -> None:
    """Write `data` to `path`; an OS error names the path (a failed write() alone does not say which file)."""
    with os_errors_named(path), open(path, "wb") as f:
        f.write(data)


def add_kfp_files(
    out: ArtifactWriter,
    options: Options,
    evaluation: Evaluation,
    files: dict[str, bytes],
    folder: Path,
    champion: ChampionResult | None,
    blessing: Blessing,
) -> None:
    """Stage the typed KFP artifacts (metrics, confusion_matrix, report) and the other files KFP reads back."""
    figures = kfp_outputs.metrics_metadata(evaluation)
    uri = {"uri": file_uri(folder)}
    judged = {"champion_accuracy": champion_accuracy(champion), "blessed": blessing.blessed}
    out.add("metrics", files["metrics.json"], {**figures, **judged, "k": options.k, "vote": options.vote, **uri})
    confusion = {"confusionMatrix": kfp_outputs.confusion_matrix_struct(evaluation)}
    out.add("confusion_matrix", files["confusion_matrix.csv"], confusion)
    out.add("report", files["report.html"], {"accuracy": evaluation.accuracy, **uri})

    def as_json(obj: Any) -> bytes:
        return (json.dumps(obj, indent=2, sort_keys=True) + "\n").encode()

    if options.accuracy_out:
        out.file(options.accuracy_out, kfp_outputs.accuracy_text(evaluation.accuracy))
    if options.champion_accuracy_out:
        out.file(options.champion_accuracy_out, kfp_outputs.accuracy_text(champion_accuracy(champion)))
    if options.blessed_out:
        out.file(options.blessed_out, kfp_outputs.bool_text(blessing.blessed))
    if options.metrics_out:
        out.file(options.metrics_out, as_json(kfp_outputs.mlpipeline_metrics(evaluation)))
    if options.ui_metadata_out:
        report = files["report.html"].decode("utf-8")
        out.file(options.ui_metadata_out, as_json(kfp_outputs.ui_metadata(evaluation, options.k, options.vote, report)))
