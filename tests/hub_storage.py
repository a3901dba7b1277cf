"""Storage of the local test Hub: repos, branches, tags and commits in memory, file contents as blobs on disk.

Content-addressed: a committed file is stored once under its git blob sha1 (`blobs/`), an LFS upload under its
sha256 (`lfs/`) until a commit references it. `HubStore` is thread-safe through `lock`; `tests.hub_server` serves it
over HTTP.
"""

from __future__ import annotations

import hashlib
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

REPO_TYPES = ("model", "dataset", "space")
# The patterns a new Hub repo stores through LFS (a subset of the Hub's default `.gitattributes`).
LFS_PATTERNS = ("*.safetensors", "*.bin", "*.pt", "*.pth", "*.ckpt", "*.parquet", "*.arrow", "*.npy", "*.npz",
                "*.pkl", "*.faiss", "*.zip", "*.tar", "*.gz", "*.png", "*.jpg", "*.jpeg", "*.webp")
GITATTRIBUTES = "".join(f"{p} filter=lfs diff=lfs merge=lfs -text\n" for p in LFS_PATTERNS).encode()
LFS_THRESHOLD = 10 * 1024 * 1024  # bytes; bigger files go through LFS whatever their name


def git_blob_sha(content: bytes) -> str:
    """The git object id of `content` (what the Hub reports as a regular file's `oid` / `ETag`)."""
    return hashlib.sha1(b"blob %d\0" % len(content) + content).hexdigest()


class HubError(Exception):
    """An HTTP error answer: status, optional `X-Error-Code`, message."""

    def __init__(self, status: int, message: str, code: str | None = None, extra: dict | None = None) -> None:
        super().__init__(message)
        self.status, self.message, self.code, self.extra = status, message, code, extra or {}


@dataclass
class Commit:
    """One commit: its id, parent, title and the full file table (path -> blob sha)."""

    sha: str
    parent: str | None
    title: str
    description: str
    files: dict[str, str]
    date: str = field(default_factory=lambda: time.strftime("%Y-%m-%dT%H:%M:%S.000Z", time.gmtime()))


@dataclass
class Repo:
    """A stored repo: visibility, Space SDK, refs and commits."""

    repo_type: str
    repo_id: str
    private: bool
    sdk: str | None = None
    branches: dict[str, str] = field(default_factory=dict)
    tags: dict[str, str] = field(default_factory=dict)
    commits: dict[str, Commit] = field(default_factory=dict)
    num_prs: int = 0



class HubStore:
    """Repos of every type, keyed by (repo_type, repo_id), with files under `root`.

    Inspect stored content with `repos()`, `repo()`, `files()`, `read()`, `commits()` and `branches()`.
    """

    def __init__(self, root: str | Path, user: str = "mm-tester") -> None:
        self.root = Path(root)
        (self.root / "blobs").mkdir(parents=True, exist_ok=True)
        (self.root / "lfs").mkdir(parents=True, exist_ok=True)
        self.user = user
        self.url = ""  # set by the server: the base of the URLs answers carry
        self.lock = threading.RLock()
        self._repos: dict[tuple[str, str], Repo] = {}

    # ----------------------------------------------------------------------------------------------- inspection
    def repos(self, repo_type: str = "model") -> list[str]:
        """Ids of the stored repos of one type."""
        with self.lock:
            return sorted(rid for (rtype, rid) in self._repos if rtype == repo_type)

    def repo(self, repo_id: str, repo_type: str = "model") -> Repo:
        """The stored `Repo` (KeyError when missing)."""
        with self.lock:
            return self._repos[(repo_type, repo_id)]

    def files(self, repo_id: str, repo_type: str = "model", revision: str = "main") -> dict[str, bytes]:
        """Every file of a repo at a revision, path -> content."""
        with self.lock:
            commit = self._commit_at(self.repo(repo_id, repo_type), revision)
            return {path: self._blob(sha) for path, sha in commit.files.items()}

    def read(self, repo_id: str, path: str, repo_type: str = "model", revision: str = "main") -> bytes:
        """One file's content at a revision."""
        return self.files(repo_id, repo_type, revision)[path]

    def commits(self, repo_id: str, repo_type: str = "model", revision: str = "main") -> list[Commit]:
        """The commits reachable from a revision, newest first."""
        with self.lock:
            repo = self.repo(repo_id, repo_type)
            commit: Commit | None = self._commit_at(repo, revision)
            history = []
            while commit is not None:
                history.append(commit)
                commit = repo.commits.get(commit.parent) if commit.parent else None
            return history

    def branches(self, repo_id: str, repo_type: str = "model") -> dict[str, str]:
        """Branch name -> head commit sha."""
        with self.lock:
            return dict(self.repo(repo_id, repo_type).branches)

    # ----------------------------------------------------------------------------------------------- storage
    def _blob(self, sha: str) -> bytes:
        return (self.root / "blobs" / sha).read_bytes()

    def _blob_size(self, sha: str) -> int:
        return (self.root / "blobs" / sha).stat().st_size

    def _put_blob(self, content: bytes, folder: str = "blobs", sha: str | None = None) -> str:
        sha = sha or git_blob_sha(content)
        path = self.root / folder / sha
        if not path.exists():
            tmp = path.with_name(f"{sha}.tmp{threading.get_ident()}")
            tmp.write_bytes(content)
            tmp.replace(path)
        return sha

    def _commit_at(self, repo: Repo, revision: str) -> Commit:
        sha = repo.branches.get(revision) or repo.tags.get(revision)
        if sha is None and revision in repo.commits:
            sha = revision
        if sha is None:
            raise HubError(404, f"Invalid rev id: {revision}", "RevisionNotFound")
        return repo.commits[sha]

    def _new_commit(
        self, repo: Repo, parent: str | None, title: str, description: str, files: dict[str, str]
    ) -> Commit:
        seed = f"{repo.repo_id}{parent}{title}{time.time_ns()}{sorted(files.items())}".encode()
        commit = Commit(hashlib.sha1(seed).hexdigest(), parent, title, description, files)
        repo.commits[commit.sha] = commit
        return commit

    def create_repo(
        self, repo_id: str, repo_type: str = "model", private: bool = False, sdk: str | None = None
    ) -> Repo:
        """Create a repo with the Hub's initial `.gitattributes` commit on `main` (HubError 409 if it exists)."""
        with self.lock:
            if (repo_type, repo_id) in self._repos:
                prefix = "" if repo_type == "model" else f"{repo_type}s/"
                raise HubError(409, f"You already created this {repo_type} repo: {repo_id}",
                               extra={"url": f"{self.url}/{prefix}{repo_id}"})
            repo = Repo(repo_type, repo_id, private, sdk)
            files = {".gitattributes": self._put_blob(GITATTRIBUTES)}
            repo.branches["main"] = self._new_commit(repo, None, "initial commit", "", files).sha
            self._repos[(repo_type, repo_id)] = repo
            return repo
