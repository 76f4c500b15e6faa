"""python -m mnist_ct.deploy: argument parsing and exit codes (the work is in deployment.py and server.py)."""

from __future__ import annotations

import argparse
import signal
import sys
import threading
from pathlib import Path

from mnist_ct.artifacts import (
    ArtifactError,
    Log,
    add_run_arguments,
    non_negative_int,
    positive_int,
    run_paths,
    run_step,
)
from mnist_ct.artifacts.paths import DEFAULT_DEPLOY_ROOT

from .deployment import EXIT_REFUSED, DeployRequest, deploy, rollback
from .serving_config import ServingOptions

EPILOG = (
    "Exit codes: 0 done, 2 bad usage, 3 bad input (one line on stderr names the file), "
    f"{EXIT_REFUSED} refused: the run's accuracy is below the live model's (champion/challenger; --force overrides). "
    "Local serving: python -m mnist_ct.deploy serve --deploy-root DIR (see serve --help)."
)


def _positive_float(text: str) -> float:
    value = float(text)
    if not value > 0:
        raise argparse.ArgumentTypeError(f"must be more than 0, got {text}")
    return value


def _port(text: str) -> int:
    value = int(text)
    if not 0 <= value <= 65535:
        raise argparse.ArgumentTypeError(f"must be a port number (0 picks a free one), got {value}")
    return value


def _add_serving_options(parser: argparse.ArgumentParser, defaults: bool) -> None:
    d = ServingOptions()
    group = parser.add_argument_group("TorchServe workers and batching")

    def default(value: int) -> int | None:
        return value if defaults else None

    suffix = " (default: %(default)s)" if defaults else " (default: as deployed)"
    group.add_argument("--workers", type=positive_int, default=default(d.workers), help="worker processes" + suffix)
    group.add_argument(
        "--batch-size",
        type=positive_int,
        default=default(d.batch_size),
        help="most requests TorchServe batches into one handler call; 1 turns batching off" + suffix,
    )
    group.add_argument(
        "--max-batch-delay",
        type=non_negative_int,
        default=default(d.max_batch_delay_ms),
        metavar="MS",
        help="how long TorchServe waits to fill a batch, in milliseconds" + suffix,
    )


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m mnist_ct.deploy",
        description=(
            "Package run R's model (model/model.pt), index (index/index.faiss, labels.npy) and the TorchServe "
            "handler into <deploy-root>/history/R/<model>.mar, make it the live <deploy-root>/model-store/<model>.mar "
            "(atomically), write <deploy-root>/config/config.properties (TorchServe, KServe layout) and append to "
            "<deploy-root>/deployments.jsonl. Refuses a run whose accuracy (analysis/metrics.json) is below the "
            "live model's unless --force. With --rollback: make the previously live version live again."
        ),
        epilog=EPILOG,
    )
    add_run_arguments(parser)
    # A rollback names no run; deploy checks --run-id itself.
    for action in parser._actions:
        if action.dest == "run_id":
            action.required = False
            action.help = "run whose artifacts to deploy (the version is the run id); not needed with --rollback"
    parser.add_argument(
        "--model-name",
        default="mnist",
        help="TorchServe model name: <model>.mar, /predictions/<model> (default: mnist)",
    )
    parser.add_argument("--force", action="store_true", help="deploy even if the live model's accuracy is higher")
    parser.add_argument(
        "--rollback", action="store_true", help="make the version that was live before the current one live again"
    )
    _add_serving_options(parser, defaults=True)
    limits = parser.add_argument_group("requests and the handler")
    limits.add_argument(
        "--max-request-mb",
        type=_positive_float,
        default=ServingOptions().max_request_bytes / 2**20,
        help="larger request bodies get 413 from TorchServe (default: %(default)s)",
    )
    limits.add_argument(
        "--max-pixels",
        type=positive_int,
        default=DeployRequest().max_pixels,
        help="images with more pixels get 413 from the handler, before they are decoded (default: %(default)s)",
    )
    limits.add_argument(
        "--threads-per-worker",
        type=positive_int,
        default=DeployRequest().threads,
        help="torch and faiss threads in each worker (default: %(default)s; workers x threads <= cores)",
    )
    limits.add_argument(
        "--serving-root",
        default="/mnt/models",
        help="where the server sees the deploy root, for config.properties' model_store (default: %(default)s, "
        "KServe's mount point)",
    )
    return parser


def build_serve_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m mnist_ct.deploy serve",
        description=(
            "Start TorchServe on 127.0.0.1 with the live archive of a deploy root (as configured in its "
            "config/config.properties), wait until a worker is READY, serve until Ctrl-C or SIGTERM, then stop it. "
            "POST a PNG/JPEG to http://127.0.0.1:PORT/predictions/<model>."
        ),
        epilog="Exit codes: 0 stopped cleanly, 2 bad usage, 3 cannot start (one line on stderr says why).",
    )
    parser.add_argument(
        "--deploy-root",
        type=Path,
        default=DEFAULT_DEPLOY_ROOT,
        help="deploy volume (default: %(default)s)",
    )
    parser.add_argument("--port", type=_port, default=8080, help="inference API port (default: %(default)s)")
    parser.add_argument(
        "--management-port", type=_port, default=8081, help="management API port (default: %(default)s)"
    )
    parser.add_argument("--metrics-port", type=_port, default=8082, help="metrics API port (default: %(default)s)")
    _add_serving_options(parser, defaults=False)
    parser.add_argument(
        "--workdir", type=Path, help="where TorchServe's logs/ and config go (default: a new temporary folder)"
    )
    parser.add_argument(
        "--ready-timeout", type=float, default=180.0, help="seconds to wait for a READY worker (default: %(default)s)"
    )
    parser.add_argument("--quiet", action="store_true", help="no summary lines")
    return parser


def _deploy_main(argv: list[str]) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not args.rollback and not args.run_id:
        parser.error("the following arguments are required: --run-id (unless --rollback)")
    log = Log("deploy", args.quiet)

    def work() -> int:
        if args.rollback:
            paths = run_paths(argparse.Namespace(**{**vars(args), "run_id": args.run_id or "rollback"}))
            rollback(paths, args.model_name, args.serving_root, log)
            return 0
        request = DeployRequest(
            model_name=args.model_name,
            force=args.force,
            serving=ServingOptions(
                workers=args.workers,
                batch_size=args.batch_size,
                max_batch_delay_ms=args.max_batch_delay,
                max_request_bytes=int(args.max_request_mb * 2**20),
            ),
            max_pixels=args.max_pixels,
            threads=args.threads_per_worker,
            serving_root=args.serving_root,
        )
        deploy(run_paths(args), request, log)
        return 0

    return run_step("deploy", work)


def _serve_main(argv: list[str]) -> int:
    from .server import LocalServer

    args = build_serve_parser().parse_args(argv)
    log = Log("serve", args.quiet)
    overrides = {
        key: value
        for key, value in (
            ("workers", args.workers),
            ("batch_size", args.batch_size),
            ("max_batch_delay_ms", args.max_batch_delay),
        )
        if value is not None
    }

    def work() -> int:
        server = LocalServer(
            args.deploy_root,
            ports={"inference": args.port, "management": args.management_port, "metrics": args.metrics_port},
            overrides=overrides,
            workdir=args.workdir,
            ready_timeout_s=args.ready_timeout,
        )
        stop = threading.Event()
        for sig in (signal.SIGINT, signal.SIGTERM):
            signal.signal(sig, lambda *_: stop.set())
        server.start()
        try:
            o = server.options
            log(
                f"serving {server.model_name} version {server.version} at {server.predict_url} "
                f"({o.workers} workers, batch {o.batch_size}/{o.max_batch_delay_ms} ms; management "
                f"{server.management_url}; logs {server.workdir}/logs); Ctrl-C stops"
            )
            while not stop.wait(1.0):
                if not server.alive():
                    raise ArtifactError(f"TorchServe stopped by itself; see {server.workdir}/logs")
        finally:
            server.stop()
            log("stopped")
        return 0

    return run_step("deploy serve", work)


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    if argv and argv[0] == "serve":
        return _serve_main(argv[1:])
    return _deploy_main(argv)


if __name__ == "__main__":
    raise SystemExit(main())
