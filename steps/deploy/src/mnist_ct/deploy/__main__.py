"""python -m mnist_ct.deploy [serve|history]: the parsers (the step is step.py, local serving server.py, the log
event_log.py)."""

from __future__ import annotations

import argparse
import json
import socket
import sys
from collections.abc import Callable
from pathlib import Path

from mnist_ct.artifacts import (
    ArtifactError,
    KfpOutputs,
    UsageError,
    add_kfp_arguments,
    add_run_arguments,
    bounded_float,
    bounded_int,
    command_main,
    step_main,
    step_versions,
)
from mnist_ct.artifacts.cli import Log, volume_root
from mnist_ct.artifacts.paths import DEFAULT_DEPLOY_ROOT

from .archive import check_model_name
from .event_log import describe, log_path, read_events
from .serving_config import (
    MAX_BATCH_DELAY_MS,
    MAX_BATCH_SIZE,
    MAX_REQUEST_MB,
    MAX_WORKERS,
    ServingOptions,
)
from .step import (
    ARTIFACTS,
    DEFAULT_MAX_PIXELS,
    DEFAULT_MODEL_NAME,
    DEFAULT_PVC,
    EXIT_REFUSED,
    MAX_PIXELS_LIMIT,
    MAX_THREADS_PER_WORKER,
    MIN_PIXELS_LIMIT,
    STEP,
    Options,
    check_serving_root,
    run,
)

SERVE = "serve"
HISTORY = "history"
ROLLBACK_RUN_ID = "rollback"  # a rollback names no run; step_main still builds the (unused) run paths
MAX_READY_TIMEOUT_S = 3600.0
EPILOG = (
    "Exit codes: 0 done, 2 bad usage, 3 bad input (one line on stderr names the file), "
    f"{EXIT_REFUSED} refused: the run's accuracy is below the champion's on the same test split, or the live "
    "version is no longer the champion analysis measured (champion/challenger; --force overrides), "
    "5 the environment (disk full, read-only volume). "
    "Local serving: python -m mnist_ct.deploy serve --deploy-root DIR (see serve --help); the deployments log, "
    "with the images that made each version: python -m mnist_ct.deploy history --deploy-root DIR."
)
_DEFAULTS = ServingOptions()


def _checked(check: Callable[[str], str]) -> Callable[[str], str]:
    """argparse type from a check that raises UsageError (the same rule for Options built in code)."""

    def parse(text: str) -> str:
        try:
            return check(text)
        except UsageError as e:
            raise argparse.ArgumentTypeError(str(e)) from None

    return parse


_megabytes = bounded_float(0, MAX_REQUEST_MB, low_open=True)


def request_bytes(text: str) -> int:
    """argparse type: --max-request-mb as the whole number of bytes TorchServe's max_request_size takes."""
    value = round(_megabytes(text) * 2**20)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least one byte (1/{2**20} MB), got {text}")
    return value


port = bounded_int(0, 65535)


def _add_serving_options(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("TorchServe workers and batching")

    def default(value: int) -> str:
        return f" (default: {value})"

    group.add_argument(
        "--workers",
        type=bounded_int(1, MAX_WORKERS),
        help=f"worker processes, 1..{MAX_WORKERS}" + default(_DEFAULTS.workers),
    )
    group.add_argument(
        "--batch-size",
        type=bounded_int(1, MAX_BATCH_SIZE),
        help=f"most requests TorchServe batches into one handler call, 1..{MAX_BATCH_SIZE}; 1 turns batching off"
        + default(_DEFAULTS.batch_size),
    )
    group.add_argument(
        "--max-batch-delay",
        type=bounded_int(0, MAX_BATCH_DELAY_MS),
        metavar="MS",
        help=f"how long TorchServe waits to fill a batch, 0..{MAX_BATCH_DELAY_MS} milliseconds"
        + default(_DEFAULTS.max_batch_delay_ms),
    )


def build_parser() -> argparse.ArgumentParser:
    """`python -m mnist_ct.deploy`: deploy run R, or roll back; every option checked when parsed."""
    parser = argparse.ArgumentParser(
        prog="python -m mnist_ct.deploy",
        description=(
            "Package run R's model (model/model.pt), index (index/index.faiss, labels.npy) and the TorchServe "
            "handler into <deploy-root>/history/R/<model>.mar, make it the live <deploy-root>/model-store/<model>.mar "
            "(atomically), write <deploy-root>/config/config.properties (TorchServe, KServe layout) and append to "
            "<deploy-root>/deployments.jsonl. First the model is probed: run on real digits, its output must be "
            "float32 [N,D], unit rows, D the index's dimension. Refuses a run whose accuracy (analysis/metrics.json) "
            "is below the live model's unless --force. With --rollback: make the previously live version live again."
        ),
        epilog=EPILOG,
    )
    add_run_arguments(parser)
    for action in parser._actions:
        if action.dest == "run_id":
            action.required = False
            action.help = "run whose artifacts to deploy (the version is the run id); not with --rollback"
    parser.add_argument(
        "--model-name",
        type=_checked(check_model_name),
        default=DEFAULT_MODEL_NAME,
        help="TorchServe model name: <model>.mar, /predictions/<model>; 1-64 letters, digits, '_' or '-' "
        "(default: %(default)s)",
    )
    parser.add_argument(
        "--force", action="store_true", help="deploy even if the champion/challenger check refuses the run"
    )
    parser.add_argument(
        "--rollback",
        action="store_true",
        help="make the version that was live before the current one live again, as it was deployed",
    )
    _add_serving_options(parser)
    limits = parser.add_argument_group("requests and the handler")
    limits.add_argument(
        "--max-request-mb",
        type=request_bytes,
        dest="max_request_bytes",
        metavar="MB",
        help=f"larger request bodies get 413 from TorchServe; more than 0, at most {MAX_REQUEST_MB} "
        f"(TorchServe's limit, a 32-bit byte count) (default: {_DEFAULTS.max_request_bytes / 2**20:g})",
    )
    limits.add_argument(
        "--max-pixels",
        type=bounded_int(MIN_PIXELS_LIMIT, MAX_PIXELS_LIMIT),
        help=f"images with more pixels get 413 from the handler, before they are decoded; {MIN_PIXELS_LIMIT}.."
        f"{MAX_PIXELS_LIMIT} (Pillow's own limit) (default: {DEFAULT_MAX_PIXELS})",
    )
    limits.add_argument(
        "--threads-per-worker",
        type=bounded_int(1, MAX_THREADS_PER_WORKER),
        help=f"torch and faiss threads in each worker, 1..{MAX_THREADS_PER_WORKER} (default: 1; "
        "workers x threads <= cores)",
    )
    limits.add_argument(
        "--serving-root",
        type=_checked(check_serving_root),
        default="/mnt/models",
        help="absolute path where the server sees the deploy root, for config.properties' model_store "
        "(default: %(default)s, KServe's mount point)",
    )
    cluster = parser.add_argument_group("cluster manifests (kserve/<model>/inferenceservice.yaml, deployment.yaml)")
    cluster.add_argument(
        "--predictor-image",
        metavar="IMAGE@sha256:DIGEST",
        help="the predictor's image, pinned by digest (default: this step's own image as the pipeline pinned it, "
        "MNIST_CT_IMAGES; with neither, no manifests are written)",
    )
    cluster.add_argument(
        "--pvc",
        default=DEFAULT_PVC,
        help="the PersistentVolumeClaim of the deploy volume, which the predictor mounts (default: %(default)s)",
    )
    add_kfp_arguments(parser, ARTIFACTS)
    return parser


def options_from_args(args: argparse.Namespace) -> Options:
    """Options from the parsed arguments; a rollback's run paths get a placeholder run id."""
    if args.rollback:
        if args.run_id is not None:
            raise UsageError("--rollback goes back to the version live before the current one; drop --run-id")
        args.run_id = ROLLBACK_RUN_ID
    elif args.run_id is None:
        raise UsageError("--run-id is required (unless --rollback)")
    given = {
        key: value
        for key, value in (
            ("workers", args.workers),
            ("batch_size", args.batch_size),
            ("max_batch_delay_ms", args.max_batch_delay),
            ("max_request_bytes", args.max_request_bytes),
        )
        if value is not None
    }
    return Options(
        model_name=args.model_name,
        force=args.force,
        rollback=args.rollback,
        serving_root=args.serving_root,
        serving=ServingOptions(**given) if given else None,
        max_pixels=args.max_pixels,
        threads_per_worker=args.threads_per_worker,
        predictor_image=args.predictor_image,
        pvc=args.pvc,
        kfp=KfpOutputs.from_args(STEP, ARTIFACTS, args),
        versions=step_versions(),  # checked here: a malformed variable is bad usage before any work
    )


RUNTIMES = ("kserve", "torchserve")
TORCHSERVE_ONLY = ("management_port", "metrics_port", "batch_size", "max_batch_delay", "workdir", "ready_timeout")
KSERVE_ONLY = ("model_name", "model_dir", "poll_interval", "access_log")
MAX_POLL_S = 60.0


def build_serve_parser() -> argparse.ArgumentParser:
    """`python -m mnist_ct.deploy serve`: the live model on KServe's model server or on TorchServe."""
    parser = argparse.ArgumentParser(
        prog="python -m mnist_ct.deploy serve",
        description=(
            "Serve the live model of a deploy root until Ctrl-C or SIGTERM. --runtime kserve (the default; "
            "maintained, KServe's own Python model server): <deploy-root>/kserve/<model>/live, REST v1 "
            "POST /v1/models/<model>:predict (a PNG/JPEG body, or JSON instances) and Open Inference Protocol v2 "
            "POST /v2/models/<model>/infer; it follows deploys and rollbacks without a restart, and every answer "
            "names its version. On a cluster this is the predictor container's command (--model-dir /mnt/models). "
            "--runtime torchserve: the live archive model-store/<model>.mar as config/config.properties configures "
            "it, on 127.0.0.1, POST /predictions/<model> (TorchServe is archived upstream: no fixes)."
        ),
        epilog="Exit codes: 0 stopped cleanly, 2 bad usage, 3 cannot start (one line on stderr says why), "
        "5 the environment.",
    )
    parser.add_argument("--runtime", choices=RUNTIMES, default="kserve", help="model server (default: %(default)s)")
    parser.add_argument(
        "--deploy-root", type=volume_root, default=DEFAULT_DEPLOY_ROOT, help="deploy volume (default: %(default)s)"
    )
    parser.add_argument(
        "--port", type=port, default=8080, help="inference API port; 0 picks a free one (default: %(default)s)"
    )
    parser.add_argument(
        "--workers", type=bounded_int(1, MAX_WORKERS), help=f"worker processes, 1..{MAX_WORKERS} (default: kserve "
        f"{_DEFAULTS.workers}; torchserve as deployed)"
    )  # fmt: skip
    kserve = parser.add_argument_group("--runtime kserve (listens on all interfaces, as KServe's server does)")
    kserve.add_argument(
        "--model-name",
        type=_checked(check_model_name),
        help=f"which model's folder to serve, and its name in the URLs (default: {DEFAULT_MODEL_NAME})",
    )
    kserve.add_argument(
        "--model-dir",
        type=volume_root,
        help="serve this folder instead of <deploy-root>/kserve/<model>: a mount of it, such as KServe's /mnt/models",
    )
    kserve.add_argument(
        "--poll-interval",
        type=bounded_float(0, MAX_POLL_S, low_open=True),
        metavar="SECONDS",
        help=f"how often each worker looks for a new live version, at most {MAX_POLL_S:g} (default: 1)",
    )
    kserve.add_argument(
        "--access-log", action="store_true", help="one log line per request (off: it costs about a third of the "
        "throughput on two cores)"
    )  # fmt: skip
    torchserve = parser.add_argument_group("--runtime torchserve (on 127.0.0.1)")
    torchserve.add_argument("--management-port", type=port, help="management API port (default: 8081)")
    torchserve.add_argument("--metrics-port", type=port, help="metrics API port (default: 8082)")
    torchserve.add_argument(
        "--batch-size",
        type=bounded_int(1, MAX_BATCH_SIZE),
        help=f"most requests batched into one handler call, 1..{MAX_BATCH_SIZE} (default: as deployed)",
    )
    torchserve.add_argument(
        "--max-batch-delay",
        type=bounded_int(0, MAX_BATCH_DELAY_MS),
        metavar="MS",
        help=f"how long to wait to fill a batch, 0..{MAX_BATCH_DELAY_MS} milliseconds (default: as deployed)",
    )
    torchserve.add_argument(
        "--workdir", type=volume_root, help="where TorchServe's logs/ and config go (default: a new temporary folder)"
    )
    torchserve.add_argument(
        "--ready-timeout",
        type=bounded_float(0, MAX_READY_TIMEOUT_S, low_open=True),
        metavar="SECONDS",
        help=f"seconds to wait for a READY worker, at most {MAX_READY_TIMEOUT_S:g} (default: 180)",
    )
    parser.add_argument("--quiet", action="store_true", help="no summary lines")
    return parser


def _serve(args: argparse.Namespace) -> int:
    other = KSERVE_ONLY if args.runtime == "torchserve" else TORCHSERVE_ONLY
    given = [f"--{name.replace('_', '-')}" for name in other if getattr(args, name) not in (None, False)]
    if given:
        raise UsageError(f"{', '.join(given)} do not apply to --runtime {args.runtime}; drop them")
    if args.runtime == "kserve":
        return _serve_kserve(args)
    from .server import ServeOptions, serve  # psutil and friends only for `serve`

    overrides = {
        key: value
        for key, value in (
            ("workers", args.workers),
            ("batch_size", args.batch_size),
            ("max_batch_delay_ms", args.max_batch_delay),
        )
        if value is not None
    }
    options = ServeOptions(
        deploy_root=args.deploy_root,
        port=args.port,
        management_port=8081 if args.management_port is None else args.management_port,
        metrics_port=8082 if args.metrics_port is None else args.metrics_port,
        overrides=overrides,
        workdir=args.workdir,
        ready_timeout_s=180.0 if args.ready_timeout is None else args.ready_timeout,
    )
    return serve(options, Log(SERVE, args.quiet))


def _serve_kserve(args: argparse.Namespace) -> int:
    from . import predictor
    from .kserve_store import model_dir, read_live
    from .server import free_port

    name = args.model_name or DEFAULT_MODEL_NAME
    folder = args.model_dir or model_dir(args.deploy_root, name)
    try:  # one clear line (exit 3) before KServe starts, if nothing is deployed there
        version, _ = read_live(folder)
    except ArtifactError as e:
        raise ArtifactError(f"{e}{_live_hint(args, folder, name)}") from None
    http_port = args.port or free_port()
    _check_port_free(http_port)
    workers = args.workers or _DEFAULTS.workers
    poll_s = predictor.DEFAULT_POLL_S if args.poll_interval is None else args.poll_interval
    log = Log(SERVE, args.quiet)

    def ready(model: predictor.DigitPredictor) -> None:
        log(
            f"serving {name} version {model.current.version if model.current else version} from {folder} on port "
            f"{http_port}: POST /v1/models/{name}:predict (PNG/JPEG or JSON instances), /v2/models/{name}/infer; "
            f"{workers} worker(s), following {folder}/live every {poll_s:g} s; Ctrl-C stops"
        )

    predictor.serve(name, folder, http_port, workers, poll_s, args.access_log, on_ready=ready)
    log("stopped")
    return 0


def _live_hint(args: argparse.Namespace, folder: Path, name: str) -> str:
    """Why a folder may have no live pointer: the wrong folder, or a deploy root older than the KServe folder."""
    if args.model_dir is not None and (folder / "kserve").is_dir():
        return f" ({folder} is a deploy root: --model-dir takes its kserve/<model> folder, or use --deploy-root)"
    if (Path(args.deploy_root) / "model-store" / f"{name}.mar").is_file() and args.model_dir is None:
        return " (the live archive predates the KServe folder: redeploy its run, or roll back and forth, to write it)"
    return ""


def _check_port_free(port_number: int) -> None:
    """KServe's server logs a busy port and exits 0: say it in one line (exit 3) before starting instead."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        try:
            s.bind(("0.0.0.0", port_number))
        except OSError as e:
            raise ArtifactError(f"port {port_number} is not free ({e.strerror}): choose another with --port "
                                "(0 picks a free one)") from None  # fmt: skip


def build_history_parser() -> argparse.ArgumentParser:
    """`python -m mnist_ct.deploy history`: the deployments log of a deploy root, oldest first."""
    parser = argparse.ArgumentParser(
        prog="python -m mnist_ct.deploy history",
        description=(
            "Show <deploy-root>/deployments.jsonl, oldest first: every deploy, rollback, refusal and recovery, and for "
            "each version that went live the data (data version, data set manifest sha256) and the image of every "
            "step of the run that made it."
        ),
        epilog="Exit codes: 0 done (an empty log too), 2 bad usage.",
    )
    parser.add_argument(
        "--deploy-root", type=volume_root, default=DEFAULT_DEPLOY_ROOT, help="deploy volume (default: %(default)s)"
    )
    parser.add_argument(
        "--model-name", type=_checked(check_model_name), help="only this model's events (default: every model)"
    )
    parser.add_argument(
        "--json", action="store_true", help="print the events as they are logged, one JSON object a line"
    )
    return parser


def _history(args: argparse.Namespace) -> int:
    events = [e for e in read_events(args.deploy_root) if args.model_name in (None, e.get("model"))]
    if not events:
        print(f"no deployments logged in {log_path(args.deploy_root)}", file=sys.stderr)
    for event in events:
        print(json.dumps(event, sort_keys=True) if args.json else "\n".join(describe(event)))
    return 0


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    if argv and argv[0] == SERVE:
        return command_main(f"{STEP} {SERVE}", build_serve_parser(), _serve, argv[1:])
    if argv and argv[0] == HISTORY:
        return command_main(f"{STEP} {HISTORY}", build_history_parser(), _history, argv[1:])
    return step_main(STEP, build_parser(), options_from_args, run, argv)


if __name__ == "__main__":
    raise SystemExit(main())
