"""A small stdlib Hugging Face Hub stand-in on 127.0.0.1 for download tests (the `resolve` protocol).

Serves ``HEAD``/``GET {endpoint}/{org}/{name}/resolve/{revision}/{path}`` from an in-memory
``{repo_id: {path: bytes}}`` with the headers ``huggingface_hub`` needs: ``X-Repo-Commit``, ``ETag`` (sha256 of
the content, as the Hub does for LFS files) and ``Content-Length``; unknown repos and files answer with the Hub's
``X-Error-Code`` values. The access log is kept so that tests can assert what was requested.
"""
import hashlib
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Dict, List
from urllib.parse import unquote

COMMIT = "0123456789abcdef0123456789abcdef01234567"


class FakeHub:
    def __init__(self):
        self.repos: Dict[str, Dict[str, bytes]] = {}
        self.log: List[str] = []
        hub = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):  # keep test output clean
                pass

            def _resolve(self, send_body: bool):
                hub.log.append(f"{self.command} {self.path}")
                parts = unquote(self.path.split("?")[0]).lstrip("/").split("/")
                if len(parts) < 5 or parts[2] != "resolve":
                    return self._error(404, "EntryNotFound")
                repo, path = "/".join(parts[:2]), "/".join(parts[4:])
                if repo not in hub.repos:
                    return self._error(404, "RepoNotFound")
                if path not in hub.repos[repo]:
                    return self._error(404, "EntryNotFound")
                data = hub.repos[repo][path]
                self.send_response(200)
                self.send_header("X-Repo-Commit", COMMIT)
                self.send_header("ETag", f'"{hashlib.sha256(data).hexdigest()}"')
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                if send_body:
                    self.wfile.write(data)

            def _error(self, code: int, error_code: str):
                self.send_response(code)
                self.send_header("X-Error-Code", error_code)
                self.send_header("X-Repo-Commit", COMMIT)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def do_HEAD(self):
                self._resolve(send_body=False)

            def do_GET(self):
                self._resolve(send_body=True)

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.endpoint = f"http://127.0.0.1:{self.server.server_address[1]}"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def __enter__(self):
        self.thread.start()
        return self

    def __exit__(self, *exc):
        self.server.shutdown()
        self.server.server_close()
