"""A real HTTP file server on 127.0.0.1 with Range support and switchable faults, for the download tests."""

from __future__ import annotations

import threading
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path


@dataclass
class Faults:
    drop_after: int | None = None  # close the connection after this many body bytes ...
    drop_times: int = 0  # ... on this many responses
    always_truncate: bool = False  # announce the full length, send half, close
    ignore_range: bool = False  # answer Range requests with 200 and the whole file
    not_found: set[str] = field(default_factory=set)


@dataclass
class Request:
    method: str
    path: str
    range: str | None
    status: int
    bytes_sent: int


class LocalServer:
    """A threaded HTTP server on 127.0.0.1 (an ephemeral port) for a handler class; a context manager."""

    def _serve_with(self, handler: type[BaseHTTPRequestHandler]) -> None:
        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), handler)
        self.httpd.daemon_threads = True
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.httpd.server_address[1]}"

    def __enter__(self):
        self.thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


class FileServer(LocalServer):
    """Serves ``root``; ``requests`` logs every request (thread-safe append), ``faults`` changes behaviour."""

    def __init__(self, root: Path) -> None:
        self.root = Path(root)
        self.faults = Faults()
        self.requests: list[Request] = []
        server = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args) -> None:  # keep test output clean
                pass

            def do_HEAD(self) -> None:
                self._serve(body=False)

            def do_GET(self) -> None:
                self._serve(body=True)

            def _serve(self, body: bool) -> None:
                name = self.path.lstrip("/").split("?")[0]
                path = server.root / name
                rng = self.headers.get("Range")
                f = server.faults
                if name in f.not_found or not path.is_file():
                    self.send_response(404)
                    self.send_header("Content-Length", "0")
                    self.end_headers()
                    server.requests.append(Request(self.command, name, rng, 404, 0))
                    return
                data = path.read_bytes()
                start, status = 0, 200
                if rng and not f.ignore_range:
                    start = int(rng.removeprefix("bytes=").split("-")[0])
                    if start >= len(data):
                        self.send_response(416)
                        self.send_header("Content-Range", f"bytes */{len(data)}")
                        self.send_header("Content-Length", "0")
                        self.end_headers()
                        server.requests.append(Request(self.command, name, rng, 416, 0))
                        return
                    status = 206
                payload = data[start:]
                self.send_response(status)
                self.send_header("Content-Length", str(len(payload)))
                self.send_header("Accept-Ranges", "bytes")
                if status == 206:
                    self.send_header("Content-Range", f"bytes {start}-{len(data) - 1}/{len(data)}")
                self.end_headers()
                sent = 0
                if body:
                    limit = len(payload)
                    if f.always_truncate:
                        limit = len(payload) // 2
                    elif f.drop_after is not None and f.drop_times > 0:
                        f.drop_times -= 1
                        limit = min(limit, f.drop_after)
                    try:
                        self.wfile.write(payload[:limit])
                        sent = limit
                    except (BrokenPipeError, ConnectionResetError):
                        pass
                    if limit < len(payload):
                        self.close_connection = True
                server.requests.append(Request(self.command, name, rng, status, sent))

        self._serve_with(Handler)

    def gets(self, name: str) -> list[Request]:
        return [r for r in self.requests if r.method == "GET" and r.path == name]
