"""python -m mnist_ct.embedding: embed the train (gallery) and test (query) splits with the run's model.pt."""

from __future__ import annotations

import argparse

from mnist_ct.artifacts import Log, UsageError, add_run_arguments, run_paths, run_step, thread_count

from .embed import STEP, embedding_step


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
    p.add_argument("--batch-size", type=int, default=512, help="images per forward pass")
    p.add_argument("--threads", type=int, default=0, help="CPU threads for torch (0: all cores this process may use)")
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)

    def work() -> int:
        if args.batch_size < 1:
            raise UsageError("--batch-size must be at least 1")
        if args.threads < 0:
            raise UsageError("--threads must not be negative")
        threads = thread_count(args.threads)
        embedding_step(run_paths(args), args.batch_size, threads, Log(STEP, args.quiet))
        return 0

    return run_step(STEP, work)


if __name__ == "__main__":
    raise SystemExit(main())
