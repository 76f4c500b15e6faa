"""Stand-ins for the seven step packages, in the step shape, for fast tests of `mnist-ct run-local`.

`write_fake_steps(root)` writes `root/mnist_ct/<step>/__main__.py` for every step: `build_parser()` with
the options the pipeline passes (typed and bounded as the real steps type them), `options_from_args`
with a cross-field rule (an index factory string must start with a letter and not end in 0), and `main`
through mnist_ct.artifacts' `step_main`. `run` publishes a small artifact with mnist_ct.artifacts'
`publish` (so a failure or a SIGTERM leaves no staging); preprocess writes `--proceed-out`, analysis
`--accuracy-out`, `--champion-accuracy-out`, `--blessed-out` and a metrics.json with `champion` and
`blessing` (blessed: accuracy > baseline and >= champion + min_improvement). The steps
that have typed artifacts (pipeline.STEPS) take `--executor-input` and `--output-artifact` through
mnist_ct.artifacts' KFP outputs, as the real ones do (`add_kfp_arguments`, `KfpOutputs`): each artifact
a small file, its metadata the common step, step_version (of the installed distribution: none for these,
`0+unknown`), image (MNIST_CT_IMAGES), run_id, plus accuracy (analysis) or data_version (preprocess).
Environment:

    MNIST_CT_FAKE_ACCURACY=0.9      what analysis reports
    MNIST_CT_FAKE_CHAMPION=0.95     the champion's accuracy analysis reports (unset: no champion)
    MNIST_CT_FAKE_PROCEED=false     what preprocess says, unless --only-if-changed false (unset: true)
    MNIST_CT_FAKE_FAIL=validate     that step raises ArtifactError (exit 3, one line naming a file)
    MNIST_CT_FAKE_WAIT=train_model  that step waits (60 s at most) inside publish, after writing `started`

Put `root` on PYTHONPATH: the namespace package mnist_ct then holds these beside orchestration.
"""

from __future__ import annotations

from pathlib import Path

from mnist_ct.orchestration.pipeline import STEPS

TEMPLATE = '''\
"""A stand-in for mnist_ct.{step} (orchestration's tests): its options, a trivial run."""

from __future__ import annotations

import argparse
import json
import os
import time
from dataclasses import dataclass
from pathlib import Path

from mnist_ct.artifacts import (
    ArtifactError, KfpOutputs, Producer, RunPaths, UsageError, add_kfp_arguments, add_run_arguments,
    add_threads_argument, bounded_float, bounded_int, positive_int, publish, seed_value, step_main,
)

STEP = "{step}"
FOLDER = {folder!r}
ARTIFACTS = {artifacts!r}  # name -> schema title


@dataclass(frozen=True)
class Options:
    index: str
    accuracy_out: Path | None
    kfp: KfpOutputs | None
    args: argparse.Namespace

    def __post_init__(self) -> None:
        if not self.index[:1].isalpha() or self.index.endswith("0"):
            raise UsageError(f"--index {{self.index!r}}: not a FAISS index factory string")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog=STEP)
    add_run_arguments(parser)
    parser.add_argument("--dataset", choices=["mnist-5k", "mnist", "fashion-mnist"], default="mnist-5k")
    parser.add_argument("--limit-per-class", type=positive_int)
    parser.add_argument("--seed", type=seed_value, default=0)
    parser.add_argument("--epochs", type=bounded_int(1, 10000), default=12)
    parser.add_argument("--index", default="Flat")
    parser.add_argument("--k", type=bounded_int(1, 1000), default=1)
    parser.add_argument("--accuracy-out", type=Path)
    parser.add_argument("--champion-accuracy-out", type=Path)
    parser.add_argument("--blessed-out", type=Path)
    parser.add_argument("--proceed-out", type=Path)
    parser.add_argument("--only-if-changed", choices=["true", "false"], default="true")
    parser.add_argument("--baseline", type=bounded_float(0, 1), default=0.8)
    parser.add_argument("--min-improvement", type=bounded_float(-1, 1), default=0.0)
    parser.add_argument("--model-name", default="mnist")
    parser.add_argument("--learning-rate", type=bounded_float(0, 10, low_open=True), default=0.01)
    add_threads_argument(parser, used_by="nothing")
    if ARTIFACTS:
        add_kfp_arguments(parser, ARTIFACTS)
    return parser


def options_from_args(args: argparse.Namespace) -> Options:
    kfp = KfpOutputs.from_args(STEP, ARTIFACTS, args) if ARTIFACTS else None
    return Options(args.index, args.accuracy_out, kfp, args)


def write_artifacts(paths: RunPaths, options: Options) -> None:
    if options.kfp is None:
        return
    metadata = {{}}
    if STEP == "analysis":
        metadata["accuracy"] = float(os.environ.get("MNIST_CT_FAKE_ACCURACY", "0.9"))
    if STEP == "preprocess":
        metadata["data_version"] = "fake0123"
    with options.kfp.writing(paths.run_id) as out:
        for name in ARTIFACTS:
            out.add(name, f"{{STEP}} {{name}}\\n".encode(), metadata)


def run(paths: RunPaths, options: Options, log) -> int:
    volume = paths.deploy_root if STEP == "deploy" else paths.model_root if STEP != "preprocess" else paths.data_root
    final = volume / "runs" / paths.run_id / FOLDER
    if os.environ.get("MNIST_CT_FAKE_FAIL") == STEP:
        raise ArtifactError(f"{{paths.data_root}}/x.npy is broken")
    with publish(final, FOLDER, Producer(STEP, "0.0.0+fake")) as staging:
        (staging.path / "done.txt").write_text(STEP)
        if STEP == "analysis":
            (staging.path / "metrics.json").write_text(json.dumps(verdict(options.args)))
        if os.environ.get("MNIST_CT_FAKE_WAIT") == STEP:
            (volume / "started").write_text(STEP)
            time.sleep(60)
    if options.accuracy_out is not None:
        options.accuracy_out.write_text(os.environ.get("MNIST_CT_FAKE_ACCURACY", "0.9") + "\\n")
    if STEP == "analysis":
        found = verdict(options.args)
        champion = found["champion"]["accuracy"] if found["champion"] else -1.0
        if options.args.champion_accuracy_out is not None:
            options.args.champion_accuracy_out.write_text(repr(champion))
        if options.args.blessed_out is not None:
            options.args.blessed_out.write_text("true" if found["blessing"]["blessed"] else "false")
    if STEP == "preprocess" and options.args.proceed_out is not None:
        forced = options.args.only_if_changed == "false"
        proceed = forced or os.environ.get("MNIST_CT_FAKE_PROCEED", "true") == "true"
        options.args.proceed_out.write_text("true" if proceed else "false")
        log("proceed: " + ("true (forced)" if forced else "true (changed)" if proceed else "false (nothing changed)"))
    write_artifacts(paths, options)
    log("done")
    return 0


def verdict(args: argparse.Namespace) -> dict:
    """The champion and blessing parts of metrics.json, as the real analysis writes them."""
    accuracy = float(os.environ.get("MNIST_CT_FAKE_ACCURACY", "0.9"))
    known = os.environ.get("MNIST_CT_FAKE_CHAMPION")
    champion = {{"version": "v-champion", "accuracy": float(known)}} if known else None
    if accuracy <= args.baseline:
        blessed, reason = False, f"accuracy {{accuracy}} is not above the baseline {{args.baseline}}"
    elif champion and accuracy < champion["accuracy"] + args.min_improvement:
        blessed, reason = False, f"accuracy {{accuracy}} is below the champion's {{champion['accuracy']}}"
    else:
        blessed, reason = True, "above the baseline and the champion" if champion else "above the baseline, no champion"
    blessing = {{"blessed": blessed, "baseline": args.baseline, "min_improvement": args.min_improvement}}
    blessing["reason"] = reason
    return {{"champion": champion, "blessing": blessing}}


def main(argv: list[str] | None = None) -> int:
    return step_main(STEP, build_parser(), options_from_args, run, argv)


if __name__ == "__main__":
    raise SystemExit(main())
'''


def write_fake_steps(root: Path) -> Path:
    """The fake step packages under `root` (the folder to put on PYTHONPATH)."""
    for step in STEPS:
        package = root / "mnist_ct" / step
        package.mkdir(parents=True, exist_ok=True)
        (package / "__init__.py").write_text("")
        artifacts = {name: kind.schema_title for name, kind in STEPS[step].outputs}
        text = TEMPLATE.format(step=step, folder=step.replace("_", "-"), artifacts=artifacts)
        (package / "__main__.py").write_text(text)
    return root
