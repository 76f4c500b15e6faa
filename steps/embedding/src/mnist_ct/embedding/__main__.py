"""python -m mnist_ct.embedding: the parser; the step itself is step.run."""

from __future__ import annotations

import argparse

from mnist_ct.artifacts import (
    DEFAULT_MODEL_NAME,
    UsageError,
    add_run_arguments,
    add_threads_argument,
    bounded_int,
    check_model_name,
    step_main,
)

from .step import MAX_BATCH, STEP, Options, run


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m mnist_ct.embedding",
        description=(
            "Load model/runs/R/model/model.pt (TorchScript only; refused if its output is not float32 [N,D] "
            "L2-normalised), embed the train split (gallery) and the test split (queries) of "
            "data/runs/R/dataset, and publish model/runs/R/embeddings/{train,test}.npy with their labels. With a "
            "champion live on the deploy volume, the test split is embedded with its model.pt too (champion/test.npy)."
        ),
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    add_run_arguments(p)
    p.add_argument(
        "--batch-size",
        type=bounded_int(1, MAX_BATCH),
        default=Options.batch_size,
        help=f"images per forward pass, 1..{MAX_BATCH}",
    )
    add_threads_argument(p, used_by="torch")
    p.add_argument(
        "--model-name",
        type=model_name,
        default=DEFAULT_MODEL_NAME,
        help="the served model whose champion (live on --deploy-root) embeds the test split too",
    )
    return p


def model_name(text: str) -> str:
    """argparse type: a TorchServe model name (argparse names the option on a bad one)."""
    try:
        return check_model_name(text)
    except UsageError as e:
        raise argparse.ArgumentTypeError(str(e)) from None


def options_from_args(args: argparse.Namespace) -> Options:
    return Options(batch_size=args.batch_size, threads=args.threads, model_name=args.model_name)


def main(argv: list[str] | None = None) -> int:
    return step_main(STEP, build_parser(), options_from_args, run, argv)


if __name__ == "__main__":
    raise SystemExit(main())
