"""The rendered manifests against the real schemas (kubernetes' and kserve's Python models), and their checks.

Deserializing into the generated models silently drops unknown fields, so every document is checked by a
round trip: YAML -> model objects (client-side validation on, so required fields are enforced) -> plain data,
which must equal what was parsed. A misspelled or misplaced field disappears on the way and fails the test.
"""

from __future__ import annotations

from typing import Any

import kserve.models
import pytest
import yaml
from kserve.api_client import ApiClient as KServeApiClient
from kserve.configuration import Configuration as KServeConfiguration
from kubernetes.client import ApiClient, Configuration
from kubernetes.client import models as k8s_models

from mnist_ct.artifacts import UsageError
from mnist_ct.deploy.manifests import (
    CONTAINER_NAME,
    MANIFEST_FILES,
    STORAGE_URI_ENV,
    ClusterSettings,
    inference_service,
    plain_deployment,
    predictor_args,
    render,
)

DIGEST = "sha256:" + "ab" * 32
IMAGE = f"registry.example:5000/mnist-ct/deploy@{DIGEST}"


class KServeClient(KServeApiClient):
    """kserve's ApiClient looks every class name up in kserve.models only, so its InferenceService cannot even
    hold a V1ObjectMeta; this one falls back to the kubernetes models its specs reference (V1Container, ...)."""

    def _ApiClient__deserialize(self, data: Any, klass: Any) -> Any:  # noqa: N802 (the name-mangled hook)
        if isinstance(klass, str) and not hasattr(kserve.models, klass) and hasattr(k8s_models, klass):
            klass = getattr(k8s_models, klass)
        return super()._ApiClient__deserialize(data, klass)


@pytest.fixture(scope="module")
def k8s() -> ApiClient:
    assert Configuration().client_side_validation is True  # what every model builds when given no configuration
    return ApiClient()


@pytest.fixture(scope="module")
def kserve_client() -> KServeClient:
    assert KServeConfiguration().client_side_validation is True
    return KServeClient()


def assert_schema_round_trip(doc: dict[str, Any], klass_name: str, client: Any) -> Any:
    """`doc` deserialized into `klass_name` and serialized back is `doc` itself; returns the model object."""
    obj = client._ApiClient__deserialize(doc, klass_name)
    assert type(obj).__name__ == klass_name
    assert client.sanitize_for_serialization(obj) == doc
    return obj


def settings(**changes: Any) -> ClusterSettings:
    return ClusterSettings(**{"image": IMAGE, **changes})


def parsed(model_name: str = "mnist", version: str = "run-2024.01_a", **changes: Any) -> dict[str, list[Any]]:
    files = render(model_name, version, settings(**changes))
    assert tuple(files) == MANIFEST_FILES
    for text in files.values():
        first = text.decode().splitlines()[0]
        assert first.startswith("# ") and "kubectl apply -f" in first
    return {name: list(yaml.safe_load_all(text)) for name, text in files.items()}


def test_inference_service_matches_kserve_schema(kserve_client: KServeClient) -> None:
    (doc,) = parsed(namespace="models")["inferenceservice.yaml"]
    isvc = assert_schema_round_trip(doc, "V1beta1InferenceService", kserve_client)
    (container,) = isvc.spec.predictor.containers
    # The nested kubernetes types really were built, not passed through as dicts.
    assert isinstance(container, k8s_models.V1Container)
    assert isinstance(container.readiness_probe.http_get, k8s_models.V1HTTPGetAction)
    assert isinstance(container.security_context, k8s_models.V1SecurityContext)
    assert isinstance(isvc.metadata, k8s_models.V1ObjectMeta)
    assert container.name == CONTAINER_NAME
    assert container.image == IMAGE
    assert container.command == ["python", "-m", "mnist_ct.deploy"]
    assert container.args == predictor_args("mnist", 2)
    assert container.ports[0].container_port == 8080 and container.ports[0].name == "http1"
    assert container.readiness_probe.http_get.path == "/v2/models/mnist/ready"
    assert container.liveness_probe.http_get.path == "/v2/health/live"
    assert container.security_context.run_as_non_root is True and container.security_context.run_as_user == 10001
    assert container.security_context.allow_privilege_escalation is False
    assert container.security_context.read_only_root_filesystem is None
    assert container.resources.requests == {"cpu": "1", "memory": "1Gi"}
    assert container.resources.limits == {"cpu": "2", "memory": "2Gi"}
    assert isvc.metadata.namespace == "models"
    assert isvc.metadata.annotations == {"mnist-ct/version": "run-2024.01_a"}


def test_plain_deployment_matches_kubernetes_schema(k8s: ApiClient) -> None:
    deployment_doc, service_doc = parsed(replicas=3)["deployment.yaml"]
    deployment = assert_schema_round_trip(deployment_doc, "V1Deployment", k8s)
    service = assert_schema_round_trip(service_doc, "V1Service", k8s)
    assert deployment.spec.replicas == 3
    (container,) = deployment.spec.template.spec.containers
    assert isinstance(container, k8s_models.V1Container)
    assert container.args == predictor_args("mnist", 2)
    assert deployment.spec.selector.match_labels.items() <= deployment.spec.template.metadata.labels.items()
    assert service.spec.selector == deployment.spec.selector.match_labels
    assert service.spec.type == "ClusterIP"
    (port,) = service.spec.ports
    assert (port.port, port.target_port, port.name) == (80, 8080, "http")
    (volume,) = deployment.spec.template.spec.volumes
    assert volume.persistent_volume_claim.claim_name == "deploy-model-pvc" and volume.persistent_volume_claim.read_only


def test_containers_are_the_same_but_for_how_the_model_arrives(k8s: ApiClient) -> None:
    docs = parsed()
    isvc_container = dict(docs["inferenceservice.yaml"][0]["spec"]["predictor"]["containers"][0])
    plain_container = dict(docs["deployment.yaml"][0]["spec"]["template"]["spec"]["containers"][0])
    assert isvc_container.pop("env")[0]["name"] == STORAGE_URI_ENV
    assert plain_container.pop("volumeMounts")
    assert isvc_container == plain_container
    assert_schema_round_trip(plain_container, "V1Container", k8s)


def test_storage_uri_and_mount_name_the_same_pvc_path() -> None:
    docs = parsed("My_Model", pvc="models.store")
    (isvc,) = docs["inferenceservice.yaml"]
    deployment, _ = docs["deployment.yaml"]
    (env,) = isvc["spec"]["predictor"]["containers"][0]["env"]
    (mount,) = deployment["spec"]["template"]["spec"]["containers"][0]["volumeMounts"]
    (volume,) = deployment["spec"]["template"]["spec"]["volumes"]
    assert env == {"name": "STORAGE_URI", "value": "pvc://models.store/kserve/My_Model"}
    assert f"pvc://{volume['persistentVolumeClaim']['claimName']}/{mount['subPath']}" == env["value"]
    assert mount["mountPath"] == "/mnt/models" and mount["readOnly"] is True
    assert mount["name"] == volume["name"]


def test_names_and_labels_are_kubernetes_safe(k8s: ApiClient) -> None:
    version = "A" * 100 + ".-"
    docs = parsed("My_Model", version)
    (isvc,) = docs["inferenceservice.yaml"]
    deployment, service = docs["deployment.yaml"]
    for doc in (isvc, deployment, service):
        assert doc["metadata"]["name"] == "my-model"
        labels = doc["metadata"]["labels"]
        assert labels["mnist-ct/model"] == "My_Model"
        assert labels["mnist-ct/version"] == "A" * 63  # cut to a label value; the annotation keeps all of it
        assert doc["metadata"]["annotations"] == {"mnist-ct/version": version}
        assert "namespace" not in doc["metadata"]
    container = isvc["spec"]["predictor"]["containers"][0]
    assert "--model-name" in container["args"] and "My_Model" in container["args"]  # the server's own name
    assert container["readinessProbe"]["httpGet"]["path"] == "/v2/models/My_Model/ready"


def test_predictor_args_are_one_list() -> None:
    assert predictor_args("mnist", 4, model_dir="/models", port=9000) == [
        "serve",
        "--runtime",
        "kserve",
        "--model-dir",
        "/models",
        "--model-name",
        "mnist",
        "--port",
        "9000",
        "--workers",
        "4",
    ]


def test_settings_default_to_the_briefed_values() -> None:
    s = settings()
    assert (s.pvc, s.namespace, s.workers, s.replicas) == ("deploy-model-pvc", None, 2, 1)
    assert (s.cpu_request, s.cpu_limit, s.memory_request, s.memory_limit) == ("1", "2", "1Gi", "2Gi")


@pytest.mark.parametrize(
    ("changes", "named"),
    [
        ({"image": "registry.example/mnist-ct/deploy:1.0"}, "image"),
        ({"image": "registry.example/deploy@sha256:abc"}, "image"),
        ({"image": "registry.example/deploy:1.0@sha256:" + "AB" * 32}, "image"),
        ({"pvc": "Deploy_PVC"}, "pvc"),
        ({"pvc": "-pvc"}, "pvc"),
        ({"pvc": "a" * 254}, "pvc"),
        ({"namespace": "my.ns"}, "namespace"),
        ({"workers": 0}, "workers"),
        ({"workers": True}, "workers"),
        ({"workers": 2.0}, "workers"),
        ({"replicas": 0}, "replicas"),
        ({"cpu_request": "one"}, "cpu_request"),
        ({"cpu_request": "-1"}, "cpu_request"),
        ({"cpu_request": "0"}, "cpu_request"),
        ({"memory_limit": "2GB"}, "memory_limit"),
        ({"cpu_request": "1e3m"}, "cpu_request"),  # a suffix or an exponent, not both
        ({"memory_limit": 2}, "memory_limit"),
        ({"memory_request": "1e999999999"}, "memory_request"),
        ({"cpu_request": "3", "cpu_limit": "2500m"}, "cpu_request"),
        ({"memory_request": "3Gi", "memory_limit": "3G"}, "memory_request"),
    ],
)
def test_bad_settings_are_refused_naming_the_option(changes: dict[str, Any], named: str) -> None:
    with pytest.raises(UsageError, match=named) as caught:
        settings(**changes)
    assert "\n" not in str(caught.value)


@pytest.mark.parametrize("quantities", [("500m", "1.5"), ("0.5", "2"), ("1e-1", "2E0")])
def test_good_cpu_quantities_are_accepted(quantities: tuple[str, str]) -> None:
    request, limit = quantities
    assert settings(cpu_request=request, cpu_limit=limit).cpu_request == request


@pytest.mark.parametrize("name", ["a/b", "-mnist", "mnist-", "mnist_", "m" * 64, ""])
def test_bad_model_names_are_refused(name: str) -> None:
    with pytest.raises(UsageError, match="model name"):
        render(name, "v1", settings())


@pytest.mark.parametrize("build", [inference_service, plain_deployment])
def test_bad_version_is_refused(build: Any) -> None:
    with pytest.raises(UsageError, match="version"):
        build("mnist", "a\nb", settings())
