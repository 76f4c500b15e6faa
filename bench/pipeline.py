"""Pipeline benchmark: the whole pipeline's wall time and accuracy, per step, on mnist-5k and Fashion-MNIST.

    python bench/pipeline.py                 mnist-5k (run-local, deploy included) and Fashion-MNIST (full)
    python bench/pipeline.py --quick         mnist-5k only

mnist-5k runs exactly what `nox -s pipeline` runs: `mnist-ct run-local` on the compiled pipeline, at the
pipeline's default parameters, in a fresh work dir (so the option checks run too). Per step it records the
runner's wall time and what the step measured of itself (mnist_ct.artifacts.timing, run.json's `timing`):
start-up (interpreter, imports), work, other (checks, export, publish), and the overhead = wall - work,
against the targets: overhead <= 1.5 s per step, the whole command <= 20 s end to end. `import torch` in a
fresh interpreter of the same venv is measured on its own, and whether bytecode is cached (with
PYTHONDONTWRITEBYTECODE=1 and no .pyc installed, every step compiles torch's sources again). With --quick
the Fashion-MNIST entry of an existing results file is kept as it was (with its own date).

Fashion-MNIST (60k/10k, Debian's dataset-fashion-mnist) cannot go
through run-local offline (the pipeline downloads it, and Debian's re-compressed files do not match the
official checksums), so the same seven steps run one after another, preprocess reading `--source`, with
train_model at the options bench/train.py uses for Fashion-MNIST. Writes bench/results/pipeline.json.
Run it from a venv with every package installed (`nox -s bench -- pipeline` builds one).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from train import FASHION_SOURCE, RECIPES, step  # bench/train.py: the Fashion-MNIST options, how a step runs

from mnist_ct.artifacts import RunPaths

ROOT = Path(__file__).resolve().parent.parent
FASHION_TRAIN_ARGS = RECIPES["fashion-mnist"]["args"]


OVERHEAD_TARGET_S = 1.5  # per step: its wall time outside its own work
END_TO_END_TARGET_S = 20.0  # the whole `run-local` command on mnist-5k


def step_figures(task: dict[str, Any]) -> dict[str, Any]:
    """One task of run.json: the runner's wall time, the step's own account of it, the overhead (wall - work)."""
    timing = task.get("timing") or {}
    wall = task["seconds"]
    work = timing.get("work_s")
    overhead = round(max(0.0, wall - work), 3) if isinstance(work, int | float) else None
    return {
        "wall_s": wall,
        "startup_s": timing.get("startup_s"),
        "interpreter_s": timing.get("interpreter_s"),
        "imports_s": timing.get("imports_s"),
        "heavy_imports_s": timing.get("heavy_imports_s") or {},
        "work_s": work,
        "other_s": timing.get("other_s"),
        "after_main_s": round(wall - timing["total_s"], 3) if timing.get("total_s") is not None else None,
        "overhead_s": overhead,
        "overhead_target_met": overhead is not None and overhead <= OVERHEAD_TARGET_S,
    }


def run_local_mnist5k(workdir: Path) -> dict[str, Any]:
    run_id = "bench-mnist-5k"
    t0 = time.perf_counter()
    cmd = [sys.executable, "-m", "mnist_ct.orchestration", "run-local", "--workdir", str(workdir), "--run-id", run_id]
    subprocess.run(cmd, check=True)
    wall = time.perf_counter() - t0
    record = json.loads((workdir / "kfp" / run_id / "run.json").read_text())
    metrics = json.loads((workdir / "model" / "runs" / run_id / "analysis" / "metrics.json").read_text())
    steps = {t["task"]: step_figures(t) for t in record["tasks"] if "timing" in t and t["status"] != "skipped"}
    tasks_s = sum(f["wall_s"] for f in steps.values())
    return {
        "how": "mnist-ct run-local (the compiled pipeline, pipeline defaults)",
        "arguments": record["arguments"],
        "wall_s": round(wall, 1),
        "tasks_s": round(tasks_s, 1),  # the steps alone; wall_s - tasks_s: compiling, option checks, the runner
        "steps_s": {t["task"]: t["seconds"] for t in record["tasks"]},
        "steps": steps,
        "targets": {
            f"overhead_at_most_{OVERHEAD_TARGET_S:g}_s_per_step": all(f["overhead_target_met"] for f in steps.values()),
            "overhead_missed_by": sorted(name for name, f in steps.items() if not f["overhead_target_met"]),
            f"end_to_end_at_most_{END_TO_END_TARGET_S:g}_s": wall <= END_TO_END_TARGET_S,
        },
        "deployed": any(t["task"].endswith("deploy") and t["status"] == "succeeded" for t in record["tasks"]),
        "accuracy": metrics["accuracy"],
    }


def import_torch_seconds(runs: int = 3) -> dict[str, Any]:
    """`import torch` in a fresh interpreter of this venv (the median of `runs`), and whether its bytecode is
    cached (a .pyc beside torch/__init__.py, or under PYTHONPYCACHEPREFIX) or compiled on every import."""
    probe = (
        "import importlib.util, os, sys, time\n"
        "t = time.perf_counter()\n"
        "import torch\n"
        "s = time.perf_counter() - t\n"
        "print(s, os.path.exists(importlib.util.cache_from_source(torch.__file__)))\n"
    )
    found = []
    for _ in range(runs):
        done = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True)
        seconds, cached = done.stdout.split()
        found.append(float(seconds))
    return {
        "import_torch_s": round(sorted(found)[len(found) // 2], 2),
        "runs": runs,
        "bytecode": "cached" if cached == "True" else "compiled on every import (no .pyc, none written)",
        "PYTHONDONTWRITEBYTECODE": os.environ.get("PYTHONDONTWRITEBYTECODE"),
        "PYTHONPYCACHEPREFIX": os.environ.get("PYTHONPYCACHEPREFIX"),
    }


def step_chain_fashion(workdir: Path) -> dict[str, Any]:
    paths = RunPaths("bench-fashion-mnist", workdir / "data", workdir / "model", workdir / "deploy-model")
    steps = [
        ("preprocess", ["--dataset", "fashion-mnist", "--source", str(FASHION_SOURCE)]),
        ("validate", []),
        ("train_model", FASHION_TRAIN_ARGS),
        ("embedding", []),
        ("train_faiss", []),
        ("analysis", ["--accuracy-out", str(workdir / "accuracy")]),
    ]
    times = {}
    t0 = time.perf_counter()
    for name, args in steps:
        times[name] = round(step(name, paths, *args), 2)
    accuracy = float((workdir / "accuracy").read_text())
    deployed = accuracy > 0.8  # the pipeline's default baseline
    if deployed:
        times["deploy"] = round(step("deploy", paths), 2)
    return {
        "how": "the seven steps in order (preprocess --source Debian's files), train_model "
        + " ".join(FASHION_TRAIN_ARGS),
        "wall_s": round(time.perf_counter() - t0, 1),
        "steps_s": times,
        "deployed": deployed,
        "accuracy": accuracy,
    }


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python bench/pipeline.py", description=__doc__.split("\n\n")[0])
    p.add_argument("--quick", action="store_true", help="mnist-5k only")
    p.add_argument("--out", type=Path, default=ROOT / "bench" / "results" / "pipeline.json")
    args = p.parse_args(argv)
    if not args.quick and not FASHION_SOURCE.is_dir():
        p.error(f"{FASHION_SOURCE} not found: apt-get install dataset-fashion-mnist, or use --quick")
    result: dict[str, Any] = {
        "benchmark": "bench/pipeline.py",
        "measured": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "machine": {"cpus": os.cpu_count(), "python": platform.python_version()},
        "datasets": {},
    }
    result["machine"]["load_average_at_start"] = os.getloadavg()
    result["python"] = import_torch_seconds()
    with tempfile.TemporaryDirectory(prefix="mnist-ct-bench-pipeline-") as tmp:
        result["datasets"]["mnist-5k"] = run_local_mnist5k(Path(tmp) / "mnist-5k")
        if not args.quick:
            result["datasets"]["fashion-mnist"] = step_chain_fashion(Path(tmp) / "fashion-mnist")
    result["machine"]["load_average_at_end"] = os.getloadavg()
    if args.quick and args.out.is_file():  # keep the earlier runs of the other data sets, saying when they ran
        earlier = json.loads(args.out.read_text())
        for name, found in earlier.get("datasets", {}).items():
            if name not in result["datasets"]:
                result["datasets"][name] = {"measured": found.get("measured", earlier.get("measured")), **found}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    for name, r in result["datasets"].items():
        print(f"{name}: {r['wall_s']} s, accuracy {r['accuracy']:.4f}, deployed {r['deployed']}", file=sys.stderr)
        for task, f in r.get("steps", {}).items():
            print(
                f"  {task:<32} wall {f['wall_s']:6.2f}  work {f['work_s'] or 0:6.2f}  "
                f"overhead {f['overhead_s'] or 0:5.2f}  start-up {f['startup_s'] or 0:5.2f}  "
                + ("ok" if f["overhead_target_met"] else "MISSED"),
                file=sys.stderr,
            )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
