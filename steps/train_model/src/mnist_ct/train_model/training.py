"""The training recipe and loop: hold-out split, one-cycle schedule, per-epoch validation, early stop, resume."""

from __future__ import annotations

import contextlib
import math
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from mnist_ct.artifacts import ArtifactError, UsageError

from .augment import Augmentation, random_affine
from .checkpoints import (
    STATE_FILE,
    BackgroundWriter,
    discard,
    epoch_checkpoint,
    fingerprint,
    load_checkpoint,
    refused_as_damaged,
    remove_unfinished,
    resumable_epoch,
)
from .hardware import COMPUTE_PRECISIONS, PRECISIONS
from .model import ArcFace, Architecture, EmbeddingNet, channels_last
from .optim import AdamW


@dataclass(frozen=True)
class TrainConfig:
    """Everything that decides the trained weights (device and threads aside)."""

    epochs: int = 12
    batch_size: int = 256
    lr: float = 6e-3  # peak of the one-cycle schedule
    weight_decay: float = 5e-4
    warmup: float = 0.15  # fraction of all steps spent warming up
    embedding_dim: int = 64
    widths: tuple[int, int, int] = (32, 64, 128)
    blocks: tuple[int, int, int] = (1, 1, 1)
    margin: float = 0.5
    scale: float = 32.0
    label_smoothing: float = 0.0
    augmentation: Augmentation = field(default_factory=Augmentation)
    seed: int = 0
    val_fraction: float = 0.0  # the one-cycle schedule ends at its best; analysis measures on the test split
    val_gallery: int = 5000  # at most this many training images form the 1-NN gallery for validation
    patience: int = 0  # stop after this many epochs without a better validation 1-NN accuracy; 0: never
    precision: str = "fp32"  # of training's forward pass: fp32, bf16 (autocast; weights stay fp32), or auto

    def __post_init__(self) -> None:
        """Rules across fields (each option's range is checked when it is parsed)."""
        if len(self.widths) != 3 or len(self.blocks) != 3 or min(*self.widths, *self.blocks) < 1:
            raise UsageError(f"--widths {self.widths} / --blocks {self.blocks}: three positive integers each")
        if self.precision not in PRECISIONS:
            raise UsageError(f"--precision {self.precision!r}: choose auto, fp32 or bf16")
        if self.patience and not self.val_fraction:
            raise UsageError(
                f"--patience {self.patience} stops on validation accuracy, but --val-fraction 0 holds none out; "
                "give --val-fraction > 0 or --patience 0"
            )
        if self.val_gallery < 1:
            raise UsageError(f"val_gallery {self.val_gallery}: at least one gallery image")

    @property
    def architecture(self) -> Architecture:
        return Architecture(widths=self.widths, blocks=self.blocks, embedding_dim=self.embedding_dim)

    def to_json(self) -> dict[str, Any]:
        d = asdict(self)
        d["widths"] = list(self.widths)
        d["blocks"] = list(self.blocks)
        return d


@dataclass
class EpochMetrics:
    epoch: int
    lr: float
    loss: float
    train_accuracy: float  # ArcFace logits (without margin) on the augmented training batches
    val_accuracy: float  # ArcFace logits: nearest class centre
    val_nn1_accuracy: float  # 1-nearest-neighbour against (part of) the training part
    train_seconds: float  # this epoch's optimisation time, validation excluded
    val_seconds: float
    images_per_second: float

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class TrainResult:
    net: EmbeddingNet  # the best epoch's weights, eval mode, on the CPU
    history: list[EpochMetrics]
    best_epoch: int
    stopped_early: bool
    resumed_from: int  # last epoch loaded from a checkpoint (0: none)
    train_size: int
    val_size: int


def holdout_split(labels: np.ndarray, fraction: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Stratified random split of the indices into (train, validation); each class keeps `fraction` aside."""
    rng = np.random.default_rng(seed)
    train, val = [], []
    for c in np.unique(labels):
        idx = np.flatnonzero(labels == c)
        rng.shuffle(idx)
        k = int(round(len(idx) * fraction))
        if fraction > 0 and len(idx) > 1:
            k = min(max(k, 1), len(idx) - 1)
        val.append(idx[:k])
        train.append(idx[k:])
    none = np.empty(0, dtype=np.int64)
    return np.sort(np.concatenate([none, *train])), np.sort(np.concatenate([none, *val]))


def lr_at(step: int, total: int, peak: float, warmup: float) -> float:
    """One-cycle: linear warm-up from peak/25 to peak, then cosine down to peak/1e4 at the last step."""
    warm = max(1, int(total * warmup))
    if step < warm:
        return peak / 25 + (peak - peak / 25) * step / warm
    t = (step - warm) / max(1, total - warm)
    return peak / 1e4 + (peak - peak / 1e4) * 0.5 * (1 + math.cos(math.pi * min(t, 1.0)))


def to_input(images: torch.Tensor, device: torch.device) -> torch.Tensor:
    """uint8 [N,28,28] -> float32 [N,1,28,28] in [0,1] on `device`, channels-last for faster convolutions."""
    x = images.to(device, non_blocking=True).unsqueeze(1).float().div_(255)
    return x.contiguous(memory_format=torch.channels_last)


@torch.no_grad()
def embed(net: EmbeddingNet, images: torch.Tensor, device: torch.device, batch_size: int = 1024) -> torch.Tensor:
    """L2-normalised embeddings of uint8 images [N,28,28] (eval mode), on the CPU."""
    net.eval()
    out = [
        F.normalize(net(to_input(images[i : i + batch_size], device)).float(), dim=1).cpu()
        for i in range(0, len(images), batch_size)
    ]
    return torch.cat(out) if out else torch.empty(0, net.arch.embedding_dim)


def nn1_accuracy(
    gallery: torch.Tensor,
    gallery_labels: torch.Tensor,
    queries: torch.Tensor,
    query_labels: torch.Tensor,
    batch_size: int = 2048,
) -> float:
    """Accuracy of classifying each query by the label of its most similar (cosine) gallery item."""
    if len(queries) == 0:
        return float("nan")
    correct = 0
    for i in range(0, len(queries), batch_size):
        nearest = (queries[i : i + batch_size] @ gallery.T).argmax(1)
        correct += int((gallery_labels[nearest] == query_labels[i : i + batch_size]).sum())
    return correct / len(queries)


@dataclass(frozen=True)
class _Split:
    """uint8 images and int64 labels: the training part, its 1-NN gallery for validation, and the hold-out."""

    x_train: torch.Tensor
    y_train: torch.Tensor
    x_gallery: torch.Tensor
    y_gallery: torch.Tensor
    x_val: torch.Tensor
    y_val: torch.Tensor


class Trainer:
    """Trains `EmbeddingNet` + `ArcFace` on uint8 images, checkpointing every epoch into `checkpoints`."""

    def __init__(
        self,
        config: TrainConfig,
        device: torch.device,
        checkpoints: Path,
        data_digest: str,
        progress: Callable[[Iterable[Any], int, str], Iterator[Any]] | None = None,
        log: Callable[[str], None] = lambda _: None,
    ) -> None:
        self.config = config
        if config.precision not in COMPUTE_PRECISIONS:
            raise UsageError(f"precision {config.precision!r}: resolve 'auto' with resolve_precision() first")
        self.device = device
        self.checkpoints = Path(checkpoints)
        self.data_digest = data_digest
        self.progress = progress or (lambda items, total, desc: iter(items))
        self.log = log
        self.val_size = 0

    def _build(self) -> tuple[EmbeddingNet, ArcFace, AdamW]:
        c = self.config
        torch.manual_seed(c.seed)
        net = channels_last(EmbeddingNet(c.architecture), self.device)
        head = ArcFace(c.embedding_dim, scale=c.scale, margin=c.margin).to(self.device)
        decay: list[nn.Parameter] = []
        no_decay: list[nn.Parameter] = []
        for module in (net, head):
            for p in module.parameters():
                (no_decay if p.ndim == 1 else decay).append(p)  # no weight decay on BatchNorm and biases
        opt = AdamW(
            [{"params": decay, "weight_decay": c.weight_decay}, {"params": no_decay, "weight_decay": 0.0}],
            lr=c.lr,
            betas=(0.9, 0.99),
        )
        return net, head, opt

    def _fingerprint(self) -> dict[str, Any]:
        return fingerprint(self.config.to_json(), self.data_digest)

    def _resume(self, net: EmbeddingNet, head: ArcFace, opt: AdamW) -> tuple[int, list[EpochMetrics]]:
        state_path = self.checkpoints / STATE_FILE
        if not state_path.exists():
            self.log(f"resume: no checkpoint in {self.checkpoints}; starting from epoch 1")
            return 0, []
        state = load_checkpoint(state_path)
        epoch = resumable_epoch(state_path, state, self._fingerprint())
        weights_path = epoch_checkpoint(self.checkpoints, epoch)
        weights = load_checkpoint(weights_path)
        with refused_as_damaged(weights_path):
            net.load_state_dict(weights["net"])
            head.load_state_dict(weights["head"])
        with refused_as_damaged(state_path):
            opt.load_state_dict(state["optimizer"])
            history = [EpochMetrics(**h) for h in state["history"]]
            if [h.epoch for h in history] != list(range(1, epoch + 1)):
                raise ValueError(f"its history holds epochs {[h.epoch for h in history]}, not 1..{epoch}")
        self.log(f"resume: continuing after epoch {epoch} from {state_path}")
        return epoch, history

    def fit(self, images: np.ndarray, labels: np.ndarray, resume: bool = False) -> TrainResult:
        c = self.config
        train_idx, val_idx = holdout_split(labels, c.val_fraction, c.seed)
        self.val_size = len(val_idx)
        if len(train_idx) < 2:
            raise ArtifactError(
                f"only {len(train_idx)} training images after holding out --val-fraction {c.val_fraction:g} of each "
                "class; training needs at least 2: lower --val-fraction or give more data"
            )
        all_images = torch.from_numpy(np.array(images, dtype=np.uint8))  # a copy: the input may be read-only
        all_labels = torch.from_numpy(np.asarray(labels, dtype=np.int64))
        x_train, y_train = all_images[train_idx], all_labels[train_idx]
        x_val, y_val = all_images[val_idx], all_labels[val_idx]
        rng = np.random.default_rng(c.seed + 1)
        g_idx = np.sort(rng.permutation(len(train_idx))[: c.val_gallery])
        x_gallery, y_gallery = x_train[g_idx], y_train[g_idx]

        net, head, opt = self._build()
        start, history = 0, list[EpochMetrics]()
        if resume:
            start, history = self._resume(net, head, opt)
        else:
            discard(self.checkpoints)
        remove_unfinished(self.checkpoints)
        self.checkpoints.mkdir(parents=True, exist_ok=True)

        batch = min(c.batch_size, len(train_idx))
        writer = BackgroundWriter()
        try:
            split = _Split(x_train, y_train, x_gallery, y_gallery, x_val, y_val)
            stopped_early, kept = self._epochs(net, head, opt, writer, history, start, batch, split)
        except BaseException:
            with contextlib.suppress(BaseException):
                writer.close()  # the error that stopped training is the one to report
            raise
        writer.close()

        best = self.best_epoch(history, self.val_size)
        final = EmbeddingNet(c.architecture)
        if kept is not None and kept[0] == best:
            final.load_state_dict(kept[1])
        else:  # the best epoch is one a resumed run loaded, not one it trained
            best_path = epoch_checkpoint(self.checkpoints, best)
            with refused_as_damaged(best_path):
                final.load_state_dict(load_checkpoint(best_path)["net"])
        final = self._recalibrate_batchnorm(final, x_train)
        return TrainResult(final, history, best, stopped_early, start, len(train_idx), len(val_idx))

    @torch.no_grad()
    def _recalibrate_batchnorm(self, net: EmbeddingNet, images: torch.Tensor, batch_size: int = 512) -> EmbeddingNet:
        """`net` in eval mode on the CPU, its BatchNorm statistics measured anew on the clean training images.

        Training averaged them over augmented batches while the weights still moved; inference sees clean
        digits through the final weights. One forward pass over the training part (mnist-5k: +0.08 point of
        test 1-NN accuracy on average over six runs, never less; bench/README.md).
        """
        net = channels_last(net, self.device)
        for module in net.modules():
            if isinstance(module, nn.modules.batchnorm._BatchNorm):
                module.reset_running_stats()
                module.momentum = None  # an equal-weight average of the batches' statistics, not a decaying one
        net.train()
        with torch.autocast(self.device.type, dtype=torch.bfloat16, enabled=self.config.precision == "bf16"):
            for chunk in torch.split(images, batch_size):
                if len(chunk) > 1:  # BatchNorm needs two; a last single image is left out
                    net(to_input(chunk, self.device))
        return net.eval().cpu()

    def _epochs(
        self,
        net: EmbeddingNet,
        head: ArcFace,
        opt: AdamW,
        writer: BackgroundWriter,
        history: list[EpochMetrics],
        start: int,
        batch: int,
        data: _Split,
    ) -> tuple[bool, tuple[int, dict[str, torch.Tensor]] | None]:
        """Train epochs start+1.. into `history`; (stopped early, (epoch, weights) of the best epoch trained here)."""
        c = self.config
        steps_per_epoch = len(data.x_train) // batch  # the last partial batch is dropped (BatchNorm needs > 1)
        total = steps_per_epoch * c.epochs
        kept: tuple[int, dict[str, torch.Tensor]] | None = None
        stopped_early = self._patience_exhausted(history) and start < c.epochs
        for epoch in range(start + 1, c.epochs + 1):
            if stopped_early:
                break
            # Each epoch's randomness derives from (seed, epoch) only, so a resumed run repeats it exactly.
            gen = torch.Generator().manual_seed(c.seed * 1_000_003 + epoch)
            torch.manual_seed(c.seed * 1_000_003 + epoch)  # anything drawing from the global generator too
            t0 = time.perf_counter()
            order = torch.randperm(len(data.x_train), generator=gen)[: steps_per_epoch * batch]
            # The whole epoch converted and warped at once: one grid_sample call, not one per batch.
            x_epoch = random_affine(to_input(data.x_train[order], self.device), c.augmentation, gen)
            x_epoch = x_epoch.contiguous(memory_format=torch.channels_last)
            y_epoch = data.y_train[order].to(self.device, non_blocking=True)
            net.train()
            head.train()
            loss_sum = torch.zeros((), device=self.device)
            correct = torch.zeros((), device=self.device, dtype=torch.long)
            lr = c.lr
            for i in self.progress(range(steps_per_epoch), steps_per_epoch, f"epoch {epoch}/{c.epochs}"):
                lr = lr_at((epoch - 1) * steps_per_epoch + i, total, c.lr, c.warmup)
                for group in opt.param_groups:
                    group["lr"] = lr
                x, y = x_epoch[i * batch : (i + 1) * batch], y_epoch[i * batch : (i + 1) * batch]
                with torch.autocast(self.device.type, dtype=torch.bfloat16, enabled=c.precision == "bf16"):
                    emb = net(x)
                logits = head(emb.float(), y)
                loss = F.cross_entropy(logits, y, label_smoothing=c.label_smoothing)
                opt.zero_grad()
                loss.backward()
                opt.step()
                loss_sum += loss.detach() * len(y)
                with torch.no_grad():
                    correct += (head.cosine(emb.detach().float()).argmax(1) == y).sum()
            seen = steps_per_epoch * batch
            if self.device.type == "cuda":
                torch.cuda.synchronize()
            train_seconds = time.perf_counter() - t0

            t1 = time.perf_counter()
            val_acc, val_nn1 = self._validate(net, head, data)
            metrics = EpochMetrics(
                epoch=epoch,
                lr=lr,
                loss=float(loss_sum) / max(seen, 1),
                train_accuracy=int(correct) / max(seen, 1),
                val_accuracy=val_acc,
                val_nn1_accuracy=val_nn1,
                train_seconds=train_seconds,
                val_seconds=time.perf_counter() - t1,
                images_per_second=seen / train_seconds if train_seconds > 0 else float("nan"),
            )
            if not math.isfinite(metrics.loss):
                # Checked before the checkpoint, so --resume would start again from the last finite epoch.
                raise ArtifactError(
                    f"training diverged: the loss is {metrics.loss} in epoch {epoch}; nothing was published. "
                    f"Lower --lr ({c.lr:g}) or --scale ({c.scale:g})"
                )
            history.append(metrics)
            weights = self._checkpoint(writer, epoch, net, head, opt, history)
            best = self.best_epoch(history, self.val_size)
            if best == epoch:
                kept = (epoch, weights)
            self.log(
                f"epoch {epoch}/{c.epochs}: loss {metrics.loss:.4f}, train acc {metrics.train_accuracy:.4f}, "
                f"val acc {val_acc:.4f}, val 1-NN {val_nn1:.4f}, {train_seconds:.1f} s "
                f"({metrics.images_per_second:.0f} img/s), best epoch {best}"
            )
            stopped_early = self._patience_exhausted(history) and epoch < c.epochs
            if stopped_early:
                self.log(f"early stop: no better validation 1-NN accuracy for {c.patience} epochs")
        return stopped_early, kept

    def _validate(self, net: EmbeddingNet, head: ArcFace, data: _Split) -> tuple[float, float]:
        if len(data.x_val) == 0:
            return float("nan"), float("nan")
        head.eval()
        # Validation runs at the training precision: with bf16 it is 3x faster on this CPU (8,000 images:
        # 1.3 s against 4.4 s in fp32), and it only ranks epochs. Embeddings come back as fp32 either way.
        with torch.autocast(self.device.type, dtype=torch.bfloat16, enabled=self.config.precision == "bf16"):
            q = embed(net, data.x_val, self.device, batch_size=512)
            g = embed(net, data.x_gallery, self.device, batch_size=512)
        with torch.no_grad():
            val_acc = float((head.cosine(q.to(self.device)).argmax(1).cpu() == data.y_val).float().mean())
        return val_acc, nn1_accuracy(g, data.y_gallery, q, data.y_val)

    def _checkpoint(
        self,
        writer: BackgroundWriter,
        epoch: int,
        net: EmbeddingNet,
        head: ArcFace,
        opt: AdamW,
        history: list[EpochMetrics],
    ) -> dict[str, torch.Tensor]:
        """Hand copies of this epoch's weights, then of the state that points at them, to the writer; the weights.

        Weights first: a kill in between only repeats this epoch.
        """
        copy = lambda sd: {k: v.detach().to("cpu", copy=True) for k, v in sd.items()}  # noqa: E731
        weights = copy(net.state_dict())
        writer.submit(
            epoch_checkpoint(self.checkpoints, epoch), {"epoch": epoch, "net": weights, "head": copy(head.state_dict())}
        )
        writer.submit(
            self.checkpoints / STATE_FILE,
            {
                "epoch": epoch,
                "fingerprint": self._fingerprint(),
                "optimizer": opt.state_dict(),
                "history": [h.to_json() for h in history],
            },
        )
        return weights

    @staticmethod
    def best_epoch(history: list[EpochMetrics], val_size: int = 0) -> int:
        """The epoch with the highest validation 1-NN accuracy; no validation: the last epoch.

        A later epoch counts as just as good when it is within the noise of that accuracy (two standard
        errors on `val_size` images, at least one image): then the later epoch, trained further at a lower
        learning rate, wins. So an epoch is kept over the last one only when it is measurably better.
        """
        scores = [0.0 if math.isnan(h.val_nn1_accuracy) else h.val_nn1_accuracy for h in history]
        top = max(scores)
        tolerance = max(1.0, 2.0 * math.sqrt(top * (1 - top) * val_size)) / val_size if val_size else 0.0
        return max(h.epoch for h, s in zip(history, scores, strict=True) if s >= top - tolerance - 1e-12)

    def _patience_exhausted(self, history: list[EpochMetrics]) -> bool:
        """True once the best validation 1-NN accuracy has not risen for `patience` epochs."""
        if not self.config.patience or not history:
            return False
        scores = [0.0 if math.isnan(h.val_nn1_accuracy) else h.val_nn1_accuracy for h in history]
        last_rise = max(i for i, s in enumerate(scores) if s > max(scores[:i], default=-1.0))
        return len(scores) - 1 - last_rise >= self.config.patience
