"""The generation task: an image (and a question as the prompt, or none for a caption) -> text."""

from __future__ import annotations

from typing import Any

from transformers import AutoModelForImageTextToText

from ..metrics import generation_metrics
from ..model.configuration_mm_hub import GENERATION_TASK
from ..model.generation_mm_hub import MMHubForConditionalGeneration
from . import Scoring, SplitEvaluation, Task, register_task


def encode(processor: Any, rows: list[dict[str, Any]]) -> dict[str, Any]:
    """Teacher forcing: each row's target after its prompt (none when the rows have no text)."""
    prompts = [row["text"] for row in rows] if "text" in rows[0] else None
    return dict(processor(images=[row["image"] for row in rows], text=prompts,
                          text_target=[row["target"] for row in rows], return_tensors="pt"))


def write_batch(model: Any, processor: Any, rows: list[dict[str, Any]], max_new_tokens: int = 32,
                num_beams: int = 1) -> tuple[list[str], list[str]]:
    """``(what the model writes for each row, the row's target)``, decoding without sampling."""
    device = next(model.parameters()).device
    prompts = [row["text"] for row in rows] if "text" in rows[0] else None
    inputs = processor(images=[row["image"] for row in rows], text=prompts, return_tensors="pt")
    sequences = model.generate(**{key: value.to(device) for key, value in inputs.items()},
                               max_new_tokens=max_new_tokens, num_beams=num_beams, do_sample=False)
    written = sequences[:, inputs["input_ids"].shape[1] if prompts else 2:]  # after the (empty) prompt
    return processor.tokenizer.batch_decode(written, skip_special_tokens=True), [row["target"] for row in rows]


def score(parts: list[tuple[list[str], list[str]]]) -> dict[str, float]:
    """BLEU-4, CIDEr, exact match and, on shapes captions, structural scores (`generation_metrics`)."""
    return generation_metrics([text for written, _ in parts for text in written],
                              [text for _, targets in parts for text in targets])


def details(config: dict[str, Any]) -> list[str]:
    written = config.get("decoder_vocab")
    vocab = f"{len(written)} tokens (those of its training targets)" if written else "the tokenizer's vocabulary"
    return [f"| Decoder | {config.get('decoder_num_layers')} layers, width {config.get('decoder_hidden_size')}, "
            f"writes {vocab}, at most {config.get('decoder_max_positions')} tokens |"]


USAGE = """
Describe an image, or answer a question about it, with transformers' own pipeline (add `trust_remote_code=True`
without mm_hub; `text=""` asks for a caption):

```python
from transformers import pipeline

describe = pipeline("{pipeline_task}", model="{repo_id}")
describe(images="photo.jpg", text="", max_new_tokens=32)
describe(images="photo.jpg", text="what colour is the circle?", return_full_text=False)
```
"""

GENERATION = register_task(Task(
    name="generation",
    pipeline_task=GENERATION_TASK,
    hub_tag=GENERATION_TASK,  # transformers' own image-text-to-text task
    heads=(MMHubForConditionalGeneration,),
    auto_classes=(AutoModelForImageTextToText,),
    scoring=Scoring(("cider", "structural_f1")),  # structural F1: shapes captions only
    encode=encode,
    describe=lambda config: "An mm_hub image + text model with a text decoder that writes captions and answers:",
    details=details,
    usage=USAGE,
    tabs=("describe",),
    preset="captioning",
    shapes_variant="captioning",
    columns={"target": "target_column"},
    text_required=False,
    evaluation=SplitEvaluation(write_batch, score),
))
