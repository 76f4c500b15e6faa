"""The validate step, top to bottom: read the reference (verified), check the run's data set, publish the report."""

from __future__ import annotations

import math
import sys
from dataclasses import dataclass, field
from pathlib import Path

from mnist_ct.artifacts import (
    DEFAULT_MODEL_NAME,
    EXIT_BAD_INPUT,
    MANIFEST,
    Log,
    Producer,
    RunPaths,
    UsageError,
    check_low_high,
    check_model_name,
    find_champion,
)

from .checks import Thresholds
from .validation import REFERENCE_CHAMPION, REPORT, Reference, publish_report, read_reference, validate

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
    model_name: str = DEFAULT_MODEL_NAME  # whose champion's training data is the reference when `reference` is None

    def __post_init__(self) -> None:
        t = self.thresholds
        shares = {
            "--drift-tolerance": t.drift_tolerance,
            "--min-class-ratio": t.min_class_ratio,
            "--max-leakage": t.max_leakage,
            "--max-label-shift": t.max_label_shift,
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
        try:
            check_model_name(self.model_name)
        except UsageError as e:
            raise UsageError(f"--model-name: {e}") from None
        if self.reference is not None:
            object.__setattr__(self, "reference", reference_folder(self.reference))


NO_CHAMPION = "no champion on the deploy volume"


def choose_reference(paths: RunPaths, options: Options) -> tuple[Reference | None, str | None]:
    """The drift baseline, verified: `--reference-manifest` if given (the champion is not looked at), else the
    champion's training data; (None, why) when there is no champion. A champion whose training data is gone or
    replaced is an ArtifactError (exit 3): drift against some other data set would not mean what it says."""
    if options.reference is not None:
        return read_reference(options.reference), None
    champion = find_champion(paths.deploy_root, options.model_name)
    if champion is None:
        return None, NO_CHAMPION
    folder, _ = champion.training_data(paths.data_root)
    return read_reference(folder, REFERENCE_CHAMPION, champion.summary()), None


def run(paths: RunPaths, options: Options, log: Log) -> int:
    """Check the run's data set; publish the report whether the checks pass or not; exit 3 when one fails."""
    destination = paths.validation  # refused here, before any work, if it leads out of its volume
    reference, no_reference = choose_reference(paths, options)
    with log.work():  # the checks on the data (timing.py: the step's own work)
        report = validate(paths.dataset, options.thresholds, reference, no_reference)
    publish_report(report, destination, Producer.of(STEP))
    # A failed check is the step's finding, not an error: one line each, even with --quiet.
    for check in report.failures:
        print(f"{STEP}: check failed: {check.label}: {check.message}", file=sys.stderr)
    summary = report.to_json()["summary"]
    log(
        f"{len(report.checks)} checks: {summary['pass']} passed, {summary['fail']} failed, "
        f"{summary['skip']} skipped -> {destination / REPORT}; drift against "
        + (f"{reference.name}, {reference.manifest_path}" if reference else f"nothing ({no_reference})")
    )
    return 0 if report.passed else EXIT_BAD_INPUT
