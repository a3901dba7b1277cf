"""Export an mm_hub model to ONNX: the graphs its task declares (`mm_hub.tasks.Task.onnx_graphs`), checked against
torch on the spot, optionally quantized to int8, with the processor's files, the config and the torch-free runtime
(`mm_hub.ort_mm_hub`, copied in as ``ort_mm_hub.py``) beside them.

Graphs are traced with torch.onnx's TorchScript exporter (``dynamo=False``): torch.export cannot trace the BiLSTM
text encoder's packed sequences, and one exporter for every head keeps the graphs alike. Batch and sequence axes are
dynamic; the image side is fixed by the processor's image size. int8 is ONNX Runtime's dynamic quantization of the
matrix products (weights int8, activations quantized per batch at run time), which uses the CPU's VNNI / AMX units,
and, given calibration images, static quantization of the image encoder's convolutions.
"""

from __future__ import annotations

import contextlib
import logging
import os
import platform
import shutil
import tempfile
import warnings
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image
from torch import nn

from . import ort_mm_hub
from ._files import folder_written_whole, write_json
from .model.generation_mm_hub import new_cache

OPSET = 17
PARITY_TOLERANCE = 1e-4  # max abs difference of fp32 outputs from torch's that an export may have
QUANTIZE_CHOICES = ("int8",)
# What int8 quantizes dynamically: the matrix products (and the BiLSTM's). Convolutions are quantized statically, with
# calibration images, or not at all: ONNX Runtime's dynamic integer convolution measured 1.6x to 4.9x slower than its
# fp32 one here (benchmarks/README.md, the ONNX section).
INT8_OPS = ("MatMul", "Gemm", "LSTM", "Attention")


@dataclass
class OnnxGraph:
    """One graph of an export.

    Attributes:
        name: its file stem (``model``, ``image_model``, ``decoder_model``, ...) and its name in ``onnx_config.json``.
        module: what is traced: ``forward(*inputs)`` returns the outputs in ``outputs`` order.
        inputs: example inputs by name, in ``forward``'s order.
        outputs: the output names.
        dynamic_axes: ``{input or output name: {axis: axis name}}``.
        metadata: what the runtime needs besides the graph and ``config.json`` (written into ``onnx_config.json``).
        int8: whether ``--quantize int8`` quantizes it (False for a graph whose outputs int8 moves too far).
    """

    name: str
    module: nn.Module
    inputs: dict[str, torch.Tensor]
    outputs: list[str]
    dynamic_axes: dict[str, dict[int, str]] = field(default_factory=dict)
    metadata: dict[str, Any] = field(default_factory=dict)
    int8: bool = True


def example_inputs(processor: Any, texts: Sequence[str] = ("a red circle on the left", "a square")) -> dict[str, Any]:
    """Processor outputs of two random images and ``texts``: what graphs are traced and checked with."""
    rng = np.random.default_rng(0)
    images = [Image.fromarray(rng.integers(0, 256, (40 + 8 * i, 48, 3), dtype=np.uint8)) for i in range(len(texts))]
    return dict(processor(images=images, text=list(texts), return_tensors="pt"))


TEXT_AXES = {0: "batch", 1: "sequence"}


class _Traced(nn.Module):
    """What a graph traces: a part of ``model`` (its ``forward`` in each subclass)."""

    def __init__(self, model: nn.Module):
        super().__init__()
        self.model = model


class _Logits(_Traced):
    def forward(self, pixel_values: torch.Tensor, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        return self.model(pixel_values=pixel_values, input_ids=input_ids, attention_mask=attention_mask).logits


def classifier_graphs(model: nn.Module, processor: Any) -> list[OnnxGraph]:
    """A classifier (or ensemble) as one graph: images and texts -> ``logits`` (B, num_labels)."""
    inputs = example_inputs(processor)
    names = ("pixel_values", "input_ids", "attention_mask")
    return [OnnxGraph("model", _Logits(model), {name: inputs[name] for name in names}, ["logits"],
                      {"pixel_values": {0: "batch"}, "input_ids": TEXT_AXES, "attention_mask": TEXT_AXES,
                       "logits": {0: "batch"}})]


class _ImageEmbeds(_Traced):
    def forward(self, pixel_values: torch.Tensor) -> torch.Tensor:
        return self.model.get_image_features(pixel_values)


class _TextEmbeds(_Traced):
    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        return self.model.get_text_features(input_ids, attention_mask)


def retrieval_graphs(model: nn.Module, processor: Any) -> list[OnnxGraph]:
    """A dual encoder as two graphs, so search embeds one side only: ``image_model`` (pixels -> ``image_embeds``)
    and ``text_model`` (ids -> ``text_embeds``), both unit-length; the learned ``logit_scale`` goes into
    ``onnx_config.json``."""
    inputs = example_inputs(processor)
    return [
        OnnxGraph("image_model", _ImageEmbeds(model), {"pixel_values": inputs["pixel_values"]}, ["image_embeds"],
                  {"pixel_values": {0: "batch"}, "image_embeds": {0: "batch"}},
                  {"logit_scale": model.logit_scale.item()}),
        # Kept fp32 under --quantize: int8 text embeddings cost the demo retrieval model 19 points of image->text
        # recall@1 (its captions differ by a word or their order), int8 image embeddings none
        # (benchmarks/results_onnx_accuracy.json).
        OnnxGraph("text_model", _TextEmbeds(model),
                  {"input_ids": inputs["input_ids"], "attention_mask": inputs["attention_mask"]}, ["text_embeds"],
                  {"input_ids": TEXT_AXES, "attention_mask": TEXT_AXES, "text_embeds": {0: "batch"}}, int8=False),
    ]


class _GeneratorEncoder(_Traced):
    """Images + prompt -> the memory's mask and each decoder layer's cross-attention keys and values (computed once
    per text, not once per token)."""

    def forward(self, pixel_values: torch.Tensor, input_ids: torch.Tensor,
                attention_mask: torch.Tensor) -> tuple[torch.Tensor, ...]:
        encoded = self.model.encode(pixel_values, input_ids, attention_mask)
        memory = encoded.last_hidden_state  # (B, M, D)
        cross = []
        for layer in self.model.decoder.layers:
            attention = layer.cross_attention
            cross += [attention._heads(attention.k_proj(memory)), attention._heads(attention.v_proj(memory))]
        return (encoded.attention_mask, *cross)


class _DecoderStep(_Traced):
    """New tokens after the cached ones -> the next token's scores and the grown self-attention cache. Positions and
    the self-attention mask are inputs (the runtime makes them from the attention mask), so every size in the graph
    is a tensor's own; scores cover the tokens the decoder writes (``decoder_vocab``, in its order) or the whole
    vocabulary."""

    def forward(self, input_ids: torch.Tensor, position_ids: torch.Tensor, self_mask: torch.Tensor,
                memory_mask: torch.Tensor, *cache: torch.Tensor) -> tuple[torch.Tensor, ...]:
        decoder = self.model.decoder
        layers = len(decoder.layers)
        kv = new_cache()
        for i in range(layers):
            kv.self_attention_cache.update(cache[2 * i], cache[2 * i + 1], i)
            kv.cross_attention_cache.update(cache[2 * layers + 2 * i], cache[2 * layers + 2 * i + 1], i)
            kv.is_updated[i] = True
        x = decoder.embed_tokens(input_ids) + decoder.embed_positions(position_ids)  # (B, t, D)
        cross_mask = memory_mask.bool()[:, None, None, :]
        for layer in decoder.layers:
            x, _ = layer(x, self_mask, None, cross_mask, kv, False)
        states = decoder.norm(x[:, -1])  # (B, D): only the last position is continued
        scores = self.model.written_scores(states)  # (B, written tokens)
        present = [tensor for layer in kv.self_attention_cache.layers for tensor in (layer.keys, layer.values)]
        return (scores, *present)


def generator_graphs(model: nn.Module, processor: Any) -> list[OnnxGraph]:
    """A generator as an ``encoder_model`` graph (images + prompt -> ``memory_mask``, ``cross_key_i``,
    ``cross_value_i``) and a ``decoder_model`` graph (``input_ids``, ``position_ids``, ``self_mask``, ``memory_mask``,
    ``past_key_i`` / ``past_value_i``, the cross keys and values -> ``logits`` of the next token, ``present_key_i`` /
    ``present_value_i``)."""
    inputs = example_inputs(processor, ("what colour is the circle?", ""))
    names = ("pixel_values", "input_ids", "attention_mask")
    encoder = _GeneratorEncoder(model)
    layers = len(model.decoder.layers)
    cross_names, past_names, present_names = (ort_mm_hub.cache_names(cache, layers)
                                              for cache in ("cross", "past", "present"))
    with torch.no_grad():
        memory_mask, *cross = encoder(*(inputs[name] for name in names))
    batch, past, new = memory_mask.shape[0], 3, 2
    heads, head_dim = cross[0].shape[1], cross[0].shape[3]
    step_inputs = {
        "input_ids": torch.full((batch, new), model.config.eos_token_id, dtype=torch.long),
        "position_ids": torch.arange(past, past + new).expand(batch, -1),
        "self_mask": torch.ones(batch, 1, new, past + new, dtype=torch.bool),
        "memory_mask": memory_mask,
        **{name: torch.randn(batch, heads, past, head_dim) for name in past_names},
        **dict(zip(cross_names, cross)),
    }
    cache_axes = {0: "batch", 2: "past"}
    return [
        OnnxGraph("encoder_model", encoder, {name: inputs[name] for name in names}, ["memory_mask", *cross_names],
                  {"pixel_values": {0: "batch"}, "input_ids": TEXT_AXES, "attention_mask": TEXT_AXES,
                   "memory_mask": {0: "batch", 1: "memory"},
                   **{name: {0: "batch", 2: "memory"} for name in cross_names}}),
        OnnxGraph("decoder_model", _DecoderStep(model), step_inputs,
                  ["logits", *present_names],
                  {"input_ids": {0: "batch", 1: "new"}, "position_ids": {0: "batch", 1: "new"},
                   "self_mask": {0: "batch", 2: "new", 3: "total"}, "memory_mask": {0: "batch", 1: "memory"},
                   "logits": {0: "batch"}, **{name: cache_axes for name in past_names},
                   **{name: {0: "batch", 2: "memory"} for name in cross_names},
                   **{name: {0: "batch", 2: "total"} for name in present_names}}),
    ]


def _trace(graph: OnnxGraph, path: Path) -> None:
    """Write ``graph`` to ``path``; a model that does not trace is a ValueError naming the graph and the cause."""
    try:
        # The tracer warns where Python values become constants; the parity check after tracing is what tells.
        with torch.no_grad(), warnings.catch_warnings():
            warnings.simplefilter("ignore")
            torch.onnx.export(graph.module.eval(), tuple(graph.inputs.values()), str(path),
                              input_names=list(graph.inputs), output_names=graph.outputs,
                              dynamic_axes=graph.dynamic_axes, opset_version=OPSET, dynamo=False,
                              do_constant_folding=True)
    except Exception as error:  # the exporter raises many kinds; the person exporting needs the one line
        raise ValueError(f"The {graph.name} graph does not export to ONNX: {type(error).__name__}: "
                         f"{str(error).splitlines()[0] if str(error) else ''}") from error


def _max_difference(graph: OnnxGraph, path: Path) -> float:
    """Max abs difference between ONNX Runtime's outputs on ``path`` and torch's, on the example inputs."""
    import onnxruntime as ort

    with torch.no_grad():
        expected = graph.module(*graph.inputs.values())
    expected = expected if isinstance(expected, tuple) else (expected,)
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    actual = session.run(None, {name: value.numpy() for name, value in graph.inputs.items()})
    return max(float(np.abs(a - e.numpy()).max()) if e.numel() else 0.0 for a, e in zip(actual, expected))


@contextlib.contextmanager
def _quiet_root_logger() -> Iterator[None]:
    """ONNX Runtime's quantizer logs general advice to the root logger: hold it back while it runs."""
    root = logging.getLogger()
    level = root.level
    root.setLevel(max(level, logging.ERROR))
    try:
        yield
    finally:
        root.setLevel(level)


class _Calibration:
    """ONNX Runtime's calibration reader: the graph's example inputs with each calibration image's pixels in turn."""

    def __init__(self, graph: OnnxGraph, pixels: torch.Tensor):
        example = {name: value[:1].numpy() for name, value in graph.inputs.items()}
        self.feeds = iter([{**example, "pixel_values": pixels[i:i + 1].numpy()} for i in range(len(pixels))])

    def get_next(self) -> dict[str, np.ndarray] | None:
        return next(self.feeds, None)


def quantize_int8(graph: OnnxGraph, path: Path, target: Path, calibration: torch.Tensor | None = None) -> str:
    """int8 ``path`` into ``target``: ONNX Runtime's dynamic quantization of the matrix products (`INT8_OPS`) and,
    given ``calibration`` pixels (N, 3, H, W) for a graph that reads images, static per-channel quantization of its
    convolutions with activation ranges measured on them. Returns what was done, for ``onnx_config.json``."""
    from onnxruntime.quantization import QuantFormat, QuantType, quantize_dynamic, quantize_static
    from onnxruntime.quantization.shape_inference import quant_pre_process

    with _quiet_root_logger(), tempfile.TemporaryDirectory() as work:
        source, convolutions = path, "fp32 (no calibration images)"
        if calibration is not None and "pixel_values" in graph.inputs:
            prepared, static = Path(work) / "prepared.onnx", Path(work) / "static.onnx"
            quant_pre_process(str(path), str(prepared), skip_symbolic_shape=True)
            quantize_static(str(prepared), str(static), _Calibration(graph, calibration), quant_format=QuantFormat.QDQ,
                            activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8,
                            op_types_to_quantize=["Conv"], per_channel=True)
            source, convolutions = static, f"static int8, per channel, calibrated on {len(calibration)} images"
        elif "pixel_values" not in graph.inputs:
            convolutions = "none"
        quantize_dynamic(str(source), str(target), weight_type=QuantType.QInt8, op_types_to_quantize=list(INT8_OPS))
    return convolutions


def export_onnx(model_id: str | os.PathLike, out: str | os.PathLike, quantize: str | None = None,
                revision: str | None = None, token: str | None = None,
                calibration_images: Sequence[Any] | None = None) -> dict[str, Any]:
    """Export a saved or pushed mm_hub model into the folder ``out`` (written whole, then moved into place).

    Args:
        model_id: a Hub id or a local folder of an mm_hub model (any head whose task declares ``onnx_graphs``).
        out: the folder to write; an existing one is replaced only if it holds an earlier export.
        quantize: ``"int8"`` also writes ``<graph>.int8.onnx`` beside each fp32 graph that quantizes well
            (`OnnxGraph.int8`).
        calibration_images: images like those the model will see (any kind the processor reads): with them, int8
            also quantizes the image encoder's convolutions (static, ranges measured on these); without, they stay
            fp32 (ONNX Runtime's dynamic integer convolutions are slower than fp32 ones).
        revision, token: of a Hub model.

    Returns:
        What ``onnx_config.json`` says: the task, each graph's files, inputs, outputs and its max abs difference from
        torch, the opset and the versions that wrote it.

    Raises:
        ModelLoadError: ``model_id`` is not an mm_hub model. ValueError: the task has no ONNX graphs, a graph does not
        trace, its outputs differ from torch's by more than `PARITY_TOLERANCE`, or ``out`` holds something else.
    """
    from .loading import load_model
    from .tasks import task_of

    if quantize not in (None, *QUANTIZE_CHOICES):
        raise ValueError(f"--quantize must be one of {list(QUANTIZE_CHOICES)}, got {quantize!r}.")
    out = Path(out)
    if out.exists() and (not out.is_dir() or (any(out.iterdir()) and not (out / ort_mm_hub.ONNX_CONFIG).is_file())):
        raise ValueError(f"{out} exists and is not an earlier export; give a new or empty folder.")
    model, processor = load_model(model_id, revision=revision, token=token)
    task = task_of(model)
    if task.onnx_graphs is None:
        raise ValueError(f"{model_id} holds a {task.name} model ({type(model).__name__}); its task declares no ONNX "
                         "graphs.")
    graphs = task.onnx_graphs(model, processor)
    calibration = None
    if calibration_images:
        if quantize != "int8":
            raise ValueError("Calibration images are for --quantize int8.")
        calibration = processor(images=[processor.load_image(image) for image in calibration_images],
                                return_tensors="pt")["pixel_values"]
    with folder_written_whole(out) as staging:  # a failed export leaves ``out`` as it was
        described = {}
        for graph in graphs:
            path = staging / f"{graph.name}.onnx"
            _trace(graph, path)
            difference = _max_difference(graph, path)
            if difference > PARITY_TOLERANCE:
                raise ValueError(f"The exported {graph.name} graph differs from torch by {difference:.2e} (more than "
                                 f"{PARITY_TOLERANCE}); this model does not export faithfully.")
            described[graph.name] = {"file": path.name, "inputs": list(graph.inputs), "outputs": graph.outputs,
                                     "max_abs_difference_from_torch": difference}
            if quantize == "int8" and graph.int8:
                described[graph.name]["int8_convolutions"] = quantize_int8(
                    graph, path, staging / f"{graph.name}.int8.onnx", calibration)
                described[graph.name]["int8_file"] = f"{graph.name}.int8.onnx"
        info = _onnx_config(model, task.name, described, quantize, str(model_id))
        for graph in graphs:
            info.update(graph.metadata)
        write_json(staging / ort_mm_hub.ONNX_CONFIG, info)
        model.config.save_pretrained(staging)
        processor.save_pretrained(staging)
        for code in staging.glob("*_mm_hub.py"):  # remote code of the torch model: not needed beside the graphs
            code.unlink()
        shutil.copy(ort_mm_hub.__file__, staging / "ort_mm_hub.py")
    return info


def _onnx_config(model: nn.Module, task: str, graphs: dict[str, Any], quantize: str | None,
                 source: str) -> dict[str, Any]:
    """What ``onnx_config.json`` records: task, head, graphs, quantization, opset, exporter and versions."""
    import onnx
    import onnxruntime
    import transformers

    from . import __version__

    return {
        "task": task, "architecture": type(model).__name__, "source": source, "graphs": graphs,
        "quantization": None if quantize is None else {"type": "onnxruntime.quantization: dynamic int8 matrix "
                                                       "products; convolutions per graph (int8_convolutions)",
                                                       "ops": list(INT8_OPS), "weights": "QInt8"},
        "opset": OPSET, "exporter": "torch.onnx.export (TorchScript, dynamo=False)",
        "versions": {"mm_hub": __version__, "torch": torch.__version__, "transformers": transformers.__version__,
                     "onnx": onnx.__version__, "onnxruntime": onnxruntime.__version__,
                     "python": platform.python_version()},
    }


__all__ = ["INT8_OPS", "OPSET", "PARITY_TOLERANCE", "OnnxGraph", "classifier_graphs", "example_inputs",
           "export_onnx", "generator_graphs", "quantize_int8", "retrieval_graphs"]
