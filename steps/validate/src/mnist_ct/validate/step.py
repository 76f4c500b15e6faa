"""The validate step, top to bottom: read the reference (verified), check the run's data set, publish the report."""

from __future__ import annotations

import math
import sys
from dataclasses import dataclass, field
from pathlib import Path

from mnist_ct.artifacts import EXIT_BAD_INPUT, MANIFEST, Log, Producer, RunPaths, UsageError, check_low_high

from .checks import Thresholds
from .validation import REPORT, publish_report, read_reference, validate

STEP = "validate"


def reference_folder(path: Path) -> Path:
    """The data set folder that `--reference-manifest` names: its manifest.json, or the folder holding one."""
    path = Path(path)
    if path.is_dir():
        if not (path / MANIFEST).is_file():
            raise UsageError(f"--reference-manifest {path}: the folder holds no {MANIFEST}; pass a data set's folder")
        return path
    if path.is_file():
        if path.name != MANIFEST:
            raise UsageError(
                f"--reference-manifest {path}: not a {MANIFEST}; pass a data set's {MANIFEST} or its folder"
            )
        return path.parent
    raise UsageError(f"--reference-manifest {path}: not found; pass a data set's {MANIFEST} or its folder")


@dataclass(frozen=True)
class Options:
    """The thresholds of the checks and the drift baseline, checked when made."""

    thresholds: Thresholds = field(default_factory=Thresholds)
    reference: Path | None = None  # a reference data set's folder (or its manifest.json: the folder is kept)

    def __post_init__(self) -> None:
        t = self.thresholds
        shares = {
            "--drift-tolerance": t.drift_tolerance,
            "--min-class-ratio": t.min_class_ratio,
            "--max-leakage": t.max_leakage,
        }
        for option, pair in (("--mean-bounds", t.mean_bounds), ("--std-bounds", t.std_bounds)):
            if len(pair) != 2:
                raise UsageError(f"{option}: give LOW HIGH, got {list(pair)}")
            shares.update({f"{option} LOW": pair[0], f"{option} HIGH": pair[1]})
        for option, value in shares.items():
            if not (math.isfinite(value) and 0 <= value <= 1):
                raise UsageError(f"{option} {value}: must be in [0, 1]")
        check_low_high("--mean-bounds", *t.mean_bounds)
        check_low_high("--std-bounds", *t.std_bounds)
        if self.reference is not None:
            object.__setattr__(self, "reference", reference_folder(self.reference))


def run(paths: RunPaths, options: Options, log: Log) -> int:
    """Check the run's data set; publish the report whether the checks pass or not; exit 3 when one fails."""
    destination = paths.validation  # refused here, before any work, if it leads out of its volume
    reference = read_reference(options.reference) if options.reference is not None else None
    report = validate(paths.dataset, options.thresholds, reference)
    publish_report(report, destination, Producer.of(STEP))
    # A failed check is the step's finding, not an error: one line each, even with --quiet.
    for check in report.failures:
        print(f"{STEP}: check failed: {check.label}: {check.message}", file=sys.stderr)
    summary = report.to_json()["summary"]
    log(
        f"{len(report.checks)} checks: {summary['pass']} passed, {summary['fail']} failed, "
        f"{summary['skip']} skipped -> {destination / REPORT}"
    )
    return 0 if report.passed else EXIT_BAD_INPUT
