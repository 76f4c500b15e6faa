"""Build, push and inspect OCI images with whatever builder is present (standard library only).

Builders, in order of preference: Docker (buildx, when a daemon answers), buildah (daemonless:
`bud --isolation chroot`), podman. `MNIST_CT_BUILDER=docker|buildah|podman` forces one. The choice is
orchestration's containers.detect_engine (loaded from its file: tools needs no install of orchestration).

Reproducibility: every build gets `SOURCE_DATE_EPOCH=0` (a build arg, so pip writes hash-based .pyc
and useradd a fixed date) and a fixed image timestamp (`--timestamp 0`, buildx `rewrite-timestamp`);
the wheelhouse's files get a fixed mtime. The same inputs then give the same manifest digest on the same
builder and storage driver. Digests are always read back from the registry, never predicted.

Layer cache: buildah and podman (before buildah 1.39) ignore the content of `RUN --mount=type=bind`
sources when they reuse cached layers (containers/buildah#5400), so every build also passes the content
hashes of the wheelhouse's `deps/` and `local/` folders as `DEPS_SHA256` / `LOCAL_SHA256` build args; a
Dockerfile that declares them before the matching RUN gets a correct cache. One that does not is built
with `--no-cache` by those builders (correct, slower).
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import subprocess
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

from tools import monorepo

ROOT = Path(__file__).resolve().parents[1]

BUILDERS = ("docker", "buildah", "podman")
EPOCH = "0"


class OciError(Exception):
    """A builder, registry or image operation failed (one line)."""


def run(argv: list[str], *, env: dict[str, str] | None = None, timeout: float | None = None) -> str:
    """Run a command; its stdout. OciError with the tail of its output if it fails."""
    full_env = {**os.environ, **(env or {})}
    try:
        done = subprocess.run(argv, capture_output=True, text=True, env=full_env, timeout=timeout, check=False)
    except FileNotFoundError:
        raise OciError(f"{argv[0]}: not installed") from None
    except subprocess.TimeoutExpired:
        raise OciError(f"{' '.join(argv[:3])}: no answer in {timeout} s") from None
    if done.returncode != 0:
        tail = (done.stderr.strip() or done.stdout.strip()).splitlines()[-15:]
        raise OciError(f"{' '.join(argv[:3])} ... failed (exit {done.returncode}):\n" + "\n".join(tail))
    return done.stdout


def insecure(reference: str) -> bool:
    """Registries on this machine speak plain HTTP (localhost, 127.0.0.1, [::1])."""
    host = reference.split("/", 1)[0]
    return re.fullmatch(r"(localhost|127\.0\.0\.1|\[::1\])(:\d+)?", host) is not None


def split_reference(reference: str) -> tuple[str, str | None, str | None]:
    """(repository, tag, digest) of `repo[:tag][@sha256:...]`."""
    repo, _, digest = reference.partition("@")
    name, colon, tag = repo.rpartition(":")
    if colon and "/" not in tag:
        repo = name
    else:
        tag = ""
    return repo, tag or None, digest or None


# --- builders -------------------------------------------------------------------------------------------


# Docker builds need buildx as well as a daemon that answers.
DOCKER_BUILDS = (("docker", "buildx", "version"), ("docker", "info", "--format", "{{.ServerVersion}}"))


def detect_builder(prefer: str | None = None) -> str:
    """The builder to use: `prefer`, else $MNIST_CT_BUILDER, else docker (buildx, daemon up), buildah, podman.

    The choice is orchestration's containers.detect_engine (one implementation), loaded by path like the
    lock module, with the builder's variable and probes.
    """
    containers = monorepo.containers_module(ROOT)
    try:
        return containers.detect_engine(
            prefer, variable="MNIST_CT_BUILDER", docker_probes=DOCKER_BUILDS, what="builder"
        )
    except containers.ContainerError as e:
        raise OciError(str(e)) from None


def declares_args(dockerfile: Path, *names: str) -> bool:
    declared = set(re.findall(r"^\s*ARG\s+([A-Za-z_][A-Za-z0-9_]*)", dockerfile.read_text(), re.MULTILINE))
    return all(n in declared for n in names)


@dataclass
class Built:
    tag: str  # the local name, also the push destination: <registry>/mnist-ct-<step>:<version>
    digest: str | None  # manifest digest the registry returned, when pushed
    seconds: float


def build(
    builder: str,
    dockerfile: Path,
    context: Path,
    tag: str,
    *,
    build_args: dict[str, str] | None = None,
    labels: dict[str, str] | None = None,
    no_cache: bool = False,
    push: bool = False,
) -> Built:
    """Build `dockerfile` over `context` as `tag`; push it when asked and return the registry's digest."""
    args = {"SOURCE_DATE_EPOCH": EPOCH, **(build_args or {})}
    arg_flags = [f for k, v in sorted(args.items()) for f in ("--build-arg", f"{k}={v}")]
    label_flags = [f for k, v in sorted((labels or {}).items()) for f in ("--label", f"{k}={v}")]
    started = time.monotonic()
    digest = None
    if builder == "docker":
        with tempfile.TemporaryDirectory() as tmp:
            meta = Path(tmp) / "metadata.json"
            # type=image pushes (push=true); type=docker loads into the daemon. Both rewrite file timestamps.
            output = f"type={'image' if push else 'docker'},name={tag},rewrite-timestamp=true"
            if push:
                output += ",push=true" + (",registry.insecure=true" if insecure(tag) else "")
            argv = ["docker", "buildx", "build", "--provenance=false", "--sbom=false", "--metadata-file", str(meta)]
            argv += ["--file", str(dockerfile), "--tag", tag, *arg_flags, *label_flags, "--output", output]
            argv += (["--no-cache"] if no_cache else []) + [str(context)]
            run(argv, env={"SOURCE_DATE_EPOCH": EPOCH, "DOCKER_BUILDKIT": "1"})
            if push:
                digest = json.loads(meta.read_text()).get("containerimage.digest")
    else:
        cache_safe = declares_args(dockerfile, "DEPS_SHA256", "LOCAL_SHA256")
        argv = [builder, "bud" if builder == "buildah" else "build", "--isolation", "chroot", "--layers"]
        argv += ["--timestamp", EPOCH, "--format", "oci", "--identity-label=false", "--pull=false"]
        argv += ["--file", str(dockerfile), "--tag", tag, *arg_flags, *label_flags]
        argv += ["--no-cache"] if (no_cache or not cache_safe) else []
        run([*argv, str(context)], env={"BUILDAH_ISOLATION": "chroot"})
        if push:
            digest = push_image(builder, tag, tag)
    if push and (not digest or not re.fullmatch(r"sha256:[0-9a-f]{64}", digest)):
        raise OciError(f"{tag}: the registry returned no manifest digest ({digest!r})")
    return Built(tag, digest, time.monotonic() - started)


def push_image(builder: str, image: str, destination: str) -> str:
    """Push a local image to `destination` (repo:tag); the manifest digest the registry returned."""
    tls = [f"--tls-verify={'false' if insecure(destination) else 'true'}"]
    with tempfile.TemporaryDirectory() as tmp:
        digestfile = Path(tmp) / "digest"
        if builder == "docker":
            run(["docker", "push", destination])
            out = run(["docker", "image", "inspect", "--format", "{{json .RepoDigests}}", destination])
            repo = split_reference(destination)[0]
            digests = [d.split("@", 1)[1] for d in json.loads(out) or [] if d.startswith(repo + "@")]
            return digests[0] if digests else ""
        run([builder, "push", *tls, "--digestfile", str(digestfile), image, f"docker://{destination}"])
        return digestfile.read_text().strip()


def image_json(builder: str, image: str) -> dict:
    if builder == "buildah":
        return json.loads(run(["buildah", "inspect", "--type", "image", image]))
    return json.loads(run([builder, "image", "inspect", image]))[0]


def diff_ids(builder: str, image: str) -> list[str]:
    """The uncompressed digests of the image's layers, base first."""
    doc = image_json(builder, image)
    if builder == "buildah":
        return list(doc["OCIv1"]["rootfs"]["diff_ids"])
    return list(doc["RootFS"]["Layers"])


def remove_image(builder: str, image: str) -> None:
    with contextlib.suppress(OciError):
        run([builder, "rmi", "--force", image] if builder != "docker" else ["docker", "image", "rm", "-f", image])


def remove_images_under(builder: str, prefix: str) -> int:
    """Remove every local image with a name under `prefix` (e.g. a test registry's address); how many."""
    if builder == "docker":
        names = run(["docker", "image", "ls", "--format", "{{.Repository}}:{{.Tag}}"]).split()
    else:
        images = json.loads(run([builder, "images", "--json"]) or "[]")
        names = [n for image in images for n in image.get("names") or []]
    doomed = sorted({n for n in names if n.startswith(prefix)})
    for name in doomed:
        remove_image(builder, name)
    return len(doomed)


def prune_cache(builder: str) -> None:
    """Drop dangling images (the --layers cache), so the next build starts cold."""
    with contextlib.suppress(OciError):
        run([builder, "image", "prune", "--force"] if builder != "buildah" else ["buildah", "rmi", "--prune"])


def image_exists(builder: str, image: str) -> bool:
    try:
        image_json(builder, image)
        return True
    except (OciError, json.JSONDecodeError, IndexError, KeyError):
        return False


# --- registry side ------------------------------------------------------------------------------------


def registry_manifest(reference: str) -> dict:
    """The raw manifest of `repo@sha256:...` or `repo:tag` as the registry serves it (skopeo)."""
    tls = f"--tls-verify={'false' if insecure(reference) else 'true'}"
    return json.loads(run(["skopeo", "inspect", tls, "--raw", f"docker://{reference}"], timeout=120))


def pushed_size(reference: str) -> int:
    """Bytes a pull transfers: the config plus the compressed layers of the manifest."""
    manifest = registry_manifest(reference)
    return int(manifest.get("config", {}).get("size", 0)) + sum(int(lay["size"]) for lay in manifest.get("layers", []))


def unpacked_size(builder: str, image: str) -> int:
    """Bytes the image takes unpacked, counted by the builder that built it (OciError if it cannot say).

    docker and podman: `image inspect` Size. buildah prints no byte count (`buildah images` shows a rounded
    "127 MB"), so its own storage is read: `buildah info` names the containers-storage graph root and driver,
    `<driver>-images/images.json` the image's top layer, and `<driver>-layers/layers.json` each layer's
    uncompressed size (`diff-size`) and parent: the layers' sizes are summed, base to top.
    """
    if builder != "buildah":
        out = run([builder, "image", "inspect", "--format", "{{.Size}}", image]).strip()
        try:
            return int(out)
        except ValueError:
            raise OciError(f"{builder} image inspect {image}: size {out!r} is not a number of bytes") from None
    image_id = image_json("buildah", image)["FromImageID"]
    info = json.loads(run(["buildah", "info"]))["store"]
    root, driver = Path(info["GraphRoot"]), info["GraphDriverName"]
    try:
        images = json.loads((root / f"{driver}-images" / "images.json").read_text())
        layers = {layer["id"]: layer for layer in json.loads((root / f"{driver}-layers" / "layers.json").read_text())}
    except (OSError, ValueError) as e:
        raise OciError(f"{image}: cannot read buildah's storage under {root} ({e})") from None
    top = next((i.get("layer") for i in images if i["id"] == image_id), None)
    total, seen = 0, set()
    while top:
        if top not in layers or top in seen or layers[top].get("diff-size") is None:
            raise OciError(f"{image}: layer {top[:12]} of {image_id[:12]} has no size in {root}")
        seen.add(top)
        total += int(layers[top]["diff-size"])
        top = layers[top].get("parent")
    if not total:
        raise OciError(f"{image}: image {image_id[:12]} has no layers in {root}")
    return total
