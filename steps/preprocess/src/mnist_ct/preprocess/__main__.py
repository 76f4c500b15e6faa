"""python -m mnist_ct.preprocess: argument parsing and exit codes (the work is in build.py)."""

from __future__ import annotations

import argparse
from pathlib import Path

from mnist_ct.artifacts import Log, add_run_arguments, positive_int, run_paths, run_step

from .build import Options, preprocess
from .download import RetryPolicy
from .sources import DATASETS, MNIST_5K


def _fraction(text: str) -> float:
    value = float(text)
    if not 0.0 < value < 1.0:
        raise argparse.ArgumentTypeError(f"must be between 0 and 1 (exclusive), got {value}")
    return value


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m mnist_ct.preprocess",
        description=(
            "Collect a digit data set and publish it as checksummed train/test splits under "
            "<data-root>/runs/<run id>/dataset/ (uint8 [N,28,28] images, labels 0..9, manifest.json)."
        ),
        epilog="Exit codes: 0 done, 2 bad usage, 3 bad input (one line on stderr names the file).",
    )
    add_run_arguments(parser)
    parser.add_argument(
        "--dataset",
        choices=DATASETS,
        default=MNIST_5K,
        help="mnist-5k: the 5,000 real MNIST digits shipped in this package (offline, split here); "
        "mnist, fashion-mnist: the four official idx .gz files with their official train/test split "
        "(default: %(default)s)",
    )
    parser.add_argument(
        "--source",
        type=Path,
        metavar="DIR",
        help="read the files from this folder instead of downloading them (mnist, fashion-mnist: the four "
        "idx files, .gz or not, checked for structure; mnist-5k: mnist_5k.csv.gz), "
        "e.g. /usr/share/datasets/fashion-mnist",
    )
    parser.add_argument(
        "--mirror",
        action="append",
        default=[],
        metavar="URL",
        help="base URL to download the idx files from, instead of the built-in mirrors (repeatable, tried in "
        "order); downloads are always checked against the official sha256 and cached in <data-root>/raw/<dataset>/",
    )
    parser.add_argument("--retries", type=positive_int, default=3, help="attempts per mirror (default: %(default)s)")
    parser.add_argument("--seed", type=int, default=0, help="seed for the split and for --limit-per-class")
    parser.add_argument(
        "--limit-per-class",
        type=positive_int,
        metavar="N",
        help="keep at most N images of each class (chosen with --seed) from each source split: from the 5,000 "
        "before the train/test split (mnist-5k), from each official split (mnist, fashion-mnist); for quick runs",
    )
    parser.add_argument(
        "--test-fraction",
        type=_fraction,
        default=0.2,
        help="mnist-5k: share of each class that goes to the test split (default: %(default)s)",
    )
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    options = Options(
        dataset=args.dataset,
        source=args.source,
        seed=args.seed,
        limit_per_class=args.limit_per_class,
        test_fraction=args.test_fraction,
        mirrors=tuple(args.mirror),
        retry=RetryPolicy(attempts=args.retries),
    )
    return run_step("preprocess", lambda: preprocess(run_paths(args), options, Log("preprocess", args.quiet)) and 0)


if __name__ == "__main__":
    raise SystemExit(main())
