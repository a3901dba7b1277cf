"""Training steps through `training.train` (reading, decoding and augmenting rows, collation, the `Trainer`'s loop)
against the same steps on one pre-made batch of tensors: what the input pipeline and the loop cost on top of the
model's own work. Part of ``python -m benchmarks.speed``.

The data are real images (the MNIST digits of `benchmarks.digit_questions`, resized to ``train_image_size``), the
recipe is ``training/configs/classification.yaml`` (augmentation on, batch 32, label smoothing, gradient clipping)
with random-init towers of the benchmark's shapes, as nothing can be downloaded here.
"""

from __future__ import annotations

import statistics
import time
from pathlib import Path
from typing import Any

import torch
from transformers import TrainerCallback


class StepEnds(TrainerCallback):
    """Records the time at the end of every optimizer step."""

    def __init__(self) -> None:
        self.ends: list[float] = []

    def on_step_end(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        self.ends.append(time.perf_counter())


def _config(shape: dict, work: Path) -> Any:
    """The classification preset on the digit questions, with the benchmark's towers and ``train_steps`` steps."""
    from benchmarks.digit_questions import make_digit_questions
    from training.config import read_preset

    rows = shape["batch"] * max(shape["train_steps"] + 1, 3)
    data = make_digit_questions(work / "digits", {"train": (rows, 1), "eval": (8, 1)})
    return read_preset("classification").replace(
        dataset=str(data), eval_split="eval", vision_config=shape["resnet"], text_config=shape.get("train_bert"),
        image_size=shape["train_image_size"], batch_size=shape["batch"], max_steps=shape["train_steps"],
        eval_strategy="no", early_stopping_patience=None, progress=False, logging_steps=10_000,
        save_total_limit=1, output_dir=str(work / "run"),
    )


def _premade_steps(config: Any, steps: int) -> tuple[list[float], float]:
    """Seconds of each of ``steps`` steps (after one warm-up) on one batch collated once, with the trainer's own loss,
    optimizer and gradient clipping; and the median seconds reading and collating a batch took (of three)."""
    from training.train import Recipe

    recipe = Recipe(config)
    trainer = recipe.trainer(config.train.output_dir)
    size, collate_times = config.train.per_device_train_batch_size, []
    for first in range(0, 3 * size, size):  # three batches: the first read also warms the dataset up
        started = time.perf_counter()
        batch = recipe.train_collator([recipe.train[i] for i in range(first, first + size)])
        collate_times.append(time.perf_counter() - started)
    model = trainer.model.train()
    optimizer = trainer.create_optimizer()
    times = []
    for _ in range(steps + 1):
        started = time.perf_counter()
        loss = trainer.compute_loss(model, dict(batch))  # a copy: the loss pops the labels off its inputs
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), trainer.args.max_grad_norm)
        optimizer.step()
        optimizer.zero_grad()
        times.append(time.perf_counter() - started)
    return times[1:], statistics.median(collate_times)


def loop_steps(config: Any) -> list[float]:
    """Seconds between the ends of consecutive optimizer steps of `training.train.run_training` on ``config``."""
    from training.hooks import TRAINER_HOOKS
    from training.train import run_training

    ends = StepEnds()

    def record(recipe: Any, trainer: Any) -> None:
        trainer.add_callback(ends)

    TRAINER_HOOKS.append(record)
    try:
        run_training(config)
    finally:
        TRAINER_HOOKS.remove(record)
    return [b - a for a, b in zip(ends.ends, ends.ends[1:])]  # the first step (warm-up) has no start here


def training_loop_speed(shape: dict, work: Path) -> dict[str, Any]:
    """Median step seconds through `training.train.run_training` (its default fused AdamW, then the for-each one:
    ``--optim adamw_torch``) and on pre-made tensors (measured before and after, pooled), their ratio (pre-made /
    through the loop: 1.0 means the input pipeline and loop cost nothing), and the seconds one batch's reading,
    decoding, augmentation and collation take on their own."""
    config = _config(shape, work)
    premade, collate_s = _premade_steps(config, shape["train_steps"])
    fused = loop_steps(config.replace(output_dir=str(work / "run-fused")))
    for_each = loop_steps(config.replace(output_dir=str(work / "run-for-each"), optim="adamw_torch"))
    after, _ = _premade_steps(config.replace(output_dir=str(work / "run-after")), shape["train_steps"])
    premade_s, loop_s = statistics.median(premade + after), statistics.median(fused)
    return {"image_size": shape["train_image_size"], "steps": shape["train_steps"], "loop_step_s": loop_s,
            "loop_step_s_for_each_adamw": statistics.median(for_each), "premade_step_s": premade_s,
            "premade_over_loop": premade_s / loop_s, "collate_batch_s": collate_s}
