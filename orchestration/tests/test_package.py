from importlib import metadata


def test_orchestration_is_installed_with_kfp():
    import kfp

    assert metadata.version("mnist-ct-orchestration") == "0.1.0"
    assert kfp.__version__.startswith("2.")
