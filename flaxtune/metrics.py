"""Classification metrics computed on the host from per-example logits."""

from __future__ import annotations

import numpy as np


def log_softmax(logits: np.ndarray) -> np.ndarray:
    z = logits - logits.max(axis=-1, keepdims=True)
    return z - np.log(np.exp(z).sum(axis=-1, keepdims=True))


def confusion_matrix(labels: np.ndarray, preds: np.ndarray, num_labels: int) -> np.ndarray:
    """cm[true, predicted] counts."""
    cm = np.zeros((num_labels, num_labels), np.int64)
    np.add.at(cm, (labels, preds), 1)
    return cm


def classification_metrics(logits: np.ndarray, labels: np.ndarray, num_labels: int) -> dict:
    """accuracy, macro-F1 (mean over all classes), mean cross-entropy loss, example count.

    Class imbalance stays visible: ``per_class`` holds precision, recall, F1 and
    support (true examples) per class id, and ``confusion_matrix[true][predicted]``
    the counts. A class with no predictions has precision 0; with no examples,
    recall 0 (both still count in the macro-F1 mean).
    """
    logits = np.asarray(logits, np.float64)
    labels = np.asarray(labels, np.int64)
    n = len(labels)
    if n == 0:
        raise ValueError("no examples to evaluate")
    if labels.min() < 0 or labels.max() >= num_labels:
        raise ValueError(f"label ids must be in 0..{num_labels - 1}, got {sorted(set(labels.tolist()))[:10]}")
    preds = logits.argmax(axis=-1)
    cm = confusion_matrix(labels, preds, num_labels)
    tp = np.diag(cm).astype(np.float64)
    precision = np.divide(tp, cm.sum(axis=0), out=np.zeros_like(tp), where=cm.sum(axis=0) > 0)
    recall = np.divide(tp, cm.sum(axis=1), out=np.zeros_like(tp), where=cm.sum(axis=1) > 0)
    denom = precision + recall
    f1 = np.divide(2 * precision * recall, denom, out=np.zeros_like(tp), where=denom > 0)
    loss = -log_softmax(logits)[np.arange(n), labels].mean()
    return {
        "accuracy": float((preds == labels).mean()),
        "macro_f1": float(f1.mean()),
        "loss": float(loss),
        "num_examples": int(n),
        "per_class": {"precision": precision.tolist(), "recall": recall.tolist(), "f1": f1.tolist(),
                      "support": cm.sum(axis=1).astype(int).tolist()},
        "confusion_matrix": cm.tolist(),
    }
