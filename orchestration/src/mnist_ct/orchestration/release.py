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
- `--schedule CRON` makes a KFP recurring run of that version named `<pipeline> schedule` in the experiment
  (max_concurrency 1, no catch-up): created, or replaced (deleted, then created) when one of that name differs
  in cron, version, parameters or settings; left alone when it is the same. `unschedule` removes it. The cron
  text is checked here as KFP's API server parses it (robfig/cron v1 `Parse`: six fields, seconds first, or a
  descriptor), so a bad one fails before anything is sent; five fields are refused, since KFP would read them
  as seconds..month, not as a crontab line.
- Credentials come only from the environment or kfp's own config, and are never printed:
  `MNIST_CT_KFP_TOKEN` (a bearer token), else `KF_PIPELINES_SA_TOKEN_PATH` (a token file, refreshed),
  else whatever kfp.Client finds itself (the IAP/OAuth variables `KF_PIPELINES_*`, the cookie or header
  in ~/.config/kfp/context.json).
"""

from __future__ import annotations

import contextlib
import functools
import json
import os
import re
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


# KFP's API server checks a recurring run's cron with robfig/cron v1.2.0's Parse (backend api_converter.go):
# second minute hour day-of-month month [day-of-week], or a descriptor. These are its fields and names.
MONTHS = ("jan", "feb", "mar", "apr", "may", "jun", "jul", "aug", "sep", "oct", "nov", "dec")
WEEKDAYS = ("sun", "mon", "tue", "wed", "thu", "fri", "sat")
CRON_FIELDS: tuple[tuple[str, int, int, dict[str, int]], ...] = (
    ("second", 0, 59, {}),
    ("minute", 0, 59, {}),
    ("hour", 0, 23, {}),
    ("day of month", 1, 31, {}),
    ("month", 1, 12, {m: i for i, m in enumerate(MONTHS, 1)}),
    ("day of week", 0, 6, {d: i for i, d in enumerate(WEEKDAYS)}),
)
CRON_DESCRIPTORS = ("@yearly", "@annually", "@monthly", "@weekly", "@daily", "@midnight", "@hourly")
_EVERY = re.compile(r"@every ((?:\d+(?:\.\d+)?(?:h|m|s))+)")
_DURATION_PART = re.compile(r"(\d+(?:\.\d+)?)(h|m|s)")
CRON_HELP = (
    "KFP's cron has six fields, seconds first: 'second minute hour day-of-month month day-of-week', e.g. "
    "'0 0 3 * * *' (03:00 every day, the KFP server's time zone), or @hourly, @daily, @weekly, @monthly, @yearly, "
    "@every 6h"
)


def _cron_value(text: str, names: dict[str, int]) -> int:
    if text.lower() in names:
        return names[text.lower()]
    if not text.isdigit():
        raise ValueError(f"{text!r} is not a number" + (f" or a name ({', '.join(names)})" if names else ""))
    return int(text)


def _cron_field(text: str, low: int, high: int, names: dict[str, int]) -> None:
    """One field as robfig/cron reads it: comma-separated ranges `*`|`?`|N|N-M, each with an optional /STEP."""
    for part in text.split(","):
        span, slash, step = part.partition("/")
        if slash and not step.isdigit():
            raise ValueError(f"step {step!r} in {part!r} is not a whole number")
        if slash and int(step) == 0:
            raise ValueError(f"step 0 in {part!r}: a step must be at least 1")
        if span in ("*", "?"):
            continue
        first, dash, last = span.partition("-")
        start = _cron_value(first, names)
        end = _cron_value(last, names) if dash else (high if slash else start)  # N/STEP means N-max/STEP
        if start < low or end > high:
            raise ValueError(f"{part!r} is outside {low}-{high}")
        if start > end:
            raise ValueError(f"{part!r} starts after it ends")


def check_cron(text: str) -> str:
    """The schedule `text` as sent to KFP (whitespace normalised); UsageError, one line, if KFP would refuse it or
    would read it other than as written (five fields: robfig/cron takes them as second..month)."""
    spec = " ".join(text.split())
    if spec.startswith("@"):
        every = _EVERY.fullmatch(spec)
        if spec in CRON_DESCRIPTORS:
            return spec
        if every:
            seconds = sum(float(n) * {"h": 3600, "m": 60, "s": 1}[u] for n, u in _DURATION_PART.findall(every[1]))
            if seconds < 1:
                raise UsageError(f"cron {text!r}: @every needs at least 1s")
            return spec
        raise UsageError(f"cron {text!r}: unknown descriptor; {CRON_HELP}")
    fields = spec.split(" ") if spec else []
    if len(fields) == 5:
        raise UsageError(
            f"cron {text!r} has 5 fields, which KFP would read as second minute hour day-of-month month; "
            f"for the crontab line you mean, put the seconds first: --schedule '0 {spec}'"
        )
    if len(fields) != 6:
        raise UsageError(f"cron {text!r} has {len(fields)} fields; {CRON_HELP}")
    for value, (name, low, high, names) in zip(fields, CRON_FIELDS, strict=True):
        try:
            _cron_field(value, low, high, names)
        except ValueError as e:
            raise UsageError(f"cron {text!r}: the {name} field {value!r}: {e}; {CRON_HELP}") from None
    return spec


def schedule_name(pipeline: str) -> str:
    """The display name of the pipeline's one recurring run (release replaces it, unschedule removes it)."""
    return f"{pipeline} schedule"


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
    schedule_id: str | None = None
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
    schedule: str | None = None,
    out: Callable[[str], None] = print,
) -> Outcome:
    cron = check_cron(schedule) if schedule is not None else None  # bad usage before anything else
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
        if cron is not None:
            _schedule(client, outcome, experiment, namespace, cron, run_params, dry_run, out)
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


def find_experiment(client: Any, name: str, namespace: str | None) -> str | None:
    """The id of the experiment named `name`, or None (looked up, never created)."""
    response = _call("listing experiments", lambda: client.list_experiments(filter=_equals(name), namespace=namespace))
    matches = [e for e in (response.experiments or []) if e.display_name == name]
    return matches[0].experiment_id if matches else None


def find_schedules(client: Any, experiment_id: str, name: str) -> list[Any]:
    """Every recurring run named `name` in the experiment (one, unless someone made more by hand)."""
    found: list[Any] = []
    token = ""
    while True:
        page = _call(
            "listing recurring runs",
            functools.partial(
                client.list_recurring_runs,
                experiment_id=experiment_id,
                filter=_equals(name),
                page_token=token,
                page_size=100,
            ),
        )
        found += [r for r in (page.recurring_runs or []) if r.display_name == name]
        token = page.next_page_token or ""
        if not token:
            return found


def _scheduled(recurring: Any) -> tuple[Any, ...]:
    """What release sets on a recurring run, as KFP answers it: equal tuples need no replacement."""
    trigger = recurring.trigger
    cron = trigger.cron_schedule.cron if trigger is not None and trigger.cron_schedule is not None else None
    ref = recurring.pipeline_version_reference
    config = recurring.runtime_config
    params = dict((config.parameters if config is not None else None) or {})
    mode = str(getattr(recurring.mode, "value", recurring.mode))
    return (
        cron,
        ref.pipeline_version_id if ref else None,
        params,
        str(recurring.max_concurrency),
        bool(recurring.no_catchup),
        mode,
    )


def _schedule(
    client: Any,
    outcome: Outcome,
    experiment: str,
    namespace: str | None,
    cron: str,
    params: Mapping[str, object],
    dry_run: bool,
    out: Callable[[str], None],
) -> None:
    name = schedule_name(outcome.pipeline)
    what = f"schedule '{name}' in experiment {experiment}: cron '{cron}', version {outcome.version}"
    experiment_id = find_experiment(client, experiment, namespace)
    existing = find_schedules(client, experiment_id, name) if experiment_id else []
    wanted = (cron, outcome.version_id, dict(params), "1", True, "ENABLE")
    if len(existing) == 1 and outcome.version_id is not None and _scheduled(existing[0]) == wanted:
        outcome.schedule_id = existing[0].recurring_run_id
        outcome.actions.append(f"{what} is already there ({outcome.schedule_id}): unchanged")
        out(outcome.actions[-1])
        return
    ids = ", ".join(r.recurring_run_id for r in existing)
    verb = f"replace ({ids})" if existing else "create"
    outcome.actions.append(f"{'dry run: would ' if dry_run else ''}{verb} {what}, max concurrency 1, no catch-up")
    out(outcome.actions[-1])
    if dry_run:
        return
    if experiment_id is None:
        exp = _call("creating the experiment", lambda: client.create_experiment(name=experiment, namespace=namespace))
        experiment_id = exp.experiment_id
    # KFP has no update for a recurring run: replacing it is delete, then create.
    for old in existing:
        _call("deleting the old recurring run", functools.partial(client.delete_recurring_run, old.recurring_run_id))
    try:
        created = _call(
            "creating the recurring run",
            lambda: client.create_recurring_run(
                experiment_id,
                name,
                description=f"mnist-ct release --schedule: {outcome.pipeline} version {outcome.version}",
                cron_expression=cron,
                max_concurrency=1,
                no_catchup=True,
                params=dict(params),
                pipeline_id=outcome.pipeline_id,
                version_id=outcome.version_id,
                enabled=True,
            ),
        )
    except RemoteError as e:
        if existing:
            raise RemoteError(f"{e}; the old schedule ({ids}) was removed: run release --schedule again") from None
        raise
    outcome.schedule_id = created.recurring_run_id
    made = f"replaced {what} ({ids} ->" if existing else f"created {what} ("
    made += f"{' ' if existing else ''}{outcome.schedule_id})"
    out(f"{made}, max concurrency 1, no catch-up")


def unschedule(
    host: str,
    *,
    namespace: str | None = None,
    experiment: str = "mnist-ct",
    pipeline: str = PIPELINE_NAME,
    dry_run: bool = False,
    out: Callable[[str], None] = print,
) -> list[str]:
    """Remove the pipeline's recurring run from the experiment; the ids removed ([] and says so: there was none)."""
    name = schedule_name(pipeline)
    client = connect(host, namespace)
    experiment_id = find_experiment(client, experiment, namespace)
    existing = find_schedules(client, experiment_id, name) if experiment_id else []
    if not existing:
        where = f"experiment {experiment}" if experiment_id else f"experiment {experiment} (no such experiment)"
        out(f"no schedule '{name}' in {where} at {host}: nothing to remove")
        return []
    for recurring in existing:
        if dry_run:
            out(f"dry run: would remove schedule '{name}' ({recurring.recurring_run_id}) from experiment {experiment}")
            continue
        _call("deleting the recurring run", functools.partial(client.delete_recurring_run, recurring.recurring_run_id))
        out(f"removed schedule '{name}' ({recurring.recurring_run_id}) from experiment {experiment}")
    return [r.recurring_run_id for r in existing]
