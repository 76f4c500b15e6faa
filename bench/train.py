"""Training benchmark: our recipe (preprocess -> train_model -> embedding) against the original recipe.

    python bench/train.py            mnist-5k and Fashion-MNIST (full, /usr/share/datasets/fashion-mnist)
    python bench/train.py --quick    mnist-5k only

Runs from a venv with the steps installed (mnist-ct-preprocess, -train-model, -embedding). For each data
set it publishes the data with the preprocess step, trains our model with the train_model step at its
defaults (Fashion-MNIST: the options in RECIPES), embeds train and test with the embedding step, and
measures 1-NN test accuracy (gallery: the train split). In the same process it trains the original
recipe (see `Original`) on the same train split. It writes bench/results/train.json: wall time, images/s,
1-NN accuracy, the ratios ours/original, time to reach the original's final accuracy, and the achieved
GFLOP/s against a matrix product of the same precision measured in the same run. mnist-5k is trained
with three seeds (the target is their mean accuracy).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from mnist_ct.artifacts import RunPaths, read_embeddings, read_split
from mnist_ct.train_model.checkpoints import epoch_checkpoint
from mnist_ct.train_model.model import ArcFace, EmbeddingNet, forward_flops, training_flops
from mnist_ct.train_model.training import TrainConfig, embed, nn1_accuracy

ROOT = Path(__file__).resolve().parent
FASHION_SOURCE = Path("/usr/share/datasets/fashion-mnist")

# What each data set must reach (the targets), and the options our run gets beyond the defaults.
# mnist-5k: the accuracy target is the mean over `seeds` (each reported); the first seed's run also gives
# the per-epoch curve and the same-time-budget run.
RECIPES: dict[str, dict[str, Any]] = {
    "mnist-5k": {"args": [], "min_accuracy": 0.992, "max_train_model_seconds": 15.0, "seeds": [0, 1, 2]},
    "fashion-mnist": {
        "args": ["--epochs", "7", "--blocks", "2,2,2", "--no-augment", "--batch-size", "128", "--lr", "0.003"],
        "min_accuracy": 0.935,
        "max_train_model_seconds": 300.0,
        "seeds": [0],
    },
}


def matmul_gflops(threads: int, n: int = 1024, repeats: int = 20, dtype: torch.dtype = torch.float32) -> float:
    """GFLOP/s of an n x n matrix product on `threads` threads (best of three timings)."""
    torch.set_num_threads(threads)
    a, b = torch.randn(n, n, dtype=dtype), torch.randn(n, n, dtype=dtype)
    for _ in range(3):
        a @ b
    best = float("inf")
    for _ in range(3):
        t = time.perf_counter()
        for _ in range(repeats):
            a @ b
        best = min(best, time.perf_counter() - t)
    return 2 * n**3 * repeats / best / 1e9


class Original(nn.Module):
    """The original recipe's network: 7744 = 64 x 11 x 11 features, a 128-d embedding."""

    def __init__(self) -> None:
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv2d(1, 32, 3), nn.BatchNorm2d(32), nn.ReLU(), nn.MaxPool2d(2),
            nn.Conv2d(32, 64, 3), nn.BatchNorm2d(64), nn.ReLU(),
        )  # fmt: skip
        self.head = nn.Sequential(
            nn.Flatten(), nn.Linear(7744, 128), nn.BatchNorm1d(128), nn.ReLU(), nn.Linear(128, 128)
        )  # fmt: skip

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(x))


def run_original(
    train_images: np.ndarray,
    train_labels: np.ndarray,
    test_images: np.ndarray,
    test_labels: np.ndarray,
    threads: int,
    seed: int = 0,
) -> dict[str, Any]:
    """The original recipe: SGD lr 0.01, weight decay 5e-4, batch 16, 2 epochs, ArcFace s=32 m=0.5, [0,1] input."""
    torch.set_num_threads(threads)
    torch.manual_seed(seed)
    net, head = Original(), ArcFace(128, scale=32.0, margin=0.5)
    opt = torch.optim.SGD([*net.parameters(), *head.parameters()], lr=0.01, weight_decay=5e-4)
    x_all = torch.from_numpy(np.array(train_images)).unsqueeze(1).float().div_(255)
    y_all = torch.from_numpy(np.array(train_labels, dtype=np.int64))
    gen = torch.Generator().manual_seed(seed)
    epochs, batch = 2, 16
    per_epoch, seconds = [], 0.0
    for epoch in range(1, epochs + 1):
        net.train()
        perm = torch.randperm(len(y_all), generator=gen)
        t = time.perf_counter()
        for i in range(0, len(perm) - 1, batch):  # a last batch of one would break BatchNorm
            idx = perm[i : i + batch]
            if len(idx) < 2:
                break
            loss = F.cross_entropy(head(net(x_all[idx]), y_all[idx]), y_all[idx])
            opt.zero_grad()
            loss.backward()
            opt.step()
        seconds += time.perf_counter() - t
        per_epoch.append(
            {
                "epoch": epoch,
                "cumulative_train_seconds": seconds,
                "test_nn1_accuracy": _nn1(net, train_images, train_labels, test_images, test_labels),
            }
        )
    images = epochs * len(y_all)
    flops = training_flops(net, 128)
    return {
        "recipe": "original: conv3x3 1->32 (unpadded)+BN+ReLU+maxpool2, conv3x3 32->64+BN+ReLU, fc 7744->128+BN+ReLU, "
        "fc 128->128; ArcFace s=32 m=0.5; SGD lr 0.01 wd 5e-4 (no momentum), batch 16, 2 epochs, no augmentation",
        "train_seconds": seconds,
        "images_per_second": images / seconds,
        "forward_flops_per_image": forward_flops(net),
        "training_flops_per_image": flops,
        "precision": "fp32",
        "achieved_gflops": flops * images / seconds / 1e9,
        "test_nn1_accuracy": per_epoch[-1]["test_nn1_accuracy"],
        "epochs": per_epoch,
    }


def _embed_module(net: nn.Module, images: np.ndarray, batch: int = 1024) -> torch.Tensor:
    net.eval()
    with torch.no_grad():
        chunks = [
            F.normalize(net(torch.from_numpy(np.array(images[i : i + batch])).unsqueeze(1).float() / 255), dim=1)
            for i in range(0, len(images), batch)
        ]
    return torch.cat(chunks)


def _nn1(
    net: nn.Module, train_images: np.ndarray, train_labels: np.ndarray, test_images: np.ndarray, test_labels: np.ndarray
) -> float:
    gallery, queries = _embed_module(net, train_images), _embed_module(net, test_images)
    return nn1_accuracy(
        gallery, torch.from_numpy(np.array(train_labels)), queries, torch.from_numpy(np.array(test_labels))
    )


def step(module: str, paths: RunPaths, *args: str, quiet: bool = False) -> float:
    """Run `python -m mnist_ct.<module>` for the run; its wall time in seconds (fails loudly)."""
    cmd = [sys.executable, "-m", f"mnist_ct.{module}", *paths.cli_args(), *args]
    if quiet:
        cmd.append("--quiet")
    print("$", " ".join(cmd), file=sys.stderr, flush=True)
    t = time.perf_counter()
    subprocess.run(cmd, check=True)
    return time.perf_counter() - t


def curve_of_ours(
    paths: RunPaths,
    card: dict[str, Any],
    train_images: np.ndarray,
    train_labels: np.ndarray,
    test_images: np.ndarray,
    test_labels: np.ndarray,
) -> list[dict[str, Any]]:
    """Test 1-NN accuracy after every epoch, from the run's checkpoints (what time-to-accuracy is read from)."""
    config = card["config"]
    arch = TrainConfig(
        widths=tuple(config["widths"]), blocks=tuple(config["blocks"]), embedding_dim=config["embedding_dim"]
    ).architecture
    gallery_labels = torch.from_numpy(np.array(train_labels))
    query_labels = torch.from_numpy(np.array(test_labels))
    train_t, test_t = torch.from_numpy(np.array(train_images)), torch.from_numpy(np.array(test_images))
    curve, train_s, wall_s = [], 0.0, 0.0
    for e in card["epochs"]:
        train_s += e["train_seconds"]
        wall_s += e["train_seconds"] + e["val_seconds"]
        net = EmbeddingNet(arch)
        net.load_state_dict(torch.load(epoch_checkpoint(paths.checkpoints, e["epoch"]), weights_only=True)["net"])
        acc = nn1_accuracy(
            embed(net, train_t, torch.device("cpu")),
            gallery_labels,
            embed(net, test_t, torch.device("cpu")),
            query_labels,
        )
        curve.append(
            {
                "epoch": e["epoch"],
                "cumulative_train_seconds": train_s,
                "cumulative_train_and_validation_seconds": wall_s,
                "test_nn1_accuracy": acc,
            }
        )
    return curve


def sibling_run(name: str, workdir: Path, suffix: str) -> RunPaths:
    """Run `bench-<name>-<suffix>` with a fresh copy of run `bench-<name>`'s data set, to train again on it."""
    paths = RunPaths(f"bench-{name}", workdir / "data", workdir / "model", workdir / "deploy")
    sibling = RunPaths(f"bench-{name}-{suffix}", workdir / "data", workdir / "model", workdir / "deploy")
    if sibling.dataset.exists():
        shutil.rmtree(sibling.dataset)
    sibling.dataset.parent.mkdir(parents=True, exist_ok=True)
    shutil.copytree(paths.dataset, sibling.dataset)
    return sibling


def same_budget_run(
    name: str, workdir: Path, threads: int, recipe: dict[str, Any], card: dict[str, Any], budget_s: float
) -> dict[str, Any] | None:
    """Our recipe with as many epochs as fit in the original's training time (its own one-cycle schedule)."""
    per_epoch = card["timing"]["train_seconds"] / len(card["epochs"])
    epochs = int(budget_s // per_epoch)
    if epochs < 1:
        return None
    short = sibling_run(name, workdir, "budget")
    args = list(recipe["args"])
    if "--epochs" in args:
        del args[args.index("--epochs") : args.index("--epochs") + 2]
    wall = step("train_model", short, "--threads", str(threads), *args, "--epochs", str(epochs), quiet=True)
    step("embedding", short, "--threads", str(threads), quiet=True)
    short_card = json.loads((short.model / "model.json").read_text())
    _, emb = read_embeddings(short.embeddings)
    return {
        "epochs": epochs,
        "train_seconds": short_card["timing"]["train_seconds"],
        "train_model_wall_seconds": wall,
        "test_nn1_accuracy": _accuracy(emb),
    }


def other_seed_run(name: str, workdir: Path, threads: int, recipe: dict[str, Any], seed: int) -> dict[str, Any]:
    """train_model + embedding again on the same data set with another --seed; its accuracy and wall time."""
    other = sibling_run(name, workdir, f"seed{seed}")
    wall = step("train_model", other, "--threads", str(threads), *recipe["args"], "--seed", str(seed), quiet=True)
    step("embedding", other, "--threads", str(threads), quiet=True)
    _, emb = read_embeddings(other.embeddings)
    accuracy = _accuracy(emb)
    print(f"[bench] {name} seed {seed}: {accuracy:.4f} (train_model {wall:.1f} s)", file=sys.stderr, flush=True)
    return {"seed": seed, "test_nn1_accuracy": accuracy, "train_model_wall_seconds": wall}


def _accuracy(emb: dict[str, Any]) -> float:
    """1-NN test accuracy with the train split as the gallery, from published embeddings."""
    return nn1_accuracy(
        torch.from_numpy(emb["train"].vectors),
        torch.from_numpy(emb["train"].labels),
        torch.from_numpy(emb["test"].vectors),
        torch.from_numpy(emb["test"].labels),
    )


def bench_dataset(name: str, workdir: Path, threads: int) -> dict[str, Any]:
    recipe = RECIPES[name]
    paths = RunPaths(f"bench-{name}", workdir / "data", workdir / "model", workdir / "deploy")
    source = ["--source", str(FASHION_SOURCE)] if name == "fashion-mnist" else []
    preprocess_s = step("preprocess", paths, "--dataset", name, *source, quiet=True)
    _, train = read_split(paths.dataset, "train")
    _, test = read_split(paths.dataset, "test")
    print(f"[bench] {name}: {len(train)} train, {len(test)} test images", file=sys.stderr, flush=True)

    original = run_original(train.images, train.labels, test.images, test.labels, threads)
    print(
        f"[bench] {name} original: {original['test_nn1_accuracy']:.4f} after {original['train_seconds']:.1f} s",
        file=sys.stderr,
        flush=True,
    )

    train_model_s = step("train_model", paths, "--threads", str(threads), *recipe["args"])
    embedding_s = step("embedding", paths, "--threads", str(threads))
    card = json.loads((paths.model / "model.json").read_text())
    emb_manifest, emb = read_embeddings(paths.embeddings)
    accuracy = _accuracy(emb)
    curve = curve_of_ours(paths, card, train.images, train.labels, test.images, test.labels)
    reached = [c for c in curve if c["test_nn1_accuracy"] >= original["test_nn1_accuracy"]]
    train_images_seen = sum(e["images_per_second"] * e["train_seconds"] for e in card["epochs"])
    train_s = card["timing"]["train_seconds"]
    ours = {
        "recipe": f"train_model defaults {' '.join(recipe['args'])}".strip(),
        "config": card["config"],
        "architecture": card["architecture"],
        "train_model_wall_seconds": train_model_s,
        "train_seconds": train_s,
        "validation_seconds": card["timing"]["val_seconds"],
        "images_per_second": train_images_seen / train_s,
        "forward_flops_per_image": card["forward_flops_per_image"],
        "training_flops_per_image": card["training_flops_per_image"],
        "precision": card["config"]["precision"],
        "achieved_gflops": card["training_flops_per_image"] * train_images_seen / train_s / 1e9,
        "best_epoch": card["best_epoch"],
        "test_nn1_accuracy": accuracy,
        "embedding_wall_seconds": embedding_s,
        "embedding_images_per_second": emb_manifest.meta["images_per_second"],
        "preprocess_wall_seconds": preprocess_s,
        "epochs": curve,
    }
    seeds = [{"seed": recipe["seeds"][0], "test_nn1_accuracy": accuracy, "train_model_wall_seconds": train_model_s}]
    seeds += [other_seed_run(name, workdir, threads, recipe, seed) for seed in recipe["seeds"][1:]]
    mean_accuracy = float(np.mean([r["test_nn1_accuracy"] for r in seeds]))
    mean_wall = float(np.mean([r["train_model_wall_seconds"] for r in seeds]))
    ours["seeds"] = seeds
    ours["mean_test_nn1_accuracy"] = mean_accuracy
    ours["mean_train_model_wall_seconds"] = mean_wall
    time_to = reached[0] if reached else None
    budget = same_budget_run(name, workdir, threads, recipe, card, original["train_seconds"])
    result = {
        "train_size": len(train),
        "test_size": len(test),
        "original": original,
        "ours": ours,
        "ratio_ours_over_original": {
            "test_nn1_accuracy": accuracy / original["test_nn1_accuracy"],
            "test_error": (1 - accuracy) / max(1e-9, 1 - original["test_nn1_accuracy"]),
            "train_seconds": train_s / original["train_seconds"],
            "images_per_second": ours["images_per_second"] / original["images_per_second"],
            "achieved_gflops": ours["achieved_gflops"] / original["achieved_gflops"],
        },
        "time_to_original_accuracy": {
            "target": original["test_nn1_accuracy"],
            "note": "first epoch of our run whose checkpoint reaches the target (one-cycle schedule still running)",
            "epoch": time_to["epoch"] if time_to else None,
            "train_seconds": time_to["cumulative_train_seconds"] if time_to else None,
            "train_and_validation_seconds": time_to["cumulative_train_and_validation_seconds"] if time_to else None,
            "original_train_seconds": original["train_seconds"],
        },
        "same_time_budget": budget,
    }
    result["targets"] = {
        "min_test_nn1_accuracy": recipe["min_accuracy"],
        "accuracy_of": f"mean of seeds {', '.join(map(str, recipe['seeds']))}",
        "accuracy_met": mean_accuracy >= recipe["min_accuracy"],
        "max_train_model_seconds": recipe["max_train_model_seconds"],
        "time_met": mean_wall <= recipe["max_train_model_seconds"],
        "time_to_original_accuracy_met": bool(time_to)
        and time_to["cumulative_train_seconds"] <= original["train_seconds"],
        "same_time_budget_beats_original": budget is not None
        and budget["test_nn1_accuracy"] >= original["test_nn1_accuracy"]
        and budget["train_seconds"] <= original["train_seconds"],
    }
    print(
        f"[bench] {name} ours: {accuracy:.4f} (train_model {train_model_s:.1f} s); original "
        f"{original['test_nn1_accuracy']:.4f} ({original['train_seconds']:.1f} s)",
        file=sys.stderr,
        flush=True,
    )
    return result


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--quick", action="store_true", help="mnist-5k only")
    p.add_argument("--threads", type=int, default=2, help="torch threads for every run (default: %(default)s)")
    p.add_argument("--workdir", type=Path, default=ROOT.parent / "scratch" / "bench", help="where the runs write")
    p.add_argument("--out", type=Path, default=ROOT / "results" / "train.json", help="the results file")
    args = p.parse_args(argv)
    datasets = ["mnist-5k"] if args.quick else ["mnist-5k", "fashion-mnist"]
    if "fashion-mnist" in datasets and not FASHION_SOURCE.is_dir():
        p.error(f"{FASHION_SOURCE} not found: apt-get install dataset-fashion-mnist, or use --quick")
    started = time.time()
    gflops_before = matmul_gflops(args.threads)
    results = {name: bench_dataset(name, args.workdir, args.threads) for name in datasets}
    gflops_after = matmul_gflops(args.threads)
    matmul = max(gflops_before, gflops_after)
    bf16_matmul = matmul_gflops(args.threads, dtype=torch.bfloat16)
    peaks = {"fp32": matmul, "bf16": bf16_matmul}
    for r in results.values():
        for who in ("original", "ours"):
            # Against the matrix product of the precision it trained in (bf16 autocast: its convs and linears).
            r[who]["matmul_peak_gflops"] = peaks[r[who]["precision"]]
            r[who]["fraction_of_matmul_peak"] = r[who]["achieved_gflops"] / peaks[r[who]["precision"]]
    report = {
        "command": " ".join(["python", "bench/train.py", *(argv if argv is not None else sys.argv[1:])]),
        "date": time.strftime("%Y-%m-%dT%H:%M:%S%z", time.localtime(started)),
        "wall_seconds": time.time() - started,
        "machine": {
            "cpu": _cpu_name(),
            "cores_available": len(os.sched_getaffinity(0)),
            "threads": args.threads,
            "load_average_at_end": os.getloadavg(),
            "torch": torch.__version__,
            "python": platform.python_version(),
        },
        "matmul_fp32_gflops": {"n": 1024, "before": gflops_before, "after": gflops_after, "used": matmul},
        "matmul_bf16_gflops": bf16_matmul,
        "flops_note": "achieved GFLOP/s = training FLOPs per image x images/s. Training FLOPs: forward and "
        "backward of every conv and linear layer (ArcFace's included), from the layer shapes, 2 per multiply-add; "
        "the backward is a weight gradient and an input gradient per layer (as many FLOPs as its forward each), "
        "but no input gradient for the first layer (train_model.model.training_flops; equal to torch's "
        "FlopCounterMode on a real step, a test checks). BatchNorm, pooling, activations and the optimizer are "
        "not counted. Compared with a 1024^3 matrix product timed in the same run at the precision the recipe "
        "trains in: ours bf16 autocast (where the CPU has AVX512-BF16/AMX), the original fp32.",
        "datasets": results,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    tmp = args.out.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(report, indent=2) + "\n")
    tmp.replace(args.out)
    print(f"[bench] wrote {args.out}", file=sys.stderr)
    return 0


def _cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor()


if __name__ == "__main__":
    raise SystemExit(main())
