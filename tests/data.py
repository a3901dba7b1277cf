"""Small local datasets and tiny-model CLI flags for the training tests (files on disk, loaded like user data)."""

from __future__ import annotations

import csv
import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import datasets
from datasets import Dataset

from mm_hub.shapes import render_scene
from tests.conftest import random_images
from training.config import read_preset

ROOT = Path(__file__).resolve().parents[1]
TINY_VISION = '{"layer_type": "basic", "depths": [1, 1], "hidden_sizes": [8, 16], "embedding_size": 8}'
TINY_TEXT = '{"hidden_size": 16, "num_hidden_layers": 1, "num_attention_heads": 2, "intermediate_size": 32}'
SCENES = [
    ([("red", "circle", "left")], "a red circle", "round", ["red", "round"], 0.1),
    ([("blue", "square", "right")], "a blue square", "angular", ["blue", "angular"], 0.9),
    ([("green", "triangle", "center")], "a green triangle", "angular", ["green", "angular"], 0.5),
    ([("red", "square", "center")], "a red square", "angular", ["red", "angular"], 0.7),
]


# Runs in a fresh interpreter where `import mm_hub` fails: everything must come from the repo's remote code.
PULL_SCRIPT = textwrap.dedent(
    """
    import json, sys
    sys.modules["mm_hub"] = None
    import torch
    from PIL import Image
    from transformers import AutoModel, AutoProcessor, pipeline
    repo, image_dir, out = sys.argv[1:4]
    texts = json.loads(sys.argv[4])
    model = AutoModel.from_pretrained(repo, trust_remote_code=True).eval()
    processor = AutoProcessor.from_pretrained(repo, trust_remote_code=True)
    images = [Image.open(f"{image_dir}/{i}.png") for i in range(len(texts))]
    with torch.no_grad():
        logits = model(**processor(images=images, text=texts, return_tensors="pt")).logits
    classifier = pipeline(model=repo, trust_remote_code=True)
    predictions = classifier([{"image": image, "text": text} for image, text in zip(images, texts)], top_k=3)
    json.dump({"logits": logits.tolist(), "model_module": type(model).__module__, "model_class": type(model).__name__,
               "processor_module": type(processor).__module__, "predictions": predictions}, open(out, "w"))
    """
)


def tiny_flags(output_dir: Path, *extra: str, text: str = "transformer") -> list[str]:
    """CLI flags for a few-step run of a tiny random model at 32 px (the real MiniLM tokenizer)."""
    flags = [
        "--vision-config", TINY_VISION, "--image-size", "32",
        "--fusion-hidden-size", "16", "--fusion-num-heads", "2", "--projection-dim", "8", "--lstm-hidden-size", "8",
        "--batch-size", "4", "--eval-batch-size", "8", "--max-steps", "2", "--eval-strategy", "no",
        "--logging-steps", "1", "--max-length", "16", "--output-dir", str(output_dir), "--seed", "0",
    ]
    if text == "transformer":
        flags += ["--text-config", TINY_TEXT]
    else:
        flags += ["--text-encoder-type", "lstm"]
    return flags + list(extra)


def readme_line_flags(args: list[str]) -> list[str]:
    """Tiny-model flags appended to a README ``training.train`` line (so they win) that keep the line's own
    --output-dir (or its preset's) and --seed; a preset on the shapes data gets 16 scenes at 32 px."""
    output = args[args.index("--output-dir") + 1] if "--output-dir" in args else preset_output_dir(args)
    flags = [*tiny_flags(Path(output)), "--eval-strategy", "epoch", "--max-eval-samples", "8", "--no-progress"]
    if "--seed" in args:
        at = flags.index("--seed")
        del flags[at : at + 2]
    preset = read_preset(args[args.index("--config") + 1]) if "--config" in args else None
    if preset is not None and preset.data.dataset == "shapes" and "--dataset" not in args:
        flags += ["--dataset-config", "num_train=16,num_eval=8,num_heldout=8,image_size=32"]
    return flags


def without_random_towers(flags: list[str]) -> list[str]:
    """``flags`` without --vision-config / --text-config: the towers come from the preset's or the line's
    --vision-model / --text-model (an adapter saved by --lora is rebuilt on them)."""
    kept, skip = [], False
    for flag in flags:
        if skip:
            skip = False
        elif flag in ("--vision-config", "--text-config"):
            skip = True
        else:
            kept.append(flag)
    return kept


def preset_output_dir(args: list[str]) -> str:
    """The output_dir a preset writes to when the line does not name one (relative: inside the test's folder)."""
    return read_preset(args[args.index("--config") + 1]).train.output_dir


def torchrun_train(*runs: list[str], port: int) -> None:
    """``torchrun --nproc_per_node 2 -m training.train ARGS`` on the CPU (one thread each); fails with its stderr.
    Several argument lists train one after the other in the same two processes (`tests.train_many`: one start-up)."""
    runs = tuple([*argv, "--torch-threads", "1"] for argv in runs)
    entry = ["-m", "training.train", *runs[0]] if len(runs) == 1 else ["-m", "tests.train_many", json.dumps(runs)]
    command = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_port", str(port),
               *entry]
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}
    result = subprocess.run(command, env=env, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]


def _rows(count: int):
    for i in range(count):
        scene, caption, category, tags, score = SCENES[i % len(SCENES)]
        yield i, render_scene(scene, image_size=32, seed=i), caption, category, tags, score


def csv_folder(root: Path, count: int = 16, name: str = "data.csv") -> Path:
    """A csv whose columns have unusual names (``Picture Path``, ``Caption Text``, ``Kind``) and relative paths."""
    root.mkdir(parents=True, exist_ok=True)
    (root / "pictures").mkdir(exist_ok=True)
    with open(root / name, "w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["Picture Path", "Caption Text", "Kind"])
        for i, image, caption, category, _, _ in _rows(count):
            image.save(root / "pictures" / f"{i}.png")
            writer.writerow([f"pictures/{i}.png", caption, category])
    return root / name


def jsonl_multilabel(root: Path, count: int = 16) -> Path:
    """A jsonl of image paths, captions and lists of string tags (multi-label)."""
    root.mkdir(parents=True, exist_ok=True)
    with open(root / "tags.jsonl", "w") as handle:
        for i, image, caption, _, tags, _ in _rows(count):
            image.save(root / f"{i}.png")
            handle.write(json.dumps({"image": f"{i}.png", "text": caption, "tags": tags}) + "\n")
    return root / "tags.jsonl"


def disk_dataset(root: Path, count: int = 16, corrupt: tuple[int, ...] = (), empty_text: tuple[int, ...] = ()) -> Path:
    """A ``save_to_disk`` DatasetDict (train + validation) with Image features and a float ``score`` column;
    rows in ``corrupt`` hold truncated / garbage image bytes, rows in ``empty_text`` an empty caption."""
    import io

    rows = {"image": [], "text": [], "score": [], "category": []}
    for i, image, caption, category, _, score in _rows(count):
        buffer = io.BytesIO()
        image.save(buffer, format="PNG")
        data = buffer.getvalue()
        if i in corrupt:
            data = data[: len(data) // 2] if i % 2 else b"not an image at all"
        rows["image"].append({"bytes": data, "path": None})
        rows["text"].append("" if i in empty_text else caption)
        rows["score"].append(score)
        rows["category"].append(category)
    features = datasets.Features(
        image=datasets.Image(), text=datasets.Value("string"), score=datasets.Value("float32"),
        category=datasets.ClassLabel(names=["angular", "round"]),
    )
    full = datasets.Dataset.from_dict(rows, features=features)
    split = datasets.DatasetDict(train=full, validation=full.select(range(min(8, count))))
    split.save_to_disk(str(root))
    return root


CATEGORIES = ("shoes", "hats", "bags")


def catalogue(num_rows: int = 12) -> Dataset:
    """Rows with ``image``, ``text``, ``category`` and ``price`` columns."""
    colours = ("red", "green", "blue", "yellow")
    return Dataset.from_dict(
        {
            "image": random_images(num_rows),
            "text": [f"a {colours[i % 4]} item number {i}" for i in range(num_rows)],
            "category": [CATEGORIES[i % 3] for i in range(num_rows)],
            "price": [float(10 + i) for i in range(num_rows)],
        }
    )
