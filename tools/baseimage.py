"""A local stand-in for the public Python base image, for machines that cannot reach Docker Hub.

Debian bookworm (minbase) with python3 (3.11), python3-venv and ca-certificates, made by debootstrap,
trimmed (no apt lists or caches, docs, translations, logs), the standard library byte-compiled as unchecked-hash .pyc
(valid whatever the files' mtimes), packed as one tar with --numeric-owner --sort=name --mtime=@0 and
built `FROM scratch` + `ADD`. Needs root (or sudo) for debootstrap and network access to a Debian mirror.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
from pathlib import Path

from tools import oci

DEFAULT_TAG = "localhost/mnist-ct-base:bookworm"
DEFAULT_MIRROR = "http://deb.debian.org/debian"
PACKAGES = ("python3", "python3-venv", "ca-certificates")

CONTAINERFILE = """\
FROM scratch
ADD rootfs.tar /
ENV LANG=C.UTF-8
CMD ["python3"]
"""

TRIM = (
    "var/cache/apt/archives/*.deb",
    "var/cache/apt/*.bin",
    "var/lib/apt/lists/*",
    "usr/share/doc/*",
    "usr/share/man/*",
    "usr/share/info/*",
    "usr/share/locale/*",
    "var/cache/debconf/*-old",
    "var/lib/dpkg/*-old",
)


def _root_cmd(argv: list[str]) -> list[str]:
    return argv if os.geteuid() == 0 else ["sudo", "-n", *argv]


def _sh(argv: list[str]) -> None:
    done = subprocess.run(_root_cmd(argv), capture_output=True, text=True, check=False)
    if done.returncode != 0:
        tail = (done.stderr.strip() or done.stdout.strip()).splitlines()[-10:]
        raise oci.OciError(f"{argv[0]} failed (exit {done.returncode}):\n" + "\n".join(tail))


def build_base_image(
    tag: str = DEFAULT_TAG,
    *,
    suite: str = "bookworm",
    mirror: str = DEFAULT_MIRROR,
    builder: str | None = None,
    workdir: Path | None = None,
) -> str:
    """Build the base image as `tag` with the detected builder; returns the builder used."""
    if shutil.which("debootstrap") is None and not Path("/usr/sbin/debootstrap").exists():
        raise oci.OciError("debootstrap is not installed: apt-get install debootstrap")
    builder = oci.detect_builder(builder)
    with tempfile.TemporaryDirectory(dir=workdir) as tmp:
        rootfs, context = Path(tmp) / "rootfs", Path(tmp) / "context"
        context.mkdir()
        _sh(["debootstrap", "--variant=minbase", f"--include={','.join(PACKAGES)}", suite, str(rootfs), mirror])
        script = (
            'set -e; cd "$1"; rm -rf ' + " ".join(TRIM) + "; "
            "find var/log -type f -exec truncate -s 0 {} +; : > etc/resolv.conf; : > etc/hostname; "
            "rm -f etc/machine-id var/lib/dbus/machine-id; "
            "chroot . python3 -m compileall -q -f --invalidation-mode unchecked-hash "
            "/usr/lib/python3.11 /usr/lib/python3/dist-packages >/dev/null || true; "
            'tar --create --file "$2" --numeric-owner --sort=name --mtime=@0 --xattrs '
            "--pax-option=exthdr.name=%d/PaxHeaders/%f,delete=atime,delete=ctime ."
        )
        _sh(["sh", "-c", script, "trim-and-pack", str(rootfs), str(context / "rootfs.tar")])
        (context / "Containerfile").write_text(CONTAINERFILE)
        oci.build(builder, context / "Containerfile", context, tag, build_args={})
        _sh(["rm", "-rf", str(rootfs)])
    return builder
