"""LoRA adapters on an mm_hub model's big parts (peft): the towers' attention projections (BERT, ViT, any transformer
tower), the last stage's convolutions of a ResNet, the decoder's attention; what mm_hub adds on top (projections,
fusion, head, the generator's memory) trains fully, as peft's ``modules_to_save``.

`apply_lora` wraps a model for training (``--lora`` in `training.train`), `merge_lora` folds the adapters back into
plain weights: what training saves, so the result loads, serves and exports like any mm_hub model.
"""

from __future__ import annotations

from typing import Any

from torch import nn

ATTENTION_PROJECTIONS = {"query", "key", "value", "q_proj", "k_proj", "v_proj"}  # BERT's and ViT's names
DECODER_PROJECTIONS = {"q_proj", "k_proj", "v_proj", "out_proj"}
TOWERS = ("mm_hub.vision_encoder", "mm_hub.text_encoder")


def _trainable(module: nn.Module) -> bool:
    return any(parameter.requires_grad for parameter in module.parameters())


def lora_targets(model: nn.Module) -> list[str]:
    """Names of the modules LoRA adapts: in each tower that trains (a frozen one stays as it is), the attention's
    query/key/value projections of a transformer, or the convolutions of a ResNet's last stage; the decoder's
    attention projections. A BiLSTM tower has none: it trains fully (`modules_to_save`)."""
    targets = []
    for tower_name in TOWERS:
        tower = model.get_submodule(tower_name)
        if not _trainable(tower):
            continue
        names = [name for name, module in tower.named_modules()
                 if isinstance(module, nn.Linear) and name.rsplit(".", 1)[-1] in ATTENTION_PROJECTIONS]
        stages = [name for name, _ in tower.named_modules() if name.count(".") == 3 and ".stages." in name]
        if not names and stages:  # a ResNet (transformers' ResNetModel): the last stage's convolutions
            names = [name for name, module in tower.named_modules()
                     if isinstance(module, nn.Conv2d) and name.startswith(stages[-1] + ".")]
        targets += [f"{tower_name}.{name}" for name in names]
    if hasattr(model, "decoder"):
        targets += [name for name, module in model.decoder.named_modules(prefix="decoder")
                    if isinstance(module, nn.Linear) and name.rsplit(".", 1)[-1] in DECODER_PROJECTIONS]
    return targets


def modules_to_save(model: nn.Module, targets: list[str]) -> list[str]:
    """What trains fully beside the adapters: every trainable top-level part of the head and of ``model.mm_hub``
    that holds no LoRA target (projections, fusion, classifier, memory embeddings, a BiLSTM tower)."""
    adapted = {id(parameter) for target in targets for parameter in model.get_submodule(target).parameters()}
    adapted |= {id(parameter) for name, module in model.named_children() if name == "decoder"
                for parameter in module.parameters()}
    saved = []
    for prefix, parent in (("", model), ("mm_hub.", model.mm_hub)):
        for name, module in parent.named_children():
            full = prefix + name
            own = [parameter for parameter in module.parameters() if id(parameter) not in adapted]
            if full == "mm_hub" or not any(parameter.requires_grad for parameter in own) or len(own) < len(
                    list(module.parameters())):  # frozen, or sharing weights with the adapted parts (a tied head)
                continue
            if not any(target == full or target.startswith(full + ".") for target in targets):
                saved.append(full)
    return saved


def apply_lora(model: nn.Module, r: int = 8, alpha: int = 16, dropout: float = 0.05) -> Any:
    """``model`` as a peft ``PeftModel`` with LoRA adapters of rank ``r`` on `lora_targets` (scaled by
    ``alpha / r``, ``dropout`` on their input) and `modules_to_save` training fully; everything else frozen."""
    from peft import LoraConfig, get_peft_model

    if r < 1 or alpha <= 0 or not 0 <= dropout < 1:
        raise ValueError(f"LoRA needs a rank >= 1, alpha > 0 and dropout in [0, 1); got r={r}, alpha={alpha}, "
                         f"dropout={dropout}.")
    targets = lora_targets(model)
    if not targets:
        raise ValueError("LoRA has nothing to adapt here: both towers are frozen (or BiLSTMs) and there is no decoder; "
                         "train without --lora.")
    config = LoraConfig(r=r, lora_alpha=alpha, lora_dropout=dropout, target_modules=targets,
                        modules_to_save=modules_to_save(model, targets))
    return get_peft_model(model, config)


def parameter_counts(model: nn.Module) -> dict[str, int]:
    """``{"trainable_parameters", "total_parameters"}`` of a model (a peft model counts its adapters too)."""
    if hasattr(model, "get_nb_trainable_parameters"):  # peft: the copies of modules_to_save counted once
        trainable, total = model.get_nb_trainable_parameters()
        return {"trainable_parameters": int(trainable), "total_parameters": int(total)}
    return {"trainable_parameters": sum(p.numel() for p in model.parameters() if p.requires_grad),
            "total_parameters": sum(p.numel() for p in model.parameters())}


def merge_lora(model: Any) -> nn.Module:
    """A LoRA-wrapped model as the plain mm_hub model with its adapters folded into the weights (and the fully
    trained parts in place); any other model as it is."""
    return model.merge_and_unload() if hasattr(model, "merge_and_unload") else model


__all__ = ["apply_lora", "lora_targets", "merge_lora", "modules_to_save", "parameter_counts"]
