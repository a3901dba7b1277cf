"""Find and load a saved or pushed mm_hub model: which one to serve, and the one loader every caller uses.

Model resolution for the app (first that is set wins): explicit model ids / paths (the app's ``--model`` flag) >
the ``MM_HUB_MODEL`` (and ``MM_HUB_REVISION``) environment variables > a ``space_config.json`` beside ``app.py``
(the app manifest the Space command writes: ``{"models": [...]}``) > the built-in demo models. Several models are
served side by side: each of the app's tabs goes to the first model that can serve it.

`load_model` loads weights from safetensors only (never a pickle) and turns every failure into one `ModelLoadError`
whose message a person starting the app understands.
"""

from __future__ import annotations

import json
import logging
import os
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from huggingface_hub.errors import EntryNotFoundError, StrictDataclassError
from transformers import AutoConfig

from .model.modeling_mm_hub import MMHubForImageTextClassification, MMHubPreTrainedModel
from .model.processing_mm_hub import MMHubProcessor
from .tasks import all_heads

logger = logging.getLogger(__name__)

# The app manifest: written by the Space command beside app.py, read by the app (see `read_manifest`).
SPACE_CONFIG = "space_config.json"


# What loading a model can raise that is no bug: a file or repo that is missing, unreachable or refused (OSError:
# the Hub's HTTP errors too), a config or file that is not what it should be (ValueError, a strict config field).
LOAD_ERRORS = (OSError, ValueError, StrictDataclassError)


class ModelLoadError(OSError):
    """The model could not be found, reached or read: one message for the person who asked for it."""


@dataclass
class ModelSource:
    """One model the app serves: ``model`` None means the built-in demo model."""

    model: str | None
    revision: str | None = None
    origin: str = "demo"  # "argument" | "env" | "space_config" | "demo"


MANIFEST_FORMS = (
    '{"models": ["org/a", {"model": "org/b", "revision": "v1"}, "./folder"]} or {"model": "org/a", "revision": null}'
)


def parse_model_spec(spec: str) -> tuple[str, str | None]:
    """``"org/name@revision"`` -> ``("org/name", "revision")``; a Hub id or a folder without ``@`` -> ``(spec, None)``
    (an existing folder whose name holds ``@`` is taken whole: Hub ids never hold one)."""
    if "@" in spec and not Path(spec).exists():
        model, revision = spec.rsplit("@", 1)
        return model, revision or None
    return spec, None


def manifest_file(spec: str | os.PathLike) -> Path | None:
    """The app manifest ``spec`` names: a ``.json`` file, or a folder holding ``space_config.json`` and no model of
    its own (no ``config.json``); None for a model id or model folder."""
    path = Path(spec)
    if path.suffix == ".json" and path.is_file():
        return path
    if path.is_dir() and (path / SPACE_CONFIG).is_file() and not (path / "config.json").is_file():
        return path / SPACE_CONFIG
    return None


def read_manifest(path: str | os.PathLike) -> list[tuple[str, str | None]]:
    """The ``(model, revision)`` entries of an app manifest (`MANIFEST_FORMS`); relative folder entries are taken
    relative to the manifest's folder.

    Raises:
        ModelLoadError: the file is not JSON of an accepted form, or lists no model.
    """
    path = Path(path)
    try:
        data = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as error:
        raise ModelLoadError(f"{path} is not a readable JSON app manifest: {error}") from error
    entries = data.get("models") if isinstance(data, dict) and "models" in data else [data]
    models = []
    for entry in entries if isinstance(entries, list) else [None]:
        if isinstance(entry, str):
            entry = dict(zip(("model", "revision"), parse_model_spec(entry)))
        model = entry.get("model") if isinstance(entry, dict) else None
        revision = entry.get("revision") if isinstance(entry, dict) else None
        if not isinstance(model, str) or not model or not isinstance(revision, (str, type(None))):
            raise ModelLoadError(f"{path} must be a JSON object like {MANIFEST_FORMS}; got {data!r}.")
        beside = path.parent / model
        models.append((str(beside) if model.startswith(".") and beside.is_dir() else model, revision or None))
    if not models:
        raise ModelLoadError(f"{path} lists no model; write it like {MANIFEST_FORMS}.")
    return models


def resolve_model_sources(
    model: str | os.PathLike | list[str] | None = None,
    revision: str | None = None,
    app_dir: str | os.PathLike | None = None,
) -> list[ModelSource]:
    """Pick the models to serve: ``model`` argument > ``$MM_HUB_MODEL`` > ``app_dir/space_config.json`` > demo.

    ``model`` (and ``$MM_HUB_MODEL``) may name several models: a list, comma-separated ids, or an app manifest
    (`manifest_file`); each id may pin a revision as ``org/name@revision``. ``revision`` (and ``$MM_HUB_REVISION``)
    applies when there is one model.

    Raises:
        ModelLoadError: a manifest that cannot be read, or ``revision`` with several models.
    """
    if model:
        specs, origin = ([str(m) for m in model] if isinstance(model, list) else str(model).split(",")), "argument"
    elif os.environ.get("MM_HUB_MODEL"):
        specs, origin = os.environ["MM_HUB_MODEL"].split(","), "env"
        revision = revision or os.environ.get("MM_HUB_REVISION") or None
    elif app_dir is not None and (Path(app_dir) / SPACE_CONFIG).exists():
        specs, origin = [str(Path(app_dir) / SPACE_CONFIG)], "space_config"
    else:
        return [ModelSource(None, None, "demo")]
    models = []
    for spec in filter(None, (spec.strip() for spec in specs)):
        manifest = manifest_file(spec)
        models += read_manifest(manifest) if manifest is not None else [parse_model_spec(spec)]
    if revision and len(models) > 1:
        raise ModelLoadError(f"A revision ({revision}) was given for {len(models)} models; pin each as "
                             "org/name@revision instead.")
    return [ModelSource(name, revision or pinned, origin) for name, pinned in models]


def _load_error_message(model_id: str, revision: str | None, error: BaseException) -> str:
    """One readable paragraph: what failed, why (the first line of the cause), and what to check."""
    reason = (str(error).strip().splitlines() or [type(error).__name__])[0][:300]
    endpoint = os.environ.get("HF_ENDPOINT", "https://huggingface.co")
    return (
        f"Could not load the model {model_id!r} (revision {revision or 'main'!r}): {type(error).__name__}: {reason}\n"
        f"Check that the Hub id or local folder is right and holds an mm_hub model, that the revision exists, that "
        f"this machine can reach {endpoint} (or has the model in its cache), and, for a private repo, that HF_TOKEN "
        "is set."
    )


def _endpoint_reachable(endpoint: str, timeout: float = 5.0) -> bool:
    """Whether the Hub answers at all (any HTTP status counts); one quick try, no retries."""
    request = urllib.request.Request(endpoint, method="HEAD")
    try:
        urllib.request.urlopen(request, timeout=timeout).close()
    except urllib.error.HTTPError:
        return True
    except (OSError, ValueError):  # refused, unresolvable, timed out, malformed URL
        return False
    return True


def _offline_fallback(model_id: str, revision: str | None) -> bool:
    """For a Hub id: True when the Hub cannot be reached but the model is cached (load it from the cache).

    Checked up front because the Hub client retries an unreachable endpoint with backoff for ~30 s before failing;
    a person starting the app gets the answer in seconds instead.

    Raises:
        ModelLoadError: the Hub cannot be reached and the model is not in the cache.
    """
    from huggingface_hub import constants, try_to_load_from_cache

    if Path(model_id).is_dir() or constants.HF_HUB_OFFLINE or _endpoint_reachable(constants.ENDPOINT):
        return False
    if isinstance(try_to_load_from_cache(model_id, "config.json", revision=revision), str):
        return True
    raise ModelLoadError(
        f"Could not load the model {model_id!r} (revision {revision or 'main'!r}): cannot reach {constants.ENDPOINT} "
        "and the model is not in the local cache. Check the network (or HF_ENDPOINT), or pass a local folder."
    )


def load_model(
    model_id: str | os.PathLike,
    revision: str | None = None,
    token: str | None = None,
    head: type | tuple[type, ...] | None = None,
) -> tuple[MMHubPreTrainedModel, MMHubProcessor]:
    """Load a saved or pushed mm_hub model, in eval mode, and its processor: the one loader of the library, the app,
    the index and the ensemble command. mm_hub's own classes load (no code from the repo runs) and weights come from
    safetensors only.

    Args:
        model_id: a Hub id (``org/name``) or a local folder.
        revision: branch, tag or commit of a Hub model.
        token: for private repos (default: the saved / ``HF_TOKEN`` one).
        head: the class (or classes) the caller needs; default: the head named in the config's ``architectures``
            (any head of `mm_hub.tasks.TASKS`; the classifier when it names none).

    Raises:
        ModelLoadError: the id/folder does not exist, cannot be reached, is not an mm_hub model, or holds another
            head than ``head``.
    """
    model_id = str(model_id)
    hub_kwargs = {"revision": revision, "token": token, "local_files_only": _offline_fallback(model_id, revision)}
    try:
        config = AutoConfig.from_pretrained(model_id, **hub_kwargs)
    except LOAD_ERRORS as error:  # hub, network, file and config errors: the person starting the app needs one message
        raise ModelLoadError(_load_error_message(model_id, revision, error)) from error
    if config.model_type != "mm_hub":
        raise ModelLoadError(
            f"{model_id!r} is a {config.model_type!r} model; mm_hub loads image+text models of model_type 'mm_hub'."
        )
    heads = all_heads()
    saved = next((heads[name] for name in config.architectures or [] if name in heads), MMHubForImageTextClassification)
    wanted = head if isinstance(head, tuple) else (head,) if head is not None else (saved,)
    if saved not in wanted:
        raise ModelLoadError(
            f"{model_id!r} holds an {saved.__name__}; this needs {' or '.join(cls.__name__ for cls in wanted)}."
        )
    try:
        model = saved.from_pretrained(model_id, use_safetensors=True, **hub_kwargs)
        processor = MMHubProcessor.from_pretrained(model_id, **hub_kwargs)
    except LOAD_ERRORS as error:
        raise ModelLoadError(_load_error_message(model_id, revision, error)) from error
    return model.eval(), processor


REPORT_FILES = ("training_info.json", "eval_results.json")  # what training writes beside a model
MAX_REPORT_BYTES = 10_000_000  # a report larger than this is not read (a hostile repo could hold any file)


def load_reports(model_id: str | os.PathLike, revision: str | None = None, token: str | None = None) -> dict[str, dict]:
    """The JSON reports training saved with a model (`REPORT_FILES`), by file name; those missing, unreachable,
    oversized or not a JSON object are left out (each with a log line), so a model without them still loads."""
    from huggingface_hub import hf_hub_download

    local = Path(model_id).is_dir()
    try:
        cache_only = not local and _offline_fallback(str(model_id), revision)
    except ModelLoadError:  # unreachable and not cached
        return {}
    reports: dict[str, dict] = {}
    for name in REPORT_FILES:
        try:
            if local:
                path = Path(model_id) / name
                if not path.is_file():
                    continue
            else:
                path = Path(hf_hub_download(str(model_id), name, revision=revision, token=token,
                                            local_files_only=cache_only))
            if path.stat().st_size > MAX_REPORT_BYTES:
                raise ValueError(f"larger than {MAX_REPORT_BYTES:,} bytes")
            report = json.loads(path.read_text(encoding="utf-8"), parse_constant=_no_constant)
            if not isinstance(report, dict):
                raise ValueError(f"a JSON {type(report).__name__}, not an object")
        except (*LOAD_ERRORS, EntryNotFoundError) as error:  # absent, unreachable, not JSON: the model works without it
            if "EntryNotFound" not in type(error).__name__:
                logger.warning("Not reading %s of %s: %s", name, model_id, error)
            continue
        reports[name] = report
    return reports


def _no_constant(name: str) -> Any:
    raise ValueError(f"{name} is not a number (reports are standard JSON)")


def resolved_commit(model_id: str | os.PathLike, revision: str | None = None) -> str | None:
    """The commit a Hub model was loaded from (the name of its cached snapshot folder; no network call); None for
    local folders."""
    from huggingface_hub import try_to_load_from_cache

    if Path(model_id).is_dir():
        return None
    cached = try_to_load_from_cache(str(model_id), "config.json", revision=revision)
    return Path(cached).parent.name if isinstance(cached, str) else None


__all__ = ["REPORT_FILES", "SPACE_CONFIG", "ModelLoadError", "ModelSource", "load_model", "load_reports",
           "manifest_file", "parse_model_spec", "read_manifest",
           "resolve_model_sources", "resolved_commit"]
