"""`mnist-ct`: compile, release, run the pipeline, show its champion timeline (the argument parser; the error
boundary is mnist_ct.artifacts').

Exit codes: 0 done, 1 a bug (one line says where the traceback is), 2 bad usage (a step's options that
run-local would pass included), 3 bad input (lock, compiled pipeline, parameter, work dir, a pinned image
not in its registry), 4 the KFP endpoint or an image registry is unreachable or refused a request, 5 the
environment (disk full, read-only, no container engine), 130/143 interrupted; run-local: a failing step's
own exit code (128 + N when signal N killed it).
"""

from __future__ import annotations

import argparse
import os
from collections.abc import Callable
from pathlib import Path

from mnist_ct.artifacts import UsageError, error_boundary
from mnist_ct.artifacts.entry import parse_args

PROG = "mnist-ct"
RUN_LOCAL_PARAMETERS = (
    "dataset", "baseline", "min_improvement", "only_if_changed", "epochs", "limit_per_class", "index", "seed"
)  # fmt: skip


def _param(text: str) -> tuple[str, str]:
    name, sep, value = text.partition("=")
    if not sep or not name:
        raise argparse.ArgumentTypeError(f"expected NAME=VALUE, got {text!r}")
    return name, value


def _cron(text: str) -> str:
    from mnist_ct.orchestration.release import check_cron

    try:
        return check_cron(text)
    except UsageError as e:
        raise argparse.ArgumentTypeError(str(e)) from None


def _model_name(text: str) -> str:
    from mnist_ct.artifacts.champion import check_model_name

    try:
        return check_model_name(text)
    except UsageError as e:
        raise argparse.ArgumentTypeError(str(e)) from None


def _plot_path(text: str) -> Path:
    from mnist_ct.orchestration.history import check_plot_path

    try:
        return check_plot_path(Path(text))
    except UsageError as e:
        raise argparse.ArgumentTypeError(str(e).removeprefix(f"--plot {text}: ")) from None


def _add_lock(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--lock",
        type=Path,
        default=None,
        help="the image lock (default: orchestration/images.lock.json in the working directory or the nearest "
        "folder above it; else the one beside an editable install)",
    )


def _add_registry(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--registry",
        default=os.environ.get("MNIST_CT_REGISTRY") or None,
        metavar="R",
        help="look the pinned images up under this registry prefix, the same repository names and digests (where "
        "build-changed --registry R pushed them, e.g. 127.0.0.1:5000/mnist-ct); default: $MNIST_CT_REGISTRY, "
        "else the lock's image repositories",
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
        "min_improvement, only_if_changed, model_name",
    )


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog=PROG, description="The mnist-ct KFP v2 pipeline: compile, release, run-local, history."
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
    c.add_argument(
        "--check-images",
        action="store_true",
        help="also check that every pinned image is in its registry by digest (the one network call compile can "
        "make; release does this itself): missing images exit 3, naming them",
    )
    _add_registry(c)
    _add_lock(c)

    r = sub.add_parser(
        "release",
        help="upload the pinned pipeline as a new KFP pipeline version (and start a run)",
        description="Compile strictly from the lock (or check --package), then upload it to KFP as version "
        "<orchestration version>-<lock hash>: the pipeline is created the first time; an existing version is "
        "left alone (nothing uploaded). First, before KFP is contacted (--dry-run too), every image the lock pins "
        "must be in its registry by digest (missing: exit 3; registry unreachable: exit 4). Credentials: "
        "MNIST_CT_KFP_TOKEN (bearer token), KF_PIPELINES_SA_TOKEN_PATH (token file), or kfp's own config; for the "
        "registry, the auth files buildah/podman/docker login write; never printed. --schedule CRON also makes (or "
        "replaces) the recurring run of that version; --unschedule only removes it.",
    )
    r.add_argument(
        "--host", required=True, help="KFP API endpoint, e.g. http://localhost:8080 (port-forwarded ml-pipeline-ui)"
    )
    r.add_argument("--namespace", help="profile namespace of a multi-user KFP: pipeline, experiment and run go there")
    r.add_argument(
        "--experiment", default="mnist-ct", help="experiment for --run, created if missing (default: %(default)s)"
    )
    r.add_argument("--run", action="store_true", help="start a run of the released version")
    when = r.add_mutually_exclusive_group()
    when.add_argument(
        "--schedule",
        type=_cron,
        metavar="CRON",
        help="create (or replace, when it differs) the recurring run '<pipeline> schedule' of the released version "
        "in --experiment: max concurrency 1, no catch-up, the -p parameters. KFP's cron: six fields, seconds "
        "first ('0 0 3 * * *': 03:00 daily), or @hourly/@daily/@weekly/@monthly/@yearly/@every 6h",
    )
    when.add_argument(
        "--unschedule",
        action="store_true",
        help="remove that recurring run from --experiment (says so when there is none); nothing is released",
    )
    r.add_argument("--dry-run", action="store_true", help="compile, check and look up; upload and start nothing")
    r.add_argument(
        "--package", type=Path, help="release this compiled YAML instead of compiling (checked against the lock)"
    )
    _add_registry(r)
    r.add_argument(
        "--skip-image-check",
        action="store_true",
        help="do not check that the pinned images exist in their registry (a cluster that pulls from elsewhere)",
    )
    _add_params(r)
    _add_lock(r)

    h = sub.add_parser(
        "history",
        help="the champion timeline: every deploy, refusal and rollback, with data versions and accuracies",
        description="Read <deploy-root>/deployments.jsonl (deploy's log) and print one row per deploy, refusal, "
        "rollback or recovery of the model: time, version, run, the challenger's accuracy and the champion's on "
        "the same test split (where analysis measured it), the version live after it, and the run's data version "
        "and incoming batch count (from <data-root>/runs/<run>/dataset/manifest.json). Unreadable log lines are "
        "skipped and counted on stderr.",
    )
    h.add_argument(
        "--deploy-root", type=Path, required=True, metavar="D", help="the deploy volume (deploy's --deploy-root)"
    )
    h.add_argument(
        "--data-root",
        type=Path,
        metavar="D",
        help="the data volume: adds each run's data version and batch count (optional)",
    )
    h.add_argument(
        "--model-name", type=_model_name, default="mnist", metavar="M", help="the model (default: %(default)s)"
    )
    form = h.add_mutually_exclusive_group()
    form.add_argument("--csv", action="store_true", help="CSV on stdout instead of the table")
    form.add_argument("--json", action="store_true", help="JSON records on stdout instead of the table")
    h.add_argument(
        "--plot",
        type=_plot_path,
        metavar="FILE",
        help="also draw accuracy over runs into FILE: .png or .svg, by its extension",
    )

    lr = sub.add_parser(
        "run-local",
        help="run the compiled pipeline on this machine, no Kubernetes",
        description="Compile (--dev) and execute the pipeline YAML itself: tasks in dependency order, placeholders "
        "resolved, the deploy condition evaluated, the three volumes as folders under the work dir "
        "(data, model, deploy-model). Process mode runs the installed step packages with this Python. Before "
        "anything is created, the run id, the work dir, the parameters and every step's options (parsed by the "
        "step's own parser) are checked. Output artifacts go under WORKDIR/kfp/<run id>/artifacts, with their "
        "metadata in its run.json, listed at the end; each task runs once (retryPolicy is for a cluster).",
    )
    lr.add_argument(
        "--workdir",
        type=Path,
        default=Path("scratch"),
        help="the three volumes and kfp/ go here (default: %(default)s)",
    )
    lr.add_argument("--dataset", help="mnist-5k (built in, offline; the default), mnist or fashion-mnist")
    lr.add_argument("--baseline", help="bless (and deploy) only when accuracy > this (default 0.8)")
    lr.add_argument(
        "--min-improvement",
        help="bless only when accuracy >= the champion's on this run's test split + this (default 0.0)",
    )
    lr.add_argument(
        "--only-if-changed",
        choices=("true", "false"),
        help="true (default): end the run after preprocess when the data and every step version are the champion's",
    )
    lr.add_argument("--epochs", help="training epochs")
    lr.add_argument("--limit-per-class", help="keep at most N images per class (quick runs)")
    lr.add_argument("--index", help="FAISS index factory string (default Flat)")
    lr.add_argument("--seed", help="seed for the split and training (default 0)")
    lr.add_argument("--run-id", help="run id (default: local-<UTC time>-<random>)")
    lr.add_argument("--pipeline", type=Path, help="run this compiled YAML instead of compiling")
    mode = lr.add_mutually_exclusive_group()
    mode.add_argument(
        "--venvs",
        type=Path,
        metavar="DIR",
        help="run each step with its own venv, DIR/<step>/bin/python (e.g. .nox/packages after `nox -s tests`), "
        "instead of this Python",
    )
    mode.add_argument(
        "--containers",
        action="store_true",
        help="run the step images instead of the installed packages (provided by the image build tooling)",
    )
    _add_params(lr)
    _add_lock(lr)
    return parser


def parameters(pairs: list[tuple[str, str]], **options: str | None) -> dict[str, str]:
    """`-p NAME=VALUE` pairs and run-local's own options as one mapping; a name given twice is bad usage."""
    given: dict[str, str] = {}
    for name, value in [*pairs, *((k, v) for k, v in options.items() if v is not None)]:
        if name in given:
            raise UsageError(f"pipeline parameter {name} is given twice ({given[name]!r} and {value!r}): give it once")
        given[name] = value
    return given


def _compile(args: argparse.Namespace) -> int:
    from mnist_ct.orchestration.compiling import compile_pipeline, load_lock

    if args.check_images and args.dev:
        raise UsageError("--check-images checks the digests of a strict build: drop --dev or --check-images")
    lock = load_lock(args.lock)
    if args.check_images:  # before the output is written: a file there means its images can be pulled
        from mnist_ct.orchestration.release import check_images

        check_images(lock, args.registry)
    compiled = compile_pipeline(lock, args.output, dev=args.dev)
    kind = "dev build (not releasable)" if args.dev else "every image pinned by digest"
    print(f"{args.output}: {len(compiled.executors)} steps, {kind}; strict check passed")
    return 0


def _release(args: argparse.Namespace) -> int:
    from mnist_ct.orchestration.compiling import load_lock
    from mnist_ct.orchestration.release import release, unschedule

    params = parameters(args.param)
    if args.unschedule:
        given = [o for o, on in (("--run", args.run), ("--package", args.package), ("-p", params)) if on]
        if given:
            raise UsageError(f"--unschedule releases nothing: drop {', '.join(given)}")
        unschedule(args.host, namespace=args.namespace, experiment=args.experiment, dry_run=args.dry_run)
        return 0
    release(
        args.host,
        load_lock(args.lock),
        package=args.package,
        namespace=args.namespace,
        experiment=args.experiment,
        run=args.run,
        params=params,
        dry_run=args.dry_run,
        registry=args.registry,
        skip_image_check=args.skip_image_check,
        schedule=args.schedule,
    )
    return 0


def _history(args: argparse.Namespace) -> int:
    from mnist_ct.orchestration.history import history

    output = "csv" if args.csv else "json" if args.json else "table"
    history(args.deploy_root, data_root=args.data_root, model_name=args.model_name, output=output, plot_path=args.plot)
    return 0


def _run_local(args: argparse.Namespace) -> int:
    from mnist_ct.orchestration.local import run_local

    params = parameters(args.param, **{option: getattr(args, option) for option in RUN_LOCAL_PARAMETERS})
    return run_local(
        workdir=args.workdir,
        lock_path=args.lock,
        params=params,
        run_id=args.run_id,
        pipeline=args.pipeline,
        containers=args.containers,
        venvs=args.venvs,
    )


COMMANDS: dict[str, Callable[[argparse.Namespace], int]] = {
    "compile": _compile,
    "release": _release,
    "history": _history,
    "run-local": _run_local,
}


def main(argv: list[str] | None = None) -> int:
    # mnist_ct.artifacts.command_main is parse_args + error_boundary; called apart so that the error line
    # names the command (`mnist-ct run-local: error: ...`), as argparse's own errors for it do.
    args = parse_args(build_parser(), argv)
    if isinstance(args, int):
        return args
    return error_boundary(f"{PROG} {args.command}", lambda: COMMANDS[args.command](args))


if __name__ == "__main__":
    raise SystemExit(main())
