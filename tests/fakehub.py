"""A small stdlib Hugging Face Hub stand-in on 127.0.0.1: the endpoints the real ``huggingface_hub`` client calls.

Downloads: ``HEAD``/``GET {endpoint}/{org}/{name}/resolve/{revision}/{path}`` with the headers the client needs
(``X-Repo-Commit``, ``ETag`` = sha256 of LFS files or git blob sha1 of regular ones, ``Content-Length``), model
info (``/api/models/{repo}`` and ``.../revision/{rev}``) and the file tree (``.../tree/{rev}``). Unknown repos,
revisions and files answer with the Hub's ``X-Error-Code`` values.

Uploads (the classic path, i.e. ``HF_HUB_DISABLE_XET=1``): ``POST /api/repos/create`` (409 with the URL when the
repo exists), ``DELETE /api/repos/delete``, ``POST /api/validate-yaml``, ``POST /api/models/{repo}/preupload/{rev}``,
the LFS batch endpoint ``POST /{repo}.git/info/lfs/objects/batch`` with its ``PUT /__lfs/{oid}`` upload (the
sha256 is checked), and the NDJSON commit ``POST /api/models/{repo}/commit/{rev}``; each commit gets its own
40-hex id, and older commits stay readable by id. ``GET /api/whoami-v2`` too.

State is plain dicts that tests read and edit: ``repos`` (repo id -> {path: bytes} at the head of ``main``;
a repo put there by hand has the commit :data:`COMMIT`), ``etags`` ((repo, path) -> an ETag to advertise instead of
the content's, to imitate a file changed behind the Hub's back), ``private`` and ``tokens`` (``None``: no auth;
otherwise the set of tokens accepted for writes and for private repos). Every request is logged as
``"METHOD /path"`` in ``log``; ``authorizations`` keeps the ``Authorization`` headers seen.
"""

import base64
import hashlib
import json
import re
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import quote, unquote, urlparse

COMMIT = "0123456789abcdef0123456789abcdef01234567"
# stored with git LFS like on the Hub (.gitattributes of a new repo), plus anything binary or over 10 MB
_LFS_SUFFIXES = (
    ".safetensors",
    ".bin",
    ".pt",
    ".pth",
    ".ckpt",
    ".h5",
    ".msgpack",
    ".onnx",
    ".npz",
    ".tar",
    ".gz",
    ".zip",
    ".model",
    ".pkl",
)
_LFS_MIN_SIZE = 10 * 1024 * 1024


def _repo_id(payload) -> str:
    """``org/name`` from a create/delete body (``organization`` is null for a repo without "/")."""
    return f"{payload['organization']}/{payload['name']}" if payload.get("organization") else payload["name"]


def git_blob_sha1(data: bytes) -> str:
    return hashlib.sha1(b"blob %d\0" % len(data) + data).hexdigest()


def point_hub_at(monkeypatch, endpoint: str) -> None:
    """huggingface_hub's endpoint for one test: its ``ENDPOINT`` and the download URL template built from it when it
    was imported (a download otherwise goes to huggingface.co)."""
    from huggingface_hub import constants

    monkeypatch.setattr(constants, "ENDPOINT", endpoint)
    monkeypatch.setattr(constants, "HUGGINGFACE_CO_URL_TEMPLATE", endpoint + "/{repo_id}/resolve/{revision}/{filename}")


class FakeHub:
    def __init__(self, tokens: set[str] | None = None):
        self.repos: dict[str, dict[str, bytes]] = {}
        self.heads: dict[str, str] = {}  # repo -> commit of main (COMMIT when absent)
        self.commits: dict[tuple[str, str], dict[str, bytes]] = {}  # (repo, commit) -> files
        self.regular: set[tuple[str, str]] = set()  # (repo, path) committed inline: git blob, not LFS
        self.etags: dict[tuple[str, str], str] = {}
        self.private: set[str] = set()
        self.tokens = tokens
        self.lfs: dict[str, bytes] = {}  # sha256 -> content, uploaded and waiting for (or used by) a commit
        self.yaml_checked: list[str] = []
        self.log: list[str] = []
        self.authorizations: list[str] = []
        self._lock = threading.Lock()
        self.server = ThreadingHTTPServer(("127.0.0.1", 0), self._handler())
        self.endpoint = f"http://127.0.0.1:{self.server.server_address[1]}"
        self.thread = threading.Thread(target=self.server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)

    # ------------------------------------------------------------------------------------------------------------
    # helpers for tests

    def head(self, repo: str) -> str:
        return self.heads.get(repo, COMMIT)

    def use(self, monkeypatch, cache_dir) -> "FakeHub":
        """Point huggingface_hub at this server for one test: endpoint, cache, classic (non-Xet) uploads, online."""
        from huggingface_hub import constants

        point_hub_at(monkeypatch, self.endpoint)
        monkeypatch.setattr(constants, "HF_HUB_CACHE", str(cache_dir))
        monkeypatch.setattr(constants, "HF_HUB_DISABLE_XET", True)
        monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)
        monkeypatch.setenv("HF_ENDPOINT", self.endpoint)
        monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
        return self

    def etag(self, repo: str, path: str, data: bytes) -> str:
        if (repo, path) in self.etags:
            return self.etags[(repo, path)]
        return git_blob_sha1(data) if (repo, path) in self.regular else hashlib.sha256(data).hexdigest()

    def is_lfs(self, repo: str, path: str) -> bool:
        return (repo, path) not in self.regular

    # ------------------------------------------------------------------------------------------------------------

    def _handler(self):
        hub = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):  # keep test output clean
                pass

            # -- plumbing ---------------------------------------------------------------------------------------
            def _body(self) -> bytes:
                """Read the whole request body (always: leftovers would corrupt the next request)."""
                if self.headers.get("Transfer-Encoding", "").lower() == "chunked":
                    chunks = []
                    while True:
                        size = int(self.rfile.readline().split(b";")[0].strip() or b"0", 16)
                        if size == 0:
                            while self.rfile.readline() not in (b"\r\n", b"\n", b""):
                                pass
                            return b"".join(chunks)
                        chunks.append(self.rfile.read(size))
                        self.rfile.readline()
                length = int(self.headers.get("Content-Length") or 0)
                return self.rfile.read(length) if length else b""

            def _send(
                self, code: int, body: bytes = b"", headers: dict[str, str] | None = None, send_body: bool = True
            ):
                self.send_response(code)
                for k, v in (headers or {}).items():
                    self.send_header(k, v)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                if send_body and body:
                    self.wfile.write(body)

            def _json(self, code: int, obj, headers: dict[str, str] | None = None, send_body: bool = True):
                self._send(
                    code, json.dumps(obj).encode(), {"Content-Type": "application/json", **(headers or {})}, send_body
                )

            def _error(
                self, code: int, error_code: str | None, message: str, send_body: bool = True, commit: str | None = None
            ):
                headers = {"X-Error-Message": message}
                if error_code:
                    headers["X-Error-Code"] = error_code
                if commit:
                    headers["X-Repo-Commit"] = commit
                self._json(code, {"error": message}, headers, send_body)

            def _token(self) -> str | None:
                auth = self.headers.get("Authorization")
                if auth:
                    hub.authorizations.append(auth)
                    if auth.startswith("Bearer "):
                        return auth[len("Bearer ") :]
                return None

            def _authorized(self) -> bool:
                token = self._token()
                return hub.tokens is None or token in hub.tokens

            def _deny(self, send_body: bool = True):
                self._error(401, None, "Invalid credentials in Authorization header", send_body)

            def _readable(self, repo: str) -> bool:
                if repo not in hub.repos:
                    return False
                if repo in hub.private:
                    token = self._token()
                    return token is not None and (hub.tokens is None or token in hub.tokens)
                return True

            def _files_at(self, repo: str, revision: str) -> tuple[str, dict[str, bytes]] | None:
                head = hub.head(repo)
                if revision in ("main", head):
                    return head, hub.repos[repo]
                if (repo, revision) in hub.commits:
                    return revision, hub.commits[(repo, revision)]
                return None

            def _route(self):
                url = urlparse(self.path)
                return url.path, url.query

            # -- methods ----------------------------------------------------------------------------------------
            def do_HEAD(self):
                hub.log.append(f"HEAD {self.path}")
                self._body()
                path, _ = self._route()
                self._resolve(path, send_body=False)

            def do_GET(self):
                hub.log.append(f"GET {self.path}")
                self._body()
                path, _ = self._route()
                if path == "/api/whoami-v2":
                    if hub.tokens is not None and not self._authorized():
                        return self._deny()
                    return self._json(200, {"name": "user", "type": "user", "orgs": []})
                m = re.fullmatch(r"/api/models/([^/]+/[^/]+)(?:/revision/([^/]+))?", path)
                if m:
                    return self._model_info(unquote(m.group(1)), unquote(m.group(2) or "main"))
                m = re.fullmatch(r"/api/models/([^/]+/[^/]+)/tree/([^/]+)(/.*)?", path)
                if m:
                    return self._tree(unquote(m.group(1)), unquote(m.group(2)), unquote((m.group(3) or "/")[1:]))
                self._resolve(path, send_body=True)

            def do_POST(self):
                hub.log.append(f"POST {self.path}")
                body = self._body()
                path, _ = self._route()
                if path == "/api/validate-yaml":
                    hub.yaml_checked.append(json.loads(body or b"{}").get("content", ""))
                    return self._json(200, {"errors": [], "warnings": []})
                if path == "/api/repos/create":
                    return self._create(json.loads(body))
                m = re.fullmatch(r"/api/models/([^/]+/[^/]+)/preupload/([^/]+)", path)
                if m:
                    return self._preupload(unquote(m.group(1)), json.loads(body))
                m = re.fullmatch(r"/([^/]+/[^/]+)\.git/info/lfs/objects/batch", path)
                if m:
                    return self._lfs_batch(unquote(m.group(1)), json.loads(body))
                m = re.fullmatch(r"/api/models/([^/]+/[^/]+)/commit/([^/]+)", path)
                if m:
                    return self._commit(unquote(m.group(1)), unquote(m.group(2)), body)
                self._error(404, None, f"no route for POST {path}")

            def do_PUT(self):
                hub.log.append(f"PUT {self.path}")
                body = self._body()
                path, _ = self._route()
                m = re.fullmatch(r"/__lfs/([0-9a-f]{64})", path)
                if not m:
                    return self._error(404, None, f"no route for PUT {path}")
                if hashlib.sha256(body).hexdigest() != m.group(1):
                    return self._error(400, None, "uploaded content does not match its sha256")
                with hub._lock:
                    hub.lfs[m.group(1)] = body
                self._send(200)

            def do_DELETE(self):
                hub.log.append(f"DELETE {self.path}")
                body = self._body()
                path, _ = self._route()
                if path != "/api/repos/delete":
                    return self._error(404, None, f"no route for DELETE {path}")
                if not self._authorized():
                    return self._deny()
                payload = json.loads(body)
                repo = _repo_id(payload)
                if repo not in hub.repos:
                    return self._error(404, "RepoNotFound", f"Repository {repo} not found")
                with hub._lock:
                    del hub.repos[repo]
                    hub.heads.pop(repo, None)
                self._send(200)

            # -- endpoints --------------------------------------------------------------------------------------
            def _resolve(self, path: str, send_body: bool):
                parts = unquote(path).lstrip("/").split("/")
                if len(parts) < 5 or parts[2] != "resolve":
                    return self._error(404, None, f"no route for {path}", send_body)
                repo, revision, file = "/".join(parts[:2]), parts[3], "/".join(parts[4:])
                if not self._readable(repo):
                    return self._error(404, "RepoNotFound", f"Repository {repo} not found", send_body)
                found = self._files_at(repo, revision)
                if found is None:
                    return self._error(404, "RevisionNotFound", f"Invalid rev id: {revision}", send_body)
                commit, files = found
                if file not in files:
                    return self._error(
                        404, "EntryNotFound", f"{file} does not exist on {revision}", send_body, commit=commit
                    )
                data = files[file]
                self._send(
                    200,
                    data,
                    {
                        "X-Repo-Commit": commit,
                        "ETag": f'"{hub.etag(repo, file, data)}"',
                        "Content-Type": "application/octet-stream",
                    },
                    send_body,
                )

            def _model_info(self, repo: str, revision: str):
                if not self._readable(repo):
                    return self._error(404, "RepoNotFound", f"Repository {repo} not found")
                found = self._files_at(repo, revision)
                if found is None:
                    return self._error(404, "RevisionNotFound", f"Invalid rev id: {revision}")
                commit, files = found
                self._json(
                    200,
                    {
                        "id": repo,
                        "modelId": repo,
                        "sha": commit,
                        "private": repo in hub.private,
                        "siblings": [{"rfilename": p} for p in sorted(files)],
                        "tags": [],
                        "lastModified": "2024-01-01T00:00:00.000Z",
                        "downloads": 0,
                        "likes": 0,
                    },
                )

            def _tree(self, repo: str, revision: str, prefix: str):
                if not self._readable(repo):
                    return self._error(404, "RepoNotFound", f"Repository {repo} not found")
                found = self._files_at(repo, revision)
                if found is None:
                    return self._error(404, "RevisionNotFound", f"Invalid rev id: {revision}")
                _, files = found
                entries, folders = [], set()
                for p, data in sorted(files.items()):
                    if prefix and not p.startswith(prefix.rstrip("/") + "/"):
                        continue
                    parent = p.rsplit("/", 1)[0] if "/" in p else ""
                    while parent and parent not in folders:
                        folders.add(parent)
                        entries.append({"type": "directory", "path": parent, "oid": git_blob_sha1(parent.encode())})
                        parent = parent.rsplit("/", 1)[0] if "/" in parent else ""
                    entry = {"type": "file", "path": p, "size": len(data), "oid": git_blob_sha1(data)}
                    if hub.is_lfs(repo, p):
                        entry["lfs"] = {"oid": hashlib.sha256(data).hexdigest(), "size": len(data), "pointerSize": 134}
                    entries.append(entry)
                self._json(200, entries)

            def _create(self, payload):
                if not self._authorized():
                    return self._deny()
                repo = _repo_id(payload)
                url = f"{hub.endpoint}/{repo}"
                if repo in hub.repos:
                    return self._json(409, {"error": "You already created this model repo", "url": url})
                with hub._lock:
                    hub.repos[repo] = {}
                    hub.heads[repo] = hashlib.sha1(f"init {repo}".encode()).hexdigest()
                    hub.commits[(repo, hub.heads[repo])] = {}
                    if payload.get("private") or payload.get("visibility") == "private":
                        hub.private.add(repo)
                self._json(200, {"url": url, "name": repo, "id": repo})

            def _preupload(self, repo: str, payload):
                if not self._authorized():
                    return self._deny()
                if repo not in hub.repos:
                    return self._error(404, "RepoNotFound", f"Repository {repo} not found")
                answer = []
                for f in payload["files"]:
                    path, size = f["path"], f["size"]
                    sample = base64.b64decode(f.get("sample", ""))
                    lfs = path.endswith(_LFS_SUFFIXES) or size >= _LFS_MIN_SIZE or b"\0" in sample
                    current = hub.repos[repo].get(path)
                    oid = None
                    if current is not None:
                        oid = hashlib.sha256(current).hexdigest() if hub.is_lfs(repo, path) else git_blob_sha1(current)
                    answer.append(
                        {"path": path, "uploadMode": "lfs" if lfs else "regular", "shouldIgnore": False, "oid": oid}
                    )
                self._json(200, {"files": answer, "commitOid": hub.head(repo)})

            def _lfs_batch(self, repo: str, payload):
                if not self._authorized():
                    return self._deny()
                if repo not in hub.repos:
                    return self._error(404, "RepoNotFound", f"Repository {repo} not found")
                objects = []
                for obj in payload.get("objects", []):
                    entry = {"oid": obj["oid"], "size": obj["size"]}
                    if obj["oid"] not in hub.lfs:
                        entry["actions"] = {"upload": {"href": f"{hub.endpoint}/__lfs/{obj['oid']}"}}
                    objects.append(entry)
                self._send(
                    200,
                    json.dumps({"transfer": "basic", "objects": objects}).encode(),
                    {"Content-Type": "application/vnd.git-lfs+json"},
                )

            def _commit(self, repo: str, revision: str, body: bytes):
                if not self._authorized():
                    return self._deny()
                if repo not in hub.repos:
                    return self._error(404, "RepoNotFound", f"Repository {repo} not found")
                if revision not in ("main", hub.head(repo)):
                    return self._error(404, "RevisionNotFound", f"Invalid rev id: {revision}")
                files = dict(hub.repos[repo])
                regular, lfs = set(), set()
                for line in body.decode().splitlines():
                    if not line.strip():
                        continue
                    item = json.loads(line)
                    key, value = item["key"], item["value"]
                    if key == "file":
                        files[value["path"]] = base64.b64decode(value["content"])
                        regular.add(value["path"])
                    elif key == "lfsFile":
                        if value["oid"] not in hub.lfs:
                            return self._error(422, None, f"LFS object {value['oid']} was never uploaded")
                        files[value["path"]] = hub.lfs[value["oid"]]
                        lfs.add(value["path"])
                    elif key == "deletedFile":
                        files.pop(value["path"], None)
                    elif key == "deletedFolder":
                        folder = value["path"].rstrip("/") + "/"
                        files = {p: d for p, d in files.items() if not p.startswith(folder)}
                commit = hashlib.sha1(hub.head(repo).encode() + body).hexdigest()
                with hub._lock:
                    hub.repos[repo] = files
                    hub.heads[repo] = commit
                    hub.commits[(repo, commit)] = dict(files)
                    hub.regular.update((repo, p) for p in regular)
                    hub.regular.difference_update((repo, p) for p in lfs)
                    for p in regular | lfs:
                        hub.etags.pop((repo, p), None)
                self._json(
                    200,
                    {
                        "commitOid": commit,
                        "commitUrl": f"{hub.endpoint}/{quote(repo)}/commit/{commit}",
                        "success": True,
                    },
                )

        return Handler

    def __enter__(self):
        self.thread.start()
        return self

    def __exit__(self, *exc):
        self.server.shutdown()
        self.server.server_close()
