"""Experiment tracking: the study's runs in MLflow (from the driver, out of the result store), and in
W&B or Aim through Ray's own Tune logger callbacks. Off unless ``tracking:`` names a tracker
(``--track mlflow``); see :mod:`raystudy.tracking.setup`.
"""
