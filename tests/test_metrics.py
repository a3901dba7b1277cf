"""Metrics against values computed by hand."""

from __future__ import annotations

import numpy as np
import pytest

from mm_hub.metrics import classification_metrics, multilabel_metrics, regression_metrics, retrieval_metrics


def test_classification_metrics_by_hand():
    logits = np.array([[2.0, 0.0], [0.0, 1.0], [0.5, 0.0], [0.0, 3.0]])  # predictions 0, 1, 0, 1
    labels = np.array([0, 1, 1, 1])
    metrics = classification_metrics(logits, labels)
    assert metrics["accuracy"] == pytest.approx(0.75)
    # class 0: P=1/2 R=1 F1=2/3; class 1: P=1 R=2/3 F1=0.8
    assert metrics["macro_f1"] == pytest.approx((2 / 3 + 0.8) / 2)
    # positive scores rank: label-1 rows have p1 = .73, .38, .95 vs the label-0 row .12 -> all above: AUROC 1
    assert metrics["auroc"] == pytest.approx(1.0)


def test_auroc_only_for_binary_with_both_classes():
    assert "auroc" not in classification_metrics(np.eye(3), np.array([0, 1, 2]))
    assert "auroc" not in classification_metrics(np.array([[1.0, 0.0], [2.0, 0.0]]), np.array([0, 0]))


def test_multilabel_metrics_by_hand():
    logits = np.array([[5.0, -5.0, 5.0], [-5.0, 5.0, -5.0]])  # predicts [1,0,1], [0,1,0]
    labels = np.array([[1, 0, 0], [0, 1, 0]])
    metrics = multilabel_metrics(logits, labels)
    # TP=2, FP=1, FN=0 -> micro F1 = 4/5; per label F1: 1, 1, 0 -> macro 2/3
    assert metrics["micro_f1"] == pytest.approx(0.8)
    assert metrics["macro_f1"] == pytest.approx(2 / 3)
    assert metrics["subset_accuracy"] == pytest.approx(0.5)


def test_regression_metrics_by_hand():
    metrics = regression_metrics(np.array([1.0, 2.0, 4.0]), np.array([1.0, 3.0, 2.0]))
    assert metrics == {"mse": pytest.approx(5 / 3), "mae": pytest.approx(1.0)}
    with pytest.raises(ValueError, match="2 predictions for 3 targets"):
        regression_metrics(np.zeros(2), np.zeros(3))


def test_retrieval_metrics_several_captions_per_image():
    images = np.eye(3)  # image i is the unit vector e_i
    # captions 0,1 belong to image 0, caption 2 to image 1, caption 3 to image 2
    texts = np.array(
        [
            [0.9, 0.1, 0.0],  # image 0 first: rank 1
            [0.2, 0.8, 0.0],  # image 1 scores higher than its own image 0: rank 2
            [0.0, 0.3, 0.7],  # image 2 first, own image 1 second: rank 2
            [0.1, 0.0, 0.5],  # own image 2 first: rank 1
        ]
    )
    metrics = retrieval_metrics(images, texts, [0, 0, 1, 2], ks=(1, 2))
    assert metrics["text_to_image_recall@1"] == pytest.approx(0.5)
    assert metrics["text_to_image_recall@2"] == pytest.approx(1.0)
    assert metrics["text_to_image_mean_rank"] == pytest.approx(1.5)
    assert metrics["text_to_image_median_rank"] == pytest.approx(1.5)
    # image -> text: image 0 scores texts [.9,.2,0,.1]: best own caption (text 0) rank 1.
    # image 1 scores [.1,.8,.3,0]: own text 2 (.3) has text 1 above it -> rank 2.
    # image 2 scores [0,0,.7,.5]: own text 3 (.5) has text 2 above -> rank 2.
    assert metrics["image_to_text_recall@1"] == pytest.approx(1 / 3)
    assert metrics["image_to_text_recall@2"] == pytest.approx(1.0)
    assert metrics["image_to_text_mean_rank"] == pytest.approx(5 / 3)
    assert metrics["image_to_text_median_rank"] == pytest.approx(2.0)


def test_retrieval_metrics_bad_input():
    with pytest.raises(ValueError, match="one image row per text"):
        retrieval_metrics(np.eye(2), np.eye(2), [0])
    with pytest.raises(ValueError, match="at least one caption"):
        retrieval_metrics(np.eye(3), np.eye(3)[:2], [0, 1])
    with pytest.raises(ValueError, match="outside"):
        retrieval_metrics(np.eye(2), np.eye(2), [0, 5])
