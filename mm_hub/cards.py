"""Model cards for saved mm_hub models: Hub YAML metadata plus prose, built from what the folder holds.

Reads `config.json` (architecture, fusion, encoders, labels), the safetensors weights (parameter count) and, when
training wrote them, `training_info.json` and `eval_results.json`; and the card of a saved or pushed search index
(`index_card`), a Hub dataset.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from huggingface_hub import EvalResult, ModelCard, ModelCardData

from ._files import read_regular
from .model.fusion_mm_hub import FUSION_REGISTRY
from .tasks import Task, task_of
from .paths import MINILM_HUB_ID, minilm_path

# Trainer bookkeeping that is not a quality metric.
NON_METRICS = {"epoch", "runtime", "samples_per_second", "steps_per_second", "total_flos"}
_HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]*/[\w.-]+$")


def _read_json(path: Path) -> dict[str, Any] | None:
    """A JSON file of the model folder; None when it is missing or not a regular file (a link, which a push never
    uploads, so the card must not show what it points to)."""
    try:
        data = read_regular(path)
    except ValueError:
        return None
    return None if data is None else json.loads(data)


def fusion_description(fusion_type: str) -> str:
    """What a fusion does, in its class's words (`Fusion.description`)."""
    fusion = FUSION_REGISTRY.get(fusion_type)
    return fusion.description if fusion is not None else "a custom fusion"


def hub_id(reference: str | None) -> str | None:
    """The Hub id behind a base model / dataset reference (the packaged MiniLM folder: its Hub id), or None for
    local-only ones."""
    if not reference:
        return None
    if Path(reference).resolve() == Path(minilm_path()).resolve():
        return MINILM_HUB_ID
    if Path(reference).exists() or not _HUB_ID.match(reference):
        return None
    return reference


def count_parameters(folder: Path) -> int | None:
    """Number of parameters stored in the folder's safetensors file(s), read from their headers only."""
    from safetensors import safe_open

    files = sorted(file for file in folder.glob("*.safetensors") if file.is_file() and not file.is_symlink())
    if not files:
        return None
    total = 0
    for file in files:
        with safe_open(str(file), framework="pt") as handle:
            total += sum(math.prod(handle.get_slice(name).get_shape()) for name in handle.keys())
    return total


def split_metrics(eval_results: dict[str, Any] | None, eval_split: str = "eval") -> dict[str, dict[str, float]]:
    """Evaluation results by split: split -> metric name -> value, without the Trainer's runtime bookkeeping.

    ``eval_<metric>`` keys belong to `eval_split`; ``<split>_<metric>`` keys, where the eval split reports the same
    metric, to the extra evaluation split ``<split>`` (how training reports e.g. ``heldout_accuracy``).
    """
    numeric = {k: float(v) for k, v in (eval_results or {}).items()
               if isinstance(v, (int, float)) and not isinstance(v, bool)}
    main_names = sorted((k[len("eval_"):] for k in numeric if k.startswith("eval_")), key=len, reverse=True)
    splits: dict[str, dict[str, float]] = {}
    for key, value in numeric.items():
        if key.startswith("eval_"):
            split, name = eval_split, key[len("eval_"):]
        else:
            name = next((m for m in main_names if key.endswith(f"_{m}") and len(key) > len(m) + 1), None)
            split, name = (key[: -len(name) - 1], name) if name else (eval_split, key)
        if name not in NON_METRICS:
            splits.setdefault(split, {})[name] = value
    return splits


FRACTIONS = ("accuracy", "f1", "recall", "precision", "exact_match")  # shown as percentages


def headline(eval_results: dict[str, Any] | None, metrics: Sequence[str], eval_split: str = "eval") -> str | None:
    """How good the model is, in one line, from its ``eval_results.json``: ``metrics`` (its task's
    `mm_hub.tasks.Scoring.metrics`) on each split, e.g. ``accuracy 99.75 % (eval), 98.25 % (heldout)``; None when
    none was measured."""
    measured = split_metrics(eval_results, eval_split)
    parts = []
    for name in metrics:
        values = [(split, m[name]) for split, m in measured.items() if name in m]
        if values:
            fraction = any(word in name for word in FRACTIONS)
            shown = [f"{100 * v:.2f} %" if fraction else f"{v:.3f}" for _, v in values]
            parts.append(f"{name.replace('_', ' ')} " + ", ".join(f"{text} ({split})" for text, (split, _) in
                                                                 zip(shown, values)))
    return " · ".join(parts) or None


def _metrics_table(metrics: dict[str, dict[str, float]]) -> list[str]:
    names = list(dict.fromkeys(name for split in metrics.values() for name in split))
    rows = [f"| {name} | " + " | ".join(f"{m[name]:.4f}" if name in m else "-" for m in metrics.values()) + " |"
            for name in names]
    return [f"| Metric | {' | '.join(metrics)} |", "|---|" + "---|" * len(metrics)] + rows


def _encoders(config: dict[str, Any]) -> tuple[str, str]:
    vision = config.get("vision_config") or {}
    vision_text = f"{vision.get('model_type', 'resnet')} (hidden sizes {vision.get('hidden_sizes', '?')})"
    if config.get("text_encoder_type") == "lstm":
        text_text = (
            f"{config.get('lstm_num_layers', 2)}-layer bidirectional LSTM (hidden {config.get('lstm_hidden_size')})"
            f" over a {config.get('vocab_size')}-token vocabulary"
        )
    else:
        text = config.get("text_config") or {}
        text_text = (
            f"{text.get('model_type', 'bert')} transformer ({text.get('num_hidden_layers')} layers,"
            f" hidden size {text.get('hidden_size')})"
        )
    return vision_text, text_text


def _usage(repo_id: str, task: Task | None) -> str:
    load = f"""Without mm_hub installed, `trust_remote_code=True` loads the model code stored in this repo:

```python
from transformers import AutoModel, AutoProcessor

model = AutoModel.from_pretrained("{repo_id}", trust_remote_code=True)
processor = AutoProcessor.from_pretrained("{repo_id}", trust_remote_code=True)
```

With mm_hub installed, leave `trust_remote_code` out: `import mm_hub` registers its classes, and no code from the
repo runs (`AutoModel.from_pretrained("{repo_id}")`).
"""
    return load + (task.usage.format(repo_id=repo_id, pipeline_task=task.pipeline_task) if task else "")


ADAPTER_USAGE = """## LoRA adapters

This repo holds LoRA adapters and the parts that trained fully (`adapter_model.safetensors`), not the full weights.
Loading it (either way above; peft must be installed) rebuilds the base from the pretrained towers its config.json
names, {towers}, downloaded by id and checked against the SHA-256 of the weights the adapters were trained on, then
merges the adapters in. Train with `--merge-lora` to push the merged model instead.
"""

ONNX_USAGE = """## Without torch: the ONNX export

`onnx/` holds this model's ONNX graphs ({graphs}; {quantized}), its processor files and `ort_mm_hub.py`, a small
runtime that needs only `onnxruntime`, `transformers` (the tokenizer and the PIL image processor) and Pillow:

```python
from huggingface_hub import snapshot_download
import sys

folder = snapshot_download("{repo_id}", allow_patterns=["onnx/*"]) + "/onnx"
sys.path.insert(0, folder)
from ort_mm_hub import load

model, processor = load(folder)   # the int8 graphs where there are some
inputs = processor(images=[image], text=["a red circle on the left"])
```

then `model(**inputs)` (a classifier's `logits`, a retrieval model's embeddings) or `model.generate(**inputs)` (a
generator). The mm_hub app serves it with `python app.py --model {repo_id} --runtime onnx`.
"""


def onnx_usage(repo_id: str, onnx_config: dict[str, Any]) -> str:
    """The card's section on the ONNX export pushed beside the model (``onnx_config.json`` of it)."""
    graphs = onnx_config.get("graphs", {})
    int8 = [name for name, graph in graphs.items() if graph.get("int8_file")]
    quantized = f"int8 versions of {', '.join(f'`{name}`' for name in int8)}" if int8 else "fp32 only"
    return ONNX_USAGE.format(repo_id=repo_id, graphs=", ".join(f"`{graph['file']}`" for graph in graphs.values()),
                             quantized=quantized)


def build_model_card(folder: str | Path, repo_id: str, license: str = "apache-2.0",
                     onnx_config: dict[str, Any] | None = None) -> ModelCard:
    """Build the Hub model card of the mm_hub model saved in `folder`, to be pushed as `repo_id` (with
    ``onnx_config``, the ``onnx_config.json`` of an export pushed beside it, a section on running that).

    Raises ValueError when the folder holds no mm_hub `config.json`.
    """
    folder = Path(folder)
    config = _read_json(folder / "config.json")
    if config is None or config.get("model_type") != "mm_hub":
        found = "no config.json" if config is None else f"model_type {config.get('model_type')!r}"
        raise ValueError(f"{folder} is not a saved mm_hub model folder ({found}); expected model_type 'mm_hub'.")
    architecture = (config.get("architectures") or ["MMHubModel"])[0]
    training = _read_json(folder / "training_info.json") or {}
    metrics = split_metrics(_read_json(folder / "eval_results.json") or training.get("metrics"),
                            training.get("eval_split") or "eval")
    fusion = config.get("fusion_type", "concat")
    declared = task_of([architecture])
    task = declared.pipeline_task if declared else "feature-extraction"
    pipeline_tag = declared.hub_tag if declared else "feature-extraction"
    dataset = training.get("dataset")
    dataset_id = hub_id(dataset)
    base_models = [b for b in dict.fromkeys(hub_id(m) for m in training.get("base_models") or []) if b]

    eval_results = None
    if metrics and dataset:
        eval_results = [
            EvalResult(task_type=pipeline_tag, task_name=task, dataset_type=dataset_id or dataset,
                       dataset_name=dataset, dataset_config=training.get("dataset_config"),
                       dataset_split=split, metric_type=name, metric_value=value)
            for split, values in metrics.items() for name, value in values.items() if name != "loss"
        ] or None
    card_data = ModelCardData(
        library_name="transformers", pipeline_tag=pipeline_tag, license=license,
        tags=["mm_hub", task, "multimodal", f"fusion-{fusion}", f"text-encoder-{config.get('text_encoder_type')}"],
        datasets=[dataset_id] if dataset_id else None, base_model=base_models or None,
        model_name=repo_id.split("/")[-1], eval_results=eval_results,
    )
    body = _body(folder, repo_id, config, architecture, declared, training, metrics)
    if onnx_config is not None:
        body = body.replace("## Limitations", onnx_usage(repo_id, onnx_config) + "\n## Limitations", 1)
    return ModelCard(f"---\n{card_data.to_yaml()}\n---\n\n{body}")


def _body(folder: Path, repo_id: str, config: dict, architecture: str, task: Task | None, training: dict,
          metrics: dict) -> str:
    fusion = config.get("fusion_type", "concat")
    vision, text = _encoders(config)
    params = count_parameters(folder)
    intro = task.describe(config) if task else "An mm_hub image + text model:"
    lines = [
        f"# {repo_id.split('/')[-1]}",
        "",
        f"{intro} a {vision} image encoder and"
        f" a {text} text encoder joined by **`{fusion}` fusion** ({fusion_description(fusion)}).",
        "",
        "## Model details",
        "",
        "| | |",
        "|---|---|",
        f"| Architecture | `{architecture}` |",
        f"| Fusion | `{fusion}` (hidden size {config.get('fusion_hidden_size')}) |",
        f"| Image encoder | {vision} |",
        f"| Text encoder | {text} |",
    ]
    adapter = (folder / "adapter_config.json").is_file()
    if params is not None:
        lines.append(f"| {'Parameters in the adapter file' if adapter else 'Parameters'} | {params:,} |")
    lines += task.details(config) if task else []
    lines += ["", "## Training", ""]
    if training:
        config_name = f" (config `{training['dataset_config']}`)" if training.get("dataset_config") else ""
        # Hub ids as they are, local folders by name only, anything else (e.g. "random init: ...") verbatim.
        bases = [hub_id(str(m)) or (Path(m).name if Path(m).exists() else str(m))
                 for m in training.get("base_models") or []]
        lines.append(
            f"Fine-tuned on `{training.get('dataset')}`{config_name}, split `{training.get('train_split')}`"
            f" ({training.get('num_train_examples', '?')} examples) in {training.get('train_runtime_s', 0):.0f} s;"
            f" evaluated on split `{training.get('eval_split')}`. Base models:"
            f" {', '.join(f'`{name}`' for name in bases) or 'none recorded'}."
        )
        if all(isinstance(training.get(key), int) for key in ("trainable_parameters", "total_parameters")):
            lora = training.get("lora") if isinstance(training.get("lora"), dict) else None
            lines.append(
                f"{training['trainable_parameters']:,} of {training['total_parameters']:,} parameters trained"
                + (f", as LoRA adapters (rank {lora.get('r')}, alpha {lora.get('alpha')}) on the towers, with "
                   "projections, fusion and head training fully"
                   + ("; the adapters are merged into these weights." if lora.get("merged") else ".")
                   if lora else ".")
            )
        hyper = training.get("hyperparameters") or {}
        if hyper:
            lines += ["", "| Hyper-parameter | Value |", "|---|---|"]
            lines += [f"| {key} | {value} |" for key, value in hyper.items()]
    else:
        lines.append("No `training_info.json` was saved with this model, so its training data is not recorded.")
    lines += ["", "## Evaluation", ""]
    if metrics:
        lines += ["Metrics per evaluation split:", ""] + _metrics_table(metrics)
    else:
        lines.append("No evaluation results were saved with this model.")
    lines += ["", "## How to use", "", _usage(repo_id, task)]
    if adapter:
        lines += [ADAPTER_USAGE.format(towers=", ".join(
            f"`{hub_id(str(record.get('name_or_path')))}` ({side})"
            for side, record in (config.get("pretrained_towers") or {}).items() if isinstance(record, dict))
            or "none recorded")]
    lines += [
        "## Limitations",
        "",
        "- Scores are only as good as the training data above: the model has not been evaluated outside it, and"
        " small or synthetic datasets (such as mm_hub's shapes data) do not transfer to natural photos.",
        "- The text side inherits the tokenizer's language (English, lower-cased for MiniLM) and its maximum length;"
        " longer captions are truncated.",
        "- Images are resized and center-cropped by the saved image processor: small details can be lost.",
        "- Loading without mm_hub executes the Python code stored in this repo (`trust_remote_code=True`): pin a"
        " `revision` you have reviewed.",
        "",
        "_Card generated by `mm_hub.cards`._",
        "",
    ]
    return "\n".join(lines)


def index_card(metadata: dict, features: Any) -> str:
    """Markdown card with a YAML header (`configs` pointing `load_dataset` at the parquet shards).

    Args:
        metadata: the index metadata (``mm_hub_index.json``).
        features: the `datasets.Features` of the non-embedding columns.
    """
    model = metadata["model"]
    params = {key: value for key, value in metadata["index_params"].items() if key != "index_type"}
    source = f"`{metadata['dataset']}`" if metadata.get("dataset") else "a local dataset"
    header = [
        "---",
        "tags:",
        "- mm_hub",
        "- faiss",
        "- image-text-retrieval",
        "configs:",
        "- config_name: default",
        "  data_files:",
        "  - split: train",
        "    path: data/*.parquet",
        "---",
    ]
    body = f"""
# mm_hub multimodal index

{metadata["num_rows"]} rows of {source} embedded with the retrieval model `{model["model_id"]}`
(revision `{model["revision"]}`, {model["embedding_dim"]}-d embeddings, config hash `{model["config_hash"]}`).

| | |
|---|---|
| embedding columns | {", ".join(f"`{c}`" for c in metadata["embedding_columns"])} |
| image / text column | `{metadata["image_column"]}` / `{metadata["text_column"]}` |
| FAISS index | `{metadata["index_type"]}` {json.dumps(params)} (inner product on unit vectors = cosine) |
| other columns | {", ".join(f"`{name}`" for name in features)} |

`item_embeds` = normalize(image_embeds + text_embeds): an item's score is proportional to the mean of its image's
and its text's cosine similarity with the query.

```python
from mm_hub.search import MultimodalIndex
from mm_hub.recommend import recommend

index = MultimodalIndex.load("<this repo id>")   # loads the model above at the first query
index.search_text("a red circle", k=5)            # text -> images
recommend(index, 0, k=5)                          # items like row 0
```

The rows alone load with `datasets.load_dataset("<this repo id>", split="train")`.
"""
    return "\n".join(header) + "\n" + body
