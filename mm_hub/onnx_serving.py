"""Serve a loaded model's hot paths from its ONNX export (`Predictor.use_onnx`, ``python app.py --runtime onnx``).

`OnnxServedModel` stands where the torch model stood: the same calls (``model(**inputs)``, ``get_image_features``,
``get_text_features``, ``generate``) with torch tensors in and the same output classes out, run by the torch-free
runtime (`mm_hub.ort_mm_hub`). What the graphs do not compute stays with the torch model it wraps: attention maps
for explanations, encoder outputs given in place of inputs, sampling and beam search in the app (whose confidence
needs the beams' scores).

Where the export comes from (`onnx_folder`): a folder given, else ``onnx/`` inside the model's folder or Hub repo
(``python -m training.push --onnx DIR`` puts it there), else one exported once into mm_hub's cache. A repo's graphs
are data that ONNX Runtime runs: the ``ort_mm_hub.py`` beside them is never imported (mm_hub's own copy runs them).
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path
from typing import Any

import numpy as np
import torch

from .hub import ONNX_FOLDER
from .ort_mm_hub import ONNX_CONFIG, RUNTIMES, read_onnx_config
from .paths import cache_dir

def _numpy(inputs: dict[str, Any]) -> dict[str, np.ndarray]:
    return {key: value.cpu().numpy() for key, value in inputs.items() if isinstance(value, torch.Tensor)}


class OnnxServedModel:
    """A torch mm_hub model whose forward, embeddings and greedy generation run on its ONNX graphs.

    Args:
        model: the loaded torch model (kept for what the graphs do not compute, and for its config).
        folder: its export (`mm_hub.export.export_onnx`), of the same head.
        quantized: run the int8 graphs; None: them where the export has them.
    """

    def __init__(self, model: Any, folder: str | os.PathLike, quantized: bool | None = None):
        saved = read_onnx_config(folder)
        if saved["architecture"] != type(model).__name__:
            raise ValueError(f"{folder} holds an exported {saved['architecture']}, not the {type(model).__name__} "
                             "being served.")
        self.torch_model = model
        self.runtime = RUNTIMES[saved["task"]](folder, quantized=quantized)
        self.folder = Path(folder)

    def __getattr__(self, name: str) -> Any:  # config, generation_config, device, dtype, compute_transition_scores...
        return getattr(self.__dict__["torch_model"], name)

    def eval(self) -> OnnxServedModel:
        """Nothing to switch: the graphs are inference graphs."""
        return self

    def __call__(self, **inputs: Any) -> Any:
        """The head's forward: logits (classifier) or embeddings and their scores (retrieval)."""
        if inputs.get("output_attentions") or "image_tokens" in inputs or "text_tokens" in inputs:
            return self.torch_model(**inputs)
        output = self.runtime(**_numpy(inputs))
        fields = {name: torch.from_numpy(np.ascontiguousarray(value)) for name, value in vars(output).items()
                  if isinstance(value, np.ndarray)}
        if self.runtime.task == "classification":
            from .model.modeling_mm_hub import ImageTextClassifierOutput

            return ImageTextClassifierOutput(**fields)
        from .model.modeling_mm_hub import ImageTextRetrievalOutput

        return ImageTextRetrievalOutput(**fields)

    def get_image_features(self, pixel_values: torch.Tensor, normalize: bool = True) -> torch.Tensor:
        """(B, 3, H, W) -> (B, projection_dim) unit-length image embeddings (the image graph)."""
        if not normalize:
            return self.torch_model.get_image_features(pixel_values, normalize=False)
        return torch.from_numpy(self.runtime.get_image_features(pixel_values.cpu().numpy()))

    def get_text_features(self, input_ids: torch.Tensor, attention_mask: torch.Tensor | None = None,
                          normalize: bool = True) -> torch.Tensor:
        """(B, T) -> (B, projection_dim) unit-length text embeddings (the text graph)."""
        if not normalize:
            return self.torch_model.get_text_features(input_ids, attention_mask, normalize=False)
        mask = None if attention_mask is None else attention_mask.cpu().numpy()
        return torch.from_numpy(self.runtime.get_text_features(input_ids.cpu().numpy(), mask))

    def generate(self, pixel_values: torch.Tensor | None = None, input_ids: torch.Tensor | None = None,
                 attention_mask: torch.Tensor | None = None, **kwargs: Any) -> Any:
        """Greedy `generate` on the graphs (with ``streamer``, ``return_dict_in_generate`` and ``output_scores`` as
        transformers gives them); sampling, beam search with scores and other options run on the torch model."""
        simple = {"max_new_tokens", "streamer", "return_dict_in_generate", "output_scores", "num_beams", "do_sample"}
        beams, sampling = kwargs.get("num_beams", 1), kwargs.get("do_sample", False)
        if pixel_values is None or sampling or set(kwargs) - simple or (beams > 1 and kwargs.get("output_scores")):
            return self.torch_model.generate(pixel_values=pixel_values, input_ids=input_ids,
                                             attention_mask=attention_mask, **kwargs)
        self.torch_model._fit_length(2 if input_ids is None else input_ids.shape[1], kwargs)  # the cap, as torch's
        scores: list[np.ndarray] | None = [] if kwargs.get("output_scores") else None
        sequences = torch.from_numpy(self.runtime.generate(
            pixel_values.cpu().numpy(), None if input_ids is None else input_ids.cpu().numpy(),
            None if attention_mask is None else attention_mask.cpu().numpy(),
            max_new_tokens=kwargs.get("max_new_tokens") or 20, num_beams=beams, streamer=kwargs.get("streamer"),
            scores=scores))
        if not kwargs.get("return_dict_in_generate"):
            return sequences
        from transformers.generation.utils import GenerateEncoderDecoderOutput

        return GenerateEncoderDecoderOutput(sequences=sequences, scores=None if scores is None else tuple(
            self._full_vocabulary(step) for step in scores))

    def _full_vocabulary(self, log_probs: np.ndarray) -> torch.Tensor:
        """A step's (B, written tokens) log-probabilities as (B, vocab) scores, -inf for tokens never written."""
        return self.torch_model.full_vocabulary(torch.from_numpy(log_probs).float())


def onnx_folder(model_id: str | os.PathLike, commit: str | None = None, quantize: str | None = "int8",
                token: str | None = None) -> Path:
    """The export of a saved or pushed model: ``onnx/`` in its folder or Hub repo (at ``commit``), else one made
    once (with ``quantize``) into ``<mm_hub cache>/onnx/`` and reused while the weights are the same."""
    from .export import export_onnx

    local = Path(model_id)
    if local.is_dir():
        if (local / ONNX_FOLDER / ONNX_CONFIG).is_file():
            return local / ONNX_FOLDER
        weights = sorted(local.glob("*.safetensors"))
        stamp = "|".join(f"{path.resolve()}:{path.stat().st_size}:{path.stat().st_mtime_ns}" for path in weights)
    else:
        from huggingface_hub import snapshot_download

        snapshot = Path(snapshot_download(str(model_id), revision=commit, token=token,
                                          allow_patterns=[f"{ONNX_FOLDER}/*"]))
        if (snapshot / ONNX_FOLDER / ONNX_CONFIG).is_file():
            return snapshot / ONNX_FOLDER
        stamp = f"{model_id}@{commit}"
    key = hashlib.sha256(f"{stamp}|{quantize}".encode()).hexdigest()[:16]
    folder = cache_dir() / "onnx" / key
    if not (folder / ONNX_CONFIG).is_file():
        folder.parent.mkdir(parents=True, exist_ok=True)
        export_onnx(model_id, folder, quantize=quantize, revision=commit, token=token)
    return folder


__all__ = ["OnnxServedModel", "onnx_folder"]
