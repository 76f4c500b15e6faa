"""python -m mnist_ct.train_model: the parser; the step itself is step.run."""

from __future__ import annotations

import argparse
from collections.abc import Callable
from dataclasses import replace

from mnist_ct.artifacts import (
    KfpOutputs,
    add_kfp_arguments,
    add_run_arguments,
    add_threads_argument,
    bounded_float,
    bounded_int,
    seed_value,
    step_main,
)

from .augment import Augmentation
from .hardware import DEVICES, PRECISIONS, resolve_device
from .step import ARTIFACTS, STEP, Options, run
from .training import TrainConfig

DEFAULTS = TrainConfig()
MAX_EPOCHS = 10_000
MAX_BATCH = 65_536
MAX_LR = 10.0
MAX_EMBEDDING_DIM = 4096
MAX_WIDTH = 1024  # channels of a stage
MAX_BLOCKS = 16  # conv layers of a stage
MAX_MARGIN = 1.6  # radians, exclusive: past about pi/2 the margin leaves no angle to learn in


def triple(name: str, high: int) -> Callable[[str], tuple[int, int, int]]:
    """argparse type: three comma-separated integers, each from 1 to `high`."""

    def parse(text: str) -> tuple[int, int, int]:
        parts = text.split(",")
        try:
            values = [int(v) for v in parts]
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected three comma-separated integers, got {text!r}") from None
        if len(values) != 3 or not all(1 <= v <= high for v in values):
            raise argparse.ArgumentTypeError(f"expected three {name}, each from 1 to {high}, got {text!r}")
        return values[0], values[1], values[2]

    return parse


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
    t.add_argument(
        "--epochs",
        type=bounded_int(1, MAX_EPOCHS),
        default=DEFAULTS.epochs,
        help=f"passes over the training part, 1..{MAX_EPOCHS}",
    )
    t.add_argument(
        "--batch-size",
        type=bounded_int(2, MAX_BATCH),
        default=DEFAULTS.batch_size,
        help=f"images per optimisation step, 2..{MAX_BATCH} (BatchNorm needs 2)",
    )
    t.add_argument(
        "--lr",
        type=bounded_float(0, MAX_LR, low_open=True),
        default=DEFAULTS.lr,
        help=f"peak learning rate of the one-cycle schedule, in (0, {MAX_LR:g}]",
    )
    t.add_argument(
        "--weight-decay", type=bounded_float(0), default=DEFAULTS.weight_decay, help="AdamW weight decay, >= 0"
    )
    t.add_argument(
        "--embedding-dim",
        type=bounded_int(2, MAX_EMBEDDING_DIM),
        default=DEFAULTS.embedding_dim,
        help=f"embedding size D, 2..{MAX_EMBEDDING_DIM}",
    )
    t.add_argument(
        "--widths",
        type=triple("channel counts", MAX_WIDTH),
        default=",".join(map(str, DEFAULTS.widths)),
        metavar="C1,C2,C3",
        help=f"channels of the three conv stages, each 1..{MAX_WIDTH}",
    )
    t.add_argument(
        "--blocks",
        type=triple("layer counts", MAX_BLOCKS),
        default=",".join(map(str, DEFAULTS.blocks)),
        metavar="B1,B2,B3",
        help=f"conv layers per stage, each 1..{MAX_BLOCKS}",
    )
    t.add_argument(
        "--margin",
        type=bounded_float(0, MAX_MARGIN, high_open=True),
        default=DEFAULTS.margin,
        help=f"ArcFace additive angular margin in radians, in [0, {MAX_MARGIN:g})",
    )
    t.add_argument(
        "--scale", type=bounded_float(0, low_open=True), default=DEFAULTS.scale, help="ArcFace logit scale, > 0"
    )
    t.add_argument(
        "--label-smoothing",
        type=bounded_float(0, 1, high_open=True),
        default=DEFAULTS.label_smoothing,
        help="cross-entropy label smoothing, in [0, 1)",
    )
    t.add_argument("--no-augment", action="store_true", help="train without random shift/rotation/scale")
    t.add_argument("--hflip", action="store_true", help="also mirror half the images left-right (clothes, not digits)")
    t.add_argument(
        "--seed",
        type=seed_value,
        default=DEFAULTS.seed,
        help="seed for init, hold-out split, order, augmentation; 0..2^32-1",
    )
    t.add_argument(
        "--val-fraction",
        type=bounded_float(0, 0.9, high_open=True),
        default=DEFAULTS.val_fraction,
        help="share of each class held out for validation, in [0, 0.9) (0: none; the last epoch is kept)",
    )
    t.add_argument(
        "--patience",
        type=bounded_int(0, MAX_EPOCHS),
        default=DEFAULTS.patience,
        help=f"stop after this many epochs without a better validation 1-NN accuracy, 0..{MAX_EPOCHS} (0: never)",
    )
    t.add_argument(
        "--resume",
        action="store_true",
        help="continue from the last checkpoint in model/runs/R/checkpoints (same options and data required)",
    )
    r = p.add_argument_group("hardware")
    r.add_argument("--device", choices=DEVICES, default="auto", help="auto: cuda if available")
    r.add_argument(
        "--precision",
        choices=PRECISIONS,
        default="auto",
        help="training arithmetic: bf16 autocast (weights stay fp32) or fp32; auto: bf16 where the hardware has "
        "it natively (CUDA, CPUs with AVX512-BF16 or AMX), else fp32. model.pt is always fp32",
    )
    add_threads_argument(r, used_by="torch")
    add_kfp_arguments(p, ARTIFACTS)
    return p


def options_from_args(args: argparse.Namespace) -> Options:
    augmentation = Augmentation(0, 0, 0) if args.no_augment else DEFAULTS.augmentation
    config = TrainConfig(
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
        augmentation=replace(augmentation, hflip=args.hflip),
        seed=args.seed,
        val_fraction=args.val_fraction,
        patience=args.patience,
        precision=args.precision,
    )
    resolve_device(args.device)  # --device cuda without CUDA: refused with the options (run-local checks them too)
    kfp = KfpOutputs.from_args(STEP, ARTIFACTS, args)
    return Options(config=config, device=args.device, threads=args.threads, resume=args.resume, kfp=kfp)


def main(argv: list[str] | None = None) -> int:
    return step_main(STEP, build_parser(), options_from_args, run, argv)


if __name__ == "__main__":
    raise SystemExit(main())
