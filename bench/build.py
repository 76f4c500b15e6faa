"""Delivery benchmark: `nox -s build-changed` in a temporary clone, pushed to a local registry.

    python bench/build.py [--no-tests] [--keep]

Clones HEAD into a temporary folder, starts Debian's docker-registry on 127.0.0.1 (temporary storage),
uses the local base image (`nox -s base-image` makes it; built here if missing), drops the builder's
layer cache, then measures with the clone's own noxfile:

1. everything: every package tested, every step built and pushed (cold: no venvs, no wheelhouse cache,
   no layer cache);
2. no change: the time to decide "nothing to build";
3. one light step changed (validate: code + version bump): only it is tested, built and pushed;
4. a code-only change of a torch step (train_model + version bump), rebuilt with the deps layer cached;
5. the same inputs built again from scratch (no layer cache): the same digest?

Image sizes (unpacked, and what a pull transfers) come from the first build. Writes
bench/results/build.json. Needs buildah, skopeo, docker-registry and debootstrap (see .ci/run).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from tools import baseimage, delivery, oci, registry  # noqa: E402

TORCH_STEPS = {"train_model", "embedding"}


def sh(argv: list[str], cwd: Path, check: bool = True) -> tuple[float, str]:
    started = time.monotonic()
    done = subprocess.run(argv, cwd=cwd, capture_output=True, text=True)
    seconds = time.monotonic() - started
    if check and done.returncode != 0:
        raise SystemExit(f"{' '.join(argv[:6])} failed ({done.returncode}):\n{(done.stdout + done.stderr)[-4000:]}")
    return seconds, done.stdout + done.stderr


def build_changed(clone: Path, reg: str, base: str, tests: bool, *extra: str) -> tuple[float, dict | None, str]:
    report = clone / f".nox/bench-report-{time.monotonic_ns()}.json"
    args = ["--push", "--registry", f"{reg}/mnist-ct", "--base-image", base, "--builder", "buildah"]
    args += ["--report", str(report), *extra] + ([] if tests else ["--no-tests"])
    seconds, out = sh([sys.executable, "-m", "nox", "-s", "build-changed", "--", *args], clone)
    return seconds, (json.loads(report.read_text()) if report.is_file() else None), out


def change(clone: Path, step: str, version: str) -> None:
    main = next((clone / "steps" / step / "src").rglob("__main__.py"))
    main.write_text(main.read_text() + "\n# benchmark: a code-only change\n")
    pyproject = clone / "steps" / step / "pyproject.toml"
    text = pyproject.read_text()
    current = next(line for line in text.splitlines() if line.startswith("version = "))
    pyproject.write_text(text.replace(current, f'version = "{version}"', 1))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--no-tests", action="store_true", help="measure builds only (skip each package's tests)")
    parser.add_argument("--keep", action="store_true", help="keep the clone and the registry data")
    parser.add_argument(
        "--template",
        action="store_true",
        help="first rewrite the clone's step Dockerfiles from tools/step.Dockerfile (recorded in the results)",
    )
    args = parser.parse_args()
    tests = not args.no_tests
    base = os.environ.get("MNIST_CT_BASE_IMAGE", baseimage.DEFAULT_TAG)
    if not oci.image_exists("buildah", base):
        baseimage.build_base_image(base, builder="buildah")
    work = Path(tempfile.mkdtemp(prefix="mnist-ct-bench-build-"))
    clone = work / "clone"
    sh(["git", "clone", "--quiet", "--no-hardlinks", str(ROOT), str(clone)], work)
    commit = sh(["git", "rev-parse", "HEAD"], clone)[1].strip()
    if args.template:
        for dockerfile in sorted(clone.glob("steps/*/Dockerfile")):
            dockerfile.write_text(delivery.render_dockerfile(dockerfile.parent.name))
        sh(["git", "-c", "user.name=bench", "-c", "user.email=bench@localhost", "commit", "-qam", "template"], clone)
    reg = registry.start(work / "registry")
    results: dict = {
        "commit": commit,
        "machine": f"{platform.machine()}, {os.cpu_count()} cores (shared)",
        "builder": "buildah " + sh(["buildah", "--version"], work)[1].split()[2] + " (overlay, --isolation chroot)",
        "tests": tests,
        "dockerfiles": "tools/step.Dockerfile" if args.template else "as committed",
    }
    try:
        oci.prune_cache("buildah")
        print("1. everything (cold) ...", flush=True)
        seconds, full, _ = build_changed(clone, reg.address, base, tests, "--all")  # whatever the lock pins
        results["everything_s"] = round(seconds, 1)
        results["images"] = {
            s["name"]: {
                "version": s["version"],
                "digest": s["digest"],
                "unpacked_mb": round((s["unpacked_bytes"] or 0) / 1e6),
                "pull_mb": round((s["pushed_bytes"] or 0) / 1e6),
                "torch": s["name"] in TORCH_STEPS,
                "wheelhouse_s": round(s["wheelhouse_s"], 1),
                "build_and_push_s": round(s["build_s"], 1),
            }
            for s in full["steps"]
        }
        print("2. no change ...", flush=True)
        seconds, _, out = build_changed(clone, reg.address, base, tests)
        assert "nothing to build" in out, out[-2000:]
        results["no_change_s"] = round(seconds, 1)
        print("3. one light step (validate) ...", flush=True)
        change(clone, "validate", "0.1.1")
        seconds, one, _ = build_changed(clone, reg.address, base, tests)
        results["one_light_step"] = {
            "step": "validate",
            "seconds": round(seconds, 1),
            "built": [s["name"] for s in one["steps"]],
            "tested": one["tested"],
            "ratio_to_everything": round(seconds / results["everything_s"], 3),
        }
        print("4. code-only change of a torch step (train_model) ...", flush=True)
        change(clone, "train_model", "0.1.1")
        seconds, torch_change, _ = build_changed(clone, reg.address, base, False)
        [step] = torch_change["steps"]
        before = full["steps"][[s["name"] for s in full["steps"]].index("train_model")]
        results["torch_code_only_rebuild"] = {
            "step": "train_model",
            "seconds_build_changed": round(seconds, 1),
            "seconds_image_build_and_push": round(step["build_s"], 1),
            "layers_changed": sum(a != b for a, b in zip(before["diff_ids"], step["diff_ids"], strict=True)),
            "layers": len(step["diff_ids"]),
        }
        print("5. same inputs from scratch ...", flush=True)
        oci.prune_cache("buildah")
        _, again, _ = build_changed(clone, reg.address, base, False, "--all", "--only", "validate", "--no-cache")
        results["reproducible"] = {
            "step": "validate",
            "first": one["steps"][0]["digest"],
            "from_scratch": again["steps"][0]["digest"],
            "same": one["steps"][0]["digest"] == again["steps"][0]["digest"],
        }
        results["targets"] = {
            "no_change_le_10s": results["no_change_s"] <= 10,
            "one_light_step_le_25pct": results["one_light_step"]["ratio_to_everything"] <= 0.25,
            "torch_code_only_le_60s": results["torch_code_only_rebuild"]["seconds_build_changed"] <= 60,
            "sizes": all(i["unpacked_mb"] <= (1200 if i["torch"] else 300) for i in results["images"].values()),
            "same_digest": results["reproducible"]["same"],
        }
    finally:
        reg.stop()
        if not args.keep:
            oci.remove_images_under("buildah", reg.address + "/")
        if not args.keep:
            shutil.rmtree(work, ignore_errors=True)
    out = ROOT / "bench" / "results" / "build.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(results, indent=2) + "\n")
    print(json.dumps(results, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
