"""python -m mnist_ct.validate: the command line (every option checked when parsed); the step is in step.py."""

from __future__ import annotations

import argparse
from pathlib import Path

from mnist_ct.artifacts import (
    DEFAULT_MODEL_NAME,
    UsageError,
    add_run_arguments,
    bounded_float,
    check_model_name,
    step_main,
)

from .checks import Thresholds
from .step import STEP, Options, reference_folder, run

DEFAULTS = Thresholds()
share = bounded_float(0.0, 1.0)


def reference_arg(text: str) -> Path:
    """argparse type: a data set's manifest.json or its folder (the folder is returned)."""
    try:
        return reference_folder(Path(text))
    except UsageError as e:
        raise argparse.ArgumentTypeError(str(e).removeprefix("--reference-manifest ")) from None


def model_name_arg(text: str) -> str:
    """argparse type: a TorchServe model name (mnist_ct.artifacts.check_model_name)."""
    try:
        return check_model_name(text)
    except UsageError as e:
        raise argparse.ArgumentTypeError(str(e)) from None


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m mnist_ct.validate",
        description=(
            "Check the run's data set (<data-root>/runs/<run id>/dataset) before training: manifest and "
            "checksums, shapes and dtypes, labels 0..9, pixel range and per-split mean/std, every class present, "
            "class balance, no empty split, train/test leakage, and drift (pixel mean/std, train label "
            "distribution) against the champion's training data or --reference-manifest. "
            "Writes <data-root>/runs/<run id>/validation/report.json with every check, its figure, its "
            "threshold and pass/fail/skip, whether the checks pass or not."
        ),
        epilog="Exit codes: 0 every check passed, 2 bad usage, 3 a check failed (one stderr line per failure) "
        "or bad input, 5 the environment (disk full, read-only volume).",
    )
    add_run_arguments(parser)
    parser.add_argument(
        "--reference-manifest",
        type=reference_arg,
        metavar="PATH",
        help="the drift reference: a data set's manifest.json (or its folder), verified before the checks "
        "(default: the training data of the champion live on --deploy-root; none there: drift is skipped)",
    )
    parser.add_argument(
        "--model-name",
        type=model_name_arg,
        default=DEFAULT_MODEL_NAME,
        help="the model whose champion (<deploy-root>/model-store/<model>.mar) gives the drift reference "
        "(default: %(default)s)",
    )
    parser.add_argument(
        "--drift-tolerance",
        type=share,
        default=DEFAULTS.drift_tolerance,
        help="largest allowed change of pixel mean or std, on the [0,1] scale, in [0, 1] (default: %(default)s)",
    )
    parser.add_argument(
        "--max-label-shift",
        type=share,
        default=DEFAULTS.max_label_shift,
        help="largest total variation distance between the train split's label distribution and the "
        "reference's, in [0, 1] (default: %(default)s)",
    )
    parser.add_argument(
        "--mean-bounds",
        type=share,
        nargs=2,
        metavar=("LOW", "HIGH"),
        default=DEFAULTS.mean_bounds,
        help="sane per-split pixel mean on the [0,1] scale, 0 <= LOW <= HIGH <= 1 (default: %(default)s)",
    )
    parser.add_argument(
        "--std-bounds",
        type=share,
        nargs=2,
        metavar=("LOW", "HIGH"),
        default=DEFAULTS.std_bounds,
        help="sane per-split pixel standard deviation on the [0,1] scale, 0 <= LOW <= HIGH <= 1 (default: %(default)s)",
    )
    parser.add_argument(
        "--min-class-ratio",
        type=share,
        default=DEFAULTS.min_class_ratio,
        help="smallest class count / largest class count allowed in a split, in [0, 1] (default: %(default)s)",
    )
    parser.add_argument(
        "--max-leakage",
        type=share,
        default=DEFAULTS.max_leakage,
        help="largest share of test images that may be exact copies of train images, in [0, 1] (default: %(default)s)",
    )
    return parser


def options_from_args(args: argparse.Namespace) -> Options:
    thresholds = Thresholds(
        mean_bounds=(args.mean_bounds[0], args.mean_bounds[1]),
        std_bounds=(args.std_bounds[0], args.std_bounds[1]),
        min_class_ratio=args.min_class_ratio,
        max_leakage=args.max_leakage,
        drift_tolerance=args.drift_tolerance,
        max_label_shift=args.max_label_shift,
    )
    return Options(thresholds=thresholds, reference=args.reference_manifest, model_name=args.model_name)


def main(argv: list[str] | None = None) -> int:
    return step_main(STEP, build_parser(), options_from_args, run, argv)


if __name__ == "__main__":
    raise SystemExit(main())
