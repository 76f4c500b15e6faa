"""python -m mnist_ct.train_faiss: the argument parser; the step itself is step.py."""

from __future__ import annotations

import argparse

from mnist_ct.artifacts import UsageError, add_run_arguments, add_threads_argument, bounded_int, step_main

from .factory import LISTS, SUPPORTED, parse_factory
from .step import MAX_EF_SEARCH, STEP, Options, run


def factory_string(text: str) -> str:
    """argparse type: a factory string of the grammar in factory.py (FAISS probes it once Options are built)."""
    try:
        return parse_factory(text).text
    except UsageError as e:
        raise argparse.ArgumentTypeError(str(e).removeprefix("--index ")) from None


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m mnist_ct.train_faiss",
        description=(
            "Build a FAISS index (inner product) over the gallery embeddings (train split) of run R, with "
            "their labels, and report its recall@1 and @10 against exact search on the queries (test split). "
            "Reads <model-root>/runs/R/embeddings; writes <model-root>/runs/R/index/{index.faiss,labels.npy,"
            "index.json}."
        ),
        epilog="Exit codes: 0 done, 2 bad usage, 3 bad input, 5 the environment (disk full, read-only volume).",
    )
    add_run_arguments(parser)
    parser.add_argument(
        "--index",
        type=factory_string,
        default="Flat",
        metavar="SPEC",
        help=f"FAISS index_factory string: {SUPPORTED} (default: %(default)s)",
    )
    parser.add_argument(
        "--nprobe",
        type=bounded_int(1, LISTS[1]),
        help="IVF only: inverted lists searched per query, at most the index's lists (default: about sqrt(lists))",
    )
    parser.add_argument(
        "--ef-search",
        type=bounded_int(1, MAX_EF_SEARCH),
        help=f"HNSW only: search beam width efSearch, 1..{MAX_EF_SEARCH} (default: 64)",
    )
    add_threads_argument(parser, used_by="FAISS (OpenMP)")
    return parser


def options_from_args(args: argparse.Namespace) -> Options:
    return Options(index=args.index, nprobe=args.nprobe, ef_search=args.ef_search, threads=args.threads)


def main(argv: list[str] | None = None) -> int:
    return step_main(STEP, build_parser(), options_from_args, run, argv)


if __name__ == "__main__":
    raise SystemExit(main())
