"""Serving speed of the exported graphs (`python -m training.export`) against torch, measured by `benchmarks.speed`:
each path on the same inputs, interleaved, as ratios of neighbours.

- classifier (ResNet + MiniLM-shaped BERT, concat fusion): the peer (transformers' `ResNetModel` + `BertModel`
  forward in torch: the towers alone, less work than any classifier on them), mm_hub's torch model, torch's dynamic
  int8 (`torch.ao` on the Linear layers), ONNX Runtime fp32, ONNX Runtime int8 (matrix products) and int8 with the
  ResNet's convolutions calibrated too (on random images: times do not depend on them), at a batch and at one pair;
- retrieval embeddings (ViT + MiniLM-shaped BERT): the peer `VisionTextDualEncoderModel` in torch against the
  exported image and text graphs;
- generation: greedy tokens per second of mm_hub's torch `generate` and of the runtime over the exported graphs.

Every ONNX path is checked against torch first (max abs difference, written beside the times).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image

THREADS = 2  # ONNX Runtime's intra-op threads: the machine's cores, as torch uses them


CALIBRATION_IMAGES = 16  # random images: the times do not depend on them (accuracy: bench_onnx_accuracy)


def _export(model: torch.nn.Module, processor: Any, folder: Path, side: int) -> dict[str, Any]:
    """Save ``model`` and export it twice with int8 graphs: ``folder / 'onnx'`` (int8 matrix products) and
    ``folder / 'onnx_calibrated'`` (and convolutions calibrated on random images); returns ``onnx_config.json``."""
    from mm_hub.export import export_onnx

    model.save_pretrained(folder / "model")
    processor.save_pretrained(folder / "model")
    export_onnx(folder / "model", folder / "onnx_calibrated", quantize="int8",
                calibration_images=_images(CALIBRATION_IMAGES, side, seed=1))
    return export_onnx(folder / "model", folder / "onnx", quantize="int8")


def _runtimes(folder: Path) -> dict[str, Any]:
    """The export's runtimes: fp32, int8 matrix products, and int8 with calibrated convolutions too."""
    from mm_hub.ort_mm_hub import load

    return {"ort_fp32": load(folder / "onnx", quantized=False, threads=THREADS)[0],
            "ort_int8": load(folder / "onnx", quantized=True, threads=THREADS)[0],
            "ort_int8_calibrated": load(folder / "onnx_calibrated", quantized=True, threads=THREADS)[0]}


def _images(count: int, side: int, seed: int = 0) -> list[Image.Image]:
    rng = np.random.default_rng(seed)
    return [Image.fromarray(rng.integers(0, 256, (side, side, 3), dtype=np.uint8)) for _ in range(count)]


def classifier_serving(shape: dict, work: Path, processor: Any, text: str) -> dict[str, Any]:
    """Seconds and ratios of the classifier's five paths at ``batch`` pairs and at one."""
    from transformers import BertConfig, BertModel, ResNetConfig, ResNetModel

    from benchmarks.speed import interleaved, medians, paired_ratio
    from mm_hub import MMHubConfig, MMHubForImageTextClassification

    resnet, bert = ResNetConfig(**shape["resnet"]), BertConfig(vocab_size=processor.tokenizer.vocab_size, **shape["bert"])
    torch.manual_seed(0)
    model = MMHubForImageTextClassification(MMHubConfig(vision_config=resnet, text_config=bert, fusion_type="concat",
                                                        num_labels=2)).eval()
    peer_image, peer_text = ResNetModel(resnet).eval(), BertModel(bert).eval()
    int8_torch = torch.ao.quantization.quantize_dynamic(model, {torch.nn.Linear}, dtype=torch.qint8)
    info = _export(model, processor, work / "classifier", shape["image_size"])
    runtimes = _runtimes(work / "classifier")
    inputs = {count: processor(images=_images(count, shape["image_size"]), text=[text] * count, return_tensors="pt")
              for count in (shape["batch"], 1)}
    arrays = {count: {key: value.numpy() for key, value in batch.items()} for count, batch in inputs.items()}

    def torch_path(module: torch.nn.Module, count: int) -> Any:
        with torch.inference_mode():
            return module(**inputs[count]).logits

    def peer(count: int) -> None:
        with torch.inference_mode():
            peer_image(pixel_values=inputs[count]["pixel_values"])
            peer_text(input_ids=inputs[count]["input_ids"], attention_mask=inputs[count]["attention_mask"])

    def paths(count: int) -> dict[str, Any]:
        return {"peer": lambda: peer(count), "mm_hub_torch": lambda: torch_path(model, count),
                "torch_int8": lambda: torch_path(int8_torch, count),
                **{name: (lambda runtime=runtime: runtime(**arrays[count]).logits) for name, runtime in runtimes.items()}}

    expected = torch_path(model, shape["batch"]).numpy()
    difference = {name: float(np.abs(case() - expected).max()) for name, case in paths(shape["batch"]).items()
                  if name not in ("peer", "mm_hub_torch")}
    results: dict[str, Any] = {"max_abs_difference_from_torch": difference,
                               "export_max_abs_difference": {k: v["max_abs_difference_from_torch"]
                                                             for k, v in info["graphs"].items()}}
    for label, count, rounds in (("batch", shape["batch"], shape["repeats"]), ("one", 1, shape["short_case_rounds"])):
        cases = paths(count)
        times = interleaved(cases, rounds)
        results[label] = {"seconds": medians(times),
                          "peer_over": {name: paired_ratio(times, "peer", name) for name in cases if name != "peer"}}
    return results


def retrieval_serving(shape: dict, work: Path, processor: Any, text: str) -> dict[str, Any]:
    """Image and text embeddings of ``batch`` items: the peer dual encoder in torch against the exported graphs."""
    from transformers import BertConfig, VisionTextDualEncoderConfig, VisionTextDualEncoderModel, ViTConfig

    from benchmarks.speed import interleaved, medians, paired_ratio
    from mm_hub import MMHubConfig, MMHubForImageTextRetrieval

    vit = ViTConfig(image_size=shape["image_size"], **shape["vit"])
    bert = BertConfig(vocab_size=processor.tokenizer.vocab_size, **shape["bert"])
    torch.manual_seed(0)
    peer = VisionTextDualEncoderModel(VisionTextDualEncoderConfig.from_vision_text_configs(vit, bert,
                                                                                          projection_dim=512)).eval()
    model = MMHubForImageTextRetrieval(MMHubConfig(vision_config=vit, text_config=bert, projection_dim=512)).eval()
    info = _export(model, processor, work / "retrieval", shape["image_size"])
    runtimes = _runtimes(work / "retrieval")
    batch = processor(images=_images(shape["batch"], shape["image_size"]), text=[text] * shape["batch"],
                      return_tensors="pt")
    pixels, ids, mask = batch["pixel_values"], batch["input_ids"], batch["attention_mask"]
    arrays = {key: value.numpy() for key, value in batch.items()}

    def peer_side(side: str) -> None:
        with torch.inference_mode():
            if side == "image":
                peer.get_image_features(pixel_values=pixels)
            else:
                peer.get_text_features(input_ids=ids, attention_mask=mask)

    with torch.inference_mode():
        expected = {"image": model.get_image_features(pixels).numpy(), "text": model.get_text_features(ids, mask).numpy()}
    results: dict[str, Any] = {"export_max_abs_difference": {k: v["max_abs_difference_from_torch"]
                                                             for k, v in info["graphs"].items()},
                               "max_abs_difference_from_torch": {}}
    for side, rounds in (("image", shape["repeats"]), ("text", shape["short_case_rounds"])):
        cases = {"peer": lambda side=side: peer_side(side)}
        for name, runtime in runtimes.items():
            if side == "text" and name != "ort_fp32":
                continue  # the int8 export keeps the text graph fp32 (retrieval_graphs): the same graph as ort_fp32
            cases[name] = ((lambda runtime=runtime: runtime.get_image_features(arrays["pixel_values"])) if side == "image"
                           else (lambda runtime=runtime: runtime.get_text_features(arrays["input_ids"],
                                                                                   arrays["attention_mask"])))
            results["max_abs_difference_from_torch"][f"{side}_{name}"] = float(
                np.abs(cases[name]() - expected[side]).max())
        times = interleaved(cases, rounds)
        results[side] = {"seconds": medians(times),
                         "peer_over": {name: paired_ratio(times, "peer", name) for name in cases if name != "peer"}}
    return results


def generation_serving(shape: dict, work: Path, processor: Any) -> dict[str, Any]:
    """Greedy tokens per second writing ``tokens`` new tokens about one image: torch `generate` against the runtime
    over the exported encoder and decoder graphs (fp32, int8); the fp32 runtime writes the same tokens."""
    from transformers import BertConfig, ResNetConfig

    from benchmarks.speed import interleaved, medians, paired_ratio
    from mm_hub import MMHubConfig, MMHubForConditionalGeneration

    config = MMHubConfig(vision_config=ResNetConfig(**shape["resnet"]), fusion_type="concat",
                         text_config=BertConfig(vocab_size=processor.tokenizer.vocab_size, **shape["bert"]),
                         decoder_max_positions=64, **shape["decoder"],
                         **MMHubForConditionalGeneration._pretrained_config_defaults(processor.tokenizer))
    torch.manual_seed(0)
    model = MMHubForConditionalGeneration(config).eval()
    _export(model, processor, work / "generator", shape["image_size"])
    runtimes = _runtimes(work / "generator")
    model.generation_config.eos_token_id = None  # random weights: both sides write every token asked for
    for runtime in runtimes.values():
        runtime.eos = -1
    pixels = processor(images=_images(1, shape["image_size"]), return_tensors="pt")["pixel_values"]
    prompt = model.empty_prompt(1, "cpu")  # a caption's
    tokens = 32

    def torch_write() -> np.ndarray:
        with torch.inference_mode():
            return model.generate(pixel_values=pixels, input_ids=prompt, max_new_tokens=tokens, do_sample=False).numpy()

    cases = {"mm_hub_torch": torch_write,
             **{name: (lambda runtime=runtime: runtime.generate(pixels.numpy(), prompt.numpy(), max_new_tokens=tokens))
                for name, runtime in runtimes.items()}}
    written = {name: case() for name, case in cases.items()}
    times = interleaved(cases, shape["repeats"])
    seconds = medians(times)
    return {"new_tokens": tokens, "seconds": seconds,
            "tokens_per_s": {name: tokens / value for name, value in seconds.items()},
            "speedup_over_torch": {name: paired_ratio(times, "mm_hub_torch", name) for name in runtimes},
            "same_tokens_as_torch": {name: bool(np.array_equal(written[name], written["mm_hub_torch"]))
                                     for name in runtimes}}


def onnx_serving(shape: dict, work: Path) -> dict[str, Any]:
    """The three sections above, with ONNX Runtime's version."""
    import onnxruntime

    from benchmarks.speed import TEXT, _processor

    processor = _processor(shape["image_size"])
    return {"onnxruntime": onnxruntime.__version__, "threads": THREADS,
            "classifier": classifier_serving(shape, work, processor, TEXT),
            "retrieval": retrieval_serving(shape, work, processor, TEXT),
            "generation": generation_serving(shape, work, processor)}
