"""Serving soak benchmark: 10,000 requests from 8 clients against a real model server, one worker SIGKILLed midway.

The soak itself is steps/deploy/tests/serving_soak.py (also run by steps/deploy/tests/test_soak.py): each
client posts PNG test digits over one keep-alive connection, no retries; at the halfway request one
worker is SIGKILLed: for TorchServe a READY model worker (a Python worker process), for the KServe
predictor (mnist_ct.deploy.server.LocalPredictor, 2 spawned workers) LocalPredictor.worker_pids()[0].
Reported per repetition and runtime: lost requests (non-200 or no answer) against the requests in flight
at the kill, recovery (the first success sent after the kill; the replacement worker READY again, for
KServe: the parent has 2 workers again, and the replacement's first answer), latency around the kill.

The deployed run: a pipeline run's artifacts (--run-id with --data-root/--model-root), else the
deploy tests' fixture run (mnist-5k digits, a tiny CNN, IndexFlatIP). Deployed into a folder of its
own (the live volume is never touched) with the deployed defaults: 2 workers, batch 8 within 5 ms.

Run it where mnist-ct-deploy[serve] and mlxtend are installed, e.g. the venv `nox -s tests -- deploy`
builds: `.nox/packages/deploy/bin/python bench/soak.py`. Writes bench/results/soak.json.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "steps" / "deploy" / "tests"))

from serve import machine, png  # noqa: E402  (bench/serve.py: the same machine record and PNG encoding)
from serving_soak import soak  # noqa: E402  (steps/deploy/tests/serving_soak.py)

from mnist_ct.artifacts import RunPaths, read_split  # noqa: E402
from mnist_ct.deploy.__main__ import main as deploy_main  # noqa: E402
from mnist_ct.deploy.server import LocalPredictor, LocalServer  # noqa: E402

RUNTIMES = ("torchserve", "kserve")


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python bench/soak.py", description=__doc__.split("\n\n")[0])
    p.add_argument("--run-id", help="soak this pipeline run's artifacts (default: the deploy tests' fixture run)")
    p.add_argument("--data-root", type=Path, default=Path("/data"))
    p.add_argument("--model-root", type=Path, default=Path("/model"))
    p.add_argument("--requests", type=int, default=10_000, help="per repetition (default: %(default)s)")
    p.add_argument("--clients", type=int, default=8, help="concurrent clients (default: %(default)s)")
    p.add_argument("--repeat", type=int, default=3, help="repetitions, each on a fresh server (default: %(default)s)")
    p.add_argument(
        "--runtime",
        choices=[*RUNTIMES, "both"],
        default="both",
        help="which model server to soak (default: %(default)s)",
    )
    p.add_argument("--workdir", type=Path, help="scratch folder (default: a temporary one)")
    p.add_argument("--out", type=Path, default=ROOT / "bench" / "results" / "soak.json")
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.workdir:
        return soak_in(args, args.workdir)
    with tempfile.TemporaryDirectory(prefix="mnist-ct-soak-") as tmp:
        return soak_in(args, Path(tmp))


def soak_in(args: argparse.Namespace, workdir: Path) -> int:
    info = machine()
    if args.run_id:
        paths = RunPaths(args.run_id, args.data_root, args.model_root, workdir / "deploy")
        source = f"pipeline run {args.run_id} ({args.model_root})"
    else:
        from fixture_run import build_run

        run = build_run(workdir, "soak")
        paths = RunPaths("soak", run.paths.data_root, run.paths.model_root, workdir / "deploy")
        source = "the deploy tests' fixture run (steps/deploy/tests/fixture_run.py)"
    core = ["--run-id", paths.run_id, "--data-root", str(paths.data_root), "--model-root", str(paths.model_root)]
    if deploy_main([*core, "--deploy-root", str(paths.deploy_root), "--quiet"]) != 0:
        raise SystemExit("deploy failed; see above")
    _, test = read_split(paths.dataset, "test")
    images = [png(im) for im in test.images]
    runtimes = RUNTIMES if args.runtime == "both" else (args.runtime,)
    results: dict[str, Any] = {}
    for runtime in runtimes:
        runs = []
        for i in range(args.repeat):
            if runtime == "torchserve":
                with LocalServer(paths.deploy_root, workdir=workdir / f"ts-{i}") as server:
                    result = soak(server, images, total=args.requests, clients=args.clients)
            else:
                with LocalPredictor(paths.deploy_root, workers=2, log_path=workdir / f"kserve-{i}.log") as predictor:
                    result = soak(predictor, images, total=args.requests, clients=args.clients)
            result.pop("labels")
            runs.append(result)
            replaced = result["recovery"].get("replacement_answered_s")
            print(
                f"soak {runtime} {i + 1}/{args.repeat}: {result['requests']} requests, {result['failed']} lost "
                f"({result['in_flight_at_kill']} in flight at the kill), first success after the kill "
                f"{result['recovery']['first_success_sent_after_kill_ms']} ms, worker back after "
                f"{result['recovery']['worker_ready_again_s']} s"
                + (f", replacement answered after {replaced} s" if runtime == "kserve" else ""),
                file=sys.stderr,
            )
        results[runtime] = {"summary": summary(runs, args), "runs": runs}
    info["load_average_at_end"] = [round(x, 2) for x in os.getloadavg()]
    doc = {
        "benchmark": "bench/soak.py",
        "measured": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "command": "python bench/soak.py " + " ".join(sys.argv[1:]),
        "source": source,
        "machine": info,
        "runtimes": results,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(doc, indent=2) + "\n")
    print(f"wrote {args.out}", file=sys.stderr)
    return 0


def lost_beyond_expected(r: dict[str, Any]) -> bool:
    """More lost than the killed worker could have held: TorchServe one batch, KServe what was in flight;
    or a failure sent after the first failure was answered (the server had noticed the dead worker)."""
    limit = r["batch_size"] if r["runtime"] == "torchserve" else r["in_flight_at_kill"]
    return r["failed"] > limit or r["failed_latest_start_after_kill_ms"] > r["failed_first_answer_after_kill_ms"]


def summary(runs: list[dict[str, Any]], args: argparse.Namespace) -> dict[str, Any]:
    ready = [r["recovery"]["worker_ready_again_s"] for r in runs]
    out: dict[str, Any] = {
        "repetitions": len(runs),
        "requests_each": args.requests,
        "clients": args.clients,
        "lost_max": max(r["failed"] for r in runs),
        "lost_total": sum(r["failed"] for r in runs),
        "in_flight_at_kill_max": max(r["in_flight_at_kill"] for r in runs),
        # TorchServe: beyond one batch on the killed worker; KServe: beyond the requests in flight at the kill
        "lost_beyond_one_batch_on_the_killed_worker": sum(lost_beyond_expected(r) for r in runs),
        "first_success_after_kill_ms_max": max(r["recovery"]["first_success_sent_after_kill_ms"] or 0 for r in runs),
        "worker_ready_again_s_median": round(statistics.median(ready), 2),
        "worker_ready_again_s_max": max(ready),
        "requests_per_s_median": statistics.median(r["requests_per_s"] for r in runs),
    }
    answered = [r["recovery"].get("replacement_answered_s") for r in runs]
    if any(a is not None for a in answered) or runs[0]["runtime"] == "kserve":
        known = [a for a in answered if a is not None]
        out["replacement_answered_s_max"] = max(known) if len(known) == len(answered) else None
        started = [r["recovery"].get("replacement_processes_started") or 0 for r in runs]
        out["replacement_processes_started_max"] = max(started)  # > 1: KServe replaced a replacement
    return out


if __name__ == "__main__":
    raise SystemExit(main())
