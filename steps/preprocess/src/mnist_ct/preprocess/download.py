"""Download a file from a list of mirrors into a cache, verified by sha256, with retries.

A file enters the cache only complete and verified (written to a hidden temporary sibling, checked,
fsynced, renamed); a failed or mismatching download leaves nothing there. The expected checksums
are data: the caller passes them with each `RemoteFile`.
"""

from __future__ import annotations

import contextlib
import hashlib
import http.client
import os
import ssl
import sys
import time
import urllib.error
import urllib.parse
import urllib.request
import uuid
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

from mnist_ct.artifacts import ArtifactError, Log, UsageError, fsync_dir, sha256_file

from .sources import RemoteFile

_CHUNK = 1 << 16
_USER_AGENT = "mnist-ct-preprocess"
MIRROR_SCHEMES = ("http", "https", "file")


@dataclass(frozen=True)
class RetryPolicy:
    """How hard to try each mirror before moving on to the next."""

    attempts: int = 3  # per mirror, for transient failures (connection errors, 5xx, cut transfers)
    backoff_s: float = 1.0  # wait before the 2nd attempt; doubled after each further failure
    timeout_s: float = 60.0  # per connection and per read


class _Transient(Exception):
    """Worth retrying on the same mirror."""


class _Permanent(Exception):
    """This mirror will not give the right file: try the next one."""


def check_mirror(url: str) -> str:
    """`url` if it is a base URL files can be downloaded from (http, https or file), else UsageError."""
    problem = _mirror_problem(url)
    if problem:
        raise UsageError(f"--mirror {url!r}: {problem}; give a base URL such as https://host/path/")
    return url


def _mirror_problem(url: str) -> str | None:
    if not url or any(ch.isspace() or not ch.isprintable() for ch in url):
        return "empty, or holds spaces or control characters"
    try:
        parts = urllib.parse.urlsplit(url)
        _ = parts.port  # parsing the port raises ValueError for a bad one
    except ValueError as e:
        return f"not a URL ({e})"
    if parts.scheme not in MIRROR_SCHEMES:
        return f"scheme {parts.scheme or 'missing'!r}, expected one of {', '.join(MIRROR_SCHEMES)}"
    if parts.scheme != "file" and not parts.hostname:
        return "no host"
    if parts.scheme == "file" and (parts.netloc not in ("", "localhost") or not parts.path.startswith("/")):
        return "a file URL needs an absolute path on this machine (file:///path/)"
    if parts.query or parts.fragment or url.endswith(("?", "#")):
        return "a base URL has no query or fragment (the file name is appended to it)"
    return None


def mirror_url(base: str, name: str) -> str:
    return base.rstrip("/") + "/" + name


def fetch(
    file: RemoteFile,
    mirrors: Sequence[str],
    cache: Path,
    policy: RetryPolicy = RetryPolicy(),
    log: Log | None = None,
) -> Path:
    """Return the verified file `cache/<file.name>`, downloading it if the cache lacks a good copy."""
    log = log or Log("preprocess", quiet=True)
    target = Path(cache) / file.name
    if target.exists() and not target.is_file():
        raise ArtifactError(f"{target}: in the download cache but not a file; remove it and rerun")
    if target.is_file():
        if sha256_file(target) == file.sha256:
            return target
        log(f"{target}: cached copy does not match sha256 {file.sha256}; downloading it again")
        target.unlink()
    if not mirrors:
        raise ArtifactError(f"{file.name}: no mirror to download from; pass --mirror URL or --source DIR")
    failures: list[str] = []
    for base in mirrors:
        url = mirror_url(base, file.name)
        for attempt in range(1, policy.attempts + 1):
            try:
                _download(url, file, target, policy, log)
            except _Permanent as e:
                failures.append(f"{url}: {e}")
                break
            except _Transient as e:
                if attempt == policy.attempts:
                    failures.append(f"{url}: {e} (gave up after {attempt} attempts)")
                else:
                    log(f"{url}: {e}; retrying (attempt {attempt + 1} of {policy.attempts})")
                    time.sleep(policy.backoff_s * 2 ** (attempt - 1))
            else:
                log(f"downloaded {url} ({target.stat().st_size} bytes, sha256 verified)")
                return target
    raise ArtifactError(
        f"{file.name}: download failed from every mirror ({'; '.join(failures)}); "
        f"expected sha256 {file.sha256}; nothing was cached in {cache}. "
        "Check the network or a mirror, or pass --source DIR with the files"
    )


def _download(url: str, file: RemoteFile, target: Path, policy: RetryPolicy, log: Log) -> None:
    """One attempt: stream `url` into a temporary sibling of `target`, verify, rename into place."""
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = target.with_name(f".{target.name}.part-{uuid.uuid4().hex[:12]}")
    request = urllib.request.Request(url, headers={"User-Agent": _USER_AGENT})
    try:
        with urllib.request.urlopen(request, timeout=policy.timeout_s) as response, open(tmp, "wb") as out:
            length = response.headers.get("Content-Length")
            expected = int(length) if length and length.isdigit() else None
            digest, received = hashlib.sha256(), 0
            with _byte_progress(log, expected or file.bytes, file.name) as advance:
                while chunk := response.read(_CHUNK):
                    out.write(chunk)
                    digest.update(chunk)
                    received += len(chunk)
                    advance(len(chunk))
            if expected is not None and received != expected:
                raise _Transient(f"transfer interrupted after {received} of {expected} bytes")
            out.flush()
            os.fsync(out.fileno())
        if file.bytes is not None and received != file.bytes:
            raise _Permanent(f"served {received} bytes, expected {file.bytes} (sha256 {file.sha256})")
        if digest.hexdigest() != file.sha256:
            raise _Permanent(f"sha256 {digest.hexdigest()} does not match the expected {file.sha256}")
        os.replace(tmp, target)
        fsync_dir(target.parent)
    except urllib.error.HTTPError as e:
        problem = f"HTTP {e.code} {e.reason}"
        raise (_Transient(problem) if e.code >= 500 or e.code in (408, 429) else _Permanent(problem)) from None
    except urllib.error.URLError as e:
        if isinstance(e.reason, FileNotFoundError):  # a file:// mirror without the file
            raise _Permanent(f"not found ({e.reason.strerror})") from None
        raise _Transient(f"cannot connect ({e.reason})") from None
    except (http.client.HTTPException, ConnectionError, TimeoutError, ssl.SSLError) as e:
        raise _Transient(f"transfer failed ({e.__class__.__name__}: {e})") from None
    except OSError as e:
        # Writing the cache: a full or read-only disk. A write's error carries no path: name the file.
        if e.filename is None:
            raise OSError(e.errno, e.strerror or str(e), str(target)) from None
        raise
    finally:
        tmp.unlink(missing_ok=True)


@contextlib.contextmanager
def _byte_progress(log: Log, total: int | None, name: str) -> Iterator[Callable[[int], object]]:
    """A byte progress bar on a terminal only; elsewhere a no-op."""
    if log.quiet or not sys.stderr.isatty():
        yield lambda n: None
        return
    from tqdm import tqdm

    with tqdm(total=total, unit="B", unit_scale=True, desc=f"[{log.step}] {name}", leave=False) as bar:
        yield bar.update
