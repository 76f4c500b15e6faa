"""python -m mnist_ct.validate: argument parsing and exit codes (the work is in validation.py)."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from mnist_ct.artifacts import EXIT_BAD_INPUT, Log, Producer, add_run_arguments, run_paths, run_step

from .checks import Thresholds
from .validation import REPORT, publish_report, validate

DEFAULTS = Thresholds()


def _share(text: str) -> float:
    value = float(text)
    if not 0.0 <= value <= 1.0:
        raise argparse.ArgumentTypeError(f"must be between 0 and 1, got {value}")
    return value


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m mnist_ct.validate",
        description=(
            "Check the run's data set (<data-root>/runs/<run id>/dataset) before training: manifest and "
            "checksums, shapes and dtypes, labels 0..9, pixel range and per-split mean/std, every class present, "
            "class balance, no empty split, train/test leakage, and optionally drift against a reference. "
            "Writes <data-root>/runs/<run id>/validation/report.json with every check, its figure, its "
            "threshold and pass/fail/skip, whether the checks pass or not."
        ),
        epilog="Exit codes: 0 every check passed, 2 bad usage, 3 a check failed (one stderr line per failure).",
    )
    add_run_arguments(parser)
    parser.add_argument(
        "--reference-manifest",
        type=Path,
        metavar="PATH",
        help="a reference data set's manifest.json (or its folder): fail if a split's pixel mean or std moved "
        "more than --drift-tolerance from the reference's",
    )
    parser.add_argument(
        "--drift-tolerance",
        type=_share,
        default=DEFAULTS.drift_tolerance,
        help="largest allowed change of pixel mean or std, on the [0,1] scale (default: %(default)s)",
    )
    parser.add_argument(
        "--mean-bounds",
        type=_share,
        nargs=2,
        metavar=("LOW", "HIGH"),
        default=DEFAULTS.mean_bounds,
        help="sane per-split pixel mean on the [0,1] scale (default: %(default)s)",
    )
    parser.add_argument(
        "--std-bounds",
        type=_share,
        nargs=2,
        metavar=("LOW", "HIGH"),
        default=DEFAULTS.std_bounds,
        help="sane per-split pixel standard deviation on the [0,1] scale (default: %(default)s)",
    )
    parser.add_argument(
        "--min-class-ratio",
        type=_share,
        default=DEFAULTS.min_class_ratio,
        help="smallest class count / largest class count allowed in a split (default: %(default)s)",
    )
    parser.add_argument(
        "--max-leakage",
        type=_share,
        default=DEFAULTS.max_leakage,
        help="largest share of test images that may be exact copies of train images (default: %(default)s)",
    )
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    thresholds = Thresholds(
        mean_bounds=tuple(args.mean_bounds),
        std_bounds=tuple(args.std_bounds),
        min_class_ratio=args.min_class_ratio,
        max_leakage=args.max_leakage,
        drift_tolerance=args.drift_tolerance,
    )
    log = Log("validate", args.quiet)

    def work() -> int:
        paths = run_paths(args)
        report = validate(paths.dataset, thresholds, args.reference_manifest)
        publish_report(report, paths.validation, Producer.of("validate"))
        for check in report.failures:
            print(f"validate: check failed: {check.label}: {check.message}", file=sys.stderr)
        summary = report.to_json()["summary"]
        log(
            f"{len(report.checks)} checks: {summary['pass']} passed, {summary['fail']} failed, "
            f"{summary['skip']} skipped -> {paths.validation / REPORT}"
        )
        return 0 if report.passed else EXIT_BAD_INPUT

    return run_step("validate", work)


if __name__ == "__main__":
    raise SystemExit(main())
