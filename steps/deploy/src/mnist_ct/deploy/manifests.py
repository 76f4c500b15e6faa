"""Kubernetes manifests for the served model: a KServe InferenceService, and a Deployment + Service without KServe.

Both run the same custom predictor container (`python -m mnist_ct.deploy serve --runtime kserve`) on the model
folder `kserve/<model>` of the deploy PVC, mounted read-only at /mnt/models. The deploy step writes them next to
the live version so `kubectl apply -f` starts exactly what it deployed; the image must be pinned by digest so the
manifest names one build, not whatever a tag points to later.

Where the PVC path goes in the InferenceService: kserve 0.21's `V1beta1PredictorSpec` has no `storage_uri`
(only `storage_uris`, a list of {uri, mountPath}, "multiple storage uris"); `storageUri` exists only on the
model-format specs (`V1beta1ModelSpec`, `V1beta1PredictorExtensionSpec`, ...), which a custom container does not
use. For a custom container KServe reads the URI from the container's `STORAGE_URI` environment variable (the
long-standing way, and the one every KServe version with a storage initializer supports); its storage
initializer then mounts `pvc://<pvc>/<path>` read-only at /mnt/models.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from decimal import Decimal
from typing import Any

import yaml

from mnist_ct.artifacts import UsageError, check_model_name

from .serving_config import MAX_WORKERS

MANIFEST_FILES = ("inferenceservice.yaml", "deployment.yaml")

MODEL_DIR = "/mnt/models"
PREDICTOR_PORT = 8080
CONTAINER_NAME = "kserve-container"  # the name KServe requires for the predictor's container
IMAGE_USER = 10001  # the image's non-root user
STORAGE_URI_ENV = "STORAGE_URI"  # KServe's storage initializer reads a custom container's model URI here
MAX_REPLICAS = 100

_DNS_LABEL = re.compile(r"[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?")
_DNS_SUBDOMAIN = re.compile(r"[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*")
_PINNED_IMAGE = re.compile(r"[a-z0-9][A-Za-z0-9._/:-]*@sha256:[0-9a-f]{64}")
# A Kubernetes quantity without sign: a decimal number, then a binary/decimal SI suffix or an exponent.
_QUANTITY = re.compile(
    r"(?P<number>[0-9]+(\.[0-9]*)?|\.[0-9]+)(?P<suffix>Ki|Mi|Gi|Ti|Pi|Ei|[numkMGTPE]|[eE][-+]?[0-9]+)?"
)
_SUFFIX_SCALE = {
    "": Decimal(1),
    "n": Decimal("1e-9"),
    "u": Decimal("1e-6"),
    "m": Decimal("1e-3"),
    **{s: Decimal(1000) ** (i + 1) for i, s in enumerate("kMGTPE")},
    **{s: Decimal(1024) ** (i + 1) for i, s in enumerate(("Ki", "Mi", "Gi", "Ti", "Pi", "Ei"))},
}


def _quantity(option: str, value: object) -> Decimal:
    """The amount a Kubernetes quantity stands for; UsageError naming `option` if it is not one."""
    match = _QUANTITY.fullmatch(value) if isinstance(value, str) else None
    if match is None:
        raise UsageError(f"{option} must be a Kubernetes quantity such as '500m', '2' or '1Gi', got {value!r}")
    suffix = match["suffix"] or ""
    try:
        number = Decimal(match["number"])
        amount = number * Decimal(10) ** int(suffix[1:]) if suffix[:1] in ("e", "E") else number * _SUFFIX_SCALE[suffix]
    except (ArithmeticError, ValueError):  # decimal's Overflow and InvalidOperation are ArithmeticErrors
        raise UsageError(f"{option} {value!r} is out of range for a Kubernetes quantity") from None
    if amount <= 0:
        raise UsageError(f"{option} must be more than zero, got {value!r}")
    return amount


def resource_name(model_name: str) -> str:
    """The model name as a DNS-1123 label (what metadata.name and Service names must be): '_' -> '-', lowercase."""
    name = check_model_name(model_name).replace("_", "-").lower()
    if not _DNS_LABEL.fullmatch(name):
        raise UsageError(
            f"model name {model_name!r} gives the Kubernetes name {name!r}, which is not a DNS-1123 label "
            "(at most 63 lowercase letters, digits or '-', starting and ending with a letter or digit): "
            "rename the model"
        )
    return name


def model_path(model_name: str) -> str:
    """The model's folder on the deploy PVC, relative to its root (what KServe and the Deployment both mount)."""
    return f"kserve/{check_model_name(model_name)}"


def predictor_args(model_name: str, workers: int, model_dir: str = MODEL_DIR, port: int = PREDICTOR_PORT) -> list[str]:
    """`serve`'s arguments in the predictor container (after `python -m mnist_ct.deploy`): one list for all users."""
    return [
        "serve",
        "--runtime",
        "kserve",
        "--model-dir",
        model_dir,
        "--model-name",
        model_name,
        "--port",
        str(port),
        "--workers",
        str(workers),
    ]


def _label_value(text: str) -> str:
    """`text` cut to a valid label value (63 chars, ending in a letter or digit); the annotation keeps it whole."""
    value = re.sub(r"[^A-Za-z0-9._-]", "-", text)[:63]
    return re.sub(r"[^A-Za-z0-9]+$", "", value)


@dataclass(frozen=True)
class ClusterSettings:
    """Where and how the predictor runs on the cluster (checked: UsageError with one line naming the option)."""

    image: str
    pvc: str = "deploy-model-pvc"
    namespace: str | None = None
    workers: int = 2
    replicas: int = 1
    cpu_request: str = "1"
    cpu_limit: str = "2"
    memory_request: str = "1Gi"
    memory_limit: str = "2Gi"

    def __post_init__(self) -> None:
        if not isinstance(self.image, str) or not _PINNED_IMAGE.fullmatch(self.image):
            raise UsageError(
                f"image must be pinned by digest (REPOSITORY@sha256:<64 hex>), got {self.image!r}: "
                "use the digest the image push printed"
            )
        if not isinstance(self.pvc, str) or len(self.pvc) > 253 or not _DNS_SUBDOMAIN.fullmatch(self.pvc):
            raise UsageError(
                f"pvc must be a PersistentVolumeClaim name (a DNS-1123 subdomain: lowercase letters, digits, '-' "
                f"and '.', at most 253), got {self.pvc!r}"
            )
        if self.namespace is not None and (
            not isinstance(self.namespace, str) or not _DNS_LABEL.fullmatch(self.namespace)
        ):
            raise UsageError(
                "namespace must be a DNS-1123 label (at most 63 lowercase letters, digits or '-'), "
                f"got {self.namespace!r}"
            )
        for name, high in (("workers", MAX_WORKERS), ("replicas", MAX_REPLICAS)):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= high:
                raise UsageError(f"{name} must be a whole number from 1 to {high}, got {value!r}")
        for kind in ("cpu", "memory"):
            request = _quantity(f"{kind}_request", getattr(self, f"{kind}_request"))
            limit = _quantity(f"{kind}_limit", getattr(self, f"{kind}_limit"))
            if request > limit:
                raise UsageError(
                    f"{kind}_request {getattr(self, f'{kind}_request')!r} is more than {kind}_limit "
                    f"{getattr(self, f'{kind}_limit')!r}: Kubernetes refuses such a pod"
                )


def _labels(model_name: str, version: str) -> dict[str, str]:
    return {
        "app.kubernetes.io/name": "mnist-ct",
        "app.kubernetes.io/component": "predictor",
        "mnist-ct/model": model_name,
        "mnist-ct/version": _label_value(version),
    }


def _metadata(model_name: str, version: str, settings: ClusterSettings) -> dict[str, Any]:
    meta: dict[str, Any] = {"name": resource_name(model_name)}
    if settings.namespace is not None:
        meta["namespace"] = settings.namespace
    meta["labels"] = _labels(model_name, version)
    meta["annotations"] = {"mnist-ct/version": version}
    return meta


def _check_version(version: str) -> str:
    if not isinstance(version, str) or not version or "\n" in version:
        raise UsageError(f"version must be a non-empty single-line string, got {version!r}")
    return version


def predictor_container(model_name: str, settings: ClusterSettings) -> dict[str, Any]:
    """The serving container both manifests run (a core/v1 Container)."""
    return {
        "name": CONTAINER_NAME,
        "image": settings.image,
        "command": ["python", "-m", "mnist_ct.deploy"],
        "args": predictor_args(model_name, settings.workers),
        "ports": [{"name": "http1", "containerPort": PREDICTOR_PORT, "protocol": "TCP"}],
        "resources": {
            "requests": {"cpu": settings.cpu_request, "memory": settings.memory_request},
            "limits": {"cpu": settings.cpu_limit, "memory": settings.memory_limit},
        },
        "readinessProbe": {
            "httpGet": {"path": f"/v2/models/{model_name}/ready", "port": PREDICTOR_PORT},
            "initialDelaySeconds": 5,
            "periodSeconds": 5,
        },
        "livenessProbe": {"httpGet": {"path": "/v2/health/live", "port": PREDICTOR_PORT}},
        # Pod Security "restricted" also asks for dropped capabilities and the runtime's seccomp profile. The root
        # filesystem stays writable: the server writes nothing, but Python and its libraries may want /tmp.
        "securityContext": {
            "runAsNonRoot": True,
            "runAsUser": IMAGE_USER,
            "allowPrivilegeEscalation": False,
            "capabilities": {"drop": ["ALL"]},
            "seccompProfile": {"type": "RuntimeDefault"},
        },
    }


def inference_service(model_name: str, version: str, settings: ClusterSettings) -> dict[str, Any]:
    """A serving.kserve.io/v1beta1 InferenceService with a custom predictor container on the PVC's model folder."""
    _check_version(version)
    container = predictor_container(model_name, settings)
    # See the module docstring: the predictor spec has no storageUri; KServe takes a custom container's from here.
    container["env"] = [{"name": STORAGE_URI_ENV, "value": f"pvc://{settings.pvc}/{model_path(model_name)}"}]
    return {
        "apiVersion": "serving.kserve.io/v1beta1",
        "kind": "InferenceService",
        "metadata": _metadata(model_name, version, settings),
        "spec": {"predictor": {"containers": [container]}},
    }


def plain_deployment(model_name: str, version: str, settings: ClusterSettings) -> list[dict[str, Any]]:
    """[Deployment, Service]: the same container with the PVC mounted directly, for clusters without KServe."""
    _check_version(version)
    meta = _metadata(model_name, version, settings)
    # The selector is immutable once applied: only the model, never the version, so a new version rolls out.
    selector = {"app.kubernetes.io/name": "mnist-ct", "mnist-ct/model": model_name}
    container = predictor_container(model_name, settings)
    container["volumeMounts"] = [
        {"name": "model", "mountPath": MODEL_DIR, "subPath": model_path(model_name), "readOnly": True}
    ]
    deployment = {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": meta,
        "spec": {
            "replicas": settings.replicas,
            "selector": {"matchLabels": selector},
            "template": {
                "metadata": {"labels": dict(meta["labels"]), "annotations": dict(meta["annotations"])},
                "spec": {
                    "containers": [container],
                    "volumes": [
                        {"name": "model", "persistentVolumeClaim": {"claimName": settings.pvc, "readOnly": True}}
                    ],
                },
            },
        },
    }
    service = {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": _metadata(model_name, version, settings),
        "spec": {
            "type": "ClusterIP",
            "selector": dict(selector),
            "ports": [{"name": "http", "port": 80, "targetPort": PREDICTOR_PORT, "protocol": "TCP"}],
        },
    }
    return [deployment, service]


def render(model_name: str, version: str, settings: ClusterSettings) -> dict[str, bytes]:
    """{file name: YAML bytes}; a header comment line says what wrote it and how to apply it."""
    docs: dict[str, list[dict[str, Any]]] = {
        MANIFEST_FILES[0]: [inference_service(model_name, version, settings)],
        MANIFEST_FILES[1]: plain_deployment(model_name, version, settings),
    }
    out: dict[str, bytes] = {}
    for file_name, items in docs.items():
        header = (
            f"# Written by mnist-ct deploy for model {model_name} version {version}; "
            f"apply with: kubectl apply -f {file_name}\n"
        )
        body = yaml.safe_dump_all(items, sort_keys=False, explicit_start=len(items) > 1)
        out[file_name] = (header + body).encode()
    return out
