"""Push saved mm_hub models to the Hugging Face Hub: one commit with a generated model card, only regular files
inside the folder and no pickles, and the Hub's errors as one readable message. (Loading is `mm_hub.loading`.)
"""

from __future__ import annotations

import fnmatch
import json
import logging
import os
import stat
import zipfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from huggingface_hub import CommitOperationAdd, CommitOperationDelete, HfApi, constants, get_token
from huggingface_hub.errors import HfHubHTTPError, OfflineModeIsEnabled

try:  # the HTTP client of huggingface_hub 2.x; 1.x used httpx
    from httpx2 import TransportError
except ImportError:  # pragma: no cover
    from httpx import TransportError

from ._files import read_regular
from .cards import build_model_card, hub_id
from .model.adapter_mm_hub import ADAPTER_CONFIG_NAME as ADAPTER_CONFIG
from .model.adapter_mm_hub import ADAPTER_WEIGHTS_NAME as ADAPTER_WEIGHTS

# Never uploaded: Trainer checkpoints and logs, caches, hidden files, and any README (the card is generated).
IGNORE_PATTERNS = ("checkpoint-*", "runs", "__pycache__", "*.pyc", ".*", "README.md", "optimizer.pt", "scheduler.pt",
                   "rng_state*.pth")
# Pickles run code when they are loaded: never uploaded (weights travel as safetensors), nor any file whose bytes
# are a pickle or a zip of pickles (how torch.save writes), whatever its name.
PICKLE_PATTERNS = ("*.bin", "*.pt", "*.pth", "*.pkl", "*.pickle", "*.ckpt", "*.joblib", "*.npy", "*.npz")
# Stale remote files of these kinds are deleted when a push no longer contains them (e.g. a different sharding, or
# an adapter's config, which loading would otherwise take over the new weights).
ONNX_FOLDER = "onnx"  # where a pushed repo keeps its ONNX export (mm_hub.onnx_serving reads it there)
WEIGHT_PATTERNS = ("*.safetensors", "*.bin", "*.safetensors.index.json", "*.bin.index.json", ADAPTER_CONFIG)

logger = logging.getLogger(__name__)


class HubAuthError(PermissionError):
    """The Hub refused a write: no token, an invalid token, or no write access to the repo."""


class HubUnavailableError(ConnectionError):
    """The Hub could not be reached (network, ``HF_HUB_OFFLINE=1``) or answered with an error."""


def check_repo_id(repo_id: Any) -> str:
    """Return `repo_id` when it is an 'org/name' string; TypeError / ValueError otherwise."""
    if not isinstance(repo_id, str):
        raise TypeError(f"repo_id must be a str like 'org/name', got {type(repo_id).__name__}")
    parts = repo_id.split("/")
    if len(parts) != 2 or not all(parts):
        raise ValueError(f"repo_id must look like 'org/name', got {repo_id!r}")
    return repo_id


def _matches(name: str, patterns: tuple[str, ...]) -> bool:
    return any(fnmatch.fnmatch(name, pattern) for pattern in patterns)


def is_pickle(path: str | os.PathLike) -> bool:
    """Whether a file holds a pickle: pickle protocol 2+ bytes, or a zip archive with a ``.pkl`` member."""
    with open(path, "rb") as handle:
        head = handle.read(2)
    if len(head) == 2 and head[0] == 0x80 and 2 <= head[1] <= 5:
        return True
    if zipfile.is_zipfile(path):
        try:
            with zipfile.ZipFile(path) as archive:
                return any(name.endswith(".pkl") for name in archive.namelist())
        except (zipfile.BadZipFile, OSError):
            return False
    return False


def _walk(folder: Path) -> tuple[list[Path], list[str]]:
    """(files a push uploads, descriptions of those it refuses): see `model_files`."""
    files, refused = [], []
    for root, dirs, names in os.walk(folder, followlinks=False):
        base = Path(root)
        dirs[:] = [d for d in dirs if not _matches(d, IGNORE_PATTERNS)]
        refused += [f"{(base / d).relative_to(folder)} (a link)" for d in dirs if (base / d).is_symlink()]
        dirs[:] = [d for d in dirs if not (base / d).is_symlink()]  # os.walk would list, not enter, them anyway
        for name in names:
            path = base / name
            relative = path.relative_to(folder)
            if _matches(name, IGNORE_PATTERNS):
                continue
            if not stat.S_ISREG(os.lstat(path).st_mode):
                refused.append(f"{relative} (a link or special file)")
            elif _matches(name, PICKLE_PATTERNS) or is_pickle(path):
                refused.append(f"{relative} (a pickle)")
            else:
                files.append(relative)
    return sorted(files), refused


def model_files(folder: str | Path) -> list[Path]:
    """The files of a saved model folder that a push uploads (relative paths, sorted): regular files inside the
    folder only (symbolic links are never followed), no pickles, none of `IGNORE_PATTERNS`."""
    return _walk(Path(folder))[0]


@contextmanager
def hub_errors(repo_id: str) -> Iterator[None]:
    """Turn the Hub client's errors inside the block into one readable line: `HubAuthError` for a refused token,
    `HubUnavailableError` for an unreachable Hub, offline mode or any other error answer."""
    try:
        yield
    except HfHubHTTPError as err:
        if (auth := auth_error(err, repo_id)) is not None:
            raise auth from err
        raise HubUnavailableError(f"The Hub answered an error for {repo_id!r}: {str(err).splitlines()[0]}") from err
    except OfflineModeIsEnabled as err:
        raise HubUnavailableError(
            f"HF_HUB_OFFLINE is set, so nothing can be sent to the Hub ({repo_id!r}); unset it to push."
        ) from err
    except TransportError as err:
        raise HubUnavailableError(
            f"Could not reach the Hub at {constants.ENDPOINT} ({type(err).__name__}: {err}); check the network "
            "connection and HF_ENDPOINT."
        ) from err


def _check_safetensors(path: Path) -> None:
    """ValueError when ``path`` is not a safetensors file whose header can be read (a 0-byte file, a truncated one)."""
    from safetensors import SafetensorError, safe_open

    try:
        with safe_open(str(path), framework="pt") as handle:
            handle.keys()
    except (SafetensorError, OSError) as error:
        raise ValueError(f"{path.name} is not a readable safetensors file ({path.stat().st_size:,} bytes: {error}); "
                         "save the model again") from None


def check_model_folder(folder: str | Path) -> tuple[dict[str, Any], list[Path], list[str]]:
    """Validate a saved mm_hub model folder before pushing, on the files a push would upload (`model_files`: regular
    files inside it, no pickles), so that nothing is read through a link and nothing required is left behind.

    Returns:
        ``(config, files, refused)``: its config.json, the files to upload and descriptions of those refused.

    Raises:
        ValueError: one line naming what is missing or unreadable: the folder, config.json, weights (or a weights
            file that is not safetensors), the remote-code files that ``config.auto_map`` names (without them
            ``trust_remote_code`` loading fails on machines without mm_hub), the processor or the tokenizer.
    """
    folder = Path(folder)
    if not folder.is_dir():
        raise ValueError(f"model folder {str(folder)!r} does not exist or is not a directory")
    files, refused = _walk(folder)
    names = {path.as_posix() for path in files}

    def require(found: bool, what: str, fix: str) -> None:
        if not found:
            why = [reason for reason in refused if reason.split(" (")[0] in what]
            kept = f" ({', '.join(why)}: never uploaded)" if why else ""
            raise ValueError(f"{folder} holds no {what}{kept}: {fix}")

    save = f"save the model with `model.save_pretrained({str(folder)!r})`"
    require("config.json" in names, "config.json", save)
    try:
        config = json.loads(read_regular(folder / "config.json"))
    except (ValueError, UnicodeDecodeError) as error:
        raise ValueError(f"{folder}/config.json is not JSON ({error}); {save}") from None
    if not isinstance(config, dict) or config.get("model_type") != "mm_hub":
        kind = config.get("model_type") if isinstance(config, dict) else None
        raise ValueError(f"{folder} holds a {kind!r} model; expected an mm_hub model")
    weights = [path for path in files if path.suffix == ".safetensors"]
    require(bool(weights), "*.safetensors weights (regular files)", save)
    for path in weights:
        _check_safetensors(folder / path)
    auto_map = config.get("auto_map") or {}
    require(bool(auto_map), "auto_map in config.json", "save the model with mm_hub imported so its code ships")
    modules = {reference.split("--")[-1].split(".")[0] for reference in auto_map.values() if isinstance(reference, str)}
    missing = sorted(f"{module}.py" for module in modules if f"{module}.py" not in names)
    require(not missing, f"remote-code files {missing} named by config.json's auto_map", save)
    if ADAPTER_CONFIG in names:
        require(ADAPTER_WEIGHTS in names, f"{ADAPTER_WEIGHTS} beside its {ADAPTER_CONFIG}",
                "save the adapter with `mm_hub.lora.save_adapter` (training with --lora does)")
    saved = f"call `processor.save_pretrained({str(folder)!r})` too"
    require(bool(names & {"processor_config.json", "preprocessor_config.json"}), "processor_config.json", saved)
    vocabulary = [name for name in names if name == "tokenizer.json" or name.startswith("vocab") or name.endswith(".model")]
    require(bool(vocabulary), "tokenizer vocabulary (tokenizer.json)", saved)
    return config, files, refused


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


def adapter_uploads(folder: Path, files: list[Path], repo_id: str, config: dict[str, Any]) -> dict[str, bytes]:
    """What a push uploads in place of an adapter folder's own ``adapter_config.json`` and ``config.json`` (nothing
    for a plain model; the local files are not modified): the adapter's base becomes the repo itself, whose config
    names the towers, so that ``AutoModel.from_pretrained(repo_id)`` finds it; the towers are named by Hub id (the
    packaged MiniLM folder by its id, the weights' SHA-256 checked when loading).

    Raises:
        ValueError: ``adapter_config.json`` is not a JSON object, or a tower is a local folder with no Hub id (a
            model from the Hub loads its towers from the Hub only).
    """
    if Path(ADAPTER_CONFIG) not in files:
        return {}
    try:
        adapter = json.loads(read_regular(folder / ADAPTER_CONFIG))
    except (ValueError, UnicodeDecodeError) as error:
        raise ValueError(f"{folder / ADAPTER_CONFIG} is not JSON ({error}); save the adapter again") from None
    if not isinstance(adapter, dict):
        raise ValueError(f"{folder / ADAPTER_CONFIG} is not a JSON object; save the adapter again")
    towers = {side: dict(record) for side, record in (config.get("pretrained_towers") or {}).items()
              if isinstance(record, dict)}
    local = [record.get("name_or_path") for record in towers.values() if hub_id(str(record.get("name_or_path"))) is None]
    if local:
        raise ValueError(f"The adapter in {folder} was trained on local tower folders {local}; adapters from the Hub "
                         "load their towers from the Hub only. Train on Hub ids (--vision-model / --text-model) or "
                         "with --merge-lora.")
    for record in towers.values():
        record["name_or_path"] = hub_id(record["name_or_path"])
    return {ADAPTER_CONFIG: json.dumps({**adapter, "base_model_name_or_path": repo_id}, indent=2).encode(),
            "config.json": (json.dumps({**config, "pretrained_towers": towers}, indent=2, sort_keys=True) + "\n").encode()}


def push_to_hub(
    folder: str | os.PathLike,
    repo_id: str,
    *,
    private: bool = False,
    revision: str | None = None,
    commit_message: str | None = None,
    token: str | None = None,
    create_pr: bool = False,
    onnx: str | os.PathLike | None = None,
) -> str:
    """Upload a saved mm_hub model folder plus a generated README.md model card to `repo_id` in ONE commit (with
    ``onnx``, an export of it from ``python -m training.export``, into the repo's ``onnx/`` folder, and a card
    section on running it without torch).

    The folder must hold what `model.save_pretrained` + `processor.save_pretrained` write (weights, config with
    `auto_map`, the remote-code files, the custom pipeline, processor files); `training_info.json` and
    `eval_results.json`, when present, feed the card. Creates the repo (`private` applies only then) and the
    branch `revision` when needed; weight files the previous commit had but this folder lacks are deleted.
    The local folder is never modified. Only regular files inside it are uploaded, never a pickle (see `model_files`).
    Returns the commit id.

    Raises ValueError for an invalid folder or repo id, HubAuthError without a usable write token,
    HubUnavailableError when the Hub cannot be reached or answers an error.
    """
    check_repo_id(repo_id)
    folder = Path(folder)
    config, files, refused = check_model_folder(folder)
    replaced = adapter_uploads(folder, files, repo_id, config)
    onnx_config, onnx_files = None, []
    if onnx is not None:
        from .ort_mm_hub import read_onnx_config

        onnx_config = read_onnx_config(onnx)
        if onnx_config.get("architecture") not in config.get("architectures", []):
            raise ValueError(f"{onnx} is an export of a {onnx_config.get('architecture')}, not of the "
                             f"{(config.get('architectures') or ['?'])[0]} in {folder}.")
        onnx_files = [path.as_posix() for path in model_files(onnx)  # what the exporter writes: graphs, JSON, runtime
                      if path.suffix in (".onnx", ".json", ".py")]
    token = resolve_token(token, repo_id)
    card = build_model_card(folder, repo_id, onnx_config=onnx_config)
    api = HfApi(token=token)
    if refused:
        logger.warning("Not uploading %s: only regular files inside the folder, and no pickles.", ", ".join(refused))
    with hub_errors(repo_id):
        api.create_repo(repo_id, private=private, exist_ok=True)
        if revision not in (None, "main"):
            api.create_branch(repo_id, branch=revision, exist_ok=True)
        remote = set(api.list_repo_files(repo_id, revision=revision))
        uploaded = {path.as_posix() for path in files} | {f"{ONNX_FOLDER}/{name}" for name in onnx_files}
        stale = [path for path in remote - uploaded  # old weights; an old export when a new one is pushed
                 if any(fnmatch.fnmatch(path, pattern) for pattern in WEIGHT_PATTERNS)
                 or (onnx_files and path.startswith(f"{ONNX_FOLDER}/"))]
        operations: list = [CommitOperationAdd(path.as_posix(), replaced.get(path.as_posix(), str(folder / path)))
                            for path in files]
        operations += [CommitOperationAdd(f"{ONNX_FOLDER}/{name}", str(Path(onnx) / name)) for name in onnx_files]
        operations.append(CommitOperationAdd("README.md", str(card).encode()))
        operations += [CommitOperationDelete(path) for path in sorted(stale)]
        architecture = (config.get("architectures") or ["MMHubModel"])[0]
        message = commit_message or f"Upload {architecture} ({config.get('fusion_type')} fusion) with mm_hub"
        info = api.create_commit(repo_id, operations, commit_message=message, revision=revision, create_pr=create_pr)
    return info.oid
