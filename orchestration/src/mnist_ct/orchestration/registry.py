"""Is `<repository>@sha256:...` in its registry? The Docker Registry HTTP API v2 (standard library only).

    HEAD /v2/<name>/manifests/<digest>   (Accept: OCI and Docker manifests and indexes)
    200: present; 404 (MANIFEST_UNKNOWN, NAME_UNKNOWN): absent; anything else: RegistryError (one line)

A 200 counts only as a registry's: with `Docker-Content-Digest` equal to the digest asked for, or (without
that header) `Docker-Distribution-API-Version: registry/2.0`. A web server that answers 200 to any path (a
wrong --registry, a proxy's login page) is a RegistryError, not "every image is there". An answer that is not
HTTP at all is a RegistryError too.

Standard library only, like lock.py: the delivery tooling (tools/delivery.py) loads this file by path, and
`mnist-ct release` imports it. Both ask the same question: release before uploading a pipeline whose images
must exist, build-changed before deciding that an unchanged step needs no build.

- Scheme: plain HTTP for loopback registries (localhost, 127.0.0.1, [::1], any port), as docker and buildah
  users run a local registry; HTTPS (verified) otherwise.
- Auth: on a 401, the `WWW-Authenticate` challenge is followed: `Bearer realm=...,service=...,scope=...`
  (a token from the realm, anonymously or with the credentials below), or `Basic` (the credentials).
  Credentials are read from the files buildah, podman, skopeo and docker write on login, the first that has
  an entry for the registry (containers-auth.json(5)): $REGISTRY_AUTH_FILE,
  ${XDG_RUNTIME_DIR}/containers/auth.json (else /run/containers/<uid>/auth.json),
  ${XDG_CONFIG_HOME:-~/.config}/containers/auth.json, ~/.docker/config.json; each `auths.<key>.auth`
  (base64 `user:password`), the key being the host or a `host/namespace` prefix of the repository.
  Credential helpers (`credHelpers`, `credsStore`) are not consulted. Credentials and tokens are never
  part of a message, and never follow a redirect (urllib would send them on to whatever host it names).
- Every request has a timeout of a few seconds.
"""

from __future__ import annotations

import base64
import http.client
import json
import os
import re
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Iterable, Mapping
from pathlib import Path

TIMEOUT_S = 5.0
MANIFEST_TYPES = (
    "application/vnd.oci.image.manifest.v1+json",
    "application/vnd.oci.image.index.v1+json",
    "application/vnd.docker.distribution.manifest.v2+json",
    "application/vnd.docker.distribution.manifest.list.v2+json",
)
DIGEST = re.compile(r"sha256:[0-9a-f]{64}")
LOOPBACK = re.compile(r"(localhost|127\.0\.0\.1|\[::1\])(:\d+)?")
DOCKER_HUB = "docker.io"  # the name in references and auth files; its API lives at registry-1.docker.io
DOCKER_HUB_ALIASES = ("index.docker.io", "registry-1.docker.io", "registry.hub.docker.com")


class RegistryError(Exception):
    """The registry could not answer whether an image exists (one line; never a credential).

    `unreachable` is True when no HTTP answer came at all (DNS, refused connection, timeout, TLS).
    """

    def __init__(self, message: str, *, unreachable: bool = False) -> None:
        super().__init__(message)
        self.unreachable = unreachable


def split_reference(reference: str) -> tuple[str, str, str]:
    """(registry host, repository name, digest) of `host/name@sha256:...`; ValueError if not that shape.

    As docker reads references: a first component without `.` or `:` (and not `localhost`) is a Docker Hub
    name, `library/` added to a single-component one.
    """
    repository, at, digest = reference.partition("@")
    if not at or not DIGEST.fullmatch(digest):
        raise ValueError(f"{reference!r} is not <repository>@sha256:<64 hex digits>")
    first, slash, rest = repository.partition("/")
    if slash and ("." in first or ":" in first or first == "localhost"):
        host, name = first, rest
    else:
        host, name = DOCKER_HUB, repository if slash else f"library/{repository}"
    if host in DOCKER_HUB_ALIASES:
        host = DOCKER_HUB
    if not name or ":" in name.rsplit("/", 1)[-1] or not re.fullmatch(r"[a-z0-9]+([._/-][a-z0-9]+)*", name):
        raise ValueError(f"{reference!r}: {name!r} is not a repository name (lower case, no tag)")
    return host, name, digest


def under(reference: str, registry: str) -> str:
    """The same repository name (its last component) and digest under another registry prefix.

    `ghcr.io/mnist-ct/mnist-ct-deploy@sha256:D` under `127.0.0.1:5000/mnist-ct` is
    `127.0.0.1:5000/mnist-ct/mnist-ct-deploy@sha256:D`: where build-changed pushed it (a manifest digest
    does not depend on the registry's name).
    """
    repository, _, digest = reference.partition("@")
    return f"{registry.rstrip('/')}/{repository.rsplit('/', 1)[-1]}@{digest}"


def base_url(host: str) -> str:
    if LOOPBACK.fullmatch(host):
        return f"http://{host}"
    return "https://registry-1.docker.io" if host == DOCKER_HUB else f"https://{host}"


# --- credentials ------------------------------------------------------------------------------------------


def auth_files(env: Mapping[str, str] = os.environ) -> list[Path]:
    """The auth files, in the order containers/image reads them (then docker's)."""
    home = Path(env.get("HOME") or Path.home())
    files = [Path(env["REGISTRY_AUTH_FILE"])] if env.get("REGISTRY_AUTH_FILE") else []
    runtime = env.get("XDG_RUNTIME_DIR")
    files.append(
        Path(runtime, "containers", "auth.json") if runtime else Path(f"/run/containers/{os.getuid()}/auth.json")
    )
    files.append(Path(env.get("XDG_CONFIG_HOME") or home / ".config") / "containers" / "auth.json")
    files.append(home / ".docker" / "config.json")
    return files


def _auth_key(key: str) -> str:
    """An `auths` key as a `host[/path]` prefix: docker writes `https://index.docker.io/v1/`, podman `ghcr.io`."""
    if "://" in key:
        key = urllib.parse.urlsplit(key).netloc  # a URL names a registry, whatever its path
    key = key.rstrip("/")
    host, slash, path = key.partition("/")
    host = DOCKER_HUB if host in DOCKER_HUB_ALIASES else host
    return host + slash + path


def credentials(host: str, name: str, env: Mapping[str, str] = os.environ) -> tuple[str, str] | None:
    """(user, password) for `host/name` from the first auth file with an entry for it; None: anonymous."""
    wanted = f"{host}/{name}".split("/")
    prefixes = ["/".join(wanted[:i]) for i in range(len(wanted), 0, -1)]  # most specific first
    for path in auth_files(env):
        try:
            auths = json.loads(path.read_text()).get("auths") or {}
        except (OSError, ValueError, AttributeError):
            continue  # missing or unreadable: the next file, as the containers tools do
        entries = {_auth_key(k): v for k, v in auths.items() if isinstance(v, dict) and v.get("auth")}
        for prefix in prefixes:
            if prefix in entries:
                try:
                    user, sep, password = base64.b64decode(entries[prefix]["auth"]).decode().partition(":")
                except (ValueError, UnicodeDecodeError):
                    raise RegistryError(f"{path}: the entry for {prefix} is not base64 user:password") from None
                if sep:
                    return user, password
    return None


# --- the check --------------------------------------------------------------------------------------------


def _opener(host: str) -> urllib.request.OpenerDirector:
    # A loopback registry is this machine's: never through a proxy from the environment.
    if LOOPBACK.fullmatch(host):
        return urllib.request.build_opener(urllib.request.ProxyHandler({}))
    return urllib.request.build_opener()


def _challenge(header: str) -> tuple[str, dict[str, str]]:
    """`Bearer realm="...",service="...",scope="..."` -> ("bearer", {realm, service, scope})."""
    scheme, _, params = header.strip().partition(" ")
    found = re.findall(r'(\w+)\s*=\s*(?:"([^"]*)"|([^,\s]*))', params)
    return scheme.lower(), {k.lower(): quoted or bare for k, quoted, bare in found}


def _basic(creds: tuple[str, str]) -> str:
    return "Basic " + base64.b64encode(f"{creds[0]}:{creds[1]}".encode()).decode()


class Client:
    """Checks manifests in registries, keeping one token per (host, repository) for the checks that follow."""

    def __init__(self, env: Mapping[str, str] = os.environ, timeout: float = TIMEOUT_S) -> None:
        self.env = env
        self.timeout = timeout
        self.authorization: dict[tuple[str, str], str] = {}

    def _open(self, host: str, request: urllib.request.Request, what: str):
        try:
            return _opener(host).open(request, timeout=self.timeout)
        except urllib.error.HTTPError:
            raise
        except (urllib.error.URLError, OSError, ValueError) as e:
            reason = getattr(e, "reason", None) or e.__class__.__name__
            raise RegistryError(f"cannot reach the registry {host} ({what}: {reason})", unreachable=True) from None
        except http.client.HTTPException as e:  # BadStatusLine and kin: something answered, not in HTTP
            detail = f"{e.__class__.__name__}: {str(e).strip()[:60]!r}" if str(e).strip() else e.__class__.__name__
            raise RegistryError(f"{host} did not answer in HTTP ({what}: {detail}): is it a registry?") from None

    def _token(self, host: str, name: str, params: dict[str, str]) -> str:
        realm = params.get("realm")
        if not realm or not realm.startswith(("https://", "http://")):
            raise RegistryError(f"{host} asked for a token without a usable realm ({realm!r})")
        query = {k: params[k] for k in ("service", "scope") if params.get(k)}
        query.setdefault("scope", f"repository:{name}:pull")
        request = urllib.request.Request(f"{realm}?{urllib.parse.urlencode(query)}")
        creds = credentials(host, name, self.env)
        if creds:
            request.add_unredirected_header("Authorization", _basic(creds))
        realm_host = urllib.parse.urlsplit(realm).netloc
        try:
            with self._open(realm_host, request, "token") as response:
                doc = json.loads(response.read())
        except urllib.error.HTTPError as e:
            who = "with the credentials of the auth file" if creds else "anonymously"
            raise RegistryError(f"{realm_host} refused a pull token for {host}/{name} {who}: HTTP {e.code}") from None
        except ValueError:
            raise RegistryError(f"{realm_host}: the token answer for {host}/{name} is not JSON") from None
        token = (doc.get("token") or doc.get("access_token")) if isinstance(doc, dict) else None
        if not isinstance(token, str) or not token:
            raise RegistryError(f"{realm_host}: the token answer for {host}/{name} has no token")
        return "Bearer " + token

    def _head(self, host: str, name: str, digest: str, authorization: str | None) -> int | urllib.error.HTTPError:
        request = urllib.request.Request(f"{base_url(host)}/v2/{name}/manifests/{digest}", method="HEAD")
        request.add_header("Accept", ", ".join(MANIFEST_TYPES))
        if authorization:
            request.add_unredirected_header("Authorization", authorization)
        try:
            with self._open(host, request, f"HEAD {name}@{digest[:19]}...") as response:
                if response.status == 200:
                    _check_registry_answer(host, name, digest, response.headers)
                return response.status
        except urllib.error.HTTPError as e:
            e.close()  # the status and headers are read; the connection is not needed
            return e

    def exists(self, reference: str) -> bool:
        """True when `repo@sha256:...` is in its registry, False when the registry says it is not."""
        try:
            host, name, digest = split_reference(reference)
        except ValueError as e:
            raise RegistryError(str(e)) from None
        key = (host, name)
        answer = self._head(host, name, digest, self.authorization.get(key))
        if isinstance(answer, urllib.error.HTTPError) and answer.code == 401 and key not in self.authorization:
            scheme, params = _challenge(answer.headers.get("WWW-Authenticate", ""))
            if scheme == "bearer":
                self.authorization[key] = self._token(host, name, params)
            elif scheme == "basic":
                creds = credentials(host, name, self.env)
                if creds is None:
                    raise RegistryError(
                        f"{host} needs credentials for {name}: log in (buildah/podman/docker login {host})"
                    )
                self.authorization[key] = _basic(creds)
            else:
                raise RegistryError(f"{host} answered 401 for {name} with no usable challenge ({scheme or 'none'})")
            answer = self._head(host, name, digest, self.authorization[key])
        if not isinstance(answer, urllib.error.HTTPError):
            if answer == 200:
                return True
            raise RegistryError(f"{host} answered HTTP {answer} for {name}@{digest}: not a registry v2 answer")
        if answer.code == 404:
            return False
        if answer.code in (401, 403):
            raise RegistryError(
                f"{host} refused {name}@{digest[:19]}... (HTTP {answer.code}): log in with pull access "
                f"(buildah/podman/docker login {host})"
            )
        raise RegistryError(f"{host} answered HTTP {answer.code} {answer.reason} for {name}@{digest[:19]}...")


def _check_registry_answer(host: str, name: str, digest: str, headers: http.client.HTTPMessage) -> None:
    """A 200 to a manifest HEAD: refused (RegistryError) unless a registry v2 gave it for this digest."""
    found = headers.get("Docker-Content-Digest")
    if found is not None and found.strip() != digest:
        raise RegistryError(
            f"{host} answered for {name}@{digest[:19]}... with another digest ({found.strip()[:19]}...)"
        )
    if found is None and not (headers.get("Docker-Distribution-API-Version") or "").startswith("registry/2"):
        raise RegistryError(
            f"{host} answered HTTP 200 for {name}@{digest[:19]}... without Docker-Content-Digest or "
            "Docker-Distribution-API-Version: not a registry v2 answer (is it a registry?)"
        )


def exists(reference: str, env: Mapping[str, str] = os.environ, timeout: float = TIMEOUT_S) -> bool:
    """Whether `repo@sha256:...` is in its registry; RegistryError when the registry cannot say."""
    return Client(env, timeout).exists(reference)


def missing(references: Iterable[str], env: Mapping[str, str] = os.environ, timeout: float = TIMEOUT_S) -> list[str]:
    """The references (in the order given, each once) that their registries do not have."""
    client = Client(env, timeout)
    return [ref for ref in dict.fromkeys(references) if not client.exists(ref)]
