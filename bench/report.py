"""Write bench/REPORT.md from bench/results/*.json: one table per area, with the machine they ran on.

    python bench/report.py

Only formats what the benchmarks measured; a missing results file is reported as not run.
"""

from __future__ import annotations

import json
import os
import platform
from pathlib import Path
from typing import Any

BENCH = Path(__file__).resolve().parent
RESULTS = BENCH / "results"


def load(name: str) -> dict[str, Any] | None:
    path = RESULTS / f"{name}.json"
    return json.loads(path.read_text()) if path.is_file() else None


def table(header: list[str], rows: list[list[Any]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(str(c) for c in row) + " |" for row in rows]
    return "\n".join(lines)


def pct(x: float) -> str:
    return f"{100 * x:.2f}%"


def machine() -> str:
    cpu = next(
        (ln.split(":", 1)[1].strip() for ln in Path("/proc/cpuinfo").read_text().splitlines() if "model name" in ln),
        platform.processor(),
    )
    mem = next(ln.split()[1] for ln in Path("/proc/meminfo").read_text().splitlines() if ln.startswith("MemTotal"))
    return (
        f"{cpu}, {os.cpu_count()} cores, {int(mem) / 2**20:.0f} GiB, Python {platform.python_version()}, "
        "no GPU; a shared machine, so every figure is one run under the load shown"
    )


def pipeline_section(r: dict[str, Any]) -> str:
    rows = []
    for name, d in r["datasets"].items():
        steps = ", ".join(f"{k} {v:.1f}" for k, v in d["steps_s"].items())
        rows.append([name, d["how"], f"{d['wall_s']:.0f} s", pct(d["accuracy"]), d["deployed"], steps])
    return table(["data set", "how", "wall", "1-NN accuracy", "deployed", "per step (s)"], rows)


def train_section(r: dict[str, Any]) -> str:
    rows = []
    for name, d in r["datasets"].items():
        o, u, t, b = d["original"], d["ours"], d["time_to_original_accuracy"], d["same_time_budget"]
        reach = f"{t['train_seconds']:.1f} s (epoch {t['epoch']})" if t.get("train_seconds") is not None else "never"
        budget = f"{pct(b['test_nn1_accuracy'])} in {b['train_seconds']:.1f} s ({b['epochs']} ep.)" if b else "-"
        targets = d["targets"]
        missed = [k.removesuffix("_met") for k, v in targets.items() if k.endswith("_met") and not v]
        rows.append(
            [
                name,
                f"{pct(o['test_nn1_accuracy'])} in {o['train_seconds']:.1f} s, {o['images_per_second']:.0f} img/s",
                f"`{u['recipe']}`",
                f"{pct(u['test_nn1_accuracy'])} in {u['train_seconds']:.1f} s "
                f"(train_model {u['train_model_wall_seconds']:.1f} s), {u['images_per_second']:.0f} img/s",
                f"{d['ratio_ours_over_original']['test_error']:.2f}",
                reach,
                budget,
                f"{o['achieved_gflops']:.0f} / {u['achieved_gflops']:.0f} "
                f"({pct(o['fraction_of_fp32_matmul'])} / {pct(u['fraction_of_fp32_matmul'])})",
                "all met" if not missed else "missed: " + ", ".join(missed),
            ]
        )
    head = ["data set", "original recipe", "ours: options", "ours", "test error ours/original"]
    head += ["ours reaches the original's accuracy", "ours in the original's time"]
    head += ["GFLOP/s orig. / ours (of fp32 matmul)"]
    out = table([*head, "targets"], rows)
    return out + (
        f"\n\nMatmul on {r['machine']['threads']} threads: fp32 {r['matmul_fp32_gflops']['used']:.0f} GFLOP/s, "
        f"bf16 {r['matmul_bf16_gflops']:.0f} GFLOP/s (ours trains with bf16 autocast on this CPU, so it can pass "
        "the fp32 figure). Targets: test 1-NN accuracy and train_model wall time (mnist-5k >= 98.5% within 60 s; "
        "Fashion-MNIST >= 93% within 300 s), time to the original's accuracy, and ours in the original's time "
        "beating it. Per-epoch curves: bench/results/train.json."
    )


def serve_section(r: dict[str, Any]) -> str:
    rows = []
    for name, d in r["load"].items():
        lat = d["latency_ms"]
        rows.append([name, f"{d['requests_per_s']:.0f}", lat["p50"], lat["p95"], lat["p99"], d["errors"], d["config"]])
    acc = r["accuracy"]
    return (
        table(["setting", "req/s", "p50 ms", "p95 ms", "p99 ms", "errors", "config"], rows)
        + f"\n\n{r['clients']} clients. Accuracy over HTTP on {acc['test_digits']} test digits as PNG: "
        f"{pct(acc['served'])}; analysis reported {pct(acc['analysis_reported'])} (gap {acc['gap_points']} pt)."
    )


def soak_section(r: dict[str, Any]) -> str:
    s = r["summary"]
    rows = [
        [
            f"{s['repetitions']} x {s['requests_each']}",
            s["clients"],
            s["lost_total"],
            s["lost_beyond_one_batch_on_the_killed_worker"],
            f"{s['first_success_after_kill_ms_max']:.0f} ms",
            f"{s['worker_ready_again_s_median']:.1f} s",
            f"{s['requests_per_s_median']:.0f}",
        ]
    ]
    head = ["requests", "clients", "lost (all reps)", "lost beyond the killed worker's batch"]
    return table([*head, "first success after kill (max)", "worker READY again (median)", "req/s"], rows)


def build_section(r: dict[str, Any]) -> str:
    rows = [
        ["everything, cold (9 packages tested, 7 images built and pushed)", f"{r['everything_s']:.0f} s"],
        ["nothing changed", f"{r['no_change_s']} s"],
        [
            f"one light step ({r['one_light_step']['step']}: tested, built, pushed)",
            f"{r['one_light_step']['seconds']} s",
        ],
        [
            f"code-only change of {r['torch_code_only_rebuild']['step']}",
            f"{r['torch_code_only_rebuild']['seconds_build_changed']} s, "
            f"{r['torch_code_only_rebuild']['layers_changed']} of {r['torch_code_only_rebuild']['layers']} layers new",
        ],
        ["rebuild from scratch gives the same digest", r["reproducible"]["same"]],
    ]
    sizes = ", ".join(f"{k} {v['unpacked_mb']} MB" for k, v in sorted(r["images"].items()))
    return table(["what", "result"], rows) + f"\n\nBuilder: {r['builder']}. Image sizes (unpacked): {sizes}."


def testcmd_section(r: dict[str, Any]) -> str:
    names = sorted({n for run in r.values() for n in run["sessions"]})
    rows = [
        [label, run["ref"], f"{run['seconds']:.0f} s", "yes" if run["passed"] else "no"]
        + [f"{run['sessions'][n]:.0f} s" if n in run["sessions"] else "-" for n in names]
        for label, run in sorted(r.items(), key=lambda kv: kv[1]["measured"])
    ]
    text = table(["run", "commit", "`.ci/run` in all", "passed", *names], rows)
    if "before" in r and "after" in r:
        text += f"\n\nAfter / before: {r['after']['seconds'] / r['before']['seconds']:.2f} (target: 0.5 or less)."
    return text + (
        "\n\nA fresh clone, empty caches (HOME is an empty folder: uv, pip and mypy start cold), apt packages "
        "already installed; nox rounds session times to whole minutes above 60 s."
        + (
            " issue-12 also started with no container images (buildah storage emptied, as on a fresh CI machine)"
            " and its tooling session includes the workflow rehearsal (tools/tests/test_workflows.py), whose main"
            " job builds and pushes all seven step images into an empty registry."
            if "issue-12" in r
            else ""
        )
    )


def ct_section(r: dict[str, Any]) -> str:
    rows = []
    for c in r["cycles"]:
        champion = c.get("champion") or {}
        measured = champion.get("accuracy")
        champ = "-" if measured is None else f"{pct(measured)} ({champion.get('version')})"
        steps = ", ".join(f"{k} {v:.1f}" for k, v in c["steps_s"].items() if v is not None)
        accuracy = pct(c["accuracy"]) if c.get("accuracy") is not None else "-"
        rows.append(
            [c["cycle"], c["name"], f"{c['train']}/{c['test']}", c["decision"], accuracy, champ, c["live_after"],
             f"{c['wall_s']:.1f} s", steps]
        )  # fmt: skip
    checks = "; ".join(f"{'met' if ok else 'MISSED'}: {name}" for name, ok in r["checks"].items())
    return (
        f"Base: {r['base']}; batches of real digits as PNG/JPEG files of mixed sizes and modes.\n\n"
        + table(
            [
                "cycle",
                "what",
                "train/test",
                "decision",
                "challenger",
                "champion (same test split)",
                "live after",
                "wall",
                "per step (s)",
            ],
            rows,
        )  # fmt: skip
        + f"\n\n{checks}."
    )


def incremental_section(r: dict[str, Any]) -> str:
    s = r["seconds"]
    return (
        f"{r['scenario']}.\n\nThe new run, best of three: {s['incremental_in_process_best_wall']:.2f} s wall in "
        f"process, {s['incremental_python_m_best_wall']:.2f} s as `python -m mnist_ct.preprocess` (target <= "
        f"{r['target_s']} s: "
        f"{'met' if r['met'] else 'MISSED'}); with the interpreter start: "
        f"{'met' if r['met_with_interpreter_start'] else 'MISSED'}."
    )


SECTIONS = [
    ("ct", "Continuous training: five cycles on one work dir", ct_section),
    ("preprocess_incremental", "Preprocess: one new batch onto 50,000 collected digits", incremental_section),
    ("pipeline", "Pipeline: wall time and accuracy", pipeline_section),
    ("train", "Training: ours against the original recipe", train_section),
    ("serve", "Serving: TorchServe, 8 concurrent clients", serve_section),
    ("soak", "Serving soak: a worker SIGKILLed midway", soak_section),
    ("build", "Build: images of what changed", build_section),
    ("testcmd", "The test command on a fresh clone", testcmd_section),
]


def main() -> int:
    parts = [
        "# Benchmark report",
        "",
        f"Machine: {machine()}.",
        "",
        "Made by `python bench/report.py` from bench/results/*.json; "
        "rerun everything with `nox -s bench` (one area: `nox -s bench -- train`).",
        "",
    ]
    for name, title, render in SECTIONS:
        r = load(name)
        parts += [f"## {title}", ""]
        if r is None:
            parts += [f"Not run: bench/results/{name}.json is missing (`nox -s bench -- {name}`).", ""]
            continue
        when = r.get("measured") or r.get("date") or r.get("commit", "") or "see the table"
        load_avg = (r.get("machine") or {}).get("load_average_at_end") if isinstance(r.get("machine"), dict) else None
        parts += [
            render(r),
            "",
            f"From bench/results/{name}.json ({when}"
            + (f"; load average at the end {[round(x, 1) for x in load_avg]}" if load_avg else "")
            + ").",
            "",
        ]
    (BENCH / "REPORT.md").write_text("\n".join(parts))
    print(f"wrote {BENCH / 'REPORT.md'}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
