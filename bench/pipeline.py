"""Pipeline benchmark: the whole pipeline's wall time and accuracy, per step, on mnist-5k and Fashion-MNIST.

    python bench/pipeline.py                 mnist-5k (run-local, deploy included) and Fashion-MNIST (full)
    python bench/pipeline.py --quick         mnist-5k only

mnist-5k runs exactly what `nox -s pipeline` runs: `mnist-ct run-local` on the compiled pipeline, at the
pipeline's default parameters. Fashion-MNIST (60k/10k, Debian's dataset-fashion-mnist) cannot go
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


def run_local_mnist5k(workdir: Path) -> dict[str, Any]:
    run_id = "bench-mnist-5k"
    t0 = time.perf_counter()
    cmd = [sys.executable, "-m", "mnist_ct.orchestration", "run-local", "--workdir", str(workdir), "--run-id", run_id]
    subprocess.run(cmd, check=True)
    wall = time.perf_counter() - t0
    record = json.loads((workdir / "kfp" / run_id / "run.json").read_text())
    metrics = json.loads((workdir / "model" / "runs" / run_id / "analysis" / "metrics.json").read_text())
    return {
        "how": "mnist-ct run-local (the compiled pipeline, pipeline defaults)",
        "arguments": record["arguments"],
        "wall_s": round(wall, 1),
        "steps_s": {t["task"]: t["seconds"] for t in record["tasks"]},
        "deployed": any(t["task"].endswith("deploy") and t["status"] == "succeeded" for t in record["tasks"]),
        "accuracy": metrics["accuracy"],
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
    with tempfile.TemporaryDirectory(prefix="mnist-ct-bench-pipeline-") as tmp:
        result["datasets"]["mnist-5k"] = run_local_mnist5k(Path(tmp) / "mnist-5k")
        if not args.quick:
            result["datasets"]["fashion-mnist"] = step_chain_fashion(Path(tmp) / "fashion-mnist")
    result["machine"]["load_average_at_end"] = os.getloadavg()
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    for name, r in result["datasets"].items():
        print(f"{name}: {r['wall_s']} s, accuracy {r['accuracy']:.4f}, deployed {r['deployed']}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
