"""``--cache-frozen-features``: training on stored outputs of frozen encoders gives the model of the plain run."""

from __future__ import annotations

import json
import logging
import re

import pytest
import torch
from safetensors.torch import load_file

from tests.data import disk_dataset, tiny_flags
from training.train import main

pytestmark = pytest.mark.slow  # see pyproject.toml: `pytest -m 'not slow'` leaves these out

FROZEN = ["--freeze-vision-encoder", "--freeze-text-encoder", "--no-augment", "--max-steps", "6", "--dropout", "0.3",
          "--eval-batch-size", "5", "--label-column", "category"]


def _train(data, out, *flags, text="lstm"):
    return main(["--dataset", str(data), *tiny_flags(out, *FROZEN, *flags, text=text)])


@pytest.mark.parametrize("text", ["lstm", "transformer"])
def test_cached_frozen_features_train_the_same_model(tmp_path, caplog, text):
    data = disk_dataset(tmp_path / "data", count=24)
    plain = _train(data, tmp_path / "plain", text=text)
    assert "Encoded" not in caplog.text
    caplog.set_level(logging.INFO, logger="training.encoded")
    cached = _train(data, tmp_path / "cached", "--cache-frozen-features", text=text)
    assert re.search(r"Encoded 24 training rows with the frozen encoders in [\d.]+ s", caplog.text)
    assert cached == plain  # the same batches, dropout masks and encoder outputs, so the same metrics
    weights = [load_file(str(tmp_path / run / "model.safetensors")) for run in ("plain", "cached")]
    assert weights[0].keys() == weights[1].keys()
    for name, value in weights[0].items():
        torch.testing.assert_close(weights[1][name], value, msg=name)


def test_cached_frozen_features_skip_and_count_bad_rows_once(tmp_path):
    data = disk_dataset(tmp_path / "data", count=24, corrupt=(3, 6), empty_text=(9,))
    _train(data, tmp_path / "plain")
    _train(data, tmp_path / "cached", "--cache-frozen-features")
    skipped = [json.loads((tmp_path / run / "training_info.json").read_text())["skipped_rows"]
               for run in ("plain", "cached")]
    assert skipped[1] == skipped[0] and skipped[1]["train"] == {"unreadable image": 2, "empty text": 1}


def test_cached_frozen_features_need_frozen_encoders_and_unchanging_rows(tmp_path):
    with pytest.raises(ValueError, match="it needs --freeze-vision-encoder, --no-augment, --word-dropout 0"):
        main(["--dataset", "x", "--cache-frozen-features", "--freeze-text-encoder", "--word-dropout", "0.1"])
    with pytest.raises(ValueError, match="it needs --task classification, --hpo-trials 0"):
        main(["--dataset", "x", "--cache-frozen-features", "--freeze-vision-encoder", "--freeze-text-encoder",
              "--no-augment", "--task", "retrieval", "--hpo-trials", "2"])


def test_fused_and_for_each_adamw_train_the_same_model(tmp_path):
    # The fused kernel (the default) and the for-each AdamW are one algorithm: the same weights up to rounding
    # (where a gradient is ~0, Adam scales its rounding up: 1.5e-5 at most here).
    from training.config import resolve_config
    from training.train import Recipe

    data = disk_dataset(tmp_path / "data", count=24)
    flags = ["--no-augment", "--max-steps", "4", "--label-column", "category", "--learning-rate", "0.01"]
    for optim in ("adamw_torch_fused", "adamw_torch"):
        main(["--dataset", str(data), *tiny_flags(tmp_path / optim, *flags, "--optim", optim)])
        config = resolve_config(["--dataset", str(data), *tiny_flags(tmp_path / "x", *flags, "--optim", optim)])
        trainer = Recipe(config).trainer(str(tmp_path / "x"))
        assert trainer.create_optimizer().param_groups[0]["fused"] is (optim == "adamw_torch_fused" or None)
    fused, for_each = (load_file(str(tmp_path / optim / "model.safetensors")) for optim in ("adamw_torch_fused",
                                                                                             "adamw_torch"))
    assert fused.keys() == for_each.keys()
    for name, value in fused.items():
        torch.testing.assert_close(for_each[name], value, rtol=1e-4, atol=1e-4, msg=name)  # steps move ~4e-2
    assert json.loads((tmp_path / "adamw_torch" / "training_info.json").read_text())["hyperparameters"]["optim"] == (
        "adamw_torch")
