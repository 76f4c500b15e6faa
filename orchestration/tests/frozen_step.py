"""Run one mnist-ct step that stops itself (SIGSTOP) at a chosen moment of publishing, for the fault suite.

    <step venv>/bin/python frozen_step.py POINT[,POINT...] STEP [step arguments...]

The test waits until the process is stopped, looks at what is on disk while it is frozen there, then
SIGKILLs it, as a node failure or an OOM kill would, or lets it go on (SIGCONT) to its next point.
Each point stops the step once, the first time it is reached. The points are the moments of
mnist_ct.artifacts' publish (and deploy's live archive) where a kill could leave a partial artifact:

- writing:   a file is being written into the hidden `.<name>.staging-*` folder (created, still empty)
- manifest:  every file written and fsynced, manifest.json not yet written
- rename:    manifest written, the staging folder not yet renamed into place (when replacing an older
             artifact, that one has already been moved aside to `.<name>.old-*`)
- live:      deploy: the new archive fully written to `.<model>.mar.tmp-*`, not yet renamed over the live one

The step runs unchanged otherwise (its own `main`, its own venv); only these calls are wrapped.
"""

from __future__ import annotations

import builtins
import importlib
import io
import os
import signal
import sys
from collections.abc import Callable
from pathlib import Path


def freeze() -> None:
    os.kill(os.getpid(), signal.SIGSTOP)


def once(stop: Callable[[], None]) -> Callable[[], None]:
    """`stop`, the first time only."""
    done: list[bool] = []

    def first() -> None:
        if not done:
            done.append(True)
            stop()

    return first


def staged(path: object) -> bool:
    """Whether `path` lies in a publish staging folder."""
    if not isinstance(path, (str, bytes, os.PathLike)):
        return False  # a file descriptor
    return any(".staging-" in part for part in Path(os.fsdecode(path)).parts)


def arm(point: str) -> None:
    import mnist_ct.artifacts.manifest as manifest

    stop = once(freeze)
    if point == "writing":
        real_open = io.open

        def open_(file, mode="r", *args, **kwargs):
            f = real_open(file, mode, *args, **kwargs)
            if set(mode) & set("wax") and staged(file):
                stop()
            return f

        builtins.open = io.open = open_
    elif point == "manifest":
        real_write = manifest.atomic_write_bytes

        def write(path, data):
            if Path(path).name == manifest.MANIFEST and staged(Path(path).parent):
                stop()
            return real_write(path, data)

        manifest.atomic_write_bytes = write
    elif point == "rename":
        real_rename = os.rename

        def rename(src, dst, *args, **kwargs):
            if ".staging-" in Path(os.fsdecode(src)).name:
                stop()
            return real_rename(src, dst, *args, **kwargs)

        os.rename = rename
    elif point == "live":
        real_replace = os.replace

        def replace(src, dst, *args, **kwargs):
            dst_path = Path(os.fsdecode(dst))
            if dst_path.parent.name == "model-store" and dst_path.suffix == ".mar":
                stop()
            return real_replace(src, dst, *args, **kwargs)

        os.replace = replace
    else:
        raise SystemExit(f"frozen_step.py: unknown point {point!r}")


def main() -> int:
    points, step, *argv = sys.argv[1:]
    for point in points.split(","):
        arm(point)
    return importlib.import_module(f"mnist_ct.{step}.__main__").main(argv)


if __name__ == "__main__":
    raise SystemExit(main())
