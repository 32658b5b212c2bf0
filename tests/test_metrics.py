import numpy as np

from raystudy.metrics import confusion_matrix, evaluate


def test_confusion_rows_are_true_labels():
    cm = confusion_matrix(np.array([0, 0, 1, 2]), np.array([0, 1, 1, 0]), 3)
    assert cm.tolist() == [[1, 1, 0], [0, 1, 0], [1, 0, 0]]


def test_precision_recall_f1_by_hand():
    y = np.array([0, 0, 0, 1, 1, 2])
    p = np.array([0, 0, 1, 1, 2, 2])
    ev = evaluate(y, p, ["a", "b", "c"])
    assert ev.overall_accuracy == 4 / 6
    pc = ev.per_class.set_index("category")
    assert pc.loc["a", "precision"] == 1.0 and pc.loc["a", "recall"] == 2 / 3
    assert pc.loc["b", "precision"] == 0.5 and pc.loc["b", "recall"] == 0.5
    assert pc.loc["c", "precision"] == 0.5 and pc.loc["c", "recall"] == 1.0
    f1_a = 2 * 1 * (2 / 3) / (1 + 2 / 3)
    assert abs(pc.loc["a", "f1"] - f1_a) < 1e-12
    assert pc["support"].tolist() == [3, 2, 1]
    assert abs(ev.macro_f1 - pc["f1"].mean()) < 1e-12


def test_absent_class_gives_zero_not_nan():
    ev = evaluate(np.array([0, 0]), np.array([0, 0]), ["a", "b"])
    assert ev.per_class["precision"].tolist() == [1.0, 0.0]
    assert ev.macro_f1 == 0.5  # over the full label list: the absent class counts as F1 = 0


def test_macro_f1_matches_scikit_learn_over_the_full_label_list():
    from sklearn.metrics import f1_score

    rng = np.random.default_rng(0)
    categories = [f"c{i}" for i in range(7)]
    for _ in range(20):
        y = rng.integers(0, 5, size=40)  # classes 5 and 6 never occur in this fold
        p = np.where(rng.random(40) < 0.6, y, rng.integers(0, 7, size=40))
        expected = f1_score(y, p, labels=list(range(7)), average="macro", zero_division=0)
        assert abs(evaluate(y, p, categories).macro_f1 - expected) < 1e-12
