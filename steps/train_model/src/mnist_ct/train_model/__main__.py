"""python -m mnist_ct.train_model: train the embedding CNN with an ArcFace head; export model.pt + model.json."""

from __future__ import annotations

import argparse
from dataclasses import replace

from mnist_ct.artifacts import Log, UsageError, add_run_arguments, run_paths, run_step, thread_count

from .augment import Augmentation
from .train import STEP, train_step
from .training import TrainConfig

DEFAULTS = TrainConfig()


def _triple(text: str) -> tuple[int, int, int]:
    try:
        values = tuple(int(v) for v in text.split(","))
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected three comma-separated integers, got {text!r}") from None
    if len(values) != 3 or min(values) < 1:
        raise argparse.ArgumentTypeError(f"expected three positive comma-separated integers, got {text!r}")
    return values  # type: ignore[return-value]


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m mnist_ct.train_model",
        description=(
            "Train a CNN that maps a 28x28 digit to an L2-normalised embedding, with an ArcFace head over the "
            "10 classes, on the run's train split (data/runs/R/dataset). Part of the train split is held out to "
            "measure validation accuracy each epoch; the best epoch is exported as model/runs/R/model/model.pt "
            "(TorchScript: float32 [N,1,28,28] in [0,1] -> float32 [N,D], L2-normalised) with model.json."
        ),
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    add_run_arguments(p)
    t = p.add_argument_group("training")
    t.add_argument("--epochs", type=int, default=DEFAULTS.epochs, help="passes over the training part")
    t.add_argument("--batch-size", type=int, default=DEFAULTS.batch_size, help="images per optimisation step")
    t.add_argument("--lr", type=float, default=DEFAULTS.lr, help="peak learning rate of the one-cycle schedule")
    t.add_argument("--weight-decay", type=float, default=DEFAULTS.weight_decay, help="AdamW weight decay")
    t.add_argument("--embedding-dim", type=int, default=DEFAULTS.embedding_dim, help="embedding size D")
    t.add_argument(
        "--widths",
        type=_triple,
        default=",".join(map(str, DEFAULTS.widths)),
        metavar="C1,C2,C3",
        help="channels of the three conv stages",
    )
    t.add_argument(
        "--blocks",
        type=_triple,
        default=",".join(map(str, DEFAULTS.blocks)),
        metavar="B1,B2,B3",
        help="conv layers per stage",
    )
    t.add_argument("--margin", type=float, default=DEFAULTS.margin, help="ArcFace additive angular margin (radians)")
    t.add_argument("--scale", type=float, default=DEFAULTS.scale, help="ArcFace logit scale")
    t.add_argument("--label-smoothing", type=float, default=DEFAULTS.label_smoothing, help="cross-entropy smoothing")
    t.add_argument("--no-augment", action="store_true", help="train without random shift/rotation/scale")
    t.add_argument("--hflip", action="store_true", help="also mirror half the images left-right (clothes, not digits)")
    t.add_argument("--seed", type=int, default=DEFAULTS.seed, help="seed for init, hold-out split, order, augmentation")
    t.add_argument(
        "--val-fraction",
        type=float,
        default=DEFAULTS.val_fraction,
        help="share of each class held out for validation (0: none; the last epoch is kept)",
    )
    t.add_argument(
        "--patience",
        type=int,
        default=DEFAULTS.patience,
        help="stop after this many epochs without a better validation 1-NN accuracy (0: never)",
    )
    t.add_argument(
        "--resume",
        action="store_true",
        help="continue from the last checkpoint in model/runs/R/checkpoints (same options required)",
    )
    r = p.add_argument_group("hardware")
    r.add_argument("--device", choices=("auto", "cpu", "cuda"), default="auto", help="auto: cuda if available")
    r.add_argument(
        "--precision",
        choices=("auto", "fp32", "bf16"),
        default="auto",
        help="training arithmetic: bf16 autocast (weights stay fp32) or fp32; auto: bf16 where the hardware has "
        "it natively (CUDA, CPUs with AVX512-BF16 or AMX), else fp32. model.pt is always fp32",
    )
    r.add_argument("--threads", type=int, default=0, help="CPU threads for torch (0: all cores this process may use)")
    return p


def config_from_args(args: argparse.Namespace) -> TrainConfig:
    checks = [
        (args.epochs >= 1, "--epochs must be at least 1"),
        (args.batch_size >= 2, "--batch-size must be at least 2 (BatchNorm)"),
        (args.lr > 0, "--lr must be positive"),
        (args.weight_decay >= 0, "--weight-decay must not be negative"),
        (args.embedding_dim >= 2, "--embedding-dim must be at least 2"),
        (0 <= args.margin < 1.6, "--margin must be in [0, 1.6) radians"),
        (args.scale > 0, "--scale must be positive"),
        (0 <= args.label_smoothing < 1, "--label-smoothing must be in [0, 1)"),
        (0 <= args.val_fraction < 0.9, "--val-fraction must be in [0, 0.9)"),
        (args.patience >= 0, "--patience must not be negative"),
        (args.threads >= 0, "--threads must not be negative"),
    ]
    for ok, message in checks:
        if not ok:
            raise UsageError(message)
    return TrainConfig(
        epochs=args.epochs,
        batch_size=args.batch_size,
        lr=args.lr,
        weight_decay=args.weight_decay,
        embedding_dim=args.embedding_dim,
        widths=args.widths,
        blocks=args.blocks,
        margin=args.margin,
        scale=args.scale,
        label_smoothing=args.label_smoothing,
        augmentation=replace(Augmentation(0, 0, 0) if args.no_augment else DEFAULTS.augmentation, hflip=args.hflip),
        seed=args.seed,
        val_fraction=args.val_fraction,
        patience=args.patience,
        precision=args.precision,
    )


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)

    def work() -> int:
        config = config_from_args(args)
        threads = thread_count(args.threads)
        train_step(run_paths(args), config, args.device, threads, args.resume, Log(STEP, args.quiet))
        return 0

    return run_step(STEP, work)


if __name__ == "__main__":
    raise SystemExit(main())
