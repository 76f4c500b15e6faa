"""python -m mnist_ct.embedding: the parser; the step itself is step.run."""

from __future__ import annotations

import argparse

from mnist_ct.artifacts import add_run_arguments, add_threads_argument, bounded_int, step_main

from .step import MAX_BATCH, STEP, Options, run


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m mnist_ct.embedding",
        description=(
            "Load model/runs/R/model/model.pt (TorchScript only; refused if its output is not float32 [N,D] "
            "L2-normalised), embed the train split (gallery) and the test split (queries) of "
            "data/runs/R/dataset, and publish model/runs/R/embeddings/{train,test}.npy with their labels."
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
    return p


def options_from_args(args: argparse.Namespace) -> Options:
    return Options(batch_size=args.batch_size, threads=args.threads)


def main(argv: list[str] | None = None) -> int:
    return step_main(STEP, build_parser(), options_from_args, run, argv)


if __name__ == "__main__":
    raise SystemExit(main())
