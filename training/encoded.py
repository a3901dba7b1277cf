"""``--cache-frozen-features``: train the fusion and head on stored outputs of frozen encoders.

Frozen encoders stay in eval mode (`MMHubPreTrainedModel.train`), so their output for a training row is the same in
every epoch. Without augmentation or word dropout the rows do not change either, and decoding, processing and
encoding them again each epoch is repeated work: in the demo's stage 2 it was about 30 of the 45 ms of a step.
`encode_split` runs the encoders once over the split, in batches on the training device; `EncodedSplit` then serves
the stored tokens, which the model takes as ``image_tokens`` / ``text_tokens`` in place of pixels and token ids.
"""

from __future__ import annotations

import logging
import time
from typing import TYPE_CHECKING, Any

import torch
from torch.utils.data import DataLoader
from tqdm.auto import tqdm
from transformers import Trainer

from .data import SKIPPED, Collator
from .hooks import TRAINER_HOOKS

if TYPE_CHECKING:
    from .train import Recipe

logger = logging.getLogger(__name__)


class EncodedSplit(torch.utils.data.Dataset):
    """The usable rows of a split as encoder outputs: image tokens (N, cells, Cv), text tokens (N, T, Ct) with their
    attention mask (N, T), and labels, in the split's row order."""

    def __init__(self, image_tokens: torch.Tensor, text_tokens: torch.Tensor, attention_mask: torch.Tensor,
                 labels: torch.Tensor):
        self.columns = {"image_tokens": image_tokens, "text_tokens": text_tokens, "attention_mask": attention_mask,
                        "labels": labels}

    def __len__(self) -> int:
        return len(self.columns["labels"])

    def __getitem__(self, index: int) -> dict[str, torch.Tensor]:
        return {key: values[index] for key, values in self.columns.items()}

    def nbytes(self) -> int:
        """Memory the stored tensors take."""
        return sum(values.numel() * values.element_size() for values in self.columns.values())


class EncodedCollator:
    """Stacks `EncodedSplit` rows into a batch whose text columns end at the batch's last real token, as the
    processor pads a batch to its longest text. ``record`` is the source collator's (no row is dropped here: unusable
    rows were dropped, and counted, while encoding)."""

    def __init__(self, source: Collator):
        self.source = source

    def __call__(self, rows: list[dict[str, torch.Tensor]]) -> dict[str, torch.Tensor]:
        batch = {key: torch.stack([row[key] for row in rows]) for key in rows[0]}
        used = batch["attention_mask"].any(dim=0).nonzero()
        length = int(used.max()) + 1 if len(used) else 1
        batch["text_tokens"] = batch["text_tokens"][:, :length]
        batch["attention_mask"] = batch["attention_mask"][:, :length]
        return batch

    def record(self, skipped: list[tuple[str, Any]]) -> None:
        """Count skipped rows in the source collator (see `Collator.record`)."""
        self.source.record(skipped)


@torch.no_grad()
def encode_split(model: torch.nn.Module, split: Any, collator: Collator, batch_size: int,
                 device: torch.device | str = "cpu", progress: bool = True, num_workers: int = 0) -> EncodedSplit:
    """Run ``model``'s (frozen, eval-mode) encoders over every row of ``split``, collated by ``collator`` (unusable
    rows are skipped and recorded there, or raise with ``strict``) in ``num_workers`` DataLoader workers, in batches
    of ``batch_size`` on ``device``; the outputs are kept on the CPU. Texts are padded to the longest of the split."""
    base = getattr(model, "module", model).base_model
    base.vision_encoder.eval()  # where frozen encoders always run (`MMHubPreTrainedModel.train`); a model built from
    base.text_encoder.eval()  # configs is still in train mode until the Trainer's first `model.train()`
    images, texts, masks, labels = [], [], [], []
    loader = DataLoader(split, batch_size=batch_size, collate_fn=collator, num_workers=num_workers)  # in order
    for batch in tqdm(loader, desc="Encoding the training rows (frozen encoders)", disable=not progress):
        collator.record(batch.pop(SKIPPED, []))
        images.append(base.encode_image(batch["pixel_values"].to(device))[0].cpu())
        mask = batch["attention_mask"].to(device)
        texts.append(base.encode_text(batch["input_ids"].to(device), mask)[0].cpu())
        masks.append(mask.cpu())
        labels.append(batch["labels"])
    if not masks:
        raise ValueError("The training split has no rows to encode.")
    length = max(mask.shape[1] for mask in masks)
    text_tokens = torch.zeros(sum(len(m) for m in masks), length, texts[0].shape[-1], dtype=texts[0].dtype)
    attention_mask = torch.zeros(len(text_tokens), length, dtype=masks[0].dtype)
    start = 0
    for tokens, mask in zip(texts, masks):
        text_tokens[start:start + len(mask), : mask.shape[1]] = tokens
        attention_mask[start:start + len(mask), : mask.shape[1]] = mask
        start += len(mask)
    return EncodedSplit(torch.cat(images), text_tokens, attention_mask, torch.cat(labels))


def train_on_encoded_split(trainer: Trainer, split: Any, collator: Collator, progress: bool = True) -> EncodedSplit:
    """Encode ``split`` with the trainer's model on its device and make the trainer train on the stored outputs
    (evaluation still runs the whole model on images and texts); returns the encoded split."""
    start = time.perf_counter()
    with torch.random.fork_rng(devices=[]):  # leave the seeded CPU stream (dropout masks) as training expects it
        encoded = encode_split(trainer.model, split, collator, trainer.args.per_device_eval_batch_size,
                               trainer.args.device, progress, trainer.args.dataloader_num_workers)
    logger.info("Encoded %d training rows with the frozen encoders in %.1f s (%.1f MB kept in memory).",
                len(encoded), time.perf_counter() - start, encoded.nbytes() / 2**20)
    trainer.train_dataset = encoded
    trainer.data_collator = EncodedCollator(collator)
    return encoded


def train_on_cached_features(recipe: Recipe, trainer: Trainer) -> None:
    """The trainer hook: with ``--cache-frozen-features``, train on the encoders' stored outputs."""
    if recipe.config.train.cache_frozen_features:
        train_on_encoded_split(trainer, recipe.train, recipe.train_collator, not recipe.config.train.disable_tqdm)


TRAINER_HOOKS.append(train_on_cached_features)
