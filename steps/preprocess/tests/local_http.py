"""A real HTTP server on 127.0.0.1 for the downloader tests."""

from __future__ import annotations

import http.server
import threading
from collections import Counter


class Server:
    """A real HTTP server on 127.0.0.1: routes map a path to a body, a status code, or a cut-off body."""

    def __init__(self) -> None:
        self.routes: dict[str, object] = {}
        self.hits: Counter[str] = Counter()
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

        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}"
        self.thread = threading.Thread(target=self.httpd.serve_forever, args=(0.05,), daemon=True)
        self.thread.start()

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()
        self.thread.join()
