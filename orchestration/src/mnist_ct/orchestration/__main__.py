"""`mnist-ct`: compile, release and run the pipeline (argument parsing and exit codes only).

Exit codes: 0 done, 2 bad usage, 3 bad input (lock, compiled pipeline, parameter), 4 the KFP endpoint
is unreachable or refused a request; run-local: a failing step's own exit code.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from mnist_ct.orchestration.errors import OrchestrationError
from mnist_ct.orchestration.lock import LOCK_PATH, LockError, read_lock

PROG = "mnist-ct"


def _param(text: str) -> tuple[str, str]:
    name, sep, value = text.partition("=")
    if not sep or not name:
        raise argparse.ArgumentTypeError(f"expected NAME=VALUE, got {text!r}")
    return name, value


def _add_lock(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--lock", type=Path, default=LOCK_PATH, help="the image lock (default: orchestration/images.lock.json)"
    )


def _add_params(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "-p",
        "--param",
        type=_param,
        action="append",
        default=[],
        metavar="NAME=VALUE",
        help="a pipeline parameter (repeatable): dataset, limit_per_class, seed, epochs, index, k, baseline, "
        "model_name",
    )


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog=PROG, description="The mnist-ct KFP v2 pipeline: compile, release, run-local."
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    c = sub.add_parser(
        "compile",
        help="compile the pipeline and check it strictly",
        description="Compile the pipeline with every image from the lock as repo@sha256:<digest>, then check the "
        "YAML strictly (protobuf parse with unknown fields refused, references, CEL, images equal to the lock, "
        "PVC mounts, the deploy condition). Lists every step that is not pinned.",
    )
    c.add_argument("-o", "--output", type=Path, default=Path("pipeline.yaml"), help="default: %(default)s")
    c.add_argument(
        "--dev",
        action="store_true",
        help="accept steps without a digest (image <repo>:<version>), for local runs; the output is marked not "
        "releasable and release refuses it",
    )
    _add_lock(c)

    r = sub.add_parser(
        "release",
        help="upload the pinned pipeline as a new KFP pipeline version (and start a run)",
        description="Compile strictly from the lock (or check --package), then upload it to KFP as version "
        "<orchestration version>-<lock hash>: the pipeline is created the first time; an existing version is "
        "left alone (nothing uploaded). Credentials: MNIST_CT_KFP_TOKEN (bearer token), KF_PIPELINES_SA_TOKEN_PATH "
        "(token file), or kfp's own config; never printed.",
    )
    r.add_argument(
        "--host", required=True, help="KFP API endpoint, e.g. http://localhost:8080 (port-forwarded ml-pipeline-ui)"
    )
    r.add_argument("--namespace", help="profile namespace of a multi-user KFP: pipeline, experiment and run go there")
    r.add_argument(
        "--experiment", default="mnist-ct", help="experiment for --run, created if missing (default: %(default)s)"
    )
    r.add_argument("--run", action="store_true", help="start a run of the released version")
    r.add_argument("--dry-run", action="store_true", help="compile, check and look up; upload and start nothing")
    r.add_argument(
        "--package", type=Path, help="release this compiled YAML instead of compiling (checked against the lock)"
    )
    _add_params(r)
    _add_lock(r)

    lr = sub.add_parser(
        "run-local",
        help="run the compiled pipeline on this machine, no Kubernetes",
        description="Compile (--dev) and execute the pipeline YAML itself: tasks in dependency order, placeholders "
        "resolved, the deploy condition evaluated, the three volumes as folders under the work dir "
        "(data, model, deploy-model). Process mode runs the installed step packages with this Python.",
    )
    lr.add_argument("--workdir", type=Path, default=Path("scratch"), help="default: %(default)s")
    lr.add_argument("--dataset", help="mnist-5k (built in, offline; the default), mnist or fashion-mnist")
    lr.add_argument("--baseline", help="deploy only when accuracy > this (default 0.8)")
    lr.add_argument("--epochs", help="training epochs")
    lr.add_argument("--limit-per-class", help="keep at most N images per class (quick runs)")
    lr.add_argument("--index", help="FAISS index factory string (default Flat)")
    lr.add_argument("--seed", help="seed for the split and training (default 0)")
    lr.add_argument("--run-id", help="run id (default: local-<UTC time>-<random>)")
    lr.add_argument("--pipeline", type=Path, help="run this compiled YAML instead of compiling")
    lr.add_argument(
        "--venvs",
        type=Path,
        metavar="DIR",
        help="run each step with its own venv, DIR/<step>/bin/python (e.g. .nox/packages after `nox -s tests`), "
        "instead of this Python",
    )
    lr.add_argument(
        "--containers",
        action="store_true",
        help="run the step images instead of the installed packages (provided by the image build tooling)",
    )
    _add_params(lr)
    _add_lock(lr)
    return parser


def _compile(args: argparse.Namespace) -> int:
    from mnist_ct.orchestration.compiling import compile_pipeline

    lock = read_lock(args.lock)
    compiled = compile_pipeline(lock, args.output, dev=args.dev)
    steps = len(compiled.executors)
    kind = "dev build (not releasable)" if args.dev else "every image pinned by digest"
    print(f"{args.output}: {steps} steps, {kind}; strict check passed")
    return 0


def _release(args: argparse.Namespace) -> int:
    from mnist_ct.orchestration.release import release

    lock = read_lock(args.lock)
    release(
        args.host,
        lock,
        package=args.package,
        namespace=args.namespace,
        experiment=args.experiment,
        run=args.run,
        params=dict(args.param),
        dry_run=args.dry_run,
    )
    return 0


def _run_local(args: argparse.Namespace) -> int:
    from mnist_ct.orchestration.local import run_local

    params = dict(args.param)
    for option in ("dataset", "baseline", "epochs", "limit_per_class", "index", "seed"):
        value = getattr(args, option)
        if value is not None:
            params[option] = value
    return run_local(
        workdir=args.workdir,
        lock_path=args.lock,
        params=params,
        run_id=args.run_id,
        pipeline=args.pipeline,
        containers=args.containers,
        venvs=args.venvs,
    )


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    handlers = {"compile": _compile, "release": _release, "run-local": _run_local}
    try:
        return handlers[args.command](args)
    except LockError as e:
        print(f"{PROG} {args.command}: error: {e}", file=sys.stderr)
        return 3
    except OrchestrationError as e:
        print(f"{PROG} {args.command}: error: {e}", file=sys.stderr)
        for problem in e.problems:
            print(f"  - {problem}", file=sys.stderr)
        return e.exit_code


if __name__ == "__main__":
    raise SystemExit(main())
