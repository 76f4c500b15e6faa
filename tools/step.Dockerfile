# syntax=docker/dockerfile:1
# The image of the step mnist_ct.STEP_MODULE, rendered from tools/step.Dockerfile: edit that template, then
# run `python -m tools.delivery dockerfiles` (tools/tests fail while a step's Dockerfile differs from it).
# The build context is the wheelhouse that tools/wheelhouse.py makes: deps/ (third-party wheels +
# requirements.txt) and local/ (the step's and its libs' wheels). Build it with `nox -s build-changed`.
# Pinned by digest (docs/delivery.md says where it comes from and how to refresh it).
ARG BASE_IMAGE=docker.io/library/python:3.11-slim-bookworm@sha256:6d2502238109c929569ae99355e28890c438cb11bc88ef02cd189c173b3db07c
FROM ${BASE_IMAGE}
# Fixed timestamps for reproducible layers (pip writes hash-based .pyc with it).
ARG SOURCE_DATE_EPOCH=0
ENV PATH=/opt/venv/bin:$PATH PYTHONUNBUFFERED=1
# Third-party wheels first, so a code-only change rebuilds only the thin layer below.
# DEPS_SHA256/LOCAL_SHA256: the folders' content hashes, set by the tooling; they key the layer cache
# of builders that ignore bind-mounted content (buildah < 1.39, containers/buildah#5400).
# No pip in the image: the venv is made without it, and pip runs from its own wheel (deps/pip/, the
# constraints' version). --no-deps: requirements.txt is the whole resolved closure, less the distributions
# no step imports (tools/wheelhouse.py UNUSED). prune.txt: installed paths nothing imports at run time
# (test suites, C++ headers and test binaries; tools/wheelhouse.py PRUNE), deleted in this same layer so
# the image shrinks; `rm -r` without -f: a listed path that is not there fails the build.
ARG DEPS_SHA256=unset
RUN --mount=type=bind,source=deps,target=/wheels \
    python3 -m venv --without-pip /opt/venv \
    && pip_wheel="$(echo /wheels/pip/pip-*.whl)" \
    && python "$pip_wheel/pip" install --no-cache-dir --no-index --no-deps --find-links /wheels \
        -r /wheels/requirements.txt \
    && site="$(python -c 'import sysconfig; print(sysconfig.get_path("purelib"))')" \
    && xargs --no-run-if-empty --delimiter='\n' --arg-file=/wheels/prune.txt -I{} rm -r -- "$site/{}"
ARG LOCAL_SHA256=unset
RUN --mount=type=bind,source=local,target=/wheels --mount=type=bind,source=deps/pip,target=/pip \
    pip_wheel="$(echo /pip/pip-*.whl)" \
    && python "$pip_wheel/pip" install --no-cache-dir --no-index --no-deps /wheels/*.whl
RUN useradd --system --uid 10001 --no-create-home step
USER 10001
ENTRYPOINT ["python", "-m", "mnist_ct.STEP_MODULE"]
