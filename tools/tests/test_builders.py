"""The image builder is chosen by orchestration's container engine detection (one implementation)."""

from __future__ import annotations

import pytest
from conftest import REPO

from tools import monorepo, oci


def test_the_builder_choice_is_orchestrations_engine_detection(monkeypatch):
    containers = monorepo.containers_module(REPO)
    calls = []

    def detect_engine(prefer, **options):
        calls.append((prefer, options))
        return "podman"

    monkeypatch.setattr(containers, "detect_engine", detect_engine)
    assert oci.detect_builder("podman") == "podman"
    assert calls == [
        ("podman", {"variable": "MNIST_CT_BUILDER", "docker_probes": oci.DOCKER_BUILDS, "what": "builder"})
    ]


def test_an_unknown_or_missing_builder_is_one_clear_error(monkeypatch, tmp_path):
    monkeypatch.setenv("PATH", str(tmp_path))  # nothing installed
    monkeypatch.setenv("MNIST_CT_ENGINE", "docker")  # the runner's variable: not the builder's
    monkeypatch.setenv("MNIST_CT_BUILDER", "kaniko")
    with pytest.raises(oci.OciError, match="unknown builder 'kaniko'"):
        oci.detect_builder()
    with pytest.raises(oci.OciError, match="builder buildah is not installed"):
        oci.detect_builder("buildah")
    monkeypatch.delenv("MNIST_CT_BUILDER")
    with pytest.raises(oci.OciError, match="no builder: install buildah"):
        oci.detect_builder()
