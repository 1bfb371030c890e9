"""A minimal Hugging Face Hub on 127.0.0.1: the resolve endpoint for downloads, and create/preupload/commit
for uploads, storing repos in memory. Enough for huggingface_hub's hf_hub_download and upload_folder."""

from __future__ import annotations

import base64
import hashlib
import json
import re
from http.server import BaseHTTPRequestHandler

from http_server import LocalServer


class FakeHub(LocalServer):
    def __init__(self) -> None:
        self.repos: dict[str, dict[str, dict[str, bytes]]] = {}  # repo -> commit -> {path: bytes}
        self.refs: dict[str, dict[str, str]] = {}  # repo -> ref -> commit
        self.log: list[tuple[str, str]] = []
        hub = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args) -> None:
                pass

            def _send(self, status: int, body: bytes = b"", headers: dict | None = None, head: bool = False):
                self.send_response(status)
                for k, v in (headers or {}).items():
                    self.send_header(k, v)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                if not head:
                    self.wfile.write(body)

            def _json(self, obj, status: int = 200):
                self._send(status, json.dumps(obj).encode(), {"Content-Type": "application/json"})

            def _resolve(self, head: bool) -> None:
                m = re.match(r"^/(?:models/)?([^/]+/[^/]+)/resolve/([^/]+)/(.+)$", self.path.split("?")[0])
                if not m:
                    return self._send(404, head=head)
                repo, rev, path = m.groups()
                commit = hub.refs.get(repo, {}).get(rev, rev)
                files = hub.repos.get(repo, {}).get(commit)
                if files is None or path not in files:
                    return self._send(404, b"", {"X-Error-Code": "EntryNotFound"}, head=head)
                data = files[path]
                etag = hashlib.sha256(data).hexdigest()
                self._send(200, data, {"X-Repo-Commit": commit, "ETag": f'"{etag}"', "Accept-Ranges": "bytes"},
                           head=head)

            def do_HEAD(self) -> None:
                hub.log.append(("HEAD", self.path))
                self._resolve(head=True)

            def do_GET(self) -> None:
                hub.log.append(("GET", self.path))
                self._resolve(head=False)

            def do_POST(self) -> None:
                hub.log.append(("POST", self.path))
                body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
                path = self.path.split("?")[0]
                if path == "/api/repos/create":
                    req = json.loads(body)
                    repo = f"{req.get('organization') or 'user'}/{req['name']}"
                    hub.repos.setdefault(repo, {})
                    hub.refs.setdefault(repo, {})
                    return self._json({"url": f"{hub.url}/{repo}", "name": repo})
                if path == "/api/validate-yaml":
                    return self._json({"errors": [], "warnings": []})
                m = re.match(r"^/api/models/([^/]+/[^/]+)/preupload/([^/]+)$", path)
                if m:
                    files = json.loads(body)["files"]
                    return self._json({"files": [{"path": f["path"], "uploadMode": "regular", "shouldIgnore": False}
                                                 for f in files]})
                m = re.match(r"^/api/models/([^/]+/[^/]+)/commit/([^/]+)$", path)
                if m:
                    repo, rev = m.groups()
                    parent = hub.refs.get(repo, {}).get(rev)
                    files = dict(hub.repos.get(repo, {}).get(parent, {})) if parent else {}
                    for line in body.decode().splitlines():
                        op = json.loads(line)
                        if op["key"] == "file":
                            files[op["value"]["path"]] = base64.b64decode(op["value"]["content"])
                    commit = hashlib.sha1(json.dumps(sorted(files)).encode() + body).hexdigest()
                    hub.repos.setdefault(repo, {})[commit] = files
                    hub.refs.setdefault(repo, {})[rev] = commit
                    return self._json({"commitUrl": f"{hub.url}/{repo}/commit/{commit}", "commitOid": commit,
                                       "pullRequestUrl": None})
                self._send(404)

        self._serve_with(Handler)
