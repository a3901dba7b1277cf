"""Activation (gradient) checkpointing (``model.activation_checkpointing_enable()``; ``--activation-checkpointing``,
or its older name ``--gradient-checkpointing``, in training): layers run again in the backward pass, with the same
loss and gradients as without it, for every head, fusion block, decoder layer and tower kind."""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys

import pytest
import torch

from tests.conftest import random_images, tiny_model, tiny_processor
from tests.data import ROOT, tiny_flags
from training.train import main as train_main


def loss_and_gradients(model: torch.nn.Module, batch: dict) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    model.train()
    torch.manual_seed(0)  # the same dropout masks on both sides
    loss = model(**batch).loss
    loss.backward()
    gradients = {name: p.grad.clone() for name, p in model.named_parameters() if p.grad is not None}
    model.zero_grad(set_to_none=True)
    return loss.detach(), gradients


@pytest.mark.parametrize("head, fusion, text_encoder_type", [
    ("classification", "attention", "transformer"), ("classification", "sequence", "lstm"),
    ("retrieval", "concat", "lstm"), ("generation", "sequence", "transformer"),
])
def test_checkpointing_gives_the_same_loss_and_gradients(head, fusion, text_encoder_type):
    model = tiny_model(head, fusion, text_encoder_type, dropout=0.0)
    processor = tiny_processor()
    images, texts = random_images(3), ["a red circle", "two blue squares on the left", "x"]
    if head == "generation":
        batch = dict(processor(images=images, text=texts, text_target=["red", "blue", "none"], return_tensors="pt"))
    else:
        batch = dict(processor(images=images, text=texts, return_tensors="pt"))
        batch.update({"labels": torch.tensor([0, 1, 2])} if head == "classification" else {"return_loss": True})
    expected_loss, expected = loss_and_gradients(model, batch)
    model.activation_checkpointing_enable()
    # fusion blocks, decoder layers, BERT's layers, the ResNet and BiLSTM towers: each runs as a checkpointed segment
    calls = {kind: 0 for kind in ("FusionBlock", "MMHubDecoderLayer", "BertLayer", "MMHubVisionEncoder",
                                  "MMHubLSTMTextEncoder")}

    def counted(kind, checkpoint):
        def run(*args, **kwargs):
            calls[kind] += 1
            return checkpoint(*args, **kwargs)
        return run

    for module in model.modules():
        if type(module).__name__ in calls and getattr(module, "gradient_checkpointing", False):
            module._gradient_checkpointing_func = counted(type(module).__name__, module._gradient_checkpointing_func)
    loss, gradients = loss_and_gradients(model, batch)
    once = {"FusionBlock": model.config.fusion_num_layers * (2 if fusion == "attention" else 1),
            "MMHubDecoderLayer": model.config.decoder_num_layers if head == "generation" else 0,
            "BertLayer": 1 if text_encoder_type == "transformer" else 0, "MMHubVisionEncoder": 1,
            "MMHubLSTMTextEncoder": 1 if text_encoder_type == "lstm" else 0}
    if fusion == "concat":
        once["FusionBlock"] = 0
    assert calls == once, calls
    torch.testing.assert_close(loss, expected_loss, rtol=0, atol=1e-6)
    assert gradients.keys() == expected.keys()
    for name, gradient in gradients.items():
        torch.testing.assert_close(gradient, expected[name], rtol=1e-5, atol=1e-6, msg=name)


def test_checkpointing_and_mixed_precision_flags_reach_the_trainer(tmp_path):
    metrics = train_main(["--dataset", "shapes", "--dataset-config", "num_train=16,num_eval=8,num_heldout=0,image_size=32",
                          "--activation-checkpointing", "--bf16", *tiny_flags(tmp_path / "out")])
    assert math.isfinite(metrics["eval_loss"])
    info = json.loads((tmp_path / "out" / "training_info.json").read_text())
    assert info["hyperparameters"]["bf16"] is True  # bf16 autocast on this CPU (AMX), recorded with the model


@pytest.mark.slow
def test_fsdp_on_cpus_says_it_trains_with_ddp(tmp_path):
    command = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_port", "29617",
               "-m", "training.train", "--dataset", "shapes",
               "--dataset-config", "num_train=16,num_eval=8,num_heldout=0,image_size=32",
               *tiny_flags(tmp_path / "out", text="lstm"), "--torch-threads", "1",
               "--fsdp", "full_shard", "--fsdp-config", '{"version": 2}']
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}
    result = subprocess.run(command, env=env, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "it trains with DistributedDataParallel instead" in result.stderr
    assert (tmp_path / "out" / "model.safetensors").is_file()
