"""A real HTTP server on 127.0.0.1 for the downloader tests."""

from __future__ import annotations

import http.server
import threading
from collections import Counter


class QuietServer(http.server.ThreadingHTTPServer):
    """A client that hangs up mid-body (a refused download) is expected here, not an error to print."""

    def handle_error(self, request: object, client_address: object) -> None:
        pass


class Stalled:
    """A route that announces `body` whole, sends its first `sent` bytes, then hangs until the server closes."""

    def __init__(self, body: bytes, sent: int) -> None:
        self.body, self.sent = body, sent


class Server:
    """A real HTTP server on 127.0.0.1: routes map a path to a body, a status code, a cut-off or a stalled body."""

    def __init__(self) -> None:
        self.routes: dict[str, object] = {}
        self.hits: Counter[str] = Counter()
        self.closing = threading.Event()
        server = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self) -> None:  # noqa: N802 (the http.server API)
                server.hits[self.path] += 1
                route = server.routes.get(self.path, 404)
                if callable(route):
                    route = route(server.hits[self.path])
                if isinstance(route, int):
                    self.send_error(route)
                    return
                if isinstance(route, Stalled):
                    self.send_response(200)
                    self.send_header("Content-Length", str(len(route.body)))
                    self.end_headers()
                    self.wfile.write(route.body[: route.sent])
                    self.wfile.flush()
                    server.closing.wait(60)
                    self.close_connection = True
                    return
                body, cut = route if isinstance(route, tuple) else (route, None)
                self.send_response(200)
                self.send_header("Content-Type", "application/octet-stream")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                # A cut transfer: announce the full length, send part, hang up.
                self.wfile.write(body if cut is None else body[:cut])
                self.close_connection = cut is not None

            def log_message(self, *args: object) -> None:
                pass

        self.httpd = QuietServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}"
        self.thread = threading.Thread(target=self.httpd.serve_forever, args=(0.05,), daemon=True)
        self.thread.start()

    def close(self) -> None:
        self.closing.set()
        self.httpd.shutdown()
        self.httpd.server_close()
        self.thread.join()
