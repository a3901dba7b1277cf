"""README card of a saved / pushed `MultimodalIndex` (a Hub dataset). Not a remote-code file."""

from __future__ import annotations

import json
from typing import Any


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
from mm_hub.index import MultimodalIndex
from mm_hub.recommend import recommend

index = MultimodalIndex.load("<this repo id>")   # loads the model above at the first query
index.search_text("a red circle", k=5)            # text -> images
recommend(index, 0, k=5)                          # items like row 0
```

The rows alone load with `datasets.load_dataset("<this repo id>", split="train")`.
"""
    return "\n".join(header) + "\n" + body
