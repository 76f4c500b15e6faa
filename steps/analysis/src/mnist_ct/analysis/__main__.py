"""python -m mnist_ct.analysis: the argument parser; the step itself is step.py."""

from __future__ import annotations

import argparse
from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

from mnist_ct.artifacts import (
    DEFAULT_MODEL_NAME,
    KfpOutputs,
    UsageError,
    add_kfp_arguments,
    add_run_arguments,
    add_threads_argument,
    bounded_float,
    bounded_int,
    check_model_name,
    check_output_file,
    step_main,
    step_versions,
)

from .classify import VOTES
from .kfp_outputs import ARTIFACTS
from .step import MAX_EXAMPLES, MAX_K, STEP, Options, run

T = TypeVar("T")


def _usage_checked(check: Callable[[str], T]) -> Callable[[str], T]:
    """An argparse type from a check that raises UsageError (argparse then names the option)."""

    def parse(text: str) -> T:
        try:
            return check(text)
        except UsageError as e:
            raise argparse.ArgumentTypeError(str(e)) from None

    parse.__name__ = check.__name__
    return parse


def output_file(text: str) -> Path:
    """argparse type: a file to write (not a folder, nothing that is a file on the way to it)."""
    return check_output_file("", Path(text))


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m mnist_ct.analysis",
        description=(
            "Classify every test digit of run R by its k nearest neighbours in the FAISS index; compute accuracy, "
            "per-class precision/recall/F1 and the confusion matrix; write <model-root>/runs/R/analysis/"
            "{metrics.json,confusion_matrix.csv,report.html}. Reads <model-root>/runs/R/{index,embeddings} and "
            "<data-root>/runs/R/dataset (test images for the report). The champion (the version embedding embedded "
            "the test split with) is measured on the same digits in its own index; blessed when the accuracy is above "
            "--baseline and at least the champion's + --min-improvement."
        ),
        epilog="Exit codes: 0 done, 2 bad usage, 3 bad input, 5 the environment (disk full, read-only volume).",
    )
    add_run_arguments(parser)
    parser.add_argument(
        "--k",
        type=bounded_int(1, MAX_K),
        default=1,
        help=f"neighbours per query, 1..{MAX_K} and at most the index's size (default: %(default)s)",
    )
    parser.add_argument(
        "--vote",
        choices=VOTES,
        default="majority",
        help="majority: one vote per neighbour; distance: weight 1/Euclidean distance. Ties go to the class of "
        "the nearest tied neighbour (default: %(default)s)",
    )
    blessing = parser.add_argument_group("blessing: may this model replace the champion?")
    blessing.add_argument(
        "--baseline",
        type=bounded_float(0.0, 1.0),
        default=0.8,
        help="blessed only when the accuracy is above this (default: %(default)s)",
    )
    blessing.add_argument(
        "--min-improvement",
        type=bounded_float(-1.0, 1.0),
        default=0.0,
        help="... and at least the champion's accuracy on this run's test split plus this (default: %(default)s)",
    )
    blessing.add_argument(
        "--model-name",
        type=_usage_checked(check_model_name),
        default=DEFAULT_MODEL_NAME,
        help="the served model whose champion is measured (as given to embedding; default: %(default)s)",
    )
    add_kfp_arguments(parser, ARTIFACTS)
    kfp = parser.add_argument_group(
        "other files Kubeflow Pipelines reads back (each optional; parent folders are created)"
    )
    file_type = _usage_checked(output_file)
    kfp.add_argument("--accuracy-out", type=file_type, help="write the accuracy as a bare float (KFP output parameter)")
    kfp.add_argument(
        "--champion-accuracy-out",
        type=file_type,
        help="write the champion's accuracy on this run's test split as a bare float, -1.0 when there is none",
    )
    kfp.add_argument("--blessed-out", type=file_type, help="write true or false: blessed (KFP output parameter)")
    kfp.add_argument(
        "--metrics-out",
        type=file_type,
        help='write {"metrics": [{"name", "numberValue", "format"}]} (mlpipeline-metrics)',
    )
    kfp.add_argument(
        "--ui-metadata-out",
        type=file_type,
        help="write mlpipeline-ui-metadata: inline confusion matrix, markdown summary, the report as a web app",
    )
    parser.add_argument(
        "--max-examples",
        type=bounded_int(0, MAX_EXAMPLES),
        default=100,
        help=f"misclassified digits shown in the report, 0..{MAX_EXAMPLES} (default: %(default)s)",
    )
    add_threads_argument(parser, used_by="FAISS (OpenMP)")
    return parser


def options_from_args(args: argparse.Namespace) -> Options:
    return Options(
        k=args.k,
        vote=args.vote,
        accuracy_out=args.accuracy_out,
        champion_accuracy_out=args.champion_accuracy_out,
        blessed_out=args.blessed_out,
        baseline=args.baseline,
        min_improvement=args.min_improvement,
        model_name=args.model_name,
        versions=step_versions(),
        metrics_out=args.metrics_out,
        ui_metadata_out=args.ui_metadata_out,
        kfp=KfpOutputs.from_args(STEP, ARTIFACTS, args),
        max_examples=args.max_examples,
        threads=args.threads,
    )


def main(argv: list[str] | None = None) -> int:
    return step_main(STEP, build_parser(), options_from_args, run, argv)


if __name__ == "__main__":
    raise SystemExit(main())
