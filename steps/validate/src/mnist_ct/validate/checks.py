"""The checks: small pure functions over arrays, each returning one named result with its figure.

A check that cannot be judged because an earlier one failed (say, pixel statistics of images that
are not uint8) is `skip`ped, so one defect gives one failure line, not a cascade.
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np

from mnist_ct.artifacts import IMAGE_SHAPE, NUM_CLASSES, class_counts, pixel_stats

PASS, FAIL, SKIP = "pass", "fail", "skip"


@dataclass(frozen=True)
class Thresholds:
    """What counts as sane; every bound is inclusive."""

    mean_bounds: tuple[float, float] = (0.05, 0.5)  # per-split pixel mean on [0,1]; MNIST 0.13, Fashion 0.29
    std_bounds: tuple[float, float] = (0.1, 0.5)  # per-split pixel std on [0,1]; MNIST 0.31, Fashion 0.35
    min_class_ratio: float = 0.5  # smallest class / largest class, per split; full MNIST train is 0.80
    max_leakage: float = 0.001  # share of test images with an exact copy in train
    drift_tolerance: float = 0.05  # largest |change| of a split's pixel mean or std against the reference
    max_label_shift: float = 0.1  # largest total variation distance of the train labels from the reference's

    def to_json(self) -> dict[str, Any]:
        return {
            "mean_bounds": list(self.mean_bounds),
            "std_bounds": list(self.std_bounds),
            "min_class_ratio": self.min_class_ratio,
            "max_leakage": self.max_leakage,
            "drift_tolerance": self.drift_tolerance,
            "max_label_shift": self.max_label_shift,
        }


@dataclass(frozen=True)
class Check:
    """One check's outcome: its figure, what it was compared with, and one line saying so."""

    name: str
    scope: str  # the split or file it is about; "" for the whole data set
    status: str  # pass | fail | skip
    value: Any
    threshold: Any
    message: str

    @property
    def label(self) -> str:
        return f"{self.name}[{self.scope}]" if self.scope else self.name

    @property
    def failed(self) -> bool:
        return self.status == FAIL

    def to_json(self) -> dict[str, Any]:
        return {
            "check": self.name,
            "scope": self.scope,
            "status": self.status,
            "value": self.value,
            "threshold": self.threshold,
            "message": self.message,
        }


def judged(name: str, scope: str, ok: bool, value: Any, threshold: Any, message: str) -> Check:
    return Check(name, scope, PASS if ok else FAIL, value, threshold, message)


def skipped(name: str, scope: str, threshold: Any, reason: str) -> Check:
    return Check(name, scope, SKIP, None, threshold, f"skipped: {reason}")


def counts_in_range(labels: np.ndarray) -> dict[str, int]:
    """Images per class "0".."9", counting only labels that are whole numbers in 0..9 (the others are
    labels_in_range's failure); the counting itself is mnist_ct.artifacts.class_counts, as in the manifest."""
    labels = np.asarray(labels)
    if labels.ndim != 1 or not is_numeric(labels):
        return class_counts(np.zeros(0, np.int64))
    with np.errstate(invalid="ignore"):
        inside = (labels >= 0) & (labels < NUM_CLASSES) & (labels == np.round(labels))
    return class_counts(labels[inside].astype(np.int64))


def is_numeric(labels: np.ndarray) -> bool:
    """Integers or real floats (not bool, complex, text, dates or records)."""
    return labels.dtype.kind in "iuf"


def is_image_array(images: np.ndarray) -> bool:
    return images.dtype == np.uint8 and images.ndim == 3 and images.shape[1:] == IMAGE_SHAPE


def is_label_array(labels: np.ndarray, n_images: int) -> bool:
    return labels.ndim == 1 and np.issubdtype(labels.dtype, np.integer) and len(labels) == n_images


def check_not_empty(split: str, labels: np.ndarray, where: str) -> Check:
    n = int(labels.shape[0]) if labels.ndim else 0
    return judged("not_empty", split, n > 0, n, "> 0", f"{where}: {n} images")


def check_image_format(split: str, images: np.ndarray, where: str) -> Check:
    found = f"{images.dtype} {list(images.shape)}"
    ok = is_image_array(images)
    return judged(
        "image_format",
        split,
        ok,
        found,
        "uint8 [N,28,28]",
        f"{where}: {found}" if ok else f"{where}: images are {found}, expected uint8 [N,28,28]",
    )


def check_label_format(split: str, labels: np.ndarray, n_images: int, where: str) -> Check:
    found = f"{labels.dtype} {list(labels.shape)}"
    ok = is_label_array(labels, n_images)
    message = f"{where}: {found}" if ok else f"{where}: labels are {found}, expected integer [{n_images}]"
    return judged("label_format", split, ok, found, f"integer [{n_images}]", message)


def check_labels_in_range(split: str, labels: np.ndarray, where: str) -> Check:
    if labels.ndim != 1 or not is_numeric(labels):
        return skipped("labels_in_range", split, [0, NUM_CLASSES - 1], "labels are not a 1-D numeric array")
    if len(labels) == 0:
        return skipped("labels_in_range", split, [0, NUM_CLASSES - 1], "no labels")
    not_finite = int(np.count_nonzero(~np.isfinite(labels)))
    if not_finite:
        message = f"{where}: {not_finite} labels are nan or inf, expected whole numbers in 0..9"
        return judged("labels_in_range", split, False, {"not_finite": not_finite}, [0, NUM_CLASSES - 1], message)
    low, high = labels.min().item(), labels.max().item()
    integral = bool(np.all(labels == np.round(labels)))
    ok = integral and low >= 0 and high <= NUM_CLASSES - 1
    message = f"{where}: labels span {low}..{high}"
    if not ok:
        message += ", expected whole numbers in 0..9"
    return judged("labels_in_range", split, ok, [low, high], [0, NUM_CLASSES - 1], message)


def check_pixel_range(split: str, images: np.ndarray, where: str) -> Check:
    if not is_image_array(images) or len(images) == 0:
        return skipped("pixel_range", split, [0, 255], "images are not a non-empty uint8 [N,28,28] array")
    low, high = int(images.min()), int(images.max())
    # uint8 keeps values in 0..255; an all-black split is what can go wrong.
    ok = high > 0
    message = f"{where}: pixels span {low}..{high}" + ("" if ok else ", every image is blank")
    return judged("pixel_range", split, ok, [low, high], [0, 255], message)


def check_pixel_stats(split: str, images: np.ndarray, bounds: Thresholds, where: str) -> list[Check]:
    if not is_image_array(images) or len(images) == 0:
        reason = "images are not a non-empty uint8 [N,28,28] array"
        return [
            skipped("pixel_mean", split, list(bounds.mean_bounds), reason),
            skipped("pixel_std", split, list(bounds.std_bounds), reason),
        ]
    stats = pixel_stats(images)
    checks = []
    for name, key, (low, high) in (("pixel_mean", "mean", bounds.mean_bounds), ("pixel_std", "std", bounds.std_bounds)):
        value = stats[key]
        ok = low <= value <= high
        message = f"{where}: pixel {key} {value:.4f}"
        if not ok:
            message += f", outside {low}..{high} (wrong scale or inverted?)"
        checks.append(judged(name, split, ok, value, [low, high], message))
    return checks


def check_classes_present(split: str, labels: np.ndarray, where: str) -> Check:
    if len(labels) == 0:
        return skipped("classes_present", split, "all of 0..9", "no labels")
    missing = [int(c) for c, n in counts_in_range(labels).items() if n == 0]
    message = f"{where}: every class 0..9 present" if not missing else f"{where}: no images of class {missing}"
    return judged("classes_present", split, not missing, missing, "all of 0..9", message)


def check_class_balance(split: str, labels: np.ndarray, min_ratio: float, where: str) -> Check:
    present = [n for n in counts_in_range(labels).values() if n > 0]
    if not present:
        return skipped("class_balance", split, min_ratio, "no labels in 0..9")
    ratio = round(min(present) / max(present), 4)
    ok = ratio >= min_ratio
    message = f"{where}: smallest/largest class {min(present)}/{max(present)} = {ratio}"
    if not ok:
        message += f", below {min_ratio}"
    return judged("class_balance", split, ok, ratio, min_ratio, message)


def check_counts_match_manifest(split: str, labels: np.ndarray, recorded: Any, where: str) -> Check:
    actual = counts_in_range(labels)
    if not isinstance(recorded, dict):
        return skipped("counts_match_manifest", split, "manifest meta.counts", "the manifest records no counts")
    ok = {str(k): v for k, v in recorded.items()} == actual
    message = f"{where}: class counts match the manifest"
    if not ok:
        message = f"{where}: class counts {actual} differ from the manifest's {recorded}"
    return judged("counts_match_manifest", split, ok, actual, "meta.counts", message)


def row_hashes(images: np.ndarray) -> list[bytes]:
    flat = np.ascontiguousarray(images).reshape(len(images), -1)
    return [hashlib.blake2b(row.tobytes(), digest_size=16).digest() for row in flat]


def check_leakage(train: np.ndarray, test: np.ndarray, max_share: float, where: str) -> Check:
    """Exact duplicates of train images in test: the test score would measure memory, not skill."""
    if not (is_image_array(train) and is_image_array(test)) or len(test) == 0:
        return skipped("leakage", "", max_share, "needs non-empty uint8 [N,28,28] train and test images")
    seen = set(row_hashes(train))
    duplicates = sum(h in seen for h in row_hashes(test))
    share = round(duplicates / len(test), 6)
    ok = share <= max_share
    message = f"{where}: {duplicates} of {len(test)} test images are exact copies of train images ({share:.4%})"
    if not ok:
        message += f", above {max_share:.4%}"
    return judged("leakage", "", ok, {"duplicates": duplicates, "share": share}, max_share, message)


def check_drift(split: str, images: np.ndarray, reference: Any, tolerance: float, where: str) -> Check:
    """Pixel mean and std of a split against the reference manifest's meta.pixel_stats[split]."""
    if not is_image_array(images) or len(images) == 0:
        return skipped("drift", split, tolerance, "images are not a non-empty uint8 [N,28,28] array")
    if not (isinstance(reference, dict) and {"mean", "std"} <= reference.keys()):
        return judged(
            "drift",
            split,
            False,
            None,
            tolerance,
            f"{where}: the reference manifest has no pixel_stats for split {split!r}; "
            "use a data set made by preprocess 0.1.0 or later",
        )
    if not all(_is_real(reference[k]) for k in ("mean", "std")):
        found = {k: reference[k] for k in ("mean", "std")}
        message = f"{where}: the reference manifest's pixel_stats for split {split!r} are not numbers ({found})"
        return judged("drift", split, False, None, tolerance, message)
    stats = pixel_stats(images)
    delta = {k: round(abs(stats[k] - float(reference[k])), 6) for k in ("mean", "std")}
    ok = max(delta.values()) <= tolerance
    message = (
        f"{where}: pixel mean {stats['mean']:.4f} vs {float(reference['mean']):.4f}, "
        f"std {stats['std']:.4f} vs {float(reference['std']):.4f} in the reference"
    )
    if not ok:
        message += f"; drift above {tolerance}"
    return judged("drift", split, ok, {"current": stats, "delta": delta}, tolerance, message)


def label_distribution(counts: Mapping[str, float]) -> dict[str, float]:
    """Each class's share "0".."9" of a split (counts of every class, zeros included, summing to more than 0)."""
    total = sum(counts.values())
    return {str(k): counts.get(str(k), 0) / total for k in range(NUM_CLASSES)}


def total_variation(p: dict[str, float], q: dict[str, float]) -> float:
    """0.5 * sum |p - q| over the classes: the largest difference in probability any set of classes can have."""
    return 0.5 * sum(abs(p[k] - q[k]) for k in p)


def recorded_class_counts(recorded: Any) -> dict[str, float] | None:
    """A manifest's meta.counts[split] as counts of "0".."9", or None when it holds anything else (or nothing)."""
    if not isinstance(recorded, dict) or not recorded:
        return None
    counts = {str(k): v for k, v in recorded.items()}
    classes = {str(k) for k in range(NUM_CLASSES)}
    if not counts.keys() <= classes or not all(_is_real(v) and v >= 0 for v in counts.values()):
        return None
    if sum(counts.values()) <= 0:
        return None
    return {k: counts.get(k, 0) for k in sorted(classes, key=int)}


def check_label_shift(
    split: str, labels: np.ndarray, reference: Any, max_shift: float, where: str, against: str
) -> Check:
    """The split's label distribution against the reference manifest's meta.counts[split] (total variation)."""
    if labels.ndim != 1 or len(labels) == 0 or not is_numeric(labels):
        return skipped("label_shift", split, max_shift, "needs a non-empty 1-D numeric label array")
    counts = counts_in_range(labels)
    if sum(counts.values()) == 0:
        return skipped("label_shift", split, max_shift, "no labels in 0..9")
    recorded = recorded_class_counts(reference)
    if recorded is None:
        message = (
            f"{where}: {against} records no class counts for split {split!r} (meta.counts.{split}: {reference!r}); "
            "use a data set written by mnist_ct.artifacts.write_dataset"
        )
        return judged("label_shift", split, False, None, max_shift, message)
    p, q = label_distribution(counts), label_distribution(recorded)
    distance = round(total_variation(p, q), 6)
    ok = distance <= max_shift
    # rounded so that equal differences tie (then the lower class first) rather than differ in float noise
    largest = sorted(p, key=lambda k: (-round(abs(p[k] - q[k]), 9), int(k)))[:3]
    differences = ", ".join(f"class {k} {p[k]:.1%} vs {q[k]:.1%}" for k in largest)
    message = (
        f"{where}: label distribution {distance:.4f} from {against}, by total variation distance; "
        f"largest differences, this run vs the reference: {differences}"
    )
    if not ok:
        message += f"; shift above {max_shift}"
    value = {"distance": distance, "current": _rounded(p), "reference": _rounded(q)}
    return judged("label_shift", split, ok, value, max_shift, message)


def _rounded(shares: dict[str, float]) -> dict[str, float]:
    return {k: round(v, 6) for k, v in shares.items()}


def _is_real(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)
