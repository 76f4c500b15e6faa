"""Training checkpoints (not an artifact, only for --resume) in model/runs/R/checkpoints/.

`epoch-NNN.pt` holds the weights after epoch NNN; `state.pt` (optimizer state, history, and a fingerprint
of the options and data) names the last finished epoch. Each file is written whole (a temporary sibling,
then a rename), the weights before the state that names them: a kill or a full disk in between leaves the
previous epoch the last finished one, never a half-written file where a finished one is looked for.
"""

from __future__ import annotations

import io
import queue
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import torch

from mnist_ct.artifacts import ArtifactError, atomic_write_bytes

STATE_FILE = "state.pt"
RESTART = "rerun without --resume to start over"
# Config fields that no option sets (the rest are `--` + the field's name with dashes).
NOT_OPTIONS = {"warmup", "val_gallery", "augmentation"}
AUGMENTATION_RANGES = ("max_shift", "max_rotation", "max_scale")


def epoch_checkpoint(folder: Path, epoch: int) -> Path:
    """The weights after `epoch`."""
    return Path(folder) / f"epoch-{epoch:03d}.pt"


def fingerprint(config: dict[str, Any], data_digest: str) -> dict[str, Any]:
    """What a checkpoint must have been made with to be resumed: the same training options and data."""
    return {"config": config, "data": data_digest}


def discard(folder: Path) -> None:
    """Remove the checkpoints of an earlier attempt (training starts over)."""
    for old in [*folder.glob("epoch-*.pt"), folder / STATE_FILE]:
        old.unlink(missing_ok=True)


def remove_unfinished(folder: Path) -> None:
    """Remove what a killed write left behind: atomic_write_bytes's temporaries `.<name>.tmp-*`, never read."""
    for tmp in folder.glob(".*.pt.tmp-*"):
        tmp.unlink(missing_ok=True)


def save_checkpoint(path: Path, obj: dict[str, Any]) -> None:
    buffer = io.BytesIO()
    torch.save(obj, buffer)
    atomic_write_bytes(path, buffer.getvalue())  # names `path` on OS errors


class BackgroundWriter:
    """Writes checkpoints in order on one background thread, so training does not wait for torch.save and fsync.

    What is submitted must not change afterwards (pass copies). A failed write (a full disk) stops the later
    ones and is raised by the next `submit` or by `close`, which waits for everything submitted.
    """

    def __init__(self) -> None:
        self._queue: queue.Queue[tuple[Path, dict[str, Any]] | None] = queue.Queue()
        self._error: BaseException | None = None
        self._raised = False
        self._thread = threading.Thread(target=self._write, name="checkpoint-writer", daemon=True)
        self._thread.start()

    def submit(self, path: Path, obj: dict[str, Any]) -> None:
        self._raise()
        self._queue.put((path, obj))

    def close(self) -> None:
        if self._thread.is_alive():
            self._queue.put(None)
            self._thread.join()
        self._raise()

    def _write(self) -> None:
        while (item := self._queue.get()) is not None:
            if self._error is None:
                try:
                    save_checkpoint(*item)
                except BaseException as e:  # handed to the training thread
                    self._error = e

    def _raise(self) -> None:
        # Raised once; the error stays set, so nothing queued after the failed write is written.
        if self._error is not None and not self._raised:
            self._raised = True
            raise self._error


def load_checkpoint(path: Path) -> dict[str, Any]:
    """A checkpoint file's dict (weights only: nothing else is unpickled); a damaged one is refused (exit 3)."""
    if not path.exists():
        raise ArtifactError(f"{path}: checkpoint missing, though {path.parent / STATE_FILE} names it; {RESTART}")
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except OSError:
        raise  # a folder in its place, no permission: the entry point says so with the path
    except Exception as e:  # torch.load raises RuntimeError, KeyError, EOFError, UnpicklingError... for a damaged file
        raise ArtifactError(f"{path}: not a readable checkpoint ({e.__class__.__name__}); {RESTART}") from None
    if not isinstance(obj, dict):
        raise ArtifactError(f"{path}: not a checkpoint this step wrote (holds {type(obj).__name__}); {RESTART}")
    return obj


@contextmanager
def refused_as_damaged(path: Path) -> Iterator[None]:
    """A checkpoint that loads but does not fit the model or optimizer is bad input naming the file."""
    try:
        yield
    except (KeyError, TypeError, ValueError, RuntimeError) as e:
        why = f"{e.__class__.__name__}: {(str(e).strip().splitlines() or [''])[0][:200]}"
        raise ArtifactError(f"{path}: a checkpoint this step cannot use ({why}); {RESTART}") from None


def resumable_epoch(path: Path, state: dict[str, Any], expected: dict[str, Any]) -> int:
    """The last finished epoch of `state`, if it was made with the fingerprint `expected`; else exit 3 saying why."""
    saved = state.get("fingerprint")
    if not isinstance(saved, dict) or not isinstance(saved.get("config"), dict):
        raise ArtifactError(f"{path}: not a checkpoint state this step wrote (no fingerprint); {RESTART}")
    changed = option_changes(saved["config"], expected["config"])
    if changed:
        raise ArtifactError(
            f"{path}: the checkpoint was made with other options: {', '.join(changed)}; rerun with the checkpoint's "
            f"options, or {RESTART}"
        )
    if saved.get("data") != expected["data"]:
        was, now = str(saved.get("data"))[:12], expected["data"][:12]
        raise ArtifactError(
            f"{path}: the checkpoint was made on other data (data set manifest sha256 {was}..., now {now}...); "
            + RESTART
        )
    epoch = state.get("epoch")
    if not isinstance(epoch, int) or not 1 <= epoch <= expected["config"]["epochs"]:
        raise ArtifactError(f"{path}: names epoch {epoch!r}, not one of 1..{expected['config']['epochs']}; {RESTART}")
    return epoch


def option_changes(saved: dict[str, Any], now: dict[str, Any]) -> list[str]:
    """Each option whose value differs, as `--lr 0.1 (checkpoint: 0.003)`."""
    saved, now = _as_options(saved), _as_options(now)
    if saved["no_augment"] != now["no_augment"]:
        saved.pop("augmentation", None)  # the ranges differ because one side does not augment at all
        now.pop("augmentation", None)
    changes = []
    for key in sorted(set(saved) | set(now)):
        if saved.get(key) != now.get(key):
            option = key if key in NOT_OPTIONS else "--" + key.replace("_", "-")
            changes.append(f"{option} {_text(now.get(key, 'unset'))} (checkpoint: {_text(saved.get(key, 'unset'))})")
    return changes


def _as_options(config: dict[str, Any]) -> dict[str, Any]:
    """The config as the options that set it: augmentation becomes --no-augment and --hflip."""
    flat = {k: v for k, v in config.items() if k != "augmentation"}
    augmentation = config.get("augmentation")
    augmentation = augmentation if isinstance(augmentation, dict) else {}
    ranges = [augmentation.get(k) for k in AUGMENTATION_RANGES]
    flat["no_augment"] = not any(ranges)
    flat["hflip"] = bool(augmentation.get("hflip"))
    if any(ranges):
        flat["augmentation"] = ranges  # ranges only code sets (shift px, rotation degrees, scale)
    return flat


def _text(value: Any) -> str:
    return ",".join(map(str, value)) if isinstance(value, list) else str(value)
