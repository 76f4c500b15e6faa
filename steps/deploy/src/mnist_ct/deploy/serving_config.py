"""TorchServe's config.properties: the deployed one (KServe's layout) and the local one `serve` runs.

KServe's TorchServe runtime mounts the deploy volume at /mnt/models and starts
`torchserve --model-store /mnt/models/model-store --ts-config /mnt/models/config/config.properties`;
the model to load, its workers and batching come from `model_snapshot`. The local server reuses
the deployed file with 127.0.0.1 addresses, its own ports and the local model store.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from mnist_ct.artifacts import ArtifactError, UsageError

KSERVE_ROOT = "/mnt/models"
KSERVE_INFERENCE_PORT = 8085  # KServe's own proxy takes 8080 in the pod
SNAPSHOT_VERSION_KEY = "1.0"  # TorchServe reads the real version from the archive's manifest


# What TorchServe accepts, and what is sane on one pod. TorchServe reads max_request_size as a Java int
# (Integer.parseInt: at most 2**31 - 1 bytes), so whole MiB stop at 2047; workers, batch size and delay are
# ints of model_snapshot with no upper limit of its own: these bounds keep a typo from asking for 10**6 workers.
MAX_WORKERS = 64
MAX_BATCH_SIZE = 1024
MAX_BATCH_DELAY_MS = 60_000
MAX_RESPONSE_TIMEOUT_S = 3600
MAX_REQUEST_MB = 2047
MAX_REQUEST_BYTES = MAX_REQUEST_MB * 2**20
MIN_JOB_QUEUE = 1000


@dataclass(frozen=True)
class ServingOptions:
    """How TorchServe runs the model: workers, dynamic batching, limits (checked: UsageError out of range)."""

    workers: int = 2
    batch_size: int = 8
    max_batch_delay_ms: int = 5
    response_timeout_s: int = 120
    max_request_bytes: int = 4 * 1024 * 1024

    def __post_init__(self) -> None:
        for name, low, high in (
            ("workers", 1, MAX_WORKERS),
            ("batch_size", 1, MAX_BATCH_SIZE),
            ("max_batch_delay_ms", 0, MAX_BATCH_DELAY_MS),
            ("response_timeout_s", 1, MAX_RESPONSE_TIMEOUT_S),
            ("max_request_bytes", 1, MAX_REQUEST_BYTES),
        ):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
                raise UsageError(f"TorchServe {name} must be a whole number from {low} to {high}, got {value!r}")

    @property
    def job_queue_size(self) -> int:
        """Requests TorchServe queues per model: room for every worker's full batch, and at least 1000."""
        return max(MIN_JOB_QUEUE, 2 * self.workers * self.batch_size)

    def to_json(self) -> dict[str, int]:
        return asdict(self)

    @classmethod
    def from_json(cls, doc: dict[str, Any], source: Path | str) -> ServingOptions:
        """The options a deployment recorded (`source` names where, for the error)."""
        try:
            return cls(**{k: int(v) for k, v in doc.items() if k in cls.__dataclass_fields__})
        except (TypeError, ValueError, ArtifactError) as e:
            raise ArtifactError(f"{source}: unusable TorchServe settings {doc!r} ({e})") from None


def model_snapshot(model_name: str, options: ServingOptions) -> dict[str, Any]:
    """TorchServe's model_snapshot: load `<model_name>.mar` at start with these workers and batching."""
    return {
        "name": "startup.cfg",
        "modelCount": 1,
        "models": {
            model_name: {
                SNAPSHOT_VERSION_KEY: {
                    "defaultVersion": True,
                    "marName": f"{model_name}.mar",
                    "minWorkers": options.workers,
                    "maxWorkers": options.workers,
                    "batchSize": options.batch_size,
                    "maxBatchDelay": options.max_batch_delay_ms,
                    "responseTimeout": options.response_timeout_s,
                }
            }
        },
    }


def deployed_properties(model_name: str, options: ServingOptions, serving_root: str = KSERVE_ROOT) -> dict[str, str]:
    """The config.properties deploy writes, as KServe's TorchServe runtime expects it."""
    return {
        "inference_address": f"http://0.0.0.0:{KSERVE_INFERENCE_PORT}",
        "management_address": f"http://0.0.0.0:{KSERVE_INFERENCE_PORT}",
        "metrics_address": "http://0.0.0.0:8082",
        "grpc_inference_port": "7070",
        "grpc_management_port": "7071",
        "enable_metrics_api": "true",
        "metrics_mode": "prometheus",
        # KServe passes the protocol envelope as TS_SERVICE_ENVELOPE; the handler also reads
        # {"instances": [...]} itself, so the v1 protocol works with or without it.
        "enable_envvars_config": "true",
        # faiss-cpu (the archive's requirements.txt) is not in KServe's TorchServe image.
        "install_py_dep_per_model": "true",
        # KServe fronts the pod; TorchServe 0.12's own token auth would reject its calls.
        "disable_token_authorization": "true",
        "default_workers_per_model": str(options.workers),
        "job_queue_size": str(options.job_queue_size),
        "max_request_size": str(options.max_request_bytes),
        "model_store": f"{serving_root.rstrip('/')}/model-store",
        "model_snapshot": json.dumps(model_snapshot(model_name, options), separators=(",", ":")),
    }


def render(props: dict[str, str], comments: list[str]) -> str:
    """Java properties text (values here never need escaping: no backslashes or newlines)."""
    for key, value in props.items():
        if "\\" in value or "\n" in value:
            raise ValueError(f"config.properties value of {key} cannot hold a backslash or newline")
    head = "".join(f"# {line}\n" for line in comments)
    return head + "".join(f"{k}={v}\n" for k, v in props.items())


def parse(text: str, source: Path | str = "config.properties") -> dict[str, str]:
    """key=value lines; '#' and '!' start comments (enough for the files deploy writes)."""
    props: dict[str, str] = {}
    for n, raw in enumerate(text.splitlines(), 1):
        line = raw.strip()
        if not line or line[0] in "#!":
            continue
        if "=" not in line:
            raise ArtifactError(f"{source}: line {n} is not key=value: {line[:60]!r}")
        key, value = line.split("=", 1)
        props[key.strip()] = value.strip()
    return props


def snapshot_of(props: dict[str, str], source: Path | str) -> tuple[str, ServingOptions]:
    """The (single) model name and its options from a config's model_snapshot."""
    try:
        models = json.loads(props["model_snapshot"])["models"]
        (name, versions), *rest = models.items()
        entry = next(iter(versions.values()))
        options = ServingOptions(
            workers=int(entry["minWorkers"]),
            batch_size=int(entry["batchSize"]),
            max_batch_delay_ms=int(entry["maxBatchDelay"]),
            response_timeout_s=int(entry["responseTimeout"]),
            max_request_bytes=int(props.get("max_request_size", ServingOptions.max_request_bytes)),
        )
    except (KeyError, ValueError, TypeError, StopIteration, AttributeError, ArtifactError) as e:
        raise ArtifactError(f"{source}: no usable model_snapshot ({type(e).__name__}: {e}); rerun deploy") from None
    if rest:
        raise ArtifactError(f"{source}: model_snapshot lists {len(rest) + 1} models, expected one")
    return name, options


def local_properties(
    model_name: str,
    options: ServingOptions,
    model_store: Path,
    ports: dict[str, int],
) -> dict[str, str]:
    """The deployed configuration bound to 127.0.0.1 with the given ports and the local model store."""
    props = deployed_properties(model_name, options)
    props.update(
        {
            "inference_address": f"http://127.0.0.1:{ports['inference']}",
            "management_address": f"http://127.0.0.1:{ports['management']}",
            "metrics_address": f"http://127.0.0.1:{ports['metrics']}",
            "grpc_inference_address": "127.0.0.1",
            "grpc_management_address": "127.0.0.1",
            "grpc_inference_port": str(ports["grpc_inference"]),
            "grpc_management_port": str(ports["grpc_management"]),
            "enable_envvars_config": "false",
            "install_py_dep_per_model": "false",  # `serve` runs in an environment that has them
            "model_store": str(model_store),
        }
    )
    return props
