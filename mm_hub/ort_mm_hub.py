"""Run an exported mm_hub model with ONNX Runtime: numpy in, numpy out, no torch and no mm_hub needed.

`python -m training.export MODEL --out DIR` writes the graphs of a model with this file beside them, so the folder
runs anywhere onnxruntime, transformers (its tokenizer and PIL image processor) and Pillow are installed::

    import sys; sys.path.insert(0, "DIR")
    from ort_mm_hub import load
    model, processor = load("DIR")                       # the int8 graphs where the folder has them
    inputs = processor(images=[image], text=["a red circle on the left"])
    model(**inputs).logits                               # a classifier: (1, num_labels)

Each task has a runtime class in the spirit of optimum's ``ORTModel*``: it takes the processor's outputs and returns
the torch model's output fields (`ORTModelForImageTextClassification`: ``logits``; `ORTModelForImageTextRetrieval`:
``image_embeds``, ``text_embeds``, ``logits_per_image``; `ORTModelForConditionalGeneration`: ``generate`` with
greedy or beam search over an encoder graph and a decoder graph that carries its key/value cache).
``onnx_config.json`` says which graphs the folder holds, their inputs and outputs, and the versions that wrote them.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

ONNX_CONFIG = "onnx_config.json"


def session_options(threads: int | None = None) -> Any:
    """ONNX Runtime session options: all graph optimisations, ``threads`` intra-op threads (default: the cores)."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    options.intra_op_num_threads = threads or os.cpu_count() or 1
    options.inter_op_num_threads = 1
    return options


@dataclass
class ORTOutput:
    """The output fields of a runtime model (those of the torch head that was exported; None where not computed)."""

    logits: np.ndarray | None = None
    image_embeds: np.ndarray | None = None
    text_embeds: np.ndarray | None = None
    logits_per_image: np.ndarray | None = None
    logits_per_text: np.ndarray | None = None


class ORTModel:
    """The graphs of one exported model, as ONNX Runtime sessions.

    Args:
        folder: the export folder (``onnx_config.json`` and the ``.onnx`` files).
        quantized: run the int8 graphs (``*.int8.onnx``, where the export made them); None: where the folder has
            them.
        threads: intra-op threads per session (default: the machine's cores).
    """

    task: str = ""

    def __init__(self, folder: str | os.PathLike, quantized: bool | None = None, threads: int | None = None):
        import onnxruntime as ort

        self.folder = Path(folder)
        self.onnx_config = read_onnx_config(self.folder)
        if self.onnx_config["task"] != self.task:
            raise ValueError(f"{self.folder} holds a {self.onnx_config['task']} model; "
                             f"{type(self).__name__} runs {self.task} models.")
        self.config = json.loads((self.folder / "config.json").read_text())
        graphs = self.onnx_config["graphs"]
        has_int8 = any(graph.get("int8_file") for graph in graphs.values())
        if quantized and not has_int8:
            raise ValueError(f"{self.folder} has no int8 graphs; export with --quantize int8.")
        self.quantized = has_int8 if quantized is None else quantized
        options = session_options(threads)
        self.sessions = {  # int8 graphs where asked and exported (an export may keep a sensitive graph fp32)
            name: ort.InferenceSession(str(self.folder / ((self.quantized and graph.get("int8_file")) or graph["file"])),
                                       sess_options=options, providers=["CPUExecutionProvider"])
            for name, graph in graphs.items()
        }

    @classmethod
    def from_pretrained(cls, folder: str | os.PathLike, **kwargs: Any) -> ORTModel:
        """The runtime model of an export folder (``quantized=``, ``threads=`` as in the constructor)."""
        return cls(folder, **kwargs)

    def run(self, graph: str, inputs: dict[str, Any]) -> dict[str, np.ndarray]:
        """Run one graph on the inputs it takes (others are ignored); its outputs by name."""
        session = self.sessions[graph]
        feed = {arg.name: _as_input(inputs[arg.name], arg.type) for arg in session.get_inputs()}
        return dict(zip([out.name for out in session.get_outputs()], session.run(None, feed)))


def cache_names(cache: str, layers: int) -> list[str]:
    """The generator graphs' names of one key/value cache (``past``, ``present`` or ``cross``): each layer's key,
    then its value, layer by layer (``past_key_0``, ``past_value_0``, ...)."""
    return [f"{cache}_{part}_{i}" for i in range(layers) for part in ("key", "value")]


def _as_input(value: Any, onnx_type: str) -> np.ndarray:
    """An array of the dtype a graph input declares (``tensor(int64)``, ``tensor(float)``, ``tensor(bool)``)."""
    dtype = {"tensor(int64)": np.int64, "tensor(float)": np.float32, "tensor(bool)": np.bool_}[onnx_type]
    return np.ascontiguousarray(np.asarray(value), dtype=dtype)


class ORTModelForImageTextClassification(ORTModel):
    """A classifier (or an ensemble of them, one graph): ``model(pixel_values, input_ids, attention_mask).logits``."""

    task = "classification"

    def __call__(self, pixel_values: np.ndarray, input_ids: np.ndarray, attention_mask: np.ndarray | None = None,
                 **unused: Any) -> ORTOutput:
        """(B, 3, H, W) images and (B, T) texts -> ``logits`` (B, num_labels)."""
        mask = np.ones_like(input_ids) if attention_mask is None else attention_mask
        out = self.run("model", {"pixel_values": pixel_values, "input_ids": input_ids, "attention_mask": mask})
        return ORTOutput(logits=out["logits"])


class ORTModelForImageTextRetrieval(ORTModel):
    """A dual encoder as two graphs, so search embeds one side only: ``get_image_features`` and ``get_text_features``
    give unit-length embeddings; calling it with both scores every image against every text."""

    task = "retrieval"

    def get_image_features(self, pixel_values: np.ndarray) -> np.ndarray:
        """(B, 3, H, W) -> (B, projection_dim) unit-length image embeddings."""
        return self.run("image_model", {"pixel_values": pixel_values})["image_embeds"]

    def get_text_features(self, input_ids: np.ndarray, attention_mask: np.ndarray | None = None) -> np.ndarray:
        """(B, T) -> (B, projection_dim) unit-length text embeddings."""
        mask = np.ones_like(input_ids) if attention_mask is None else attention_mask
        return self.run("text_model", {"input_ids": input_ids, "attention_mask": mask})["text_embeds"]

    def __call__(self, pixel_values: np.ndarray | None = None, input_ids: np.ndarray | None = None,
                 attention_mask: np.ndarray | None = None, **unused: Any) -> ORTOutput:
        """Embeddings of what is given; with both, ``logits_per_image`` (B_i, B_t) scaled as the torch model does."""
        image = None if pixel_values is None else self.get_image_features(pixel_values)
        text = None if input_ids is None else self.get_text_features(input_ids, attention_mask)
        if image is None or text is None:
            return ORTOutput(image_embeds=image, text_embeds=text)
        scale = float(np.exp(min(self.onnx_config["logit_scale"], 4.6052)))
        per_image = scale * image @ text.T
        return ORTOutput(image_embeds=image, text_embeds=text, logits_per_image=per_image, logits_per_text=per_image.T)


class ORTModelForConditionalGeneration(ORTModel):
    """A generator as an encoder graph (images + prompt -> memory and each decoder layer's cross-attention keys and
    values) and a decoder graph (new tokens + the self-attention cache -> next-token logits + the grown cache)."""

    task = "generation"

    def __init__(self, folder: str | os.PathLike, **kwargs: Any):
        super().__init__(folder, **kwargs)
        self.num_layers = self.config["decoder_num_layers"]
        vocab = self.config.get("decoder_vocab")  # the ids the decoder writes; the graph scores these, in order
        self.vocab = None if vocab is None else np.asarray(vocab, dtype=np.int64)
        self.max_positions = self.config["decoder_max_positions"]
        self.eos = self.config["eos_token_id"]
        self.pad = self.config.get("pad_token_id") or 0
        self.start = self.config["decoder_start_token_id"]

    def _prompt(self, batch: int, input_ids: np.ndarray | None,
                attention_mask: np.ndarray | None) -> tuple[np.ndarray, np.ndarray]:
        """The prompt (``[CLS] [SEP]`` for a caption) and its mask, each row's tokens moved to the end (left
        padding: the rows are continued from their last tokens, which must line up)."""
        if input_ids is None:
            input_ids = np.array([[self.start, self.eos]] * batch, dtype=np.int64)
        mask = np.ones_like(input_ids) if attention_mask is None else np.asarray(attention_mask)
        order = np.argsort(mask != 0, axis=1, kind="stable")
        return np.take_along_axis(input_ids, order, 1), np.take_along_axis(mask, order, 1)

    def _step(self, tokens: np.ndarray, mask: np.ndarray, memory_mask: np.ndarray, past: list[np.ndarray],
              cross: list[np.ndarray]) -> tuple[np.ndarray, list[np.ndarray]]:
        """Feed ``tokens`` (B, t) after the cached ``past`` (each (B, heads, P, d)); ``mask`` (B, P + t) is 0 at
        padding. Returns the log-probabilities of the next token (B, written tokens) and the grown cache."""
        length = tokens.shape[1]
        positions = np.clip(np.cumsum(mask, axis=1) - 1, 0, None)[:, -length:]
        total = mask.shape[1]
        query_at = np.arange(total - length, total)
        causal = np.arange(total)[None, :] <= query_at[:, None]  # (t, P + t)
        self_mask = (causal[None] & (mask[:, None, :] != 0)) | (np.arange(total)[None, :] == query_at[:, None])
        feed = {"input_ids": tokens, "position_ids": positions, "self_mask": self_mask[:, None],
                "memory_mask": memory_mask}
        feed.update(zip(cache_names("past", self.num_layers), past))
        feed.update(zip(cache_names("cross", self.num_layers), cross))
        out = self.run("decoder_model", feed)
        logits = out["logits"].astype(np.float64)
        peak = logits.max(axis=-1, keepdims=True)
        log_probs = logits - peak - np.log(np.exp(logits - peak).sum(axis=-1, keepdims=True))
        present = [out[name] for name in cache_names("present", self.num_layers)]
        return log_probs, present

    def encode(self, pixel_values: np.ndarray, input_ids: np.ndarray,
               attention_mask: np.ndarray) -> tuple[np.ndarray, list[np.ndarray]]:
        """The memory's mask (B, M) and each decoder layer's cross-attention keys and values."""
        out = self.run("encoder_model", {"pixel_values": pixel_values, "input_ids": input_ids,
                                         "attention_mask": attention_mask})
        return out["memory_mask"], [out[name] for name in cache_names("cross", self.num_layers)]

    def generate(self, pixel_values: np.ndarray, input_ids: np.ndarray | None = None,
                 attention_mask: np.ndarray | None = None, max_new_tokens: int = 20, num_beams: int = 1,
                 length_penalty: float = 1.0, streamer: Any = None, scores: list[np.ndarray] | None = None,
                 **unused: Any) -> np.ndarray:
        """The prompt (a question; None for a caption) followed by the new tokens, (B, prompt + new) ids, padded
        with ``pad_token_id`` after a row's end: greedy (``num_beams=1``) or beam search, as the torch model's
        ``generate`` writes them. ``max_new_tokens`` is capped at what ``decoder_max_positions`` leaves.

        Greedy only: a ``streamer`` (transformers' ``TextStreamer`` kind: ``put(ids)``, ``end()``) gets the prompt
        and then each token as it is written; a ``scores`` list gets each step's log-probabilities (B, written
        tokens; the ids are ``self.vocab`` where the decoder writes a part of the vocabulary)."""
        batch = len(pixel_values)
        prompt, mask = self._prompt(batch, input_ids, attention_mask)
        room = self.max_positions - prompt.shape[1]
        if room < 1:
            raise ValueError(f"The prompt is {prompt.shape[1]} tokens long, but this decoder reads and writes at most "
                             f"{self.max_positions}; shorten the question.")
        new = min(int(max_new_tokens), room)
        memory_mask, cross = self.encode(pixel_values, *_right_padded(prompt, mask))
        if num_beams > 1:
            return self._beam_search(prompt, mask, memory_mask, cross, new, num_beams, length_penalty)
        return self._greedy(prompt, mask, memory_mask, cross, new, streamer, scores)

    def _token(self, index: Any) -> Any:
        """Token ids of indices into the decoder graph's scores (the written vocabulary, or the whole one)."""
        return index if self.vocab is None else self.vocab[index]

    def _empty_cache(self, batch: int, cross: list[np.ndarray]) -> list[np.ndarray]:
        heads, head_dim = cross[0].shape[1], cross[0].shape[3]
        return [np.zeros((batch, heads, 0, head_dim), np.float32) for _ in range(2 * self.num_layers)]

    def _greedy(self, prompt: np.ndarray, mask: np.ndarray, memory_mask: np.ndarray, cross: list[np.ndarray],
                new: int, streamer: Any = None, scores: list[np.ndarray] | None = None) -> np.ndarray:
        batch = len(prompt)
        sequences, tokens, past = prompt, prompt, self._empty_cache(batch, cross)
        done = np.zeros(batch, dtype=bool)
        if streamer is not None:
            streamer.put(prompt)
        for _ in range(new):
            log_probs, past = self._step(tokens, mask, memory_mask, past, cross)
            if scores is not None:
                scores.append(log_probs)
            chosen = np.where(done, self.pad, self._token(log_probs.argmax(axis=-1)))
            sequences = np.concatenate([sequences, chosen[:, None]], axis=1)
            if streamer is not None:
                streamer.put(chosen)
            done |= chosen == self.eos
            tokens, mask = chosen[:, None], np.concatenate([mask, np.ones((batch, 1), mask.dtype)], axis=1)
            if done.all():
                break
        if streamer is not None:
            streamer.end()
        return sequences

    def _beam_search(self, prompt: np.ndarray, mask: np.ndarray, memory_mask: np.ndarray, cross: list[np.ndarray],
                     new: int, beams: int, length_penalty: float) -> np.ndarray:
        """Beam search as transformers' ``generate`` runs it (``early_stopping=False``): each step ranks 2 x
        ``beams`` continuations of the live hypotheses by summed log-probability; those among the first ``beams``
        that end (or reach the last step) are finished, scored by the sum over their new length ** ``length_penalty``;
        the best ``beams`` that go on stay live. A row stops once its ``beams`` best finished ones are no worse than
        its best live one scored at today's length."""
        batch = len(prompt)
        repeat = lambda array: np.repeat(array, beams, axis=0)  # noqa: E731  (B, ...) -> (B * beams, ...)
        sequences, mask, memory_mask = repeat(prompt), repeat(mask), repeat(memory_mask)
        cross = [repeat(array) for array in cross]
        past = self._empty_cache(batch * beams, cross)
        scores = np.tile(np.r_[0.0, np.full(beams - 1, -1e9)], batch)  # only the first copy of each row is live
        finished: list[list[tuple[float, np.ndarray]]] = [[] for _ in range(batch)]
        open_rows = np.ones(batch, dtype=bool)
        tokens = sequences
        for step in range(new):
            log_probs, past = self._step(tokens, mask, memory_mask, past, cross)
            vocab = log_probs.shape[-1]
            totals = (scores[:, None] + log_probs).reshape(batch, beams * vocab)
            top = np.argsort(-totals, axis=1, kind="stable")[:, : 2 * beams]
            last = step == new - 1
            rows, next_scores, next_tokens = [], [], []
            for b in range(batch):
                kept = []
                for rank, flat in enumerate(top[b]):
                    beam, index = divmod(int(flat), vocab)
                    token = int(self._token(index))
                    source = b * beams + beam
                    if rank < beams and open_rows[b] and (token == self.eos or last):
                        text = np.r_[sequences[source], token]
                        finished[b].append((totals[b, flat] / (step + 1) ** length_penalty, text))
                    if token != self.eos and len(kept) < beams:
                        kept.append((source, token, totals[b, flat]))
                finished[b] = sorted(finished[b], key=lambda pair: -pair[0])[:beams]
                for source, token, score in kept:
                    rows.append(source), next_tokens.append(token), next_scores.append(score)
            if last:
                break
            rows = np.array(rows)
            sequences = np.concatenate([sequences[rows], np.array(next_tokens)[:, None]], axis=1)
            scores, mask = np.array(next_scores), np.concatenate([mask[rows], np.ones((len(rows), 1), mask.dtype)], 1)
            past = [array[rows] for array in past]
            tokens = sequences[:, -1:]
            for b in range(batch):  # can a live hypothesis still beat the worst of the best finished ones?
                best_live = scores[b * beams:(b + 1) * beams].max() / (step + 1) ** length_penalty
                open_rows[b] &= len(finished[b]) < beams or best_live > finished[b][-1][0]
            if not open_rows.any():
                break
        best = [finished[b][0][1] for b in range(batch)]
        width = max(len(text) for text in best)
        return np.stack([np.r_[text, np.full(width - len(text), self.pad)] for text in best]).astype(np.int64)


def _right_padded(ids: np.ndarray, mask: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Each row's real tokens moved to the front (the encoder reads a prompt from its first position)."""
    order = np.argsort(mask == 0, axis=1, kind="stable")
    return np.take_along_axis(ids, order, 1), np.take_along_axis(mask, order, 1)


class ORTProcessor:
    """The model's processor without torch: its tokenizer (``tokenizer.json``) and transformers' PIL image processor
    with the saved settings (pixels within one 8-bit step of the torchvision one the torch processor uses).

    ``processor(images=..., text=...)`` gives ``pixel_values`` (float32), ``input_ids`` and ``attention_mask``
    (int64) as numpy arrays; ``batch_decode`` turns ids back into text.
    """

    def __init__(self, folder: str | os.PathLike):
        import transformers

        folder = Path(folder)
        saved = json.loads((folder / "processor_config.json").read_text())
        settings = {k: v for k, v in saved["image_processor"].items()
                    if k not in ("image_processor_type", "auto_map", "processor_class")}
        kind = saved["image_processor"]["image_processor_type"].removesuffix("Fast").removesuffix("Pil")
        self.image_processor = getattr(transformers, kind + "Pil")(**settings)
        self.tokenizer = transformers.PreTrainedTokenizerFast(tokenizer_file=str(folder / "tokenizer.json"),
                                                              **_special_tokens(folder))
        self.max_length = saved.get("max_length", 64)

    def __call__(self, images: list[Any] | None = None, text: list[str] | str | None = None) -> dict[str, np.ndarray]:
        """Model inputs of RGB images and texts (either or both)."""
        inputs: dict[str, np.ndarray] = {}
        if images is not None:
            images = [image.convert("RGB") for image in images]
            inputs["pixel_values"] = self.image_processor(images, return_tensors="np")["pixel_values"].astype(np.float32)
        if text is not None:
            encoded = self.tokenizer([text] if isinstance(text, str) else list(text), padding=True, truncation=True,
                                     max_length=self.max_length, return_tensors="np")
            inputs["input_ids"] = encoded["input_ids"].astype(np.int64)
            inputs["attention_mask"] = encoded["attention_mask"].astype(np.int64)
        return inputs

    def batch_decode(self, ids: np.ndarray, skip_special_tokens: bool = True) -> list[str]:
        """Token ids (B, L) -> B texts."""
        return self.tokenizer.batch_decode(ids.tolist(), skip_special_tokens=skip_special_tokens)


def _special_tokens(folder: Path) -> dict[str, str]:
    """The special tokens named in ``tokenizer_config.json`` (``[PAD]``, ``[CLS]``, ...)."""
    saved = json.loads((folder / "tokenizer_config.json").read_text())
    return {key: saved[key] for key in ("pad_token", "cls_token", "sep_token", "unk_token", "mask_token",
                                        "bos_token", "eos_token") if isinstance(saved.get(key), str)}


def read_onnx_config(folder: str | os.PathLike) -> dict[str, Any]:
    """``onnx_config.json`` of an export folder; a ValueError says what the folder is missing."""
    path = Path(folder) / ONNX_CONFIG
    if not path.is_file():
        raise ValueError(f"{folder} is not an mm_hub ONNX export (no {ONNX_CONFIG}); make one with "
                         "`python -m training.export MODEL --out DIR`.")
    return json.loads(path.read_text())


RUNTIMES = {cls.task: cls for cls in (ORTModelForImageTextClassification, ORTModelForImageTextRetrieval,
                                      ORTModelForConditionalGeneration)}


def load(folder: str | os.PathLike, quantized: bool | None = None, threads: int | None = None) -> tuple[ORTModel,
                                                                                                      ORTProcessor]:
    """The runtime model of an export folder (the class of its task) and its processor."""
    task = read_onnx_config(folder)["task"]
    if task not in RUNTIMES:
        raise ValueError(f"{folder} holds a {task!r} model; this runtime runs {sorted(RUNTIMES)}.")
    return RUNTIMES[task](folder, quantized=quantized, threads=threads), ORTProcessor(folder)


__all__ = ["ORTModel", "ORTModelForConditionalGeneration", "ORTModelForImageTextClassification",
           "ORTModelForImageTextRetrieval", "ORTOutput", "ORTProcessor", "RUNTIMES", "cache_names", "load",
           "read_onnx_config"]
