"""Continuous-training benchmark: five cycles of `mnist-ct run-local` on one work dir, real digits only.

    python bench/ct.py [--workdir DIR] [--keep]

The base data set is mnist-5k at 300 digits per class (3,000 of the 5,000 real MNIST digits built in); the
other 2,000 are the digits that "arrive" later, as labelled image folders under <data-root>/incoming/, written
as PNG and JPEG files of mixed sizes and modes (the way a labelling tool or a phone would deliver them):

1. first run: no champion; the model is trained, blessed by the baseline and deployed (the first champion);
2. batch-a (1,000 new digits) lands with _SUCCESS: retrain; the champion is re-evaluated on the grown test split;
   deploy if blessed;
3. batch-b (500 digits inverted on a dark frame, as a scanner with a black border delivers them: the
   polarity check, which looks at the border, cannot undo it) lands: validate stops the run (drift), the champion
   stays; the operator then moves the batch out of incoming/ (quarantine);
4. the same data as cycle 2, a challenger trained 1 epoch (`only_if_changed=false` forces the run: the data and
   the code are the champion's): not blessed, champion unchanged;
5. nothing new: preprocess finds the data version and every step version equal to the champion's, the rest of
   the run is skipped; the target is <= 15 s end to end.

Per cycle: the decision, challenger and champion accuracy (on the same test split), the live version after it,
wall time per step. Writes bench/results/ct.json. Run it from a venv with every package installed
(`nox -s bench -- ct` builds one).
"""

from __future__ import annotations

import argparse
import io
import json
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from mnist_ct.artifacts import find_champion
from mnist_ct.artifacts.mnist5k import mnist5k

ROOT = Path(__file__).resolve().parent.parent
BASE_PER_CLASS = 300
SKIP_TARGET_S = 15.0


def run_local(workdir: Path, run_id: str, *extra: str) -> tuple[int, float, str]:
    cmd = [sys.executable, "-m", "mnist_ct.orchestration", "run-local", "--workdir", str(workdir), "--run-id", run_id]
    cmd += ["--limit-per-class", str(BASE_PER_CLASS), *extra]
    t0 = time.perf_counter()
    done = subprocess.run(cmd, capture_output=True, text=True)
    wall = time.perf_counter() - t0
    output = done.stdout + done.stderr
    sys.stdout.write(output)
    return done.returncode, wall, output


def held_out(workdir: Path, run_id: str) -> dict[int, np.ndarray]:
    """The built-in digits that the base data set of `run_id` left out, per class (their order kept)."""
    folder = workdir / "data" / "runs" / run_id / "dataset"
    used = {
        row.tobytes() for split in ("train", "test") for row in np.load(folder / split / "images.npy", mmap_mode="r")
    }
    digits = mnist5k()
    out = {}
    for c in range(10):
        members = [i for i in np.flatnonzero(digits.labels == c) if digits.images[i].tobytes() not in used]
        out[c] = digits.images[members]
    return out


def encoded(pixels: np.ndarray, i: int) -> tuple[bytes, str]:
    """One 28x28 white-on-black digit as an image file the way they arrive: size, mode and format vary with i."""
    side = (28, 56, 64, 100, 200)[i % 5]
    image = Image.fromarray(pixels, mode="L")
    if side != 28:
        image = image.resize((side, side), Image.Resampling.BILINEAR)
    kind = i % 6
    buf = io.BytesIO()
    if kind == 0:  # grayscale PNG
        image.save(buf, "PNG")
    elif kind == 1:  # black ink on white paper, RGB PNG (the conversion inverts it by its border)
        Image.merge("RGB", [Image.eval(image, lambda v: 255 - v)] * 3).save(buf, "PNG")
    elif kind == 2:  # blue ink on a transparent canvas, RGBA PNG (the alpha channel is the ink)
        rgba = Image.new("RGBA", image.size, (20, 40, 200, 0))
        rgba.putalpha(image)
        rgba.save(buf, "PNG")
    elif kind == 3:  # 16-bit grayscale PNG
        Image.fromarray(np.asarray(image).astype(np.uint16) * 257).save(buf, "PNG")
    elif kind == 4:  # palette PNG
        image.convert("P").save(buf, "PNG")
    else:  # JPEG, as a phone would send it
        image.convert("RGB").save(buf, "JPEG", quality=92)
        return buf.getvalue(), "jpg"
    return buf.getvalue(), "png"


def inverted_on_dark_frame(pixels: np.ndarray) -> np.ndarray:
    """A dark digit on white paper inside a black scanner frame: the border is dark, so it is not re-inverted."""
    out = 255 - pixels
    out[:2, :] = out[-2:, :] = 0
    out[:, :2] = out[:, -2:] = 0
    return out


def write_batch(incoming: Path, name: str, per_class: dict[int, np.ndarray], transform=None) -> int:
    """incoming/<name>/<label>/*.png|jpg, then _SUCCESS (written last: the batch is complete)."""
    n = 0
    for label, images in per_class.items():
        folder = incoming / name / str(label)
        folder.mkdir(parents=True, exist_ok=True)
        for i, pixels in enumerate(images):
            data, ext = encoded(transform(pixels) if transform else pixels, n + i)
            (folder / f"{label}-{i:04d}.{ext}").write_bytes(data)
        n += len(images)
    (incoming / name / "_SUCCESS").touch()
    return n


def cycle_record(workdir: Path, run_id: str, rc: int, wall: float, output: str) -> dict[str, Any]:
    run = json.loads((workdir / "kfp" / run_id / "run.json").read_text())
    metrics_path = workdir / "model" / "runs" / run_id / "analysis" / "metrics.json"
    metrics = json.loads(metrics_path.read_text()) if metrics_path.is_file() else None
    tasks = {t["task"]: t for t in run["tasks"]}
    champion = find_champion(workdir / "deploy-model")
    manifest = json.loads((workdir / "data" / "runs" / run_id / "dataset" / "manifest.json").read_text())
    ran = {name: t for name, t in tasks.items() if t.get("status") in ("succeeded", "failed")}
    leaves = {name: t for name, t in ran.items() if not name.rsplit("/", 1)[-1].startswith("condition-")}
    record: dict[str, Any] = {
        "run_id": run_id,
        "exit_code": rc,
        "wall_s": round(wall, 1),
        # the steps that ran (a condition's sub-DAG is not a step), by the pipeline's task name
        "steps_s": {name.rsplit("/", 1)[-1]: t.get("seconds") for name, t in leaves.items()},
        "statuses": {name.rsplit("/", 1)[-1]: t.get("status") for name, t in leaves.items()},
        "outcome": run.get("outcome"),
        "data_version": manifest["meta"].get("data_version"),
        "batches": [b["id"] for b in manifest["meta"].get("batches", [])],
        "train": manifest["meta"]["sizes"]["train"],
        "test": manifest["meta"]["sizes"]["test"],
        "live_after": champion.version if champion else None,
        "last_lines": output.strip().splitlines()[-12:],
    }
    if metrics is not None:
        record["accuracy"] = metrics["accuracy"]
        record["champion"] = metrics.get("champion")
        record["blessing"] = metrics.get("blessing")
    return record


def decision(record: dict[str, Any], live_before: str | None) -> str:
    """What the run decided, from run-local's outcome (run.json) and the live version before and after."""
    outcome = record.get("outcome") or {}
    failed = [name for name, status in record["statuses"].items() if status == "failed"]
    if failed:
        return f"stopped by {failed[0]}"
    if outcome.get("proceed") is False:
        return f"skipped after preprocess ({outcome.get('proceed_reason')})"
    if outcome.get("deployed") and record["live_after"] == record["run_id"] != live_before:
        return f"deployed (blessed: {outcome.get('reason')})"
    return f"not deployed (not blessed: {outcome.get('reason')})"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--workdir", type=Path, help="work dir (default: a fresh temporary folder)")
    parser.add_argument("--keep", action="store_true", help="keep the work dir")
    parser.add_argument("--out", type=Path, default=ROOT / "bench" / "results" / "ct.json")
    args = parser.parse_args()
    workdir = args.workdir or Path(tempfile.mkdtemp(prefix="mnist-ct-bench-ct-"))
    if workdir.exists() and any(workdir.iterdir()):
        parser.error(f"--workdir {workdir}: not empty; the benchmark starts from nothing")
    incoming = workdir / "data" / "incoming"
    plan = [
        ("1-first-run", [], "champion made"),
        ("2-new-batch", [], "retrain, champion re-evaluated on the grown test split, deploy if blessed"),
        ("3-inverted-batch", [], "validate stops the run, champion unchanged"),
        ("4-one-epoch", ["--epochs", "1", "--only-if-changed", "false"], "not blessed, champion unchanged"),
        ("5-nothing-new", [], f"skipped in <= {SKIP_TARGET_S:.0f} s"),
    ]
    cycles = []
    spare: dict[int, np.ndarray] = {}
    try:
        for n, (name, extra, expected) in enumerate(plan, 1):
            run_id = f"ct-{name}"
            notes = []
            if n == 2:
                spare = held_out(workdir, cycles[0]["run_id"])
                count = write_batch(incoming, "batch-a", {c: imgs[:100] for c, imgs in spare.items()})
                notes.append(f"batch-a: {count} new real digits as PNG/JPEG of mixed sizes and modes")
            if n == 3:
                count = write_batch(
                    incoming, "batch-b", {c: imgs[100:150] for c, imgs in spare.items()}, inverted_on_dark_frame
                )
                notes.append(f"batch-b: {count} real digits inverted on a dark frame")
            if n == 4:
                quarantine = workdir / "data" / "quarantine"
                quarantine.mkdir(exist_ok=True)
                shutil.move(str(incoming / "batch-b"), str(quarantine / "batch-b"))
                notes.append("batch-b moved out of incoming/ (quarantined by the operator)")
            live_before = cycles[-1]["live_after"] if cycles else None
            print(f"=== cycle {n}: {name} ({expected})", flush=True)
            rc, wall, output = run_local(workdir, run_id, *extra)
            record = cycle_record(workdir, run_id, rc, wall, output)
            record.update(cycle=n, name=name, expected=expected, notes=notes, arguments=extra)
            record["decision"] = decision(record, live_before)
            cycles.append(record)
            champion = record.get("champion") or {}
            print(
                f"=== cycle {n}: {record['decision']}; challenger {record.get('accuracy')}, champion "
                f"{champion.get('accuracy')} ({champion.get('version')}); live {record['live_after']}; "
                f"{record['wall_s']} s",
                flush=True,
            )
    finally:
        if not args.keep and args.workdir is None:
            shutil.rmtree(workdir, ignore_errors=True)
    checks = {
        "1 champion made": cycles[0]["decision"].startswith("deployed")
        and cycles[0]["live_after"] == cycles[0]["run_id"],
        "2 champion re-evaluated on the grown test split": (cycles[1].get("champion") or {}).get("version")
        == cycles[0]["run_id"]
        and cycles[1]["test"] > cycles[0]["test"],
        "3 validate stopped it, champion unchanged": cycles[2]["decision"] == "stopped by validate"
        and cycles[2]["live_after"] == cycles[1]["live_after"],
        "4 not blessed, champion unchanged": cycles[3]["decision"].startswith("not deployed")
        and cycles[3]["live_after"] == cycles[2]["live_after"],
        f"5 skipped in <= {SKIP_TARGET_S:.0f} s": cycles[4]["decision"].startswith("skipped after preprocess")
        and cycles[4]["wall_s"] <= SKIP_TARGET_S,
    }
    result = {
        "benchmark": "ct",
        "date": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "machine": {"cpus": os.cpu_count(), "python": platform.python_version(), "load": os.getloadavg()},
        "base": f"mnist-5k, {BASE_PER_CLASS} digits per class (limit_per_class)",
        "cycles": cycles,
        "checks": checks,
        "passed": all(checks.values()),
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    for check, ok in checks.items():
        print(f"{'PASS' if ok else 'FAIL'}  {check}")
    print(f"-> {args.out}")
    return 0 if result["passed"] else 1


if __name__ == "__main__":
    raise SystemExit(main())
