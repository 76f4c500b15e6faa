"""`mnist-ct compile`: the pipeline over the lock's images, compiled, then checked strictly."""

from __future__ import annotations

import errno
import os
import tempfile
from pathlib import Path

from kfp import compiler

from mnist_ct.orchestration import spec
from mnist_ct.orchestration.checks import check, expected_image, step_versions
from mnist_ct.orchestration.errors import OrchestrationError
from mnist_ct.orchestration.lock import Lock, LockError, find_lock, read_lock
from mnist_ct.orchestration.pipeline import DESCRIPTION, DEV_MARKER, ORDER, build


def load_lock(path: Path | None) -> Lock:
    """The image lock at `path` (None: find_lock's, from the working directory); its problems as
    OrchestrationError (exit 3). lock.py stays standard-library only (the delivery tooling loads it by path),
    so its LockError is turned into ours here."""
    try:
        return read_lock(find_lock() if path is None else path)
    except LockError as e:
        raise OrchestrationError(str(e)) from None


def images(lock: Lock, dev: bool = False) -> dict[str, str]:
    """The image of every step. Strict: `repo@sha256:...`, and an error naming every step that is not
    pinned. Dev: the digest where the lock has one, else `repo:version`."""
    found: dict[str, str] = {}
    problems: list[str] = []
    for step in ORDER:
        try:
            found[step] = expected_image(lock, step, dev)
        except LockError as e:
            problems.append(str(e))
    if problems:
        unpinned = [s for s in ORDER if s not in found]
        hint = "; build and pin them (`nox -s build-changed`), or use `compile --dev` for a local run"
        raise OrchestrationError(
            f"{len(unpinned)} step(s) not pinned by digest in the image lock: {', '.join(unpinned)}{hint}", problems
        )
    return found


def description(lock: Lock, dev: bool) -> str:
    text = f"{DESCRIPTION} Image lock sha256:{lock.content_hash()}."
    return DEV_MARKER + text if dev else text


def compile_pipeline(lock: Lock, output: Path, dev: bool = False) -> spec.CompiledPipeline:
    """Compile to `output` (atomically: a file that fails the checks is never left there)."""
    output = Path(output)
    pipeline_func = build(images(lock, dev), step_versions(lock, dev), description(lock, dev))
    # Refused before kfp compiles anything, naming the path (mkdir would say "File exists").
    if output.parent.exists() and not output.parent.is_dir():
        raise OSError(errno.ENOTDIR, os.strerror(errno.ENOTDIR), str(output.parent))
    if output.is_dir():
        raise OSError(errno.EISDIR, os.strerror(errno.EISDIR), str(output))
    output.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(prefix=f".{output.name}.", suffix=".yaml", dir=output.parent)
    os.close(fd)
    tmp = Path(tmp_name)
    try:
        compiler.Compiler().compile(pipeline_func, str(tmp))
        compiled = verify(tmp, lock, dev, source=str(output))
        os.replace(tmp, output)
        return compiled
    finally:
        tmp.unlink(missing_ok=True)


def verify(path: Path, lock: Lock, dev: bool = False, source: str | None = None) -> spec.CompiledPipeline:
    """Load a compiled pipeline strictly and check it against the design and the lock."""
    compiled = spec.parse(Path(path).read_text(), source or str(path))
    problems = check(compiled, lock, dev)
    if problems:
        raise OrchestrationError(f"{compiled.source}: {len(problems)} departure(s) from the design", problems)
    return compiled
