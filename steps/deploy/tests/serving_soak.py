"""Serving soak: many requests from concurrent clients against a real model server, one worker SIGKILLed midway.

Used by tests/test_soak.py and bench/soak.py, for both runtimes: TorchServe (LocalServer) and the KServe
predictor (LocalPredictor). Each client holds one keep-alive HTTP/1.1 connection and posts PNG digits in a
closed loop until `total` requests have been sent; no request is retried, so a lost request shows. When
half of them have been sent, one serving worker is SIGKILLed: a READY TorchServe Python worker (found
through the management API), or the first of the KServe parent's spawned workers. What is measured:

- every request's start, end and status (0: the connection failed), so the failures can be compared
  with what was in flight when the worker died;
- recovery: from the kill until a request sent after it succeeds, and until the server has its full
  number of workers again, the replacement's pid being new (polled every 50 ms); for KServe also until
  the replacement itself answers (probes on new connections until one lands on it, found by its socket);
- that every answer for one image is the same label, before and after the kill (the replacement
  serves the same model).

`soak(server, images, ...)` takes a LocalServer, a LocalPredictor or a SoakTarget (the runtime-neutral
description: port, path, content type, `workers()` and `choose_worker()`, the one to SIGKILL).
"""

from __future__ import annotations

import http.client
import json
import os
import signal
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from mnist_ct.deploy.server import LocalPredictor, LocalServer


@dataclass
class Answer:
    image: int
    start: float
    end: float
    status: int  # 0: no HTTP answer (connection reset or refused)
    label: int | None


@dataclass
class SoakTarget:
    """What the soak needs of a model server, whichever runtime serves it."""

    runtime: str
    port: int
    path: str
    workers: Callable[[], dict[int, str]]  # pid -> worker id of the workers serving now
    choose_worker: Callable[[dict[int, str]], int]  # given workers(): the pid the soak SIGKILLs
    expected_workers: int
    config: dict[str, Any] = field(default_factory=dict)  # workers, batch_size, max_batch_delay_ms (None: n/a)
    content_type: str = "image/png"
    # a request on a new connection: the pid of the worker that answered it 200, else None (None: not measured)
    probe: Callable[[], int | None] | None = None


def ready_workers(server: LocalServer) -> dict[int, str]:
    """pid -> worker id of the model's READY workers (management API)."""
    try:
        status = server.model_status()
    except (OSError, ValueError):
        return {}
    return {w["pid"]: w["id"] for e in status for w in e.get("workers", []) if w.get("status") == "READY"}


def torchserve_target(server: LocalServer) -> SoakTarget:
    o = server.options
    return SoakTarget(
        runtime="torchserve",
        port=server.ports["inference"],
        path=f"/predictions/{server.model_name}",
        workers=lambda: ready_workers(server),
        choose_worker=lambda before: sorted(before)[0],
        expected_workers=o.workers,
        config={"workers": o.workers, "batch_size": o.batch_size, "max_batch_delay_ms": o.max_batch_delay_ms},
    )


def kserve_target(predictor: LocalPredictor, image: bytes) -> SoakTarget:
    """The KServe predictor: its parent's spawned workers; `image` is what the replacement probe posts."""

    def workers() -> dict[int, str]:
        return {pid: f"kserve-worker-{pid}" for pid in predictor.worker_pids()}

    def first_worker(before: dict[int, str]) -> int:
        pids = predictor.worker_pids()
        return pids[0] if pids else sorted(before)[0]

    def probe() -> int | None:
        """POST `image` on a new connection; the worker holding its server side, if it answered 200."""
        import psutil

        conn = http.client.HTTPConnection("127.0.0.1", predictor.port, timeout=10)
        try:
            conn.request("POST", predictor.predict_path, image, {"Content-Type": "image/png"})
            r = conn.getresponse()
            r.read()
            if r.status != 200 or conn.sock is None:
                return None
            mine = conn.sock.getsockname()[1]
            for pid in predictor.worker_pids():
                try:
                    process = psutil.Process(pid)
                    sockets = getattr(process, "net_connections", process.connections)(kind="tcp")
                except psutil.Error:
                    continue
                if any(s.raddr and s.raddr.port == mine for s in sockets):
                    return pid
            return None
        except (OSError, http.client.HTTPException):
            return None
        finally:
            conn.close()

    return SoakTarget(
        runtime="kserve",
        port=predictor.port,
        path=predictor.predict_path,
        workers=workers,
        choose_worker=first_worker,
        expected_workers=predictor.workers,
        config={"workers": predictor.workers, "batch_size": None, "max_batch_delay_ms": None},
        probe=probe,
    )


def wait_serving(target: SoakTarget, timeout_s: float = 120.0) -> dict[int, str]:
    """Until the server has all its workers and (with a probe) each one has answered; those workers.

    A KServe worker process exists seconds before it serves (imports, the model), and KServe's parent
    may replace one that is slow to start: only a worker seen answering counts.
    """
    deadline = time.monotonic() + timeout_s
    answered: set[int] = set()
    while time.monotonic() < deadline:
        now = target.workers()
        if len(now) >= target.expected_workers and (target.probe is None or set(now) <= answered):
            return now
        if target.probe is None:
            time.sleep(0.1)
            continue
        pid = target.probe()
        if pid is not None:
            answered.add(pid)
        time.sleep(0.1)  # gently: a probe's work competes with a worker's start
    raise AssertionError(f"expected {target.expected_workers} serving workers: {target.workers()}, answered {answered}")


def as_target(server: LocalServer | LocalPredictor | SoakTarget, images: list[bytes]) -> SoakTarget:
    if isinstance(server, SoakTarget):
        return server
    if isinstance(server, LocalPredictor):
        return kserve_target(server, images[0])
    return torchserve_target(server)


def soak(
    server: LocalServer | LocalPredictor | SoakTarget, images: list[bytes], total: int = 10_000, clients: int = 8
) -> dict[str, Any]:
    """Send `total` requests from `clients` clients, SIGKILL one worker after total/2; the figures."""
    target = as_target(server, images)
    answers: list[Answer] = []
    lock = threading.Lock()
    sent = [0]
    halfway = threading.Event()
    path, port, ctype = target.path, target.port, target.content_type
    before = wait_serving(target)  # the server is up with one worker: wait for all of them

    def client(n: int) -> None:
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
        mine: list[Answer] = []
        while True:
            with lock:
                i = sent[0]
                if i >= total:
                    break
                sent[0] += 1
            if i == total // 2:
                halfway.set()
            image = i % len(images)
            t0 = time.perf_counter()
            try:
                conn.request("POST", path, images[image], {"Content-Type": ctype})
                r = conn.getresponse()
                body = r.read()
                status = r.status
            except (http.client.HTTPException, ConnectionError, TimeoutError):
                conn.close()
                conn = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
                status, body = 0, b""
            label = int(json.loads(body)["label"]) if status == 200 else None
            mine.append(Answer(image, t0, time.perf_counter(), status, label))
        conn.close()
        with lock:
            answers.extend(mine)

    kill: dict[str, Any] = {}

    def killer() -> None:
        halfway.wait()
        pid = target.choose_worker(before)
        kill["pid"], kill["worker"] = pid, before.get(pid, str(pid))
        kill["at"] = time.perf_counter()
        os.kill(pid, signal.SIGKILL)
        deadline = kill["at"] + 120
        started: list[int] = []  # every new worker process seen after the kill, in order
        next_probe = 0.0
        while time.perf_counter() < deadline:
            now = target.workers()
            started += [p for p in now if p not in before and p not in started]
            if "ready_again_at" not in kill and len(now) == len(before) and pid not in now:
                kill["ready_again_at"] = time.perf_counter()
                kill["replacement_pid"] = next((p for p in now if p not in before), None)
                if target.probe is None:
                    break
            if "ready_again_at" in kill and target.probe is not None and time.perf_counter() >= next_probe:
                # gently (4 a second): a probe's work competes with the replacement's start
                next_probe = time.perf_counter() + 0.25
                answered = target.probe()
                if answered is not None and answered not in before:  # KServe may have replaced the replacement
                    kill["replacement_answered_at"] = time.perf_counter()
                    kill["replacement_pid"] = answered
                    break
            time.sleep(0.05)
        kill["processes_started"] = len(started)

    threads = [threading.Thread(target=client, args=(n,)) for n in range(clients)]
    watcher = threading.Thread(target=killer)
    started = time.perf_counter()
    watcher.start()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    finished = time.perf_counter()
    watcher.join(timeout=250)
    return figures(answers, kill, started, finished, images, clients, target)


def figures(
    answers: list[Answer],
    kill: dict[str, Any],
    started: float,
    finished: float,
    images: list[bytes],
    clients: int,
    target: SoakTarget,
) -> dict[str, Any]:
    t_kill = kill["at"]
    failed = [a for a in answers if a.status != 200]
    in_flight = [a for a in answers if a.start <= t_kill < a.end]
    after = sorted((a for a in answers if a.start >= t_kill and a.status == 200), key=lambda a: a.end)
    labels: dict[int, set[int]] = {}
    for a in answers:
        if a.label is not None:
            labels.setdefault(a.image, set()).add(a.label)
    ms = np.array([a.end - a.start for a in answers if a.status == 200]) * 1000.0
    around = [a.end - a.start for a in answers if a.start <= t_kill + 1.0 and a.end >= t_kill]
    ready_s = kill.get("ready_again_at", float("nan")) - t_kill
    recovery: dict[str, Any] = {
        "first_success_sent_after_kill_ms": round((after[0].end - t_kill) * 1000, 1) if after else None,
        "worker_ready_again_s": round(ready_s, 2),
    }
    if target.probe is not None:
        answered = kill.get("replacement_answered_at")
        recovery["replacement_answered_s"] = round(answered - t_kill, 2) if answered is not None else None
        # worker processes KServe's parent started after the kill until one answered (1: the first one did)
        recovery["replacement_processes_started"] = kill.get("processes_started")
    return {
        "runtime": target.runtime,
        "requests": len(answers),
        "clients": clients,
        "workers": target.config.get("workers", target.expected_workers),
        "batch_size": target.config.get("batch_size"),
        "max_batch_delay_ms": target.config.get("max_batch_delay_ms"),
        "seconds": round(finished - started, 2),
        "requests_per_s": round(len(answers) / (finished - started), 1),
        "ok": len(answers) - len(failed),
        "failed": len(failed),
        "failed_statuses": sorted({a.status for a in failed}),
        "in_flight_at_kill": len(in_flight),
        "failed_in_flight_at_kill": sum(a.start <= t_kill < a.end for a in failed),
        # A failure sent after the kill can only have been taken by the dead worker before the server
        # noticed; this is the latest such start, relative to the kill.
        "failed_latest_start_after_kill_ms": round(max((a.start - t_kill for a in failed), default=0.0) * 1000, 1),
        "failed_first_answer_after_kill_ms": round(min((a.end - t_kill for a in failed), default=0.0) * 1000, 1),
        "killed_worker": {"pid": kill["pid"], "id": kill["worker"], "replacement_pid": kill.get("replacement_pid")},
        "recovery": recovery,
        "latency_ms": {
            "p50": round(float(np.percentile(ms, 50)), 2),
            "p99": round(float(np.percentile(ms, 99)), 2),
            "max": round(float(ms.max()), 2),
            "max_around_kill": round(max(around, default=0.0) * 1000, 2),
        },
        "images": len(images),
        "images_with_one_label": sum(len(v) == 1 for v in labels.values()),
        "labels": {i: sorted(v)[0] for i, v in labels.items() if len(v) == 1},
    }
