"""raystudy: label-efficiency studies of contrastive semi-supervised learning on Ray.

Stages, each in its own module: ``catalog`` (categories), ``config`` (study configs),
``data`` (synthetic data, loading, splits), ``models`` (encoders, MoCo, BYOL),
``training`` (augmentations, schedules, pretraining, fine-tuning, probes),
``scheduler`` and ``sweep`` (one study on Ray Tune), ``results`` (Parquet store),
``status``, ``search`` and ``cli``.
"""

__version__ = "0.1.0"
