"""Serving soak: many requests from concurrent clients against a real TorchServe, one worker SIGKILLed midway.

Used by tests/test_soak.py and bench/soak.py. Each client holds one keep-alive HTTP/1.1 connection and
posts PNG digits in a closed loop until `total` requests have been sent; no request is retried, so a
lost request shows. When half of them have been sent, one READY model worker (a Python process of
TorchServe's, found through the management API) is SIGKILLed. What is measured:

- every request's start, end and status (0: the connection failed), so the failures can be compared
  with what was in flight on the killed worker;
- recovery: from the kill until a request sent after it succeeds, and until the model has its full
  number of READY workers again, the replacement's pid being new (management API polled every 50 ms);
- that every answer for one image is the same label, before and after the kill (the replacement
  serves the same model).
"""

from __future__ import annotations

import http.client
import json
import os
import signal
import threading
import time
from dataclasses import dataclass
from typing import Any

import numpy as np

from mnist_ct.deploy.server import LocalServer


@dataclass
class Answer:
    image: int
    start: float
    end: float
    status: int  # 0: no HTTP answer (connection reset or refused)
    label: int | None


def ready_workers(server: LocalServer) -> dict[int, str]:
    """pid -> worker id of the model's READY workers (management API)."""
    try:
        status = server.model_status()
    except (OSError, ValueError):
        return {}
    return {w["pid"]: w["id"] for e in status for w in e.get("workers", []) if w.get("status") == "READY"}


def soak(server: LocalServer, images: list[bytes], total: int = 10_000, clients: int = 8) -> dict[str, Any]:
    """Send `total` requests from `clients` clients, SIGKILL one worker after total/2; the figures."""
    answers: list[Answer] = []
    lock = threading.Lock()
    sent = [0]
    halfway = threading.Event()
    path = f"/predictions/{server.model_name}"
    port = server.ports["inference"]
    deadline = time.monotonic() + 120  # the server is up with one READY worker: wait for all of them
    while len(before := ready_workers(server)) < server.options.workers and time.monotonic() < deadline:
        time.sleep(0.1)
    assert len(before) == server.options.workers, f"expected {server.options.workers} READY workers: {before}"

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
                conn.request("POST", path, images[image], {"Content-Type": "image/png"})
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
        pid = sorted(before)[0]
        kill["pid"], kill["worker"] = pid, before[pid]
        kill["at"] = time.perf_counter()
        os.kill(pid, signal.SIGKILL)
        deadline = kill["at"] + 120
        while time.perf_counter() < deadline:
            now = ready_workers(server)
            if len(now) == len(before) and pid not in now:
                kill["ready_again_at"] = time.perf_counter()
                kill["replacement_pid"] = next(p for p in now if p not in before)
                return
            time.sleep(0.05)

    threads = [threading.Thread(target=client, args=(n,)) for n in range(clients)]
    watcher = threading.Thread(target=killer)
    started = time.perf_counter()
    watcher.start()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    finished = time.perf_counter()
    watcher.join(timeout=130)
    return figures(answers, kill, started, finished, images, clients, server.options)


def figures(answers: list[Answer], kill: dict[str, Any], started: float, finished: float, images, clients, options):
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
    return {
        "requests": len(answers),
        "clients": clients,
        "workers": options.workers,
        "batch_size": options.batch_size,
        "max_batch_delay_ms": options.max_batch_delay_ms,
        "seconds": round(finished - started, 2),
        "requests_per_s": round(len(answers) / (finished - started), 1),
        "ok": len(answers) - len(failed),
        "failed": len(failed),
        "failed_statuses": sorted({a.status for a in failed}),
        "in_flight_at_kill": len(in_flight),
        "failed_in_flight_at_kill": sum(a.start <= t_kill < a.end for a in failed),
        # A failure sent after the kill can only have been taken by the dead worker before TorchServe
        # noticed; this is the latest such start, relative to the kill.
        "failed_latest_start_after_kill_ms": round(max((a.start - t_kill for a in failed), default=0.0) * 1000, 1),
        "failed_first_answer_after_kill_ms": round(min((a.end - t_kill for a in failed), default=0.0) * 1000, 1),
        "killed_worker": {"pid": kill["pid"], "id": kill["worker"], "replacement_pid": kill.get("replacement_pid")},
        "recovery": {
            "first_success_sent_after_kill_ms": round((after[0].end - t_kill) * 1000, 1) if after else None,
            "worker_ready_again_s": round(ready_s, 2),
        },
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
