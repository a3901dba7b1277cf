"""Push saved mm_hub models to the Hugging Face Hub (one commit, with a generated model card) and pull them back.

Not a remote-code file: pushed models never import it.
"""

from __future__ import annotations

import fnmatch
import json
import os
from pathlib import Path
from typing import Any

from huggingface_hub import CommitOperationAdd, CommitOperationDelete, HfApi, get_token
from huggingface_hub.errors import HfHubHTTPError

from .modelcard import build_model_card

# Never uploaded: Trainer checkpoints and logs, caches, hidden files, and any README (the card is generated).
IGNORE_PATTERNS = ("checkpoint-*", "runs", "__pycache__", "*.pyc", ".*", "README.md", "optimizer.pt", "scheduler.pt",
                   "rng_state*.pth")
# Stale remote files of these kinds are deleted when a push no longer contains them (e.g. a different sharding).
WEIGHT_PATTERNS = ("*.safetensors", "*.bin", "*.safetensors.index.json", "*.bin.index.json")


class HubAuthError(PermissionError):
    """The Hub refused a write: no token, an invalid token, or no write access to the repo."""


def check_repo_id(repo_id: Any) -> str:
    """Return `repo_id` when it is an 'org/name' string; TypeError / ValueError otherwise."""
    if not isinstance(repo_id, str):
        raise TypeError(f"repo_id must be a str like 'org/name', got {type(repo_id).__name__}")
    parts = repo_id.split("/")
    if len(parts) != 2 or not all(parts):
        raise ValueError(f"repo_id must look like 'org/name', got {repo_id!r}")
    return repo_id


def _ignored(relative: Path) -> bool:
    return any(fnmatch.fnmatch(part, pattern) for part in relative.parts for pattern in IGNORE_PATTERNS)


def model_files(folder: str | Path) -> list[Path]:
    """The files of a saved model folder that a push uploads (relative paths, sorted)."""
    folder = Path(folder)
    relative = (p.relative_to(folder) for p in folder.rglob("*") if p.is_file())
    return sorted(path for path in relative if not _ignored(path))


def check_model_folder(folder: str | Path) -> dict[str, Any]:
    """Validate a saved mm_hub model folder before pushing; returns its config.json.

    Raises ValueError naming what is missing: the folder, config.json, weights, or the remote-code files
    that `config.auto_map` points to (without them `trust_remote_code` loading fails on machines without mm_hub).
    """
    folder = Path(folder)
    if not folder.is_dir():
        raise ValueError(f"model folder {str(folder)!r} does not exist or is not a directory")
    config_path = folder / "config.json"
    if not config_path.is_file():
        raise ValueError(f"{folder} holds no config.json: save the model with `model.save_pretrained({str(folder)!r})`")
    config = json.loads(config_path.read_text())
    if config.get("model_type") != "mm_hub":
        raise ValueError(f"{folder} holds a {config.get('model_type')!r} model; expected an mm_hub model")
    if not any(folder.glob("*.safetensors")):
        raise ValueError(f"{folder} holds no *.safetensors weights; found {[p.name for p in folder.iterdir()]}")
    auto_map = config.get("auto_map") or {}
    if not auto_map:
        raise ValueError(f"{folder}/config.json has no auto_map: save the model with mm_hub imported so its code ships")
    modules = {reference.split("--")[-1].split(".")[0] for reference in auto_map.values() if isinstance(reference, str)}
    missing = sorted(f"{module}.py" for module in modules if not (folder / f"{module}.py").is_file())
    if missing:
        raise ValueError(f"{folder} lacks the remote-code files {missing} named by config.json's auto_map")
    if not ((folder / "processor_config.json").is_file() or (folder / "preprocessor_config.json").is_file()):
        raise ValueError(f"{folder} holds no processor: call `processor.save_pretrained({str(folder)!r})` too")
    return config


def resolve_token(token: str | None, repo_id: str) -> str:
    """The explicit token, else the saved / HF_TOKEN one; HubAuthError when there is none (before any request)."""
    token = token if token is not None else get_token()
    if not token:
        raise HubAuthError(
            f"Pushing to {repo_id!r} needs a Hugging Face write token: run `hf auth login`, set HF_TOKEN, or pass"
            " token=...; none was found."
        )
    return token


def auth_error(err: HfHubHTTPError, repo_id: str) -> HubAuthError | None:
    """A HubAuthError with a readable message for a 401/403 answer; None for any other error."""
    status = err.response.status_code if err.response is not None else None
    if status not in (401, 403):
        return None
    return HubAuthError(
        f"The Hub refused the request for {repo_id!r} (HTTP {status}): check that your token is valid and has"
        f" write access to this namespace. Server said: {str(err).splitlines()[-1]}"
    )


def push_to_hub(
    folder: str | os.PathLike,
    repo_id: str,
    *,
    private: bool = False,
    revision: str | None = None,
    commit_message: str | None = None,
    token: str | None = None,
    create_pr: bool = False,
) -> str:
    """Upload a saved mm_hub model folder plus a generated README.md model card to `repo_id` in ONE commit.

    The folder must hold what `model.save_pretrained` + `processor.save_pretrained` write (weights, config with
    `auto_map`, the remote-code files, the custom pipeline, processor files); `training_info.json` and
    `eval_results.json`, when present, feed the card. Creates the repo (`private` applies only then) and the
    branch `revision` when needed; weight files the previous commit had but this folder lacks are deleted.
    The local folder is never modified. Returns the commit id.

    Raises ValueError for an invalid folder or repo id, HubAuthError without a usable write token.
    """
    check_repo_id(repo_id)
    folder = Path(folder)
    config = check_model_folder(folder)
    token = resolve_token(token, repo_id)
    card = build_model_card(folder, repo_id)
    api = HfApi(token=token)
    files = model_files(folder)
    try:
        api.create_repo(repo_id, private=private, exist_ok=True)
        if revision not in (None, "main"):
            api.create_branch(repo_id, branch=revision, exist_ok=True)
        remote = set(api.list_repo_files(repo_id, revision=revision))
        uploaded = {path.as_posix() for path in files}
        stale = [path for path in remote - uploaded
                 if any(fnmatch.fnmatch(path, pattern) for pattern in WEIGHT_PATTERNS)]
        operations: list = [CommitOperationAdd(path.as_posix(), str(folder / path)) for path in files]
        operations.append(CommitOperationAdd("README.md", str(card).encode()))
        operations += [CommitOperationDelete(path) for path in sorted(stale)]
        architecture = (config.get("architectures") or ["MMHubModel"])[0]
        message = commit_message or f"Upload {architecture} ({config.get('fusion_type')} fusion) with mm_hub"
        info = api.create_commit(repo_id, operations, commit_message=message, revision=revision, create_pr=create_pr)
    except HfHubHTTPError as err:
        if (auth := auth_error(err, repo_id)) is None:
            raise
        raise auth from err
    return info.oid


def load_from_hub(repo_id: str, revision: str | None = None, token: str | None = None, **kwargs: Any):
    """`(model, processor)` for a pushed mm_hub model, with mm_hub's own classes (no remote code runs).

    `revision` pins a branch, tag or commit id; other keyword arguments go to `from_pretrained`
    (e.g. `local_files_only=True`).
    """
    from transformers import AutoModel, AutoProcessor

    check_repo_id(repo_id)
    model = AutoModel.from_pretrained(repo_id, revision=revision, token=token, **kwargs)
    processor = AutoProcessor.from_pretrained(repo_id, revision=revision, token=token, **kwargs)
    return model, processor
