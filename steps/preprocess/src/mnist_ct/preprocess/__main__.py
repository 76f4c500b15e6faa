"""python -m mnist_ct.preprocess: the command line (every option checked when parsed); the step is in step.py."""

from __future__ import annotations

import argparse
from pathlib import Path

from mnist_ct.artifacts import (
    DEFAULT_MODEL_NAME,
    KfpOutputs,
    UsageError,
    add_kfp_arguments,
    add_run_arguments,
    bounded_float,
    bounded_int,
    check_model_name,
    check_output_file,
    seed_value,
    step_main,
)

from .download import RetryPolicy, check_mirror
from .sources import DATASETS, MNIST_5K
from .step import ARTIFACTS, MAX_LIMIT_PER_CLASS, MAX_RETRIES, STEP, Options, run


def mirror_arg(text: str) -> str:
    """argparse type: a mirror's base URL (http, https or file)."""
    try:
        return check_mirror(text)
    except UsageError as e:
        raise argparse.ArgumentTypeError(str(e).removeprefix(f"--mirror {text!r}: ")) from None


def folder_arg(text: str) -> Path:
    """argparse type: an existing folder."""
    path = Path(text)
    if not path.exists():
        raise argparse.ArgumentTypeError(f"{path}: no such folder")
    if not path.is_dir():
        raise argparse.ArgumentTypeError(f"{path}: is a file, not a folder; pass the folder that holds the files")
    return path


def true_false(text: str) -> bool:
    """argparse type: true or false (as KFP passes a bool parameter)."""
    value = {"true": True, "false": False}.get(text.strip().lower())
    if value is None:
        raise argparse.ArgumentTypeError(f"{text!r}: expected true or false")
    return value


def output_file(text: str) -> Path:
    """argparse type: a file to write (not a folder, nothing that is a file on the way to it)."""
    try:
        return check_output_file("", Path(text))
    except UsageError as e:
        raise argparse.ArgumentTypeError(str(e)) from None


def model_name(text: str) -> str:
    """argparse type: a TorchServe model name."""
    try:
        return check_model_name(text)
    except UsageError as e:
        raise argparse.ArgumentTypeError(str(e)) from None


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m mnist_ct.preprocess",
        description=(
            "Collect a digit data set and publish it as checksummed train/test splits under "
            "<data-root>/runs/<run id>/dataset/ (uint8 [N,28,28] images, labels 0..9, manifest.json)."
        ),
        epilog="Exit codes: 0 done, 2 bad usage, 3 bad input (one line on stderr names the file), "
        "5 the environment (disk full, read-only volume), 143 terminated.",
    )
    add_run_arguments(parser)
    parser.add_argument(
        "--dataset",
        choices=DATASETS,
        default=MNIST_5K,
        help="mnist-5k: the 5,000 real MNIST digits built into mnist-ct-artifacts (offline, split here); "
        "mnist, fashion-mnist: the four official idx .gz files with their official train/test split "
        "(default: %(default)s)",
    )
    parser.add_argument(
        "--source",
        type=folder_arg,
        metavar="DIR",
        help="read the files from this folder instead of downloading them (mnist, fashion-mnist: the four "
        "idx files, .gz or not, checked for structure; mnist-5k: mnist_5k.csv.gz), "
        "e.g. /usr/share/datasets/fashion-mnist",
    )
    parser.add_argument(
        "--mirror",
        type=mirror_arg,
        action="append",
        default=[],
        metavar="URL",
        help="base URL (http, https or file) to download the idx files from, instead of the built-in mirrors "
        "(repeatable, tried in order); downloads are always checked against the official sha256 and cached in "
        "<data-root>/raw/<dataset>/",
    )
    parser.add_argument(
        "--retries",
        type=bounded_int(1, MAX_RETRIES),
        default=RetryPolicy().attempts,
        help=f"attempts per mirror, 1 to {MAX_RETRIES} (default: %(default)s)",
    )
    parser.add_argument(
        "--seed", type=seed_value, default=0, help="seed for the split and for --limit-per-class (default: 0)"
    )
    parser.add_argument(
        "--limit-per-class",
        type=bounded_int(1, MAX_LIMIT_PER_CLASS),
        metavar="N",
        help="keep at most N images of each class (chosen with --seed) from each source split: from the 5,000 "
        "before the train/test split (mnist-5k), from each official split (mnist, fashion-mnist); for quick runs",
    )
    parser.add_argument(
        "--test-fraction",
        type=bounded_float(0.0, 1.0, low_open=True, high_open=True),
        default=0.2,
        help="share of the test split, in (0, 1): of each class of mnist-5k, and of the incoming images (by "
        "their pixels' hash) (default: %(default)s)",
    )
    parser.add_argument(
        "--skip-bad-files",
        action="store_true",
        help="log and leave out an incoming image that does not decode, instead of failing (exit 3)",
    )
    parser.add_argument(
        "--only-if-changed",
        type=true_false,
        default=True,
        metavar="{true,false}",
        help="true: proceed is false when the champion was trained on this data version by these step versions "
        "(MNIST_CT_STEP_VERSIONS); false: always proceed (default: true)",
    )
    parser.add_argument(
        "--proceed-out",
        type=output_file,
        metavar="PATH",
        help="write whether the pipeline should go on, true or false (KFP output parameter)",
    )
    parser.add_argument(
        "--model-name",
        type=model_name,
        default=DEFAULT_MODEL_NAME,
        help="the served model whose champion the run is compared with (default: %(default)s)",
    )
    add_kfp_arguments(parser, ARTIFACTS)
    return parser


def options_from_args(args: argparse.Namespace) -> Options:
    return Options(
        dataset=args.dataset,
        source=args.source,
        seed=args.seed,
        limit_per_class=args.limit_per_class,
        test_fraction=args.test_fraction,
        mirrors=tuple(args.mirror),
        retry=RetryPolicy(attempts=args.retries),
        kfp=KfpOutputs.from_args(STEP, ARTIFACTS, args),
        skip_bad_files=args.skip_bad_files,
        only_if_changed=args.only_if_changed,
        proceed_out=args.proceed_out,
        model_name=args.model_name,
    )


def main(argv: list[str] | None = None) -> int:
    return step_main(STEP, build_parser(), options_from_args, run, argv)


if __name__ == "__main__":
    raise SystemExit(main())
