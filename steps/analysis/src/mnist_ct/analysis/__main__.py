"""python -m mnist_ct.analysis: argument parsing and exit codes only."""

from __future__ import annotations

import argparse
from pathlib import Path

from mnist_ct.artifacts import Log, add_run_arguments, non_negative_int, positive_int, run_paths, run_step

from .classify import VOTES
from .kfp_outputs import parse_executor_input
from .step import STEP, Options, analyse


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m mnist_ct.analysis",
        description=(
            "Classify every test digit of run R by its k nearest neighbours in the FAISS index; compute accuracy, "
            "per-class precision/recall/F1 and the confusion matrix; write <model-root>/runs/R/analysis/"
            "{metrics.json,confusion_matrix.csv,report.html}. Reads <model-root>/runs/R/{index,embeddings} and "
            "<data-root>/runs/R/dataset (test images for the report)."
        ),
    )
    add_run_arguments(parser)
    parser.add_argument("--k", type=positive_int, default=1, help="neighbours per query (default: %(default)s)")
    parser.add_argument(
        "--vote",
        choices=VOTES,
        default="majority",
        help="majority: one vote per neighbour; distance: weight 1/Euclidean distance. Ties go to the class of "
        "the nearest tied neighbour (default: %(default)s)",
    )
    kfp = parser.add_argument_group("files Kubeflow Pipelines reads back (each optional; parent folders are created)")
    kfp.add_argument("--accuracy-out", type=Path, help="write the accuracy as a bare float (KFP output parameter)")
    kfp.add_argument(
        "--metrics-out", type=Path, help='write {"metrics": [{"name", "numberValue", "format"}]} (mlpipeline-metrics)'
    )
    kfp.add_argument(
        "--ui-metadata-out",
        type=Path,
        help="write mlpipeline-ui-metadata: inline confusion matrix, markdown summary, the report as a web app",
    )
    kfp.add_argument(
        "--executor-input",
        metavar="JSON",
        help="KFP v2 executor input (pass the placeholder {{$}}): the metadata of the task's system.Metrics and "
        "system.ClassificationMetrics output artifacts is written to its outputs.outputFile, so the KFP v2 UI "
        "shows the metrics and the confusion matrix",
    )
    kfp.add_argument("--html-out", type=Path, help="also write the report here (for a KFP system.HTML artifact)")
    parser.add_argument(
        "--max-examples",
        type=non_negative_int,
        default=100,
        help="misclassified digits shown in the report (default: %(default)s)",
    )
    parser.add_argument(
        "--threads",
        type=non_negative_int,
        default=0,
        help="FAISS (OpenMP) threads; 0 leaves FAISS's default (default: %(default)s)",
    )
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)

    def work() -> int:
        options = Options(
            k=args.k,
            vote=args.vote,
            accuracy_out=args.accuracy_out,
            metrics_out=args.metrics_out,
            ui_metadata_out=args.ui_metadata_out,
            executor_input=None if args.executor_input is None else parse_executor_input(args.executor_input),
            html_out=args.html_out,
            max_examples=args.max_examples,
            threads=args.threads,
        )
        analyse(run_paths(args), options, Log(STEP, args.quiet))
        return 0

    return run_step(STEP, work)


if __name__ == "__main__":
    raise SystemExit(main())
