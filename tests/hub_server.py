"""A small Hugging Face Hub-compatible HTTP server for offline tests.

It speaks the subset of the Hub API that the real `huggingface_hub` client, `transformers` and `datasets` use to
create repos, commit files, read repo info / trees / refs and download files, for models, datasets and Spaces. Point
`HF_ENDPOINT` at `HubServer.url` (before `huggingface_hub` is imported) and the libraries talk to it unpatched.

Storage is `tests.hub_storage.HubStore` (a temp folder of blobs, refs and commits in memory). Access rules follow
the Hub: writes need a valid token (401 otherwise), private repos are invisible without one (401 +
`X-Error-Code: RepoNotFound`), unknown revisions / files answer 404 with `X-Error-Code: RevisionNotFound` /
`EntryNotFound`. Uploads follow the Hub's split: small text files travel inline in the commit ("regular"); files
matching the repo's LFS patterns (weights, parquet shards, images) or over 10 MB go through the LFS batch API first
(basic transfer), which `datasets.push_to_hub` relies on. Xet is not spoken: the tests set `HF_HUB_DISABLE_XET=1`.
Downloads serve every file directly (no CDN redirect).
"""

from __future__ import annotations

import base64
import fnmatch
import hashlib
import json
import re
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import parse_qs, quote, unquote, urlsplit

import yaml

from tests.hub_storage import LFS_PATTERNS, LFS_THRESHOLD, REPO_TYPES, Commit, HubError, HubStore, Repo

_API = re.compile(r"^/api/(models|datasets|spaces)/([^/]+)/([^/]+)(?:/(.*))?$")
_RESOLVE = re.compile(r"^/(?:(datasets|spaces)/)?([^/]+)/([^/]+)/resolve/([^/]+)/(.+)$")
_LFS_BATCH = re.compile(r"^/(?:(datasets|spaces)/)?([^/]+)/([^/]+)\.git/info/lfs/objects/batch$")
_LFS_OBJECT = re.compile(r"^/__lfs/([0-9a-f]{64})$")


class HubServer(HubStore):
    """A Hub-compatible server on 127.0.0.1 (random port) serving from `root`; `token` is the one valid write token.

    Inspect stored content with `repos()`, `files()`, `read()`, `commits()` and `branches()`; `requests` logs every
    (method, path, status) served and `unhandled` the requests no route matched.
    """

    def __init__(self, root: str | Path, token: str = "hf_mmhub_test_token", user: str = "mm-tester") -> None:
        super().__init__(root, user)
        self.token = token
        self.requests: list[tuple[str, str, int]] = []
        self.unhandled: list[tuple[str, str]] = []
        self._httpd = ThreadingHTTPServer(("127.0.0.1", 0), _make_handler(self))
        self._httpd.daemon_threads = True
        self.url = f"http://127.0.0.1:{self._httpd.server_address[1]}"
        self._thread: threading.Thread | None = None

    # ----------------------------------------------------------------------------------------------- lifecycle
    def start(self) -> "HubServer":
        """Serve in a daemon thread; returns self."""
        self._thread = threading.Thread(target=self._httpd.serve_forever, name="hub-server", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        """Shut the server down."""
        self._httpd.shutdown()
        self._httpd.server_close()


def _make_handler(hub: HubServer) -> type[BaseHTTPRequestHandler]:
    """A request handler class bound to `hub`."""

    class Handler(_HubHandler):
        server_hub = hub

    return Handler


class _HubHandler(BaseHTTPRequestHandler):
    """Routes Hub API requests to `server_hub`; one instance per request."""

    protocol_version = "HTTP/1.1"  # keep-alive, as httpx expects
    server_hub: HubServer

    def log_message(self, format: str, *args) -> None:  # noqa: A002 - silence stderr logging
        return

    # ------------------------------------------------------------------------------------------------ plumbing
    def do_GET(self) -> None:
        self._dispatch("GET")

    def do_HEAD(self) -> None:
        self._dispatch("HEAD")

    def do_POST(self) -> None:
        self._dispatch("POST")

    def do_PUT(self) -> None:
        self._dispatch("PUT")

    def do_DELETE(self) -> None:
        self._dispatch("DELETE")

    def _dispatch(self, method: str) -> None:
        hub = self.server_hub
        parts = urlsplit(self.path)
        self.query = {k: v[-1] for k, v in parse_qs(parts.query).items()}
        self.body = self._read_body()
        try:
            with hub.lock:
                self._route(method, parts.path)
        except HubError as err:
            headers = {"X-Error-Message": err.message}
            if err.code:
                headers["X-Error-Code"] = err.code
            self._send(err.status, {"error": err.message, **err.extra}, headers, head=method == "HEAD")
        except Exception as err:  # a server bug: answer 500 so the client fails loudly instead of hanging
            hub.unhandled.append((method, f"{self.path} -> {type(err).__name__}: {err}"))
            self._send(500, {"error": f"{type(err).__name__}: {err}"}, head=method == "HEAD")
        hub.requests.append((method, self.path, self._status))

    def _read_body(self) -> bytes:
        if self.headers.get("Transfer-Encoding", "").lower() == "chunked":
            chunks = []
            while (size := int(self.rfile.readline().split(b";")[0].strip() or b"0", 16)) > 0:
                chunks.append(self.rfile.read(size))
                self.rfile.readline()
            while self.rfile.readline() not in (b"\r\n", b"\n", b""):  # trailers
                pass
            return b"".join(chunks)
        length = int(self.headers.get("Content-Length") or 0)
        return self.rfile.read(length) if length else b""

    def _send(self, status: int, payload, headers: dict[str, str] | None = None, head: bool = False) -> None:
        body = payload if isinstance(payload, bytes) else json.dumps(payload).encode()
        self._status = status
        self.send_response(status)
        if not isinstance(payload, bytes) and "Content-Type" not in (headers or {}):
            self.send_header("Content-Type", "application/json")
        for key, value in (headers or {}).items():
            self.send_header(key, value)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if not head:
            self.wfile.write(body)

    def _json(self) -> dict:
        if "application/x-www-form-urlencoded" in self.headers.get("Content-Type", ""):
            return {k: v if len(v) > 1 or k == "paths" else v[0] for k, v in parse_qs(self.body.decode()).items()}
        return json.loads(self.body or b"{}")

    # ------------------------------------------------------------------------------------------------ auth
    def _authenticated(self) -> bool:
        auth = self.headers.get("Authorization", "")
        if not auth:
            return False
        if auth != f"Bearer {self.server_hub.token}":
            raise HubError(401, "Invalid credentials in Authorization header")
        return True

    def _require_write(self) -> None:
        if not self._authenticated():
            raise HubError(401, "You must be authenticated to write to the Hub: pass a token (HF_TOKEN).")

    def _repo(self, repo_type: str, repo_id: str) -> Repo:
        repo = self.server_hub._repos.get((repo_type, repo_id))
        if repo is None or (repo.private and not self._authenticated()):
            status = 401 if repo is not None or not self.headers.get("Authorization") else 404
            raise HubError(status, "Repository not found", "RepoNotFound")
        return repo

    # ------------------------------------------------------------------------------------------------ routing
    def _route(self, method: str, path: str) -> None:
        if path == "/" and method in ("GET", "HEAD"):  # the front page: what reachability checks probe
            return self._send(200, b"local test Hub\n", {"Content-Type": "text/plain"}, head=method == "HEAD")
        self._authenticated()  # like the Hub, an invalid token is refused on every request, reads included
        if path == "/api/whoami-v2" and method == "GET":
            if not self._authenticated():
                raise HubError(401, "Invalid username or password.")
            user = self.server_hub.user
            return self._send(200, {"type": "user", "name": user, "fullname": user, "orgs": [],
                                    "auth": {"type": "access_token", "accessToken": {"role": "write"}}})
        if path == "/api/repos/create" and method == "POST":
            return self._create_repo(self._json())
        if path == "/api/repos/delete" and method == "DELETE":
            return self._delete_repo(self._json())
        if path == "/api/validate-yaml" and method == "POST":
            return self._validate_yaml(self._json())
        if match := _API.match(path):
            plural, namespace, name, rest = match.groups()
            repo = self._repo(plural[:-1], f"{unquote(namespace)}/{unquote(name)}")
            return self._api(method, repo, [unquote(p) for p in rest.split("/")] if rest else [])
        if (match := _LFS_BATCH.match(path)) and method == "POST":
            plural, namespace, name = match.groups()
            self._repo(plural[:-1] if plural else "model", f"{unquote(namespace)}/{unquote(name)}")
            return self._lfs_batch()
        if (match := _LFS_OBJECT.match(path)) and method == "PUT":
            return self._lfs_put(match.group(1))
        if (match := _RESOLVE.match(path)) and method in ("GET", "HEAD"):
            plural, namespace, name, revision, file_path = match.groups()
            repo = self._repo(plural[:-1] if plural else "model", f"{unquote(namespace)}/{unquote(name)}")
            return self._resolve(method, repo, unquote(revision), unquote(file_path))
        self.server_hub.unhandled.append((method, path))
        raise HubError(404, f"Not implemented by the test Hub: {method} {path}")

    def _api(self, method: str, repo: Repo, rest: list[str]) -> None:
        hub = self.server_hub
        action = rest[0] if rest else ""
        if method == "GET" and action in ("", "revision"):
            revision = rest[1] if action == "revision" else "main"
            return self._send(200, self._info(repo, hub._commit_at(repo, revision)))
        if method == "GET" and action == "tree":
            commit = hub._commit_at(repo, rest[1])
            recursive = self.query.get("recursive", "").lower() in ("1", "true")
            return self._send(200, self._tree(commit, "/".join(rest[2:]).strip("/"), recursive))
        if method == "POST" and action == "paths-info":
            commit = hub._commit_at(repo, rest[1])
            paths = self._json().get("paths", [])
            return self._send(200, [e for p in paths for e in self._entries(commit, p.strip("/"))])
        if method == "GET" and action == "refs":
            return self._send(200, self._refs(repo))
        if method == "GET" and action == "commits":
            history = hub.commits(repo.repo_id, repo.repo_type, rest[1])
            return self._send(200, [{"id": c.sha, "authors": [{"user": hub.user}], "date": c.date, "title": c.title,
                                     "message": c.description} for c in history])
        if method == "POST" and action == "preupload":
            return self._preupload(repo, rest[1])
        if method == "POST" and action == "commit":
            self._require_write()
            return self._commit(repo, rest[1])
        if action in ("branch", "tag") and method in ("POST", "DELETE"):
            self._require_write()
            return self._ref(repo, method, action, rest[1])
        if method == "PUT" and action == "settings":
            self._require_write()
            settings = self._json()
            if "private" in settings or "visibility" in settings:
                repo.private = bool(settings.get("private", settings.get("visibility") == "private"))
            return self._send(200, {})
        self.server_hub.unhandled.append((method, self.path))
        raise HubError(404, f"Not implemented by the test Hub: {method} {self.path}")

    # ------------------------------------------------------------------------------------------------ endpoints
    def _create_repo(self, payload: dict) -> None:
        self._require_write()
        repo_type = payload.get("type") or "model"
        if repo_type not in REPO_TYPES:
            raise HubError(400, f"Invalid repo type {repo_type!r}; expected one of {REPO_TYPES}")
        if repo_type == "space" and not payload.get("sdk"):
            raise HubError(400, "A Space needs an sdk")
        repo_id = f"{payload.get('organization') or self.server_hub.user}/{payload['name']}"
        private = payload.get("private", payload.get("visibility") == "private")
        self.server_hub.create_repo(repo_id, repo_type, bool(private), payload.get("sdk"))
        prefix = "" if repo_type == "model" else f"{repo_type}s/"
        self._send(200, {"url": f"{self.server_hub.url}/{prefix}{repo_id}", "name": repo_id})

    def _delete_repo(self, payload: dict) -> None:
        self._require_write()
        repo_type = payload.get("type") or "model"
        repo_id = f"{payload.get('organization') or self.server_hub.user}/{payload['name']}"
        if self.server_hub._repos.pop((repo_type, repo_id), None) is None:
            raise HubError(404, "Repository not found", "RepoNotFound")
        self._send(200, {})

    def _validate_yaml(self, payload: dict) -> None:
        content = payload.get("content", "")
        if content.startswith("---"):
            header = content[3:].split("\n---", 1)[0]
            try:
                metadata = yaml.safe_load(header)
            except yaml.YAMLError as err:
                raise HubError(400, f"Invalid YAML in README.md header: {err}") from err
            if metadata is not None and not isinstance(metadata, dict):
                raise HubError(400, "README.md YAML header must be a mapping")
        self._send(200, {"errors": [], "warnings": []})

    def _info(self, repo: Repo, commit: Commit) -> dict:
        hub = self.server_hub
        info = {"id": repo.repo_id, "_id": repo.repo_id, "author": repo.repo_id.split("/")[0], "sha": commit.sha,
                "private": repo.private, "gated": False, "disabled": False, "lastModified": commit.date,
                "createdAt": commit.date, "downloads": 0, "likes": 0, "tags": [],
                "siblings": [{"rfilename": p, "size": hub._blob_size(s), "blobId": s} for p, s in commit.files.items()]}
        if "README.md" in commit.files:
            card = hub._blob(commit.files["README.md"]).decode()
            if card.startswith("---"):
                info["cardData"] = yaml.safe_load(card[3:].split("\n---", 1)[0]) or {}
                info["tags"] = list(info["cardData"].get("tags") or [])
        if repo.repo_type == "model" and "config.json" in commit.files:
            config = json.loads(hub._blob(commit.files["config.json"]))
            info["config"] = {k: config[k] for k in ("architectures", "model_type", "auto_map") if k in config}
        if repo.repo_type == "space":
            info["sdk"] = repo.sdk
            info["runtime"] = {"stage": "BUILDING", "hardware": {"current": None, "requested": "cpu-basic"}}
        return info

    def _file_entry(self, path: str, sha: str) -> dict:
        return {"type": "file", "oid": sha, "size": self.server_hub._blob_size(sha), "path": path}

    def _tree(self, commit: Commit, folder: str, recursive: bool) -> list[dict]:
        prefix = f"{folder}/" if folder else ""
        if folder and not any(p.startswith(prefix) for p in commit.files):
            raise HubError(404, f"Entry not found: {folder}", "EntryNotFound")
        entries, folders = [], set()
        for path, sha in sorted(commit.files.items()):
            if not path.startswith(prefix):
                continue
            relative = path[len(prefix):].split("/")
            if len(relative) == 1 or recursive:
                entries.append(self._file_entry(path, sha))
            for depth in range(1, len(relative) if recursive else min(2, len(relative))):
                folders.add(prefix + "/".join(relative[:depth]))
        dirs = [{"type": "directory", "oid": hashlib.sha1(d.encode()).hexdigest(), "size": 0, "path": d}
                for d in sorted(folders)]
        return dirs + entries

    def _entries(self, commit: Commit, path: str) -> list[dict]:
        if path in commit.files:
            return [self._file_entry(path, commit.files[path])]
        if any(p.startswith(f"{path}/") for p in commit.files):
            return [{"type": "directory", "oid": hashlib.sha1(path.encode()).hexdigest(), "size": 0, "path": path}]
        return []

    def _refs(self, repo: Repo) -> dict:
        def ref(name: str, sha: str, kind: str) -> dict:
            return {"name": name, "ref": name if name.startswith("refs/") else f"refs/{kind}/{name}",
                    "targetCommit": sha}

        branches = [ref(n, s, "heads") for n, s in repo.branches.items() if not n.startswith("refs/pr/")]
        prs = [ref(n, s, "pr") for n, s in repo.branches.items() if n.startswith("refs/pr/")]
        tags = [ref(n, s, "tags") for n, s in repo.tags.items()]
        refs = {"branches": branches, "converts": [], "tags": tags}
        if self.query.get("include_prs"):
            refs["pullRequests"] = prs
        return refs

    def _preupload(self, repo: Repo, revision: str) -> None:
        self._require_write()
        hub = self.server_hub
        files = self._json().get("files", [])
        existing = hub._commit_at(repo, revision).files if revision in repo.branches else {}
        answers = []
        for f in files:
            lfs = f.get("size", 0) > LFS_THRESHOLD or any(
                fnmatch.fnmatch(f["path"].rsplit("/", 1)[-1], pattern) for pattern in LFS_PATTERNS
            )
            oid = existing.get(f["path"])
            if oid is not None and lfs:  # LFS files are compared by the sha256 of their content
                oid = hashlib.sha256(hub._blob(oid)).hexdigest()
            answers.append({"path": f["path"], "uploadMode": "lfs" if lfs else "regular", "shouldIgnore": False,
                            "oid": oid})
        self._send(200, {"files": answers})

    def _lfs_batch(self) -> None:
        self._require_write()
        objects = []
        for obj in self._json().get("objects", []):
            entry = {"oid": obj["oid"], "size": obj["size"]}
            if not (self.server_hub.root / "lfs" / obj["oid"]).exists():
                entry["actions"] = {"upload": {"href": f"{self.server_hub.url}/__lfs/{obj['oid']}"}}
            objects.append(entry)
        self._send(200, {"transfer": "basic", "objects": objects}, {"Content-Type": "application/vnd.git-lfs+json"})

    def _lfs_put(self, oid: str) -> None:
        if hashlib.sha256(self.body).hexdigest() != oid:
            raise HubError(400, f"LFS upload does not match its oid {oid}")
        self.server_hub._put_blob(self.body, "lfs", oid)
        self._send(200, {})

    def _commit(self, repo: Repo, revision: str) -> None:
        hub = self.server_hub
        if revision not in repo.branches:
            raise HubError(404, f"Invalid rev id: {revision} (create the branch first)", "RevisionNotFound")
        lines = [json.loads(line) for line in self.body.splitlines() if line.strip()]
        header = next((line["value"] for line in lines if line["key"] == "header"), {})
        parent = repo.commits[repo.branches[revision]]
        if header.get("parentCommit") and header["parentCommit"] != parent.sha:
            raise HubError(412, f"Parent commit {header['parentCommit']} is not the head of {revision}")
        files = dict(parent.files)
        for line in lines:
            key, value = line["key"], line["value"]
            if key == "file":
                content = value["content"]
                data = base64.b64decode(content) if value.get("encoding") == "base64" else content.encode()
                files[value["path"]] = hub._put_blob(data)
            elif key == "lfsFile":
                lfs_path = hub.root / "lfs" / value["oid"]
                if not lfs_path.exists():
                    raise HubError(422, f"LFS object {value['oid']} for {value['path']} was never uploaded")
                files[value["path"]] = hub._put_blob(lfs_path.read_bytes())
            elif key == "deletedFile":
                if files.pop(value["path"], None) is None:
                    raise HubError(404, f"A file with this name doesn't exist: {value['path']}", "EntryNotFound")
            elif key == "deletedFolder":
                files = {p: s for p, s in files.items() if not p.startswith(value["path"].rstrip("/") + "/")}
            elif key != "header":
                raise HubError(400, f"Unsupported commit operation {key!r} (the test Hub stores regular files only)")
        target = revision
        pr_url = None
        if self.query.get("create_pr"):
            repo.num_prs += 1
            target = f"refs/pr/{repo.num_prs}"
            prefix = "" if repo.repo_type == "model" else f"{repo.repo_type}s/"
            pr_url = f"{hub.url}/{prefix}{repo.repo_id}/discussions/{repo.num_prs}"
        commit = hub._new_commit(repo, parent.sha, header.get("summary") or "Upload files",
                                 header.get("description") or "", files)
        repo.branches[target] = commit.sha
        prefix = "" if repo.repo_type == "model" else f"{repo.repo_type}s/"
        self._send(200, {"success": True, "commitOid": commit.sha, "pullRequestUrl": pr_url,
                         "commitUrl": f"{hub.url}/{prefix}{repo.repo_id}/commit/{commit.sha}"})

    def _ref(self, repo: Repo, method: str, kind: str, name: str) -> None:
        # POST branch/{name} {"startingPoint": rev}; POST tag/{revision} {"tag": name}; DELETE {kind}/{name}.
        refs = repo.branches if kind == "branch" else repo.tags
        if method == "DELETE":
            if refs.pop(name, None) is None:
                raise HubError(404, f"Invalid rev id: {name}", "RevisionNotFound")
            return self._send(200, {})
        payload = self._json()
        if kind == "tag":
            name, start = payload.get("tag", ""), name
        else:
            start = payload.get("startingPoint") or "main"
        if not name:
            raise HubError(400, f"Missing {kind} name")
        if name in refs:
            raise HubError(409, f"{kind} {name} already exists")
        refs[name] = self.server_hub._commit_at(repo, start).sha
        self._send(200, {})

    def _resolve(self, method: str, repo: Repo, revision: str, path: str) -> None:
        hub = self.server_hub
        commit = hub._commit_at(repo, revision)
        if path not in commit.files:
            headers = {"X-Repo-Commit": commit.sha, "X-Error-Code": "EntryNotFound",
                       "X-Error-Message": "Entry not found"}
            return self._send(404, {"error": "Entry not found"}, headers, head=method == "HEAD")
        sha = commit.files[path]
        content = hub._blob(sha)
        headers = {"X-Repo-Commit": commit.sha, "ETag": f'"{sha}"', "Accept-Ranges": "bytes",
                   "Content-Disposition": f"inline; filename*=UTF-8''{quote(path.split('/')[-1])}"}
        status = 200
        range_header = self.headers.get("Range")
        if range_header and (match := re.fullmatch(r"bytes=(\d*)-(\d*)", range_header.strip())):
            start_text, end_text = match.groups()
            if start_text:
                start, end = int(start_text), int(end_text) if end_text else len(content) - 1
            else:
                start, end = max(0, len(content) - int(end_text)), len(content) - 1
            end = min(end, len(content) - 1)
            headers["Content-Range"] = f"bytes {start}-{end}/{len(content)}"
            content, status = content[start:end + 1], 206
        self._send(status, content, headers, head=method == "HEAD")
