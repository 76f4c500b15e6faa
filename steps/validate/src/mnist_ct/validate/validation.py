"""Read a data set leniently, run every check on it, and publish the report.

The manifest and checksums are checked through mnist_ct.artifacts; the arrays are then loaded
without the contract's own refusal (never with pickle), so that a broken data set becomes a list of
failed checks, each naming its file, rather than the first error only.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from mnist_ct.artifacts import (
    DATASET_KIND,
    MANIFEST,
    SPLITS,
    ArtifactError,
    Manifest,
    Producer,
    publish,
    read_manifest,
    read_verified,
    verify_file,
)

from . import checks as c

VALIDATION_KIND = "validation"
REPORT = "report.json"
LABEL_SHIFT_SPLITS = ("train",)  # see _drift_checks
REFERENCE_OPTION, REFERENCE_CHAMPION = "--reference-manifest", "champion"  # a reference's `source`


@dataclass(frozen=True)
class Reference:
    """The drift baseline: a verified data set's manifest, the pixel statistics and class counts it records per
    split, and where it came from (`--reference-manifest`, or the champion's training data)."""

    manifest_path: Path
    manifest_sha256: str
    pixel_stats: dict[str, Any]
    counts: dict[str, Any]
    source: str = REFERENCE_OPTION
    champion: dict[str, Any] | None = None  # Champion.summary() when the reference is its training data

    @property
    def name(self) -> str:
        """What a check's message calls it."""
        if self.champion is not None:
            return f"the champion's training data ({self.champion['model_name']} version {self.champion['version']})"
        return f"the reference {self.manifest_path.parent}"

    def to_json(self) -> dict[str, Any]:
        return {
            "source": self.source,
            "manifest": str(self.manifest_path),
            "manifest_sha256": self.manifest_sha256,
            "champion": self.champion,
        }


def read_reference(folder: Path, source: str = REFERENCE_OPTION, champion: dict[str, Any] | None = None) -> Reference:
    """The reference data set in `folder`, its manifest and every file verified (ArtifactError otherwise)."""
    manifest = read_verified(folder, DATASET_KIND)
    meta = _meta(manifest)
    stats, counts = meta.get("pixel_stats"), meta.get("counts")
    return Reference(
        Path(folder) / MANIFEST,
        manifest.digest,
        stats if isinstance(stats, dict) else {},
        counts if isinstance(counts, dict) else {},
        source,
        champion,
    )


@dataclass
class Report:
    dataset: Path
    checks: list[c.Check]
    thresholds: c.Thresholds
    manifest: Manifest | None = None
    reference: Reference | None = None
    no_reference: str = "no reference data set"  # why the drift checks were skipped, when reference is None

    @property
    def failures(self) -> list[c.Check]:
        return [check for check in self.checks if check.failed]

    @property
    def passed(self) -> bool:
        return not self.failures

    def reference_json(self) -> dict[str, Any]:
        """Which data set drift was judged against (path, digest, the champion's version), or why none was."""
        if self.reference is not None:
            return self.reference.to_json()
        nothing = {"source": None, "manifest": None, "manifest_sha256": None, "champion": None}
        return {**nothing, "reason": self.no_reference}

    def to_json(self) -> dict[str, Any]:
        counts = {status: sum(ch.status == status for ch in self.checks) for status in (c.PASS, c.FAIL, c.SKIP)}
        return {
            "passed": self.passed,
            "dataset": str(self.dataset),
            "dataset_manifest_sha256": self.manifest.digest if self.manifest else None,
            "reference_manifest": str(self.reference.manifest_path) if self.reference else None,
            "reference": self.reference_json(),
            "summary": counts,
            "thresholds": self.thresholds.to_json(),
            "checks": [check.to_json() for check in self.checks],
        }


def load_leniently(path: Path) -> np.ndarray | str:
    """The array in `path`, or why it cannot be read (never unpickles)."""
    try:
        problem = npy_size_problem(path)
        if problem:
            return f"{path}: not a readable .npy array ({problem})"
        return np.load(path, allow_pickle=False)
    except (ValueError, OSError, EOFError) as e:
        return f"{path}: not a readable .npy array ({e})"


def npy_size_problem(path: Path) -> str | None:
    """Why the .npy header's shape disagrees with the file's size, if it does: checked before loading, so a
    header that claims terabytes is a finding, not an out-of-memory exit."""
    with open(path, "rb") as f:
        version = np.lib.format.read_magic(f)
        if version == (1, 0):
            shape, _, dtype = np.lib.format.read_array_header_1_0(f)
        elif version == (2, 0):
            shape, _, dtype = np.lib.format.read_array_header_2_0(f)
        else:
            return None  # np.load judges the rarer versions itself
        offset = f.tell()
    if dtype.hasobject:
        return None  # np.load refuses it without unpickling
    expected = math.prod(shape) * dtype.itemsize
    held = path.stat().st_size - offset
    if held != expected:
        return f"the header says {dtype} {list(shape)}, {expected} bytes of data, but the file holds {held}"
    return None


def validate(
    folder: Path, thresholds: c.Thresholds, reference: Reference | None = None, no_reference: str | None = None
) -> Report:
    """Every check on the data set in `folder`, and drift against `reference` (skipped, saying `no_reference`,
    when there is none)."""
    folder = Path(folder)
    report = Report(folder, [], thresholds, reference=reference)
    if no_reference:
        report.no_reference = no_reference
    checks = report.checks
    try:
        manifest = read_manifest(folder, DATASET_KIND)
    except ArtifactError as e:
        checks.append(c.judged("manifest", "", False, None, "a dataset manifest", str(e)))
        return report
    report.manifest = manifest
    producer = f"{manifest.producer.step} {manifest.producer.version}"
    checks.append(
        c.judged("manifest", "", True, producer, "a dataset manifest", f"{folder / MANIFEST}: made by {producer}")
    )
    for rel in sorted(manifest.files):
        try:
            verify_file(folder, manifest, rel)
            checks.append(c.judged("checksum", rel, True, "sha256 ok", "manifest sha256", f"{folder / rel}: ok"))
        except ArtifactError as e:
            checks.append(c.judged("checksum", rel, False, "mismatch", "manifest sha256", str(e)))

    images: dict[str, np.ndarray] = {}
    labels_of: dict[str, np.ndarray] = {}
    for split in SPLITS:
        arrays = _load_split(folder, manifest, split, checks)
        if arrays is None:
            continue
        split_images, labels = arrays
        images[split], labels_of[split] = split_images, labels
        checks.extend(_split_checks(folder / split, split, split_images, labels, manifest, thresholds))

    if "train" in images and "test" in images:
        checks.append(c.check_leakage(images["train"], images["test"], thresholds.max_leakage, str(folder)))
    else:
        checks.append(c.skipped("leakage", "", thresholds.max_leakage, "needs both a train and a test split"))
    checks.extend(_drift_checks(folder, images, labels_of, thresholds, reference, report.no_reference))
    return report


def _drift_checks(
    folder: Path,
    images: dict[str, np.ndarray],
    labels: dict[str, np.ndarray],
    t: c.Thresholds,
    reference: Reference | None,
    no_reference: str,
) -> list[c.Check]:
    """Pixel drift per split and the label shift of the train split, against the reference.

    Labels are judged on train only: train is what the challenger learns its class priors from, while both
    models are measured on this run's test split (analysis), so a shift there weighs on them alike."""
    if reference is None:
        return [
            *(c.skipped("drift", split, t.drift_tolerance, no_reference) for split in SPLITS),
            *(c.skipped("label_shift", split, t.max_label_shift, no_reference) for split in LABEL_SHIFT_SPLITS),
        ]
    result = []
    for split, split_images in images.items():
        where = str(folder / split / "images.npy")
        stats = reference.pixel_stats.get(split)
        result.append(c.check_drift(split, split_images, stats, t.drift_tolerance, where))
    for split in LABEL_SHIFT_SPLITS:
        if split not in labels:
            result.append(c.skipped("label_shift", split, t.max_label_shift, f"no readable {split!r} split"))
            continue
        where = str(folder / split / "labels.npy")
        recorded = reference.counts.get(split)
        result.append(c.check_label_shift(split, labels[split], recorded, t.max_label_shift, where, reference.name))
    return result


def _meta(manifest: Manifest) -> dict[str, Any]:
    """The manifest's `meta`, or nothing when a hand-made manifest holds something else there."""
    return manifest.meta if isinstance(manifest.meta, dict) else {}


def _load_split(folder: Path, manifest: Manifest, split: str, checks: list[c.Check]) -> tuple | None:
    rels = [f"{split}/images.npy", f"{split}/labels.npy"]
    missing = [rel for rel in rels if rel not in manifest.files or not (folder / rel).is_file()]
    if missing:
        message = f"{folder / missing[0]}: missing, so the data set has no complete {split!r} split"
        checks.append(c.judged("split_present", split, False, missing, rels, message))
        return None
    checks.append(c.judged("split_present", split, True, rels, rels, f"{folder / split}: images and labels"))
    loaded = [load_leniently(folder / rel) for rel in rels]
    errors = [x for x in loaded if isinstance(x, str)]
    for error in errors:
        checks.append(c.judged("readable", split, False, None, ".npy without pickle", error))
    return None if errors else (loaded[0], loaded[1])


def _split_checks(
    where: Path, split: str, images: np.ndarray, labels: np.ndarray, manifest: Manifest, t: c.Thresholds
) -> list[c.Check]:
    images_at, labels_at = str(where / "images.npy"), str(where / "labels.npy")
    result = [
        c.check_not_empty(split, labels, labels_at),
        c.check_image_format(split, images, images_at),
        c.check_label_format(split, labels, int(images.shape[0]) if images.ndim else 0, labels_at),
        c.check_labels_in_range(split, labels, labels_at),
        c.check_pixel_range(split, images, images_at),
        *c.check_pixel_stats(split, images, t, images_at),
    ]
    if labels.ndim == 1 and len(labels) > 0 and c.is_numeric(labels):
        result += [
            c.check_classes_present(split, labels, labels_at),
            c.check_class_balance(split, labels, t.min_class_ratio, labels_at),
            c.check_counts_match_manifest(split, labels, _recorded_counts(manifest, split), labels_at),
        ]
    else:
        reason = "no labels" if labels.ndim != 1 or len(labels) == 0 else "labels are not numbers"
        result += [
            c.skipped("classes_present", split, "all of 0..9", reason),
            c.skipped("class_balance", split, t.min_class_ratio, reason),
            c.skipped("counts_match_manifest", split, "meta.counts", reason),
        ]
    return result


def _recorded_counts(manifest: Manifest, split: str) -> Any:
    counts = _meta(manifest).get("counts")
    return counts.get(split) if isinstance(counts, dict) else None


def publish_report(report: Report, destination: Path, producer: Producer) -> Manifest:
    """Write report.json as the run's validation artifact (kind "validation"), failed or not."""
    inputs = {"dataset": report.manifest.digest} if report.manifest else {}
    if report.reference is not None:
        inputs["reference"] = report.reference.manifest_sha256
    text = json.dumps(report.to_json(), indent=2) + "\n"
    with publish(destination, VALIDATION_KIND, producer, inputs) as staging:  # names the folder on OS errors
        (staging.path / REPORT).write_text(text)
        staging.meta.update(
            passed=report.passed,
            failed=[check.label for check in report.failures],
            dataset=_meta(report.manifest).get("dataset") if report.manifest else None,
            reference=report.reference_json(),
        )
    assert staging.manifest is not None
    return staging.manifest
