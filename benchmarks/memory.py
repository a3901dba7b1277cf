"""Memory of one training step with big towers: peak resident memory (VmHWM) above what the model's weights take,
i.e. activations + gradients + optimizer state: full fine-tuning, activation checkpointing, LoRA adapters (`--lora`),
and both; each case in a fresh process (a process's peak only grows).

    python -m benchmarks.memory --out benchmarks/results_memory.json   # ViT-B/16 + BERT-base shapes, 224 px, batch 16
    python -m benchmarks.memory --quick                                 # tiny towers (what the test runs)

Towers are random-init from configs of those shapes (nothing is downloaded); the classifier's concat fusion and head
on top, AdamW, two steps (the optimizer's state exists from the first): the peak is read over the second, after the
memory the first freed is handed back to the system (``malloc_trim``) and the peak reset to what is left; each case
twice, with glibc returning freed tensors to the system at once (`LIVE_MEMORY`, the headline) and with its default.
Also: the bytes an adapter save of the LoRA run writes, over the full model's (fp32) weights.
"""

from __future__ import annotations

import argparse
import ctypes
import gc
import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
SHAPES = {
    "full": {"image_size": 224, "batch": 16, "tokens": 32,
             "vit": {"hidden_size": 768, "num_hidden_layers": 12, "num_attention_heads": 12,
                     "intermediate_size": 3072, "patch_size": 16},  # ViT-B/16
             "bert": {"hidden_size": 768, "num_hidden_layers": 12, "num_attention_heads": 12,
                      "intermediate_size": 3072}},  # BERT-base
    "quick": {"image_size": 32, "batch": 4, "tokens": 8,
              "vit": {"hidden_size": 32, "num_hidden_layers": 2, "num_attention_heads": 2, "intermediate_size": 64,
                      "patch_size": 8},
              "bert": {"hidden_size": 32, "num_hidden_layers": 2, "num_attention_heads": 2, "intermediate_size": 64}},
}
# glibc hands blocks of 128 KiB and more straight back to the system when freed, so the peak resident memory follows
# the tensors alive at once (what `torch.cuda.max_memory_allocated` reports on a GPU); with its default, adaptive
# threshold freed blocks stay in its arenas and count towards the peak, more in some cases than in others. Each
# case runs both ways; the default's numbers are kept beside.
LIVE_MEMORY = {"MALLOC_MMAP_THRESHOLD_": "131072"}
CASES = {"full fine-tuning": {}, "activation checkpointing": {"checkpointing": True}, "LoRA": {"lora": True},
         "LoRA + activation checkpointing": {"lora": True, "checkpointing": True}}


def _status_mb(field: str) -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1]) / 1024
    raise RuntimeError(f"/proc/self/status has no {field}")


def one_case(shape: dict[str, Any], checkpointing: bool = False, lora: bool = False) -> dict[str, float]:
    """Run in the child process: build the model, take two steps, return the second's memory above the weights."""
    import torch
    from transformers import BertConfig, ViTConfig

    from mm_hub import MMHubConfig, MMHubForImageTextClassification

    torch.manual_seed(0)
    vocab = 30522
    config = MMHubConfig(vision_config=ViTConfig(image_size=shape["image_size"], **shape["vit"]),
                         text_config=BertConfig(vocab_size=vocab, **shape["bert"]), fusion_type="concat",
                         num_labels=2)
    model = MMHubForImageTextClassification(config).train()
    if checkpointing:
        model.activation_checkpointing_enable()
    if lora:  # rank 8 on the towers' attention projections (random towers standing in for pretrained ones)
        from mm_hub.lora import apply_lora

        model = apply_lora(model, towers=("vision", "text"))
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-5)
    batch = {"pixel_values": torch.randn(shape["batch"], 3, shape["image_size"], shape["image_size"]),
             "input_ids": torch.randint(1000, vocab, (shape["batch"], shape["tokens"])),
             "attention_mask": torch.ones(shape["batch"], shape["tokens"], dtype=torch.long),
             "labels": torch.randint(0, 2, (shape["batch"],))}
    weights_mb = _status_mb("VmRSS")

    def step() -> None:
        model(**batch).loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)

    step()
    gc.collect()
    ctypes.CDLL("libc.so.6").malloc_trim(0)  # what the first step freed goes back to the system, not into the peak
    Path("/proc/self/clear_refs").write_text("5")  # the peak, from here: the second step
    before_mb = _status_mb("VmRSS")
    step()
    from mm_hub.lora import parameter_counts

    saved = {}
    if lora:  # what an adapter save writes: the adapters and the parts that train fully
        from peft import get_peft_model_state_dict

        saved = {"adapter_bytes": sum(t.numel() * t.element_size() for t in get_peft_model_state_dict(model).values())}
    return {**saved, "parameters": parameter_counts(model)["total_parameters"],
            "trained_parameters": parameter_counts(model)["trainable_parameters"], "weights_rss_mb": weights_mb,
            "rss_before_step_mb": before_mb, "peak_mb": _status_mb("VmHWM"),
            "step_above_weights_mb": _status_mb("VmHWM") - weights_mb}


def main(argv: list[str] | None = None) -> dict:
    """Run every case in its own process; print and (with ``--out``) write the results."""
    parser = argparse.ArgumentParser(prog="python -m benchmarks.memory", description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="tiny towers")
    parser.add_argument("--out", help="write the results JSON here")
    parser.add_argument("--case", help=argparse.SUPPRESS)  # the child process: run this case, print its JSON
    args = parser.parse_args(argv)
    shape = SHAPES["quick" if args.quick else "full"]
    if args.case:
        print(json.dumps(one_case(shape, **CASES[args.case])))
        return {}
    sys.path.insert(0, str(ROOT))
    from benchmarks._run import conditions, finish

    load_before = os.getloadavg()
    cases, default = {}, {}
    for name in CASES:
        for allocator, results in ((LIVE_MEMORY, cases), ({}, default)):
            child = subprocess.run([sys.executable, "-m", "benchmarks.memory", "--case", name,
                                    *(["--quick"] if args.quick else [])], cwd=ROOT, capture_output=True, text=True,
                                   check=True, timeout=1800, env={**os.environ, **allocator})
            results[name] = json.loads(child.stdout.strip().splitlines()[-1])
        cases[name]["default_allocator_step_above_weights_mb"] = default[name]["step_above_weights_mb"]
        print(name, cases[name], flush=True)

    def ratios(field: str) -> dict[str, float]:
        return {name: case[field] / cases["full fine-tuning"][field] for name, case in cases.items()}

    adapter_share = cases["LoRA"]["adapter_bytes"] / (4 * cases["full fine-tuning"]["parameters"])  # fp32 weights
    return finish({**conditions("memory", argv, load_before), "shape": shape, "allocator": LIVE_MEMORY,
                   "cases": cases, "over_full_fine_tuning": ratios("step_above_weights_mb"),
                   "over_full_fine_tuning_default_allocator": ratios("default_allocator_step_above_weights_mb"),
                   "adapter_over_model_bytes": adapter_share}, args.out)


if __name__ == "__main__":
    main()
