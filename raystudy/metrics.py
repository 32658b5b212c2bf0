"""Classification metrics of Sect. 3.5.3: overall accuracy, per-class precision / recall / F1."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd


@dataclass
class Evaluation:
    overall_accuracy: float
    macro_f1: float
    confusion: np.ndarray  # (C, C): rows = true label, columns = prediction
    per_class: pd.DataFrame  # category, precision, recall, f1, support


def confusion_matrix(y_true: np.ndarray, y_pred: np.ndarray, n_classes: int) -> np.ndarray:
    """Counts with true labels on the rows and predictions on the columns (Table 3)."""
    flat = np.asarray(y_true, dtype=np.int64) * n_classes + np.asarray(y_pred, dtype=np.int64)
    return np.bincount(flat, minlength=n_classes * n_classes).reshape(n_classes, n_classes)


def evaluate(y_true: np.ndarray, y_pred: np.ndarray, categories: list[str]) -> Evaluation:
    """OA (Eq. 5), precision (Eq. 6), recall (Eq. 7), F1 (Eq. 8); 0 where undefined.

    Macro-F1 averages F1 over every category of ``categories``: a category absent from
    both the labels and the predictions of this split counts as F1 = 0, so a fold that
    happens to lack a rare class scores the same way as one that misses it.
    """
    n = len(categories)
    cm = confusion_matrix(y_true, y_pred, n)
    tp = np.diag(cm).astype(float)
    predicted = cm.sum(axis=0).astype(float)
    support = cm.sum(axis=1)
    precision = np.divide(tp, predicted, out=np.zeros(n), where=predicted > 0)
    recall = np.divide(tp, support, out=np.zeros(n), where=support > 0)
    denom = precision + recall
    f1 = np.divide(2 * precision * recall, denom, out=np.zeros(n), where=denom > 0)
    total = cm.sum()
    oa = float(tp.sum() / total) if total else float("nan")
    # over the category set's full label list, as scikit-learn's
    # f1_score(y_true, y_pred, labels=range(n), average="macro", zero_division=0)
    macro_f1 = float(f1.mean()) if n else float("nan")
    per_class = pd.DataFrame(
        {"category": categories, "precision": precision, "recall": recall, "f1": f1, "support": support}
    )
    return Evaluation(overall_accuracy=oa, macro_f1=macro_f1, confusion=cm, per_class=per_class)
