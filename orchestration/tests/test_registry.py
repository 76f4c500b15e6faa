"""registry.py: is `repo@sha256:...` in its registry? Against a real docker-registry on 127.0.0.1 (tools/registry.py)
and, for the token and Basic challenges it does not make, a small http.server that answers like ghcr.io does."""

from __future__ import annotations

import base64
import contextlib
import json
import socket
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
from conftest import fake_digest, push_image

from mnist_ct.orchestration import registry
from mnist_ct.orchestration.registry import RegistryError

USER, PASSWORD = "ci-bot", "pw-9d1e-never-print-me"
TOKEN = "tok-77aa-never-print-me"


def no_auth_files(tmp_path: Path) -> dict[str, str]:
    """An environment whose auth files are all under tmp_path (none of this machine's own logins)."""
    return {"HOME": str(tmp_path / "home"), "XDG_RUNTIME_DIR": str(tmp_path / "run")}


def with_auth_file(tmp_path: Path, key: str, user: str = USER, password: str = PASSWORD) -> dict[str, str]:
    path = tmp_path / "auth.json"
    path.write_text(json.dumps({"auths": {key: {"auth": base64.b64encode(f"{user}:{password}".encode()).decode()}}}))
    return {**no_auth_files(tmp_path), "REGISTRY_AUTH_FILE": str(path)}


def closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]  # closed again on return: nothing listens there


# --- a real docker-registry -------------------------------------------------------------------------------


def test_a_pushed_manifest_is_present_by_digest(image_registry, tmp_path):
    digest = push_image(image_registry, "mnist-ct/mnist-ct-present", "present")
    assert digest == fake_digest("present")
    assert registry.exists(f"{image_registry}/mnist-ct/mnist-ct-present@{digest}", no_auth_files(tmp_path))


def test_a_digest_the_repository_lacks_is_absent(image_registry, tmp_path):
    push_image(image_registry, "mnist-ct/mnist-ct-one", "one")
    push_image(image_registry, "mnist-ct/mnist-ct-two", "two")
    env = no_auth_files(tmp_path)
    # MANIFEST_UNKNOWN: the repository exists, not with this digest (the other repository's image).
    assert not registry.exists(f"{image_registry}/mnist-ct/mnist-ct-one@{fake_digest('two')}", env)
    # NAME_UNKNOWN: no such repository at all.
    assert not registry.exists(f"{image_registry}/mnist-ct/never-pushed@{fake_digest('one')}", env)


def test_missing_lists_the_absent_references_once_in_order(image_registry, tmp_path):
    present = f"{image_registry}/mnist-ct/mnist-ct-listed@{push_image(image_registry, 'mnist-ct/mnist-ct-listed', 'l')}"
    absent_a = f"{image_registry}/mnist-ct/mnist-ct-a@{fake_digest('a')}"
    absent_b = f"{image_registry}/mnist-ct/mnist-ct-b@{fake_digest('b')}"
    refs = [absent_b, present, absent_a, absent_b]
    assert registry.missing(refs, no_auth_files(tmp_path)) == [absent_b, absent_a]


def test_a_malformed_reference_is_one_error_line_before_any_request():
    with pytest.raises(RegistryError, match=r"is not <repository>@sha256:<64 hex digits>"):
        registry.exists("127.0.0.1:1/mnist-ct/x:0.1.0")
    with pytest.raises(RegistryError, match="is not a repository name"):
        registry.exists(f"127.0.0.1:1/Mnist-CT/x@{fake_digest('x')}")


def test_an_unreachable_registry_is_an_error_in_seconds_not_absent(tmp_path):
    port = closed_port()
    started = time.monotonic()
    with pytest.raises(RegistryError, match=f"cannot reach the registry 127.0.0.1:{port}") as caught:
        registry.exists(f"127.0.0.1:{port}/mnist-ct/x@{fake_digest('x')}", no_auth_files(tmp_path), timeout=2)
    assert caught.value.unreachable
    assert time.monotonic() - started < 5


# --- where, how: schemes, names, auth files --------------------------------------------------------------


@pytest.mark.parametrize(
    ("host", "url"),
    [
        ("127.0.0.1:5000", "http://127.0.0.1:5000"),
        ("localhost", "http://localhost"),
        ("localhost:5000", "http://localhost:5000"),
        ("[::1]:5000", "http://[::1]:5000"),
        ("ghcr.io", "https://ghcr.io"),
        ("127.0.0.1.example.com", "https://127.0.0.1.example.com"),
        ("docker.io", "https://registry-1.docker.io"),
    ],
)
def test_loopback_registries_are_plain_http_every_other_one_https(host, url):
    assert registry.base_url(host) == url


def test_references_are_read_as_docker_reads_them():
    d = fake_digest("x")
    assert registry.split_reference(f"ghcr.io/mnist-ct/mnist-ct-deploy@{d}") == (
        "ghcr.io",
        "mnist-ct/mnist-ct-deploy",
        d,
    )
    assert registry.split_reference(f"localhost/x@{d}") == ("localhost", "x", d)
    assert registry.split_reference(f"python@{d}") == ("docker.io", "library/python", d)
    assert registry.split_reference(f"index.docker.io/me/app@{d}") == ("docker.io", "me/app", d)
    assert registry.under(f"ghcr.io/mnist-ct/mnist-ct-deploy@{d}", "127.0.0.1:5000/ci/") == (
        f"127.0.0.1:5000/ci/mnist-ct-deploy@{d}"
    )


def test_credentials_come_from_the_first_auth_file_with_an_entry_most_specific_key_first(tmp_path):
    env = no_auth_files(tmp_path)
    docker = Path(env["HOME"], ".docker", "config.json")
    docker.parent.mkdir(parents=True)
    auth = {"https://index.docker.io/v1/": "hub:1", "ghcr.io": "ghcr:2", "ghcr.io/mnist-ct": "team:3"}
    docker.write_text(
        json.dumps({"auths": {k: {"auth": base64.b64encode(v.encode()).decode()} for k, v in auth.items()}})
    )
    assert registry.credentials("docker.io", "library/python", env) == ("hub", "1")
    assert registry.credentials("ghcr.io", "mnist-ct/mnist-ct-deploy", env) == ("team", "3")
    assert registry.credentials("ghcr.io", "someone/else", env) == ("ghcr", "2")
    assert registry.credentials("quay.io", "x", env) is None
    podman = Path(env["XDG_RUNTIME_DIR"], "containers", "auth.json")  # what `buildah login` writes: read first
    podman.parent.mkdir(parents=True)
    podman.write_text(json.dumps({"auths": {"ghcr.io": {"auth": base64.b64encode(b"login:4").decode()}}}))
    assert registry.credentials("ghcr.io", "someone/else", env) == ("login", "4")
    assert registry.credentials("docker.io", "library/python", env) == ("hub", "1")


# --- challenges: a registry that wants a token (ghcr.io, Docker Hub) or Basic auth -------------------------


class AuthRegistry(BaseHTTPRequestHandler):
    """/v2/<name>/manifests/<digest>: 401 + challenge without the right Authorization; /token: a bearer token
    for the right Basic credentials (or anonymously, when `anonymous`)."""

    address = ""  # 127.0.0.1:PORT, set once the server listens
    scheme = "bearer"
    anonymous = False
    present: set[str] = set()
    seen: list[tuple[str, str, str | None]] = []

    def log_message(self, *args) -> None:
        pass

    def do_HEAD(self) -> None:
        auth = self.headers.get("Authorization")
        self.seen.append(("HEAD", self.path, auth))
        wanted = (
            f"Bearer {TOKEN}"
            if self.scheme == "bearer"
            else "Basic " + base64.b64encode(f"{USER}:{PASSWORD}".encode()).decode()
        )
        if auth != wanted:
            self.send_response(401)
            host = f"http://{self.address}"
            name = self.path.split("/manifests/")[0].removeprefix("/v2/")
            if self.scheme == "bearer":
                challenge = f'Bearer realm="{host}/token",service="test-registry",scope="repository:{name}:pull"'
            else:
                challenge = 'Basic realm="test-registry"'
            self.send_header("WWW-Authenticate", challenge)
        elif self.path.rsplit("/", 1)[-1] in self.present:
            self.send_response(200)
            self.send_header("Docker-Content-Digest", self.path.rsplit("/", 1)[-1])  # as ghcr.io answers
        else:
            self.send_response(404)
        self.send_header("Content-Length", "0")
        self.end_headers()

    def do_GET(self) -> None:
        auth = self.headers.get("Authorization")
        self.seen.append(("GET", self.path, auth))
        basic = "Basic " + base64.b64encode(f"{USER}:{PASSWORD}".encode()).decode()
        if not self.path.startswith("/token?") or (auth != basic and not self.anonymous):
            body = json.dumps({"errors": [{"code": "UNAUTHORIZED", "message": f"you sent {auth}"}]}).encode()
            self.send_response(401)
        else:
            body = json.dumps({"token": TOKEN}).encode()
            self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)


@pytest.fixture
def auth_registry() -> Iterator[type[AuthRegistry]]:
    class Handler(AuthRegistry):  # this test's own state
        present = {fake_digest("private")}
        seen: list[tuple[str, str, str | None]] = []

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    Handler.address = f"127.0.0.1:{server.server_port}"
    yield Handler
    server.shutdown()
    server.server_close()


def test_a_bearer_challenge_gets_a_token_with_the_auth_files_credentials(auth_registry, tmp_path):
    env = with_auth_file(tmp_path, auth_registry.address)
    ref = f"{auth_registry.address}/mnist-ct/private@{fake_digest('private')}"
    other = f"{auth_registry.address}/mnist-ct/private@{fake_digest('not there')}"
    assert registry.missing([ref, other], env) == [other]
    basic = "Basic " + base64.b64encode(f"{USER}:{PASSWORD}".encode()).decode()
    token_requests = [(path, auth) for method, path, auth in auth_registry.seen if method == "GET"]
    assert token_requests == [("/token?service=test-registry&scope=repository%3Amnist-ct%2Fprivate%3Apull", basic)]
    heads = [auth for method, _, auth in auth_registry.seen if method == "HEAD"]
    assert heads == [None, f"Bearer {TOKEN}", f"Bearer {TOKEN}"]  # one token for the repository's checks


def test_a_public_image_gets_an_anonymous_token(auth_registry, tmp_path):
    auth_registry.anonymous = True
    assert registry.exists(
        f"{auth_registry.address}/mnist-ct/private@{fake_digest('private')}", no_auth_files(tmp_path)
    )
    assert [auth for method, _, auth in auth_registry.seen if method == "GET"] == [None]


def test_a_refused_token_is_one_line_without_the_credentials(auth_registry, tmp_path, capsys):
    env = with_auth_file(tmp_path, auth_registry.address, password="wrong-" + PASSWORD)
    with pytest.raises(RegistryError) as caught:
        registry.exists(f"{auth_registry.address}/mnist-ct/private@{fake_digest('private')}", env)
    message = str(caught.value)
    assert message == (
        f"{auth_registry.address} refused a pull token for {auth_registry.address}/mnist-ct/private "
        "with the credentials of the auth file: HTTP 401"
    )
    assert PASSWORD not in message and TOKEN not in message and not caught.value.unreachable


def test_a_basic_challenge_is_answered_with_the_credentials(auth_registry, tmp_path):
    auth_registry.scheme = "basic"
    ref = f"{auth_registry.address}/mnist-ct/private@{fake_digest('private')}"
    assert registry.exists(ref, with_auth_file(tmp_path, auth_registry.address))
    with pytest.raises(
        RegistryError, match=f"needs credentials for mnist-ct/private: log in .*{auth_registry.address}"
    ):
        registry.exists(ref, no_auth_files(tmp_path))


# --- hosts that are not registries, redirects ---------------------------------------------------------------


@pytest.fixture
def serve() -> Iterator:
    """serve(handler class) -> "127.0.0.1:PORT" of an http.server answering with it (stopped after the test)."""
    servers: list[ThreadingHTTPServer] = []

    def start(handler: type[BaseHTTPRequestHandler]) -> str:
        server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
        threading.Thread(target=server.serve_forever, daemon=True).start()
        servers.append(server)
        return f"127.0.0.1:{server.server_port}"

    yield start
    for server in servers:
        server.shutdown()
        server.server_close()


class AnyPath200(BaseHTTPRequestHandler):
    """A web server (a wrong --registry, a proxy's login page): 200 and HTML for every path."""

    def log_message(self, *args) -> None:
        pass

    def do_HEAD(self) -> None:
        self.send_response(200)
        self.send_header("Content-Type", "text/html")
        self.send_header("Content-Length", "0")
        self.end_headers()


def test_a_web_server_answering_200_to_every_path_is_not_a_registry(serve, tmp_path):
    address = serve(AnyPath200)
    with pytest.raises(RegistryError, match=f"^{address} answered HTTP 200 .*not a registry v2 answer") as caught:
        registry.missing([f"{address}/mnist-ct/x@{fake_digest('x')}"], no_auth_files(tmp_path))
    assert not caught.value.unreachable


def test_a_200_for_another_digest_is_not_present(serve, tmp_path):
    class OtherDigest(AnyPath200):
        def do_HEAD(self) -> None:
            self.send_response(200)
            self.send_header("Docker-Content-Digest", fake_digest("something else"))
            self.send_header("Content-Length", "0")
            self.end_headers()

    address = serve(OtherDigest)
    with pytest.raises(RegistryError, match="with another digest"):
        registry.exists(f"{address}/mnist-ct/x@{fake_digest('x')}", no_auth_files(tmp_path))


def test_a_host_that_does_not_speak_http_is_one_error_line(tmp_path):
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen()

    def answer_garbage() -> None:
        with contextlib.suppress(OSError):
            while True:
                conn, _ = listener.accept()
                with conn:
                    conn.recv(65536)
                    conn.sendall(b"SSH-2.0-OpenSSH_9.2\r\n")

    threading.Thread(target=answer_garbage, daemon=True).start()
    address = f"127.0.0.1:{listener.getsockname()[1]}"
    try:
        with pytest.raises(RegistryError, match=f"^{address} did not answer in HTTP .*BadStatusLine.*is it a registry"):
            registry.exists(f"{address}/mnist-ct/x@{fake_digest('x')}", no_auth_files(tmp_path), timeout=2)
    finally:
        listener.close()


def test_credentials_never_follow_a_redirect_to_another_host(auth_registry, serve, tmp_path):
    seen: list[str | None] = []

    class Elsewhere(AnyPath200):
        def do_HEAD(self) -> None:
            seen.append(self.headers.get("Authorization"))
            self.send_response(404)
            self.send_header("Content-Length", "0")
            self.end_headers()

        do_GET = do_HEAD

    elsewhere = serve(Elsewhere)

    class Redirecting(auth_registry):  # type: ignore[misc,valid-type]
        scheme = "basic"

        def do_HEAD(self) -> None:
            if self.headers.get("Authorization") is None:
                super().do_HEAD()  # the Basic challenge
                return
            self.send_response(307)
            self.send_header("Location", f"http://{elsewhere}{self.path}")
            self.send_header("Content-Length", "0")
            self.end_headers()

    address = serve(Redirecting)
    env = with_auth_file(tmp_path, address)
    with contextlib.suppress(RegistryError):
        registry.exists(f"{address}/mnist-ct/private@{fake_digest('private')}", env)
    assert seen, "the redirect was not followed: the test proves nothing"
    assert seen == [None] * len(seen)
