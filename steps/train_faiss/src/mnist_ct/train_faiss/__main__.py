"""python -m mnist_ct.train_faiss: argument parsing and exit codes only."""

from __future__ import annotations

import argparse

from mnist_ct.artifacts import Log, add_run_arguments, non_negative_int, positive_int, run_paths, run_step

from .step import STEP, Options, train_faiss


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m mnist_ct.train_faiss",
        description=(
            "Build a FAISS index (inner product) over the gallery embeddings (train split) of run R, with "
            "their labels, and report its recall@1 and @10 against exact search on the queries (test split). "
            "Reads <model-root>/runs/R/embeddings; writes <model-root>/runs/R/index/{index.faiss,labels.npy,"
            "index.json}."
        ),
    )
    add_run_arguments(parser)
    parser.add_argument(
        "--index",
        default="Flat",
        help="FAISS index_factory string: Flat (exact, default), HNSW32, IVF64,Flat, IVF64,PQ8, OPQ8,IVF64,PQ8, ...",
    )
    parser.add_argument(
        "--nprobe",
        type=positive_int,
        help="IVF only: inverted lists searched per query (default: about sqrt(nlist), at most nlist)",
    )
    parser.add_argument("--ef-search", type=positive_int, help="HNSW only: search beam width efSearch (default: 64)")
    parser.add_argument(
        "--threads",
        type=non_negative_int,
        default=0,
        help="FAISS (OpenMP) threads; 0 leaves FAISS's default, every core it sees (default: %(default)s)",
    )
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    options = Options(index=args.index, nprobe=args.nprobe, ef_search=args.ef_search, threads=args.threads)

    def work() -> int:
        train_faiss(run_paths(args), options, Log(STEP, args.quiet))
        return 0

    return run_step(STEP, work)


if __name__ == "__main__":
    raise SystemExit(main())
