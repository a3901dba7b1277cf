"""The generation task: an image (and a question as the prompt, or none for a caption) -> text."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import torch
from transformers import AutoModelForImageTextToText

from ..export import generator_graphs
from ..metrics import generation_metrics
from ..model.configuration_mm_hub import GENERATION_TASK
from ..model.generation_mm_hub import MMHubForConditionalGeneration
from ..inputs import InputError, check_text, check_whole_number
from . import Scoring, SplitEvaluation, Task, register_task


PAIR = "__pair__"  # what training names the (prompt, target) pair of an example, "PROMPT:TARGET"


def _prompts(rows: list[dict[str, Any]]) -> list[str] | None:
    """The rows' prompts ("" for a row without one, which asks for a caption); None when no row has a text."""
    return [row.get("text") or "" for row in rows] if any("text" in row for row in rows) else None


def encode(processor: Any, rows: list[dict[str, Any]]) -> dict[str, Any]:
    """Teacher forcing: each row's target after its prompt (none: a caption)."""
    return dict(processor(images=[row["image"] for row in rows], text=_prompts(rows),
                          text_target=[row["target"] for row in rows], return_tensors="pt"))


def write_batch(model: Any, processor: Any, rows: list[dict[str, Any]], max_new_tokens: int = 32,
                num_beams: int = 1) -> tuple[list[str], list[str], list[str | None]]:
    """``(what the model writes for each row, the row's target, its pair)``, decoding without sampling."""
    device = next(model.parameters()).device
    prompts = _prompts(rows)
    inputs = processor(images=[row["image"] for row in rows], text=prompts, return_tensors="pt")
    sequences = model.generate(**{key: value.to(device) for key, value in inputs.items()},
                               max_new_tokens=max_new_tokens, num_beams=num_beams, do_sample=False)
    written = sequences[:, inputs["input_ids"].shape[1] if prompts else 2:]  # after the (empty) prompt
    return (processor.tokenizer.batch_decode(written, skip_special_tokens=True), [row["target"] for row in rows],
            [row.get(PAIR) for row in rows])


def score(parts: list[tuple[list[str], list[str], list[str | None]]]) -> dict[str, float]:
    """BLEU-4, CIDEr, exact match and, on shapes captions, structural scores (`generation_metrics`) over every
    example; with several (prompt, target) pairs, also over each pair's, named ``<target column>_<metric>``."""
    written = [text for texts, _, _ in parts for text in texts]
    targets = [text for _, texts, _ in parts for text in texts]
    pairs = [pair for _, _, names in parts for pair in names]
    metrics = generation_metrics(written, targets)
    for pair in sorted(set(pairs) - {None}) if len(set(pairs)) > 1 else []:
        mine = [i for i, name in enumerate(pairs) if name == pair]
        scores = generation_metrics([written[i] for i in mine], [targets[i] for i in mine])
        metrics.update({f"{pair.split(':', 1)[1]}_{name}": value for name, value in scores.items()})
    return metrics


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
    scoring=Scoring(("cider", "structural_f1", "exact_match")),  # structural F1: shapes captions only
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
    onnx_graphs=generator_graphs,
))


# How the app may ask a generator to write (bounded: a request picks one, never its own settings).
DECODING = {
    "greedy": {"do_sample": False},
    "beam search": {"do_sample": False, "num_beams": 4},
    "sampling": {"do_sample": True, "top_k": 50, "temperature": 0.7},
}


@dataclass
class Description:
    """What `Describing.describe_stream` gives as the model writes.

    Attributes:
        text: the text so far (the whole of it once ``done``).
        done: whether the model has finished.
        confidence: once done, the mean probability the model gave the words it wrote (0 to 1: near 1, it read
            the answer in the image; low, it guessed); None before, or when it wrote nothing.
        note: a word for the person asking, e.g. that the question left room for fewer new tokens than asked.
    """

    text: str
    done: bool = False
    confidence: float | None = None
    note: str | None = None


class Describing:
    """The Describe tab's work: a caption, or the answer to a question, written token by token, with how sure the
    model is. A mixin of `mm_hub.predictor.Predictor`, whose ``model``, ``processor``, ``config``, ``read_image`` and
    ``can_generate`` it reads."""

    def _generation_inputs(self, image: Any, question: Any, max_new_tokens: Any,
                           decoding: Any) -> tuple[dict[str, Any], str | None]:
        """The checked arguments of `generate` for one image and an optional question, and a note when the question
        leaves room for fewer tokens than asked (they are capped, not refused)."""
        if not self.can_generate:
            raise InputError("This model does not write text (it has no decoder); load a generation model to describe "
                             "images.")
        if decoding not in DECODING:
            raise InputError(f"The decoding must be one of {list(DECODING)}, got {decoding!r}.")
        rgb = self.read_image(image)
        prompt = None if question is None or (isinstance(question, str) and not question.strip()) else question
        inputs = self.processor(images=[rgb], text=None if prompt is None else [check_text(prompt, "question")])
        positions = self.config.decoder_max_positions
        longest = positions - 2  # after the empty prompt of a caption: what the app's slider offers
        prompt_length = inputs["input_ids"].shape[1] if "input_ids" in inputs else 2
        room = positions - prompt_length
        if room < 1:
            raise InputError(f"The question is {prompt_length - 2} tokens long, but this model reads and writes at most "
                             f"{positions} in all; shorten it.")
        what = f"number of new tokens (this model writes at most {positions}, question included)"
        tokens = longest if max_new_tokens is None else check_whole_number(max_new_tokens, what, 1, longest)
        note = None
        if tokens > room:
            note = (f"The question takes {prompt_length - 2} of the {positions} tokens this model reads and writes: it "
                    f"wrote at most {room} new tokens, not {tokens}.")
            tokens = room
        return {**inputs, "max_new_tokens": tokens, **DECODING[decoding]}, note

    def describe(self, image: Any, question: Any = None, max_new_tokens: Any = None, decoding: str = "greedy") -> str:
        """What the model writes about ``image``: a caption, or the answer to ``question`` (at most ``max_new_tokens``
        tokens, capped to what the question leaves; default: as many as the model may write), by ``decoding``
        (`DECODING`: greedy by default).

        Raises:
            InputError: bad image or question, a ``max_new_tokens`` the model cannot write, an unknown decoding, or a
                model without a decoder.
        """
        return [*self.describe_stream(image, question, max_new_tokens, decoding)][-1].text

    def describe_stream(self, image: Any, question: Any = None, max_new_tokens: Any = None,
                        decoding: str = "greedy") -> Iterator[Description]:
        """`describe` as it writes: a `Description` after each new token (the model writes in a background thread;
        beam search, which settles its words only at the end, gives one), the last one ``done`` with the model's
        confidence."""
        from threading import Thread

        from transformers import TextIteratorStreamer

        kwargs, note = self._generation_inputs(image, question, max_new_tokens, decoding)
        streams = kwargs.get("num_beams", 1) == 1
        streamer = TextIteratorStreamer(self.processor.tokenizer, skip_prompt=True, skip_special_tokens=True)
        done: list[Any] = []

        def write() -> None:
            try:
                done.append(self.model.generate(**kwargs, streamer=streamer if streams else None,
                                                return_dict_in_generate=True, output_scores=True))
            except Exception as error:  # re-raised below, in the caller's thread
                done.append(error)
            finally:
                if not streams:
                    streamer.end()

        worker = Thread(target=write, daemon=True)
        worker.start()
        text = ""
        for piece in streamer:
            text += piece
            yield Description(text.strip(), note=note)
        worker.join()
        if isinstance(done[0], BaseException):
            raise done[0]
        written = done[0].sequences[0, kwargs["input_ids"].shape[1] if "input_ids" in kwargs else 2:]
        text = self.processor.tokenizer.decode(written, skip_special_tokens=True).strip()
        yield Description(text, done=True, confidence=self._confidence(done[0], written), note=note)

    def _confidence(self, output: Any, written: torch.Tensor) -> float | None:
        """The mean probability of the tokens written (up to the end of the text), from `generate`'s scores."""
        scores = self.model.compute_transition_scores(output.sequences, output.scores,
                                                      getattr(output, "beam_indices", None), normalize_logits=True)[0]
        kept = scores[: len(written)][written != (self.config.pad_token_id or 0)]
        return float(kept.exp().mean()) if len(kept) else None
