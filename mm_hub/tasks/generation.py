"""The generation task: an image (and a question as the prompt, or none for a caption) -> text."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from transformers import AutoModelForImageTextToText

from ..metrics import generation_metrics
from ..model.configuration_mm_hub import GENERATION_TASK
from ..model.generation_mm_hub import MMHubForConditionalGeneration
from ..inputs import InputError, check_text, check_whole_number
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


class Describing:
    """The Describe tab's work: a caption, or the answer to a question, written token by token. A mixin of
    `mm_hub.predictor.Predictor`, whose ``model``, ``processor``, ``config``, ``read_image`` and ``can_generate`` it
    reads."""

    def _generation_inputs(self, image: Any, question: Any, max_new_tokens: Any) -> dict[str, Any]:
        """The checked arguments of `generate` for one image and an optional question."""
        if not self.can_generate:
            raise InputError("This model does not write text (it has no decoder); load a generation model to describe "
                             "images.")
        rgb = self.read_image(image)
        prompt = None if question is None or (isinstance(question, str) and not question.strip()) else question
        inputs = self.processor(images=[rgb], text=None if prompt is None else [check_text(prompt, "question")])
        prompt_length = inputs["input_ids"].shape[1] if "input_ids" in inputs else 2
        room = self.config.decoder_max_positions - prompt_length
        what = f"number of new tokens (this model writes at most {self.config.decoder_max_positions}, question included)"
        tokens = room if max_new_tokens is None else check_whole_number(max_new_tokens, what, 1, room)
        return {**inputs, "max_new_tokens": tokens, "do_sample": False}

    def describe(self, image: Any, question: Any = None, max_new_tokens: Any = None) -> str:
        """What the model writes about ``image``: a caption, or the answer to ``question`` (greedy decoding, at most
        ``max_new_tokens`` tokens; default: as many as the model may write).

        Raises:
            InputError: bad image or question, a ``max_new_tokens`` the model cannot write, or a model without a
                decoder.
        """
        text = ""
        for text in self.describe_stream(image, question, max_new_tokens):
            pass
        return text

    def describe_stream(self, image: Any, question: Any = None, max_new_tokens: Any = None) -> Iterator[str]:
        """`describe`, as the text so far after each new token (the model writes in a background thread)."""
        from threading import Thread

        from transformers import TextIteratorStreamer

        kwargs = self._generation_inputs(image, question, max_new_tokens)
        streamer = TextIteratorStreamer(self.processor.tokenizer, skip_prompt=True, skip_special_tokens=True)
        failure: list[BaseException] = []

        def write() -> None:
            try:
                self.model.generate(**kwargs, streamer=streamer)
            except Exception as error:  # re-raised below, in the caller's thread
                failure.append(error)
                streamer.end()

        worker = Thread(target=write, daemon=True)
        worker.start()
        text = ""
        for piece in streamer:
            text += piece
            yield text.strip()
        worker.join()
        if failure:
            raise failure[0]
