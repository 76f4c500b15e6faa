"""Stand-ins for the seven step packages, in the step shape, for fast tests of `mnist-ct run-local`.

`write_fake_steps(root)` writes `root/mnist_ct/<step>/__main__.py` for every step: `build_parser()` with
the options the pipeline passes (typed and bounded as the real steps type them), `options_from_args`
with a cross-field rule (an index factory string must start with a letter and not end in 0), and `main`
through mnist_ct.artifacts' `step_main`. `run` publishes a small artifact with mnist_ct.artifacts'
`publish` (so a failure or a SIGTERM leaves no staging); analysis writes `--accuracy-out`. The steps
that have typed artifacts (pipeline.STEPS) take `--executor-input` and `--output-artifact` through
mnist_ct.artifacts' KFP outputs, as the real ones do (`add_kfp_arguments`, `KfpOutputs`): each artifact
a small file, its metadata the common step, step_version (of the installed distribution: none for these,
`0+unknown`), image (MNIST_CT_IMAGES), run_id, plus accuracy (analysis) or data_version (preprocess).
Environment:

    MNIST_CT_FAKE_ACCURACY=0.9      what analysis reports
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

    def __post_init__(self) -> None:
        if not self.index[:1].isalpha() or self.index.endswith("0"):
            raise UsageError(f"--index {{self.index!r}}: not a FAISS index factory string")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog=STEP)
    add_run_arguments(parser)
    parser.add_argument("--dataset", choices=["mnist-5k", "mnist", "fashion-mnist"], default="mnist-5k")
    parser.add_argument("--limit-per-class", type=positive_int)
    parser.add_argument("--seed", type=seed_value, default=0)
    parser.add_argument("--epochs", type=bounded_int(1, 10000), default=15)
    parser.add_argument("--index", default="Flat")
    parser.add_argument("--k", type=bounded_int(1, 1000), default=1)
    parser.add_argument("--accuracy-out", type=Path)
    parser.add_argument("--model-name", default="mnist")
    parser.add_argument("--learning-rate", type=bounded_float(0, 10, low_open=True), default=0.01)
    add_threads_argument(parser, used_by="nothing")
    if ARTIFACTS:
        add_kfp_arguments(parser, ARTIFACTS)
    return parser


def options_from_args(args: argparse.Namespace) -> Options:
    kfp = KfpOutputs.from_args(STEP, ARTIFACTS, args) if ARTIFACTS else None
    return Options(args.index, args.accuracy_out, kfp)


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
        if os.environ.get("MNIST_CT_FAKE_WAIT") == STEP:
            (volume / "started").write_text(STEP)
            time.sleep(60)
    if options.accuracy_out is not None:
        options.accuracy_out.write_text(os.environ.get("MNIST_CT_FAKE_ACCURACY", "0.9") + "\\n")
    write_artifacts(paths, options)
    log("done")
    return 0


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
