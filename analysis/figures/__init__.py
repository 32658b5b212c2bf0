"""Figure builders: each takes a :class:`analysis.Results` (or explicit frames) and returns a plotly Figure."""

from analysis.figures._common import is_no_data, no_data_figure
from analysis.figures.accuracy import accuracy_vs_size, backtest, generalization, learning_curves, paired_differences
from analysis.figures.confusion import confusion_matrices
from analysis.figures.data import class_distribution, f1_vs_share, tsne_grid
from analysis.figures.labeling import doa_vs_time_saved
from analysis.figures.selection import labels_saved, selection_curves, selection_picks
from analysis.figures.training import (
    finetuning_loss,
    online_knn,
    online_knn_table,
    pretraining_loss,
    training_time_table,
)

__all__ = [
    "accuracy_vs_size",
    "doa_vs_time_saved",
    "generalization",
    "confusion_matrices",
    "tsne_grid",
    "class_distribution",
    "pretraining_loss",
    "online_knn",
    "online_knn_table",
    "finetuning_loss",
    "training_time_table",
    "paired_differences",
    "learning_curves",
    "backtest",
    "f1_vs_share",
    "is_no_data",
    "no_data_figure",
    "selection_curves",
    "labels_saved",
    "selection_picks",
]
