"""The README's test command on a fresh clone: how long CI's `.ci/run` takes, per nox session.

    python bench/testcmd.py --label after              # clone HEAD, run .ci/run with empty caches, time it
    python bench/testcmd.py --label before --ref REF   # the same for an older commit
    python bench/testcmd.py --label before --log F     # record a run already made this way (its log, `time` output)

Each run: `git clone` of the repo into a temporary folder, HOME set to an empty folder (so uv's, pip's
and mypy's caches start cold; apt packages already installed are reused), `time bash .ci/run`.
Writes bench/results/testcmd.json: {label: {ref, seconds, sessions: {name: seconds}, passed, load}}.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "bench" / "results" / "testcmd.json"


def sessions(log: str) -> dict[str, float]:
    """Seconds per nox session from nox's 'Session X was successful in N seconds/minutes' lines."""
    found = {}
    # nox writes "in 36 seconds", "in 2 minutes", and "in a second" / "in a minute" for one.
    for name, amount, unit in re.findall(
        r"Session (\S+) (?:was successful|failed|aborted)[^\n]* in (\d+|an?) (second|minute)", log
    ):
        found[name] = (1.0 if amount in ("a", "an") else float(amount)) * (60 if unit == "minute" else 1)
    return found


def run(ref: str) -> tuple[str, float, bool]:
    with tempfile.TemporaryDirectory(prefix="mnist-ct-testcmd-") as tmp:
        clone, home = Path(tmp) / "repo", Path(tmp) / "home"
        home.mkdir()
        subprocess.run(["git", "clone", "-q", str(ROOT), str(clone)], check=True)
        subprocess.run(["git", "-C", str(clone), "checkout", "-q", ref], check=True)
        env = {**os.environ, "HOME": str(home), "CI": "true"}
        t0 = time.monotonic()
        done = subprocess.run(["bash", ".ci/run"], cwd=clone, env=env, capture_output=True, text=True)
        seconds = time.monotonic() - t0
        return done.stdout + done.stderr, seconds, done.returncode == 0


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--label", required=True, help="the name of this measurement in testcmd.json (before, after)")
    p.add_argument("--ref", default="HEAD", help="the commit to clone and run (default: %(default)s)")
    p.add_argument("--log", type=Path, help="record this earlier run's log (with `time`'s real line) instead")
    p.add_argument("--keep-log", type=Path, help="write the run's output here (for a failed run: why)")
    args = p.parse_args(argv)
    ref = subprocess.run(["git", "-C", str(ROOT), "rev-parse", "--short", args.ref], capture_output=True, text=True)
    if args.log:
        log = args.log.read_text()
        real = re.search(r"real\s+(\d+)m([\d.]+)s", log)
        if not real:
            p.error(f"{args.log}: no `time` output (real XmY.Ys) in it")
        seconds, passed = int(real.group(1)) * 60 + float(real.group(2)), "rc=0" in log or "Ran 3 sessions" in log
        measured, load = datetime.fromtimestamp(args.log.stat().st_mtime, UTC), None  # not known afterwards
    else:
        log, seconds, passed = run(args.ref)
        if args.keep_log:
            args.keep_log.write_text(log)
        measured, load = datetime.now(UTC), [round(x, 2) for x in os.getloadavg()]
    results = json.loads(RESULTS.read_text()) if RESULTS.is_file() else {}
    results[args.label] = {
        "ref": ref.stdout.strip(),
        "seconds": round(seconds, 1),
        "sessions": sessions(log),
        "passed": passed,
        "load_average_at_end": load,
        "measured": measured.isoformat(timespec="seconds"),
    }
    RESULTS.write_text(json.dumps(results, indent=2, sort_keys=True) + "\n")
    print(json.dumps(results[args.label], indent=2), file=sys.stderr)
    return 0 if passed else 1


if __name__ == "__main__":
    raise SystemExit(main())
