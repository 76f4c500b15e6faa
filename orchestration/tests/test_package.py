import tomllib
from importlib import metadata
from pathlib import Path


def test_orchestration_is_installed_with_kfp():
    import kfp

    pyproject = tomllib.loads((Path(__file__).parent.parent / "pyproject.toml").read_text())
    assert metadata.version("mnist-ct-orchestration") == pyproject["project"]["version"]
    assert kfp.__version__.startswith("2.")
