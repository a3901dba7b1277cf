"""Loading an mm_hub model saved as LoRA adapters (``--lora`` training; `mm_hub.lora.save_adapter` writes it): a
folder or Hub repo holding peft's ``adapter_config.json`` + ``adapter_model.safetensors`` (the adapters and every
part that trained fully: projections, fusion, head) beside the model's config.json and processor, a few percent of
the full model's bytes.

The base is rebuilt from the pretrained towers the config names (``pretrained_towers``), each checked against the
SHA-256 of the weights the adapters were trained on, then the adapters are merged in: the result is the plain model,
with the outputs a merged save (``--merge-lora``) gives.

This file travels with a pushed model (third-party and same-folder imports only), so ``trust_remote_code`` loading
works where mm_hub is not installed; peft is needed for adapters, as anywhere.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from transformers.utils import cached_file, find_adapter_config_file

ADAPTER_CONFIG_NAME, ADAPTER_WEIGHTS_NAME = "adapter_config.json", "adapter_model.safetensors"  # peft's names
HUB_KWARGS = ("revision", "token", "cache_dir", "local_files_only", "force_download", "subfolder")
TOWER_MODULES = {"vision": "vision_encoder", "text": "text_encoder"}  # side -> encoder of `MMHubModel`


def _hub_kwargs(kwargs: dict[str, Any]) -> dict[str, Any]:
    return {key: kwargs[key] for key in HUB_KWARGS if kwargs.get(key) is not None}


def adapter_config_file(name_or_path: str | os.PathLike, kwargs: dict[str, Any]) -> str | None:
    """The ``adapter_config.json`` of a folder or Hub repo (with the Hub arguments of ``kwargs``); None for a plain
    model, or when the repo cannot be reached (its own loading then says why)."""
    try:
        return find_adapter_config_file(str(name_or_path), **_hub_kwargs(kwargs))
    except OSError:
        return None


def _tower_record(adapter: str, side: str, record: Any, from_hub: bool) -> tuple[str, str | None, str]:
    """(name_or_path, revision, sha256) of a ``pretrained_towers`` entry; ValueError for a malformed one, or for a
    local folder named by an adapter from the Hub (a repo must not make this machine load its files)."""
    fields = record if isinstance(record, dict) else {}
    name, revision, sha256 = fields.get("name_or_path"), fields.get("revision"), fields.get("sha256")
    if not (isinstance(name, str) and name and isinstance(sha256, str) and isinstance(revision, (str, type(None)))):
        raise ValueError(f"{adapter!r}: config.json's pretrained_towers[{side!r}] must be {{'name_or_path': str, "
                         f"'revision': str | None, 'sha256': str}}; got {record!r}.")
    if from_hub and (os.path.isabs(name) or name.startswith(".") or name.count("/") > 1 or os.path.exists(name)):
        raise ValueError(f"The adapter {adapter!r} from the Hub names the local folder {name!r} as its {side} tower; "
                         "adapters from the Hub load their towers from the Hub only.")
    return name, revision, sha256


def _check_tower_config(name: str, side: str, expected: Any, hub_kwargs: dict[str, Any]) -> None:
    """ValueError when the config at ``name`` describes another tower than ``expected`` (the adapter's config says
    what it was trained on): its type or a size differs, so its weights, of any size, are not downloaded."""
    from transformers import AutoConfig

    found = AutoConfig.from_pretrained(name, **hub_kwargs)
    fields = ("model_type", "hidden_size", "hidden_sizes", "num_hidden_layers", "depths", "vocab_size")
    different = [field for field in fields if getattr(found, field, None) != getattr(expected, field, None)]
    if different:
        raise ValueError(f"its config describes another {side} tower ({', '.join(different)} differ)")


def rebuild_base(cls: type, config: Any, adapter: str, hub_kwargs: dict[str, Any], from_hub: bool) -> Any:
    """A model of ``cls`` from ``config`` whose towers hold the pretrained weights ``config.pretrained_towers`` names.

    Raises:
        OSError: a tower cannot be loaded (missing, unreachable), naming the adapter and the tower.
        ValueError: a tower loads but holds other weights than the adapter was trained on (a different base).
    """
    from .towers_mm_hub import _load_tower, _pretrained_tower, tower_sha256

    towers = config.pretrained_towers or {}
    if not isinstance(towers, dict) or set(towers) - set(TOWER_MODULES):
        raise ValueError(f"{adapter!r}: config.json's pretrained_towers must map 'vision' / 'text' to their towers; "
                         f"got {towers!r}.")
    model = cls(config)
    for side, record in towers.items():
        name, revision, expected = _tower_record(adapter, side, record, from_hub)
        tower_kwargs = {**{k: v for k, v in hub_kwargs.items() if k in ("token", "cache_dir", "local_files_only")},
                        "revision": revision}
        target = getattr(model.base_model, TOWER_MODULES[side]).model
        try:
            _check_tower_config(name, side, target.config, tower_kwargs)  # before any weights are downloaded
            pretrained = _pretrained_tower(name, side, tower_kwargs)
        except (OSError, ValueError) as error:
            reason = (str(error).strip().splitlines() or [type(error).__name__])[0][:300]
            raise OSError(f"{adapter!r} holds LoRA adapters on the {side} tower {name!r} (revision "
                          f"{revision or 'main'!r}), which could not be loaded: {reason}. The adapters need the base "
                          "they were trained on; load a merged model (--merge-lora) where it is out of reach.") from error
        _load_tower(target, pretrained.state_dict(), side)
        found = tower_sha256(target)
        if found != expected:
            raise ValueError(f"{adapter!r} holds LoRA adapters trained on the {side} tower {name!r} with weights of "
                             f"SHA-256 {expected[:16]}..., but {name!r} (revision {revision or 'main'!r}) now holds "
                             f"{found[:16]}...: a different base. Load the revision the adapters were trained on, or "
                             "a merged model (--merge-lora).")
    return model


def _check_adapter_config(adapter: str, peft_config: Any, config: Any) -> None:
    """ValueError unless ``adapter_config.json`` holds LoRA adapters, by module name, only on towers the config says
    how to load (an adapter on a tower with no ``pretrained_towers`` entry would sit on random weights)."""
    targets = peft_config.target_modules if getattr(peft_config, "peft_type", None) == "LORA" else None
    if not isinstance(targets, (list, set, tuple)):
        raise ValueError(f"{adapter!r}: adapter_config.json must hold LoRA adapters on named modules (what "
                         "`mm_hub.lora.save_adapter` writes); got peft_type "
                         f"{getattr(peft_config, 'peft_type', None)!r}, target_modules {targets!r}.")
    towers = config.pretrained_towers or {}
    for side, module in TOWER_MODULES.items():
        if side not in towers and any(str(target).startswith(f"mm_hub.{module}.") for target in targets):
            raise ValueError(f"{adapter!r} holds LoRA adapters on its {side} tower, but its config.json names no "
                             f"pretrained {side} tower (pretrained_towers) to put them on.")


def load_adapter_model(cls: type, name_or_path: str | os.PathLike, **kwargs: Any) -> Any:
    """The plain model of an adapter folder or repo: its base rebuilt (`rebuild_base`), its adapters loaded from
    safetensors (never a pickle) and merged, in eval mode. ``kwargs``: `from_pretrained`'s; the Hub ones apply.

    Raises:
        ImportError: peft is not installed.
        OSError / ValueError: no ``adapter_model.safetensors``, a base tower missing or different, or adapter
            weights that do not fit the base (each message names the adapter and the base).
    """
    try:  # peft is imported here only (and inside a try): loading plain models from remote code never needs it
        from peft import PeftConfig, get_peft_model, set_peft_model_state_dict
        from safetensors.torch import load_file
    except ImportError as error:
        raise ImportError(f"{str(name_or_path)!r} holds LoRA adapters: loading them needs peft (pip install peft).") \
            from error
    adapter, hub = str(name_or_path), _hub_kwargs(kwargs)
    config = kwargs.get("config")
    if not isinstance(config, cls.config_class):
        config = cls.config_class.from_pretrained(adapter, **hub)
    weights = cached_file(adapter, ADAPTER_WEIGHTS_NAME, _raise_exceptions_for_missing_entries=False, **hub)
    if weights is None:
        raise ValueError(f"{adapter!r} holds adapter_config.json but no {ADAPTER_WEIGHTS_NAME}: adapters load from "
                         "safetensors only.")
    peft_config = PeftConfig.from_pretrained(str(Path(adapter_config_file(adapter, kwargs)).parent))
    peft_config.base_model_name_or_path = None  # the base is rebuilt here, not loaded by this name
    _check_adapter_config(adapter, peft_config, config)
    base = rebuild_base(cls, config, adapter, hub, from_hub=not Path(adapter).is_dir())
    towers = ", ".join(f"{side} {record.get('name_or_path')!r}" for side, record in
                       (config.pretrained_towers or {}).items()) or "no pretrained tower"
    try:
        model = get_peft_model(base, peft_config)
        tensors = load_file(weights)
        for tied, source in (getattr(base, "_tied_weights_keys", None) or {}).items():  # saved once: the table
            tensors.setdefault(f"base_model.model.{tied}", tensors.get(f"base_model.model.{source}"))
        result = set_peft_model_state_dict(model, {key: value for key, value in tensors.items() if value is not None})
    except (ValueError, RuntimeError, KeyError) as error:  # targets absent from the base, weights of other shapes
        raise ValueError(f"The adapters of {adapter!r} do not fit their base ({towers}): "
                         f"{str(error).strip().splitlines()[0][:300]}") from error
    missing = [key for key in result.missing_keys if "lora_" in key or ".modules_to_save." in key]
    if missing or result.unexpected_keys:
        raise ValueError(f"The adapter weights of {adapter!r} do not fit their base ({towers}): missing "
                         f"{missing[:5]}, unexpected {list(result.unexpected_keys)[:5]}.")
    model = model.merge_and_unload()
    model.tie_weights()
    model._apply_freezing()
    if kwargs.get("output_loading_info"):  # as `from_pretrained` answers it: every weight found
        return model.eval(), {"missing_keys": [], "unexpected_keys": [], "mismatched_keys": [], "error_msgs": []}
    return model.eval()


__all__ = ["ADAPTER_CONFIG_NAME", "ADAPTER_WEIGHTS_NAME", "adapter_config_file", "load_adapter_model", "rebuild_base"]
