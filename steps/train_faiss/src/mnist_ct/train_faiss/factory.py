"""The FAISS factory strings train_faiss builds, checked before any data is read.

FAISS's own parser accepts strings it then crashes on: `HNSW0` aborts the process (SIGABRT) and
`HNSW1` segfaults when vectors are added, `PQ8x0` dies of SIGFPE in training, and `IVF0,Flat` trains
but fails every search. So a string is checked three times, each before any data is read:

1. against the grammar below, with the ranges FAISS was measured to work in (`parse_factory`);
2. by building it in a forked child process on a tiny random set (`probe_factory`): if FAISS kills
   the child with a signal, or fails, the user gets one usage line instead of a silent abort;
3. once the embeddings are read, against what depends on the data: the dimension D (a PQ with m
   sub-quantizers needs D divisible by m) and the gallery size N (IVF trains nlist centroids on
   N >= nlist vectors, PQ trains 256 centroids per sub-quantizer on N >= 256) (`FactorySpec.check_fits`).
"""

from __future__ import annotations

import faulthandler
import functools
import math
import os
import re
import select
import signal
import time
from dataclasses import dataclass
from typing import Any

import faiss
import numpy as np

from mnist_ct.artifacts import UsageError

HNSW_M = (2, 256)  # HNSW1 segfaults and HNSW0 aborts in FAISS 1.15; 256 links per node is already huge
LISTS = (1, 65536)  # IVF0 cannot be searched; FAISS suggests 4*sqrt(N)..16*sqrt(N) lists
PQ_M = (1, 256)  # sub-quantizers; each must get at least one dimension
PQ_CENTROIDS = 256  # FAISS's default 8 bits per sub-quantizer code: 256 centroids to train

_NUMBER = r"([0-9]{1,9})"  # [0-9], not \d: \d matches other scripts' digits, which FAISS cannot read
_GRAMMAR = (
    ("flat", re.compile(r"Flat")),
    ("hnsw", re.compile(rf"HNSW{_NUMBER}")),
    ("pq", re.compile(rf"PQ{_NUMBER}")),
    ("ivf_flat", re.compile(rf"IVF{_NUMBER},Flat")),
    ("ivf_pq", re.compile(rf"IVF{_NUMBER},PQ{_NUMBER}")),
    ("opq_ivf_pq", re.compile(rf"OPQ{_NUMBER},IVF{_NUMBER},PQ{_NUMBER}")),
)
SUPPORTED = (
    f"Flat (exact), HNSW<M> (M {HNSW_M[0]}..{HNSW_M[1]}), PQ<m>, IVF<n>,Flat, IVF<n>,PQ<m> or OPQ<m>,IVF<n>,PQ<m> "
    f"(n {LISTS[0]}..{LISTS[1]} lists, m {PQ_M[0]}..{PQ_M[1]} sub-quantizers, the same m for OPQ and PQ), "
    "e.g. HNSW32, IVF64,Flat or IVF64,PQ8"
)

PROBE_DIM = 8  # the tiny dimension a string is probed at (m for the PQ forms, so that m divides it)
PROBE_POINTS = PQ_CENTROIDS  # enough to train every form probed
PROBE_LISTS = 64  # the probe trains at most this many IVF lists (more would cost seconds)
PROBE_TIMEOUT_S = 120.0


@dataclass(frozen=True)
class FactorySpec:
    """A factory string that passed the grammar, and the numbers in it."""

    text: str  # what FAISS's index_factory is given
    hnsw_m: int | None = None  # links per node of an HNSW graph
    lists: int | None = None  # IVF inverted lists (nlist)
    pq_m: int | None = None  # PQ sub-quantizers (also the OPQ rotation's)
    opq: bool = False

    @property
    def min_points(self) -> int:
        """The fewest gallery vectors FAISS can train this index on."""
        return max(self.lists or 1, PQ_CENTROIDS if self.pq_m else 1)

    def check_fits(self, dim: int, size: int) -> None:
        """Refuse (UsageError) what FAISS would fail or crash on for a gallery of `size` vectors of `dim`."""
        if self.pq_m is not None and dim % self.pq_m:
            divisors = [m for m in range(1, min(dim, PQ_M[1]) + 1) if dim % m == 0]
            kind = "OPQ and PQ" if self.opq else "PQ"
            raise UsageError(
                f"--index {self.text}: {kind} with {self.pq_m} sub-quantizers needs an embedding dimension "
                f"divisible by {self.pq_m}, and the embeddings have {dim}; choose m among {divisors}"
            )
        if size < self.min_points:
            needs = []
            if self.lists:
                needs.append(f"{self.lists} IVF lists need at least {self.lists}")
            if self.pq_m:
                needs.append(f"PQ needs at least {PQ_CENTROIDS} (its codebook's centroids)")
            raise UsageError(
                f"--index {self.text} cannot be trained on a gallery of {size} vectors ({'; '.join(needs)}); "
                "choose fewer lists, Flat or HNSW"
            )

    def probe_text(self) -> str:
        """The same structure with at most PROBE_LISTS lists, cheap enough to train in the probe."""
        if self.lists is None or self.lists <= PROBE_LISTS:
            return self.text
        return self.text.replace(f"IVF{self.lists},", f"IVF{PROBE_LISTS},")


def _in_range(text: str, what: str, value: str, bounds: tuple[int, int]) -> int:
    number = int(value)
    if not bounds[0] <= number <= bounds[1]:
        raise UsageError(f"--index {text}: {what} must be from {bounds[0]} to {bounds[1]}, got {number}")
    return number


def parse_factory(text: str) -> FactorySpec:
    """The spec of a supported factory string (surrounding spaces ignored); UsageError for anything else."""
    text = text.strip()
    for form, pattern in _GRAMMAR:
        match = pattern.fullmatch(text)
        if match is None:
            continue
        numbers = match.groups()
        if form == "flat":
            return FactorySpec(text)
        if form == "hnsw":
            return FactorySpec(text, hnsw_m=_in_range(text, "HNSW's M (links per node)", numbers[0], HNSW_M))
        if form == "pq":
            return FactorySpec(text, pq_m=_in_range(text, "PQ's m (sub-quantizers)", numbers[0], PQ_M))
        if form == "opq_ivf_pq" and numbers[0] != numbers[2]:
            raise UsageError(
                f"--index {text}: OPQ and PQ must have the same number of sub-quantizers "
                f"(OPQ{numbers[0]} but PQ{numbers[2]}), e.g. OPQ{numbers[2]},IVF{numbers[1]},PQ{numbers[2]}"
            )
        lists_at = 1 if form == "opq_ivf_pq" else 0
        lists = _in_range(text, "IVF's n (lists)", numbers[lists_at], LISTS)
        if form == "ivf_flat":
            return FactorySpec(text, lists=lists)
        pq_m = _in_range(text, "PQ's m (sub-quantizers)", numbers[-1], PQ_M)
        return FactorySpec(text, lists=lists, pq_m=pq_m, opq=form == "opq_ivf_pq")
    raise UsageError(f"--index {text!r} is not a factory string train_faiss supports; use {SUPPORTED}")


_FAISS_REASON = re.compile(r"at \S+:\d+: (?:Error: '.*?' failed: )?(.*)$", re.DOTALL)


def faiss_reason(err: BaseException) -> str:
    """The human part of a FAISS C++ exception message, on one line."""
    text = str(err).strip()
    match = _FAISS_REASON.search(text)
    reason = match.group(1) if match else text
    return " ".join(reason.split()) or err.__class__.__name__


def tiny_build(spec: FactorySpec, points: int = PROBE_POINTS) -> None:
    """Make, train, fill and search `spec` on random unit vectors of a tiny dimension (what the probe does)."""
    dim = spec.pq_m or PROBE_DIM
    faiss.index_factory(dim, spec.text, faiss.METRIC_INNER_PRODUCT)  # the real numbers, untrained: cheap
    rng = np.random.default_rng(0)
    x = rng.normal(size=(points, dim)).astype(np.float32)
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    index = faiss.index_factory(dim, spec.probe_text(), faiss.METRIC_INNER_PRODUCT)
    _make_training_cheap(index)
    if not index.is_trained:
        index.train(x)
    index.add(x)
    index.search(x[:1], 1)


def _make_training_cheap(index: faiss.Index) -> None:
    """Polysemous codes and OPQ iterations cost seconds and change nothing the probe looks for."""
    outer = faiss.downcast_index(index)
    parts = [outer]
    if isinstance(outer, faiss.IndexPreTransform):
        chain: Any = outer.chain  # a SWIG std::vector (size/at), not the list faiss's type hints say
        for i in range(chain.size()):
            transform = faiss.downcast_VectorTransform(chain.at(i))
            if isinstance(transform, faiss.OPQMatrix):
                transform.niter = transform.niter_pq = transform.niter_pq_0 = 1
        parts.append(faiss.downcast_index(outer.index))
    for part in parts:
        if hasattr(part, "do_polysemous_training"):
            part.do_polysemous_training = False


@functools.cache
def probe_factory(spec: FactorySpec, timeout_s: float = PROBE_TIMEOUT_S) -> str | None:
    """Build `spec` tiny in a forked child: None if FAISS survives it, else why not (one line).

    A child, because FAISS reports some bad parameters by aborting the whole process. Where there is no
    fork (not Linux/macOS) nothing is probed.
    """
    if not hasattr(os, "fork"):  # pragma: no cover - the steps run on Linux
        return None
    read_end, write_end = os.pipe()
    pid = os.fork()
    if pid == 0:  # pragma: no cover - the child; coverage cannot follow os._exit
        status = 0
        try:
            os.close(read_end)
            faulthandler.disable()  # its dump of a crash here is the expected outcome, not news
            quiet = os.open(os.devnull, os.O_WRONLY)
            os.dup2(quiet, 1)
            os.dup2(quiet, 2)  # FAISS's abort message and warnings; the parent says what happened
            faiss.omp_set_num_threads(1)
            tiny_build(spec)
        except BaseException as e:
            os.write(write_end, faiss_reason(e).encode(errors="replace")[:1000])
            status = 1
        finally:
            os._exit(status)
    os.close(write_end)
    try:
        reason = _read_until_exit(read_end, timeout_s)
    finally:
        os.close(read_end)
    if reason is None:
        os.kill(pid, signal.SIGKILL)
        os.waitpid(pid, 0)
        return f"FAISS did not finish building it on {PROBE_POINTS} tiny vectors in {timeout_s:.0f} s"
    _, status = os.waitpid(pid, 0)
    if os.WIFSIGNALED(status):
        name = signal.Signals(os.WTERMSIG(status)).name
        return f"FAISS crashes ({name}) building it, even on {PROBE_POINTS} tiny vectors"
    if os.WEXITSTATUS(status) != 0:
        return f"FAISS cannot build it ({reason or 'no reason given'})"
    return None


def _read_until_exit(fd: int, timeout_s: float) -> str | None:
    """What the child wrote before it closed the pipe (by exiting), or None after `timeout_s`."""
    deadline = time.monotonic() + timeout_s
    chunks: list[bytes] = []
    while True:
        left = deadline - time.monotonic()
        if left <= 0:
            return None
        ready, _, _ = select.select([fd], [], [], min(left, 1.0))
        if ready:
            chunk = os.read(fd, 4096)
            if not chunk:
                return b"".join(chunks).decode(errors="replace")
            chunks.append(chunk)


def check_factory(text: str) -> FactorySpec:
    """Parse `text` and probe it (UsageError naming --index if FAISS cannot build it)."""
    spec = parse_factory(text)
    problem = probe_factory(spec)
    if problem is not None:
        raise UsageError(f"--index {spec.text}: {problem}; use {SUPPORTED}")
    return spec


def default_nprobe(lists: int) -> int:
    """About sqrt(nlist): FAISS's usual starting point."""
    return max(1, min(lists, round(math.sqrt(lists))))
