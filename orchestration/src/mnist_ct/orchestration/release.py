"""`mnist-ct release`: upload the pinned pipeline as a new version of the KFP pipeline, optionally run it.

- The pipeline is compiled strictly from the lock (or `--package FILE` is checked strictly against it);
  a dev build, or any image not pinned by digest, is refused before anything is sent.
- The version is named `<orchestration version>-<first 12 hex of the lock's content hash>`, so the
  same lock gives the same name: a second release of it finds the version and uploads nothing.
- The first release creates the pipeline. KFP's upload creates a first version named after the
  pipeline; release then uploads the named version and deletes that unnamed duplicate, so every
  version of the pipeline carries a lock-derived name.
- Before KFP is contacted (also with `--dry-run`), every image the lock pins must exist in its registry
  by digest (registry.py: HEAD of the manifest), looked up where the lock says, or under `registry`
  (where build-changed pushed them: the same repository names and digests under another prefix).
  Missing images are refused in one line (exit 3); an unreachable registry, or one that refuses the
  lookup, is exit 4; `skip_image_check` (`--skip-image-check`) skips the lookup.
- `--run` creates the experiment (or reuses it) and starts a run of that version.
- Credentials come only from the environment or kfp's own config, and are never printed:
  `MNIST_CT_KFP_TOKEN` (a bearer token), else `KF_PIPELINES_SA_TOKEN_PATH` (a token file, refreshed),
  else whatever kfp.Client finds itself (the IAP/OAuth variables `KF_PIPELINES_*`, the cookie or header
  in ~/.config/kfp/context.json).
"""

from __future__ import annotations

import contextlib
import functools
import os
import tempfile
import urllib.error
import urllib.request
import warnings
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from importlib import metadata
from pathlib import Path
from typing import Any

from mnist_ct.artifacts import UsageError
from mnist_ct.orchestration import registry as registries
from mnist_ct.orchestration import spec
from mnist_ct.orchestration.checks import release_blockers
from mnist_ct.orchestration.compiling import compile_pipeline, verify
from mnist_ct.orchestration.errors import OrchestrationError, RemoteError
from mnist_ct.orchestration.lock import Lock
from mnist_ct.orchestration.parameters import typed_arguments
from mnist_ct.orchestration.pipeline import PIPELINE_NAME

TOKEN_ENV = "MNIST_CT_KFP_TOKEN"
TOKEN_FILE_ENV = "KF_PIPELINES_SA_TOKEN_PATH"
REACH_TIMEOUT_S = 5.0


def version_name(lock: Lock) -> str:
    return f"{metadata.version('mnist-ct-orchestration')}-{lock.content_hash()[:12]}"


@dataclass
class Outcome:
    pipeline: str
    version: str
    pipeline_id: str | None = None
    version_id: str | None = None
    uploaded: bool = False
    run_id: str | None = None
    actions: list[str] = field(default_factory=list)


def check_reachable(host: str, timeout: float = REACH_TIMEOUT_S) -> None:
    """Fail in seconds, not kfp.Client's ~25 s of healthz retries, when the host does not answer."""
    url = host.rstrip("/") + "/apis/v2beta1/healthz"
    # No proxies from the environment: kfp.Client does not use them either.
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    try:
        with opener.open(url, timeout=timeout):
            return
    except urllib.error.HTTPError as e:
        if e.code in (401, 403):
            return  # it answers; kfp.Client sends the credentials
        raise RemoteError(
            f"{host} answered HTTP {e.code} on /apis/v2beta1/healthz: not a KFP v2 API endpoint?"
        ) from None
    except (urllib.error.URLError, OSError, ValueError) as e:
        reason = getattr(e, "reason", e)
        raise RemoteError(
            f"cannot reach KFP at {host} ({reason}); check --host and that the API is reachable"
        ) from None


def pinned_images(lock: Lock, registry: str | None = None) -> list[str]:
    """Every `repo@sha256:...` the lock pins, by package name; under `registry` (same names) when given."""
    refs = [lock.image_ref(name) for name, entry in sorted(lock.packages.items()) if entry.image is not None]
    if not registry:
        return refs
    moved = [registries.under(ref, registry) for ref in refs]
    for ref in moved:
        try:
            registries.split_reference(ref)
        except ValueError:  # bad usage (exit 2), before any registry is asked: not "unreachable"
            raise UsageError(
                f"--registry / MNIST_CT_REGISTRY {registry!r} is not a registry prefix: give host[:port]/namespace "
                "without a scheme, e.g. 127.0.0.1:5000/mnist-ct"
            ) from None
    return moved


def check_images(lock: Lock, registry: str | None = None, out: Callable[[str], None] = print) -> None:
    """Refuse (one line) when a pinned image is not in its registry: a run could not pull it."""
    refs = pinned_images(lock, registry)
    try:
        absent = registries.missing(refs)
    except registries.RegistryError as e:
        where = "--registry / MNIST_CT_REGISTRY" if registry else "the lock's image repositories"
        raise RemoteError(f"image check: {e}; check {where}, or pass --skip-image-check") from None
    hosts = ", ".join(sorted({registries.split_reference(r)[0] for r in absent or refs}))
    if absent:
        raise OrchestrationError(
            f"{len(absent)} of {len(refs)} pinned images are not in {hosts}: {', '.join(absent)}; push them "
            "(nox -s build-changed -- --push, with --registry for another registry) or pass --skip-image-check"
        )
    out(f"images: all {len(refs)} pinned images are in {registry or hosts}")


def client_credentials(env: Mapping[str, str] = os.environ) -> dict[str, Any]:
    """kfp.Client keyword arguments for the credentials found in the environment (values never logged)."""
    if env.get(TOKEN_ENV):
        return {"existing_token": env[TOKEN_ENV]}
    if env.get(TOKEN_FILE_ENV):
        from kfp.client.set_volume_credentials import ServiceAccountTokenVolumeCredentials

        return {"credentials": ServiceAccountTokenVolumeCredentials(env[TOKEN_FILE_ENV])}
    return {}


def redact(text: str, env: Mapping[str, str] = os.environ) -> str:
    """`text` without the credentials release sends: a server may echo a token back in an error body."""
    secrets = [env.get(TOKEN_ENV, "")]
    if env.get(TOKEN_FILE_ENV):
        with contextlib.suppress(OSError, UnicodeDecodeError):
            secrets.append(Path(env[TOKEN_FILE_ENV]).read_text().strip())
    for secret in sorted((s for s in secrets if len(s) >= 4), key=len, reverse=True):
        text = text.replace(secret, "<redacted>")
    return text


def connect(host: str, namespace: str | None) -> Any:
    import kfp

    check_reachable(host)
    kwargs: dict[str, Any] = {"host": host, **client_credentials()}
    if namespace:
        kwargs["namespace"] = namespace
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)
        return _call("connecting", lambda: kfp.Client(**kwargs))


def _call(what: str, fn: Callable[[], Any]) -> Any:
    """Run a kfp.Client call; an API or network error becomes one RemoteError line."""
    import kfp_server_api
    import urllib3

    try:
        return fn()
    except kfp_server_api.ApiException as e:
        body = " ".join(redact(str(e.body or "")).split())[:200]
        raise RemoteError(f"KFP refused {what}: HTTP {e.status} {e.reason or ''} {body}".rstrip()) from None
    except (urllib3.exceptions.HTTPError, OSError, TimeoutError) as e:
        raise RemoteError(f"KFP unreachable while {what}: {e.__class__.__name__}") from None


def _equals(name: str) -> str:
    import json

    return json.dumps({"predicates": [{"operation": "EQUALS", "key": "display_name", "stringValue": name}]})


def find_pipeline(client: Any, name: str, namespace: str | None) -> str | None:
    response = _call("listing pipelines", lambda: client.list_pipelines(filter=_equals(name), namespace=namespace))
    matches = [p for p in (response.pipelines or []) if p.display_name == name]
    if len(matches) > 1:
        raise RemoteError(f"{len(matches)} pipelines are named {name}; KFP names must be unique")
    return matches[0].pipeline_id if matches else None


def list_versions(client: Any, pipeline_id: str) -> list[Any]:
    versions: list[Any] = []
    token = ""
    while True:
        page = _call(
            "listing pipeline versions",
            functools.partial(client.list_pipeline_versions, pipeline_id=pipeline_id, page_token=token, page_size=100),
        )
        versions += page.pipeline_versions or []
        token = page.next_page_token or ""
        if not token:
            return versions


def release(
    host: str,
    lock: Lock,
    *,
    package: Path | None = None,
    namespace: str | None = None,
    experiment: str = "mnist-ct",
    run: bool = False,
    params: Mapping[str, str] | None = None,
    dry_run: bool = False,
    registry: str | None = None,
    skip_image_check: bool = False,
    out: Callable[[str], None] = print,
) -> Outcome:
    with tempfile.TemporaryDirectory(prefix="mnist-ct-release-") as tmp:
        if package is not None:
            compiled = spec.load(package)
            blockers = release_blockers(compiled)
            if blockers:
                raise OrchestrationError(f"refusing to release {package}: {blockers[0]}", blockers)
            compiled = verify(package, lock, dev=False)
            path = Path(package)
        else:
            path = Path(tmp) / "pipeline.yaml"
            compiled = compile_pipeline(lock, path, dev=False)
        blockers = release_blockers(compiled)
        if blockers:
            raise OrchestrationError(f"refusing to release: {blockers[0]}", blockers)
        run_params = typed_arguments(compiled.pipeline_parameters(), params or {}, defaults=False)
        outcome = Outcome(compiled.name or PIPELINE_NAME, version_name(lock))
        prefix = "dry run: would " if dry_run else ""
        out(f"release {outcome.pipeline} version {outcome.version} to {host}")
        if skip_image_check:
            out("images: not checked (--skip-image-check)")
        else:
            check_images(lock, registry, out)

        client = connect(host, namespace)
        outcome.pipeline_id = find_pipeline(client, outcome.pipeline, namespace)
        if outcome.pipeline_id is None:
            outcome.actions.append(f"{prefix}create pipeline {outcome.pipeline} with version {outcome.version}")
            out(outcome.actions[-1])
            if not dry_run:
                _create(client, compiled, path, outcome, namespace, out)
        else:
            existing = [v for v in list_versions(client, outcome.pipeline_id) if v.display_name == outcome.version]
            if existing:
                outcome.version_id = existing[0].pipeline_version_id
                found = f"version {outcome.version} of {outcome.pipeline} already exists ({outcome.version_id})"
                outcome.actions.append(f"{found}: nothing uploaded")
                out(outcome.actions[-1])
            else:
                outcome.actions.append(f"{prefix}upload version {outcome.version} of pipeline {outcome.pipeline}")
                out(outcome.actions[-1])
                if not dry_run:
                    version = _call(
                        "uploading the version",
                        lambda: client.upload_pipeline_version(
                            str(path),
                            outcome.version,
                            pipeline_id=outcome.pipeline_id,
                            description=compiled.description,
                        ),
                    )
                    outcome.version_id = version.pipeline_version_id
                    outcome.uploaded = True
                    out(f"uploaded version {outcome.version} ({outcome.version_id})")

        if run:
            shown = ", ".join(f"{k}={v}" for k, v in sorted(run_params.items())) or "defaults"
            outcome.actions.append(f"{prefix}start a run in experiment {experiment} ({shown})")
            out(outcome.actions[-1])
            if not dry_run:
                _start_run(client, outcome, experiment, namespace, run_params, out)
        return outcome


def _create(
    client: Any,
    compiled: spec.CompiledPipeline,
    path: Path,
    outcome: Outcome,
    namespace: str | None,
    out: Callable[[str], None],
) -> None:
    pipeline = _call(
        "creating the pipeline",
        lambda: client.upload_pipeline(
            str(path), pipeline_name=outcome.pipeline, description=compiled.description, namespace=namespace
        ),
    )
    outcome.pipeline_id = pipeline.pipeline_id
    # KFP gave the upload a first version named after the pipeline: add ours, then drop that duplicate.
    first = [v for v in list_versions(client, pipeline.pipeline_id) if v.display_name != outcome.version]
    version = _call(
        "uploading the version",
        lambda: client.upload_pipeline_version(
            str(path), outcome.version, pipeline_id=pipeline.pipeline_id, description=compiled.description
        ),
    )
    outcome.version_id = version.pipeline_version_id
    outcome.uploaded = True
    for v in first:
        _call(
            "deleting the unnamed first version",
            functools.partial(client.delete_pipeline_version, pipeline.pipeline_id, v.pipeline_version_id),
        )
    made = f"created pipeline {outcome.pipeline} ({outcome.pipeline_id})"
    out(f"{made} and version {outcome.version} ({outcome.version_id})")


def _start_run(
    client: Any,
    outcome: Outcome,
    experiment: str,
    namespace: str | None,
    params: Mapping[str, object],
    out: Callable[[str], None],
) -> None:
    exp = _call("creating the experiment", lambda: client.create_experiment(name=experiment, namespace=namespace))
    job = f"{outcome.pipeline} {outcome.version} {datetime.now(UTC):%Y-%m-%d %H:%M:%S}"
    run = _call(
        "starting the run",
        lambda: client.run_pipeline(
            exp.experiment_id,
            job,
            params=dict(params),
            pipeline_id=outcome.pipeline_id,
            version_id=outcome.version_id,
        ),
    )
    outcome.run_id = run.run_id
    out(f"started run {run.run_id} in experiment {experiment} ({exp.experiment_id})")
