"""LoRA adapters on an mm_hub model's pretrained towers (peft): the attention projections of a transformer tower
(BERT, ViT, ...), the last stage's convolutions of a ResNet. What is new trains fully, as peft's ``modules_to_save``:
the projections, fusion and head, the generator's memory and decoder (its tied output layer with it), and a tower
built from a config (LoRA on random weights would leave them random) or a BiLSTM.

`apply_lora` wraps a model for training (``--lora`` in `training.train`). Its result is saved either as an adapter
(`save_adapter`: the adapters and the fully trained parts, a few percent of the model for pretrained towers, loaded
back on top of the towers by id, see `mm_hub.model.adapter_mm_hub`) or merged (`merge_lora`, ``--merge-lora``).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from torch import nn

from .model.adapter_mm_hub import ADAPTER_CONFIG_NAME, ADAPTER_WEIGHTS_NAME

ATTENTION_PROJECTIONS = {"query", "key", "value", "q_proj", "k_proj", "v_proj"}  # BERT's and ViT's names
TOWERS = {"vision": "mm_hub.vision_encoder", "text": "mm_hub.text_encoder"}
# Parameters no module holds: the retrieval head's temperature, frozen under LoRA at its constant initial value.
CONSTANT_PARAMETERS = ("logit_scale",)
ADAPTER_FILES = (ADAPTER_CONFIG_NAME, ADAPTER_WEIGHTS_NAME)  # what an adapter save writes


def _trainable(module: nn.Module) -> bool:
    return any(parameter.requires_grad for parameter in module.parameters())


def lora_targets(model: nn.Module, towers: tuple[str, ...] | None = None) -> list[str]:
    """Names of the modules LoRA adapts in ``towers`` (``"vision"`` / ``"text"``; default: those the config records
    as pretrained, ``pretrained_towers``) that train (a frozen one stays as it is): the attention's query/key/value
    projections of a transformer, or the convolutions of a ResNet's last stage. A BiLSTM has none."""
    towers = tuple(model.config.pretrained_towers or ()) if towers is None else towers
    targets = []
    for side, tower_name in TOWERS.items():
        tower = model.get_submodule(tower_name)
        if side not in towers or not _trainable(tower):
            continue
        names = [name for name, module in tower.named_modules()
                 if isinstance(module, nn.Linear) and name.rsplit(".", 1)[-1] in ATTENTION_PROJECTIONS]
        stages = [name for name, _ in tower.named_modules() if name.count(".") == 3 and ".stages." in name]
        if not names and stages:  # a ResNet (transformers' ResNetModel): the last stage's convolutions
            names = [name for name, module in tower.named_modules()
                     if isinstance(module, nn.Conv2d) and name.startswith(stages[-1] + ".")]
        targets += [f"{tower_name}.{name}" for name in names]
    return targets


def modules_to_save(model: nn.Module, targets: list[str]) -> list[str]:
    """What trains fully beside the adapters: every trainable part of the head and of ``model.mm_hub`` that holds no
    LoRA target (projections, fusion, classifier, the generator's memory, a tower built from a config, a BiLSTM), the
    decoder by its parts (its token table among them, which peft then ties to the output layer)."""
    saved = []
    parents = [("", model), ("mm_hub.", model.mm_hub)]
    if hasattr(model, "decoder"):
        parents.append(("decoder.", model.decoder))
    for prefix, parent in parents:
        for name, module in parent.named_children():
            full = prefix + name
            if full in ("mm_hub", "decoder", "lm_head") or not _trainable(module):  # lm_head: tied to the token table
                continue
            if isinstance(module, nn.ModuleList):  # the decoder's layers: each one (a list has no forward)
                saved += [f"{full}.{index}" for index, layer in enumerate(module) if _trainable(layer)]
            elif not any(target == full or target.startswith(full + ".") for target in targets):
                saved.append(full)
    return saved


def apply_lora(model: nn.Module, r: int = 8, alpha: int = 16, dropout: float = 0.05,
               towers: tuple[str, ...] | None = None) -> Any:
    """``model`` as a peft ``PeftModel`` with LoRA adapters of rank ``r`` on `lora_targets` of ``towers`` (default:
    the pretrained ones; scaled by ``alpha / r``, ``dropout`` on their input) and `modules_to_save` training fully;
    everything else frozen."""
    from peft import LoraConfig, get_peft_model

    if r < 1 or alpha <= 0 or not 0 <= dropout < 1:
        raise ValueError(f"LoRA needs a rank >= 1, alpha > 0 and dropout in [0, 1); got r={r}, alpha={alpha}, "
                         f"dropout={dropout}.")
    targets = lora_targets(model, towers)
    if not targets:
        raise ValueError("LoRA adapts pretrained towers that train, and this model has none (towers built from "
                         "configs train fully, BiLSTMs have no attention, frozen towers stay frozen); train without "
                         "--lora.")
    saved = modules_to_save(model, targets)
    config = LoraConfig(r=r, lora_alpha=alpha, lora_dropout=dropout, target_modules=targets, modules_to_save=saved,
                        ensure_weight_tying="decoder.embed_tokens" in saved and model.config.tie_word_embeddings)
    return get_peft_model(model, config)


def parameter_counts(model: nn.Module) -> dict[str, int]:
    """``{"trainable_parameters", "total_parameters"}`` of a model; a LoRA model's total is the plain model's plus
    its adapters (peft's trained copy of each fully trained part stands in for the original, not beside it)."""
    named = list(model.named_parameters())  # shared (tied) parameters once
    return {"trainable_parameters": sum(p.numel() for _, p in named if p.requires_grad),
            "total_parameters": sum(p.numel() for name, p in named if ".modules_to_save." not in name)}


def merge_lora(model: Any) -> nn.Module:
    """A LoRA-wrapped model as the plain mm_hub model with its adapters folded into the weights (and the fully
    trained parts in place, the output layer tied to the token table again); any other model as it is."""
    if not hasattr(model, "merge_and_unload"):
        return model
    merged = model.merge_and_unload()
    merged.tie_weights()
    return merged


def unsaved_parts(model: Any) -> list[str]:
    """The parameters of a LoRA-wrapped model that an adapter save would lose: neither in the adapter file (adapters,
    `modules_to_save`) nor rebuilt by name from a pretrained tower the config records (``pretrained_towers``: a
    frozen tower built from a config, or whose weights were replaced, has no record). Empty: `save_adapter` can.
    """
    inner = model.get_base_model()
    towers = inner.config.pretrained_towers or {}
    rebuilt = tuple(f"{TOWERS[side]}.model." for side in towers if side in TOWERS)
    saved = tuple(f"{name}." for name in model.peft_config["default"].modules_to_save or ())
    lost = []
    for name, _ in inner.named_parameters():
        if "lora_" in name or ".modules_to_save." in name:  # saved in the adapter file
            continue
        name = plain_name(name)
        if not name.startswith(rebuilt + saved) and name not in CONSTANT_PARAMETERS:
            lost.append(name)
    return lost


def plain_name(name: str) -> str:
    """A LoRA model's parameter name as the plain model names it: without peft's ``base_model.model.`` prefix and
    its ``base_layer`` / ``original_module`` / ``modules_to_save.default`` wrappers (an adapter's own ``lora_``
    parameters keep their names)."""
    name = name.removeprefix("base_model.model.")
    for wrapper in (".base_layer.", ".original_module.", ".modules_to_save.default."):
        name = name.replace(wrapper, ".")
    return name


def save_adapter(model: Any, processor: Any, folder: str | os.PathLike) -> Path:
    """Save a LoRA-wrapped model as an adapter into ``folder`` (other files there stay; full weights a plain save
    left are removed): the model's config and code (no weights), peft's ``adapter_config.json`` +
    ``adapter_model.safetensors`` and the processor. ``MMHubFor*.from_pretrained(folder)`` (or ``AutoModel``,
    `mm_hub.load_model`, a push of it) loads it as the plain model, rebuilding the towers by name.

    Raises:
        ValueError: parts of the model could not be rebuilt (`unsaved_parts`: a frozen tower built from a config or
            copied from elsewhere), naming them; save it merged (`merge_lora`, ``--merge-lora``) instead.
    """
    lost = unsaved_parts(model)
    if lost:
        raise ValueError(f"An adapter save would lose {len(lost)} weights ({', '.join(lost[:3])}{' ...' * (len(lost) > 3)}"
                         "): they neither train (saved with the adapters) nor load from a pretrained tower by name (a "
                         "frozen tower built from a config, or whose weights were copied in). Save the merged model "
                         "(--merge-lora) instead.")
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    for stale in [*folder.glob("model*.safetensors"), *folder.glob("model.safetensors.index.json")]:
        stale.unlink()  # a plain model's weights: a push would carry them beside the adapters
    model.get_base_model().save_pretrained(folder, state_dict={})  # config, code, generation config: no weights
    model.peft_config["default"].base_model_name_or_path = None  # the base is this folder's config (a push names the repo)
    model.save_pretrained(folder)
    _drop_tied_copies(folder / ADAPTER_WEIGHTS_NAME, model.get_base_model())
    (folder / "README.md").unlink(missing_ok=True)  # peft's stub card: a push writes the model card
    processor.save_pretrained(folder)
    return folder


def _drop_tied_copies(weights: Path, model: nn.Module) -> None:
    """Rewrite an adapter file without the tied output layer peft saves beside the token table it shares (the
    generator's ``lm_head``: as large as the table); loading ties it again."""
    from safetensors.torch import load_file, save_file

    tied = tuple(f"base_model.model.{key}" for key in (getattr(model, "_tied_weights_keys", None) or {}))
    tensors = load_file(str(weights))
    if any(key in tied for key in tensors):
        save_file({key: tensor for key, tensor in tensors.items() if key not in tied}, str(weights),
                  metadata={"format": "pt"})


def remove_adapter_files(folder: str | os.PathLike) -> None:
    """Delete adapter files a LoRA run left in ``folder`` before a plain model is saved there: with them, loading
    the folder would take the adapters, not the new weights."""
    for name in ADAPTER_FILES:
        (Path(folder) / name).unlink(missing_ok=True)


__all__ = ["apply_lora", "lora_targets", "merge_lora", "modules_to_save", "parameter_counts", "plain_name",
           "remove_adapter_files", "save_adapter", "unsaved_parts"]
