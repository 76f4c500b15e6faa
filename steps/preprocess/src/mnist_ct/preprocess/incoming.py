"""Incoming batches: labelled digit images dropped on the data volume, added to the base data set.

    <data-root>/incoming/<batch>/_SUCCESS             the batch is complete (written last, by whoever drops it)
    <data-root>/incoming/<batch>/<label>/<name>.png   labels 0..9; .png, .jpg, .jpeg in any case; any size and mode

Each complete batch is decoded with `mnist_ct.artifacts.digits.decode_image` (the serving handler's conversion)
once: the result is cached as an artifact folder `<data-root>/raw/incoming/<key>/`, the key a sha256 of the
batch's files and of digits.py's source, so a later run only hashes the files. Images are split by content (the
sha256 of their 28x28 pixels), so an image keeps its split from one run to the next, and exact duplicates of
anything already in (the base data set, an earlier batch in sorted order) are dropped.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Iterable
from dataclasses import dataclass, field
from functools import cache, cached_property
from pathlib import Path
from typing import Any

import numpy as np

from mnist_ct.artifacts import (
    MANIFEST,
    NUM_CLASSES,
    ArtifactError,
    Log,
    Manifest,
    Producer,
    Split,
    check_split,
    class_counts,
    confined,
    digits,
    load_array,
    publish,
    read_manifest,
)

SUCCESS = "_SUCCESS"
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg")
LABELS = tuple(str(c) for c in range(NUM_CLASSES))
CACHE_KIND = "incoming-batch"
DROP_IN = f"a batch is <batch>/<label 0..9>/*.png|*.jpg|*.jpeg plus an empty {SUCCESS} file"


@dataclass(frozen=True)
class BatchFile:
    """One image of a batch: its path inside the batch (`<label>/<name>`), where it is, its label."""

    rel: str
    path: str
    label: int


@dataclass(frozen=True)
class Batch:
    """A complete batch as found on the volume: its files (sorted) and their sha256s."""

    id: str
    folder: Path
    files: tuple[BatchFile, ...]
    digests: tuple[str, ...]  # sha256 of each file, as `files`

    @cached_property
    def sha256(self) -> str:
        """What the batch holds: every file's path inside it and sha256 (not where or when it was dropped)."""
        return _sha256_json([[f.rel, d] for f, d in zip(self.files, self.digests, strict=True)])

    @property
    def cache_key(self) -> str:
        """The batch's content and the conversion's source: a new digits.py decodes every batch again."""
        return _sha256_json({"batch": self.sha256, "digits": digits_source_sha256()})


@dataclass
class Decoded:
    """A batch converted: the images that decoded (in file order) and the files that did not."""

    images: np.ndarray  # uint8 [N,28,28]
    labels: np.ndarray  # int64 [N]
    skipped: list[dict[str, str]] = field(default_factory=list)  # {"file": rel, "reason": ...}
    cached: bool = False  # read from the cache (nothing decoded this run)


def _sha256_json(obj: Any) -> str:
    return hashlib.sha256(json.dumps(obj, sort_keys=True, separators=(",", ":")).encode()).hexdigest()


@cache
def digits_source_sha256() -> str:
    """sha256 of digits.py as installed: the conversion every cached batch was decoded with."""
    return hashlib.sha256(Path(digits.__file__).read_bytes()).hexdigest()


def read_file(path: str) -> bytes:
    """A whole file, unbuffered: every run reads every batch file (to hash it), so this is the hot loop, and
    os.read on a plain string path costs half of Path.read_bytes."""
    fd = os.open(path, os.O_RDONLY)
    try:
        chunks = []
        while chunk := os.read(fd, 1 << 20):
            chunks.append(chunk)
    finally:
        os.close(fd)
    return b"".join(chunks)


def _hidden(name: str) -> bool:
    return name.startswith(".")


def _entries(folder: Path) -> list[os.DirEntry[str]]:
    with os.scandir(folder) as it:
        return sorted((e for e in it if not _hidden(e.name)), key=lambda e: e.name)


def _checked(data_root: Path, entry: os.DirEntry[str]) -> None:
    """A symlink inside the incoming folder must stay on the data volume (confined raises, exit 3); a name with
    a control character (a newline) is refused, since it would split the one error or log line that names it."""
    if not entry.name.isprintable():
        raise ArtifactError(
            f"{entry.path!r}: a name with a control character (newline, tab, ...); rename it with printable characters"
        )
    if entry.is_symlink():
        confined(data_root, os.path.relpath(entry.path, data_root))


def find_batches(data_root: Path, log: Log) -> tuple[list[Batch], list[str]]:
    """The complete batches under `<data-root>/incoming/` (sorted by id) and the ids of incomplete ones.

    ArtifactError (exit 3, one line naming the path) for a bad batch: something in it that is not a label
    folder 0..9, `_SUCCESS` or a dotfile; something in a label folder that is not a .png/.jpg/.jpeg file;
    no image at all.
    """
    incoming = confined(data_root, "incoming")
    if not incoming.is_dir():
        return [], []
    batches, incomplete = [], []
    for entry in _entries(incoming):
        _checked(data_root, entry)
        if not entry.is_dir():
            continue  # a file beside the batches (a README) is not a batch
        folder = Path(entry.path)
        marker = folder / SUCCESS
        if marker.exists() and not marker.is_file():  # not "incomplete": whoever dropped it meant it complete
            raise ArtifactError(f"{marker}: not a file; {DROP_IN}: remove it and create the empty file")
        if not marker.is_file():
            incomplete.append(entry.name)
            continue
        batches.append(_read_batch(data_root, folder))
    if incomplete:
        log(f"incoming: {len(incomplete)} incomplete batch(es) ignored (no {SUCCESS} yet): {', '.join(incomplete)}")
    return batches, incomplete


def _read_batch(data_root: Path, folder: Path) -> Batch:
    files: list[BatchFile] = []
    digests: list[str] = []
    for entry in _entries(folder):
        _checked(data_root, entry)
        if entry.name == SUCCESS:
            continue
        if entry.name not in LABELS or not entry.is_dir():
            raise ArtifactError(f"{entry.path}: not a label folder 0..9 (nor {SUCCESS}); {DROP_IN}: move or remove it")
        label = int(entry.name)
        for item in _entries(Path(entry.path)):
            _checked(data_root, item)
            if not item.is_file() or not item.name.lower().endswith(IMAGE_SUFFIXES):
                raise ArtifactError(f"{item.path}: not a .png, .jpg or .jpeg file; {DROP_IN}: move or remove it")
            digests.append(hashlib.sha256(read_file(item.path)).hexdigest())
            files.append(BatchFile(f"{entry.name}/{item.name}", item.path, label))
    if not files:
        raise ArtifactError(f"{folder}: an empty batch (no image in any label folder); {DROP_IN}")
    return Batch(folder.name, folder, tuple(files), tuple(digests))


def decode_batch(batch: Batch, cache_folder: Path, skip_bad_files: bool, log: Log) -> Decoded:
    """The batch's images, from the cache when it holds them, else decoded and cached (atomically).

    An undecodable file: ArtifactError naming it, unless `skip_bad_files` (then logged and left out).
    """
    try:
        decoded = _read_cache(cache_folder, batch)
    except ArtifactError as e:  # a damaged cache entry is only a cache miss: decode again and replace it
        log(f"incoming: cache of batch {batch.id} unusable, decoding again ({e})")
        decoded = None
    if decoded is None:
        decoded = _decode(batch, skip_bad_files)
        _write_cache(cache_folder, batch, decoded)
    if decoded.skipped and not skip_bad_files:
        first = decoded.skipped[0]
        raise ArtifactError(
            f"{batch.folder / first['file']}: {first['reason']}; replace or remove it, or pass --skip-bad-files"
        )
    for bad in decoded.skipped:
        log(f"incoming: skipped {batch.folder / bad['file']}: {bad['reason']}")
    return decoded


def _decode(batch: Batch, skip_bad_files: bool) -> Decoded:
    images, labels, skipped = [], [], []
    for f in batch.files:
        try:
            images.append(digits.decode_image(read_file(f.path)))
        except digits.DigitImageError as e:
            if not skip_bad_files:  # fail on the first one: nothing is cached for a batch that stops the run
                raise ArtifactError(f"{f.path}: {e.message}; replace or remove it, or pass --skip-bad-files") from None
            skipped.append({"file": f.rel, "reason": e.message})
            continue
        labels.append(f.label)
    return Decoded(
        np.stack(images) if images else np.zeros((0, 28, 28), np.uint8),
        np.asarray(labels, dtype=np.int64),
        skipped,
    )


def _read_cache(folder: Path, batch: Batch) -> Decoded | None:
    if not (folder / MANIFEST).is_file():
        return None
    manifest: Manifest = read_manifest(folder, CACHE_KIND)
    # Checksums only prove the files are what the manifest lists: an entry for another batch or decoder (copied
    # or renamed), or arrays that break the contract, would add the wrong digits or fail later without a name.
    meta = manifest.meta
    if meta.get("batch_sha256") != batch.sha256 or meta.get("digits_sha256") != digits_source_sha256():
        raise ArtifactError(f"{folder}: the cache entry is not of batch {batch.id} as it is now")
    decoded = Decoded(
        load_array(folder, manifest, "images.npy"),
        load_array(folder, manifest, "labels.npy"),
        list(meta.get("skipped", [])),
        cached=True,
    )
    check_split(str(folder), Split(decoded.images, decoded.labels))
    if not all(isinstance(s, dict) and {"file", "reason"} <= s.keys() for s in decoded.skipped):
        raise ArtifactError(f"{folder / MANIFEST}: meta.skipped is not a list of {{file, reason}}")
    return decoded


def _write_cache(folder: Path, batch: Batch, decoded: Decoded) -> None:
    with publish(folder, CACHE_KIND, Producer.of("preprocess")) as staging:
        np.save(staging.path / "images.npy", decoded.images)
        np.save(staging.path / "labels.npy", decoded.labels)
        staging.meta.update(
            batch=batch.id,
            batch_sha256=batch.sha256,
            digits_sha256=digits_source_sha256(),
            images=len(decoded.labels),
            skipped=decoded.skipped,
        )


def pixel_hashes(images: np.ndarray) -> list[bytes]:
    """sha256 of each 28x28 uint8 image's bytes."""
    flat = np.ascontiguousarray(images).reshape(len(images), -1)
    return [hashlib.sha256(row.tobytes()).digest() for row in flat]


def goes_to_test(pixel_hash: bytes, test_fraction: float) -> bool:
    """The content split: a function of the pixels only, so an image never changes split between runs."""
    return int.from_bytes(pixel_hash[:8], "big") / 2**64 < test_fraction


def add_batches(
    base: dict[str, Split],
    batches: Iterable[tuple[Batch, Decoded]],
    test_fraction: float,
) -> tuple[dict[str, Split], list[dict[str, Any]]]:
    """The base splits grown by every batch (in the order given), and one record per batch for the manifest.

    The base keeps its split; an incoming image goes to test by its pixels' hash; an exact duplicate (same 28x28
    pixels) of anything already in is dropped and counted, and counted again when its label differs from the
    label kept (a labelling mistake somewhere: the log says so).
    """
    # pixels' hash -> the label kept for them: a duplicate with another label is counted (the first one wins)
    seen: dict[bytes, int] = {}
    for split in (base["train"], base["test"]):
        seen.update(zip(pixel_hashes(split.images), split.labels.tolist(), strict=True))
    parts: dict[str, list[tuple[np.ndarray, np.ndarray]]] = {
        name: [(split.images, split.labels)] for name, split in base.items()
    }
    records = []
    for batch, decoded in batches:
        chosen: dict[str, list[int]] = {"train": [], "test": []}
        duplicates = conflicts = 0
        for i, h in enumerate(pixel_hashes(decoded.images)):
            if h in seen:
                duplicates += 1
                conflicts += seen[h] != int(decoded.labels[i])
                continue
            seen[h] = int(decoded.labels[i])
            chosen["test" if goes_to_test(h, test_fraction) else "train"].append(i)
        for name, index in chosen.items():
            parts[name].append((decoded.images[index], decoded.labels[index]))
        records.append(
            {
                "id": batch.id,
                "sha256": batch.sha256,
                "images": len(decoded.labels),
                "train": len(chosen["train"]),
                "test": len(chosen["test"]),
                "duplicates": duplicates,
                "label_conflicts": conflicts,
                "skipped": len(decoded.skipped),
                "counts": {name: class_counts(decoded.labels[index]) for name, index in chosen.items()},
            }
        )
    grown = {
        name: Split(np.concatenate([p[0] for p in pieces]), np.concatenate([p[1] for p in pieces]).astype(np.int64))
        for name, pieces in parts.items()
    }
    return grown, records
