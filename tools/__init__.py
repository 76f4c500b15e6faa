"""mnist-ct delivery tooling (standard library only): package discovery, change detection, images.

The noxfile imports these modules; `python -m tools.delivery --help` is the same tooling without nox.
"""
