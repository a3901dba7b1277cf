"""Evaluation metrics of mm_hub tasks: classification, multi-label, regression, image-text retrieval and generation.

Plain functions returning flat ``{name: float}`` dicts, the format of ``eval_results.json``. Caption metrics come
from the COCO caption evaluation code (`pycocoevalcap`), not re-implemented here.
"""

from __future__ import annotations

import re
from collections.abc import Sequence

import numpy as np

RECALL_KS = (1, 5, 10)


def _softmax(logits: np.ndarray) -> np.ndarray:
    shifted = logits - logits.max(axis=-1, keepdims=True)
    exp = np.exp(shifted)
    return exp / exp.sum(axis=-1, keepdims=True)


def classification_metrics(logits: np.ndarray, labels: np.ndarray) -> dict[str, float]:
    """Single-label metrics: ``accuracy``, ``macro_f1`` and, for two classes, ``auroc`` (from softmax scores).

    Args:
        logits: (N, num_labels) scores.
        labels: (N,) class ids.
    """
    from sklearn.metrics import f1_score, roc_auc_score

    logits, labels = np.asarray(logits, dtype=np.float64), np.asarray(labels).reshape(-1)
    if logits.ndim != 2 or logits.shape[0] != labels.shape[0]:
        raise ValueError(f"Expected logits (N, num_labels) and labels (N,), got {logits.shape} and {labels.shape}.")
    predictions = logits.argmax(axis=-1)
    metrics = {
        "accuracy": float((predictions == labels).mean()),
        "macro_f1": float(f1_score(labels, predictions, average="macro", labels=np.arange(logits.shape[1]), zero_division=0)),
    }
    if logits.shape[1] == 2 and len(np.unique(labels)) == 2:  # AUROC is undefined with one class present
        metrics["auroc"] = float(roc_auc_score(labels, _softmax(logits)[:, 1]))
    return metrics


def multilabel_metrics(logits: np.ndarray, labels: np.ndarray, threshold: float = 0.5) -> dict[str, float]:
    """Multi-label metrics at a sigmoid ``threshold``: ``micro_f1``, ``macro_f1`` and ``subset_accuracy``.

    Args:
        logits: (N, num_labels) scores; labels: (N, num_labels) 0/1.
    """
    from sklearn.metrics import f1_score

    logits, labels = np.asarray(logits, dtype=np.float64), np.asarray(labels).astype(int)
    if logits.shape != labels.shape or logits.ndim != 2:
        raise ValueError(f"Expected logits and labels of the same (N, num_labels) shape, got {logits.shape} and {labels.shape}.")
    predictions = (1.0 / (1.0 + np.exp(-logits)) >= threshold).astype(int)
    return {
        "micro_f1": float(f1_score(labels, predictions, average="micro", zero_division=0)),
        "macro_f1": float(f1_score(labels, predictions, average="macro", zero_division=0)),
        "subset_accuracy": float((predictions == labels).all(axis=1).mean()),
    }


def regression_metrics(predictions: np.ndarray, targets: np.ndarray) -> dict[str, float]:
    """``mse`` and ``mae`` of predictions against targets of the same number of values."""
    predictions = np.asarray(predictions, dtype=np.float64).reshape(-1)
    targets = np.asarray(targets, dtype=np.float64).reshape(-1)
    if predictions.shape != targets.shape:
        raise ValueError(f"Got {predictions.size} predictions for {targets.size} targets.")
    error = predictions - targets
    return {"mse": float((error**2).mean()), "mae": float(np.abs(error).mean())}


def retrieval_metrics(
    image_embeds: np.ndarray, text_embeds: np.ndarray, text_to_image: Sequence[int], ks: Sequence[int] = RECALL_KS
) -> dict[str, float]:
    """Recall@K both ways and mean/median rank, for images with any number of captions.

    Scores are dot products (cosine similarities for unit-length embeddings). Text -> image: each caption has one
    correct image, its rank is 1 + the number of images scored strictly higher. Image -> text: an image's rank is
    that of its best-ranked caption (the COCO / Flickr30k convention), so an image with several captions is found
    when any of them is.

    Args:
        image_embeds: (num_images, D).
        text_embeds: (num_texts, D).
        text_to_image: for each text, the row of its image in ``image_embeds``.
        ks: the K of recall@K.

    Returns:
        ``text_to_image_recall@K``, ``image_to_text_recall@K`` for each K (fractions), ``text_to_image_mean_rank``,
        ``text_to_image_median_rank``, ``image_to_text_mean_rank``, ``image_to_text_median_rank`` (1 is best).
    """
    images = np.asarray(image_embeds, dtype=np.float64)
    texts = np.asarray(text_embeds, dtype=np.float64)
    owner = np.asarray(text_to_image, dtype=np.int64)
    if images.ndim != 2 or texts.ndim != 2 or images.shape[1] != texts.shape[1]:
        raise ValueError(f"Expected image (I, D) and text (T, D) embeddings, got {images.shape} and {texts.shape}.")
    if owner.shape != (texts.shape[0],):
        raise ValueError(f"text_to_image needs one image row per text: {texts.shape[0]} texts, got {owner.shape}.")
    if owner.size and (owner.min() < 0 or owner.max() >= images.shape[0]):
        raise ValueError(f"text_to_image holds rows outside 0..{images.shape[0] - 1}.")
    if len(np.unique(owner)) != images.shape[0]:
        raise ValueError("Every image needs at least one caption in text_to_image.")
    scores = texts @ images.T  # (T, I)
    correct = scores[np.arange(len(owner)), owner]  # (T,)
    text_ranks = 1 + (scores > correct[:, None]).sum(axis=1)  # (T,)
    # Rank of each caption among all texts for its own image; an image's rank is its best caption's.
    per_image_scores = scores.T  # (I, T)
    caption_ranks = 1 + (per_image_scores[owner, :] > correct[:, None]).sum(axis=1)  # (T,)
    image_ranks = np.full(images.shape[0], np.iinfo(np.int64).max)
    np.minimum.at(image_ranks, owner, caption_ranks)
    metrics: dict[str, float] = {}
    for k in ks:
        metrics[f"text_to_image_recall@{k}"] = float((text_ranks <= k).mean())
        metrics[f"image_to_text_recall@{k}"] = float((image_ranks <= k).mean())
    for direction, ranks in (("text_to_image", text_ranks), ("image_to_text", image_ranks)):
        metrics[f"{direction}_mean_rank"] = float(ranks.mean())
        metrics[f"{direction}_median_rank"] = float(np.median(ranks))
    return metrics


__all__ = ["RECALL_KS", "classification_metrics", "multilabel_metrics", "regression_metrics", "retrieval_metrics"]


def _caption_words(text: str) -> str:
    """Lower case, punctuation removed, words separated by single spaces: how the COCO evaluation compares
    captions (its Java tokenizer does the same), so case and punctuation never count as errors."""
    return " ".join(re.sub(r"[^\w\s]", " ", text.lower()).split())


def generation_metrics(predictions: Sequence[str], references: Sequence[str | Sequence[str]]) -> dict[str, float]:
    """``bleu4`` and ``cider`` (COCO caption evaluation, over the whole split), ``exact_match`` (share of predictions
    equal to a reference) and, where the references describe shapes scenes, the structural scores of
    `structural_metrics`.

    Args:
        predictions: (N,) generated texts.
        references: (N,) a reference text, or a list of references, per prediction.

    Raises:
        ValueError: different numbers of predictions and references, or none.
        ImportError: `pycocoevalcap` is not installed (it is in requirements.txt).
    """
    if len(predictions) != len(references) or not predictions:
        raise ValueError(f"Got {len(predictions)} predictions for {len(references)} references; need as many, >0.")
    try:
        from pycocoevalcap.bleu.bleu import Bleu
        from pycocoevalcap.cider.cider import Cider
    except ImportError as error:
        raise ImportError("Caption metrics need pycocoevalcap: pip install pycocoevalcap") from error
    refs = {i: [_caption_words(r) for r in ([ref] if isinstance(ref, str) else ref)] for i, ref in enumerate(references)}
    hyps = {i: [_caption_words(prediction)] for i, prediction in enumerate(predictions)}
    bleu, _ = Bleu(4).compute_score(refs, hyps, verbose=0)
    cider, _ = Cider().compute_score(refs, hyps)
    metrics = {
        "bleu4": float(bleu[3]),
        "cider": float(cider),
        "exact_match": float(np.mean([hyps[i][0] in refs[i] for i in hyps])),
    }
    flat = [ref if isinstance(ref, str) else ref[0] for ref in references]
    return {**metrics, **structural_metrics(predictions, flat)}


def structural_metrics(predictions: Sequence[str], references: Sequence[str]) -> dict[str, float]:
    """For captions of the built-in shapes data: the (colour, shape, position) triples a generated caption states,
    against those of the scene's own caption, counted over the split (``structural_precision`` / ``_recall`` /
    ``_f1``). Empty when no reference states a triple (another dataset)."""
    from .shapes import caption_triples

    predicted = [caption_triples(text) for text in predictions]
    true = [caption_triples(text) for text in references]
    total_true = sum(len(t) for t in true)
    if total_true == 0:
        return {}
    hits = sum(len(p & t) for p, t in zip(predicted, true))
    total_predicted = sum(len(p) for p in predicted)
    precision = hits / total_predicted if total_predicted else 0.0
    recall = hits / total_true
    f1 = 2 * precision * recall / (precision + recall) if hits else 0.0
    return {"structural_precision": precision, "structural_recall": recall, "structural_f1": f1}
